"""The ledger proposer core (gd.ledger.proposer): batching, back-pressure, retries and
waiting tickets, driven by hand with explicit times — no daemon, no clock, no disk."""

from __future__ import annotations

import random

import pytest
from gd_testkit import key_from_int

from gd.genome import canonical
from gd.ledger.chain import AppendReceipt, AppendStatus
from gd.ledger.entry import MAX_ENTRY_BYTES, LedgerEntry
from gd.ledger.errors import LocalLedgerError
from gd.ledger.proposer import (
    STATEMENT_OVERHEAD_BYTES,
    LedgerProposer,
    ProposerFull,
    ProposerLimits,
    decode_batch,
    encode_batch,
    slot_of,
)
from gd.ledger.raft_sessions import RequestState


def statements(count: int, tag: str = "s", author: int = 1) -> list[LedgerEntry]:
    key = key_from_int(author)
    return [LedgerEntry.create(key, "decision", 1000 + i,
                               canonical.sha256(f"{tag}-{i}".encode()), {"i": i})
            for i in range(count)]


def receipt(statement: LedgerEntry, index: int) -> AppendReceipt:
    return AppendReceipt(AppendStatus.APPENDED, index, bytes(32), statement.author,
                         statement.idempotency_key)


def test_batches_are_bounded_in_statements_and_bytes() -> None:
    items = statements(25)
    size = len(items[0].encoded) + STATEMENT_OVERHEAD_BYTES
    proposer = LedgerProposer("c", ProposerLimits(max_statements=10, max_bytes=size * 4))
    for s in items:
        assert proposer.enqueue(s)
    cut = []
    while (batch := proposer.next_batch(0.0)) is not None:
        proposer.proposed(batch)
        cut.append(len(batch.statements))
        assert decode_batch(batch.data) == batch.statements
    assert cut == [4] * 6 + [1]  # the byte bound binds before the count bound
    assert [b.request_id for b in proposer] == list(range(1, 8))
    assert proposer.queued == 0


def test_a_batch_takes_one_oversize_statement_rather_than_none() -> None:
    proposer = LedgerProposer("c", ProposerLimits(max_bytes=1))
    proposer.enqueue(statements(1)[0])
    batch = proposer.next_batch(0.0)
    assert batch is not None and len(batch.statements) == 1


def test_the_pipeline_stops_at_max_inflight() -> None:
    proposer = LedgerProposer("c", ProposerLimits(max_statements=1, max_inflight=3))
    for s in statements(5):
        proposer.enqueue(s)
    for _ in range(3):
        batch = proposer.next_batch(0.0)
        assert batch is not None
        proposer.proposed(batch)
    assert proposer.next_batch(0.0) is None and proposer.queued == 2
    proposer.committed([1])
    assert proposer.next_batch(0.0) is not None


def test_a_statement_is_queued_once_per_slot() -> None:
    proposer = LedgerProposer("c")
    s = statements(1)[0]
    assert proposer.enqueue(s) and not proposer.enqueue(s)
    proposer.submit([s])  # a waiter joins the queued statement
    assert proposer.queued == 1
    assert proposer.waiting_statement(slot_of(s)) is s


def test_a_dropped_batch_goes_back_to_the_front_and_keeps_its_id() -> None:
    proposer = LedgerProposer("c", ProposerLimits(max_statements=2))
    items = statements(3)
    for s in items:
        proposer.enqueue(s)
    batch = proposer.next_batch(0.0)
    assert batch is not None and batch.request_id == 1
    proposer.dropped(batch)
    again = proposer.next_batch(1.0)
    assert again is not None and again.statements == items[:2] and again.request_id == 1
    proposer.proposed(again)
    last = proposer.next_batch(1.0)
    assert last is not None and last.request_id == 2 and last.statements == items[2:]


def test_submit_refuses_past_the_queue_bound_and_queues_nothing() -> None:
    proposer = LedgerProposer("c", ProposerLimits(max_queued=3))
    proposer.submit(statements(2, "a"))
    with pytest.raises(ProposerFull, match="2 statements already queued"):
        proposer.submit(statements(2, "b"))
    assert proposer.queued == 2


def test_applied_resolves_every_waiter_of_a_slot_once() -> None:
    proposer = LedgerProposer("c")
    s, other = statements(2)
    first, = proposer.submit([s])
    second, = proposer.submit([s])
    third, = proposer.submit([other])
    done = proposer.applied([receipt(s, 7)])
    assert [t for t, _ in done] == [first, second]
    assert proposer.receipt(first) == receipt(s, 7)
    assert proposer.receipt(third) is None
    assert not proposer.is_queued(slot_of(s)) and proposer.is_queued(slot_of(other))
    assert proposer.applied([receipt(s, 9)]) == []  # resolved once; a repeat is ignored
    proposer.release([first, second])
    assert proposer.receipt(first) is None


def test_release_keeps_the_other_waiters_of_a_slot() -> None:
    proposer = LedgerProposer("c")
    s = statements(1)[0]
    first, = proposer.submit([s])
    second, = proposer.submit([s])
    proposer.release([first])
    assert [t for t, _ in proposer.applied([receipt(s, 1)])] == [second]


