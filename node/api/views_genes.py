"""Routes for genes, evaluations, decisions and pending genes (the motors' side).

Scope rule (node/api/auth.py): a gene, or a decision about a gene, outside the caller's
scope answers 404 exactly like one that does not exist; lists leave such rows out.

The motors (`gd.motors.evaluate`, `gd.node.app.decisions`, numpy) are imported inside
the handlers that use them: this module is imported with the route table before the
daemon answers /healthz, and most daemons evaluate nothing for a while (ADR 0063).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from typing import Any, Final

import trio
from starlette.responses import Response

from gd.genome import Decision, Gene
from gd.genome.errors import ValidationError
from gd.genome.gene import GeneStatus
from gd.genome.gene_json import gene_json
from gd.motors.errors import MotorInputError
from gd.node.api.auto_adapt_jobs import note_decisions
from gd.node.api.problems import Problem
from gd.node.api.roles import Role
from gd.node.api.routing import Ctx, Param, Route, body_sha256, paged
from gd.node.api.states import parse_states
from gd.node.app.adaptation import AdaptationError
from gd.node.app.importer import import_genes
from gd.node.store.cortex import CortexError

SEED_MAX: Final = 2**63 - 1
UPLOAD_CHUNK: Final = 1 << 16
_STATUSES: Final = tuple(str(s) for s in GeneStatus)


def visible_gene(ctx: Ctx, gene_id: str) -> Gene:
    """The gene, or 404 when it is absent *or* outside the caller's scope."""
    gene = ctx.api.cortex.get_gene(gene_id)
    if gene is None or not ctx.principal.sees_gene(gene.id, gene.domain):
        raise Problem(404, f"no gene {gene_id!r}")
    return gene


def motor_problem(exc: Exception) -> Problem:
    return Problem(422, str(exc))


# -- genes -------------------------------------------------------------------------------
async def h_genes_list(ctx: Ctx) -> Any:
    domain, status, origin = ctx.query("domain"), ctx.query("status"), ctx.query("origin")
    if status is not None and status not in _STATUSES:
        raise Problem(400, f"status must be one of {', '.join(_STATUSES)}")
    offset, limit = ctx.page()
    who = ctx.principal

    def run() -> list[dict[str, Any]]:
        return [gene_json(g) for g in ctx.api.cortex.genes(domain=domain, status=status,
                                                           origin=origin)
                if who.sees_gene(g.id, g.domain)]

    return paged(await ctx.thread(run), offset, limit)


async def h_gene_show(ctx: Ctx) -> Any:
    gene = visible_gene(ctx, ctx.path("gene_id"))
    cortex = ctx.api.cortex
    data = gene_json(gene)
    data["versions"] = cortex.gene_versions(gene.id)
    data["synapses"] = [s.to_plain() for s in
                        cortex.synapses_of(gene.id) + cortex.synapses_of(gene.id, incoming=True)
                        if _synapse_visible(ctx, s.source, s.target)]
    return data


def _synapse_visible(ctx: Ctx, *ids: str) -> bool:
    for gid in ids:
        g = ctx.api.cortex.get_gene(gid)
        if g is None or not ctx.principal.sees_gene(g.id, g.domain):
            return False
    return True


async def h_gene_versions(ctx: Ctx) -> Any:
    gene = visible_gene(ctx, ctx.path("gene_id"))
    cortex = ctx.api.cortex
    out = []
    for v in cortex.gene_versions(gene.id):
        old = cortex.get_gene_version(gene.id, v)
        if old is not None:
            out.append(gene_json(old))
    return out


async def h_gene_synapses(ctx: Ctx) -> Any:
    gene = visible_gene(ctx, ctx.path("gene_id"))
    hops = ctx.query_int("hops", 1, lo=0, hi=4)
    near = ctx.api.cortex.neighbourhood(gene.id, hops)
    return {"gene": gene.id, "hops": hops,
            "neighbours": {gid: d for gid, d in sorted(near.items())
                           if _synapse_visible(ctx, gid)}}


