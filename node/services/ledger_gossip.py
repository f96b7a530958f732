"""The driver of head gossip: carries out what `gd.ledger.gossip_core.GossipCore` asks.

The core decides which heads to keep and which alarms to raise; this module does the
I/O its actions need, against our own copy of the log in worker threads: reading sizes
and roots, storing heads (`Ledger.add_head`), computing consistency proofs, recording
alarms (`Ledger.record_alarm`, logged and counted in `gd_ledger_fork_alarms`). A head
that does not decode or verify is the peer's fault (`RemoteProtocolError`, from the core).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import trio
from prometheus_client import Counter

from gd.genome.identity import NodeKey
from gd.ledger.gossip_core import (
    MAX_FUTURE_HEADS,
    MAX_PROOF_CHECKS,
    CheckHead,
    GossipAction,
    GossipCore,
    NeedSize,
    ProveConsistency,
    RaiseAlarm,
    StoreHead,
)
from gd.ledger.ledger_frames import LedgerGossip
from gd.ledger.sth import SignedTreeHead
from gd.node.store.ledger_store import Ledger


class HeadWatch:
    """Our latest head for gossip, and the I/O of the checks on every head we hear or sign."""

    def __init__(self, ledger: Ledger, key: NodeKey, *, log_id: str,
                 voters: frozenset[str], wall_ms: Callable[[], int], alarms: Counter,
                 log: Any) -> None:
        self.ledger = ledger
        self.core = GossipCore(key, log_id=log_id, voters=voters)
        self.wall_ms = wall_ms
        self.m_alarms = alarms
        self.log = log

    @property
    def alarms_raised(self) -> int:
        return self.core.alarms_raised

    def gossip(self) -> LedgerGossip:
        """What every stream carries: our latest head and the voters we are configured with."""
        return self.core.gossip()

    async def signed(self, head: SignedTreeHead | None, size: int) -> None:
        """We applied entries up to `size` (and signed `head`, as the leader)."""
        await self.run(self.core.signed(head, size))

    async def heard(self, raw: bytes, peer: str) -> None:
        """A region member gossiped `raw` (RemoteProtocolError when it is no valid head)."""
        await self.run(self.core.heard(raw, peer))

    async def run(self, actions: Iterable[GossipAction]) -> None:
        """Carry out the core's actions, and those they lead to, in order."""
        todo = deque(actions)
        while todo:
            action = todo.popleft()
            if isinstance(action, CheckHead):
                head = action.head
                size, root = await trio.to_thread.run_sync(self._read, head.size)
                todo.extend(self.core.head_checked(head, action.source, size=size, root=root,
                                                   now_ms=self.wall_ms()))
            elif isinstance(action, StoreHead):
                await trio.to_thread.run_sync(self.ledger.add_head, action.head)
            elif isinstance(action, NeedSize):
                size = await trio.to_thread.run_sync(lambda: self.ledger.size)
                todo.extend(self.core.proofs_due(size))
            elif isinstance(action, ProveConsistency):
                request = action.request
                proof = await trio.to_thread.run_sync(self.ledger.consistency_proof,
                                                      request.old.size, request.new.size)
                todo.extend(self.core.proved(request, proof))
            elif isinstance(action, RaiseAlarm):
                await self._alarm(action)

    def _read(self, head_size: int) -> tuple[int, bytes | None]:
        """Our log's size, and its root at `head_size` when it reaches that far."""
        size = self.ledger.size
        return size, (self.ledger.root(head_size) if head_size <= size else None)

    async def _alarm(self, action: RaiseAlarm) -> None:
        alarm = action.alarm
        self.m_alarms.inc()
        self.log.error("ledger.fork_alarm", kind=alarm.kind.value, source=alarm.source,
                       detail=alarm.detail, equivocation=alarm.equivocation)
        await trio.to_thread.run_sync(self.ledger.record_alarm, alarm)


__all__ = ["MAX_FUTURE_HEADS", "MAX_PROOF_CHECKS", "HeadWatch"]
