"""The apply path's fast paths (issue 15, item 1): batch sizes that follow the link,
stored bytes sent verbatim, stored versions hashed without re-encoding, and the
link timer of the daemon's puller. Sans-I/O and deterministic: durations are given."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from gd_testkit import key_from_int, make_gene

from gd.crdt.clock import ManualClock
from gd.genome import canonical
from gd.genome.gene import Gene
from gd.node.services.sync_pull import LinkTimer
from gd.protocol.sync import SyncReceiver, SyncSender
from gd.protocol.sync_frames import SyncBatch, SyncPull
from gd.protocol.sync_messages import ChangeBatch, SyncProtocolError
from gd.protocol.sync_round import (
    MIN_BATCH_GENES,
    TARGET_BATCH_BYTES,
    TARGET_BATCH_S,
    BatchSizer,
    PullRound,
    answer_pull,
)
from gd.protocol.wire import decode_frame, encode_frame

SENDER = key_from_int(31)
RECEIVER = key_from_int(32)


def feed_of(n: int) -> list[Gene]:
    return [make_gene(SENDER, name=f"gene-{i:04d}") for i in range(n)]


# ---- BatchSizer ------------------------------------------------------------------------


def test_sizes_double_on_a_fast_link_up_to_the_cap():
    sizer = BatchSizer(cap=256, size=32)
    sizes = [sizer.observe(g, g * 1500, 0.01) for g in (32, 64, 128, 256, 256)]
    assert sizes == [64, 128, 256, 256, 256]


def test_a_slow_batch_shrinks_the_next_in_proportion_and_growth_resumes():
    sizer = BatchSizer(cap=256, size=256)
    # 256 genes took 4x the target: ask for a quarter as many.
    assert sizer.observe(256, 256 * 1500, 4 * TARGET_BATCH_S) == 64
    # Still slow at 64: 64 * 1 / 2.
    assert sizer.observe(64, 64 * 1500, 2 * TARGET_BATCH_S) == 32
    # The link recovered: slow start again from there.
    assert sizer.observe(32, 32 * 1500, TARGET_BATCH_S / 10) == 64


def test_a_very_slow_link_never_asks_for_fewer_than_the_floor():
    sizer = BatchSizer(cap=256, size=256)
    assert sizer.observe(256, 256 * 1500, 1000.0) == MIN_BATCH_GENES
    small = BatchSizer(cap=4, size=4)  # a cap below the floor wins
    assert small.observe(4, 4 * 1500, 1000.0) == 4


def test_large_genes_keep_a_batch_near_the_byte_target():
    sizer = BatchSizer(cap=256, size=128)
    gene_bytes = 16 * 1024  # 16 KiB genes: 64 of them make the 1 MiB target
    assert sizer.observe(128, 128 * gene_bytes, 0.01) == TARGET_BATCH_BYTES // gene_bytes


def test_unknown_link_time_is_slow_start_and_bad_values_are_refused():
    sizer = BatchSizer(cap=100, size=40)
    assert sizer.observe(40, 40 * 1500, None) == 80
    assert sizer.observe(0, 0, None) == 100  # an empty batch says nothing about sizes
    with pytest.raises(ValueError):
        sizer.observe(10, 100, -1.0)
    with pytest.raises(ValueError):
        BatchSizer(cap=0)


# ---- PullRound with the sizer ----------------------------------------------------------


class Store:
    def __init__(self) -> None:
        self.genes: dict[str, Gene] = {}
        self.batches: list[int] = []

    def apply(self, sender: str, genes: Sequence[Gene], upto: int) -> None:
        self.genes.update({g.id: g for g in genes})
        self.batches.append(len(genes))


def on_the_wire(msg):
    return decode_frame(encode_frame(msg))


def test_a_slow_link_shrinks_the_request_sent_ahead_without_refusing_the_batch_in_hand():
    feed = feed_of(200)

    def read_feed(since: int, limit: int) -> list[tuple[int, Gene]]:
        return [(i + 1, g) for i, g in enumerate(feed)][since:since + limit]

    sender = SyncSender(RECEIVER.peer_id, read_feed, lambda r, g: True)
    store = Store()
    round_ = PullRound(SyncReceiver(SENDER.peer_id, store.apply), cap=64, first_genes=64)
    pulls = [round_.start()]
    link_times = iter([0.01, 8 * TARGET_BATCH_S, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01])
    asked = []
    for _ in range(50):
        if round_.done:
            break
        pull = on_the_wire(pulls.pop(0))
        asked.append(pull.max_genes)
        frame, _, _ = answer_pull(sender, pull, lambda: len(feed), zstd=True)
        opened = round_.open(on_the_wire(frame), next(link_times))
        if opened.ahead is not None:
            pulls.append(opened.ahead)
        step = round_.apply(opened)  # 64 genes in hand although the next asks for 8
        if step.send is not None:
            pulls.append(step.send)
    assert round_.done and len(store.genes) == 200
    assert asked[:4] == [64, 64, 8, 16]
    assert store.batches[:3] == [64, 64, 8]


def test_a_batch_larger_than_its_request_is_the_peers_fault():
    feed = feed_of(40)
    round_ = PullRound(SyncReceiver(SENDER.peer_id, Store().apply), first_genes=8)
    pull = round_.start()
    assert pull.max_genes == 8
    wires = tuple(g.to_wire() for g in feed[:9])
    frame, _ = SyncBatch.pack(ChangeBatch(0, 9, True, wires), 40, zstd=False)
    with pytest.raises(SyncProtocolError, match="at most 8"):
        round_.open(on_the_wire(frame))


# ---- bytes we already hold ---------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 15, 16, 200])
@pytest.mark.parametrize("zstd", [False, True])
def test_stored_bytes_sent_verbatim_make_the_frame_a_re_encoding_makes(n, zstd):
    genes = feed_of(n)
    wires = tuple(g.to_wire() for g in genes)
    expected, payload = SyncBatch.pack(ChangeBatch(3, 3 + n, False, wires), 99, zstd)
    frame, verbatim_payload = SyncBatch.pack_wire(3, 3 + n, False,
                                                  [g.wire_bytes for g in genes], 99, zstd)
    assert frame == expected and verbatim_payload == payload
    batch, _ = frame.open()
    assert batch.genes == wires


def test_answer_pull_sends_what_the_store_holds_byte_for_byte():
    feed = feed_of(5)
    stored = [Gene.from_stored(canonical.decode(g.wire_bytes), raw=g.wire_bytes)
              for g in feed]
    sender = SyncSender(RECEIVER.peer_id, lambda since, limit: list(enumerate(stored, 1)),
                        lambda r, g: True)
    frame, n, _ = answer_pull(sender, SyncPull(0, 256), lambda: 5, zstd=False)
    assert n == 5
    assert frame.genes[1:] == b"".join(g.wire_bytes for g in feed)


def test_a_stored_version_is_hashed_from_its_record_without_re_encoding():
    gene = feed_of(1)[0]
    stored = Gene.from_stored(canonical.decode(gene.wire_bytes), raw=gene.wire_bytes)
    assert "signing_bytes" in stored.__dict__  # sliced from the record, not encoded
    assert stored.signing_bytes == gene.signing_bytes
    assert stored.version_hash == gene.version_hash
    stored.verify()
    # A record that is not a version's wire form (a head record with local state)
    # leaves the body to be encoded when asked, and still hashes the same.
    record = gene.encode()
    other = Gene.from_stored(canonical.decode(record), raw=record)
    assert "signing_bytes" not in other.__dict__
    assert other.version_hash == gene.version_hash


# ---- the daemon's link timer -------------------------------------------------------------


def test_link_time_leaves_out_the_apply_that_overlapped_the_wait():
    clock = ManualClock()
    link = LinkTimer(clock.monotonic)
    link.sent()                      # batch n+1 asked for ahead
    link.busy_from()
    clock.advance(3.0)               # applying batch n
    link.busy_until()
    clock.advance(0.5)               # then waiting for n+1
    assert link.arrived() == pytest.approx(0.5)
    link.sent()                      # a request after the apply: nothing overlaps
    clock.advance(2.0)
    assert link.arrived() == pytest.approx(2.0)
    link.sent()                      # asked ahead; the reply is in before we are done
    link.busy_from()
    clock.advance(1.0)
    link.busy_until()
    assert link.arrived() == 0.0     # it waited for us, not for the link
