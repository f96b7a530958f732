"""Inbound `/gd/raft` streams and the region's membership, for a ledger member.

Every stream is read here: Raft frames (queued for the service's loop, which owns the
`RaftNode`), head gossip (a would-be learner's request, and the head handed to
`HeadWatch`), and snapshot catch-up fetches. A peer that breaks the protocol — a frame
that does not decode, a `frm` that is not the stream's authenticated peer, a fetch from
outside the region — gets `RemoteProtocolError`: the daemon's guard closes the stream and
scores the peer. Messages we merely cannot use (a non-member's, a full queue) are dropped
and counted, since Raft recovers from loss.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final

import trio
from prometheus_client import Counter

from gd.ledger.raft import RaftNode
from gd.ledger.raft_messages import RaftMessage
from gd.ledger.raft_records import ConfChange, ConfChangeOp, RaftLocalError, RaftRemoteError
from gd.node.net.membership import region_member
from gd.node.net.peers import PeerRecord, PeerTable
from gd.node.net.streams import FramedStream
from gd.node.services.ledger_catchup import ledger_chunk
from gd.node.services.ledger_gossip import HeadWatch
from gd.node.services.ledger_wire import RAFT_PROTOCOL_ID, LedgerFetch, LedgerGossip, RaftFrame
from gd.node.store.ledger_store import Ledger
from gd.protocol.errors import RemoteProtocolError

# Inbound messages waiting for the loop; beyond this they are dropped (a flood from a
# member cannot grow our memory; Raft recovers from the loss).
INBOUND_QUEUE: Final = 16_384
# Learner slots (issue 11, item 6): a region's non-voting members. The mesh keeps at most
# 12 in-region peers (node/net/mesh.py), so 16 covers every honest member with room for
# churn; beyond it a new learner gets a slot only by evicting one idle for LEARNER_IDLE_S.
MAX_LEARNERS: Final = 16
# Learners gossip every GOSSIP_INTERVAL_S while connected; one silent this long is gone.
LEARNER_IDLE_S: Final = 600.0


class RaftInbound:
    """What peers send us on `/gd/raft`, queued for the loop; who is in the region."""

    def __init__(self, node: RaftNode, *, region: str, voters: frozenset[str],
                 ledger: Ledger, heads: HeadWatch, dropped: Counter,
                 wake: Callable[[], None], log: Any) -> None:
        self.node = node
        self.peer_id = node.id
        self.region = region
        self.voters = voters
        self.ledger = ledger
        self.heads = heads
        self.dropped = dropped
        self.wake = wake
        self.log = log
        self.queue: deque[RaftMessage | str] = deque()  # a str: a would-be learner
        self._learner_seen: dict[str, float] = {}  # learner -> last gossip (monotonic)
        self._started = time.monotonic()

    def member(self, rec: PeerRecord) -> bool:
        """Region membership for the ledger: node/net/membership.py decides."""
        return region_member(rec, self.region, self.voters)

    def targets(self, table: PeerTable) -> frozenset[str]:
        """Who hears from us: the members, the configured voters, and the connected
        peers of our region (a would-be learner must reach the leader)."""
        connected = {r.peer_id for r in table.connected() if r.region == self.region}
        return (self.node.conf.members | self.voters | connected) - {self.peer_id}

    # -- the loop's side -------------------------------------------------------------------

    def step_all(self) -> None:
        """Feed everything queued to the Raft node (the loop's task only)."""
        while self.queue:
            item = self.queue.popleft()
            if isinstance(item, str):
                self._add_learner(item)
                continue
            try:
                self.node.step(item)
            except RaftRemoteError as exc:
                self.dropped.labels(reason="invalid").inc()
                self.log.warning("raft.bad_message", peer=item.frm, error=str(exc)[:200])

    def _add_learner(self, peer: str) -> None:
        node = self.node
        if not node.is_leader or peer in node.conf.members:
            return
        change = ConfChange(ConfChangeOp.ADD_LEARNER, peer)
        if len(node.conf.learners) >= MAX_LEARNERS:
            idle = self._idle_learner(node.conf.learners)
            if idle is None:
                self.dropped.labels(reason="learners_full").inc()
                return  # every slot in use by a live learner: refused
            change = ConfChange(ConfChangeOp.REMOVE_NODE, idle)  # the peer asks again
        try:
            node.propose_conf_change(change)
        except RaftLocalError:
            return  # a change is pending; the peer's next gossip asks again
        self.log.info("raft.add_learner" if change.node_id == peer else "raft.evict_learner",
                      peer=change.node_id)

    def _idle_learner(self, learners: Iterable[str]) -> str | None:
        """The learner silent longest, if silent for LEARNER_IDLE_S (one we have not heard
        since we started counts from then)."""
        now = time.monotonic()
        seen = {p: self._learner_seen.get(p, self._started) for p in learners}
        oldest = min(seen, key=lambda p: (seen[p], p), default=None)
        if oldest is None or now - seen[oldest] < LEARNER_IDLE_S:
            return None
        return oldest

    # -- the streams' side -----------------------------------------------------------------

    async def serve(self, fs: FramedStream, rec: PeerRecord) -> None:
        """Inbound /gd/raft: Raft messages and gossip from a peer, or a fetch."""
        peer = rec.peer_id
        while True:
            msg = await fs.receive()  # StreamGone when the peer closes
            if isinstance(msg, RaftFrame):
                self._on_frame(peer, rec, msg.data)
            elif isinstance(msg, LedgerGossip):
                await self._on_gossip(peer, rec, msg)
            elif isinstance(msg, LedgerFetch):
                if msg.start < 0 or msg.stop < msg.start:
                    raise RemoteProtocolError("bad fetch range")
                if not self.member(rec):  # refused, and the guard scores the peer
                    self.dropped.labels(reason="not_member").inc()
                    raise RemoteProtocolError(f"ledger fetch from a non-member of {self.region}")
                chunk = await trio.to_thread.run_sync(ledger_chunk, self.ledger, msg.start,
                                                      msg.stop)
                await fs.send(chunk)
            else:
                raise RemoteProtocolError(f"unexpected {msg.TYPE} on {RAFT_PROTOCOL_ID}")

    def _on_frame(self, peer: str, rec: PeerRecord, data: bytes) -> None:
        try:
            msg = RaftMessage.decode(data)
        except RaftRemoteError as exc:
            raise RemoteProtocolError(f"bad raft message: {exc}") from None
        if msg.frm != peer:
            # The core trusts `frm` for vote counting: only the stream's authenticated
            # peer may speak for itself.
            raise RemoteProtocolError(f"raft message from {msg.frm} on {peer}'s stream")
        if msg.to != self.peer_id:
            raise RemoteProtocolError(f"raft message for {msg.to} sent to us")
        if not self.member(rec) or peer not in (self.node.conf.members | self.voters):
            self.dropped.labels(reason="not_member").inc()
            return
        if len(self.queue) >= INBOUND_QUEUE:
            self.dropped.labels(reason="inbound_full").inc()
            return
        self.queue.append(msg)
        self.wake()

    async def _on_gossip(self, peer: str, rec: PeerRecord, msg: LedgerGossip) -> None:
        node = self.node
        same_region = self.member(rec)
        if peer in node.conf.learners:
            self._learner_seen[peer] = time.monotonic()
        if same_region and frozenset(msg.voters) == self.voters and node.is_leader \
                and peer not in node.conf.members and peer not in self.voters:
            self.queue.append(peer)  # the loop proposes ADD_LEARNER
            self.wake()
        if msg.head and same_region:
            await self.heads.heard(msg.head, peer)


__all__ = ["INBOUND_QUEUE", "LEARNER_IDLE_S", "MAX_LEARNERS", "RaftInbound"]
