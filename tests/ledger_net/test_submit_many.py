"""Batched submissions (ADR 0049): `ledger_submit_many` checks each submission exactly as
`ledger_submit` does, answers each on its own, and refuses a call over its bounds whole,
before anything is submitted; concurrent submissions share signature-check hand-offs
(`GroupChecker`); a kept-alive control connection carries many submissions."""

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
from gd.node.services.ledger_checks import GroupChecker
from gd.node.services.ledger_group import check_signatures


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


async def test_group_checker_shares_hand_offs_and_gives_each_caller_its_own(nursery):
    checker = GroupChecker(max_items=64)
    nursery.start_soon(checker.run)
    await trio.testing.wait_all_tasks_blocked()
    batches = [statements(1, f"g{i}", 5) for i in range(40)]
    for i in (3, 17, 39):
        batches[i][i % 5] = forged(batches[i][i % 5])
    found: dict[int, list[int]] = {}

    async def one(i: int) -> None:
        found[i] = await checker.check(batches[i])

    async with trio.open_nursery() as inner:
        for i in range(40):
            inner.start_soon(one, i)
    assert found == {i: check_signatures(batches[i]) for i in range(40)}
    assert found[3] == [3] and found[17] == [2] and found[39] == [4]
    assert sum(1 for v in found.values() if v) == 3
    assert checker.handoffs <= 8  # 200 statements in groups of <= 64, not 40 hand-offs


async def test_group_checker_fails_its_callers_not_the_loop_and_checks_when_stopped():
    calls = []

    def broken(batch):
        calls.append(len(batch))
        raise OSError("worker broke")

    checker = GroupChecker(check=broken)
    with pytest.raises(OSError):
        await checker.check(statements(1, "x", 2))  # not running: checked alone
    async with trio.open_nursery() as nursery:
        nursery.start_soon(checker.run)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(OSError):
            await checker.check(statements(1, "y", 2))
        assert checker.running  # the loop survived
        nursery.cancel_scope.cancel()
    assert calls == [2, 2] and not checker.running


async def test_concurrent_region_submissions_share_signature_hand_offs(region, nursery):
    ds, _leader = await region.start_region(nursery)
    before = [d.ledger.checker.handoffs for d in ds]

    async def submit(i: int) -> None:
        await ds[i % 3].ledger.submit(statements(1 + i % 3, f"r{i}", 4), timeout_s=60)

    async with trio.open_nursery() as inner:
        for i in range(48):
            inner.start_soon(submit, i)
    await region.until(lambda: region.sizes(ds) == [192] * 3)
    handoffs = sum(d.ledger.checker.handoffs for d in ds) - sum(before)
    assert 0 < handoffs < 48  # fewer hand-offs than submissions


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


async def test_group_checker_runs_groups_side_by_side_and_fails_them_on_stop():
    import threading

    release = threading.Event()
    started: list[int] = []

    def slow(batch):
        started.append(len(batch))
        release.wait(10)
        return []

    checker = GroupChecker(max_items=4, check=slow, in_flight=2)
    errors: list[str] = []

    async def one(tag: str) -> None:
        try:
            await checker.check(statements(1, tag, 3))
        except RuntimeError as exc:
            errors.append(str(exc))

    async with trio.open_nursery() as callers, trio.open_nursery() as service:
        service.start_soon(checker.run)
        await trio.testing.wait_all_tasks_blocked()
        for tag in "abcd":
            callers.start_soon(one, tag)
        with trio.fail_after(10):
            while len(started) < 2:
                await trio.sleep(0.01)
        await trio.sleep(0.1)
        assert started == [3, 3]  # two groups at once, the others wait for a slot
        service.cancel_scope.cancel()  # the ledger stops mid-check
        release.set()
    # The two groups in worker threads finish (a thread is not abandoned); the two
    # waiting for a slot are told the ledger stopped, never left waiting.
    assert errors == ["the ledger stopped before checking"] * 2
    assert not checker.running
