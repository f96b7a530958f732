"""Issue 15's goals table sets each path beside the machine's ceiling for it
(`bench/goals.py`, from `bench/limits.py`'s all-core signature rates): the arithmetic
that says which goals this machine can reach while every check stays on."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).parents[2] / "bench"


@pytest.fixture()
def goals() -> Any:
    sys.path.insert(0, str(BENCH))
    try:
        import goals as module
        yield module
    finally:
        sys.path.remove(str(BENCH))
        sys.modules.pop("goals", None)


def _write(results: Path, name: str, rows: list[dict[str, Any]]) -> None:
    (results / f"{name}.json").write_text(json.dumps({"benchmark": name, "rows": rows}))


def _results(tmp_path: Path) -> Path:
    _write(tmp_path, "limits", [
        {"operation": "verify gene", "one_core_per_s": 14000, "all_cores_per_s": 20000,
         "cores": 2, "scaling": 1.43},
        {"operation": "verify statement", "one_core_per_s": 15000, "all_cores_per_s": 21000,
         "cores": 2, "scaling": 1.4},
        {"operation": "sign gene", "one_core_per_s": 29000, "all_cores_per_s": 47000,
         "cores": 2, "scaling": 1.62}])
    _write(tmp_path, "sync", [{"case": "cold sync zstd", "genes": 100000, "seconds": 40.0}])
    _write(tmp_path, "sync_processes", [{"case": "cold sync, gd-node run processes",
                                         "genes": 100000, "seconds": 25.0}])
    _write(tmp_path, "cortex", [
        {"metric": "build + sign genes, 2 processes", "value": 20000.0},
        {"metric": "ingest signed genes (indexes + feed)", "value": 28000.0,
         "vs_baseline": 0.9},
        {"metric": "import batch: sign + ingest end to end, 5000 a transaction",
         "value": 14000.0, "vs_baseline": 0.18}])
    _write(tmp_path, "ledger_net", [
        {"setup": "region of one, gd-node run process (baseline)", "entries_per_s": 5250},
        {"setup": "3 voters, each a gd-node run process", "entries_per_s": 3500}])
    _write(tmp_path, "ledger_vs_etcd", [
        {"setup": "etcd 3 members, fsync, 10 puts a txn (as many a request)",
         "puts_per_s": 10500}])
    return tmp_path


def test_each_path_is_set_beside_its_ceiling(goals: Any, tmp_path: Path) -> None:
    sync, procs, sign, ingest, solo, three, start = goals.ceilings(_results(tmp_path))
    # 100,000 checks at 20,000/s on every core: 5 s; 40 s is 8 times that.
    assert sync.startswith("5.0 s: 100,000 gene checks on 2 cores") and "8.0 x it" in sync
    assert procs.startswith("5.0 s") and "5.0 x it" in procs
    assert sign.startswith("20,000 genes/s") and "this run 0.70 of it" in sign
    assert "this run 0.900" in ingest
    assert solo.startswith("21,000 entries/s: each statement checked once")
    assert "this run 0.25 of it" in solo
    # Three voters on one machine check each statement three times: 7,000/s at most,
    # and etcd, which checks nothing, runs at 1.5 times that.
    assert three.startswith("7,000 entries/s: each statement checked by all 3 voters")
    assert "this run 0.50 of it" in three and "10,500 puts/s" in three
    assert "1.50 x this ceiling" in three
    assert "met" in start


def test_the_table_has_a_ceiling_column(goals: Any, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # This run's figures come from `measured` (not under test here): one per path.
    monkeypatch.setattr(goals, "measured",
                        lambda results: [(f"now {i}", f"base {i}") for i in range(7)])
    lines = goals.table(_results(tmp_path)).splitlines()
    assert lines[0].endswith("| in-run baseline | ceiling here |")
    assert len(lines) == 2 + len(goals.PATHS)
    assert all(line.count("|") == 7 for line in lines)
    assert lines[2].startswith("| cold sync, 100k genes")
    assert "| now 0 | <= 15 s | base 0 | 5.0 s:" in lines[2]


def test_without_the_limits_run_the_ceilings_say_so(goals: Any, tmp_path: Path) -> None:
    results = _results(tmp_path)
    (results / "limits.json").unlink()
    out = goals.ceilings(results)
    assert out[0] == out[1] == "not measured"
    assert out[4] == out[5] == "not measured (bench/limits.py)"
    assert out[2].startswith("20,000 genes/s")  # from the cortex run, not the limits one
