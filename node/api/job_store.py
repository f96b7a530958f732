"""Durable jobs: the `api_jobs` sub-database of the Cortex.

A job is a big evaluation or an adaptation that would not fit in one HTTP request. Its
record holds everything needed to run it again from the start (gene, states, seed,
options), how far it got, and its result; it is written at every step, so `kill -9`
loses no job: at the next start every job found `running` is queued again and resumes
(node/api/jobs.py says how each kind avoids repeating work).

States: queued → running → succeeded | failed | cancelled. Job ids are time-ordered
(ms timestamp, then random bits), so a cursor walk lists jobs oldest first and the
runner picks the oldest queued one.
"""

from __future__ import annotations

import builtins
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

from gd.crdt.clock import Clock
from gd.genome import canonical
from gd.genome.errors import DecodeError
from gd.node.clock import SYSTEM_CLOCK
from gd.node.store.cortex import Cortex

JOBS_DB: Final = "api_jobs"
KINDS: Final = ("evaluate", "adapt")
STATES: Final = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED: Final = frozenset({"succeeded", "failed", "cancelled"})
# States per evaluation job: 10k turbofan states are ~2.5 MB in the record, rewritten at
# each progress step; a bigger batch is several jobs.
MAX_JOB_STATES: Final = 10_000
# Finished jobs kept; the oldest finished beyond this are pruned when a job is created.
MAX_KEPT_JOBS: Final = 10_000


class JobError(ValueError):
    """A job request or transition is refused (unknown job, already finished)."""


def new_job_id(now_ms: int) -> str:
    """16 hex digits of milliseconds then 8 random: sortable by creation time. The random
    part is `secrets` on purpose: a job id names a job in URLs, it must not be guessed."""
    return f"{now_ms:016x}{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    gene_id: str
    domain: str
    actor: str
    params: dict[str, Any]
    state: str = "queued"
    done: int = 0
    total: int = 0
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    created_ms: int = 0
    started_ms: int = 0
    finished_ms: int = 0
    attempts: int = 0
    cancel_requested: bool = False
    # Webhook: URL and HMAC secret (the secret is never shown back), delivery state.
    webhook_url: str = ""
    webhook_secret: str = ""
    webhook_attempts: int = 0
    webhook_delivered: bool = False
    webhook_error: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise JobError(f"unknown job kind {self.kind!r}: one of {', '.join(KINDS)}")
        if self.state not in STATES:
            raise JobError(f"unknown job state {self.state!r}")

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def to_plain(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_plain(cls, data: Any) -> Job:
        try:
            return cls(**data)
        except TypeError as exc:
            raise DecodeError(f"unreadable job record: {exc}") from None

    def to_json(self, *, with_params: bool = False) -> dict[str, Any]:
        """What the API shows: no secret, and the (possibly large) params on request."""
        data = self.to_plain()
        del data["webhook_secret"]
        if not with_params:
            params = data.pop("params")
            data["options"] = {k: v for k, v in params.items() if k != "states"}
            data["states"] = len(params.get("states", ()))
        data["progress"] = round(self.done / self.total, 4) if self.total else (
            1.0 if self.state == "succeeded" else 0.0)
        return data


class JobStore:
    """Jobs in one Cortex; every method is one LMDB transaction."""

    def __init__(self, cortex: Cortex, clock: Clock = SYSTEM_CLOCK) -> None:
        self.cortex = cortex
        # The daemon's injected clock stamps jobs; the system clock in the CLI.
        self.clock = clock
        self.db = cortex.open_db(JOBS_DB)

    def now_ms(self) -> int:
        return int(self.clock.wall() * 1000)

    def _put(self, txn: Any, job: Job) -> None:
        txn.put(job.id.encode(), canonical.encode(job.to_plain()), db=self.db)

    def add(self, job: Job) -> Job:
        job = replace(job, created_ms=job.created_ms or self.now_ms())

        def run(txn: Any) -> None:
            self._put(txn, job)
            self._prune(txn)

        self.cortex.write(run)
        return job

    def _prune(self, txn: Any) -> None:
        if txn.stat(self.db)["entries"] <= MAX_KEPT_JOBS:
            return
        finished = [key for key, raw in txn.cursor(db=self.db)
                    if canonical.decode(raw).get("state") in FINISHED]
        for key in finished[: max(0, len(finished) - MAX_KEPT_JOBS)]:
            txn.delete(key, db=self.db)

    def get(self, job_id: str) -> Job | None:
        with self.cortex.env.begin() as txn:
            raw = txn.get(job_id.encode(), db=self.db)
        return None if raw is None else Job.from_plain(canonical.decode(raw))

    def require(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job is None:
            raise JobError(f"no job {job_id!r}")
        return job

    def list(self, state: str | None = None) -> list[Job]:
        with self.cortex.env.begin() as txn:
            jobs = [Job.from_plain(canonical.decode(raw)) for _, raw in txn.cursor(db=self.db)]
        return [j for j in jobs if state is None or j.state == state]

    def update(self, job_id: str, change: Callable[[Job], Job]) -> Job:
        """Read, change and write one job in one transaction."""
        def run(txn: Any) -> Job:
            raw = txn.get(job_id.encode(), db=self.db)
            if raw is None:
                raise JobError(f"no job {job_id!r}")
            job = change(Job.from_plain(canonical.decode(raw)))
            self._put(txn, job)
            return job

        return self.cortex.write(run)

    def requeue_interrupted(self) -> builtins.list[Job]:  # `list` is a method here
        """At start: jobs a dead daemon left `running` go back to `queued` (they resume)."""
        def run(txn: Any) -> builtins.list[Job]:
            out = []
            for _, raw in txn.cursor(db=self.db):
                job = Job.from_plain(canonical.decode(raw))
                if job.state == "running":
                    out.append(replace(job, state="queued"))
            for job in out:
                self._put(txn, job)
            return out

        return self.cortex.write(run)

    def next_queued(self) -> Job | None:
        with self.cortex.env.begin() as txn:
            for _, raw in txn.cursor(db=self.db):
                data = canonical.decode(raw)
                if data.get("state") == "queued":
                    return Job.from_plain(data)
        return None

    def cancel(self, job_id: str) -> Job:
        """Queued: cancelled now. Running: flagged; the runner stops at its next step."""
        def change(job: Job) -> Job:
            if job.finished:
                raise JobError(f"job {job_id} is already {job.state}")
            if job.state == "queued":
                return replace(job, state="cancelled", finished_ms=self.now_ms(),
                               cancel_requested=True)
            return replace(job, cancel_requested=True)

        return self.update(job_id, change)
