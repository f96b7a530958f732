"""The CLI verbs the first API routes left out: rollback, forget, policy test, ledger
consistency proofs, adding experiences, and a decision as a PDF.

Each calls the same object its CLI command does (the adaptation desk, the policy store,
the ledger, gd.node.app.decisions) with the daemon's open Cortex, and each applies the
caller's scope the way node/api/auth.py says: a gene or decision outside it is 404.

The motors (`gd.motors.evaluate`, `gd.node.app.decisions`, numpy) are imported inside
the handlers that use them: this module is imported with the route table before the
daemon answers /healthz, and most daemons evaluate nothing for a while (ADR 0063).
"""

from __future__ import annotations

from typing import Any, Final

from starlette.responses import Response

from gd.genome.errors import ValidationError
from gd.ledger.errors import LedgerError
from gd.motors.errors import MotorInputError
from gd.node.api.problems import Problem
from gd.node.api.roles import Role
from gd.node.api.routing import Ctx, Param, Route
from gd.node.api.states import parse_states
from gd.node.api.views_genes import _brief, visible_decision, visible_gene
from gd.node.app.adaptation import AdaptationError
from gd.node.store.cortex import CortexError
from gd.protocol.policy_rules import PeerInfo, Subject, receivers

MAX_NOTE: Final = 1000
# A policy test against `org:X` or `region:R` explains the rule for each known peer of
# it; more than this many is an answer nobody reads.
MAX_POLICY_PEERS: Final = 256


async def h_rollback(ctx: Ctx) -> Any:
    gene = visible_gene(ctx, ctx.path("gene_id"))
    to_version = ctx.json().get("to_version")
    if isinstance(to_version, bool) or not isinstance(to_version, int) or to_version < 1:
        raise Problem(422, "to_version must be a version number (1 or more)")
    try:
        restored = await ctx.write(ctx.api.desk.rollback, gene.id, to_version)
    except (AdaptationError, CortexError) as exc:
        raise Problem(409, str(exc)) from None
    ctx.api.daemon.sync.notify_local_change()
    return {**_brief(restored, None), "version_hash": restored.version_hash.hex(),
            "restores": to_version}


async def h_forget(ctx: Ctx) -> Any:
    gene = visible_gene(ctx, ctx.path("gene_id"))
    try:
        peers = await ctx.write(ctx.api.desk.forget, gene.id)
    except (AdaptationError, CortexError) as exc:
        raise Problem(409, str(exc)) from None
    ctx.api.daemon.sync.notify_local_change()
    return {"forgotten": gene.id, "tombstones_for": peers}


def _receivers(ctx: Ctx, target: str, org: str | None, region: str | None
               ) -> list[PeerInfo]:
    """The peers a policy test is about (as `gd-node policy test` finds them)."""
    store = ctx.api.policies
    try:
        subject = Subject.parse(target)
    except (ValidationError, ValueError) as exc:
        raise Problem(422, f"with: {exc}") from None
    peers = receivers(store, subject, org, region)
    if not peers:
        raise Problem(404, f"no known peer matches {subject}; name a peer id (with org and "
                           "region for one not met yet)")
    return peers[:MAX_POLICY_PEERS]


async def h_policy_test(ctx: Ctx) -> Any:
    gene_id, target = ctx.query("gene"), ctx.query("with")
    if not gene_id or not target:
        raise Problem(400, "query parameters 'gene' and 'with' are required")
    gene = visible_gene(ctx, gene_id)
    org, region = ctx.query("org"), ctx.query("region")

    def run() -> list[dict[str, Any]]:
        policy = ctx.api.policies.policies()
        return [dict(policy.explain(gene, p.peer_id, p.org, p.region).to_plain(),
                     peer=p.peer_id) for p in _receivers(ctx, target, org, region)]

    try:
        return {"gene": gene.id, "results": await ctx.thread(run)}
    except ValidationError as exc:
        raise Problem(422, str(exc)) from None


