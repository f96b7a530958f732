"""What a peer may tell a ledger member on `/gd/raft`, sans-I/O (issue 12, item 4).

The inbound conversation's checks, and the region's learners. The core is fed each
decoded frame with the facts the driver knows about its sender (its authenticated peer
id; whether `node/net/membership.py` counts it a region member) and the time as a value,
and returns actions for the driver (`gd.node.services.ledger_inbound`):

* a Raft frame (decoded and checked with the frame) must name the stream's peer as
  `frm` (the core trusts `frm` for vote counting) and us as `to`; a frame from a
  non-member is `Dropped`, one past the queue's bound too (Raft recovers from loss); the
  rest wait in the core's queue for the service's loop, which steps them into the
  `RaftNode` (`step_all`);
* a gossip frame hands its head to the gossip core (`HeardHead`) and, from a region
  member configured with our voters, asks the leader for a learner slot;
* a fetch must be a range and come from a region member (`ServeFetch`);
* anything else, and every check above that fails, is `Misbehaved(RemoteProtocolError)`:
  the driver raises it, the gate closes the stream and scores the peer.

Learner slots are bounded (MAX_LEARNERS); when full, the learner silent longest (at
least LEARNER_IDLE_S) is evicted so the newcomer's next request gets its place.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from gd.ledger.catchup_core import check_fetch
from gd.ledger.ledger_frames import RAFT_PROTOCOL, LedgerFetch, LedgerGossip, RaftFrame
from gd.ledger.raft import RaftNode
from gd.ledger.raft_messages import RaftMessage
from gd.ledger.raft_records import ConfChange, ConfChangeOp, RaftLocalError, RaftRemoteError
from gd.protocol.errors import RemoteProtocolError
from gd.protocol.wire import Message

# Inbound messages waiting for the loop; beyond this they are dropped (a flood from a
# member cannot grow our memory; Raft recovers from the loss).
INBOUND_QUEUE: Final = 16_384
# Learner slots (issue 11, item 6): a region's non-voting members. The mesh keeps at most
# 12 in-region peers (node/net/mesh.py), so 16 covers every honest member with room for
# churn; beyond it a new learner gets a slot only by evicting one idle for LEARNER_IDLE_S.
MAX_LEARNERS: Final = 16
# Learners gossip every second while connected; one silent this long is gone.
LEARNER_IDLE_S: Final = 600.0


@dataclass(frozen=True)
class Dropped:
    """A message we cannot use (counted under `reason`), not the peer's fault."""

    reason: str


@dataclass(frozen=True)
class Wake:
    """Messages wait for the loop: run it now."""


@dataclass(frozen=True)
class ServeFetch:
    """Answer a member's fetch with a bounded chunk of [start, stop)."""

    start: int
    stop: int


@dataclass(frozen=True)
class HeardHead:
    """A member gossiped this head: the gossip core checks it."""

    raw: bytes
    peer: str


@dataclass(frozen=True)
class Misbehaved:
    """The peer broke the protocol: raise `error` (the gate scores the peer)."""

    error: RemoteProtocolError


@dataclass(frozen=True)
class Note:
    """Something the operator may want in the log (a learner added, a bad message)."""

    event: str
    fields: dict[str, Any] = field(default_factory=dict)
    warning: bool = False


InboundAction = Dropped | Wake | ServeFetch | HeardHead | Misbehaved | Note


def link_targets(me: str, members: Collection[str], voters: Collection[str],
                 connected_in_region: Iterable[str]) -> frozenset[str]:
    """Who hears from us: the members, the configured voters, and the connected peers of
    our region (a would-be learner must reach the leader)."""
    return (frozenset(members) | frozenset(voters) | frozenset(connected_in_region)) - {me}


