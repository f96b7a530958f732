"""Supervision (node/supervise.py): a failing peer task drops that peer; a failing
service restarts with backoff; cancellation still stops everything."""

from __future__ import annotations

import itertools

import trio
import trio.testing

from gd.node import supervise


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def error(self, event: str, **kw: object) -> None:
        self.events.append((event, kw))

    info = error


async def test_a_failing_peer_task_ends_with_on_failure_and_does_not_raise():
    log, failed = Log(), []

    async def boom(x: int) -> None:
        raise TypeError(f"bad {x}")

    async def on_failure(peer: str, exc: BaseException) -> None:
        failed.append((peer, type(exc).__name__))

    await supervise.peer_task(log, "peer-a", on_failure, boom, 3)
    assert failed == [("peer-a", "TypeError")]
    assert log.events[0][0] == "peer.task_failed" and "bad 3" in log.events[0][1]["error"]


async def test_a_failing_drop_is_logged_not_raised():
    log = Log()

    async def boom() -> None:
        raise ValueError("first")

    async def on_failure(peer: str, exc: BaseException) -> None:
        raise RuntimeError("drop failed too")

    await supervise.peer_task(log, "p", on_failure, boom)
    assert [e for e, _ in log.events] == ["peer.task_failed", "peer.drop_failed"]


async def test_a_crashing_service_restarts_with_doubling_backoff(autojump_clock):
    log, runs, restarts = Log(), [], []

    async def service() -> None:
        runs.append(trio.current_time())
        if len(runs) < 4:
            raise RuntimeError("crash")

    await supervise.supervised(log, "svc", service, restarts=restarts)
    assert len(runs) == 4 and len(restarts) == 3
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(runs)]
    assert gaps == [0.5, 1.0, 2.0]
    assert [e for e, _ in log.events].count("service.crashed") == 3


async def test_backoff_is_capped(autojump_clock):
    log, runs = Log(), []

    async def service() -> None:
        runs.append(trio.current_time())
        if len(runs) < 10:
            raise RuntimeError("crash")

    await supervise.supervised(log, "svc", service)
    assert max(b - a for a, b in itertools.pairwise(runs)) == \
        supervise.RESTART_BACKOFF_MAX_S


async def test_cancellation_passes_through(autojump_clock):
    log = Log()

    async def forever() -> None:
        await trio.sleep_forever()

    with trio.move_on_after(5) as scope:
        await supervise.supervised(log, "svc", forever)
    assert scope.cancelled_caught and log.events == []
