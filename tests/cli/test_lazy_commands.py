"""Lazy commands on the root group (`GuardedGroup.add_lazy_command`, ADR 0063): listed
and run like any other, imported only when click asks for them."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from gd.cli.main import cli
from gd.cli.motors_cmds import LAZY_COMMANDS
from gd.cli.output import GuardedGroup

# What `gd-node run` must not import before it serves /healthz: the motors and numpy
# (the motors' commands, the testnet builder, the API's evaluation and decision
# handlers) and graphql-core (the GraphQL route).
HEAVY = ("numpy", "graphql", "gd.motors.meristic", "gd.motors.evaluate",
         "gd.motors.domains.pack", "gd.node.app.decisions", "gd.cli.evaluate_cmds",
         "gd.testnet.build")


def test_the_run_path_imports_neither_the_motors_nor_graphql() -> None:
    code = ("import sys, gd.cli.main, gd.node.runner, gd.node.daemon\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "", f"imported at start: {done.stdout.strip()}"


def test_help_lists_the_lazy_commands_with_their_summaries() -> None:
    out = CliRunner().invoke(cli, ["--help"]).output
    for name in (*LAZY_COMMANDS, "testnet"):
        assert f"\n  {name} " in out, name
    assert "Score GENE_ID with the four motors" in out


def test_a_lazy_command_runs_once_asked_for() -> None:
    group = GuardedGroup(name="g")
    group.add_lazy_command("evaluate", LAZY_COMMANDS["evaluate"])
    assert "evaluate" not in group.commands
    result = CliRunner().invoke(group, ["evaluate", "--help"])
    assert result.exit_code == 0, result.output
    assert "Score GENE_ID" in result.output
    assert group.commands["evaluate"].name == "evaluate"


def test_a_lazy_target_that_is_not_the_named_command_is_refused() -> None:
    group = GuardedGroup(name="g")
    group.add_lazy_command("adapt", LAZY_COMMANDS["evaluate"])  # names another command
    with pytest.raises(TypeError, match="is not that command"):
        group.get_command(click.Context(group), "adapt")


def test_an_unknown_command_is_still_an_error() -> None:
    result = CliRunner().invoke(cli, ["evaluat"])
    assert result.exit_code == 2
    assert "No such command" in result.output
