"""Cross-checking the region's signed tree heads (issue 11): what we gossip, what we
keep of what we hear, and the fork alarms.

Received heads are stored (`Ledger.add_head`) once our own log reaches them, and fed to
the sans-I/O `ForkMonitor`; its consistency questions are answered from our own copy of
the log, a bounded number per call so a burst of heads cannot stall the service's loop.
Alarms are recorded (`Ledger.record_alarm`), logged and counted (`gd_ledger_fork_alarms`).
A head that does not decode or verify is the peer's fault (`RemoteProtocolError`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

import trio
from prometheus_client import Counter

from gd.genome.identity import NodeKey
from gd.ledger.errors import RemoteLedgerError
from gd.ledger.forks import AlarmKind, ForkAlarm, ForkMonitor
from gd.ledger.sth import SignedTreeHead
from gd.node.services.ledger_wire import LedgerGossip
from gd.node.store.ledger_store import Ledger
from gd.protocol.errors import RemoteProtocolError

# Heads from gossip beyond our log, kept to store once we have caught up.
MAX_FUTURE_HEADS: Final = 64
# Consistency checks run per call, so a burst of heads cannot stall the loop.
MAX_PROOF_CHECKS: Final = 8


class HeadWatch:
    """Our latest head for gossip, and the checks on every head we hear or sign."""

    def __init__(self, ledger: Ledger, key: NodeKey, *, log_id: str,
                 voters: frozenset[str], wall_ms: Callable[[], int], alarms: Counter,
                 log: Any) -> None:
        self.ledger = ledger
        self.key = key
        self.log_id = log_id
        self.voters = voters
        self.wall_ms = wall_ms
        self.m_alarms = alarms
        self.log = log
        self.monitor = ForkMonitor(log_id, trusted_signers=voters)
        self.head_bytes = b""
        self.alarms_raised = 0
        self._future_heads: dict[int, tuple[SignedTreeHead, str]] = {}
        self._alarm_pairs: set[tuple[bytes, bytes]] = set()

    def gossip(self) -> LedgerGossip:
        """What every stream carries: our latest head and the voters we are configured with."""
        return LedgerGossip(head=self.head_bytes, voters=tuple(sorted(self.voters)))

    async def signed(self, head: SignedTreeHead | None, size: int) -> None:
        """We applied entries up to `size` (and signed `head`, as the leader)."""
        if head is not None:
            self.head_bytes = head.encode()
            await self.observe(head, "local")
        for head_size in sorted(s for s in self._future_heads if s <= size):
            held, source = self._future_heads.pop(head_size)
            await self.store(held, source)
        await self.check_pending_proofs(size)

    async def heard(self, raw: bytes, peer: str) -> None:
        """A region member gossiped `raw`: decode, verify against the voters, check, keep."""
        try:
            head = SignedTreeHead.decode(raw)
        except RemoteLedgerError as exc:
            raise RemoteProtocolError(f"bad gossiped head: {exc}") from None
        if head.log_id != self.log_id:
            return
        try:
            head.verify(self.voters)
        except RemoteLedgerError as exc:
            raise RemoteProtocolError(f"gossiped head: {exc}") from None
        await self.observe(head, peer)
        await self.store(head, peer)

    async def observe(self, head: SignedTreeHead, source: str) -> None:
        try:
            observation = self.monitor.observe(head, source)
        except RemoteLedgerError:
            return
        await self._raise_all(observation.alarms)
        if observation.requests:
            await self.check_pending_proofs(await trio.to_thread.run_sync(
                lambda: self.ledger.size))

    async def store(self, head: SignedTreeHead, source: str) -> None:
        """Keep a head signed by the leader, after checking it against our own log."""
        def store() -> tuple[str, bytes | None]:
            size = self.ledger.size
            if head.size > size:
                return "future", None
            root = self.ledger.root(head.size)
            if root != head.root:
                return "fork", root
            self.ledger.add_head(head)
            return "stored", None

        outcome, ours = await trio.to_thread.run_sync(store)
        if outcome == "future":
            if len(self._future_heads) < MAX_FUTURE_HEADS or head.size in self._future_heads:
                self._future_heads[head.size] = (head, source)
        elif outcome == "fork":
            assert ours is not None
            mine = SignedTreeHead.create(self.key, head.size, ours, self.wall_ms(),
                                         self.log_id)
            await self.alarm(ForkAlarm(
                AlarmKind.SAME_SIZE_DIFFERENT_ROOT, mine, head,
                f"{source} gossiped root {head.root.hex()[:16]}… for size {head.size}; "
                f"our log has {ours.hex()[:16]}…", source))
        elif not self.head_bytes or head.size >= SignedTreeHead.decode(self.head_bytes).size:
            self.head_bytes = head.encode()

    async def check_pending_proofs(self, size: int) -> None:
        """Answer the monitor's consistency questions from our own copy of the log."""
        checked = 0
        for request in self.monitor.pending():
            if request.new.size > size or checked >= MAX_PROOF_CHECKS:
                continue
            checked += 1
            proof = await trio.to_thread.run_sync(self.ledger.consistency_proof,
                                                  request.old.size, request.new.size)
            await self._raise_all(self.monitor.check(request, proof))

    async def _raise_all(self, alarms: Iterable[ForkAlarm]) -> None:
        for alarm in alarms:
            await self.alarm(alarm)

    async def alarm(self, alarm: ForkAlarm) -> None:
        pair = (alarm.first.head_hash, alarm.second.head_hash)
        if pair in self._alarm_pairs:
            return
        self._alarm_pairs.add(pair)
        self.alarms_raised += 1
        self.m_alarms.inc()
        self.log.error("ledger.fork_alarm", kind=alarm.kind.value, source=alarm.source,
                       detail=alarm.detail, equivocation=alarm.equivocation)
        await trio.to_thread.run_sync(self.ledger.record_alarm, alarm)


__all__ = ["MAX_FUTURE_HEADS", "MAX_PROOF_CHECKS", "HeadWatch"]
