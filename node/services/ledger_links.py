"""The ledger's outbound wire: one long-lived `/gd/raft` stream per peer (the driver).

What goes on each stream and when (bounded queue, gossip timer, back-off) is the
sans-I/O `gd.ledger.link_core.OutboundLink`; this module gives each peer a writer task
that opens, writes and resets the stream with bounded waits. Raft tolerates loss, so a
full queue or a broken stream just drops messages (counted in `gd_raft_dropped`).
Inbound streams are `ledger_inbound.RaftInbound.serve`'s.

Errors keep h11's split: a write that fails because the peer vanished or stalled is
`StreamGone` / a timeout (dropped, reopened with back-off); a frame *we* built over the
limit is our `LocalProtocolError` and is dropped the same way, logged for us to fix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

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
from gd.node.net.host import to_id
from gd.node.net.peers import PeerTable
from gd.node.net.streams import FramedStream, StreamGone
from gd.node.services.ledger_wire import RAFT_PROTOCOL_ID
from gd.protocol.errors import LocalProtocolError

# Opening a stream is ~10 ms on loopback; writing one batch of frames is bounded so a
# frozen peer (py-libp2p never notices one) cannot hold a writer forever.
OPEN_TIMEOUT_S: Final = 5.0
WRITE_TIMEOUT_S: Final = 5.0


@dataclass
class _Link:
    """Our outbound stream to one peer, what waits to go on it, and its wake-up."""

    core: OutboundLink = field(default_factory=OutboundLink)
    wake: trio.Event = field(default_factory=trio.Event)
    fs: FramedStream | None = None


class PeerLinks:
    """The writers to every peer the ledger talks to, and the streams it opens."""

    def __init__(self, host: IHost, table: PeerTable, *, byte_counter: Counter,
                 dropped: Counter, gossip: Callable[[], LedgerGossip], clock: Clock,
                 log: Any) -> None:
        self.host = host
        self.clock = clock
        self.table = table
        self.byte_counter = byte_counter
        self.dropped = dropped
        self.gossip = gossip
        self.log = log
        self._links: dict[str, _Link] = {}
        self._nursery: trio.Nursery | None = None

    def start(self, nursery: trio.Nursery) -> None:
        """Writers run in `nursery` (the service's): they end with it."""
        self._nursery = nursery

    async def keep_linked(self, targets: Callable[[], Iterable[str]]) -> None:
        """Every GOSSIP_INTERVAL_S, make sure each target has a writer (so it hears our
        gossip even while Raft has nothing to say to it)."""
        while True:
            for peer in targets():
                self.link(peer)
            await trio.sleep(GOSSIP_INTERVAL_S)

    def link(self, peer: str) -> _Link:
        link = self._links.get(peer)
        if link is None:
            link = self._links[peer] = _Link()
            if self._nursery is None:
                raise LocalProtocolError("ledger links used before start()")
            self._nursery.start_soon(self._writer, peer, link)
        return link

    def send(self, msg: RaftMessage) -> None:
        """Queue one Raft message for its addressee; dropped when the queue is full."""
        link = self.link(msg.to)
        if not link.core.offer(msg):
            self.dropped.labels(reason="queue_full").inc()
            return
        link.wake.set()

    def _connected(self, peer: str) -> bool:
        rec = self.table.get(peer)
        return rec is not None and rec.connected

    async def open(self, peer: str) -> FramedStream:
        """A new `/gd/raft` stream to `peer`; StreamGone when it cannot be had in time."""
        try:
            with trio.fail_after(OPEN_TIMEOUT_S):
                stream = await self.host.new_stream(to_id(peer), [RAFT_PROTOCOL_ID])
        except trio.TooSlowError:
            raise StreamGone(f"could not open {RAFT_PROTOCOL_ID} to {peer} in time") from None
        except Exception as exc:  # libp2p raises many kinds for "no connection"
            raise StreamGone(f"could not open {RAFT_PROTOCOL_ID} to {peer}: {exc!r}") \
                from None
        metric = self.byte_counter

        def count(direction: str, n: int) -> None:
            metric.labels(protocol=RAFT_PROTOCOL_ID, direction=direction).inc(n)

        return FramedStream(stream, count_bytes=count)

    async def _writer(self, peer: str, link: _Link) -> None:
        """Carry our messages to `peer` on one long-lived stream; gossip when idle."""
        core = link.core
        while True:
            with trio.move_on_after(GOSSIP_INTERVAL_S):
                await link.wake.wait()
            link.wake = trio.Event()
            now = self.clock.monotonic()
            dropped = core.blocked(now, self._connected(peer))
            if dropped is not None:
                if dropped:
                    self.dropped.labels(reason="no_stream").inc(dropped)
                await self._close(link)
                continue
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


__all__ = ["GOSSIP_INTERVAL_S", "REOPEN_BACKOFF_MAX_S", "REOPEN_BACKOFF_S", "PeerLinks"]
