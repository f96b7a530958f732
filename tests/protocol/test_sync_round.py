"""The pull round and the sync frames, sans-I/O: a receiver and a sender exchange real
frames (encoded and decoded by the wire codec) in memory, no socket, no disk."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from gd_testkit import key_from_int, make_gene

from gd.genome.gene import Gene
from gd.protocol.errors import LocalProtocolError, RemoteProtocolError
from gd.protocol.sync import SyncReceiver, SyncSender, SyncUsageError, verify_wire
from gd.protocol.sync_frames import SyncBatch, SyncHint, SyncPull
from gd.protocol.sync_messages import MAX_SEQ, ChangeBatch, SyncProtocolError
from gd.protocol.sync_round import FIRST_BATCH_GENES, PullRound, answer_pull
from gd.protocol.wire import decode_frame, encode_frame

SENDER = key_from_int(1)
RECEIVER = key_from_int(2)


def feed_of(n: int) -> list[Gene]:
    return [make_gene(SENDER, name=f"gene-{i:04d}") for i in range(n)]


def on_the_wire(msg):
    """Every frame goes through the real codec, as over a stream."""
    return decode_frame(encode_frame(msg))


class Store:
    def __init__(self) -> None:
        self.genes: dict[str, Gene] = {}
        self.checkpoint = 0
        self.batches: list[int] = []

    def apply(self, sender: str, genes: Sequence[Gene], upto: int) -> None:
        self.genes.update({g.id: g for g in genes})
        self.checkpoint = upto
        self.batches.append(len(genes))


def run_round(feed: list[Gene], *, cap: int = 256, zstd: bool = True,
              head: int | None = None, checkpoint: int = 0) -> tuple[Store, PullRound, list]:
    """Drive one round to its end; returns the store, the round and the frames sent."""
    store = Store()
    store.checkpoint = checkpoint

    def read_feed(since: int, limit: int) -> list[tuple[int, Gene]]:
        return [(i + 1, g) for i, g in enumerate(feed)][since:since + limit]

    sender = SyncSender(RECEIVER.peer_id, read_feed, lambda r, g: True)
    receiver = SyncReceiver(SENDER.peer_id, store.apply, checkpoint=checkpoint)
    round_ = PullRound(receiver, cap=cap, zstd=zstd)
    sent: list[SyncPull] = []
    queue = [round_.start()]
    for _ in range(100):  # bounded: a round of n genes takes about n / cap steps
        if round_.done:
            break
        pull = on_the_wire(queue.pop(0))
        sent.append(pull)
        frame, _, _ = answer_pull(sender, pull, lambda: len(feed) if head is None else head,
                                  zstd=True)
        opened = round_.open(on_the_wire(frame))
        if opened.ahead is not None:
            queue.append(opened.ahead)
        step = round_.apply(opened)
        if step.send is not None:
            queue.append(step.send)
    assert round_.done
    return store, round_, sent


def test_a_round_pulls_the_whole_feed_with_slow_start_and_pipelining():
    feed = feed_of(300)
    store, _, sent = run_round(feed, cap=128)
    assert set(store.genes) == {g.id for g in feed}
    assert store.checkpoint == 300
    # Slow start: 32, then doubling up to the cap; each request asks from where the
    # previous batch will leave the checkpoint (sent before that batch was applied).
    assert [p.max_genes for p in sent] == [FIRST_BATCH_GENES, 64, 128, 128]
    assert [p.since for p in sent] == [0, 32, 96, 224]
    assert store.batches == [32, 64, 128, 76]


def test_a_round_from_a_checkpoint_asks_only_for_what_follows():
    feed = feed_of(40)
    store, _, sent = run_round(feed, checkpoint=35)
    assert sent[0].since == 35
    assert len(store.genes) == 5


def test_a_sender_whose_head_went_back_ends_the_round_rewound():
    feed = feed_of(10)
    receiver = SyncReceiver(SENDER.peer_id, Store().apply, checkpoint=0)
    round_ = PullRound(receiver)
    batch = ChangeBatch(0, 10, False, tuple(g.to_wire() for g in feed))
    frame, _ = SyncBatch.pack(batch, head=4, zstd=False)
    step = round_.apply(round_.open(frame))
    assert step.rewound and step.done and step.send is None


def test_a_batch_that_does_not_start_at_our_checkpoint_is_the_peers_fault():
    receiver = SyncReceiver(SENDER.peer_id, Store().apply, checkpoint=5)
    round_ = PullRound(receiver)
    frame, _ = SyncBatch.pack(ChangeBatch(2, 6, False), head=6, zstd=False)
    with pytest.raises(RemoteProtocolError, match="checkpoint"):
        round_.apply(round_.open(frame))


def _two_replies(feed: list[Gene]) -> tuple[Store, PullRound, SyncSender, object, object]:
    """A round whose first reply was opened and its ahead request answered too."""
    store = Store()

    def read_feed(since: int, limit: int) -> list[tuple[int, Gene]]:
        return [(i + 1, g) for i, g in enumerate(feed)][since:since + limit]

    sender = SyncSender(RECEIVER.peer_id, read_feed, lambda r, g: True)
    round_ = PullRound(SyncReceiver(SENDER.peer_id, store.apply), cap=32)
    first_frame, _, _ = answer_pull(sender, on_the_wire(round_.start()), lambda: len(feed),
                                    zstd=False)
    first = round_.open(on_the_wire(first_frame))
    assert first.ahead is not None
    second_frame, _, _ = answer_pull(sender, on_the_wire(first.ahead), lambda: len(feed),
                                     zstd=False)
    return store, round_, sender, first, second_frame


def test_a_driver_may_open_the_next_batches_before_applying_one():
    """While a group commits the driver opens the replies after it (ADR 0058): each asks
    for the next one from where the batch before it ends, and they apply in order."""
    feed = feed_of(96)
    store, round_, sender, first, second_frame = _two_replies(feed)
    second = round_.open(on_the_wire(second_frame))
    assert second.since == 32 and second.ahead is not None and second.ahead.since == 64
    third_frame, _, _ = answer_pull(sender, on_the_wire(second.ahead), lambda: len(feed),
                                    zstd=False)
    third = round_.open(on_the_wire(third_frame))
    assert third.since == 64 and third.ahead is None  # the last: nothing more behind it
    for opened in (first, second, third):
        step = round_.apply(opened)
    assert step.done and store.checkpoint == 96 and len(store.genes) == 96


def test_batches_opened_ahead_still_apply_only_in_order():
    store, round_, _, first, second_frame = _two_replies(feed_of(100))
    second = round_.open(on_the_wire(second_frame))
    with pytest.raises(RemoteProtocolError, match="checkpoint"):
        round_.apply(second)  # before the batch it follows
    assert store.checkpoint == 0 and not store.genes
    round_.apply(first)
    round_.apply(second)  # in order, both apply
    assert store.checkpoint == 64 and len(store.genes) == 64


def test_a_reply_that_does_not_start_where_we_asked_gets_no_request_ahead():
    feed = feed_of(100)
    _, round_, sender, _, _ = _two_replies(feed)
    # An answer to a request we never made (it starts where the first batch started).
    replayed, _, _ = answer_pull(sender, SyncPull(0, 32, False), lambda: len(feed), zstd=False)
    opened = round_.open(on_the_wire(replayed))
    assert opened.ahead is None


def test_verdicts_checked_ahead_are_used_instead_of_checking_again():
    feed = feed_of(30)
    store = Store()
    calls = []

    def check(wires):
        calls.append(len(wires))
        return [verify_wire(w) for w in wires]

    receiver = SyncReceiver(SENDER.peer_id, store.apply, check=check)
    round_ = PullRound(receiver)
    batch = ChangeBatch(0, 30, False, tuple(g.to_wire() for g in feed))
    frame, _ = SyncBatch.pack(batch, head=30, zstd=False)
    opened = round_.open(frame)
    verdicts = [verify_wire(w) for w in opened.batch.genes]
    verdicts[3] = (None, "refused by the test")
    step = round_.apply(opened, verdicts)
    assert calls == []  # the checker was not asked again
    assert [r.reason for r in step.outcome.rejected] == ["refused by the test"]
    assert len(store.genes) == 29


def test_too_few_verdicts_checked_ahead_are_a_usage_error():
    feed = feed_of(4)
    round_ = PullRound(SyncReceiver(SENDER.peer_id, Store().apply))
    frame, _ = SyncBatch.pack(ChangeBatch(0, 4, False, tuple(g.to_wire() for g in feed)),
                              head=4, zstd=False)
    with pytest.raises(SyncUsageError, match="3 results for 4"):
        round_.apply(round_.open(frame), [verify_wire(w) for w in feed[:3]])


def test_a_reply_that_is_not_a_batch_is_the_peers_fault():
    round_ = PullRound(SyncReceiver(SENDER.peer_id, Store().apply))
    with pytest.raises(RemoteProtocolError, match=r"expected gd\.sync\.batch"):
        round_.open(SyncHint(head=3))


@pytest.mark.parametrize("fields, reason", [
    ({"since": 0, "upto": 1, "more": False, "head": 1, "genes": b"\xc1", "zstd": False},
     "bad gene list"),
    ({"since": 0, "upto": 1, "more": False, "head": 1, "genes": b"junk", "zstd": True},
     "zstd"),
    ({"since": 0, "upto": 1, "more": False, "head": 1, "genes": b"\x91\x01",
      "zstd": False}, "maps"),
    ({"since": 0, "upto": 0, "more": False, "head": 1, "genes": b"\x91\x80",
      "zstd": False}, "advance"),
    ({"since": 0, "upto": 0, "more": False, "head": 0, "genes": b"", "zstd": True},
     "without data"),
])
def test_malformed_batches_are_remote_errors(fields, reason):
    with pytest.raises(RemoteProtocolError, match=reason):
        SyncBatch(**fields).open()


def test_frames_carry_their_fields_once_and_bad_fields_are_remote_errors():
    # Version 2: the request is the frame's own fields, no bytes inside.
    pull = on_the_wire(SyncPull(since=7, max_genes=5, zstd=True))
    assert (pull.since, pull.max_genes, pull.zstd, pull.VERSION) == (7, 5, True, 2)
    body = encode_frame(SyncPull(since=7))
    assert b"changes?" not in body  # no nested ChangesRequest
    with pytest.raises(RemoteProtocolError):
        decode_frame(encode_frame(SyncPull(since=7))[:-1] + b"\x00")
    with pytest.raises(SyncProtocolError):
        SyncPull(since=-1)
    with pytest.raises(SyncProtocolError, match="u64"):
        SyncBatch(0, 0, False, head=MAX_SEQ + 1)
    # A SyncProtocolError is the peer's fault by class, not by re-wrapping.
    assert issubclass(SyncProtocolError, RemoteProtocolError)
    assert issubclass(SyncUsageError, LocalProtocolError)


def test_compression_is_used_only_when_asked_and_worth_it():
    feed = feed_of(20)
    batch = ChangeBatch(0, 20, False, tuple(g.to_wire() for g in feed))
    packed, payload = SyncBatch.pack(batch, 20, zstd=True)
    plain, payload2 = SyncBatch.pack(batch, 20, zstd=False)
    assert packed.zstd and not plain.zstd and len(packed.genes) < len(plain.genes)
    assert payload == payload2 == len(plain.genes) - 3  # the array header of 20 items
    assert packed.open() == plain.open() == (batch, payload)
