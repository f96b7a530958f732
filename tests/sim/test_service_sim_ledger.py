"""The region's real Raft ledger service on three voters, in-process on trio's mock clock
over a simulated gate and faulty streams, with partitions, crashes (the leader's too) and
kills right after a write; one seed gives one run, bit for bit (service_sim_ledger.py,
docs/simulation.md). Each invariant has a test that breaks what it guards and sees it fire.

`SERVICE_LEDGER_SEEDS=N` runs N seeds (default 12, or `SERVICE_SEEDS` up to 200);
`python tests/sim/sweep.py --sims ledger --seeds N` sweeps many over a process pool.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import service_sim_ledger as sim
from service_sim import ServiceSimFailure

from gd.ledger.chain import AppendReceipt, AppendStatus
from gd.ledger.entry import LedgerEntry
from gd.node.services.ledger_gossip import HeadWatch
from gd.node.services.ledger_service import LedgerService

# `make sim` sets SERVICE_SEEDS: up to 200 seeds of this run come with it (~0.35 CPU s
# each); large sweeps belong in tests/sim/sweep.py's pool.
SEEDS = int(os.environ.get("SERVICE_LEDGER_SEEDS", min(int(os.environ["SERVICE_SEEDS"]), 200)
                           if "SERVICE_SEEDS" in os.environ else 12))


def _run(seed: int, net_class: type[sim.LedgerNet] = sim.LedgerNet) -> sim.LedgerSimResult:
    """One run, its three LMDB homes on /dev/shm when there is one."""
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as scratch:
        return sim.run(seed, Path(scratch), net_class)


def _fails(net_class: type[sim.LedgerNet], match: str, seeds: range = range(6)) -> str:
    """The first failure of `net_class` over `seeds`, which must match `match`."""
    with pytest.raises(ServiceSimFailure, match=match) as caught:
        for seed in seeds:
            _run(seed, net_class)
    return str(caught.value)


@pytest.mark.parametrize("seed", range(SEEDS))
def test_the_ledger_service_keeps_its_invariants_under_faults(seed: int) -> None:
    try:
        result = _run(seed)
    except ServiceSimFailure as exc:
        pytest.fail(str(exc), pytrace=False)
    assert result.size > 0


def test_a_ledger_seed_replays_bit_for_bit() -> None:
    first, again, other = _run(3), _run(3), _run(4)
    assert first.trace == again.trace and first.trace_hash == again.trace_hash
    assert other.trace_hash != first.trace_hash


def test_the_runs_meet_every_fault_and_action() -> None:
    kinds: Counter[str] = Counter()
    for seed in range(8):
        kinds.update(_run(seed).stats)
    for kind in ("append", "ack", "refused", "fault reset", "fault delay", "crash",
                 "crash-leader", "killed", "restart", "partition", "heal", "settled"):
        assert kinds[kind] > 0, kind


# -- teeth: each invariant, broken on purpose ---------------------------------------------

class ForkingNet(sim.LedgerNet):
    """Node 2 applies each committed batch in reverse order: its ledger forks."""

    def build(self, node: sim.LedgerNode) -> LedgerService:
        svc = super().build(node)
        if node.index == 2:
            append = svc.ledger.append_batch

            def reversed_batch(statements: Any, **kwargs: Any) -> Any:
                return append(list(statements)[::-1], **kwargs)

            svc.ledger.append_batch = reversed_batch  # type: ignore[method-assign]
        return svc


def test_a_node_whose_ledger_forks_is_caught() -> None:
    _fails(ForkingNet, "fork: node 2 holds another entry")


class _LastEntryLost:
    """A node's ledger without its last entry (what a lost committed apply looks like)."""

    def __init__(self, ledger: Any) -> None:
        self.ledger = ledger
        self.size = max(ledger.size - 1, 0)

    def entries(self, start: int, stop: int) -> Any:
        return self.ledger.entries(start, min(stop, self.size))


class AmnesiacNet(sim.LedgerNet):
    """Each restarted node comes back without the last entry it had applied. No
    compaction: a snapshot from a peer could refill the hole before the restart check
    sees it, and the run would fail later as not converged instead."""

    compact_rate = 0.0

    def ledger_of(self, node: sim.LedgerNode) -> Any:
        ledger = super().ledger_of(node)
        return _LastEntryLost(ledger) if node.life > 1 else ledger


def test_a_restart_that_loses_a_committed_entry_is_caught() -> None:
    _fails(AmnesiacNet, "ledger shrank")


class FalseAckNet(sim.LedgerNet):
    """Node 0 acknowledges its appends without proposing them."""

    def build(self, node: sim.LedgerNode) -> LedgerService:
        svc = super().build(node)
        if node.index == 0:
            async def append(kind: Any, payload: bytes, summary: Any = None, key: Any = None,
                             timeout_s: float = 10.0) -> AppendReceipt:
                return AppendReceipt(AppendStatus.APPENDED, svc.ledger.size, payload,
                                     node.peer, key)

            svc.append = append  # type: ignore[method-assign]
        return svc


