"""Running durable jobs (node/api/job_store.py holds them): one at a time, in order.

Evaluation jobs run in chunks of CHUNK_STATES states; after each chunk the decisions
are stored and the job's progress written. When a daemon dies mid-chunk (kill -9), the
job is queued again at the next start and resumes at its recorded progress; the chunk
that was in flight may already have stored its decisions, so on a resumed attempt the
runner first looks for this job's decisions (same gene, same seed, decided after the job
was created, same state) and skips the states they cover: every state gets exactly one
decision however often the daemon dies.

Adaptation jobs call `gd.node.app.decisions.adapt_gene`, which checkpoints M_M's search
every generation; a resumed job picks the search up at its last generation.

When a job finishes, a webhook (when named) is POSTed its JSON with
`GD-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` (the scheme
Stripe uses: the timestamp inside the MAC stops replays), retried with exponential
backoff WEBHOOK_ATTEMPTS times, and the delivery state kept in the job.

The motors (`gd.motors.evaluate`, `gd.node.app.decisions`, numpy) are imported inside
the handlers that use them: this module is imported with the route table before the
daemon answers /healthz, and most daemons evaluate nothing for a while (ADR 0063).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections import Counter
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import trio

from gd.genome import StateVector
from gd.node.api.auto_adapt_jobs import note_decisions
from gd.node.api.job_store import Job

if TYPE_CHECKING:
    from gd.node.api.services import ApiServices

# States per step: small enough that a cancel or a kill loses little, big enough that
# the per-step fsyncs (decisions, ledger, progress) stay a small share of the work.
CHUNK_STATES: Final = 16
IDLE_POLL_S: Final = 1.0
WEBHOOK_ATTEMPTS: Final = 5
WEBHOOK_BACKOFF_S: Final = 1.0
WEBHOOK_TIMEOUT_S: Final = 10.0
SIGNATURE_HEADER: Final = "GD-Signature"


def sign_webhook(secret: str, body: bytes, t: int) -> str:
    mac = hmac.new(secret.encode(), str(t).encode() + b"." + body, hashlib.sha256)
    return f"t={t},v1={mac.hexdigest()}"


def check_webhook_url(url: str, allowed_hosts: tuple[str, ...]) -> None:
    """ValueError unless `url` is http(s) to an allow-listed host ([api] webhook_hosts)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("webhook must be an http:// or https:// URL")
    if parts.hostname not in allowed_hosts:
        raise ValueError(f"webhook host {parts.hostname!r} is not in [api] webhook_hosts")


def _state_key(state: StateVector) -> tuple[Any, ...]:
    return (state.entity, state.t, tuple(sorted(state.values.items())))