async def h_ledger_consistency(ctx: Ctx) -> Any:
    ledger = ctx.api.ledger()
    old = ctx.query_int("old", -1, lo=0)
    if old < 0:
        raise Problem(400, "query parameter 'old' is required")
    new = ctx.query_int("new", 0, lo=0) or ledger.size

    def run() -> dict[str, Any]:
        proof = ledger.consistency_proof(old, new)
        return {"old_size": old, "new_size": new, "old_root": ledger.root(old).hex(),
                "new_root": ledger.root(new).hex(), "path": [h.hex() for h in proof.path]}

    try:
        return await ctx.thread(run)
    except (LedgerError, IndexError, ValueError) as exc:
        raise Problem(404, str(exc)) from None


async def h_experience_add(ctx: Ctx) -> Any:
    from gd.node.app import decisions as dec
    gene = visible_gene(ctx, ctx.path("gene_id"))
    body = ctx.json()
    state = parse_states([body.get("state")], gene.domain, limit=1)[0]
    success, reward, note = body.get("success"), body.get("reward"), body.get("note", "")
    if not isinstance(success, bool):
        raise Problem(422, "success must be true or false")
    if reward is not None and (isinstance(reward, bool) or not isinstance(reward, int | float)):
        raise Problem(422, "reward must be a number")
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise Problem(422, f"note must be text of at most {MAX_NOTE} characters")
    try:
        exp = await ctx.write(lambda: dec.record_experience(
            ctx.api.node, gene.id, state, success,
            None if reward is None else float(reward), note))
    except (dec.DecisionError, MotorInputError, ValidationError) as exc:
        raise Problem(422, str(exc)) from None
    return {"id": exp.id, **exp.to_plain()}


async def h_decision_pdf(ctx: Ctx) -> Any:
    # fpdf takes ~0.3-0.5 s to import: loaded on the first PDF asked for, not at start-up
    # (the daemon answers /healthz sooner, issue 15).
    from gd.node.api.decision_pdf import decision_pdf

    d = await ctx.thread(visible_decision, ctx, ctx.path("decision_id"))
    data = await ctx.thread(decision_pdf, d)
    return Response(data, media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="decision-{d.id[:16]}.pdf"'})


_EXPERIENCE: Final = {"type": "object", "required": ["state", "success"], "properties": {
    "state": {"$ref": "#/components/schemas/State"}, "success": {"type": "boolean"},
    "reward": {"type": "number"}, "note": {"type": "string"}}}

ROUTES: Final = (
    Route("POST", "/v1/genes/{gene_id}/rollback", h_rollback, Role.APPROVER,
          "Write a new version with the content of an earlier one.", "genes", body="json",
          body_schema={"type": "object", "required": ["to_version"],
                       "properties": {"to_version": {"type": "integer", "minimum": 1}}},
          errors=(403, 404, 409, 422), mutating=True),
    Route("DELETE", "/v1/genes/{gene_id}", h_forget, Role.ADMIN,
          "Forget a gene: delete its content here, list the peers owed tombstones.",
          "genes", errors=(403, 404, 409), mutating=True),
    Route("POST", "/v1/genes/{gene_id}/experiences", h_experience_add, Role.OPERATOR,
          "Record that applying the gene in a state succeeded or failed.", "genes",
          body="json", body_schema=_EXPERIENCE, errors=(403, 404, 422), mutating=True),
    Route("GET", "/v1/decisions/{decision_id}/pdf", h_decision_pdf, Role.VIEWER,
          "A decision as a PDF: inputs, each motor's score and explanation.", "decisions",
          media="application/pdf", errors=(404,)),
    Route("GET", "/v1/policy/test", h_policy_test, Role.VIEWER,
          "Would this gene go to that peer? The deciding rule and why.", "sovereignty",
          query=(Param("gene", required=True), Param("with", required=True,
                                                      description="PEER_ID, org:NAME or "
                                                                  "region:R"),
                 Param("org", description="assume this org for the peer"),
                 Param("region", description="assume this region for the peer")),
          errors=(404, 422)),
    Route("GET", "/v1/ledger/consistency", h_ledger_consistency, Role.VIEWER,
          "Consistency proof: the log of `new` entries extends the log of `old`.",
          "ledger", query=(Param("old", "integer", required=True),
                           Param("new", "integer", "default: the current size")),
          errors=(404,)),
)
