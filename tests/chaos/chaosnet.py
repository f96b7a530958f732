"""Chaos on real processes: the pieces `test_chaos.py` drives.

A 3-node testnet in one region (all three Raft voters of one regional ledger, the demo
agreements node-1↔node-2 `turbofan` and node-1↔node-3 `loan`) runs as real `gd-node run`
processes. Two writer threads put load on it while the main thread injects faults from a
seeded schedule; then everything is healed and restarted, and the invariants below are
checked against what was *acknowledged*:

* a gene write is acknowledged when `gd-node genes import` exited 0 (its version hash is
  read back from the origin's Cortex right after);
* a ledger append is acknowledged when `ledger_append` on a node's control socket
  answered with a receipt (committed by a majority, applied on that node). A timed-out
  append is not acknowledged; it may still commit later, which is allowed.

The seed fixes the fault schedule and every writer's choices (node, domain, batch size,
pauses). Real processes and threads are not replayable step by step the way
`tests/sim/` is; the seed reproduces the same storm, not the same interleaving.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gd.genome import canonical
from gd.genome.gene import gene_id_for
from gd.node.control import ControlError, call
from gd.node.home import Home
from gd.node.store.cortex import Cortex
from gd.testnet import procs
from gd.testnet.build import DEMO_AGREEMENTS
from gd.testnet.plan import NodePlan, TestnetPlan

GD_NODE = str(Path(sys.executable).with_name("gd-node"))

# -- the fault schedule -----------------------------------------------------------------

# Faults start after the first writes landed, so each fault hits a node with data.
FIRST_FAULT_AFTER_S = 2.0
# A fault lasts 2-5 s: long enough for a Raft election (1-2 s) and for writes to pile up
# on one side, short enough that the mesh's redial backoff (1 s doubling) stays at a few
# seconds and the nodes find each other again quickly after a heal.
FAULT_MIN_S, FAULT_MAX_S = 2.0, 5.0
# Quiet time between two faults: the region re-forms and drains its queues.
QUIET_MIN_S, QUIET_MAX_S = 1.0, 3.0
# The period with no quorum (every node cut off from both others): long enough for the
# probes below to time out inside it.
NO_QUORUM_S = 4.0
# The shortest load that fits the three faults every run must inject.
MIN_LOAD_S = 15.0

KILL, ISOLATE, NO_QUORUM = "kill", "isolate", "no_quorum"


@dataclass(frozen=True)
class Fault:
    """One fault: `kind` on node index `node` (None: every node), after `quiet_s` of
    calm, lasting `duration_s` (then the node restarts or the partition heals)."""

    kind: str
    node: int | None
    quiet_s: float
    duration_s: float


def fault_schedule(seed: int, load_s: float, nodes: int = 3) -> list[Fault]:
    """The faults of one run, in order, fitting in `load_s` seconds (restarts add their
    own start time on top). Every schedule has at least one SIGKILL, one node isolated
    and one period with no quorum, at seeded positions; at most one fault at a time, so
    at most one node is down or cut off outside the no-quorum period."""
    if load_s < MIN_LOAD_S:
        raise ValueError(f"load_s must be at least {MIN_LOAD_S} s")
    rng = random.Random(seed)
    kinds = [KILL, ISOLATE, NO_QUORUM]
    rng.shuffle(kinds)
    out: list[Fault] = []
    used = 0.0
    while True:
        kind = kinds.pop(0) if kinds else rng.choice((KILL, ISOLATE))
        quiet = rng.uniform(QUIET_MIN_S, QUIET_MAX_S) if out else FIRST_FAULT_AFTER_S
        duration = NO_QUORUM_S if kind == NO_QUORUM else rng.uniform(FAULT_MIN_S, FAULT_MAX_S)
        forced = len(out) < 3
        if not forced and used + quiet + duration > load_s:
            return out
        node = None if kind == NO_QUORUM else rng.randrange(nodes)
        out.append(Fault(kind, node, quiet, duration))
        used += quiet + duration


# -- what the agreements say ------------------------------------------------------------


def sharing_partners(plan: TestnetPlan, origin: str, domain: str) -> set[str]:
    """Nodes that receive `origin`'s genes of `domain` under the demo agreements."""
    names = [n.name for n in plan.nodes]
    out = set()
    for i, j, shared in DEMO_AGREEMENTS:
        if shared != domain or max(i, j) >= len(names):
            continue
        if names[i] == origin:
            out.add(names[j])
        elif names[j] == origin:
            out.add(names[i])
    return out


# -- what was acknowledged --------------------------------------------------------------


