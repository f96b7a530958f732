"""Signature checks of concurrent submissions, one worker-thread hand-off per group.

Every `LedgerService.submit` verifies its statements' signatures off the event loop.
Done per submission, that is one `trio.to_thread.run_sync` per submission: under load
the hand-off (thread wake-up, outcome, reschedule) costs as much as checking a
10-statement submission (issue 15: ~32 µs of `start_thread_soon` per entry over three
voters). `GroupChecker` gathers the statements of every submission that arrives while
a check runs and checks them in one hand-off (`check_signatures`, across cores); each
caller gets the bad positions of its own statements. The group grows with load, as the
group commit's does, and is bounded by `max_items` statements.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import trio

from gd.ledger.entry import LedgerEntry
from gd.node.services.ledger_group import check_signatures

# Statements checked in one hand-off at most (a submission larger than this is checked
# alone), and groups checked at once. One large group at a time made closed-loop callers
# move in lock-step waves (all wait for the whole check, then all for the commit), so
# checks stopped overlapping commits: a region of one lost ~30 % of its entries/s
# in-process (64 clients, 10 statements each). Groups of <= 128 statements, four at a
# time, keep that overlap (entries/s within the run's noise of one hand-off per
# submission) with ~7-10x fewer hand-offs.
MAX_CHECK_GROUP: Final = 128
MAX_CHECKS_IN_FLIGHT: Final = 4


class _Pending:
    __slots__ = ("bad", "done", "error", "statements")

    def __init__(self, statements: Sequence[LedgerEntry]) -> None:
        self.statements = statements
        self.done = trio.Event()
        self.bad: list[int] = []
        self.error: BaseException | None = None


class GroupChecker:
    """`await check(statements)`: positions of the bad signatures, as `check_signatures`
    returns them, with concurrent callers sharing one worker-thread hand-off.

    Before `run` starts (and after it stops) each call checks on its own, so a service
    that is not running yet still checks every signature.
    """

    def __init__(self, max_items: int = MAX_CHECK_GROUP,
                 check: Callable[[Sequence[LedgerEntry]], list[int]] = check_signatures,
                 in_flight: int = MAX_CHECKS_IN_FLIGHT) -> None:
        if max_items < 1 or in_flight < 1:
            raise ValueError(f"max_items and in_flight must be at least 1, got "
                             f"{max_items} and {in_flight}")
        self.max_items = max_items
        self.max_in_flight = in_flight
        self._check = check
        self._pending: list[_Pending] = []
        self._checking: list[list[_Pending]] = []  # groups in worker threads now
        self._wake = trio.Event()
        self.running = False
        self.handoffs = 0  # worker-thread hand-offs made, for tests and metrics

    async def check(self, statements: Sequence[LedgerEntry]) -> list[int]:
        if not statements:
            return []
        if not self.running:
            self.handoffs += 1
            return await trio.to_thread.run_sync(self._check, statements)
        pending = _Pending(statements)
        self._pending.append(pending)
        self._wake.set()
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.bad

    def _take(self) -> list[_Pending]:
        """Whole submissions, oldest first, up to max_items statements (at least one)."""
        count = 0
        taken = 0
        for pending in self._pending:
            if taken and count + len(pending.statements) > self.max_items:
                break
            count += len(pending.statements)
            taken += 1
        group, self._pending = self._pending[:taken], self._pending[taken:]
        return group

    async def run(self) -> None:
        """Check groups until cancelled; callers still waiting then get an error."""
        self.running = True
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    if not self._pending or len(self._checking) >= self.max_in_flight:
                        await self._wake.wait()
                        self._wake = trio.Event()
                        continue
                    group = self._take()
                    self._checking.append(group)
                    nursery.start_soon(self._check_group, group)
        finally:
            self.running = False
            for pending in [p for group in self._checking for p in group] + self._pending:
                if not pending.done.is_set():
                    pending.error = RuntimeError("the ledger stopped before checking")
                    pending.done.set()
            self._pending.clear()
            self._checking.clear()

    async def _check_group(self, group: list[_Pending]) -> None:
        try:
            await self._check_and_answer(group)
        finally:
            self._checking.remove(group)
            self._wake.set()
            for pending in group:  # cancelled mid-check: the ledger is stopping
                if not pending.done.is_set():
                    pending.error = RuntimeError("the ledger stopped before checking")
                    pending.done.set()

    async def _check_and_answer(self, group: list[_Pending]) -> None:
        statements = [s for pending in group for s in pending.statements]
        self.handoffs += 1
        try:
            bad = await trio.to_thread.run_sync(self._check, statements)
        except Exception as exc:  # a bug in the check: its callers fail, not the loop
            for pending in group:
                pending.error = exc
                pending.done.set()
            return
        offset = 0
        marks = iter(sorted(bad))
        mark = next(marks, None)
        for pending in group:
            end = offset + len(pending.statements)
            while mark is not None and mark < end:
                pending.bad.append(mark - offset)
                mark = next(marks, None)
            offset = end
            pending.done.set()


__all__ = ["MAX_CHECK_GROUP", "GroupChecker"]
