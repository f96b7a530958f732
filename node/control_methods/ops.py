"""The node's write operations, each a function of a `WriteContext` returning plain data.

Why one definition: a command that changes a node is run by exactly one writer (the
daemon when it runs, else the CLI under the home's lock, ADR 0022), and both must store
and answer the same. Each `WriteOp` names what it touches (`FEED`: the change feed, so
the sync service hints peers; `POLICY`: agreements or the audit log, so the sovereignty
service delivers and queues tombstones); the daemon notifies those services after the
call instead of polling for the change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from gd.crdt.clock import Clock
from gd.genome.gene import Gene, GeneStatus
from gd.genome.state import StateVector
from gd.genome.synapse import Synapse, SynapseKind
from gd.ledger.chain import AppendReceipt
from gd.node.app.adaptation import AdaptationDesk
from gd.node.app.importer import DEFAULT_BATCH, import_genes
from gd.node.local import LocalNode
from gd.node.services.recorder import Queued, Receipt
from gd.node.store.audit import AuditLog, LedgerSink
from gd.node.store.policy_store import PolicyStore, rule_from_options
from gd.protocol.policy_rules import Direction, Effect, ResidencyRule, Subject

FEED: Final = "feed"
POLICY: Final = "policy"


class ReceiptSink(LedgerSink, Protocol):
    """A ledger sink that keeps the receipts of what one command recorded."""

    receipts: list[Receipt]


@dataclass
class Sovereignty:
    """The stores a sovereignty write needs: audit log, policies, ledger, adaptation."""

    audit: AuditLog
    store: PolicyStore
    ledger: ReceiptSink
    desk: AdaptationDesk


class WriteContext(Protocol):
    """Where a write runs: the node (its open Cortex and key) and its sovereignty stores
    (the daemon's own objects inside the daemon, fresh ones in the CLI)."""

    node: LocalNode
    # Time of the records a write stamps (token creation, job cancels): the daemon's
    # injected clock inside the daemon, the system clock in the CLI.
    clock: Clock

    def sovereignty(self) -> Sovereignty: ...


ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class WriteOp:
    run: Callable[..., Any]
    touches: frozenset[str]


def receipt_json(receipt: Receipt) -> dict[str, Any]:
    """A receipt for --json: status, and the index (committed) or the reason (queued)."""
    if isinstance(receipt, Queued):
        return receipt.to_json()
    assert isinstance(receipt, AppendReceipt)
    return {"status": receipt.status.value, "index": receipt.index,
            "entry_hash": receipt.entry_hash.hex(), "author": receipt.author,
            "idempotency_key": receipt.idempotency_key}


def gene_brief(gene: Gene, cp: float | None = None) -> dict[str, Any]:
    return {"id": gene.id, "domain": gene.domain, "name": gene.name, "version": gene.version,
            "status": str(gene.status), "origin": gene.origin, "action": gene.action,
            "condition": gene.condition_text(), "parents": list(gene.parents), "cp": cp}


# -- genes -------------------------------------------------------------------------------

def genes_import(ctx: WriteContext, *, path: str, pending: bool = False,
                 batch_size: int = DEFAULT_BATCH, progress: ProgressFn | None = None
                 ) -> dict[str, Any]:
    status = GeneStatus.ADAPTATION_PENDING if pending else GeneStatus.NATIVE
    report = import_genes(ctx.node.cortex, ctx.node.key, Path(path), batch_size=batch_size,
                          status=status, progress=progress)
    return report.to_plain()


def synapse_add(ctx: WriteContext, *, source: str, target: str, kind: str,
                weight: float) -> dict[str, Any]:
    synapse = Synapse(source, target, SynapseKind(kind), weight)
    ctx.node.cortex.add_synapse(synapse)
    return synapse.to_plain()


# -- adaptation --------------------------------------------------------------------------

def approve(ctx: WriteContext, *, gene_id: str, variant: str | None = None
            ) -> dict[str, Any]:
    s = ctx.sovereignty()
    before = len(s.ledger.receipts)
    changed = s.desk.approve(gene_id, variant)
    return {"genes": [gene_brief(g) for g in changed],
            "ledger": [receipt_json(r) for r in s.ledger.receipts[before:]]}


def reject(ctx: WriteContext, *, gene_id: str, reason: str) -> dict[str, Any]:
    return gene_brief(ctx.sovereignty().desk.reject(gene_id, reason))


def rollback(ctx: WriteContext, *, gene_id: str, to_version: int) -> dict[str, Any]:
    gene = ctx.sovereignty().desk.rollback(gene_id, to_version)
    return dict(gene_brief(gene), version_hash=gene.version_hash.hex())


def forget(ctx: WriteContext, *, gene_id: str) -> dict[str, Any]:
    return {"forgotten": gene_id, "tombstones_for": ctx.sovereignty().desk.forget(gene_id)}


# -- sharing -----------------------------------------------------------------------------

def share(ctx: WriteContext, *, target: str, domain: str, direction: str = "both",
          anonymize: bool = False, allow_forward: bool = False, deny: bool = False
          ) -> dict[str, Any]:
    rule = rule_from_options(target, domain, direction=direction, anonymize=anonymize,
                             allow_forward=allow_forward, deny=deny)
    s = ctx.sovereignty()
    touched = s.store.share(rule, ledger=s.ledger)
    return {"rule": rule.rule_id, "description": rule.describe(),
            "agreements": [a.to_json() for a in touched]}


def revoke(ctx: WriteContext, *, target: str, domain: str, direction: str | None = None,
           deny: bool = False) -> dict[str, Any]:
    s = ctx.sovereignty()
    removed = s.store.revoke(Subject.parse(target), domain,
                             direction=Direction(direction) if direction else None,
                             effect=Effect.DENY if deny else Effect.ALLOW, ledger=s.ledger)
    return {"removed": [r.rule_id for r in removed],
            "descriptions": [r.describe() for r in removed]}


def residency(ctx: WriteContext, *, domain: str, region: str, remove: bool = False
              ) -> bool:
    """Whether the residency rule changed."""
    return bool(ctx.sovereignty().store.set_residency(ResidencyRule(domain, region),
                                                      remove=remove))


# -- motors ------------------------------------------------------------------------------

def evaluate(ctx: WriteContext, *, gene_id: str, states: list[dict[str, Any]], seed: int,
             aggregate: bool = False, allow_pending: bool = False,
             request: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Stored decisions, as `Decision.to_plain` gives them."""
    from gd.motors.evaluate import EvaluationRequest  # the motors load on first use
    from gd.node.app import decisions as dec

    found = dec.evaluate_gene(ctx.node, gene_id, [StateVector.from_plain(s) for s in states],
                              seed=seed, aggregate=aggregate,
                              request=EvaluationRequest(**(request or {})),
                              allow_pending=allow_pending)
    return [d.to_plain() for d in found]


def experiences_add(ctx: WriteContext, *, gene_id: str, states: list[dict[str, Any]],
                    success: bool, reward: float | None = None, note: str = ""
                    ) -> dict[str, Any]:
    from gd.node.app import decisions as dec  # the motors load on first use

    recorded = [dec.record_experience(ctx.node, gene_id, StateVector.from_plain(s), success,
                                      reward, note) for s in states]
    gene = ctx.node.cortex.require_gene(gene_id)
    return {"experiences": [{"id": e.id, **e.to_plain()} for e in recorded],
            "successes": gene.successes, "failures": gene.failures}


def experiences_import(ctx: WriteContext, *, path: str, gene_id: str | None = None,
                       domain: str | None = None, limit: int | None = None
                       ) -> dict[str, Any]:
    """`path` is read by the writer: the CLI's absolute path (the daemon runs as the same
    user on the same machine: its control socket is 0600). `limit`: records kept per
    gene, `history_import.MAX_PER_GENE` when None."""
    from gd.node.app import history_import  # numpy and the motors load on first use

    if limit is None:
        limit = history_import.MAX_PER_GENE
    return history_import.import_history(ctx.node, Path(path), gene_id=gene_id,
                                         domain=domain, limit=limit).to_plain()


OPS: Final[dict[str, WriteOp]] = {
    "genes_import": WriteOp(genes_import, frozenset({FEED})),
    "synapse_add": WriteOp(synapse_add, frozenset({FEED})),
    "approve": WriteOp(approve, frozenset({FEED, POLICY})),
    "reject": WriteOp(reject, frozenset({FEED, POLICY})),
    "rollback": WriteOp(rollback, frozenset({FEED, POLICY})),
    "forget": WriteOp(forget, frozenset({FEED, POLICY})),
    "share": WriteOp(share, frozenset({POLICY})),
    "revoke": WriteOp(revoke, frozenset({POLICY})),
    "residency": WriteOp(residency, frozenset({POLICY})),
    "evaluate": WriteOp(evaluate, frozenset()),
    "experiences_add": WriteOp(experiences_add, frozenset({FEED})),
    "experiences_import": WriteOp(experiences_import, frozenset({FEED})),
}
# Operations that report progress (lines done) while they run.
STREAMING: Final = frozenset({"genes_import"})