def test_an_acknowledged_append_missing_from_the_ledger_is_caught() -> None:
    _fails(FalseAckNet, "acknowledged .* but is not on the ledger")


class KeylessNet(sim.LedgerNet):
    """Every node ignores the client's idempotency key (each try is a new statement), so
    a retry of an append that did commit lands twice."""

    def build(self, node: sim.LedgerNode) -> LedgerService:
        svc = super().build(node)
        append, tries = svc.append, Counter[str]()

        async def keyless(kind: Any, payload: bytes, summary: Any = None, key: Any = None,
                          timeout_s: float = 10.0) -> AppendReceipt:
            tries[key] += 1
            return await append(kind, payload, summary, f"{key}-{node.life}-{tries[key]}",
                                timeout_s)

        svc.append = keyless  # type: ignore[method-assign]
        return svc


def test_a_duplicated_append_is_caught() -> None:
    _fails(KeylessNet, "is on the ledger twice|acknowledged twice")


class StrangerNet(sim.LedgerNet):
    """Node 0 proposes a statement of its own that no client asked for."""

    async def settle(self) -> None:
        node = self.nodes[0]
        if node.svc is None:
            self.restart(node)
        assert node.svc is not None
        node.svc.enqueue_many([LedgerEntry.create(node.key, "decision", 7, b"\x07" * 32)])
        await super().settle()


def test_a_statement_no_client_appended_is_caught() -> None:
    _fails(StrangerNet, "no client appended", range(2))


class SwappedEntryNet(sim.LedgerNet):
    """Node 1's stored entry 0 is replaced by entry 1's bytes after the run."""

    def check_trees(self) -> None:
        svc = self.nodes[1].svc
        assert svc is not None
        raw = svc.ledger.raw_entry(1)
        with svc.ledger.env.begin(write=True) as txn:
            txn.put((0).to_bytes(8, "big"), raw, db=svc.ledger._entries)
        super().check_trees()


def test_a_corrupted_hash_chain_is_caught() -> None:
    _fails(SwappedEntryNet, "node 1's ledger does not verify", range(1))


class ForeignHeadNet(sim.LedgerNet):
    """Node 1 stores a head signed over a root that is not the common ledger's."""

    def check_trees(self) -> None:
        svc = self.nodes[1].svc
        assert svc is not None
        ledger = svc.ledger
        with ledger.env.begin(write=True) as txn:
            txn.delete((ledger.size).to_bytes(8, "big"), db=ledger._heads)
        original = ledger.root

        def root(size: int | None = None) -> bytes:
            return b"\x55" * 32 if size == ledger.size else original(size)

        ledger.root = root  # type: ignore[method-assign]
        super().check_trees()


def test_a_root_that_differs_from_the_common_ledger_is_caught() -> None:
    _fails(ForeignHeadNet, "Merkle root differs", range(1))


class IsolatedNet(sim.LedgerNet):
    """Node 2's cut never heals."""

    def heal(self) -> None:
        if self.faults:
            super().heal()

    async def settle(self) -> None:
        self.partition(2)
        await super().settle()


def test_a_node_that_never_converges_is_caught() -> None:
    _fails(IsolatedNet, "not converged|never acknowledged", range(1))


class CorruptingNet(sim.LedgerNet):
    """The network flips a byte of a frame now and then (the peers stay honest)."""

    def __init__(self, seed: int, root: Path) -> None:
        super().__init__(seed, root)
        self.corrupt_rate = 0.05


def test_a_peer_scored_for_the_network_s_damage_is_reported() -> None:
    _fails(CorruptingNet, "honest", range(3))


def test_a_task_that_fails_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(self: HeadWatch, raw: bytes, peer: str) -> None:
        raise RuntimeError("a bug in gossip")

    monkeypatch.setattr(HeadWatch, "heard", broken)
    _fails(sim.LedgerNet, "a task failed: RuntimeError", range(1))


def test_a_statement_applied_through_a_snapshot_can_be_submitted_again() -> None:
    """Seed 43 with compaction every 5 entries, under PYTHONHASHSEED=3 (the run follows
    the hash seed: a fresh process pins it): requests 6 and 15, pre-signed and committed
    while their node installed a snapshot, were never acknowledged on that node again
    (fixed: the proposer settles what a restore brought, `Catchup.settle`)."""
    done = subprocess.run([sys.executable, str(Path(sim.__file__)), "--compact", "43", "1"],
                          env={**os.environ, "PYTHONHASHSEED": "3"}, capture_output=True,
                          text=True, timeout=300, check=False)
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.returncode == 0, done.stdout