async def h_genes_import(ctx: Ctx) -> Any:
    """A JSONL (or CSV with ?format=csv) file as the raw body, streamed to a private
    temporary file within the upload limit, then imported as the CLI does."""
    status = (GeneStatus.ADAPTATION_PENDING if ctx.query_bool("pending")
              else GeneStatus.NATIVE)
    suffix = ".csv" if ctx.query("format", "jsonl") == "csv" else ".jsonl"
    limit = ctx.api.settings.max_upload_bytes
    fd, name = tempfile.mkstemp(prefix="api-import-", suffix=suffix,
                                dir=ctx.api.daemon.home.root)  # mkstemp: mode 0600
    digest = body_sha256(b"")
    try:
        import hashlib

        sha = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            async for chunk in ctx.request.stream():
                size += len(chunk)
                if size > limit:
                    raise Problem(413, f"the upload is over the limit of {limit} bytes")
                sha.update(chunk)
                await trio.to_thread.run_sync(out.write, chunk)
        digest = sha.hexdigest()
        ctx.payload_hash = digest
        if size == 0:
            raise Problem(422, "the upload is empty: send JSONL, one gene per line")
        # Which domains does the file touch? Only those in the caller's scope may be
        # written: checked by importing into nothing first would cost a second pass, so
        # the file is read once here for its domains.
        domains = await ctx.thread(_file_domains, name)
        for domain in sorted(domains):
            ctx.principal.require_domain(domain, "importing genes")
        report = await ctx.write(lambda: import_genes(ctx.api.cortex, ctx.api.node.key,
                                                      _path(name), status=status))
    finally:
        os.unlink(name)
    ctx.api.daemon.sync.notify_local_change()
    return {"sha256": digest, **report.to_plain()}


def _path(name: str) -> Any:
    from pathlib import Path
    return Path(name)


def _file_domains(name: str) -> set[str]:
    from gd.node.app.import_lines import iter_specs

    return {item.domain for item in iter_specs(_path(name)) if not isinstance(item, tuple)}


# -- evaluate ----------------------------------------------------------------------------
def evaluation_options(body: dict[str, Any]) -> dict[str, Any]:
    """seed, aggregate, allow_pending and the Monte Carlo plan, checked."""
    from gd.motors.evaluate import EvaluationRequest
    seed = body.get("seed")
    if seed is None:
        seed = secrets.randbits(63)  # no seed asked for: unpredictable on purpose
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise Problem(422, f"seed must be an integer in [0, {SEED_MAX}]")
    plan = {k: body[k] for k in ("monte_carlo_n", "epsilon", "cap") if k in body}
    try:
        EvaluationRequest(**plan)
    except (MotorInputError, TypeError) as exc:
        raise Problem(422, f"evaluation plan: {exc}") from None
    for flag in ("aggregate", "allow_pending"):
        if not isinstance(body.get(flag, False), bool):
            raise Problem(422, f"{flag} must be true or false")
    return {"seed": seed, "aggregate": body.get("aggregate", False),
            "allow_pending": body.get("allow_pending", False), "request": plan}


async def h_evaluate(ctx: Ctx) -> Any:
    from gd.motors.evaluate import EvaluationRequest
    from gd.node.app import decisions as dec
    gene = visible_gene(ctx, ctx.path("gene_id"))
    body = ctx.json()
    inline = ctx.api.settings.inline_max_states
    states = parse_states(body.get("states"), gene.domain)
    if len(states) > inline:
        raise Problem(413, f"{len(states)} states; evaluations of more than {inline} run as "
                           "jobs: POST /v1/jobs with kind \"evaluate\"")
    opts = evaluation_options(body)
    try:
        # The audit record commits with the decisions (one fsync, not two): the
        # answer below is 200 once they are stored.
        made: list[Decision] = await ctx.write(lambda: dec.evaluate_gene(
            ctx.api.node, gene.id, states, seed=opts["seed"], aggregate=opts["aggregate"],
            request=EvaluationRequest(**opts["request"]), allow_pending=opts["allow_pending"],
            also=ctx.audit_in(200)))
    except (dec.DecisionError, MotorInputError, ValidationError) as exc:
        raise motor_problem(exc) from None
    ctx.recorded = True
    await note_decisions(ctx.api, made)  # a veto queues adaptation (auto_adapt)
    for d in made:
        ctx.api.events.publish("decision.made", {"decision": d.id, "gene": d.gene_id,
                                                 "verdict": d.verdict, "cp": d.cp},
                               domain=d.domain, gene_id=d.gene_id)
    return {"seed": opts["seed"], "decisions": [dec.decision_summary(d) for d in made]}


async def h_experiences(ctx: Ctx) -> Any:
    gene = visible_gene(ctx, ctx.path("gene_id"))
    exps = await ctx.thread(ctx.api.cortex.experiences_for, gene.id)
    return [{"id": e.id, **e.to_plain()} for e in sorted(exps, key=lambda e: (e.observed_at,
                                                                                e.id))]


