"""Run `gd-node` in-process for the CLI tests: the exit code and output, and never a
traceback (a user must not see one, whatever the command line)."""

from __future__ import annotations

from click.testing import CliRunner

from gd.cli.main import cli


def run_cli(*args: str) -> tuple[int, str]:
    """`gd-node ARGS...` in this process; fails the test on a traceback in the output."""
    result = CliRunner().invoke(cli, list(args))
    assert "Traceback" not in result.output
    return result.exit_code, result.output
