"""Chaos on real processes: a 3-org, one-region testnet under write load while nodes are
SIGKILLed and restarted and partitions come and go (one period with no quorum at all);
afterwards every acknowledged gene and ledger entry is everywhere it should be, committed
prefixes agree, and `ledger verify` / `audit verify` pass on every node.

`CHAOS_SEED=N` picks another storm, `CHAOS_SECONDS=S` another load time (default 40 s).
`-s` shows the summary. docs/simulation.md, "Chaos on real processes", says more.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import chaos_checks as cc  # what a run checks at its end
import chaosnet as cn  # tests/chaos is put on sys.path by this folder's conftest.py
import pytest
from click.testing import CliRunner

from gd.cli.main import cli
from gd.node.control import ControlError, call
from gd.node.home import Home
from gd.testnet import procs
from gd.testnet.plan import TestnetPlan, make_plan

CHAOS_SEED = int(os.environ.get("CHAOS_SEED", "1"))
CHAOS_SECONDS = float(os.environ.get("CHAOS_SECONDS", "40"))
# Bounds on waiting, generous for a loaded 2-core box (what it took is printed).
READY_TIMEOUT_S = 45.0
CONVERGE_TIMEOUT_S = 60.0
CONVERGE_POLL_S = 0.5
WRITER_JOIN_S = cn.IMPORT_TIMEOUT_S + 10.0


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


# -- the schedule on its own (no processes) ---------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_fault_schedule_holds_every_fault_kind_one_at_a_time(seed: int) -> None:
    schedule = cn.fault_schedule(seed, 40.0)
    kinds = [f.kind for f in schedule]
    assert {cn.KILL, cn.ISOLATE, cn.NO_QUORUM} <= set(kinds)
    assert kinds.count(cn.NO_QUORUM) == 1
    assert sum(f.quiet_s + f.duration_s for f in schedule) <= 40.0
    assert all(f.node in (0, 1, 2) for f in schedule if f.kind != cn.NO_QUORUM)
    assert all(f.quiet_s >= cn.QUIET_MIN_S for f in schedule)
    assert schedule == cn.fault_schedule(seed, 40.0)


def test_fault_schedules_differ_by_seed_and_refuse_a_too_short_load() -> None:
    assert len({tuple(cn.fault_schedule(s, 40.0)) for s in range(10)}) == 10
    with pytest.raises(ValueError):
        cn.fault_schedule(1, cn.MIN_LOAD_S - 1)


def test_sharing_partners_follow_the_demo_agreements(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, orgs=3, regions=1, seed=1)
    assert cn.sharing_partners(plan, "node-1", "turbofan") == {"node-2"}
    assert cn.sharing_partners(plan, "node-2", "turbofan") == {"node-1"}
    assert cn.sharing_partners(plan, "node-3", "turbofan") == set()
    assert cn.sharing_partners(plan, "node-1", "loan") == {"node-3"}
    assert cn.sharing_partners(plan, "node-3", "loan") == {"node-1"}
    assert cn.sharing_partners(plan, "node-2", "loan") == set()


# -- the storm ----------------------------------------------------------------------------


def wait_until_ready(plan: TestnetPlan) -> None:
    """Every node connected to both others and knows the region's leader."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            ready = all(call(Home.resolve(n.home), "status", timeout=2.0).get("peers") == 2
                        and call(Home.resolve(n.home), "ledger_status", timeout=2.0
                                 ).get("leader") for n in plan.nodes)
        except ControlError:
            ready = False
        if ready:
            return
        time.sleep(0.3)
    raise AssertionError(f"the testnet was not ready within {READY_TIMEOUT_S:.0f} s")


def storm(plan: TestnetPlan, seed: int, workdir: Path, log: cn.WriteLog,
          faults: cn.FaultLog) -> None:
    """Writers on two threads, faults on this one; writers stop when the faults end."""
    schedule = cn.fault_schedule(seed, CHAOS_SECONDS)
    stop = threading.Event()
    writers = [
        threading.Thread(target=cn.guarded(cn.write_genes, log), daemon=True,
                         args=(plan, seed, log, stop, workdir), name="chaos-genes"),
        threading.Thread(target=cn.guarded(cn.write_entries, log), daemon=True,
                         args=(plan, seed, log, stop), name="chaos-ledger"),
    ]
    for w in writers:
        w.start()
    try:
        cn.run_faults(plan, schedule, seed, log, faults, print)
    finally:
        stop.set()
        for w in writers:
            w.join(WRITER_JOIN_S)
    assert not any(w.is_alive() for w in writers), "a writer did not stop"


