"""Routes for durable jobs and the live event stream."""

from __future__ import annotations

from typing import Any, Final

from starlette.responses import StreamingResponse

from gd.node.api.events import TooManySubscribers
from gd.node.api.job_store import MAX_JOB_STATES, Job, JobError, new_job_id
from gd.node.api.jobs import check_webhook_url
from gd.node.api.problems import Problem
from gd.node.api.roles import Role
from gd.node.api.routing import Ctx, Param, Route, paged
from gd.node.api.states import parse_states, states_to_plain
from gd.node.api.views_genes import evaluation_options, visible_gene

MAX_WEBHOOK_SECRET: Final = 256


def _int(body: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise Problem(422, f"{name} must be an integer in [{lo}, {hi}]")
    return value


async def h_job_create(ctx: Ctx) -> Any:
    body = ctx.json()
    kind = body.get("kind")
    gene_id = body.get("gene_id")
    if kind not in ("evaluate", "adapt") or not isinstance(gene_id, str):
        raise Problem(422, 'a job needs kind ("evaluate" or "adapt") and gene_id')
    gene = visible_gene(ctx, gene_id)
    webhook = body.get("webhook")
    url, secret = "", ""
    if webhook is not None:
        if not isinstance(webhook, dict) or not isinstance(webhook.get("url"), str) or \
                not isinstance(webhook.get("secret"), str) or not webhook["secret"] or \
                len(webhook["secret"]) > MAX_WEBHOOK_SECRET:
            raise Problem(422, "webhook must be {url, secret} (a non-empty secret for the "
                               "HMAC-SHA256 signature)")
        try:
            check_webhook_url(webhook["url"], ctx.api.settings.webhook_hosts)
        except ValueError as exc:
            raise Problem(422, str(exc)) from None
        url, secret = webhook["url"], webhook["secret"]
    if kind == "evaluate":
        states = parse_states(body.get("states"), gene.domain, limit=MAX_JOB_STATES)
        params = {**evaluation_options(body), "states": states_to_plain(states)}
        total = len(states)
    else:
        raw = body.get("states")
        states = parse_states(raw, gene.domain, limit=MAX_JOB_STATES) if raw else []
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                                 or seed < 0):
            raise Problem(422, "seed must be a non-negative integer")
        from gd.motors import meristic  # the motors load on first use (ADR 0063)

        search = meristic.SearchConfig()
        params = {"population": _int(body, "population", search.population, 2,
                                     meristic.MAX_POPULATION),
                  "generations": _int(body, "generations", search.generations, 1,
                                      meristic.MAX_GENERATIONS),
                  "top": _int(body, "top", search.top, 1, search.retreat_size),
                  "seed": seed, "states": states_to_plain(states)}
        total = params["generations"]
    job = Job(id=new_job_id(ctx.api.now_ms()), kind=kind, gene_id=gene.id, domain=gene.domain,
              actor=ctx.principal.actor, params=params, total=total,
              webhook_url=url, webhook_secret=secret)
    job = await ctx.write(ctx.api.jobs.add, job)
    ctx.api.runner.poke()
    return job.to_json()


async def visible_job(ctx: Ctx) -> Job:
    job = await ctx.thread(ctx.api.jobs.get, ctx.path("job_id"))
    if job is None or not ctx.principal.sees_gene(job.gene_id, job.domain):
        raise Problem(404, f"no job {ctx.path('job_id')!r}")
    return job


async def h_jobs_list(ctx: Ctx) -> Any:
    state = ctx.query("state")
    offset, limit = ctx.page()
    jobs = await ctx.thread(ctx.api.jobs.list, state)
    rows = [j.to_json() for j in reversed(jobs)
            if ctx.principal.sees_gene(j.gene_id, j.domain)]
    return paged(rows, offset, limit)


async def h_job_show(ctx: Ctx) -> Any:
    return (await visible_job(ctx)).to_json()


async def h_job_result(ctx: Ctx) -> Any:
    job = await visible_job(ctx)
    if not job.finished:
        raise Problem(409, f"job {job.id} is {job.state}: no result yet",
                      extra={"state": job.state, "done": job.done, "total": job.total})
    return {"job": job.id, "state": job.state, "error": job.error, "result": job.result}


async def h_job_cancel(ctx: Ctx) -> Any:
    job = await visible_job(ctx)
    try:
        job = await ctx.write(ctx.api.jobs.cancel, job.id)
    except JobError as exc:
        raise Problem(409, str(exc)) from None
    return job.to_json()


async def h_events(ctx: Ctx) -> Any:
    kinds_text = ctx.query("kinds")
    kinds = frozenset(k for k in kinds_text.split(",") if k) if kinds_text else None
    try:
        stream = ctx.api.events.stream(ctx.principal, kinds)
        first = await stream.__anext__()  # subscribes now: a refusal is still a 503
    except TooManySubscribers as exc:
        raise Problem(503, str(exc), headers={"Retry-After": "10"}) from None

    async def body() -> Any:
        yield first
        async for chunk in stream:
            yield chunk

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"X-Accel-Buffering": "no"})


_JOB: Final = {"type": "object", "required": ["kind", "gene_id"], "properties": {
    "kind": {"type": "string", "enum": ["evaluate", "adapt"]},
    "gene_id": {"type": "string"},
    "states": {"type": "array", "items": {"$ref": "#/components/schemas/State"}},
    "seed": {"type": "integer", "minimum": 0}, "aggregate": {"type": "boolean"},
    "allow_pending": {"type": "boolean"}, "population": {"type": "integer"},
    "generations": {"type": "integer"}, "top": {"type": "integer"},
    "webhook": {"type": "object", "required": ["url", "secret"], "properties": {
        "url": {"type": "string"}, "secret": {"type": "string"}}}}}

ROUTES: Final = (
    Route("POST", "/v1/jobs", h_job_create, Role.OPERATOR,
          "Queue a big evaluation or an adaptation.", "jobs", body="json",
          body_schema=_JOB, status=202, errors=(404, 413, 422), mutating=True),
    Route("GET", "/v1/jobs", h_jobs_list, Role.VIEWER, "Jobs, newest first.", "jobs",
          query=(Param("state"), Param("offset", "integer"), Param("limit", "integer"))),
    Route("GET", "/v1/jobs/{job_id}", h_job_show, Role.VIEWER, "One job and its progress.",
          "jobs", errors=(404,)),
    Route("GET", "/v1/jobs/{job_id}/result", h_job_result, Role.VIEWER,
          "A finished job's result.", "jobs", errors=(404, 409)),
    Route("POST", "/v1/jobs/{job_id}/cancel", h_job_cancel, Role.OPERATOR, "Cancel a job.",
          "jobs", errors=(404, 409), mutating=True),
    Route("GET", "/v1/events", h_events, Role.VIEWER,
          "Live events (Server-Sent Events) in the caller's scope.", "events",
          query=(Param("kinds", description="comma-separated event kinds"),),
          media="text/event-stream", errors=(503,), streaming=True),
)
