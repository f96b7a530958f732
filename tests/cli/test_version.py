"""`gd-node --version` names the release and the exact commit (issue 17)."""

from __future__ import annotations

import re
import subprocess

from click.testing import CliRunner

from gd.cli import version as version_mod
from gd.cli.main import cli


def test_version_shows_release_and_the_checkouts_commit() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0, result.output
    head = subprocess.run(["git", "-C", str(version_mod.SOURCE_ROOT), "rev-parse",
                           "--short=12", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    match = re.fullmatch(r"gd-node (\S+) \(commit ([0-9a-f]{12})(-dirty)?\)\n", result.output)
    assert match, result.output
    assert match.group(1) == version_mod.installed_version()
    assert match.group(2) == head


def test_installed_copy_reads_the_commit_from_its_scm_version(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(version_mod, "SOURCE_ROOT", tmp_path)  # not a git checkout
    assert version_mod.current_commit("0.2.1.dev3+g1c8e44f0b") == "1c8e44f0b"
    assert version_mod.current_commit("0.2.1.dev3+g1c8e44f0b.d20261206") == "1c8e44f0b"
    assert version_mod.current_commit("0.2.0") == "tag v0.2.0"
    assert version_mod.current_commit("unknown") == "unknown"
