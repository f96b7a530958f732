"""Batched submissions (ADR 0049): `ledger_submit_many` checks each submission exactly as
`ledger_submit` does, answers each on its own, and refuses a call over its bounds whole,
before anything is submitted; a kept-alive control connection carries many submissions."""

from __future__ import annotations

from dataclasses import replace

import pytest
import trio
from gd_testkit import key_from_int

from gd.genome import canonical
from gd.ledger.entry import LedgerEntry
from gd.node.control import ControlError
from gd.node.control_client import ControlConnection
from gd.node.services import ledger_control


def statements(n: int, tag: str, count: int) -> list[LedgerEntry]:
    key = key_from_int(n)
    return [LedgerEntry.create(key, "decision", 1000 + i,
                               canonical.sha256(f"{tag}-{i}".encode()), {"i": i})
            for i in range(count)]


def forged(statement: LedgerEntry) -> LedgerEntry:
    return replace(statement, hlc=statement.hlc + 1)


def encoded(batch: list[LedgerEntry]) -> list[bytes]:
    return [s.encode() for s in batch]


async def many(d, submissions, **params) -> dict:
    return await d.methods.dispatch({"method": "ledger_submit_many",
                                     "params": {"submissions": submissions, **params}})


async def test_each_submission_is_answered_on_its_own(region, nursery):
    d = await region.start(nursery, 1, ())
    good_a, good_b = statements(1, "a", 3), statements(1, "b", 2)
    bad = [*statements(1, "c", 1), forged(statements(1, "d", 1)[0])]
    reply = await many(d, [encoded(good_a), encoded(bad), [b"\x00not an entry"],
                           "not a list", encoded(good_b), []], timeout_s=30)
    assert reply["ok"], reply
    answers = reply["result"]
    assert [a["ok"] for a in answers] == [True, False, False, False, True, True]
    assert "signature" in answers[1]["error"]
    assert answers[2]["error"] and answers[3]["error"] == \
        "statements must be a list of encoded ledger entries"
    assert [r["status"] for r in answers[0]["receipts"]] == ["appended"] * 3
    assert len(answers[4]["receipts"]) == 2 and answers[5]["receipts"] == []
    assert d.ledger.ledger.size == 5  # the good ones only; nothing of a bad submission
    # A resubmission is answered as `ledger_submit` answers it: duplicates, same index.
    again = await many(d, [encoded(good_a)], timeout_s=30)
    assert [r["index"] for r in again["result"][0]["receipts"]] == \
        [r["index"] for r in answers[0]["receipts"]]
    assert d.ledger.ledger.size == 5


@pytest.mark.parametrize("bound, make", [
    ("MAX_SUBMISSIONS_PER_CALL", lambda batch: [[batch[0]]] * 257),
    ("MAX_STATEMENTS_PER_CALL", lambda batch: [[batch[0]] * 4094]),  # 3 + 4094 = 4097
    ("MAX_SUBMIT_BYTES_PER_CALL", lambda batch: [[batch[0] + b"\x00" * (8 << 20)]]),
])
async def test_a_call_over_a_bound_is_refused_whole_and_changes_nothing(region, nursery,
                                                                        bound, make):
    d = await region.start(nursery, 1, ())
    batch = encoded(statements(1, "over", 3))
    reply = await many(d, [batch, *make(batch)], timeout_s=30)
    assert not reply["ok"]
    assert "at most" in reply["error"] and str(getattr(ledger_control, bound)) in \
        reply["error"]
    assert d.ledger.ledger.size == 0 and d.ledger.proposer.queued == 0
    not_a_list = await many(d, {"a": batch}, timeout_s=30)
    assert not not_a_list["ok"] and "must be a list" in not_a_list["error"]
    # Just inside the bounds, the same shape is taken.
    ok = await many(d, [batch], timeout_s=30)
    assert ok["ok"] and ok["result"][0]["ok"] and d.ledger.ledger.size == 3


async def test_a_kept_alive_connection_submits_many_times(region, nursery):
    d = await region.start(nursery, 1, ())
    home = region.home(1)
    batches = [encoded(statements(1, f"k{i}", 4)) for i in range(20)]
    bad = encoded([forged(statements(1, "kb", 1)[0])])

    def client() -> tuple[list[int], str, int, list]:
        with ControlConnection(home, timeout=30.0) as conn:
            indices = [r["index"] for b in batches[:10]
                       for r in conn.call("ledger_submit", statements=b, timeout_s=30.0)]
            with pytest.raises(ControlError) as refused:
                conn.call("ledger_submit", statements=bad, timeout_s=30.0)
            answers = conn.call("ledger_submit_many", submissions=batches[10:],
                                timeout_s=30.0)
            return indices, str(refused.value), conn.connects, answers

    indices, refusal, connects, answers = await trio.to_thread.run_sync(client)
    assert indices == list(range(40))
    assert "signature" in refusal
    assert connects == 1
    assert all(a["ok"] for a in answers) and d.ledger.ledger.size == 80
