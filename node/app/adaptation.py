"""The adaptation workflow: received genes wait for a person before they act (issue 7).

A gene from a peer lands ``adaptation_pending``; M_M may grow local *variants* of it
(genes whose ``parents`` contain the original's id, also pending). A person then:

* **approves** the original: it becomes ``native``; its pending variants stay pending
  (each is its own candidate);
* **approves a variant**: the variant becomes ``native``, the original ``retired`` (kept
  for lineage and for the origin's later versions, but nothing acts on it), and the other
  still-pending variants of that original ``rejected`` (they were alternatives to the one
  chosen);
* **rejects** a pending gene: ``rejected`` with a reason;
* **rolls back** a gene to an earlier version: a NEW version with the earlier content
  that descends the current one (`Gene.edited`), so it syncs like any edit: the
  compensation step of the approve saga;
* **forgets** a gene (right to deletion): its content leaves the Cortex and the peers
  that received it are listed for tombstones.

Approve, reject and rollback each append an audit record and a ledger record (kinds as
in `gd.ledger.entry.EntryKind`: approve and reject are "promotion" entries whose summary
says the outcome, a rollback is a "revocation" of the approval). Status changes of one
step are stored in one Cortex transaction; the audit record follows it, then the ledger.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from gd.genome import canonical
from gd.genome.gene import Gene, GeneStatus
from gd.genome.identity import NodeKey
from gd.node.clock import hlc_now
from gd.node.store.audit import AuditKind, AuditLog, LedgerSink, idempotency_key
from gd.node.store.cortex import Cortex

# A rejection reason is for a person reading the audit log and the ledger summary (whose
# text fields stop at 256 characters).
MAX_REASON_LEN: Final = 256


class AdaptationError(ValueError):
    """The requested step does not apply to this gene (wrong status, unknown variant)."""


@dataclass(frozen=True)
class PendingView:
    """A pending gene beside its variants, each with its latest CP (None if unscored)."""

    original: Gene
    original_cp: float | None
    variants: tuple[tuple[Gene, float | None], ...]


def _summary_text(text: str) -> str:
    return text[:MAX_REASON_LEN]


class AdaptationDesk:
    """The workflow over one Cortex, writing to its audit log and a ledger sink."""

    def __init__(self, cortex: Cortex, key: NodeKey, ledger: LedgerSink,
                 audit: AuditLog | None = None) -> None:
        self.cortex = cortex
        self.key = key
        self.ledger = ledger
        self.audit = audit if audit is not None else AuditLog(cortex)

    # -- reading ------------------------------------------------------------------------
    def pending(self, domain: str | None = None) -> list[Gene]:
        return list(self.cortex.genes(domain=domain, status=GeneStatus.ADAPTATION_PENDING))

    def variants(self, gene: Gene) -> list[Gene]:
        """Local genes grown from `gene` (its id among their parents), any status."""
        return [g for g in self.cortex.genes(domain=gene.domain)
                if gene.id in g.parents and g.id != gene.id]

    def latest_cp(self, gene_id: str) -> float | None:
        latest = max(self.cortex.decisions(gene_id), key=lambda d: d.decided_at, default=None)
        return None if latest is None else latest.cp

    def show(self, gene_id: str) -> PendingView:
        gene = self.cortex.require_gene(gene_id)
        return PendingView(gene, self.latest_cp(gene.id),
                           tuple((v, self.latest_cp(v.id)) for v in self.variants(gene)))

    # -- steps ----------------------------------------------------------------------------
    def _require_pending(self, gene_id: str) -> Gene:
        gene = self.cortex.require_gene(gene_id)
        if gene.status is not GeneStatus.ADAPTATION_PENDING:
            raise AdaptationError(f"gene {gene_id} is {gene.status}, not adaptation_pending")
        return gene

    def _record(self, kind: str, action: str, gene: Gene, summary: dict[str, Any],
                detail: dict[str, Any]) -> None:
        self.audit.append(AuditKind.ADAPTATION, gene_id=gene.id, version_hash=gene.version_hash,
                          peer=gene.origin, detail={"action": action, **detail})
        payload = canonical.sha256(canonical.encode([action, gene.id, gene.version_hash,
                                                     sorted(detail.items())]))
        self.ledger.append(kind, payload, {
            "action": action, "gene": gene.id, "domain": gene.domain,
            "version": gene.version, "version_hash": gene.version_hash.hex(), **summary},
            idempotency_key(action, gene.id, gene.version_hash))

    def approve(self, gene_id: str, variant: str | None = None) -> list[Gene]:
        """Approve `gene_id`, or its `variant` in its place (module docstring); returns
        the genes whose status changed, the approved one first."""
        original = self._require_pending(gene_id)
        if variant is None:
            changed = [original.with_local(status=GeneStatus.NATIVE)]
        else:
            chosen = self._require_pending(variant)
            if gene_id not in chosen.parents:
                raise AdaptationError(f"gene {variant} is not a variant of {gene_id}")
            changed = [chosen.with_local(status=GeneStatus.NATIVE),
                       original.with_local(status=GeneStatus.RETIRED)]
            changed += [v.with_local(status=GeneStatus.REJECTED) for v in self.variants(original)
                        if v.id != variant and v.status is GeneStatus.ADAPTATION_PENDING]
        self.cortex.put_genes(changed)
        approved = changed[0]
        self._record("promotion", "approve", approved,
                     {"outcome": "native", "original": gene_id},
                     {"original": gene_id, "retired": len(changed) > 1,
                      "siblings_rejected": max(0, len(changed) - 2)})
        return changed

    def reject(self, gene_id: str, reason: str) -> Gene:
        if not reason.strip():
            raise AdaptationError("a rejection needs a reason")
        gene = self._require_pending(gene_id)
        rejected = gene.with_local(status=GeneStatus.REJECTED)
        self.cortex.put_genes([rejected])
        self._record("promotion", "reject", rejected,
                     {"outcome": "rejected", "reason": _summary_text(reason)},
                     {"reason": _summary_text(reason)})
        return rejected

    def rollback(self, gene_id: str, to_version: int, *, hlc: int | None = None) -> Gene:
        """A new version with the content of `to_version`, descending the current head."""
        current = self.cortex.require_gene(gene_id)
        if not 1 <= to_version < current.version:
            raise AdaptationError(f"gene {gene_id} is at version {current.version}; roll "
                                  f"back to one of 1..{current.version - 1}")
        earlier = self.cortex.get_gene_version(gene_id, to_version)
        if earlier is None:
            raise AdaptationError(f"version {to_version} of gene {gene_id} is not stored "
                                  "here (only versions this node received can be restored)")
        stamp = max(hlc_now() if hlc is None else hlc, current.hlc + 1)
        restored = current.edited(
            self.key, hlc=stamp, name=earlier.name, codons=earlier.codons,
            action=earlier.action, params=dict(earlier.params), purpose=earlier.purpose,
            scope=earlier.scope)
        self.cortex.put_gene(restored)
        self._record("revocation", "rollback", restored,
                     {"to_version": to_version, "from_version": current.version},
                     {"to_version": to_version, "from_version": current.version})
        return restored

    def forget(self, gene_id: str) -> list[str]:
        """Delete the gene's content here; returns the peers that received it (from the
        audit log) so the node can send them tombstones. The audit log keeps ids and
        hashes only, so nothing of the content remains."""
        gene = self.cortex.require_gene(gene_id)
        peers = self.audit.peers_sent(gene_id)
        self.cortex.delete_gene(gene_id)
        self.audit.append(AuditKind.FORGET, gene_id=gene_id, version_hash=gene.version_hash,
                          detail={"peers": len(peers)})
        return peers

    def mark_revoked(self, origin: str, domain: str) -> list[str]:
        """Honour a peer's revocation: its genes of `domain` (``*``: all) become
        ``revoked`` here, so nothing acts on them and nothing forwards them."""
        genes: Iterable[Gene] = self.cortex.genes(origin=origin)
        changed = [g.with_local(status=GeneStatus.REVOKED) for g in genes
                   if (domain == "*" or g.domain == domain) and g.status is not GeneStatus.REVOKED]
        if changed:
            self.cortex.put_genes(changed)
        self.audit.append(AuditKind.AGREEMENT, peer=origin, detail={
            "event": "revocation_honoured", "domain": domain, "genes": len(changed)})
        return [g.id for g in changed]