# -- decisions ---------------------------------------------------------------------------
def _visible_decisions(ctx: Ctx, gene_id: str | None) -> list[Decision]:
    from gd.node.app import decisions as dec
    who = ctx.principal
    return [d for d in dec.list_decisions(ctx.api.cortex, gene_id)
            if who.sees_gene(d.gene_id, d.domain)]


async def h_decisions_list(ctx: Ctx) -> Any:
    from gd.node.app import decisions as dec
    gene_id = ctx.query("gene")
    if gene_id is not None:
        visible_gene(ctx, gene_id)
    offset, limit = ctx.page()
    found = await ctx.thread(_visible_decisions, ctx, gene_id)
    return paged([dec.decision_summary(d) for d in found], offset, limit)


def visible_decision(ctx: Ctx, decision_id: str) -> Decision:
    from gd.node.app import decisions as dec
    try:
        d = dec.get_decision(ctx.api.node, decision_id)
    except dec.DecisionError:
        raise Problem(404, f"no decision {decision_id!r}") from None
    if not ctx.principal.sees_gene(d.gene_id, d.domain):
        raise Problem(404, f"no decision {decision_id!r}")
    return d


async def h_decision_show(ctx: Ctx) -> Any:
    from gd.node.app import decisions as dec
    d = await ctx.thread(visible_decision, ctx, ctx.path("decision_id"))
    return dec.decision_full(d)


async def h_decision_replay(ctx: Ctx) -> Any:
    from gd.node.app import decisions as dec
    d = await ctx.thread(visible_decision, ctx, ctx.path("decision_id"))
    try:
        report = await ctx.thread(dec.replay_decision, ctx.api.node, d.id)
    except (dec.DecisionError, MotorInputError) as exc:
        raise motor_problem(exc) from None
    return {"decision": d.id, "exact": report.exact, "differences": list(report.differences),
            "notes": list(report.notes)}


