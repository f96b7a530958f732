"""Routes for the node as a whole: status, peers, sync, conflicts, the ledger, the audit
log and agreements. Where the daemon already answers a control method (`status`,
`peers`, `sync_now`, `conflicts_resolve`, `ledger_status`), the route calls that same
method in-process, so the socket and the API cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.responses import Response

from gd.genome.errors import ValidationError
from gd.genome.gene_json import gene_json
from gd.ledger.errors import LedgerError
from gd.node.api.problems import Problem
from gd.node.api.roles import Role
from gd.node.api.routing import Ctx, Param, Route
from gd.node.store.audit import EXPORT_FORMATS, AuditError
from gd.node.store.cortex import CortexError
from gd.node.store.policy_store import rule_from_options
from gd.node.store.sync_store import UnknownGene
from gd.protocol.policy_rules import Direction, Effect, Subject
from gd.protocol.sovereignty_agreements import ProposalError


async def control(ctx: Ctx, method: str, **params: Any) -> Any:
    """Call one of the daemon's control methods in-process; its errors become 4xx."""
    reply = await ctx.api.daemon.methods.dispatch({"method": method, "params": params})
    if not reply["ok"]:
        error = str(reply["error"])
        kind = error.partition(":")[0]
        status = 404 if kind in ("UnknownGene", "KeyError", "LookupError") else (
            422 if kind in ("ValueError", "ValidationError") else 409)
        raise Problem(status, error)
    return reply["result"]


async def h_status(ctx: Ctx) -> Any:
    data = await control(ctx, "status")
    data["api"] = {"url": ctx.api.daemon.api_url, "caller": ctx.principal.to_json()}
    return data


async def h_peers(ctx: Ctx) -> Any:
    return await control(ctx, "peers", all=ctx.query_bool("all"))


async def h_sync_now(ctx: Ctx) -> Any:
    body = ctx.json()
    peer, repair = body.get("peer"), body.get("repair", False)
    if (peer is not None and not isinstance(peer, str)) or not isinstance(repair, bool):
        raise Problem(422, "peer must be a peer id, repair true or false")
    return await control(ctx, "sync_now", peer=peer, repair=repair)


# -- conflicts ---------------------------------------------------------------------------
def conflict_json(c: Any) -> dict[str, Any]:
    local, remote = gene_json(c.local), gene_json(c.remote)
    skip = {"version_hash", "signature", "status", "successes", "failures"}
    return {"key": c.key, "gene_id": c.gene_id, "sender": c.sender, "queued_at": c.queued_at,
            "domain": c.local.domain,
            "differs": sorted(k for k in local if k not in skip and local[k] != remote.get(k)),
            "local": local, "remote": remote}


async def h_conflicts_list(ctx: Ctx) -> Any:
    queued = await ctx.thread(ctx.api.daemon.sync.store.conflicts)
    return [conflict_json(c) for c in queued
            if ctx.principal.sees_gene(c.gene_id, c.local.domain)]


async def _visible_conflict(ctx: Ctx, key: str) -> Any:
    try:
        c = await ctx.thread(ctx.api.daemon.sync.store.conflict, key)
    except (UnknownGene, CortexError) as exc:
        raise Problem(404, str(exc)) from None
    if not ctx.principal.sees_gene(c.gene_id, c.local.domain):
        raise Problem(404, f"no conflict {key!r} in the queue")
    return c


async def h_conflict_show(ctx: Ctx) -> Any:
    return conflict_json(await _visible_conflict(ctx, ctx.path("key")))


async def h_conflict_resolve(ctx: Ctx) -> Any:
    c = await _visible_conflict(ctx, ctx.path("key"))
    body = ctx.json()
    keep = body.get("keep")
    content = body.get("content")
    if keep not in ("local", "remote", "file") or (keep == "file") != isinstance(content,
                                                                                   dict):
        raise Problem(422, 'keep must be "local", "remote", or "file" with a content object')
    async with ctx.api.write_lock:
        return await control(ctx, "conflicts_resolve", key=c.key, keep=keep, content=content)


# -- ledger ------------------------------------------------------------------------------
def _pinned(ctx: Ctx) -> frozenset[str]:
    cfg = ctx.api.daemon.cfg
    return frozenset(cfg.ledger_voters) if cfg.ledger_voters else frozenset(
        {ctx.api.daemon.key.peer_id})


