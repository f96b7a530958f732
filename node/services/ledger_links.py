"""The ledger's outbound wire: one long-lived `/gd/raft` stream per peer (the driver).

What goes on each stream and when (bounded queue, gossip timer, back-off) is the
sans-I/O `gd.ledger.link_core.OutboundLink`; this module gives each peer a writer task
that opens, writes and resets the stream with bounded waits. Raft tolerates loss, so a
full queue or a broken stream just drops messages (counted in `gd_raft_dropped`).
Inbound streams are `ledger_inbound.RaftInbound.serve`'s.

Each writer runs in its peer's lifetime (`Gate.spawn`, node/net/lifetimes.py): the gate
tells us of peers (`Gate.on_peer`), a target that comes up gets its writer at once (it
hears our gossip), and a peer that goes takes its writer, stream and queue with it. No
service nursery, no polling of who is connected; a message for a peer that is not
connected is dropped (`no_stream`), as Raft expects of a lossy network. A linked peer
that says nothing on its own stream to us for `link_core.SILENT_S` is handed to the
gate's liveness probe: py-libp2p can keep a connection that delivers nothing one way,
and only a dropped connection ends that (docs/ledger.md, the failover tail).

Errors keep h11's split: a write that fails because the peer vanished or stalled is
`StreamGone` / a timeout (dropped, reopened with back-off); a frame *we* built over the
limit is our `LocalProtocolError` and is dropped the same way, logged for us to fix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import trio
from libp2p.abc import IHost
from prometheus_client import Counter

from gd.crdt.clock import Clock
from gd.ledger.ledger_frames import LedgerGossip
from gd.ledger.link_core import (
    GOSSIP_INTERVAL_S,
    REOPEN_BACKOFF_MAX_S,
    REOPEN_BACKOFF_S,
    OutboundLink,
)
from gd.ledger.raft_messages import RaftMessage
from gd.node.net.gate import PeerChange, PeerListener
from gd.node.net.open_stream import open_framed_stream
from gd.node.net.peers import PeerTable
from gd.node.net.streams import FramedStream, StreamGone
from gd.node.services.ledger_wire import RAFT_PROTOCOL_ID
from gd.protocol.errors import LocalProtocolError

# Opening a stream is ~10 ms on loopback; writing one batch of frames is bounded so a
# frozen peer (py-libp2p never notices one) cannot hold a writer forever.
OPEN_TIMEOUT_S: Final = 5.0
WRITE_TIMEOUT_S: Final = 5.0


class LinkGate(Protocol):
    """What the links need of the gate (`gd.node.net.gate.Gate`)."""

    host: IHost
    table: PeerTable

    def spawn(self, peer_id: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool: ...

    def on_peer(self, listener: PeerListener) -> None: ...


@dataclass
class _Link:
    """Our outbound stream to one peer, what waits to go on it, and its wake-up."""

    core: OutboundLink = field(default_factory=OutboundLink)
    wake: trio.Event = field(default_factory=trio.Event)
    fs: FramedStream | None = None
    # The peer writes to us on a newer connection than `fs` uses: reopen `fs`.
    reopen: bool = False


class PeerLinks:
    """The writers to every peer the ledger talks to, and the streams it opens."""

    def __init__(self, gate: LinkGate, *, byte_counter: Counter, dropped: Counter,
                 gossip: Callable[[], LedgerGossip], clock: Clock, log: Any,
                 suspect: Callable[[str, str], bool],
                 newer_connection: Callable[[Any, Any], bool]) -> None:
        self.gate = gate
        # The gate's `Liveness.suspect`: probe a peer that has gone silent on us.
        self.suspect = suspect
        # The gate's `ConnectionOrder.newer`: did this stream come on a newer
        # connection than that one uses (ADR 0056)?
        self.newer_connection = newer_connection
        self.moved = 0  # streams reopened because the peer wrote on a newer connection
        self.host = gate.host
        self.clock = clock
        self.table = gate.table
        self.byte_counter = byte_counter
        self.dropped = dropped
        self.gossip = gossip
        self.log = log
        self._links: dict[str, _Link] = {}
        self._targets: Callable[[], Iterable[str]] | None = None
        gate.on_peer(self.peer_changed)

    @property
    def linked(self) -> frozenset[str]:
        """The peers that have a writer now (each connected, in its lifetime)."""
        return frozenset(self._links)

    def follow(self, targets: Callable[[], Iterable[str]]) -> None:
        """Start linking (the service is caught up): every connected target gets its
        writer now, and each target that comes up later gets one when it does, so it
        hears our gossip even while Raft has nothing to say to it."""
        self._targets = targets
        for peer in targets():
            self.link(peer)

    def peer_changed(self, change: PeerChange) -> None:
        """The gate's event: a target came (link it) or a peer went (its lifetime ended
        its writer; forget its queue, counting what it held as dropped)."""
        if change.up:
            if self._targets is not None and change.peer_id in set(self._targets()):
                self.link(change.peer_id)
            return
        link = self._links.pop(change.peer_id, None)
        if link is not None and link.core.queue:
            self.dropped.labels(reason="no_stream").inc(len(link.core.queue))

    def link(self, peer: str) -> _Link | None:
        """The peer's link, its writer started in the peer's lifetime; None when the
        peer is not connected (nothing is started for it)."""
        link = self._links.get(peer)
        if link is None:
            link = _Link()
            if not self.gate.spawn(peer, self._writer, peer, link):
                return None
            self._links[peer] = link
        return link

    def send(self, msg: RaftMessage) -> None:
        """Queue one Raft message for its addressee; dropped when the queue is full or
        the addressee is not connected."""
        link = self.link(msg.to)
        if link is None:
            self.dropped.labels(reason="no_stream").inc()
            return
        if not link.core.offer(msg):
            self.dropped.labels(reason="queue_full").inc()
            return
        link.wake.set()

    def heard(self, peer: str) -> None:
        """`peer` sent us a frame on its own stream (`RaftInbound.serve`'s callback)."""
        link = self._links.get(peer)
        if link is not None:
            link.core.heard(self.clock.monotonic())

    def arrived(self, peer: str, fs: FramedStream) -> None:
        """`peer` opened a stream to us (`RaftInbound.serve`'s callback). If it came on
        a newer connection than our stream to it uses, ours moves there: the peer may
        no longer read the old one (py-libp2p kept it listed on our side only; the
        failover tail, docs/ledger.md), and the swarm opens the new stream on the
        newest connection (`gd.node.net.conn_order`)."""
        link = self._links.get(peer)
        if link is not None and link.fs is not None and self.newer_connection(
                fs.stream, link.fs.stream):
            link.reopen = True
            link.wake.set()

    def _connected(self, peer: str) -> bool:
        rec = self.table.get(peer)
        return rec is not None and rec.connected

    async def open(self, peer: str) -> FramedStream:
        """A new `/gd/raft` stream to `peer`; StreamGone when it cannot be had in time."""
        metric = self.byte_counter

        def count(direction: str, n: int) -> None:
            metric.labels(protocol=RAFT_PROTOCOL_ID, direction=direction).inc(n)

        return await open_framed_stream(self.host, peer, RAFT_PROTOCOL_ID,
                                        timeout_s=OPEN_TIMEOUT_S, count_bytes=count)

    async def _writer(self, peer: str, link: _Link) -> None:
        """Carry our messages to `peer` on one long-lived stream; gossip when idle.
        Runs until the peer's lifetime ends; its stream goes with it."""
        try:
            await self._write_loop(peer, link)
        finally:
            if self._links.get(peer) is link:
                del self._links[peer]
            with trio.CancelScope(shield=True):
                await self._close(link)

    async def _write_loop(self, peer: str, link: _Link) -> None:
        core = link.core
        while True:
            with trio.move_on_after(GOSSIP_INTERVAL_S):
                await link.wake.wait()
            link.wake = trio.Event()
            now = self.clock.monotonic()
            if core.silent(now):  # it gossips every second: is its connection alive?
                self.suspect(peer, "silent on /gd/raft")
            dropped = core.blocked(now, self._connected(peer))
            if dropped is not None:
                if dropped:
                    self.dropped.labels(reason="no_stream").inc(dropped)
                await self._close(link)
                continue
            if link.reopen:
                link.reopen = False
                if link.fs is not None:
                    self.moved += 1
                    self.log.info("raft.link_moved", peer=peer,
                                  note="the peer writes on a newer connection")
                    await self._close(link)  # reopened at once, on the newest one
            if link.fs is None:
                try:
                    link.fs = await self.open(peer)
                except StreamGone as exc:
                    core.open_failed(self.clock.monotonic())
                    self.log.debug("raft.open_failed", peer=peer, error=str(exc)[:200])
                    continue
                core.opened()
            frames = core.take(now, self.gossip())
            if core.pending:
                link.wake.set()
            if not frames:
                continue
            try:
                with trio.fail_after(WRITE_TIMEOUT_S):
                    await link.fs.send(*frames)
            except (StreamGone, trio.TooSlowError, LocalProtocolError) as exc:
                self.log.debug("raft.write_failed", peer=peer, error=repr(exc)[:200])
                self.dropped.labels(reason="write_failed").inc(len(frames))
                await self._close(link)
                core.write_failed(self.clock.monotonic())

    @staticmethod
    async def _close(link: _Link) -> None:
        if link.fs is not None:
            fs, link.fs = link.fs, None
            with contextlib.suppress(Exception), trio.move_on_after(1.0):
                await fs.reset()


__all__ = ["GOSSIP_INTERVAL_S", "REOPEN_BACKOFF_MAX_S", "REOPEN_BACKOFF_S", "LinkGate",
           "PeerLinks"]
