"""`make sim SEEDS=N` for large N: the federation, Raft and service simulations over a
bounded process pool, with progress, the replay command of every failing seed and a summary.

Why not pytest: ten thousand parametrised cases per simulation cost more in collection
and reporting than in simulating, and pytest runs them on one core. Each seed here is
one task (`fed:SEED`, the federation's real sync and sovereignty services under every
kind of rule, 3-5 nodes, two regions and clock skew (`service_sim_fed_rules`, which
replaced fedsim); `raft:LAYOUT:SEED` for every layout in `raftsim.LAYOUTS`;
`sync:SEED`, the async sync service, `sov:SEED`, sync and sovereignty services of
three organisations, `fedsvc:SEED`, the same services under fedsim's conflict workload
(edits on two nodes, approvals, resolutions), and `ledger:SEED`, the Raft ledger service
of three voters, each on
trio's mock clock in a scratch directory of their own); a
seed is independent of every other, so the pool may run them in any order and the
result of each is still exactly what `--replay` gives.

    python tests/sim/sweep.py --seeds 10000 [--start 0] [--workers 2]
        [--sims fed,raft,sync,sov,fedsvc,ledger]
        [--until 02:20] [--out bench/results/sim_sweep.json]
    python tests/sim/sweep.py --replay fed:241      # one seed, in-process, with its trace

`--until HH:MM` (UTC) stops handing out seeds at that time and records exactly how many
ran. The exit status is 1 when any seed failed (or nothing ran), else 0. Every scratch
directory of a sweep lives under one parent the sweep makes (`GD_SIM_SCRATCH`, inherited
by the workers) and removes however it ends: a cut-off or a Ctrl-C kills
workers mid-seed, and their own clean-up never runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# The service simulations' LMDB homes: tmpfs when there is one (an msync per commit is
# most of a seed's cost on disk).
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None
ROOT = HERE.parents[1]
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import raftsim  # noqa: E402  (tests/sim on the path first)
import service_sim  # noqa: E402
import service_sim_fed  # noqa: E402
import service_sim_fed_rules  # noqa: E402
import service_sim_ledger  # noqa: E402
import service_sim_sov  # noqa: E402

SIMS = ("fed", "raft", "sync", "sov", "fedsvc", "ledger")
SERVICE_SIMS = ("fed", "sync", "sov", "fedsvc", "ledger")
# The per-sweep parent of every scratch directory (the workers' temporary homes).
SCRATCH_ENV = "GD_SIM_SCRATCH"
# Every sweep and replay runs under this string-hash seed (`fixed_hash_seed`).
HASH_SEED = "0"
FAILURES = (raftsim.SimFailure, service_sim.ServiceSimFailure)
# Seconds between progress lines.
PROGRESS_EVERY = 15.0
# Tasks a worker takes at once: small enough that the deadline and progress stay sharp.
CHUNK = 4


def tasks(sims: list[str], start: int, seeds: int) -> Iterator[str]:
    """Task names in seed order, every simulation (and Raft layout) of a seed together:
    a sweep cut off by `--until` has run each of them on about the same range of seeds
    (`every_seed_below` in the summary says exactly which)."""
    for seed in range(start, start + seeds):
        for sim in sims:
            if sim != "raft":
                yield f"{sim}:{seed}"
            else:
                for layout in raftsim.LAYOUTS:
                    yield f"raft:{layout}:{seed}"


def run_service_or_fed(sim: str, seed: int) -> str:
    """One seed of the federation or a service simulation; returns its trace hash."""
    with tempfile.TemporaryDirectory(dir=os.environ.get(SCRATCH_ENV) or SCRATCH) as scratch:
        if sim == "fed":
            return service_sim_fed_rules.run(seed, Path(scratch)).trace_hash
        if sim == "sync":
            return service_sim.run(seed, Path(scratch)).trace_hash
        if sim == "ledger":
            return service_sim_ledger.run(seed, Path(scratch)).trace_hash
        if sim == "fedsvc":
            return service_sim_fed.run(seed, Path(scratch)).trace_hash
        return service_sim_sov.run(seed, Path(scratch)).trace_hash


def replay_command(task: str) -> str:
    return f"python tests/sim/sweep.py --replay {task}"


def run_task(task: str) -> dict[str, Any]:
    """Run one seed; a broken invariant or any exception is a failure with its message."""
    parts = task.split(":")
    began = time.perf_counter()
    out: dict[str, Any] = {"task": task, "ok": True, "error": "", "voter_changes": 0}
    try:
        if parts[0] in SERVICE_SIMS:
            run_service_or_fed(parts[0], int(parts[1]))
        elif parts[0] == "raft":
            sim = raftsim.run_seed(int(parts[2]), raftsim.LAYOUTS[parts[1]])
            if not sim.committed:
                raise raftsim.SimFailure(f"seed {parts[2]} committed nothing")
            out["voter_changes"] = sim.voter_changes
        else:
            raise ValueError(f"unknown simulation {parts[0]!r}")
    except FAILURES as exc:
        out.update(ok=False, error=str(exc).splitlines()[0][:2000])
    except Exception as exc:  # an exception in the code under test is a finding too
        last = traceback.format_exception(exc)[-3:]
        out.update(ok=False, error=f"{type(exc).__name__}: {exc} | {''.join(last)}"[:2000])
    out["seconds"] = round(time.perf_counter() - began, 4)
    return out


def _worker_init() -> None:
    """Workers die on SIGTERM (`Pool.terminate`), whatever handler the sweep set."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _group(task: str) -> str:
    parts = task.split(":")
    return f"raft/{parts[1]}" if parts[0] == "raft" else parts[0]


