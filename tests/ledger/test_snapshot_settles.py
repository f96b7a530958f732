"""Statements a snapshot restore brought to the ledger are settled in the proposer (H1's
ledger service simulation, seed 43 with compaction): their callers get receipts, their
slots leave the queue, and the same statement can be submitted again and answered."""

from __future__ import annotations

import lmdb
from gd_testkit import key_from_int

from gd.genome import canonical
from gd.ledger.chain import AppendReceipt, AppendStatus
from gd.ledger.entry import LedgerEntry
from gd.ledger.proposer import LedgerProposer
from gd.node.services.ledger_catchup import receipts_on_ledger
from gd.node.store.ledger_store import Ledger


def statements(count: int, tag: str, author: int = 1) -> list[LedgerEntry]:
    key = key_from_int(author)
    return [LedgerEntry.create(key, "decision", 100 + i,
                               canonical.sha256(f"{tag}-{i}".encode()), {"i": i}, f"k{i}")
            for i in range(count)]


def test_settled_slots_resolve_their_tickets_and_leave_the_queue() -> None:
    proposer = LedgerProposer("me/1")
    first, rest = statements(2, "a"), statements(3, "b", author=2)
    tickets = proposer.submit(first + rest)
    batch = proposer.next_batch(0.0)
    assert batch is not None
    proposer.proposed(batch)  # all five in flight
    assert {s.idempotency_key for s in proposer.pending()} == {"k0", "k1", "k2"}
    assert len(proposer.pending()) == 5
    # The snapshot brought the two of author 1; nothing applied them here.
    on_ledger = [AppendReceipt(AppendStatus.DUPLICATE, i, bytes(32), s.author,
                               s.idempotency_key) for i, s in enumerate(first)]
    resolved = proposer.settled(on_ledger)
    assert [t for t, _ in resolved] == tickets[:2]
    assert [proposer.receipt(t) for t in tickets[:2]] == on_ledger
    assert all(proposer.receipt(t) is None for t in tickets[2:])
    assert len(proposer.pending()) == 3
    # Submitted again, the statement is queued again (before: its slot stayed taken and
    # the new ticket waited forever).
    assert proposer.enqueue(first[0])


def test_settled_statements_still_queued_are_not_proposed_again() -> None:
    proposer = LedgerProposer("me/1")
    held, other = statements(2, "q")
    proposer.submit([held, other])
    proposer.settled([AppendReceipt(AppendStatus.DUPLICATE, 0, bytes(32), held.author,
                                    held.idempotency_key)])
    batch = proposer.next_batch(0.0)
    assert batch is not None and batch.statements == [other]


def test_receipts_on_ledger_answer_as_an_append_retry(tmp_path) -> None:
    env = lmdb.open(str(tmp_path / "l"), max_dbs=64, map_size=1 << 26)
    try:
        ledger = Ledger(env)
        appended = statements(2, "on")
        ledger.append_batch(appended)
        again = statements(1, "on")[0]  # the same event signed again: another clock stamp
        again = LedgerEntry.create(key_from_int(1), "decision", 999, again.payload_hash,
                                   {"i": 0}, "k0")
        other = statements(2, "x")[1]  # another event under k1
        absent = statements(3, "z")[2]  # k2: not on the ledger
        receipts = receipts_on_ledger(ledger, [again, other, absent])
        assert [(r.status, r.index, r.idempotency_key) for r in receipts] == [
            (AppendStatus.DUPLICATE, 0, "k0"), (AppendStatus.CONFLICT, 1, "k1")]
        assert receipts[0].entry_hash == ledger.entry(0).entry_hash
    finally:
        env.close()