async def h_ledger_head(ctx: Ctx) -> Any:
    ledger = ctx.api.ledger()
    size = ledger.size
    head = ledger.latest_head()
    return {"size": size, "root": ledger.root(size).hex(),
            "signed_head": head.to_json() if head is not None else None,
            "region": await control(ctx, "ledger_status")}


async def h_ledger_verify(ctx: Ctx) -> Any:
    trusted = _pinned(ctx)
    report = await ctx.thread(lambda: ctx.api.ledger().verify(trusted, require_head=True))
    return {**report.to_json(), "pinned_signers": sorted(trusted)}


async def h_ledger_proof(ctx: Ctx) -> Any:
    ledger = ctx.api.ledger()
    index = ctx.query_int("index", -1, lo=0)
    if index < 0:
        raise Problem(400, "query parameter 'index' is required")
    size = ctx.query_int("size", 0, lo=0) or None
    try:
        proof = ledger.inclusion_proof(index, size)
        return {"index": index, "size": proof.size, "leaf_hash": ledger.leaf_hash(index).hex(),
                "root": ledger.root(proof.size).hex(), "path": [h.hex() for h in proof.path]}
    except (LedgerError, IndexError, ValueError) as exc:
        raise Problem(404, str(exc)) from None


async def h_ledger_entries(ctx: Ctx) -> Any:
    offset, limit = ctx.page()
    ledger = ctx.api.ledger()

    def run() -> list[dict[str, Any]]:
        return [e.to_json() for e in ledger.entries(offset, min(ledger.size, offset + limit))]

    return {"total": ledger.size, "offset": offset, "limit": limit,
            "items": await ctx.thread(run)}


# -- audit -------------------------------------------------------------------------------
async def h_audit_verify(ctx: Ctx) -> Any:
    try:
        return (await ctx.thread(ctx.api.audit.verify)).to_json()
    except AuditError as exc:
        raise Problem(409, str(exc)) from None


async def h_audit_export(ctx: Ctx) -> Any:
    fmt = ctx.query("format", "json")
    if fmt not in EXPORT_FORMATS:
        raise Problem(400, f"format must be one of {', '.join(EXPORT_FORMATS)}")
    since = ctx.query_int("since", 0) or None
    text = await ctx.thread(ctx.api.audit.export, fmt, since)
    return Response(text, media_type="text/csv" if fmt == "csv" else "application/json")


# -- agreements --------------------------------------------------------------------------
async def h_agreements(ctx: Ctx) -> Any:
    rows = await ctx.thread(ctx.api.policies.agreements)
    return [a.to_json() for a in rows
            if (a.domain == "*" and ctx.principal.all_domains)
            or (a.domain != "*" and ctx.principal.sees_domain(a.domain))]


async def h_share(ctx: Ctx) -> Any:
    body = ctx.json()
    try:
        rule = rule_from_options(str(body.get("with", "")), str(body.get("domain", "")),
                                 direction=str(body.get("direction", "both")),
                                 anonymize=bool(body.get("anonymize", False)),
                                 allow_forward=bool(body.get("allow_forward", False)),
                                 deny=bool(body.get("deny", False)))
    except (ValidationError, ValueError) as exc:
        raise Problem(422, str(exc)) from None
    if rule.domain == "*" and not ctx.principal.all_domains:
        raise Problem(403, "sharing every domain needs a credential scoped to *")
    if rule.domain != "*":
        ctx.principal.require_domain(rule.domain, "sharing")
    sov = ctx.api.daemon.sovereignty
    try:
        touched = await ctx.write(lambda: ctx.api.policies.share(rule, ledger=sov.ledger))
    except (ProposalError, ValidationError) as exc:
        raise Problem(409, str(exc)) from None
    sov.policy_changed()
    return {"rule": rule.rule_id, "description": rule.describe(),
            "agreements": [a.to_json() for a in touched]}


