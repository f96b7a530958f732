"""The ledger's outbound wire: one long-lived `/gd/raft` stream per peer.

Each peer gets its own writer task, a bounded queue and bounded writes; the writer also
sends our signed tree head as gossip every `GOSSIP_INTERVAL_S`, which doubles as the
keepalive for the peer's reader. Raft tolerates loss, so a full queue or a broken stream
just drops messages (counted in `gd_raft_dropped`). Inbound streams are the service's
(`LedgerService.serve`).

Errors keep h11's split: a write that fails because the peer vanished or stalled is
`StreamGone` / a timeout (dropped, reopened with back-off); a frame *we* built over the
limit is our `LocalProtocolError` and is dropped the same way, logged for us to fix.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import trio
from libp2p.abc import IHost
from prometheus_client import Counter

from gd.ledger.raft_messages import RaftMessage
from gd.node.net.host import to_id
from gd.node.net.peers import PeerTable
from gd.node.net.streams import FramedStream, StreamGone
from gd.node.services.ledger_wire import RAFT_PROTOCOL_ID, LedgerGossip, RaftFrame
from gd.protocol.errors import LocalProtocolError
from gd.protocol.wire import Message

# Gossip of our latest signed head on every stream. It doubles as the keepalive: the
# peer's reader gives up after READ_TIMEOUT_S (10 s) of silence, and streams between two
# followers carry no Raft traffic at all.
GOSSIP_INTERVAL_S: Final = 1.0
# Opening a stream is ~10 ms on loopback; writing one batch of frames is bounded so a
# frozen peer (py-libp2p never notices one) cannot hold a writer forever.
OPEN_TIMEOUT_S: Final = 5.0
WRITE_TIMEOUT_S: Final = 5.0
# After a failed open, wait this long (doubling up to the max) before trying again.
REOPEN_BACKOFF_S: Final = 0.2
REOPEN_BACKOFF_MAX_S: Final = 5.0
# Messages queued per peer before we drop (Raft re-sends what matters). 4096 appends
# of 1 MiB would be 4 GiB: the byte bound below is what really limits memory.
PEER_QUEUE_MESSAGES: Final = 4096
PEER_QUEUE_BYTES: Final = 64 * 1024 * 1024
# Frames written in one `send`: large writes are what makes yamux fast, 4 MiB (one
# frame's limit) keeps one write's memory bounded.
WRITE_BATCH_BYTES: Final = 4 * 1024 * 1024


@dataclass
class _Link:
    """Our outbound stream to one peer and what waits to go on it."""

    queue: deque[bytes] = field(default_factory=deque)
    queued_bytes: int = 0
    wake: trio.Event = field(default_factory=trio.Event)
    fs: FramedStream | None = None
    retry_at: float = 0.0
    backoff: float = REOPEN_BACKOFF_S


class PeerLinks:
    """The writers to every peer the ledger talks to, and the streams it opens."""

    def __init__(self, host: IHost, table: PeerTable, *, byte_counter: Counter,
                 dropped: Counter, gossip: Callable[[], LedgerGossip], log: Any) -> None:
        self.host = host
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
        data = msg.encode()
        if len(link.queue) >= PEER_QUEUE_MESSAGES \
                or link.queued_bytes + len(data) > PEER_QUEUE_BYTES:
            self.dropped.labels(reason="queue_full").inc()
            return
        link.queue.append(data)
        link.queued_bytes += len(data)
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
        last_gossip = -GOSSIP_INTERVAL_S
        while True:
            with trio.move_on_after(GOSSIP_INTERVAL_S):
                await link.wake.wait()
            link.wake = trio.Event()
            now = trio.current_time()
            connected = self._connected(peer)
            if not connected or now < link.retry_at:
                if link.queue:
                    self.dropped.labels(reason="no_stream").inc(len(link.queue))
                link.queue.clear()
                link.queued_bytes = 0
                await self._close(link)
                if not connected:  # when it reconnects, open at once
                    link.retry_at, link.backoff = 0.0, REOPEN_BACKOFF_S
                continue
            if link.fs is None:
                try:
                    link.fs = await self.open(peer)
                except StreamGone as exc:
                    link.retry_at = trio.current_time() + link.backoff
                    link.backoff = min(link.backoff * 2, REOPEN_BACKOFF_MAX_S)
                    self.log.debug("raft.open_failed", peer=peer, error=str(exc)[:200])
                    continue
                link.backoff = REOPEN_BACKOFF_S
                last_gossip = -GOSSIP_INTERVAL_S
            frames: list[Message] = []
            nbytes = 0
            while link.queue and nbytes < WRITE_BATCH_BYTES:
                data = link.queue.popleft()
                link.queued_bytes -= len(data)
                nbytes += len(data)
                frames.append(RaftFrame(data))
            if now - last_gossip >= GOSSIP_INTERVAL_S:
                frames.append(self.gossip())
                last_gossip = now
            if link.queue:
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
                link.retry_at = trio.current_time() + link.backoff

    @staticmethod
    async def _close(link: _Link) -> None:
        if link.fs is not None:
            fs, link.fs = link.fs, None
            with contextlib.suppress(Exception), trio.move_on_after(1.0):
                await fs.reset()


__all__ = ["GOSSIP_INTERVAL_S", "REOPEN_BACKOFF_MAX_S", "REOPEN_BACKOFF_S", "PeerLinks"]