def converge(plan: TestnetPlan, log: cn.WriteLog) -> tuple[float, list[str]]:
    """Heal, start every node, and wait (bounded) until nothing is outstanding."""
    procs.heal(plan)
    for node in plan.nodes:
        procs.start_node(node, plan)
    started = time.monotonic()
    outstanding: list[str] = []
    while time.monotonic() - started < CONVERGE_TIMEOUT_S:
        outstanding = cc.converged(plan, log)
        if not outstanding:
            break
        time.sleep(CONVERGE_POLL_S)
    return time.monotonic() - started, outstanding


@pytest.mark.slow
def test_acknowledged_writes_survive_sigkills_and_partitions() -> None:
    seed = CHAOS_SEED
    root = cn.short_tmpdir()
    directory = root / "net"
    plan: TestnetPlan | None = None
    log, faults = cn.WriteLog(), cn.FaultLog()
    problems: list[str] = []
    crashed: BaseException | None = None
    began = time.monotonic()
    try:
        run("testnet", "up", "--dir", str(directory), "--orgs", "3", "--regions", "1",
            "--seed", str(seed))
        plan = TestnetPlan.load(directory)
        faults.pids |= {pid for n in plan.nodes if (pid := procs.node_pid(n)) is not None}
        wait_until_ready(plan)
        storm(plan, seed, root, log, faults)
        converge_s, outstanding = converge(plan, log)
        faults.pids |= {pid for n in plan.nodes if (pid := procs.node_pid(n)) is not None}
        problems += log.violations
        problems += cc.acked_without_quorum(log, faults.no_quorum_windows)
        problems += [f"not converged after {CONVERGE_TIMEOUT_S:.0f} s: {o}"
                     for o in outstanding[:20]]
        run("testnet", "down", "--dir", str(directory))
        # The data at rest, every node stopped cleanly.
        problems += cc.gene_problems(plan, log)
        problems += cc.ledger_problems(plan, log)
        problems += cc.verify_problems(plan)
        sizes = cc.ledger_sizes(plan)
        print(f"\nchaos seed {seed}: {len(faults.injected)} faults in "
              f"{CHAOS_SECONDS:.0f} s of load")
        for line in faults.injected:
            print(f"  {line}")
        unacked = sum(not a.acked for a in log.attempts)
        print(f"  genes acknowledged {len(log.genes)} in {log.gene_batches} imports "
              f"({log.imports_failed} failed)")
        print(f"  ledger appends acknowledged {len(log.entries)} of {len(log.attempts)} "
              f"({unacked} timed out or refused; {faults.probes} no-quorum probes)")
        print(f"  converged {converge_s:.1f} s after heal and restart; ledger sizes {sizes}")
        print(f"  whole run {time.monotonic() - began:.1f} s")
    except Exception as exc:  # reported below, with the seed and the logs
        crashed = exc
    finally:
        if plan is None and (directory / "testnet.json").exists():
            plan = TestnetPlan.load(directory)
        if plan is not None:
            stopped = json.loads(run("testnet", "down", "--dir", str(directory), "--json"))
            assert isinstance(stopped["stopped"], list)
            problems += cc.leftover_processes(plan, faults.pids)
    if crashed is not None or problems:
        detail = (f"{crashed!r}\n" if crashed is not None else "") + "\n".join(
            f"  - {p}" for p in problems[:40])
        logs = cc.log_tails(plan) if plan is not None else ""
        pytest.fail(f"CHAOS_SEED={seed}: the chaos run failed (data and daemon logs kept "
                    f"in {root})\n{detail}\n{logs}", pytrace=crashed is not None)
    shutil.rmtree(root, ignore_errors=True)
    assert log.genes and log.entries, "the load acknowledged nothing: the run proved nothing"
    assert faults.probes >= cn.NO_QUORUM_PROBES
