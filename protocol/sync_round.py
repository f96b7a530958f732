"""One pull conversation over `/gd/sync`, both sides, sans-I/O (issue 12, item 4).

`PullRound` is the receiver's side: it says which `SyncPull` to send, opens each
`SyncBatch` that comes back, decides when to ask for the next batch *before* applying
this one (pipelining: the sender reads and encodes the next batch meanwhile), grows the
batch size (slow start), applies through the `SyncReceiver` it was given, and says when
the round is over. `answer_pull` is the sender's side: one request in, one frame out.

Nothing here reads a socket or the disk; the daemon's driver
(`gd.node.services.sync_pull`) carries the frames, runs `open` and `apply` in a worker
thread (decompression, signature checks and the LMDB commit are CPU and disk work), and
keeps the counters. A peer's bad frame is `RemoteProtocolError`, raised here once, and
the driver's one guard scores it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gd.protocol.errors import RemoteProtocolError
from gd.protocol.sync import BatchOutcome, SyncReceiver, SyncSender
from gd.protocol.sync_frames import SyncBatch, SyncPull
from gd.protocol.sync_messages import MAX_BATCH_GENES, ChangeBatch
from gd.protocol.wire import Message

# A pull asks for this many genes first and doubles per batch up to the configured cap:
# the first answer comes back quickly, so verifying it overlaps the sender's next read.
FIRST_BATCH_GENES: Final = 32


@dataclass(frozen=True, slots=True)
class OpenedBatch:
    """A decoded batch, and the request to send before applying it (if any)."""

    batch: ChangeBatch
    head: int  # the sender's feed head when it answered
    payload: int  # the genes' canonical bytes (before compression)
    since: int  # our checkpoint when the batch arrived
    ahead: SyncPull | None


@dataclass(frozen=True, slots=True)
class PullStep:
    """What applying one batch did, and what the driver does next."""

    outcome: BatchOutcome
    opened: OpenedBatch
    send: SyncPull | None  # the next request (None: already sent ahead, or done)
    done: bool
    # The sender's head is below our checkpoint: its feed went back (a restore). The
    # driver follows its head and schedules a repair; the round ends.
    rewound: bool = False


class PullRound:
    """The receiver's side of one pull round from one sender."""

    def __init__(self, receiver: SyncReceiver, *, cap: int = MAX_BATCH_GENES,
                 zstd: bool = False, first_genes: int = FIRST_BATCH_GENES) -> None:
        if not 1 <= cap <= MAX_BATCH_GENES:
            raise ValueError(f"cap must be in 1..{MAX_BATCH_GENES}")
        self.receiver = receiver
        self.cap = cap
        self.zstd = zstd
        receiver.max_genes = min(first_genes, cap)
        self.done = False

    def _pull(self, since: int) -> SyncPull:
        return SyncPull(since, self.receiver.max_genes, self.zstd)

    def start(self) -> SyncPull:
        """The first request: from the checkpoint we hold for this sender."""
        return self._pull(self.receiver.checkpoint)

    def open(self, msg: Message) -> OpenedBatch:
        """Check and decode the sender's reply. When the batch is the one we asked for,
        has more behind it and the sender's head covers it, ask for the next one now
        (its `since` is the checkpoint this batch will leave; if applying fails, the
        conversation ends and that answer is never read)."""
        if self.done:
            raise ValueError("the round is over")
        if not isinstance(msg, SyncBatch):
            raise RemoteProtocolError(f"expected gd.sync.batch, got {msg.TYPE}")
        since = self.receiver.checkpoint
        batch, payload = msg.open()
        ahead = None
        if batch.more and batch.since == since and msg.head >= batch.upto:
            self.receiver.max_genes = min(self.cap, self.receiver.max_genes * 2)
            ahead = self._pull(batch.upto)
        return OpenedBatch(batch, msg.head, payload, since, ahead)

    def apply(self, opened: OpenedBatch) -> PullStep:
        """Verify and apply the batch through the receiver (its applier stores genes and
        checkpoint in one transaction). A batch that does not start at our checkpoint
        is the peer's fault here: we asked for exactly one position."""
        outcome = self.receiver.receive_batch(opened.batch)
        if outcome.stale:
            raise RemoteProtocolError("sync batch does not start at our checkpoint")
        rewound = opened.head < self.receiver.checkpoint
        self.done = rewound or not outcome.more
        send = None
        if not self.done and opened.ahead is None:
            send = self._pull(self.receiver.checkpoint)
        return PullStep(outcome, opened, send, self.done, rewound)


def answer_pull(sender: SyncSender, pull: SyncPull, feed_head: Callable[[], int],
                zstd: bool) -> tuple[SyncBatch, int, int]:
    """The sender's side: the batch frame answering `pull`, its gene count and payload.
    The head is read after the batch, so an honest batch never ends beyond it."""
    batch = sender.batch(pull.request())
    frame, payload = SyncBatch.pack(batch, feed_head(), zstd and pull.zstd)
    return frame, len(batch.genes), payload
