"""One outbound `/gd/raft` link to a peer, sans-I/O (issue 12, item 4).

What goes on a ledger member's long-lived stream to one peer, and when: Raft messages
queued in a bounded queue, our signed tree head as gossip every GOSSIP_INTERVAL_S (it
doubles as the keepalive for the peer's reader), the back-off after a stream could not
be opened or written, and whether the peer has gone silent on us. The core takes time
as a value; the driver (`gd.node.services.ledger_links`) opens, writes and resets the
streams, and has the gate probe a silent peer. Raft tolerates loss, so a full queue, a
missing stream or a failed write just drops messages (each call says how many, for
`gd_raft_dropped`).
"""

from __future__ import annotations

from collections import deque
from typing import Final

from gd.ledger.ledger_frames import LedgerGossip, RaftFrame
from gd.ledger.raft_messages import RaftMessage
from gd.protocol.wire import Message

# Gossip of our latest signed head on every stream. It doubles as the keepalive: the
# peer's reader gives up after READ_TIMEOUT_S (10 s) of silence, and streams between two
# followers carry no Raft traffic at all.
GOSSIP_INTERVAL_S: Final = 1.0
# After a failed open, wait this long (doubling up to the max) before trying again.
REOPEN_BACKOFF_S: Final = 0.2
REOPEN_BACKOFF_MAX_S: Final = 5.0
# A peer that should be talking to us (its own link gossips every GOSSIP_INTERVAL_S) and
# has said nothing for this long is suspected: the driver has the gate ping it, and a
# connection that delivers nothing is dropped and dialled again (docs/ledger.md, the
# failover tail). Each suspicion that changes nothing doubles the wait, up to the max: a
# region peer that runs no ledger is pinged rarely, not every few seconds.
SILENT_S: Final = 2.5 * GOSSIP_INTERVAL_S
SILENT_MAX_S: Final = 60.0
# Messages queued per peer before we drop (Raft re-sends what matters). 4096 appends
# of 1 MiB would be 4 GiB: the byte bound below is what really limits memory.
PEER_QUEUE_MESSAGES: Final = 4096
PEER_QUEUE_BYTES: Final = 64 * 1024 * 1024
# Frames written in one `send`: large writes are what makes yamux fast, 4 MiB (one
# frame's limit) keeps one write's memory bounded.
WRITE_BATCH_BYTES: Final = 4 * 1024 * 1024


class OutboundLink:
    """The queue, gossip timer and back-off of our stream to one peer."""

    def __init__(self, *, max_messages: int = PEER_QUEUE_MESSAGES,
                 max_bytes: int = PEER_QUEUE_BYTES,
                 batch_bytes: int = WRITE_BATCH_BYTES) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.batch_bytes = batch_bytes
        self.queue: deque[RaftMessage] = deque()
        self.queued_bytes = 0
        self.retry_at = 0.0
        self.backoff = REOPEN_BACKOFF_S
        self._last_gossip: float | None = None
        self._last_heard: float | None = None
        self._silent_limit = SILENT_S

    def offer(self, msg: RaftMessage) -> bool:
        """Queue one Raft message (counted at its `size`); False (dropped) when the
        queue is full."""
        size = msg.size
        if len(self.queue) >= self.max_messages \
                or self.queued_bytes + size > self.max_bytes:
            return False
        self.queue.append(msg)
        self.queued_bytes += size
        return True

    def blocked(self, now: float, connected: bool) -> int | None:
        """None: go ahead (open if needed, then write). Otherwise the stream must be
        closed and this many queued messages were dropped: the peer is not connected or
        we wait out a back-off. A peer that is not connected is tried at once when it
        reconnects."""
        if connected and now >= self.retry_at:
            return None
        dropped = len(self.queue)
        self.queue.clear()
        self.queued_bytes = 0
        if not connected:
            self.retry_at, self.backoff = 0.0, REOPEN_BACKOFF_S
        return dropped

    def opened(self) -> None:
        """A new stream: the back-off starts over and it carries our gossip at once."""
        self.backoff = REOPEN_BACKOFF_S
        self._last_gossip = None

    def open_failed(self, now: float) -> None:
        """No stream could be had: wait, doubling the wait each time up to the max."""
        self.retry_at = now + self.backoff
        self.backoff = min(self.backoff * 2, REOPEN_BACKOFF_MAX_S)

    def take(self, now: float, gossip: LedgerGossip) -> list[Message]:
        """The next write: queued messages up to WRITE_BATCH_BYTES, and `gossip` when
        GOSSIP_INTERVAL_S passed since the last one on this stream."""
        frames: list[Message] = []
        nbytes = 0
        while self.queue and nbytes < self.batch_bytes:
            msg = self.queue.popleft()
            size = msg.size
            self.queued_bytes -= size
            nbytes += size
            frames.append(RaftFrame(msg))
        if self._last_gossip is None or now - self._last_gossip >= GOSSIP_INTERVAL_S:
            frames.append(gossip)
            self._last_gossip = now
        return frames

    @property
    def pending(self) -> bool:
        """Messages wait beyond the last batch: write again without waiting."""
        return bool(self.queue)

    def heard(self, now: float) -> None:
        """The peer sent us something (any frame, on its own stream to us)."""
        self._last_heard = now
        self._silent_limit = SILENT_S

    def silent(self, now: float) -> bool:
        """True once per silent spell: nothing heard from the peer for the limit (the
        first call starts the count). The next spell waits twice as long, until the
        peer is heard again."""
        if self._last_heard is None:
            self._last_heard = now
            return False
        if now - self._last_heard < self._silent_limit:
            return False
        self._last_heard = now
        self._silent_limit = min(self._silent_limit * 2, SILENT_MAX_S)
        return True

    def write_failed(self, now: float) -> None:
        """The write failed (the stream is reset): wait out the back-off before reopening."""
        self.retry_at = now + self.backoff


__all__ = ["GOSSIP_INTERVAL_S", "PEER_QUEUE_BYTES", "PEER_QUEUE_MESSAGES",
           "REOPEN_BACKOFF_MAX_S", "REOPEN_BACKOFF_S", "SILENT_MAX_S", "SILENT_S",
           "WRITE_BATCH_BYTES", "OutboundLink"]
