"""Group commit (issue 15): many submissions share one durable transaction, and every
signature is still checked, once, before anything is written."""

from __future__ import annotations

import threading
from dataclasses import replace

import lmdb
import pytest
import trio
from gd_testkit import key_from_int

from gd.genome import canonical
from gd.ledger.entry import LedgerEntry
from gd.ledger.errors import RemoteLedgerError
from gd.ledger.proposer import encode_batch
from gd.node.services import ledger_service, ledger_solo
from gd.node.services.ledger_group import CheckedStatements, GroupCommitter, check_signatures
from gd.node.services.ledger_service import INLINE_CHECK_MAX
from gd.node.store.ledger_store import Ledger


def statements(n: int, tag: str, count: int) -> list[LedgerEntry]:
    key = key_from_int(n)
    return [LedgerEntry.create(key, "decision", 1000 + i,
                               canonical.sha256(f"{tag}-{i}".encode()), {"i": i})
            for i in range(count)]


def forged(statement: LedgerEntry) -> LedgerEntry:
    """The same statement with a changed field: its signature no longer verifies."""
    return replace(statement, hlc=statement.hlc + 1)


def test_check_signatures_finds_every_forgery_in_a_large_batch():
    batch = statements(1, "big", 200)
    bad_at = [0, 77, 199]
    for i in bad_at:
        batch[i] = forged(batch[i])
    assert check_signatures(batch) == bad_at
    assert check_signatures(batch[1:77]) == []


def test_checked_statements_skip_once_and_stay_bounded():
    batch = statements(1, "seen", 6)
    checked = CheckedStatements(limit=4)
    checked.remember(batch[:5])  # the first one is forgotten: over the limit
    assert checked.unchecked(batch) == [0, 5]
    assert checked.unchecked(batch) == [0, 1, 2, 3, 4, 5]  # each skip is used once
    # Same content but other bytes (a forgery) is never taken for a checked statement.
    checked.remember(batch[:1])
    assert checked.unchecked([forged(batch[0])]) == [0]


def test_checked_statements_hand_back_the_statement_for_its_exact_bytes_once():
    batch = statements(1, "take", 3)
    checked = CheckedStatements(limit=2)
    checked.remember(batch)  # the first one is forgotten: over the limit
    assert checked.take(batch[0].encoded) is None
    assert checked.take(batch[1].encoded) is batch[1]
    assert checked.take(batch[1].encoded) is None  # handed out once
    assert checked.take(forged(batch[2]).encoded) is None  # other bytes, not taken
    assert checked.unchecked(batch[2:]) == []