class JobRunner:
    """The daemon's job loop: `run()` until cancelled (supervised with the API)."""

    def __init__(self, api: ApiServices) -> None:
        self.api = api
        self.store = api.jobs
        self.wake = trio.Event()

    def poke(self) -> None:
        self.wake.set()

    async def run(self) -> None:
        await trio.to_thread.run_sync(self.store.requeue_interrupted)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._deliver_pending)
            while True:
                job = await trio.to_thread.run_sync(self.store.next_queued)
                if job is None:
                    with trio.move_on_after(IDLE_POLL_S):
                        await self.wake.wait()
                    self.wake = trio.Event()
                    continue
                finished = await self._run_one(job)
                if finished.webhook_url:
                    nursery.start_soon(self._deliver, finished)

    async def _update(self, job_id: str, **changes: Any) -> Job:
        return await trio.to_thread.run_sync(
            self.store.update, job_id, lambda j: dataclasses.replace(j, **changes))

    async def _run_one(self, job: Job) -> Job:
        job = await self._update(job.id, state="running", attempts=job.attempts + 1,
                                 started_ms=job.started_ms or self.api.now_ms())
        self.api.log.info("api.job_started", job=job.id, kind=job.kind, attempt=job.attempts)
        try:
            if job.kind == "evaluate":
                job = await self._evaluate(job)
            else:
                job = await self._adapt(job)
        except Exception as exc:  # the job failed, not the daemon
            self.api.log.warning("api.job_failed", job=job.id,
                                 error=f"{type(exc).__name__}: {exc}"[:300])
            job = await self._update(job.id, state="failed", error=str(exc)[:1000],
                                     finished_ms=self.api.now_ms())
        self.api.events.publish("job.finished", {"job": job.id, "state": job.state,
                                                 "kind": job.kind, "gene": job.gene_id},
                                domain=job.domain, gene_id=job.gene_id)
        return job

    def _cancelled(self, job_id: str) -> bool:
        job = self.store.get(job_id)
        return job is None or job.cancel_requested

    async def _finish_cancelled(self, job: Job) -> Job:
        return await self._update(job.id, state="cancelled",
                                  finished_ms=self.api.now_ms())

    # -- evaluate ----------------------------------------------------------------------
    async def _evaluate(self, job: Job) -> Job:
        from gd.motors.evaluate import EvaluationRequest
        from gd.node.app import decisions as dec
        p = job.params
        states = [StateVector(domain=job.domain, values=s["values"], entity=s["entity"],
                              t=s["t"]) for s in p["states"]]
        request = EvaluationRequest(**p.get("request", {}))
        node = self.api.node
        if p.get("aggregate"):
            if await trio.to_thread.run_sync(self._cancelled, job.id):
                return await self._finish_cancelled(job)
            async with self.api.write_lock:
                made = await trio.to_thread.run_sync(lambda: dec.evaluate_gene(
                    node, job.gene_id, states, seed=p["seed"], aggregate=True,
                    request=request, allow_pending=p.get("allow_pending", False)))
            await note_decisions(self.api, made)  # a veto queues adaptation (auto_adapt)
            return await self._update(job.id, state="succeeded", done=len(states),
                                      result=_summary([d.id for d in made], made),
                                      finished_ms=self.api.now_ms())
        gene_id, seed, pending = job.gene_id, p["seed"], p.get("allow_pending", False)
        ids: list[str] = list(job.result.get("decisions", []))
        verdicts: Counter[str] = Counter(job.result.get("verdicts", {}))
        done = job.done
        if job.attempts > 1:  # a resumed job: what did the interrupted chunk store?
            found = await trio.to_thread.run_sync(self._already_decided, job)
        else:
            found = {}
        while done < len(states):
            if await trio.to_thread.run_sync(self._cancelled, job.id):
                return await self._finish_cancelled(job)
            chunk = states[done:done + CHUNK_STATES]
            todo = [s for s in chunk if _state_key(s) not in found]
            for s in chunk:
                if _state_key(s) in found:
                    d_id, verdict = found.pop(_state_key(s))
                    ids.append(d_id)
                    verdicts[verdict] += 1
            if todo:
                async with self.api.write_lock:
                    made = await trio.to_thread.run_sync(lambda todo=todo: dec.evaluate_gene(
                        node, gene_id, todo, seed=seed, request=request,
                        allow_pending=pending))
                for d in made:
                    ids.append(d.id)
                    verdicts[d.verdict] += 1
                    self.api.events.publish("decision.made", {
                        "decision": d.id, "gene": d.gene_id, "verdict": d.verdict,
                        "cp": d.cp, "job": job.id}, domain=d.domain, gene_id=d.gene_id)
                await note_decisions(self.api, made)
            done += len(chunk)
            job = await self._update(job.id, done=done, result={
                "decisions": ids, "verdicts": dict(verdicts)})
            self.api.events.publish("job.progress", {"job": job.id, "done": done,
                                                     "total": len(states)},
                                    domain=job.domain, gene_id=job.gene_id)
        return await self._update(job.id, state="succeeded",
                                  finished_ms=self.api.now_ms())

    def _already_decided(self, job: Job) -> dict[tuple[Any, ...], tuple[str, str]]:
        """This job's decisions already stored (state key → (decision id, verdict)),
        beyond those its progress records: the chunk a killed daemon left in flight."""
        recorded = set(job.result.get("decisions", []))
        out: dict[tuple[Any, ...], tuple[str, str]] = {}
        for d in self.api.cortex.decisions(job.gene_id):
            if (d.seed == job.params["seed"] and (d.decided_at >> 16) >= job.created_ms
                    and len(d.states) == 1 and d.id not in recorded):
                out[_state_key(d.states[0])] = (d.id, d.verdict)
        return out

    # -- adapt -------------------------------------------------------------------------
    async def _adapt(self, job: Job) -> Job:
        from gd.node.app import decisions as dec
        p = job.params
        states = ([StateVector(domain=job.domain, values=s["values"], entity=s["entity"],
                               t=s["t"]) for s in p["states"]] if p.get("states") else None)
        stop = self.api.daemon.stop_event
        token = trio.lowlevel.current_trio_token()
        flags = {"cancel": False}

        def progress(generation: int, best: float) -> None:
            flags["cancel"] = self._cancelled(job.id)
            self.store.update(job.id, lambda j: dataclasses.replace(j, done=generation))
            trio.from_thread.run_sync(lambda: self.api.events.publish(
                "job.progress", {"job": job.id, "done": generation, "total": job.total,
                                 "best": best}, domain=job.domain, gene_id=job.gene_id),
                trio_token=token)

        def cancel() -> bool:
            return flags["cancel"] or stop.is_set()

        # Not under the write lock: a search takes minutes and writes only its own
        # checkpoints until the end; approvals must not wait for it.
        outcome = await trio.to_thread.run_sync(lambda: dec.adapt_gene(
            self.api.node, job.gene_id, population=p["population"],
            generations=p["generations"], seed=p.get("seed"), states=states,
            top=p["top"], progress=progress, cancel=cancel))
        if outcome.cancelled:
            if stop.is_set() and not flags["cancel"]:
                return job  # the daemon is stopping: left running, resumed at next start
            return await self._finish_cancelled(job)
        result = {"seed": outcome.seed, "states": outcome.states,
                  "generations_run": outcome.result.generations_run,
                  "resumed_from": outcome.result.resumed_from,
                  "variants": [g.id for g in outcome.genes], "existing": list(outcome.existing),
                  "decisions": [d.id for d in outcome.decisions]}
        return await self._update(job.id, state="succeeded", done=job.total, result=result,
                                  finished_ms=self.api.now_ms())

    # -- webhooks ----------------------------------------------------------------------
    async def _deliver_pending(self) -> None:
        """Deliveries a previous daemon did not finish (it died between tries)."""
        jobs = await trio.to_thread.run_sync(self.store.list)
        for job in jobs:
            if (job.finished and job.webhook_url and not job.webhook_delivered
                    and job.webhook_attempts < WEBHOOK_ATTEMPTS):
                await self._deliver(job)

    async def _deliver(self, job: Job) -> None:
        import httpx  # the client is only loaded when a job has a webhook

        body = json.dumps({"event": "job.finished", "job": job.to_json()},
                          sort_keys=True).encode()
        attempts = job.webhook_attempts
        error = ""
        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_S,
                                     follow_redirects=False) as client:
            while attempts < WEBHOOK_ATTEMPTS:
                if attempts:
                    await trio.sleep(WEBHOOK_BACKOFF_S * 2 ** (attempts - 1))
                attempts += 1
                t = int(self.api.clock.wall())
                try:
                    reply = await client.post(job.webhook_url, content=body, headers={
                        "Content-Type": "application/json",
                        SIGNATURE_HEADER: sign_webhook(job.webhook_secret, body, t),
                        "GD-Job": job.id})
                    if 200 <= reply.status_code < 300:
                        await self._update(job.id, webhook_attempts=attempts,
                                           webhook_delivered=True, webhook_error="")
                        return
                    error = f"HTTP {reply.status_code}"
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"[:300]
                await self._update(job.id, webhook_attempts=attempts, webhook_error=error)
        self.api.log.warning("api.webhook_failed", job=job.id, attempts=attempts, error=error)


def _summary(ids: list[str], made: list[Any]) -> dict[str, Any]:
    return {"decisions": ids, "verdicts": dict(Counter(d.verdict for d in made))}
