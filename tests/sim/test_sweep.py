"""`tests/sim/sweep.py`, the runner behind `make sim SEEDS=10000`: it runs every seed of
every simulation it names, reports a broken invariant with the command that replays that
seed (and the replay fails the same way), and writes a summary that says which seeds ran."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import raftsim
import service_sim_fed_rules
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


def test_the_ledger_service_simulation_runs_in_the_sweep(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sweep.json"
    assert sweep.main(["--seeds", "2", "--start", "7", "--sims", "ledger", "--workers", "1",
                       "--out", str(out), "--label", "test"]) == 0
    summary = json.loads(out.read_text())
    assert set(summary["groups"]) == {"ledger"}
    assert summary["groups"]["ledger"]["passed"] == 2
    assert sweep.run_task("ledger:8")["ok"]
    # A replay gives the run's trace hash: the same seed, the same run.
    first = sweep.run_service_or_fed("ledger", 8)
    assert first == sweep.run_service_or_fed("ledger", 8)
    capsys.readouterr()
    assert sweep.main(["--replay", "ledger:8"]) == 0
    assert capsys.readouterr().out.strip() == f"ledger:8: passed, trace {first}"


def test_a_cut_off_sweep_leaves_no_scratch_directory_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers killed mid-seed by `--until` never clean up after themselves: the sweep's
    own parent directory goes, with whatever they left in it."""
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(sweep, "SCRATCH", str(shm))
    monkeypatch.setattr(sweep, "_deadline", lambda until: time.time() - 1.0)
    out = tmp_path / "sweep.json"
    sweep.main(["--seeds", "40", "--sims", "sov,ledger", "--workers", "2",
                "--out", str(out), "--label", "test"])
    summary = json.loads(out.read_text())
    assert summary["cut_off_by"] == "--until" and not summary["complete"]
    assert summary["runs_done"] < summary["runs_planned"]
    assert list(shm.iterdir()) == []
    assert sweep.SCRATCH_ENV not in os.environ


def test_fed_is_the_federation_on_the_real_services_and_replays(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`fed:SEED` runs `service_sim_fed_rules` (fedsim is gone), its scratch home under
    the sweep's parent, and a replay gives the run's trace hash."""
    monkeypatch.setenv(sweep.SCRATCH_ENV, str(tmp_path))
    first = sweep.run_service_or_fed("fed", 5)
    assert first == service_sim_fed_rules.run(5, tmp_path / "again").trace_hash
    assert sweep.run_task("fed:5")["ok"]
    assert [p.name for p in tmp_path.iterdir()] == ["again"]  # the sweep's homes went


def test_a_replay_in_a_new_process_is_the_run_whatever_the_hash_seed() -> None:
    """Runs follow the string-hash seed (sets of peer ids); the sweep fixes it, so a
    replay in a fresh process is the run a forked worker saw."""
    outputs = []
    for hash_seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, str(Path(sweep.__file__)), "--replay", "ledger:11"],
            env={**os.environ, "PYTHONHASHSEED": hash_seed}, capture_output=True,
            text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(done.stdout.strip())
    assert outputs[0] == outputs[1] and outputs[0].startswith("ledger:11: passed, trace ")


def test_the_conflict_workload_on_the_real_services_runs_in_the_sweep() -> None:
    """`fedsvc:SEED` is the service_sim_fed run, and a replay gives the same trace."""
    first = sweep.run_service_or_fed("fedsvc", 3)
    assert first == sweep.run_service_or_fed("fedsvc", 3)
    assert first != sweep.run_service_or_fed("sov", 3)
