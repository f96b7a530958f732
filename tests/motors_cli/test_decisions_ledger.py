"""Every decision the motors take is recorded on the node's ledger (hash + summary)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.motors_cli.conftest import run, run_json


def test_evaluate_records_each_decision_on_the_ledger(
        home: Path, gene_id: Callable[[str], str], turbofan_csv: Path) -> None:
    gid = gene_id("inspect-hot-hpc")
    decisions = run_json("evaluate", gid, "--states", turbofan_csv, "--seed", "3", "--home", home)
    entries = json.loads(run("ledger", "export", "--format", "json", "--home", home).output)
    recorded = [e for e in entries if e["kind"] == "decision"]
    assert len(recorded) == len(decisions) > 1
    assert {e["summary"]["decision"] for e in recorded} == {d["id"] for d in decisions}
    assert all(e["summary"]["gene"] == gid for e in recorded)
    assert run_json("ledger", "verify", "--home", home)["ok"] is True
