"""tools/coverage_floor.py folds coverage.py's JSON per package and enforces floors."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "coverage_floor.py"
spec = importlib.util.spec_from_file_location("coverage_floor", TOOL)
assert spec and spec.loader
floor = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = floor  # dataclasses look their module up
spec.loader.exec_module(floor)


def summary(lines: int, covered: int, branches: int, covered_branches: int) -> dict:
    return {"summary": {"num_statements": lines, "covered_lines": covered,
                        "num_branches": branches, "covered_branches": covered_branches}}


REPORT = {"files": {
    "node/a.py": summary(80, 60, 20, 10),    # node: (60 + 10) / (80 + 20) = 70 %
    "node/sub/b.py": summary(10, 10, 0, 0),  # node total: 80 / 110
    "crdt/c.py": summary(50, 50, 10, 10),
}}


def test_statements_and_branches_fold_per_top_level_package() -> None:
    tallies = floor.tally(REPORT)
    assert set(tallies) == {"node", "crdt"}
    assert (tallies["node"].covered, tallies["node"].total) == (80, 110)
    assert tallies["crdt"].percent == 100.0


def test_a_package_under_its_floor_or_without_one_fails(tmp_path: Path, capsys) -> None:
    tallies = floor.tally(REPORT)
    assert floor.check(tallies, {"node": 72.0, "crdt": 99.0}) == []
    problems = floor.check(tallies, {"node": 73.0})
    assert problems == ["crdt: no coverage floor set (add it to FLOORS)",
                        "node: 72.7% is below its floor of 73.0%"]
    path = tmp_path / "coverage.json"
    path.write_text(json.dumps(REPORT))
    assert floor.main([str(path)]) == (1 if floor.check(tallies, floor.FLOORS) else 0)
    assert "node" in capsys.readouterr().out


def test_an_unreadable_report_is_a_clear_error(tmp_path: Path, capsys) -> None:
    path = tmp_path / "coverage.json"
    path.write_text("{}")
    assert floor.main([str(path)]) == 2
    assert "cannot read" in capsys.readouterr().err
