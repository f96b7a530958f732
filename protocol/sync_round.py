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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from gd.protocol.errors import RemoteProtocolError
from gd.protocol.sync import BatchOutcome, SyncReceiver, SyncSender, Verdict
from gd.protocol.sync_frames import SyncBatch, SyncPull
from gd.protocol.sync_messages import MAX_BATCH_GENES, ChangeBatch, SyncProtocolError
from gd.protocol.wire import Message

# A pull asks for this many genes first and doubles per batch up to the configured cap:
# the first answer comes back quickly, so verifying it overlaps the sender's next read.
FIRST_BATCH_GENES: Final = 32
# A batch should cross the link in about this long: long enough that the per-batch
# costs (a round trip, a frame, one fsync'd transaction) are spread over many genes,
# well inside the stream's 10 s read timeout on a slow link, and short enough that a
# cut connection loses little (the batch in flight is asked for again on resume).
TARGET_BATCH_S: Final = 1.0
# ... and carry about this many payload bytes: a quarter of MAX_BATCH_BYTES (4 MiB), so
# a batch of large genes stays far from the frame limit whatever its gene count.
TARGET_BATCH_BYTES: Final = 1 << 20
# Never ask for fewer than this: below it the round trip dominates whatever the link.
MIN_BATCH_GENES: Final = 8


@dataclass
class BatchSizer:
    """How many genes the next pull asks for, adapted to the link (sans-I/O: the driver
    reports how long each batch took to arrive; nothing here reads a clock).

    Slow start: from `first` the size doubles per batch while batches arrive within
    `TARGET_BATCH_S`, up to `cap` and to `TARGET_BATCH_BYTES` at the genes' observed
    size. A batch that took longer shrinks the next one in proportion (a batch that
    took 4x the target asks for a quarter as many), never below `MIN_BATCH_GENES`, and
    growth resumes from there when the link recovers."""

    cap: int = MAX_BATCH_GENES
    size: int = FIRST_BATCH_GENES

    def __post_init__(self) -> None:
        if not 1 <= self.cap <= MAX_BATCH_GENES:
            raise ValueError(f"cap must be in 1..{MAX_BATCH_GENES}")
        self.size = max(1, min(self.size, self.cap))

    def observe(self, genes: int, payload: int, link_s: float | None) -> int:
        """Account for one batch (`genes` genes, `payload` bytes, `link_s` seconds on
        the link, None when unknown) and return the size of the next request."""
        if link_s is not None and link_s < 0:
            raise ValueError(f"link time must not be negative, got {link_s}")
        floor = min(MIN_BATCH_GENES, self.cap)
        if link_s is not None and link_s > TARGET_BATCH_S and genes:
            size = int(genes * TARGET_BATCH_S / link_s)
        else:
            size = self.size * 2
        if genes and payload:
            size = min(size, TARGET_BATCH_BYTES * genes // payload)
        self.size = max(floor, min(self.cap, size))
        return self.size


@dataclass(frozen=True, slots=True)
class OpenedBatch:
    """A decoded batch, and the request to send before applying it (if any)."""

    batch: ChangeBatch
    head: int  # the sender's feed head when it answered
    payload: int  # the genes' canonical bytes (before compression)
    since: int  # where the request it answers started (our checkpoint once the batches
    # opened before it are applied)
    ahead: SyncPull | None
    asked: int = MAX_BATCH_GENES  # the genes the request it answers allowed


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
        self.sizer = BatchSizer(cap, first_genes)
        receiver.max_genes = self.sizer.size
        self.asked = self.sizer.size  # the size of the request outstanding
        self.asked_since = receiver.checkpoint  # and where it starts
        self.done = False

    def _pull(self, since: int) -> SyncPull:
        self.asked, self.asked_since = self.sizer.size, since
        return SyncPull(since, self.asked, self.zstd)

    def start(self) -> SyncPull:
        """The first request: from the checkpoint we hold for this sender."""
        return self._pull(self.receiver.checkpoint)

    def open(self, msg: Message, link_s: float | None = None) -> OpenedBatch:
        """Check and decode the sender's reply; `link_s`: how long it took to arrive
        (the driver's measure, None when unknown), which sizes the next request
        (`BatchSizer`). When the batch is the one we asked for, has more behind it and
        the sender's head covers it, ask for the next one now (its `since` is the
        checkpoint this batch will leave; if applying fails, the conversation ends and
        that answer is never read)."""
        if self.done:
            raise ValueError("the round is over")
        if not isinstance(msg, SyncBatch):
            raise RemoteProtocolError(f"expected gd.sync.batch, got {msg.TYPE}")
        # The request this answers started at `asked_since`: our checkpoint, or where
        # the batch opened before it ends when the driver opens batches ahead of
        # applying them (it applies them in order; `apply` refuses one that does not
        # start at the checkpoint).
        since, asked = self.asked_since, self.asked
        batch, payload = msg.open()
        if len(batch.genes) > asked:
            raise SyncProtocolError(f"batch of {len(batch.genes)} genes, we asked for at "
                                    f"most {asked}")
        self.sizer.observe(len(batch.genes), payload, link_s)
        ahead = None
        if batch.more and batch.since == since and msg.head >= batch.upto:
            ahead = self._pull(batch.upto)
        return OpenedBatch(batch, msg.head, payload, since, ahead, asked)

    def apply(self, opened: OpenedBatch, checked: Sequence[Verdict] | None = None
              ) -> PullStep:
        """Verify and apply the batch through the receiver (its applier stores genes and
        checkpoint in one transaction). A batch that does not start at our checkpoint
        is the peer's fault here: we asked for exactly one position. `checked`: the
        genes' verdicts when the driver already checked them (`SyncReceiver.check`,
        run ahead while the previous group commits)."""
        # The receiver's own bound is the request this batch answers (the next one,
        # already sent, may ask for fewer).
        self.receiver.max_genes = opened.asked
        outcome = self.receiver.receive_batch(opened.batch, checked)
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
    The head is read after the batch, so an honest batch never ends beyond it. Genes go
    as the bytes we hold (`Gene.wire_bytes`: a stored gene's are the Cortex's record)."""
    upto, more, genes = sender.select(pull.request())
    frame, payload = SyncBatch.pack_wire(pull.since, upto, more,
                                         [g.wire_bytes for g in genes], feed_head(),
                                         zstd and pull.zstd)
    return frame, len(genes), payload