async def test_concurrent_callers_share_commits_and_a_bad_caller_fails_alone():
    calls: list[list[str]] = []

    def commit(items: list[str]) -> list[str]:
        calls.append(list(items))
        if "bad" in items:
            raise ValueError("bad item")
        return [f"ok:{item}" for item in items]

    group: GroupCommitter[str, str] = GroupCommitter(commit, max_items=1000)
    results: dict[int, list[str]] = {}
    errors: dict[int, str] = {}

    async def caller(i: int) -> None:
        items = ["bad"] if i == 7 else [f"{i}-a", f"{i}-b"]
        try:
            results[i] = await group.submit(items)
        except ValueError as exc:
            errors[i] = str(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(group.run)
        await trio.sleep(0)
        async with trio.open_nursery() as callers:
            for i in range(20):
                callers.start_soon(caller, i)
        nursery.cancel_scope.cancel()
    assert errors == {7: "bad item"}
    assert results == {i: [f"ok:{i}-a", f"ok:{i}-b"] for i in range(20) if i != 7}
    # 20 callers, far fewer commits: the first takes one caller, the rest queue behind
    # it; the group holding the bad caller is retried caller by caller.
    assert group.groups < 20
    assert max(len(c) for c in calls) > 2


async def test_with_a_check_the_next_group_is_checked_while_one_commits():
    """ADR 0059: the check of group k+1 runs while group k commits; a request whose own
    check fails gets that error and the others of its group commit."""
    committing, checked_meanwhile = threading.Event(), threading.Event()
    seen: list[bool] = []
    committed: list[list[str]] = []

    def check(items: list[str]) -> None:
        if committing.is_set():
            checked_meanwhile.set()
        if any(item.startswith("forged") for item in items):
            raise ValueError("forged item")

    def commit(items: list[str]) -> list[str]:
        if not committed:  # the first group waits for a check to start meanwhile
            committing.set()
            seen.append(checked_meanwhile.wait(10))
            committing.clear()
        committed.append(list(items))
        return [f"ok:{item}" for item in items]

    group: GroupCommitter[str, str] = GroupCommitter(commit, max_items=1000, check=check)
    results: dict[str, object] = {}

    async def caller(name: str, items: list[str]) -> None:
        try:
            results[name] = await group.submit(items)
        except ValueError as exc:
            results[name] = str(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(group.run)
        await trio.sleep(0)
        async with trio.open_nursery() as callers:
            callers.start_soon(caller, "first", ["a"])
            with trio.fail_after(10):
                while not committing.is_set():
                    await trio.sleep(0.005)
            callers.start_soon(caller, "second", ["b", "c"])
            callers.start_soon(caller, "forger", ["forged"])
            callers.start_soon(caller, "third", ["d"])
        nursery.cancel_scope.cancel()
    assert seen == [True]
    assert results == {"first": ["ok:a"], "second": ["ok:b", "ok:c"],
                       "forger": "forged item", "third": ["ok:d"]}
    # The forger's items never reach a commit; the others of its group share one.
    assert committed[0] == ["a"] and len(committed) == 2
    assert sorted(committed[1]) == ["b", "c", "d"]


async def test_callers_waiting_when_the_committer_stops_get_an_error():
    release = threading.Event()

    def slow(items: list[int]) -> list[int]:
        release.wait(10)
        return items

    group: GroupCommitter[int, int] = GroupCommitter(slow, max_items=1)
    with pytest.raises(RuntimeError):
        await group.submit([1])  # not running yet
    outcome: dict[str, object] = {}

    async def caller(name: str) -> None:
        try:
            outcome[name] = await group.submit([1])
        except RuntimeError as exc:
            outcome[name] = str(exc)

    timer = threading.Timer(0.5, release.set)
    committer = trio.CancelScope()

    async def run_committer() -> None:
        with committer:
            await group.run()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_committer)
        await trio.sleep(0)
        nursery.start_soon(caller, "first")  # its commit is under way when we stop
        await trio.sleep(0.05)
        nursery.start_soon(caller, "second")  # queued behind it
        await trio.sleep(0.05)
        timer.start()
        committer.cancel()
    timer.join()
    assert outcome == {"first": [1], "second": "the ledger stopped before committing"}
    assert not group.running


def test_append_batch_writes_the_callers_bookkeeping_in_the_same_transaction(tmp_path):
    env = lmdb.open(str(tmp_path / "l"), max_dbs=64, map_size=1 << 26)
    try:
        ledger = Ledger(env)
        side = env.open_db(b"test_side")
        good = statements(1, "g", 3)

        def also(txn: lmdb.Transaction) -> None:
            txn.put(b"applied", b"3", db=side)

        ledger.append_batch(good, also=also)
        with env.begin() as txn:
            assert txn.get(b"applied", db=side) == b"3"
        # When the caller's writes fail, the entries are not written either.

        def broken(txn: lmdb.Transaction) -> None:
            txn.put(b"applied", b"6", db=side)
            raise OSError("disk said no")

        with pytest.raises(OSError):
            ledger.append_batch(statements(1, "h", 3), also=broken)
        assert ledger.size == 3
        with env.begin() as txn:
            assert txn.get(b"applied", db=side) == b"3"
        # Unchecked by default: a forgery is refused and nothing is written.
        with pytest.raises(RemoteLedgerError):
            ledger.append_batch([*statements(1, "i", 2), forged(statements(1, "j", 1)[0])])
        assert ledger.size == 3
    finally:
        env.close()


async def test_concurrent_submissions_on_a_region_of_one_share_commits(region, nursery):
    d = await region.start(nursery, 1, ())
    # The group runs once the service has started; a submission before that appends
    # directly (`SoloAppender.append`), and on a loaded machine all 32 could.
    with trio.fail_after(30):
        await d.ledger.started.wait()
    receipts: dict[int, list] = {}

    async def submit(i: int) -> None:
        receipts[i] = await d.ledger.submit(statements(1, f"c{i}", 5), timeout_s=30)

    async with trio.open_nursery() as inner:
        for i in range(32):
            inner.start_soon(submit, i)
    indices = sorted(r.index for rs in receipts.values() for r in rs)
    assert indices == list(range(160)), indices
    assert 0 < d.ledger.solo_group.groups < 32  # shared commits, one fsync each
    assert len(d.ledger._verified) == 0  # a region of one holds no checked statements
    with pytest.raises(RemoteLedgerError):
        await d.ledger.submit([forged(statements(1, "x", 1)[0])], timeout_s=30)
    assert d.ledger.ledger.size == 160
    # A forged statement submitted with good ones at the same time fails its caller alone.
    outcomes: dict[str, object] = {}

    async def mixed(tag: str, batch: list) -> None:
        try:
            outcomes[tag] = await d.ledger.submit(batch, timeout_s=30)
        except RemoteLedgerError as exc:
            outcomes[tag] = exc

    good = statements(1, "g", 3)
    async with trio.open_nursery() as inner:
        inner.start_soon(mixed, "good", good)
        inner.start_soon(mixed, "bad", [*statements(1, "h", 2), forged(statements(1, "y", 1)[0])])
    assert isinstance(outcomes["bad"], RemoteLedgerError), outcomes
    assert [r.index for r in outcomes["good"]] == [160, 161, 162], outcomes
    assert d.ledger.ledger.size == 163
    report = d.ledger.ledger.verify()
    assert report.ok, report.reason
    d.stop()


async def test_a_forged_statement_in_a_committed_entry_is_dropped_on_every_node(region,
                                                                                nursery):
    ds, leader = await region.start_region(nursery)
    # Submitted normally on node 2 (checked there, remembered, not checked again there).
    await ds[1].ledger.submit(statements(2, "first", 4), timeout_s=30)
    # A member proposes garbage straight into the log: one good, one forged statement.
    good, bad = statements(3, "direct", 2)
    data = encode_batch([good, forged(bad)])
    leader.ledger.node.propose(data, "test-client", 1)
    leader.ledger.wake()
    await region.until(lambda: region.sizes(ds) == [5, 5, 5])
    await trio.sleep(0.3)
    assert region.sizes(ds) == [5, 5, 5]
    for d in ds:
        assert d.ledger.ledger.find(good.author, good.idempotency_key) is not None
        assert d.ledger.ledger.find(bad.author, bad.idempotency_key) is None
        assert d.ledger.ledger.verify().ok
    logs = [[e.encoded for e in d.ledger.ledger.entries()] for d in ds]
    assert logs[0] == logs[1] == logs[2]
    # The applied index went to disk with the entries.
    assert all(d.ledger.book.applied() == d.ledger.applied_index > 0 for d in ds)
    for d in ds:
        d.stop()


def test_apply_reuses_statements_checked_at_submit_and_checks_the_rest(tmp_path, monkeypatch):
    """The applier takes the statements this node checked at submit as they are (no second
    decode, no second signature check) and decodes and checks every other one: a forged
    statement from another member is dropped, the rest appended in log order."""
    import structlog

    from gd.ledger.raft_records import Entry
    from gd.node.services import ledger_apply
    from gd.node.store.ledger_outbox import RegionBook

    mine = statements(1, "mine", 3)
    theirs = statements(2, "theirs", 3)
    theirs[1] = forged(theirs[1])
    checked_here: list[LedgerEntry] = []
    decoded: list[bytes] = []
    real_check, real_decode = ledger_apply.check_signatures, LedgerEntry.decode

    def spy_check(batch):
        checked_here.extend(batch)
        return real_check(batch)

    def spy_decode(raw):
        decoded.append(raw)
        return real_decode(raw)

    monkeypatch.setattr(ledger_apply, "check_signatures", spy_check)
    monkeypatch.setattr(LedgerEntry, "decode", staticmethod(spy_decode))
    env = lmdb.open(str(tmp_path / "l"), max_dbs=64, map_size=1 << 26)
    try:
        ledger = Ledger(env)
        verified = CheckedStatements(limit=100)
        verified.remember(mine)

        async def on_applied(result: ledger_apply.ApplyResult) -> None:
            del result

        applier = ledger_apply.Applier(ledger, RegionBook(env), key_from_int(9), log_id="t",
                                       wall_ms=lambda: 1, verified=verified,
                                       on_applied=on_applied, log=structlog.get_logger())
        entries = [Entry(1, 1, data=encode_batch([mine[0], theirs[0], mine[1]]),
                         client_id="a", request_id=1),
                   Entry(1, 2, data=encode_batch([theirs[1], theirs[2], mine[2]]),
                         client_id="b", request_id=1)]
        result = applier._apply_sync(entries, frozenset(), sign=True)
        order = [mine[0], theirs[0], mine[1], theirs[2], mine[2]]
        assert [s for s, _ in result.receipts] == order
        assert result.receipts[0][0] is mine[0]  # the very object checked at submit
        assert result.size == ledger.size == 5 and result.head is not None
        assert sorted(decoded) == sorted(s.encoded for s in theirs)
        assert sorted(s.encoded for s in checked_here) == sorted(s.encoded for s in theirs)
        assert ledger.find(theirs[1].author, theirs[1].idempotency_key) is None
    finally:
        env.close()


async def test_small_submissions_are_checked_on_the_loop_and_large_ones_in_a_thread(
        region, nursery, monkeypatch):
    """ADR 0055 (a Raft region, here of one voter): the hop to a worker thread cost more
    than checking a few signatures; a large submission still goes to the threads. Both
    refuse a forgery."""
    d = await region.start(nursery, 1, region.voter_ids(1))
    await region.leader([d])
    hops: list[str] = []
    real = trio.to_thread.run_sync

    async def counting(fn, *args, **kwargs):
        hops.append(getattr(fn, "__name__", ""))
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", counting)
    small, large = INLINE_CHECK_MAX, INLINE_CHECK_MAX + 1
    await d.ledger.submit(statements(1, "small", small), timeout_s=30)
    assert hops.count("check_signatures") == 0
    await d.ledger.submit(statements(1, "large", large), timeout_s=30)
    assert hops.count("check_signatures") == 1
    for n in (small, large):
        batch = statements(1, f"forged{n}", n)
        batch[-1] = forged(batch[-1])
        with pytest.raises(RemoteLedgerError):
            await d.ledger.submit(batch, timeout_s=30)
    assert d.ledger.ledger.size == small + large


async def test_a_region_of_one_checks_signatures_a_group_at_a_time_off_the_loop(
        region, nursery, monkeypatch):
    """ADR 0059: a region of one checks a group's signatures in a worker thread (while
    the group before it commits), never on the event loop; a forged submission among
    honest ones fails alone, and nothing of it is written."""
    d = await region.start(nursery, 1, ())
    await region.until(lambda: d.ledger.solo_group.running)
    threads: list[bool] = []  # whether each check ran on the event loop's thread
    real = ledger_solo.check_signatures

    def watched(batch):
        threads.append(threading.current_thread() is threading.main_thread())
        return real(batch)

    monkeypatch.setattr(ledger_solo, "check_signatures", watched)
    monkeypatch.setattr(ledger_service, "check_signatures", watched)
    honest = [statements(1, f"honest{i}", 5) for i in range(6)]
    bad = statements(1, "bad", 5)
    bad[2] = forged(bad[2])
    outcomes: dict[str, object] = {}

    async def submit(name: str, batch: list[LedgerEntry]) -> None:
        try:
            outcomes[name] = await d.ledger.submit(batch, timeout_s=30)
        except RemoteLedgerError as exc:
            outcomes[name] = exc

    async with trio.open_nursery() as callers:
        for i, batch in enumerate(honest):
            callers.start_soon(submit, f"h{i}", batch)
        callers.start_soon(submit, "bad", bad)
    assert isinstance(outcomes.pop("bad"), RemoteLedgerError)
    assert all(len(receipts) == 5 for receipts in outcomes.values())  # type: ignore[arg-type]
    assert threads and not any(threads)
    assert d.ledger.ledger.size == 30
    assert d.ledger.ledger.find(bad[0].author, bad[0].idempotency_key) is None
