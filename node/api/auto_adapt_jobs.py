"""Auto-adaptation (gd.node.app.auto_adapt) on the API's durable job store.

The app room decides whether a veto or a received gene gets an adaptation job; the jobs
themselves are this room's (`api_jobs`, run one at a time by node/api/jobs.py, resumed
after a crash). Auto-adaptation therefore runs where the job runner runs: a daemon with
a Cortex and the HTTP API enabled (`[api] enabled = false` turns it off as well).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from gd.genome import Decision, Gene
from gd.node.api.job_store import Job, JobStore, new_job_id
from gd.node.app.auto_adapt import AutoAdapter
from gd.node.app.auto_adapt_settings import AdaptationSettings

if TYPE_CHECKING:
    from gd.node.api.services import ApiServices


class JobStoreQueue:
    """`auto_adapt.JobQueue` over the API's job store."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def submit_adapt(self, gene: Gene, params: dict[str, Any], actor: str) -> str:
        job = Job(id=new_job_id(self.store.now_ms()), kind="adapt", gene_id=gene.id,
                  domain=gene.domain, actor=actor, params=params,
                  total=int(params["generations"]))
        return self.store.add(job).id

    def job_state(self, job_id: str) -> tuple[str, dict[str, Any]] | None:
        job = self.store.get(job_id)
        return None if job is None else (job.state, dict(job.result))


def attach_auto_adapt(daemon: Any, settings: AdaptationSettings) -> AutoAdapter | None:
    """The daemon's AutoAdapter, hooked into sync's apply path; None when there is no job
    runner (no Cortex, or the API disabled) or `[adaptation] auto = false`."""
    if daemon.api is None or daemon.cortex is None or not settings.auto:
        return None
    adapter = AutoAdapter(daemon.cortex, settings, JobStoreQueue(daemon.api.jobs),
                          clock=daemon.gate.clock)
    if daemon.sync is not None:
        daemon.sync.on_received = adapter.after_received
    return adapter


async def note_decisions(api: ApiServices, made: Sequence[Decision]) -> None:
    """After the API stored decisions (inline or in a job): queue adaptation of the
    vetoed genes, and wake the job runner when a job was queued."""
    adapter: AutoAdapter | None = getattr(api.daemon, "auto_adapt", None)
    if adapter is None or not made:
        return
    if await trio.to_thread.run_sync(adapter.after_decisions, made):
        api.runner.poke()
