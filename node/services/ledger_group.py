"""Group commit for the ledger (issue 15): many callers, one transaction, one fsync.

An fsync costs the same for one statement as for a thousand, so the ledger's throughput
is set by how many statements share one. Two pieces:

* `check_signatures` verifies statements' Ed25519 signatures across cores (pynacl
  releases the GIL while it verifies), so the write path that follows can skip its own
  serial check (`Ledger.append_batch(signatures_checked=True)`): every signature is
  still checked, once.
* `GroupCommitter` (trio): callers `submit` their statements and wait; one task takes
  everything queued since the last commit, hands it to a commit function in a worker
  thread (one durable transaction), and gives each caller its own results. Under load
  the batch grows by itself: the longer a commit takes, the more callers queue behind
  it (batching sized by load, as etcd's and PostgreSQL's group commit do).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

import trio

from gd.ledger.entry import LedgerEntry
from gd.ledger.errors import RemoteLedgerError

# Below this many statements per worker, threads cost more than they save.
MIN_CHUNK: Final = 32

T = TypeVar("T")
R = TypeVar("R")


def _workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    """One process-wide pool, started on first use (a daemon that never appends starts no
    threads); its threads are daemon-less workers that exit with the interpreter."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(_workers(), thread_name_prefix="gd-ledger-verify")
    return _POOL


def _bad_in(chunk: Sequence[LedgerEntry]) -> list[int]:
    bad = []
    for i, statement in enumerate(chunk):
        try:
            statement.verify_signature()
        except RemoteLedgerError:
            bad.append(i)
    return bad


