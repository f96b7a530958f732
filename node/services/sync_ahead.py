"""Work a pull round starts and collects later: a batch's check, a group's commit
(issue 15, apply path).

The puller's worker threads did three things one after another: wait for the verify
workers to check a batch (`verify_wire` of every gene: pure), stage it, and commit the
staged group to LMDB. Checking a batch reads nothing a commit writes, and reading and
opening the sender's next replies touch neither the group nor the receiver's view. So
while a group commits, the driver (`gd.node.services.sync_pull`) goes on reading,
opening and checking the batches after it; staging them waits for the commit, because
the view's records and the group's staged list belong to it.

`ThreadJob` runs one function in a trio worker thread from a system task and keeps its
result or error for the round to collect. Why not a task of the round: the thread
cannot be interrupted anyway (as every `trio.to_thread.run_sync` of the round), only
the round that started a job reads its result, and the job raises nothing into the run
(its error is raised to the round when collected). A nursery in the round would wrap
the round's own errors in exception groups, which its callers tell apart by type
(`SyncService.guard_round`). The function keeps `trio.to_thread` semantics: code under
it may call back into trio (`trio.from_thread`), as tests do to cut a link.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar, cast

import trio

from gd.node.gc_tuning import batch_gc
from gd.protocol.sync import Verdict, WireChecker, verify_wire

T = TypeVar("T")


class ThreadJob(Generic[T]):
    """`fn()` running in a worker thread from the moment it is started."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._done = trio.Event()
        self._ok = False
        self._result: T | None = None
        self._error: BaseException | None = None

    @classmethod
    def start(cls, fn: Callable[[], T]) -> ThreadJob[T]:
        """Start `fn` now, beside the caller (trio thread)."""
        job = cls(fn)
        trio.lowlevel.spawn_system_task(job._run, name="gd.sync.thread_job")
        return job

    async def _run(self) -> None:
        try:
            self._result = await trio.to_thread.run_sync(self._fn)
            self._ok = True
        except trio.Cancelled:  # the run is ending before the thread started
            raise
        except BaseException as exc:  # the round's to raise, not the run's
            self._error = exc
        finally:
            if not self._ok and self._error is None:  # the run itself is ending
                self._error = RuntimeError("the sync round's worker job was cancelled")
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def ok(self) -> bool:
        """Finished and returned (False while running or when it raised)."""
        return self._ok

    async def wait(self) -> None:
        await self._done.wait()

    def result(self) -> T:
        """The function's return value, or its error raised here (after `wait`)."""
        if not self._done.is_set():
            raise RuntimeError("the job has not finished")
        if self._error is not None:
            raise self._error
        return cast(T, self._result)  # set when it returned

    async def collect(self) -> T:
        await self._done.wait()
        return self.result()


def check_job(check: WireChecker | None, wires: Sequence[dict[str, Any]]
              ) -> ThreadJob[Sequence[Verdict]]:
    """Start checking a batch's wire genes (`SyncReceiver.check`, or `verify_wire` one
    by one without one): the verdicts `PullRound.apply` takes."""

    def run() -> Sequence[Verdict]:
        with batch_gc():
            return check(wires) if check is not None else [verify_wire(w) for w in wires]

    return ThreadJob.start(run)


__all__ = ["ThreadJob", "check_job"]
