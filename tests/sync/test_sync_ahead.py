"""`gd.node.services.sync_ahead`: work a pull round starts and collects later (ADR 0058).
The job runs in a trio worker thread beside the task that started it, keeps its result
or error for that task, and lets code under it call back into trio."""

from __future__ import annotations

import threading

import pytest
import trio
from gd_testkit import key_from_int, make_gene

from gd.node.services.sync_ahead import ThreadJob, check_job
from gd.protocol.sync import verify_wire


async def test_a_job_runs_beside_its_starter_and_keeps_its_result():
    release = threading.Event()
    started = threading.Event()

    def work() -> int:
        started.set()
        assert release.wait(5)
        return 42

    job = ThreadJob.start(work)
    with trio.fail_after(5):
        while not started.is_set():  # the starter is free while the job runs
            await trio.sleep(0.01)
    assert not job.done and not job.ok
    with pytest.raises(RuntimeError, match="not finished"):
        job.result()
    release.set()
    assert await job.collect() == 42
    assert job.done and job.ok


async def test_a_jobs_error_is_raised_to_whoever_collects_it_not_to_the_run():
    def broken() -> int:
        raise ValueError("the disk said no")

    job = ThreadJob.start(broken)
    await job.wait()
    assert job.done and not job.ok
    with pytest.raises(ValueError, match="disk said no"):
        job.result()
    await trio.sleep(0.05)  # the run goes on: the error did not escape the system task


async def test_code_under_a_job_may_call_back_into_trio():
    box: list[str] = []

    def work() -> str:
        trio.from_thread.run_sync(box.append, "from the job")
        return "done"

    assert await ThreadJob.start(work).collect() == "done"
    assert box == ["from the job"]


async def test_a_check_job_gives_the_checkers_verdicts_or_verify_wire_without_one():
    genes = [make_gene(key_from_int(1), name=f"g{i}") for i in range(5)]
    wires = [g.to_wire() for g in genes]
    wires[2] = {**wires[2], "sig": bytes(64)}  # forged
    plain = await check_job(None, wires).collect()
    assert [reason == "" for _, reason in plain] == [True, True, False, True, True]
    assert [g.id if g else None for g, _ in plain] == [
        g.id if i != 2 else None for i, g in enumerate(genes)]
    seen: list[int] = []

    def checker(ws):
        seen.append(len(ws))
        return [verify_wire(w) for w in ws]

    assert await check_job(checker, wires).collect() == plain
    assert seen == [5]


class _Killed(BaseException):
    """Not an Exception: the simulations' "process killed" is one of these."""


async def test_even_a_base_exception_goes_to_the_collector_not_to_the_run():
    def killed() -> None:
        raise _Killed

    job = ThreadJob.start(killed)
    await job.wait()
    with pytest.raises(_Killed):
        job.result()
