"""Cross-checking the region's signed tree heads, sans-I/O (issue 11; issue 12, item 4).

What we gossip, which heard heads we keep, and the fork alarms. The core is fed heads
(ours as we sign or apply them, a member's as gossiped) and what our own copy of the log
says about them, and returns actions for the driver (`gd.node.services.ledger_gossip`):

* `CheckHead` — read our log's size and root at the head's size, and hand them back
  through `head_checked` (a head beyond our log is held until we reach it);
* `StoreHead` — the head matches our log: keep it (`Ledger.add_head`);
* `NeedSize` — the monitor has consistency questions: hand our log's size to
  `proofs_due`, which asks for at most MAX_PROOF_CHECKS proofs per call
  (`ProveConsistency`), so a burst of heads cannot stall the service's loop;
* `RaiseAlarm` — two heads do not fit together: record, log and count it (each pair once).

A head that does not decode or verify is the peer's fault (`RemoteProtocolError`). The
time a fork alarm's own head is signed at is a value passed in (`now_ms`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gd.genome.identity import NodeKey
from gd.ledger.errors import RemoteLedgerError
from gd.ledger.forks import AlarmKind, ForkAlarm, ForkMonitor, ProofRequest
from gd.ledger.ledger_frames import LedgerGossip
from gd.ledger.merkle import ConsistencyProof
from gd.ledger.sth import SignedTreeHead
from gd.protocol.errors import RemoteProtocolError

# Heads from gossip beyond our log, kept to store once we have caught up.
MAX_FUTURE_HEADS: Final = 64
# Consistency checks run per call, so a burst of heads cannot stall the loop.
MAX_PROOF_CHECKS: Final = 8


@dataclass(frozen=True)
class CheckHead:
    """Compare `head` with our log, then call `GossipCore.head_checked`."""

    head: SignedTreeHead
    source: str


@dataclass(frozen=True)
class StoreHead:
    """Keep `head`: our log has its root at its size."""

    head: SignedTreeHead


@dataclass(frozen=True)
class NeedSize:
    """Consistency questions are pending: call `proofs_due` with our log's size."""


@dataclass(frozen=True)
class ProveConsistency:
    """Compute the consistency proof for `request` from our log, then call `proved`."""

    request: ProofRequest


@dataclass(frozen=True)
class RaiseAlarm:
    """Heads that do not fit together: record, log and count (raised once per pair)."""

    alarm: ForkAlarm


GossipAction = CheckHead | StoreHead | NeedSize | ProveConsistency | RaiseAlarm


class GossipCore:
    """Our latest head for gossip, and the checks on every head we hear or sign."""

    def __init__(self, key: NodeKey, *, log_id: str, voters: frozenset[str]) -> None:
        self.key = key
        self.log_id = log_id
        self.voters = voters
        self.monitor = ForkMonitor(log_id, trusted_signers=voters)
        self.head_bytes = b""
        self.alarms_raised = 0
        self._head_size = -1
        self._future_heads: dict[int, tuple[SignedTreeHead, str]] = {}
        self._alarm_pairs: set[tuple[bytes, bytes]] = set()

    def gossip(self) -> LedgerGossip:
        """What every stream carries: our latest head and the voters we are configured with."""
        return LedgerGossip(head=self.head_bytes, voters=tuple(sorted(self.voters)))

    def signed(self, head: SignedTreeHead | None, size: int) -> list[GossipAction]:
        """We applied entries up to `size` (and signed `head`, as the leader)."""
        actions: list[GossipAction] = []
        if head is not None:
            self._set_head(head)
            # The proofs its questions need are asked for below, at `size`.
            actions += [a for a in self._observe(head, "local") if not isinstance(a, NeedSize)]
        for head_size in sorted(s for s in self._future_heads if s <= size):
            held, source = self._future_heads.pop(head_size)
            actions.append(CheckHead(held, source))
        actions += self.proofs_due(size)
        return actions

    def heard(self, raw: bytes, peer: str) -> list[GossipAction]:
        """A region member gossiped `raw`: decode, verify against the voters, check, keep.
        A head of another log is ignored; one that does not decode or verify is
        RemoteProtocolError."""
        try:
            head = SignedTreeHead.decode(raw)
        except RemoteLedgerError as exc:
            raise RemoteProtocolError(f"bad gossiped head: {exc}") from None
        if head.log_id != self.log_id:
            return []
        try:
            head.verify(self.voters)
        except RemoteLedgerError as exc:
            raise RemoteProtocolError(f"gossiped head: {exc}") from None
        return [*self._observe(head, peer), CheckHead(head, peer)]

    def head_checked(self, head: SignedTreeHead, source: str, *, size: int,
                     root: bytes | None, now_ms: int) -> list[GossipAction]:
        """Our log's `size`, and its `root` at `head.size` (None when `head` is beyond it)."""
        if head.size > size or root is None:
            if len(self._future_heads) < MAX_FUTURE_HEADS or head.size in self._future_heads:
                self._future_heads[head.size] = (head, source)
            return []
        if root != head.root:
            mine = SignedTreeHead.create(self.key, head.size, root, now_ms, self.log_id)
            return self._alarms([ForkAlarm(
                AlarmKind.SAME_SIZE_DIFFERENT_ROOT, mine, head,
                f"{source} gossiped root {head.root.hex()[:16]}… for size {head.size}; "
                f"our log has {root.hex()[:16]}…", source)])
        if head.size >= self._head_size:
            self._set_head(head)
        return [StoreHead(head)]

    def proofs_due(self, size: int) -> list[GossipAction]:
        """At most MAX_PROOF_CHECKS of the monitor's questions our log (at `size`) answers."""
        due = [r for r in self.monitor.pending() if r.new.size <= size]
        return [ProveConsistency(r) for r in due[:MAX_PROOF_CHECKS]]

    def proved(self, request: ProofRequest, proof: ConsistencyProof) -> list[GossipAction]:
        """The proof our log gives for `request`: alarms if the two heads do not fit."""
        return self._alarms(self.monitor.check(request, proof))

    def _set_head(self, head: SignedTreeHead) -> None:
        self.head_bytes = head.encode()
        self._head_size = head.size

    def _observe(self, head: SignedTreeHead, source: str) -> list[GossipAction]:
        try:
            observation = self.monitor.observe(head, source)
        except RemoteLedgerError:
            return []
        actions = self._alarms(observation.alarms)
        if observation.requests:
            actions.append(NeedSize())
        return actions

    def _alarms(self, alarms: tuple[ForkAlarm, ...] | list[ForkAlarm]) -> list[GossipAction]:
        out: list[GossipAction] = []
        for alarm in alarms:
            pair = (alarm.first.head_hash, alarm.second.head_hash)
            if pair in self._alarm_pairs:
                continue
            self._alarm_pairs.add(pair)
            self.alarms_raised += 1
            out.append(RaiseAlarm(alarm))
        return out


__all__ = ["MAX_FUTURE_HEADS", "MAX_PROOF_CHECKS", "CheckHead", "GossipAction", "GossipCore",
           "NeedSize", "ProveConsistency", "RaiseAlarm", "StoreHead"]
