"""What a chaos run checks once its load and faults are over (`test_chaos.py`).

Each function reads the nodes' stores (LMDB, opened under `chaosnet.LMDB_LOCK` so two
checks never open one environment at once) or their processes, and returns the problems
it finds as sentences; an empty list is a pass. Split from `chaosnet.py`, which drives
the load and the faults.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

from chaosnet import GD_NODE, LMDB_LOCK, WriteLog, sharing_partners

from gd.genome.gene import GeneStatus
from gd.node.control import ControlError, call
from gd.node.home import Home
from gd.node.store.cortex import Cortex
from gd.node.store.ledger_store import open_ledger
from gd.testnet import procs
from gd.testnet.plan import TestnetPlan


def acked_without_quorum(log: WriteLog, windows: list[tuple[float, float]]) -> list[str]:
    """Appends started and answered inside a no-quorum period that were acknowledged."""
    return [f"append {a.key} through {a.via} was acknowledged with no quorum "
            f"({a.started:.2f}..{a.ended:.2f} inside {lo:.2f}..{hi:.2f})"
            for a in log.attempts for lo, hi in windows
            if a.acked and a.started >= lo and a.ended <= hi]


# -- convergence and the invariants -----------------------------------------------------


def _gene_views(plan: TestnetPlan, log: WriteLog) -> dict[str, dict[str, tuple[str, bytes]]]:
    """Per node: gene id -> (status, version hash) of every acknowledged gene it holds."""
    ids = {g.gene_id for g in log.genes}
    out: dict[str, dict[str, tuple[str, bytes]]] = {}
    for node in plan.nodes:
        seen: dict[str, tuple[str, bytes]] = {}
        with LMDB_LOCK, Cortex.open(Home.resolve(node.home).cortex_path,
                                    readonly=True) as cx:
            for gene_id in ids:
                gene = cx.get_gene(gene_id)
                if gene is not None:
                    seen[gene_id] = (str(gene.status), gene.version_hash)
        out[node.name] = seen
    return out


def gene_problems(plan: TestnetPlan, log: WriteLog) -> list[str]:
    """Every acknowledged gene native at its origin and pending at each partner, same
    version hash; and nowhere the agreements do not send it."""
    views = _gene_views(plan, log)
    problems = []
    for g in log.genes:
        wanted = {g.origin: GeneStatus.NATIVE.value}
        wanted.update({p: GeneStatus.ADAPTATION_PENDING.value
                       for p in sharing_partners(plan, g.origin, g.domain)})
        for node in plan.nodes:
            held = views[node.name].get(g.gene_id)
            if node.name not in wanted:
                if held is not None:
                    problems.append(f"gene {g.gene_id} ({g.domain} from {g.origin}) reached "
                                    f"{node.name}, which shares no {g.domain} with it")
                continue
            if held is None:
                problems.append(f"gene {g.gene_id} ({g.domain} from {g.origin}) is missing "
                                f"on {node.name}")
            elif held != (wanted[node.name], g.version_hash):
                problems.append(f"gene {g.gene_id} on {node.name} is {held[0]} "
                                f"{held[1].hex()[:12]}, want {wanted[node.name]} "
                                f"{g.version_hash.hex()[:12]}")
    return problems


def ledger_problems(plan: TestnetPlan, log: WriteLog) -> list[str]:
    """Every acknowledged entry at its receipt's index with its hash on every node's
    ledger, and all ledgers equal up to the shortest one."""
    problems = []
    hashes: dict[str, list[bytes]] = {}
    for node in plan.nodes:
        with LMDB_LOCK:
            ledger = open_ledger(Path(node.home), readonly=True)
            try:
                hashes[node.name] = [e.entry_hash for e in ledger.entries(0, ledger.size)]
                for a in log.entries:
                    found = ledger.find(a.author, a.key)
                    if found is None:
                        problems.append(f"acknowledged entry {a.key} (index {a.index}, via "
                                        f"{a.via}) is missing on {node.name}")
                    elif (found.index, found.entry_hash) != (a.index, a.entry_hash):
                        problems.append(f"acknowledged entry {a.key} is at index "
                                        f"{found.index} on {node.name}, receipt said "
                                        f"{a.index}")
            finally:
                ledger.close()
    shortest = min(len(h) for h in hashes.values())
    first = plan.nodes[0].name
    for name, h in hashes.items():
        for index in range(shortest):
            if h[index] != hashes[first][index]:
                problems.append(f"ledgers of {first} and {name} differ at index {index} "
                                f"(committed prefixes must agree)")
                break
    return problems


def ledger_sizes(plan: TestnetPlan) -> dict[str, int]:
    out = {}
    for node in plan.nodes:
        with LMDB_LOCK:
            ledger = open_ledger(Path(node.home), readonly=True)
            try:
                out[node.name] = ledger.size
            finally:
                ledger.close()
    return out


def converged(plan: TestnetPlan, log: WriteLog) -> list[str]:
    """What is still outstanding (empty: converged): nodes not answering, ledgers of
    different sizes or roots or short of an acknowledged entry, genes not yet where
    they should be."""
    outstanding = []
    heads = {}
    for node in plan.nodes:
        try:
            st = call(Home.resolve(node.home), "ledger_status", timeout=2.0)
            heads[node.name] = (int(st["size"]), st["root"])
        except ControlError as exc:
            outstanding.append(f"{node.name} does not answer: {exc}")
    if len(set(heads.values())) > 1:
        outstanding.append(f"ledger heads differ: { {k: v[0] for k, v in heads.items()} }")
    needed = max((a.index for a in log.entries), default=-1) + 1
    short = [k for k, (size, _) in heads.items() if size < needed]
    if short:
        outstanding.append(f"ledgers shorter than the acknowledged entries: {short}")
    outstanding += gene_problems(plan, log)
    return outstanding


def verify_problems(plan: TestnetPlan) -> list[str]:
    """`gd-node ledger verify` and `gd-node audit verify` on every node."""
    problems = []
    for node in plan.nodes:
        for group in ("ledger", "audit"):
            done = subprocess.run([GD_NODE, group, "verify", "--json", "--home", node.home],
                                  capture_output=True, text=True, timeout=120, check=False)
            try:
                ok = done.returncode == 0 and json.loads(done.stdout)["ok"] is True
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                problems.append(f"`gd-node {group} verify` failed on {node.name} "
                                f"(exit {done.returncode}): {(done.stdout + done.stderr)[-300:]}")
    return problems


def leftover_processes(plan: TestnetPlan, pids: set[int]) -> list[str]:
    """Anything left after `testnet down`: a running node, a pid file, a control
    socket, or a process we started that is still alive (zombies are reaped here)."""
    problems = []
    for node in plan.nodes:
        home = Home.resolve(node.home)
        if procs.is_running(node):
            problems.append(f"{node.name} still runs after `testnet down`")
        for path in (home.pid_path, home.control_socket):
            if path.exists():
                problems.append(f"{path} left behind")
    for pid in sorted(pids):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if Path(f"/proc/{pid}").exists() and _proc_state(pid) not in ("Z", "X", ""):
            problems.append(f"process {pid} is still alive")
    return problems


def _proc_state(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.split()[1]
    except OSError:
        return ""
    return ""


def log_tails(plan: TestnetPlan, lines: int = 15) -> str:
    """The last lines of each node's daemon log, for a failure message."""
    out = []
    for node in plan.nodes:
        path = Path(node.home) / procs.LOG_FILE
        try:
            tail = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            tail = ["(no log)"]
        out.append(f"--- {path} ---\n" + "\n".join(t[:300] for t in tail))
    return "\n".join(out)