def test_stale_batches_are_looked_up_and_reproposed_by_state() -> None:
    proposer = LedgerProposer("c", ProposerLimits(max_statements=1, retry_after_s=3.0))
    for s in statements(4):
        proposer.enqueue(s)
    for _ in range(4):
        batch = proposer.next_batch(10.0)
        assert batch is not None
        proposer.proposed(batch)
    assert proposer.stale(12.9) == []
    assert proposer.stale(13.0) == [1, 2, 3, 4]
    assert proposer.looked_up(1, RequestState.COMMITTED, 13.0) is None
    assert proposer.looked_up(2, RequestState.PENDING, 13.0) is None
    same = proposer.looked_up(3, RequestState.UNKNOWN, 13.0)
    assert same is not None and same.request_id == 3 and same.renamed_from is None
    fresh = proposer.looked_up(4, RequestState.EXPIRED, 13.0)
    assert fresh is not None and (fresh.request_id, fresh.renamed_from) == (5, 4)
    proposer.reproposed(fresh)
    assert sorted(b.request_id for b in proposer) == [2, 3, 5]
    assert proposer.stale(15.9) == []  # every looked-up batch waits another round
    assert proposer.stale(16.0) == [2, 3, 5]
    assert proposer.looked_up(99, RequestState.UNKNOWN, 16.0) is None


def test_lookup_helpers_find_queued_and_inflight_statements() -> None:
    proposer = LedgerProposer("c", ProposerLimits(max_statements=1))
    a, b = statements(2)
    proposer.enqueue(a)
    proposer.enqueue(b)
    batch = proposer.next_batch(0.0)
    assert batch is not None
    proposer.proposed(batch)
    assert proposer.inflight_request(slot_of(a)) == 1
    assert proposer.inflight_request(slot_of(b)) is None
    assert proposer.waiting_statement(slot_of(a)) is a
    assert proposer.waiting_statement(slot_of(b)) is b
    assert proposer.drain() == [b] and proposer.queued == 0


def test_batch_codec_drops_what_is_not_an_unsequenced_statement() -> None:
    good = statements(2)
    data = canonical.encode_plain([good[0].encoded, b"junk", 5, good[1].encoded])
    assert decode_batch(data) == good
    assert decode_batch(b"\xff") == []
    assert decode_batch(canonical.encode_plain({"a": 1})) == []
    assert decode_batch(encode_batch(good)) == good


def test_batch_codec_reuses_known_statements_only_where_decoding_agrees() -> None:
    """A statement this node holds decoded from the same bytes is reused (no second
    decode), but never one strict decoding would drop on the other nodes: too large
    (LedgerEntry.create does not bound the size) or sequenced."""
    good = statements(3)
    big = LedgerEntry.create(key_from_int(1), "decision", 1, canonical.sha256(b"big"),
                             {f"f{i}": "\u4e2d" * 256 for i in range(16)})
    placed = good[2].sequenced(0, bytes(32))
    assert len(big.encoded) > MAX_ENTRY_BYTES
    held = {s.encoded: s for s in (good[0], big, placed)}
    asked: list[bytes] = []

    def known(raw: bytes) -> LedgerEntry | None:
        asked.append(raw)
        return held.get(raw)

    data = canonical.encode_plain([good[0].encoded, big.encoded, good[1].encoded,
                                   placed.encoded])
    out = decode_batch(data, known)
    assert out == [good[0], good[1]] == decode_batch(data)
    assert out[0] is good[0] and out[1] is not good[1]  # reused; decoded
    assert big.encoded not in asked  # over the bound: decoded (and dropped) as elsewhere


def test_limits_must_be_positive() -> None:
    with pytest.raises(LocalLedgerError):
        ProposerLimits(max_inflight=0)


@pytest.mark.parametrize("seed", range(5))
def test_every_submitted_statement_resolves_through_drops_and_expiry(seed: int) -> None:
    """A flaky Raft (refuses, forgets, commits late) driven by a seeded generator: every
    ticket ends with the receipt of its statement, and in-flight ids never collide."""
    rng = random.Random(seed)
    limits = ProposerLimits(max_statements=7, max_inflight=4, retry_after_s=1.0)
    proposer = LedgerProposer("c", limits)
    items = statements(60, f"seed{seed}")
    tickets = dict(zip(proposer.submit(items), items, strict=True))
    log: list[bytes] = []  # what "Raft" committed, in order
    applied: set[tuple[str, str]] = set()
    now = 0.0
    for _ in range(2000):
        if len(applied) == len(items):
            break
        now += 0.25
        while (batch := proposer.next_batch(now)) is not None:
            if rng.random() < 0.3:
                proposer.dropped(batch)
                break
            assert batch.request_id not in {b.request_id for b in proposer}
            proposer.proposed(batch)
            if rng.random() < 0.7:
                log.append(batch.data)
                proposer.committed([batch.request_id])
        for rid in proposer.stale(now):
            state = rng.choice([RequestState.UNKNOWN, RequestState.EXPIRED,
                                RequestState.PENDING])
            action = proposer.looked_up(rid, state, now)
            if action is not None:
                log.append(action.data)
                proposer.reproposed(action)
                proposer.committed([action.request_id])
        receipts = []
        for data in log:
            for s in decode_batch(data):
                if slot_of(s) not in applied:
                    applied.add(slot_of(s))
                    receipts.append(receipt(s, len(applied)))
        log.clear()
        proposer.applied(receipts)
    assert len(applied) == len(items)
    for ticket, statement in tickets.items():
        got = proposer.receipt(ticket)
        assert got is not None and (got.author, got.idempotency_key) == slot_of(statement)
    assert proposer.inflight == 0 and proposer.queued == 0