@dataclass(frozen=True)
class AckedGene:
    origin: str
    gene_id: str
    domain: str
    version_hash: bytes


@dataclass(frozen=True)
class AckedEntry:
    via: str
    author: str
    key: str
    index: int
    entry_hash: bytes


@dataclass(frozen=True)
class AppendAttempt:
    via: str
    key: str
    started: float
    ended: float
    acked: bool


@dataclass
class WriteLog:
    """Everything the writers did, shared between threads (one lock)."""

    genes: list[AckedGene] = field(default_factory=list)
    entries: list[AckedEntry] = field(default_factory=list)
    attempts: list[AppendAttempt] = field(default_factory=list)
    gene_batches: int = 0
    imports_failed: int = 0
    violations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, attr: str, item: object) -> None:
        with self.lock:
            getattr(self, attr).append(item)


# LMDB forbids opening one environment twice in a process (closing one handle drops the
# other's locks), so every Cortex or ledger read of the test process takes this lock.
LMDB_LOCK = threading.Lock()

# How many writes a run may do at most, whatever the clock says.
MAX_GENE_BATCHES = 400
MAX_APPENDS = 5000
GENES_PER_BATCH = (1, 3)
# An import is a short-lived process (~0.5 s); one stuck longer than this is killed and
# counted as not acknowledged.
IMPORT_TIMEOUT_S = 30.0
# How long an append waits for its commit: a healthy region commits in milliseconds,
# a failover takes 1-2 s.
APPEND_TIMEOUT_S = 3.0
# The control call itself may take this much longer than the commit wait.
CALL_SLACK_S = 5.0
SHARED_DOMAINS = ("turbofan", "loan")
_FEATURES = {"turbofan": ("s11", ">", 46.0, 49.0), "loan": ("credit_score", "<", 400.0, 700.0)}


def gene_line(domain: str, name: str, rng: random.Random) -> str:
    feature, op, low, high = _FEATURES[domain]
    return json.dumps({"domain": domain, "name": name, "action": "inspect"
                       if domain == "turbofan" else "decline",
                       "codons": [{"feature": feature, "op": op,
                                   "threshold": round(rng.uniform(low, high), 3)}],
                       "params": {}, "purpose": "chaos load"}, sort_keys=True)


def guarded(writer: Callable[..., None], log: WriteLog) -> Callable[..., None]:
    """A writer thread's target: an exception ends the thread as a violation, never
    silently (a dead writer would make the run prove less than it says)."""
    def run(*args: object) -> None:
        try:
            writer(*args)
        except Exception as exc:  # any crash is a finding, reported with the seed
            log.add("violations", f"writer {writer.__name__} crashed: {exc!r}")
    return run


def write_genes(plan: TestnetPlan, seed: int, log: WriteLog, stop: threading.Event,
                workdir: Path) -> None:
    """Import small batches of new genes of the shared domains into random nodes (down
    ones too: an import needs no daemon) until `stop`."""
    rng = random.Random(seed * 7919 + 1)
    for batch in range(MAX_GENE_BATCHES):
        if stop.is_set():
            return
        node = rng.choice(plan.nodes)
        specs = [(rng.choice(SHARED_DOMAINS), f"chaos-{seed}-{batch}-{k}")
                 for k in range(rng.randint(*GENES_PER_BATCH))]
        path = workdir / f"batch-{batch}.jsonl"
        path.write_text("".join(gene_line(d, name, rng) + "\n" for d, name in specs))
        try:
            done = subprocess.run([GD_NODE, "genes", "import", str(path), "--home",
                                   node.home, "--json"], capture_output=True,
                                  timeout=IMPORT_TIMEOUT_S, check=False)
            ok = done.returncode == 0
        except subprocess.TimeoutExpired:
            ok = False
        with log.lock:
            log.gene_batches += 1
            log.imports_failed += 0 if ok else 1
        if ok:
            _record_imported(node, specs, log)
        stop.wait(rng.uniform(0.05, 0.3))


def _record_imported(node: NodePlan, specs: list[tuple[str, str]], log: WriteLog) -> None:
    with LMDB_LOCK, Cortex.open(Home.resolve(node.home).cortex_path, readonly=True) as cx:
        for domain, name in specs:
            gene_id = gene_id_for(node.peer_id, domain, name)
            gene = cx.get_gene(gene_id)
            if gene is None:
                log.add("violations", f"{node.name}: `genes import` exited 0 but gene "
                                      f"{gene_id} ({name}) is not in its Cortex")
                continue
            log.add("genes", AckedGene(node.name, gene_id, domain, gene.version_hash))


