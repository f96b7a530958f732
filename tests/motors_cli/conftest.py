"""A temporary home with the demo genes, a CLI group holding the motors' commands, and
states files written from the domain packs' seeded demo generators."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from gd.cli.main import cli
from gd.cli.motors_cmds import LAZY_COMMANDS
from gd.motors.domains import get_domain
from gd.node.app.states_file import write_states_csv

# The motors' commands as mounted on the real `gd-node` group.
gd = cli
assert all(cli.get_command(click.Context(cli), name) is not None for name in LAZY_COMMANDS)


def run(*args: str, ok: bool = True) -> Result:
    result = CliRunner().invoke(gd, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def run_json(*args: str) -> Any:
    return json.loads(run(*args, "--json").output)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    run("init", "--home", h, "--org", "acme", "--region", "eu-west")
    run("demo", "--dir", h)
    return h


@pytest.fixture
def gene_id(home: Path) -> Callable[[str], str]:
    genes = run_json("genes", "list", "--home", home)
    by_name = {g["name"]: g["id"] for g in genes}
    return lambda name: by_name[name]


@pytest.fixture
def turbofan_csv(tmp_path: Path) -> Path:
    return write_states_csv(get_domain("turbofan").demo_states(12, 3), tmp_path / "tf.csv")


@pytest.fixture
def loan_csv(tmp_path: Path) -> Path:
    return write_states_csv(get_domain("loan").demo_states(8, 3), tmp_path / "loan.csv")
