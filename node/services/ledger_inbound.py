"""Inbound `/gd/raft` streams for a ledger member: the driver of `InboundCore`.

The checks live in the sans-I/O `gd.ledger.inbound_core` (whose frames are acceptable,
who is a member, which learners get a slot); this module reads the stream, asks
`node/net/membership.py` whether the sender is a region member, and carries out the
core's actions: counting drops, waking the loop, serving fetches from the ledger in a
worker thread, handing heads to `HeadWatch`, and raising the `RemoteProtocolError` of a
peer that broke the protocol (the gate closes the stream and scores the peer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
from prometheus_client import Counter

from gd.crdt.clock import Clock
from gd.ledger import inbound_core
from gd.ledger.inbound_core import (
    INBOUND_QUEUE,
    LEARNER_IDLE_S,
    Dropped,
    HeardHead,
    InboundAction,
    InboundCore,
    Misbehaved,
    Note,
    ServeFetch,
    Wake,
    link_targets,
)
from gd.ledger.raft import RaftNode
from gd.node.net.membership import region_member
from gd.node.net.peers import PeerRecord, PeerTable
from gd.node.net.streams import FramedStream
from gd.node.services.ledger_catchup import ledger_chunk
from gd.node.services.ledger_gossip import HeadWatch
from gd.node.store.ledger_store import Ledger

# Read at construction (tests lower it to keep a cluster small).
MAX_LEARNERS = inbound_core.MAX_LEARNERS


class RaftInbound:
    """What peers send us on `/gd/raft`, queued for the loop; who is in the region."""

    def __init__(self, node: RaftNode, *, region: str, voters: frozenset[str],
                 ledger: Ledger, heads: HeadWatch, dropped: Counter,
                 wake: Callable[[], None], heard: Callable[[str], None],
                 arrived: Callable[[str, FramedStream], None], clock: Clock,
                 log: Any) -> None:
        self.node = node
        self.region = region
        self.voters = voters
        self.ledger = ledger
        self.heads = heads
        self.dropped = dropped
        self.wake = wake
        self.heard = heard  # the links' silence watch: anything from `peer` counts
        self.arrived = arrived  # the links follow the peer to a newer connection
        self.clock = clock
        self.log = log
        self.core = InboundCore(node.id, region=region, voters=voters,
                                started=clock.monotonic(), max_learners=MAX_LEARNERS)

    def member(self, rec: PeerRecord) -> bool:
        """Region membership for the ledger: node/net/membership.py decides."""
        return region_member(rec, self.region, self.voters)

    def targets(self, table: PeerTable) -> frozenset[str]:
        """Who hears from us (`inbound_core.link_targets`)."""
        return link_targets(self.node.id, self.node.conf.members, self.voters,
                            (r.peer_id for r in table.connected() if r.region == self.region))

    def step_all(self) -> None:
        """Feed everything queued to the Raft node (the loop's task only)."""
        for action in self.core.step_all(self.node, self.clock.monotonic()):
            self._note(action)

    async def serve(self, fs: FramedStream, rec: PeerRecord) -> None:
        """Inbound /gd/raft: Raft messages and gossip from a peer, or a fetch."""
        peer = rec.peer_id
        self.arrived(peer, fs)
        while True:
            msg = await fs.receive()  # StreamGone when the peer closes
            self.heard(peer)
            actions = self.core.receive(self.node, peer, self.member(rec), msg,
                                        self.clock.monotonic())
            for action in actions:
                if isinstance(action, Misbehaved):
                    raise action.error
                if isinstance(action, ServeFetch):
                    chunk = await trio.to_thread.run_sync(ledger_chunk, self.ledger,
                                                          action.start, action.stop)
                    await fs.send(chunk)
                elif isinstance(action, HeardHead):
                    await self.heads.heard(action.raw, action.peer)
                else:
                    self._note(action)

    def _note(self, action: InboundAction) -> None:
        if isinstance(action, Dropped):
            self.dropped.labels(reason=action.reason).inc()
        elif isinstance(action, Wake):
            self.wake()
        elif isinstance(action, Note):
            (self.log.warning if action.warning else self.log.info)(action.event,
                                                                    **action.fields)


__all__ = ["INBOUND_QUEUE", "LEARNER_IDLE_S", "MAX_LEARNERS", "RaftInbound"]