def check_signatures(statements: Sequence[LedgerEntry]) -> list[int]:
    """Positions of the statements whose signature does not verify (any thread).

    Contiguous chunks run on the pool, one per core, when the batch is large enough to
    pay for the hand-off; small batches are checked inline."""
    workers = _workers()
    if workers == 1 or len(statements) < 2 * MIN_CHUNK:
        return _bad_in(statements)
    size = max(MIN_CHUNK, -(-len(statements) // workers))
    starts = range(0, len(statements), size)
    futures = [_pool().submit(_bad_in, statements[s:s + size]) for s in starts]
    return [s + i for s, f in zip(starts, futures, strict=True) for i in f.result()]


class CheckedStatements:
    """Statements whose signature this node has checked, by their exact bytes (any
    thread): the apply of a statement checked at submit need not check it again, nor
    decode it again (`take` hands back the statement itself). Keyed by the bytes
    themselves, not a digest of them: the statement holds those bytes anyway, and a dict
    lookup hashes and compares them in C (two SHA-256 per statement less, issue 15).
    Bounded (oldest forgotten first); a forgotten one is simply decoded and checked
    twice."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[bytes, LedgerEntry] = {}
        self._lock = threading.Lock()

    def remember(self, statements: Sequence[LedgerEntry]) -> None:
        held = {s.encoded: s for s in statements}
        with self._lock:
            self._held.update(held)
            while len(self._held) > self.limit:
                del self._held[next(iter(self._held))]

    def __len__(self) -> int:
        return len(self._held)

    def take(self, raw: bytes) -> LedgerEntry | None:
        """The checked statement whose bytes are exactly `raw`, forgotten as it is
        handed out (each statement is applied once); None if there is none."""
        with self._lock:
            return self._held.pop(bytes(raw), None)

    def unchecked(self, statements: Sequence[LedgerEntry]) -> list[int]:
        """Positions of the statements not checked here before (the others are
        forgotten: each is applied once)."""
        out = []
        with self._lock:
            for i, statement in enumerate(statements):
                if self._held.pop(statement.encoded, None) is None:
                    out.append(i)
        return out


class SubmissionWaiter:
    """One submission's callers wait on one event, set when its last statement is
    applied: one wake-up per submission, not a scheduler round per statement (issue 15).
    The proposer resolves each ticket once, so counting down is exact."""

    __slots__ = ("done", "left")

    def __init__(self, tickets: int) -> None:
        self.left = tickets
        self.done = trio.Event()

    def resolved(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set()


class Waiters:
    """The callers waiting on proposer tickets: one SubmissionWaiter per submission."""

    def __init__(self) -> None:
        self._by_ticket: dict[int, SubmissionWaiter] = {}

    def add(self, tickets: Sequence[int]) -> SubmissionWaiter:
        waiter = SubmissionWaiter(len(tickets))
        for ticket in tickets:
            self._by_ticket[ticket] = waiter
        return waiter

    def resolve(self, resolved: Iterable[tuple[int, object]]) -> None:
        """Tickets the proposer resolved (with their receipts): count their callers down."""
        for ticket, _receipt in resolved:
            waiter = self._by_ticket.get(ticket)
            if waiter is not None:
                waiter.resolved()

    def forget(self, tickets: Iterable[int]) -> None:
        for ticket in tickets:
            self._by_ticket.pop(ticket, None)


@dataclass
class _Request(Generic[T, R]):
    items: Sequence[T]
    done: trio.Event = field(default_factory=trio.Event)
    results: list[R] | None = None
    error: BaseException | None = None


class GroupCommitter(Generic[T, R]):
    """Commit what many callers submit in as few durable transactions as possible.

    `commit(items)` runs in a worker thread and returns one result per item, in order;
    it must be all-or-nothing. When a group's commit raises, each request of the group
    is committed alone, so one caller's bad input fails only that caller.

    `check(items)`, when given, runs in a worker thread before the commit and raises on
    bad input (a forged signature): a two-stage pipeline, the next group checked while
    the one before it commits (issue 15; ADR 0059). A group whose check raises is
    checked request by request; a request that fails its own check gets that error and
    the others go on to the commit.
    """

    def __init__(self, commit: Callable[[list[T]], list[R]], max_items: int, *,
                 check: Callable[[list[T]], object] | None = None) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        self._commit = commit
        self._check = check
        self.max_items = max_items
        self._pending: list[_Request[T, R]] = []
        self._inflight: list[_Request[T, R]] = []  # taken, not answered yet
        self._wake = trio.Event()
        self.running = False
        self.groups = 0  # commits made, for tests and metrics

    async def submit(self, items: Sequence[T]) -> list[R]:
        """Queue `items` and wait until they are committed; their results, in order."""
        if not self.running:
            raise RuntimeError("the group committer is not running")
        request: _Request[T, R] = _Request(items)
        self._pending.append(request)
        self._wake.set()
        await request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.results is not None
        return request.results

    def _take(self) -> list[_Request[T, R]]:
        """Whole requests, oldest first, up to max_items (at least one request)."""
        taken: list[_Request[T, R]] = []
        count = 0
        while self._pending and (not taken or
                                 count + len(self._pending[0].items) <= self.max_items):
            request = self._pending.pop(0)
            taken.append(request)
            count += len(request.items)
        return taken

    async def _next_group(self) -> list[_Request[T, R]]:
        while not self._pending:
            await self._wake.wait()
            self._wake = trio.Event()
        group = self._take()
        self._inflight.extend(group)
        return group

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Commit groups until cancelled; callers still waiting then get an error.
        Started with `nursery.start`, it takes submissions once that returns."""
        self.running = True
        task_status.started()
        try:
            if self._check is None:
                while True:
                    await self._commit_group(await self._next_group())
            else:
                # One group checked while the one before it commits; the channel holds
                # none, so at most one checked group waits for the committer.
                send, receive = trio.open_memory_channel[list[_Request[T, R]]](0)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._commit_checked, receive)
                    while True:
                        passed = await self._check_group(await self._next_group())
                        if passed:
                            await send.send(passed)
        finally:
            self.running = False
            for request in self._inflight + self._pending:
                if request.done.is_set():
                    continue
                request.error = RuntimeError("the ledger stopped before committing")
                request.done.set()
            self._inflight.clear()
            self._pending.clear()

    async def _commit_checked(self, receive: trio.MemoryReceiveChannel[
            list[_Request[T, R]]]) -> None:
        async for group in receive:
            await self._commit_group(group)

    def _answer(self, request: _Request[T, R], results: list[R] | None = None,
                error: BaseException | None = None) -> None:
        request.results, request.error = results, error
        request.done.set()
        self._inflight.remove(request)

    async def _check_group(self, group: list[_Request[T, R]]) -> list[_Request[T, R]]:
        """The group's requests whose items pass `check` (the others are answered with
        the error their own check raised)."""
        assert self._check is not None
        items = [item for request in group for item in request.items]
        try:
            await trio.to_thread.run_sync(self._check, items)
            return group
        except Exception as exc:
            if len(group) == 1:
                self._answer(group[0], error=exc)
                return []
        passed = []
        for request in group:  # find whose: each alone
            passed += await self._check_group([request])
        return passed

    async def _commit_group(self, group: list[_Request[T, R]]) -> None:
        items = [item for request in group for item in request.items]
        try:
            results = await trio.to_thread.run_sync(self._commit, items)
            self.groups += 1
        except Exception as exc:
            if len(group) == 1:  # this caller's own bad input (nothing was written)
                self._answer(group[0], error=exc)
                return
            for request in group:  # find whose: each alone, in order
                await self._commit_group([request])
            return
        offset = 0
        for request in group:
            self._answer(request, results[offset:offset + len(request.items)])
            offset += len(request.items)