class InboundCore:
    """The checks on what peers send, the queue for the loop, and the learner slots."""

    def __init__(self, me: str, *, region: str, voters: frozenset[str], started: float,
                 max_learners: int = MAX_LEARNERS, max_queue: int = INBOUND_QUEUE) -> None:
        self.me = me
        self.region = region
        self.voters = voters
        self.max_learners = max_learners
        self.max_queue = max_queue
        self.queue: deque[RaftMessage | str] = deque()  # a str: a would-be learner
        self._learner_seen: dict[str, float] = {}  # learner -> last gossip (monotonic)
        self._started = started

    # -- the streams' side -----------------------------------------------------------------

    def receive(self, node: RaftNode, peer: str, member: bool, msg: Message,
                now: float) -> list[InboundAction]:
        """One frame from `peer` (authenticated; `member`: a member of our region)."""
        if isinstance(msg, RaftFrame):
            return self._on_frame(node, peer, member, msg.msg)
        if isinstance(msg, LedgerGossip):
            return self._on_gossip(node, peer, member, msg, now)
        if isinstance(msg, LedgerFetch):
            try:
                check_fetch(msg)
            except RemoteProtocolError as exc:
                return [Misbehaved(exc)]
            if not member:
                return [Dropped("not_member"), Misbehaved(RemoteProtocolError(
                    f"ledger fetch from a non-member of {self.region}"))]
            return [ServeFetch(msg.start, msg.stop)]
        return [Misbehaved(RemoteProtocolError(f"unexpected {msg.TYPE} on {RAFT_PROTOCOL}"))]

    def _on_frame(self, node: RaftNode, peer: str, member: bool,
                  msg: RaftMessage) -> list[InboundAction]:
        if msg.frm != peer:
            return [Misbehaved(RemoteProtocolError(
                f"raft message from {msg.frm} on {peer}'s stream"))]
        if msg.to != self.me:
            return [Misbehaved(RemoteProtocolError(f"raft message for {msg.to} sent to us"))]
        if not member or peer not in (node.conf.members | self.voters):
            return [Dropped("not_member")]
        if len(self.queue) >= self.max_queue:
            return [Dropped("inbound_full")]
        self.queue.append(msg)
        return [Wake()]

    def _on_gossip(self, node: RaftNode, peer: str, member: bool, msg: LedgerGossip,
                   now: float) -> list[InboundAction]:
        actions: list[InboundAction] = []
        if peer in node.conf.learners:
            self._learner_seen[peer] = now
        if member and frozenset(msg.voters) == self.voters and node.is_leader \
                and peer not in node.conf.members and peer not in self.voters \
                and len(self.queue) < self.max_queue:
            self.queue.append(peer)  # the loop proposes ADD_LEARNER
            actions.append(Wake())
        if msg.head and member:
            actions.append(HeardHead(msg.head, peer))
        return actions

    # -- the loop's side -------------------------------------------------------------------

    def step_all(self, node: RaftNode, now: float) -> list[InboundAction]:
        """Feed everything queued to the Raft node (the loop's task only)."""
        actions: list[InboundAction] = []
        while self.queue:
            item = self.queue.popleft()
            if isinstance(item, str):
                actions += self._add_learner(node, item, now)
                continue
            try:
                node.step(item)
            except RaftRemoteError as exc:
                actions += [Dropped("invalid"), Note("raft.bad_message", {
                    "peer": item.frm, "error": str(exc)[:200]}, warning=True)]
        return actions

    def _add_learner(self, node: RaftNode, peer: str, now: float) -> list[InboundAction]:
        if not node.is_leader or peer in node.conf.members:
            return []
        change = ConfChange(ConfChangeOp.ADD_LEARNER, peer)
        if len(node.conf.learners) >= self.max_learners:
            idle = self.idle_learner(node.conf.learners, now)
            if idle is None:
                return [Dropped("learners_full")]  # every slot in use by a live learner
            change = ConfChange(ConfChangeOp.REMOVE_NODE, idle)  # the peer asks again
        try:
            node.propose_conf_change(change)
        except RaftLocalError:
            return []  # a change is pending; the peer's next gossip asks again
        event = "raft.add_learner" if change.node_id == peer else "raft.evict_learner"
        return [Note(event, {"peer": change.node_id})]

    def idle_learner(self, learners: Iterable[str], now: float) -> str | None:
        """The learner silent longest, if silent for LEARNER_IDLE_S (one we have not heard
        since we started counts from then)."""
        seen = {p: self._learner_seen.get(p, self._started) for p in learners}
        oldest = min(seen, key=lambda p: (seen[p], p), default=None)
        if oldest is None or now - seen[oldest] < LEARNER_IDLE_S:
            return None
        return oldest


__all__ = ["INBOUND_QUEUE", "LEARNER_IDLE_S", "MAX_LEARNERS", "Dropped", "HeardHead",
           "InboundAction", "InboundCore", "Misbehaved", "Note", "ServeFetch", "Wake",
           "link_targets"]
