"""The node's administrative writes: API tokens, job cancels, pinned org keys, conflicts.

Why beside `ops`: these change the node as much as a gene import does (a token is a
credential the API checks, a pinned org key decides which peers are org members), so
they have one writer too (ADR 0022). `TRUST` marks the writes after which a running
daemon reloads its trust anchors and re-handshakes the peers whose membership they
decide; a daemon that read them only at start would keep trusting an org key the
operator had just removed.

`SERVICE_OPS` are writes whose daemon side is a service's own control method (the sync
service resolves conflicts in its store and announces them): the CLI runs the local
function only when no daemon runs, under the home's lock.
"""

from __future__ import annotations

from typing import Any, Final

from gd.genome.certificate import fingerprint, org_key_text, parse_org_key
from gd.node.api.job_store import JobStore
from gd.node.api.roles import Role
from gd.node.api.tokens import TokenStore
from gd.node.config import ConfigError
from gd.node.control_methods.ops import FEED, OPS, WriteContext, WriteOp
from gd.node.credentials import trust_org, untrust_org
from gd.node.store.sync_store import SyncStore, resolve_conflict

TRUST: Final = "trust"


def tokens_create(ctx: WriteContext, *, role: str, domains: list[str],
                  genes: list[str] | None = None, expires_in_s: int | None = None,
                  label: str = "") -> dict[str, Any]:
    """The new record and its secret (`token`), which only this answer ever carries."""
    store = TokenStore(ctx.node.cortex, ctx.clock)
    record, secret = store.create(Role.parse(role), tuple(domains), genes=tuple(genes or ()),
                                  expires_in_s=expires_in_s, label=label)
    return {**record.to_json(store.now_ms()), "token": secret}


def tokens_revoke(ctx: WriteContext, *, token_id: str) -> dict[str, Any]:
    """The API reads the record on every request: refused from its next one on."""
    store = TokenStore(ctx.node.cortex, ctx.clock)
    return store.revoke(token_id).to_json(store.now_ms())


def jobs_cancel(ctx: WriteContext, *, job_id: str) -> dict[str, Any]:
    """A queued job is cancelled now; a running one is flagged for its next step."""
    return JobStore(ctx.node.cortex, ctx.clock).cancel(job_id).to_json()


def org_trust(ctx: WriteContext, *, org: str, key: str) -> dict[str, Any]:
    """Pin `key` for `org` in HOME/trusted-orgs.toml."""
    try:
        raw = parse_org_key(key)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    trust_org(ctx.node.home.root, org, raw)
    return {"org": org, "key": org_key_text(raw), "fingerprint": fingerprint(raw)}


def org_untrust(ctx: WriteContext, *, org: str) -> bool:
    """Whether a key was pinned for `org` in HOME/trusted-orgs.toml (now removed)."""
    return untrust_org(ctx.node.home.root, org)


def conflicts_resolve(ctx: WriteContext, *, key: str, keep: str,
                      content: dict[str, Any] | None = None) -> dict[str, Any]:
    """The same answer as the sync service's `conflicts_resolve` control method."""
    gene = resolve_conflict(SyncStore(ctx.node.cortex), ctx.node.key, key, keep, content)
    return {"gene_id": gene.id, "version": gene.version,
            "version_hash": gene.version_hash.hex(), "vv": dict(gene.vv)}


ADMIN_OPS: Final[dict[str, WriteOp]] = {
    "tokens_create": WriteOp(tokens_create, frozenset()),
    "tokens_revoke": WriteOp(tokens_revoke, frozenset()),
    "jobs_cancel": WriteOp(jobs_cancel, frozenset()),
    "org_trust": WriteOp(org_trust, frozenset({TRUST})),
    "org_untrust": WriteOp(org_untrust, frozenset({TRUST})),
}
# Run by the CLI only with no daemon; the daemon's side is the sync service's method.
SERVICE_OPS: Final[dict[str, WriteOp]] = {
    "conflicts_resolve": WriteOp(conflicts_resolve, frozenset({FEED})),
}
# Every write the daemon registers as a control method.
WRITE_OPS: Final[dict[str, WriteOp]] = {**OPS, **ADMIN_OPS}