def _deadline(until: str | None) -> float | None:
    if not until:
        return None
    hour, minute = (int(x) for x in until.split(":"))
    now = dt.datetime.now(dt.UTC)
    when = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if when <= now:
        raise SystemExit(f"--until {until} UTC is already past")
    return time.time() + (when - now).total_seconds()


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def sweep(sims: list[str], start: int, seeds: int, workers: int, until: str | None,
          out: Path | None, label: str = "") -> int:
    """Run every task, print progress and failures, write the summary; 1 on any failure."""
    deadline = _deadline(until)
    total = sum(1 for _ in tasks(sims, start, seeds))
    groups: dict[str, dict[str, Any]] = {}
    failures: list[dict[str, Any]] = []
    done = 0
    began = time.time()
    last_print = began
    cut_off = ""
    stop: list[str] = []
    # SIGTERM ends a sweep as `--until` does: the summary still says what ran.
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.append("SIGTERM"))
    print(f"sweep: {total} runs ({','.join(sims)}, seeds {start}..{start + seeds - 1}) "
          f"on {workers} workers", flush=True)
    # Every scratch directory of this sweep, the workers', lives under one
    # parent that this process removes however the sweep ends (workers killed mid-seed
    # by a cut-off or Ctrl-C never run their own clean-up).
    parent = tempfile.mkdtemp(prefix="gd-sweep-", dir=SCRATCH)
    saved_env = os.environ.get(SCRATCH_ENV)
    os.environ[SCRATCH_ENV] = parent
    try:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(workers, _worker_init, maxtasksperchild=2000) as pool:
            for result in pool.imap_unordered(run_task, tasks(sims, start, seeds), CHUNK):
                done += 1
                group = groups.setdefault(_group(result["task"]), {
                    "runs": 0, "passed": 0, "failed": 0, "task_seconds": 0.0,
                    "voter_changes": 0, "seeds": []})
                group["runs"] += 1
                group["passed" if result["ok"] else "failed"] += 1
                group["task_seconds"] += result["seconds"]
                group["voter_changes"] += result["voter_changes"]
                group["seeds"].append(int(result["task"].rsplit(":", 1)[1]))
                if not result["ok"]:
                    failure = {"task": result["task"], "error": result["error"],
                               "replay": replay_command(result["task"])}
                    failures.append(failure)
                    print(f"FAILED {result['task']}: {result['error']}\n  replay: "
                          f"{failure['replay']}", flush=True)
                now = time.time()
                if now - last_print >= PROGRESS_EVERY:
                    last_print = now
                    rate = done / (now - began)
                    print(f"  {done}/{total} runs, {len(failures)} failed, {rate:.1f} runs/s, "
                          f"~{(total - done) / rate / 60:.1f} min left", flush=True)
                if stop or (deadline is not None and now >= deadline):
                    cut_off = stop[0] if stop else "--until"
                    pool.terminate()
                    break
    finally:
        signal.signal(signal.SIGTERM, previous)
        if saved_env is None:
            os.environ.pop(SCRATCH_ENV, None)
        else:
            os.environ[SCRATCH_ENV] = saved_env
        shutil.rmtree(parent, ignore_errors=True)
    wall = time.time() - began
    summary: dict[str, Any] = {
        "commit": label or _commit(), "workers": workers, "start": start, "seeds": seeds,
        "sims": sims, "runs_planned": total, "runs_done": done, "complete": not cut_off,
        "cut_off_by": cut_off,
        "failed": len(failures), "failures": failures, "wall_seconds": round(wall, 1),
        "finished_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "groups": {}}
    for name, group in sorted(groups.items()):
        ran = sorted(group.pop("seeds"))
        prefix = start
        for seed in ran:
            if seed != prefix:
                break
            prefix += 1
        group["task_seconds"] = round(group["task_seconds"], 1)
        group["mean_seconds_per_seed"] = round(group["task_seconds"] / group["runs"], 4)
        group["every_seed_below"] = prefix  # all of start..prefix-1 ran
        summary["groups"][name] = group
    for name, group in summary["groups"].items():
        layout = raftsim.LAYOUTS.get(name.removeprefix("raft/"))
        if layout is not None and layout.voter_change_rate and \
                group["voter_changes"] < group["runs"]:
            print(f"FAILED {name}: the voter set hardly ever changed "
                  f"({group['voter_changes']} changes in {group['runs']} runs)")
            summary["failed"] += 1
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"sweep: {done}/{total} runs in {wall:.0f} s, {summary['failed']} failed"
          f"{f' (cut off by {cut_off})' if cut_off else ''}", flush=True)
    for name, group in summary["groups"].items():
        print(f"  {name}: {group['passed']}/{group['runs']} passed, "
              f"{group['mean_seconds_per_seed']} s per seed")
    return 1 if summary["failed"] or not done else 0


