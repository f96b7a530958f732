"""Issue 13, item 10: a states CSV without entity/t shows row numbers, not `0` on every
row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runner import run_cli as run

import gd.cli.output as output
from gd.motors.domains import get_domain

GENE = {"domain": "turbofan", "name": "inspect-when-hot", "action": "inspect",
        "codons": [{"feature": "s11", "op": ">", "threshold": 40.0}]}


def test_states_without_entity_or_time_are_numbered_by_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output.console, "width", 140)  # the whole decisions table
    home = tmp_path / "home"
    assert run("init", "--home", str(home), "--org", "acme", "--region", "eu-west")[0] == 0
    genes = tmp_path / "g.jsonl"
    genes.write_text(json.dumps(GENE) + "\n")
    assert run("genes", "import", str(genes), "--home", str(home))[0] == 0
    pack = get_domain("turbofan")
    states = pack.demo_states(3, seed=7)
    csv = tmp_path / "states.csv"
    csv.write_text(",".join(pack.features) + "\n" + "".join(
        ",".join(repr(s.values[f]) for f in pack.features) + "\n" for s in states))
    code, out = run("evaluate", "turbofan/inspect-when-hot", "--states", str(csv),
                    "--seed", "1", "--monte-carlo-n", "64", "--cap", "128", "--home",
                    str(home))
    assert code == 0, out
    for row in (1, 2, 3):
        assert f"row {row}" in out, out
