"""A submission waits on one event for all its statements (issue 15): it wakes once, when
the last of them is applied, never before, and an empty submission does not wait."""

from __future__ import annotations

import trio
import trio.testing

from gd.node.services.ledger_group import SubmissionWaiter


async def test_wakes_once_when_the_last_statement_is_applied(autojump_clock: object) -> None:
    start = trio.current_time()
    waiter = SubmissionWaiter(3)
    woke: list[float] = []

    async def caller() -> None:
        await waiter.done.wait()
        woke.append(trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller)
        for _ in range(2):
            await trio.sleep(1)
            waiter.resolved()
            await trio.testing.wait_all_tasks_blocked()
            assert woke == [] and not waiter.done.is_set()
        await trio.sleep(1)
        waiter.resolved()
    assert woke == [3.0] and waiter.left == 0


def test_an_empty_submission_has_nothing_to_wait_for() -> None:
    waiter = SubmissionWaiter(0)
    assert waiter.left == 0  # the service checks `left` before waiting
    assert not waiter.done.is_set()
