"""`tests/sim/sweep.py`, the runner behind `make sim SEEDS=10000`: it runs every seed of
every simulation it names, reports a broken invariant with the command that replays that
seed (and the replay fails the same way), and writes a summary that says which seeds ran."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import raftsim
import sweep

from gd.ledger import raft_log


def test_a_sweep_runs_every_layout_of_every_seed_and_says_so(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    assert sweep.main(["--seeds", "3", "--start", "3", "--sims", "raft", "--workers", "2",
                       "--out", str(out), "--label", "test"]) == 0
    summary = json.loads(out.read_text())
    assert summary["complete"] and summary["failed"] == 0 and summary["commit"] == "test"
    assert summary["runs_done"] == summary["runs_planned"] == 3 * len(raftsim.LAYOUTS)
    assert set(summary["groups"]) == {f"raft/{name}" for name in raftsim.LAYOUTS}
    for group in summary["groups"].values():
        assert group["passed"] == 3 and group["every_seed_below"] == 6


def test_a_failing_seed_is_reported_with_a_replay_that_fails_alike(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Votes granted to candidates with stale logs break leader completeness.
    monkeypatch.setattr(raft_log.RaftLog, "is_up_to_date", lambda self, index, term: True)
    failed = [r for r in map(sweep.run_task, (f"raft:3-voters:{s}" for s in range(10)))
              if not r["ok"]]
    assert failed, "a broken vote rule went unnoticed"
    task, error = failed[0]["task"], failed[0]["error"]
    assert error.startswith(f"seed {task.rsplit(':', 1)[1]} ")
    assert sweep.replay_command(task) == f"python tests/sim/sweep.py --replay {task}"
    capsys.readouterr()
    assert sweep.main(["--replay", task]) == 1
    assert capsys.readouterr().out.splitlines()[0] == error


def test_bad_arguments_get_a_message_not_a_traceback(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert sweep.main(["--replay", "raft:no-such-layout:1"]) == 2
    assert "raft:LAYOUT:SEED" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sweep.main(["--sims", "fed,chess"])
    assert "--sims" in capsys.readouterr().err


def test_the_service_simulations_run_in_the_sweep(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    assert sweep.main(["--seeds", "2", "--start", "14758", "--sims", "sync,sov",
                       "--workers", "1", "--out", str(out), "--label", "test"]) == 0
    summary = json.loads(out.read_text())
    assert set(summary["groups"]) == {"sync", "sov"}
    assert all(g["passed"] == 2 for g in summary["groups"].values())
    # A replay gives the run's trace hash: the same seed, the same run.
    assert sweep.run_service_or_fed("sov", 14759) == sweep.run_service_or_fed("sov", 14759)