async def h_revoke(ctx: Ctx) -> Any:
    body = ctx.json()
    domain = str(body.get("domain", ""))
    try:
        subject = Subject.parse(str(body.get("with", "")))
        direction = Direction(body["direction"]) if body.get("direction") else None
    except (ValidationError, ValueError) as exc:
        raise Problem(422, str(exc)) from None
    if domain == "*" and not ctx.principal.all_domains:
        raise Problem(403, "revoking every domain needs a credential scoped to *")
    if domain != "*":
        ctx.principal.require_domain(domain, "revoking")
    sov = ctx.api.daemon.sovereignty
    effect = Effect.DENY if body.get("deny") else Effect.ALLOW
    try:
        removed = await ctx.write(lambda: ctx.api.policies.revoke(
            subject, domain, direction=direction, effect=effect, ledger=sov.ledger))
    except (ProposalError, ValidationError) as exc:
        raise Problem(409, str(exc)) from None
    if not removed:
        raise Problem(404, f"no rule for {domain} with {subject}")
    sov.policy_changed()
    return {"removed": [r.rule_id for r in removed]}


_SHARE: Final = {"type": "object", "required": ["with", "domain"], "properties": {
    "with": {"type": "string", "description": "PEER_ID, org:NAME or region:R"},
    "domain": {"type": "string"}, "direction": {"type": "string"},
    "anonymize": {"type": "boolean"}, "allow_forward": {"type": "boolean"},
    "deny": {"type": "boolean"}}}

ROUTES: Final = (
    Route("GET", "/v1/status", h_status, Role.VIEWER, "Identity, peers, ledger and sync.",
          "node"),
    Route("GET", "/v1/peers", h_peers, Role.VIEWER, "Connected (or all known) peers.", "node",
          query=(Param("all", "boolean", "include known, unconnected peers"),)),
    Route("POST", "/v1/sync", h_sync_now, Role.OPERATOR, "Sync with peers now.", "sync",
          body="json", body_schema={"type": "object", "properties": {
              "peer": {"type": "string"}, "repair": {"type": "boolean"}}}, mutating=True),
    Route("GET", "/v1/conflicts", h_conflicts_list, Role.VIEWER, "Queued conflicts.", "sync"),
    Route("GET", "/v1/conflicts/{key}", h_conflict_show, Role.VIEWER,
          "Both versions of one conflict.", "sync", errors=(404,)),
    Route("POST", "/v1/conflicts/{key}/resolve", h_conflict_resolve, Role.APPROVER,
          "Settle a conflict.", "sync", body="json", body_schema={
              "type": "object", "required": ["keep"], "properties": {
                  "keep": {"type": "string", "enum": ["local", "remote", "file"]},
                  "content": {"type": "object"}}},
          errors=(403, 404, 409, 422), mutating=True),
    Route("GET", "/v1/ledger/head", h_ledger_head, Role.VIEWER,
          "Size, root, signed head and Raft role.", "ledger"),
    Route("GET", "/v1/ledger/verify", h_ledger_verify, Role.VIEWER,
          "Recompute the chain, signatures and roots.", "ledger"),
    Route("GET", "/v1/ledger/proof", h_ledger_proof, Role.VIEWER,
          "Inclusion proof of one entry.", "ledger",
          query=(Param("index", "integer", required=True), Param("size", "integer")),
          errors=(404,)),
    Route("GET", "/v1/ledger/entries", h_ledger_entries, Role.VIEWER, "Ledger entries.",
          "ledger", query=(Param("offset", "integer"), Param("limit", "integer"))),
    Route("GET", "/v1/audit/verify", h_audit_verify, Role.ADMIN,
          "Recompute the audit log's hash chain.", "audit"),
    Route("GET", "/v1/audit/export", h_audit_export, Role.ADMIN,
          "The audit log as JSON or CSV.", "audit",
          query=(Param("format", description="json or csv"),
                 Param("since", "integer", "ms since the epoch")),
          media="application/json, text/csv"),
    Route("GET", "/v1/agreements", h_agreements, Role.VIEWER,
          "Agreements in the caller's scope.", "sovereignty"),
    Route("POST", "/v1/share", h_share, Role.ADMIN, "Share a domain with a subject.",
          "sovereignty", body="json", body_schema=_SHARE, errors=(403, 409, 422),
          mutating=True),
    Route("POST", "/v1/revoke", h_revoke, Role.ADMIN, "Stop sharing a domain.",
          "sovereignty", body="json", body_schema=_SHARE, errors=(403, 404, 409, 422),
          mutating=True),
)