async def h_decisions_export(ctx: Ctx) -> Any:
    from gd.node.app import decisions as dec
    fmt = ctx.query("format", "json")
    if fmt not in ("json", "csv"):
        raise Problem(400, "format must be json or csv")
    gene_id = ctx.query("gene")
    if gene_id is not None:
        visible_gene(ctx, gene_id)
    found = await ctx.thread(_visible_decisions, ctx, gene_id)
    if fmt == "csv":
        return Response(await ctx.thread(dec.decisions_csv, found), media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="decisions.csv"'})
    return [dec.decision_full(d) for d in found]


# -- pending -----------------------------------------------------------------------------
def _brief(gene: Gene, cp: float | None) -> dict[str, Any]:
    return {"id": gene.id, "domain": gene.domain, "name": gene.name, "version": gene.version,
            "status": str(gene.status), "origin": gene.origin, "action": gene.action,
            "condition": gene.condition_text(), "parents": list(gene.parents), "cp": cp}


async def h_pending_list(ctx: Ctx) -> Any:
    desk, who = ctx.api.desk, ctx.principal

    def run() -> list[dict[str, Any]]:
        return [_brief(g, desk.latest_cp(g.id)) for g in desk.pending(ctx.query("domain"))
                if who.sees_gene(g.id, g.domain)]

    return await ctx.thread(run)


async def h_pending_show(ctx: Ctx) -> Any:
    gene = visible_gene(ctx, ctx.path("gene_id"))
    view = await ctx.thread(ctx.api.desk.show, gene.id)
    return {"original": _brief(view.original, view.original_cp),
            "variants": [_brief(v, cp) for v, cp in view.variants
                         if ctx.principal.sees_gene(v.id, v.domain)]}


async def h_approve(ctx: Ctx) -> Any:
    gene = visible_gene(ctx, ctx.path("gene_id"))
    variant = ctx.json().get("variant")
    if variant is not None:
        if not isinstance(variant, str):
            raise Problem(422, "variant must be a gene id")
        visible_gene(ctx, variant)
    try:
        changed = await ctx.write(ctx.api.desk.approve, gene.id, variant)
    except (AdaptationError, CortexError) as exc:
        raise Problem(409, str(exc)) from None
    ctx.api.daemon.sync.notify_local_change()
    ctx.api.events.publish("gene.approved", {"gene": changed[0].id, "by": ctx.principal.actor},
                           domain=gene.domain, gene_id=changed[0].id)
    return [_brief(g, None) for g in changed]


async def h_reject(ctx: Ctx) -> Any:
    gene = visible_gene(ctx, ctx.path("gene_id"))
    reason = ctx.json().get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise Problem(422, "a rejection needs a reason: {\"reason\": \"...\"}")
    try:
        rejected = await ctx.write(ctx.api.desk.reject, gene.id, reason)
    except (AdaptationError, CortexError) as exc:
        raise Problem(409, str(exc)) from None
    ctx.api.events.publish("gene.rejected", {"gene": gene.id, "by": ctx.principal.actor},
                           domain=gene.domain, gene_id=gene.id)
    return _brief(rejected, None)


_PAGE = (Param("offset", "integer", "rows to skip"),
         Param("limit", "integer", "rows per page (at most 1000)"))
_REASON = {"type": "object", "required": ["reason"],
           "properties": {"reason": {"type": "string"}}}
_EVALUATE = {"type": "object", "required": ["states"], "properties": {
    "states": {"type": "array", "items": {"$ref": "#/components/schemas/State"}},
    "seed": {"type": "integer", "minimum": 0}, "aggregate": {"type": "boolean"},
    "allow_pending": {"type": "boolean"}, "monte_carlo_n": {"type": "integer"},
    "epsilon": {"type": "number"}, "cap": {"type": "integer"}}}

ROUTES: Final = (
    Route("GET", "/v1/genes", h_genes_list, Role.VIEWER, "List genes.", "genes",
          query=(Param("domain"), Param("status"), Param("origin"), *_PAGE)),
    Route("POST", "/v1/genes/import", h_genes_import, Role.OPERATOR,
          "Import genes from a streamed JSONL (or CSV) upload.", "genes",
          query=(Param("format", description="jsonl (default) or csv"),
                 Param("pending", "boolean", "import as adaptation_pending")),
          body="upload", media="application/json", errors=(403, 413, 422), mutating=True),
    Route("GET", "/v1/genes/{gene_id}", h_gene_show, Role.VIEWER,
          "Show a gene with its versions and synapses.", "genes", errors=(404,)),
    Route("GET", "/v1/genes/{gene_id}/versions", h_gene_versions, Role.VIEWER,
          "Every stored version of a gene.", "genes", errors=(404,)),
    Route("GET", "/v1/genes/{gene_id}/synapses", h_gene_synapses, Role.VIEWER,
          "Genes within k synapse hops.", "genes",
          query=(Param("hops", "integer", "0 to 4, default 1"),), errors=(404,)),
    Route("GET", "/v1/genes/{gene_id}/experiences", h_experiences, Role.VIEWER,
          "Experiences recorded for a gene.", "genes", errors=(404,)),
    Route("POST", "/v1/genes/{gene_id}/evaluate", h_evaluate, Role.OPERATOR,
          "Evaluate a gene inline on a few states.", "evaluate", body="json",
          body_schema=_EVALUATE, errors=(404, 413, 422), mutating=True),
    Route("GET", "/v1/decisions", h_decisions_list, Role.VIEWER, "List decisions.",
          "decisions", query=(Param("gene"), *_PAGE)),
    Route("GET", "/v1/decisions/export", h_decisions_export, Role.VIEWER,
          "Export decisions as JSON or CSV.", "decisions",
          query=(Param("format", description="json or csv"), Param("gene")),
          media="application/json, text/csv"),
    Route("GET", "/v1/decisions/{decision_id}", h_decision_show, Role.VIEWER,
          "Show a decision with all its inputs.", "decisions", errors=(404,)),
    Route("POST", "/v1/decisions/{decision_id}/replay", h_decision_replay, Role.VIEWER,
          "Re-run a decision from its stored inputs.", "decisions", errors=(404, 422)),
    Route("GET", "/v1/pending", h_pending_list, Role.VIEWER,
          "Genes waiting for approval.", "pending", query=(Param("domain"),)),
    Route("GET", "/v1/pending/{gene_id}", h_pending_show, Role.VIEWER,
          "A pending gene beside its variants.", "pending", errors=(404,)),
    Route("POST", "/v1/pending/{gene_id}/approve", h_approve, Role.APPROVER,
          "Approve a pending gene (or a variant in its place).", "pending", body="json",
          body_schema={"type": "object", "properties": {"variant": {"type": "string"}}},
          errors=(403, 404, 409), mutating=True),
    Route("POST", "/v1/pending/{gene_id}/reject", h_reject, Role.APPROVER,
          "Reject a pending gene.", "pending", body="json", body_schema=_REASON,
          errors=(403, 404, 409, 422), mutating=True),
)