def append_entry(node: NodePlan, key: str, timeout_s: float = APPEND_TIMEOUT_S
                 ) -> AckedEntry | None:
    """One `ledger_append` through `node`'s control socket: the receipt as an
    AckedEntry, or None when it was not acknowledged (timeout, node down)."""
    try:
        receipt = call(Home.resolve(node.home), "ledger_append",
                       timeout=timeout_s + CALL_SLACK_S, kind="decision",
                       payload_hash=canonical.sha256(key.encode()),
                       summary={"chaos": key}, idempotency_key=key, timeout_s=timeout_s)
    except ControlError:
        return None
    except OSError:
        # The daemon was SIGKILLed mid-call: `control.call` lets the socket's
        # ConnectionResetError through (docs/simulation.md, "Findings"). Not acknowledged.
        return None
    if receipt.get("status") not in ("appended", "duplicate"):
        return None
    return AckedEntry(node.name, receipt["author"], key, int(receipt["index"]),
                      bytes.fromhex(receipt["entry_hash"]))


def write_entries(plan: TestnetPlan, seed: int, log: WriteLog, stop: threading.Event) -> None:
    """Append ledger entries through random nodes' control sockets until `stop`."""
    rng = random.Random(seed * 7919 + 2)
    for i in range(MAX_APPENDS):
        if stop.is_set():
            return
        node = rng.choice(plan.nodes)
        key = f"chaos-{seed}-e{i}"
        started = time.monotonic()
        entry = append_entry(node, key)
        log.add("attempts", AppendAttempt(node.name, key, started, time.monotonic(),
                                          entry is not None))
        if entry is not None:
            log.add("entries", entry)
        stop.wait(rng.uniform(0.01, 0.08))


# -- running the faults -----------------------------------------------------------------


@dataclass
class FaultLog:
    injected: list[str] = field(default_factory=list)
    no_quorum_windows: list[tuple[float, float]] = field(default_factory=list)
    probes: int = 0
    pids: set[int] = field(default_factory=set)


# Appends tried inside each no-quorum period; each must time out.
NO_QUORUM_PROBES = 2
NO_QUORUM_PROBE_TIMEOUT_S = 1.0
# After cutting every link, wait this long before probing, so a leader's last heartbeat
# round (sent before the cut) has no effect on what we measure.
NO_QUORUM_SETTLE_S = 0.5


def run_faults(plan: TestnetPlan, schedule: list[Fault], seed: int, log: WriteLog,
               faults: FaultLog, say: Callable[[str], None]) -> None:
    """Carry out `schedule` in real time; every fault is undone before the next."""
    rng = random.Random(seed * 7919 + 3)
    start = time.monotonic()
    for number, fault in enumerate(schedule):
        time.sleep(fault.quiet_s)
        at = time.monotonic() - start
        if fault.kind == KILL:
            node = plan.nodes[fault.node or 0]
            procs.stop_node(node, hard=True)
            faults.injected.append(f"{at:5.1f}s SIGKILL {node.name} for "
                                   f"{fault.duration_s:.1f}s")
            time.sleep(fault.duration_s)
            faults.pids.add(procs.start_node(node, plan))
        elif fault.kind == ISOLATE:
            node = plan.nodes[fault.node or 0]
            procs.partition(plan, [[node]])
            faults.injected.append(f"{at:5.1f}s isolate {node.name} for "
                                   f"{fault.duration_s:.1f}s")
            time.sleep(fault.duration_s)
            procs.heal(plan)
        else:
            procs.partition(plan, [[n] for n in plan.nodes])
            cut = time.monotonic()
            faults.injected.append(f"{at:5.1f}s no quorum (every node alone) for "
                                   f"{fault.duration_s:.1f}s")
            time.sleep(NO_QUORUM_SETTLE_S)
            for p in range(NO_QUORUM_PROBES):
                node = rng.choice(plan.nodes)
                faults.probes += 1
                entry = append_entry(node, f"chaos-{seed}-probe{number}-{p}",
                                     NO_QUORUM_PROBE_TIMEOUT_S)
                if entry is not None:
                    log.add("violations", f"an append through {node.name} was "
                                          f"acknowledged with no quorum: {entry}")
            time.sleep(max(0.0, cut + fault.duration_s - time.monotonic()))
            faults.no_quorum_windows.append((cut + NO_QUORUM_SETTLE_S, time.monotonic()))
            procs.heal(plan)
    say(f"faults done after {time.monotonic() - start:.1f}s")


def short_tmpdir() -> Path:
    """A short directory under /tmp: a Unix socket path must stay under 108 bytes."""
    return Path(tempfile.mkdtemp(prefix="gdchaos", dir="/tmp"))