def replay(task: str) -> int:
    """Run one task in this process and show its failure in full."""
    parts = task.split(":")
    try:
        if parts[0] in SERVICE_SIMS and len(parts) == 2:
            print(f"{task}: passed, trace {run_service_or_fed(parts[0], int(parts[1]))}")
        elif parts[0] == "raft" and len(parts) == 3 and parts[1] in raftsim.LAYOUTS:
            sim = raftsim.run_seed(int(parts[2]), raftsim.LAYOUTS[parts[1]])
            print(f"{task}: passed, {len(sim.committed)} entries committed")
        else:
            print(f"unknown task {task!r}: fed:SEED, sync:SEED, sov:SEED, fedsvc:SEED, "
                  f"ledger:SEED or "
                  f"raft:LAYOUT:SEED with LAYOUT one of "
                  f"{', '.join(raftsim.LAYOUTS)}", file=sys.stderr)
            return 2
    except FAILURES as exc:
        print(exc)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--sims", default=",".join(SIMS))
    parser.add_argument("--until", help="HH:MM UTC: stop handing out seeds then")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/sim_sweep.json")
    parser.add_argument("--replay", metavar="TASK",
                        help="fed:SEED, sync:SEED, sov:SEED, fedsvc:SEED, ledger:SEED or "
                             "raft:LAYOUT:SEED")
    parser.add_argument("--label", default="", help="the code swept (default: git HEAD)")
    args = parser.parse_args(argv)
    if args.replay:
        return replay(args.replay)
    sims = [s for s in args.sims.split(",") if s]
    if not sims or set(sims) - set(SIMS):
        parser.error(f"--sims: a comma list of {', '.join(SIMS)}")
    if args.seeds < 1 or args.workers < 1:
        parser.error("--seeds and --workers must be at least 1")
    return sweep(sims, args.start, args.seeds, args.workers, args.until, args.out,
                 args.label)


def fixed_hash_seed(argv: list[str]) -> None:
    """Re-run this command under `PYTHONHASHSEED=HASH_SEED` unless it already is.

    Why: the services and cores iterate sets of peer ids, whose order follows the
    process's string hashes, and that order decides which task trio runs first; a
    service simulation's run is a function of its seed *and* the hash seed (the ledger
    simulation's seed 11 differs between hash seeds 1 and 2). Sweep workers are forked,
    so they share their parent's; fixing it here makes `--replay` in a new process give
    the run the sweep saw."""
    if os.environ.get("PYTHONHASHSEED") != HASH_SEED:
        os.execve(sys.executable, [sys.executable, *argv],
                  {**os.environ, "PYTHONHASHSEED": HASH_SEED})


if __name__ == "__main__":
    fixed_hash_seed(sys.argv)
    sys.exit(main())
