"""Sovereignty's per-peer sync views: the `SenderView` / `ReceiverView` of
`gd.node.services.sync_views` that enforce share policies and write the audit trail.

The sender view serves one receiver through an `OutboundFilter` (it may send a derived,
anonymised gene) and writes one `gene_sent` record per gene once a batch is final, before
it is sent;
the receiver view takes genes through an `InboundFilter` and writes `gene_received` /
`gene_refused` records in the transaction that applies its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from gd.genome.gene import Gene, ShareScope
from gd.protocol.policy_rules import PeerInfo
from gd.protocol.reconcile import ItemSet
from gd.protocol.sovereignty import (
    InboundFilter,
    OutboundFilter,
    PolicySet,
    SentGene,
    ShareDecision,
)
from gd.protocol.sovereignty_anonymise import derive_for
from gd.protocol.sync import FeedReader, RejectedGene

if TYPE_CHECKING:
    from gd.node.services.sovereignty_service import SovereigntyService
    from gd.node.store.lmdb_tables import Txn


# Distinct kinds of gene (`_item_form`) whose decision one view remembers.
MAX_DECISIONS: Final = 4096


def echo_free_feed(service: SovereigntyService, receiver: PeerInfo) -> FeedReader:
    """The feed reader this receiver's view reads: the store's own, passing the versions
    the receiver authored as None, undecoded and unjudged (`SyncStore.read_feed`'s
    `skip_author`). They are what `sync_serve.feed_policy` drops as echoes anyway, so the
    batch is the same; a receiver that had just pulled 100k genes from us no longer
    makes us decode and judge each of them again (issue 15, ADR 0048). A reader wrapped
    around the store's (tests inject faults that way) is read as it is."""
    sync = service.sync
    if sync.read_feed == sync.store.read_feed:
        return partial(sync.store.read_feed, skip_author=receiver.peer_id)
    return sync.read_feed


class SovereignSenderView:
    """`SenderView` for one receiver: `OutboundFilter` for the feed, the same decision
    (on a policy snapshot) for reconciliation items and fetches; writes `gene_sent`
    records once a batch is final, before it is sent."""

    def __init__(self, service: SovereigntyService, receiver: PeerInfo) -> None:
        self.receiver = receiver
        self._service = service
        self._filter = OutboundFilter(service.store.policies, receiver, service.key,
                                      service.secret, echo_free_feed(service, receiver))
        self._snapshot: PolicySet | None = None
        self._cleared: dict[bytes, SentGene] = {}
        self._decisions: dict[tuple[Any, ...], ShareDecision] = {}  # `_item_form`

    def read_feed(self, since: int, limit: int) -> Any:
        return self._filter.read_feed(since, limit)

    def policy(self, receiver: str, gene: Gene) -> bool:
        return self._filter.policy(receiver, gene)

    def outgoing(self, gene: Gene) -> Gene | None:
        if self._snapshot is None:  # one policy read per conversation, not per gene
            self._snapshot = self._service.store.policies()
        r = self.receiver
        decision = self._snapshot.allowed_to_send(gene, r.peer_id, r.org, r.region)
        if not decision.allowed:
            return None
        out = gene
        if decision.anonymize or decision.scope != gene.scope:
            svc = self._service
            out = derive_for(gene, r.peer_id, svc.key, svc.secret,
                             anonymize=decision.anonymize, scope=decision.scope or ShareScope())
        self._cleared[out.version_hash] = SentGene(gene, out, decision)
        return out

    def repair_items(self) -> ItemSet:
        """The items a repair round names to this receiver, from the service's
        per-peer cache (`sovereignty_repair`: only genes changed since are judged)."""
        if self._snapshot is None:
            self._snapshot = self._service.store.policies()
        return self._service.repair_items.item_set(self.receiver, self._snapshot,
                                                   self._item_form)

    def _item_form(self, gene: Gene) -> Gene | None:
        """`outgoing` for naming items only: nothing is cleared for sending (a fetch
        judges again), and the decision is reused for every gene that looks the same
        to the policy (status, author, origin, scope, domain: all `allowed_to_send`
        reads besides the explanation's wording), so a full pass over many genes
        evaluates the rules once per kind of gene, not once per gene."""
        if self._snapshot is None:
            self._snapshot = self._service.store.policies()
        key = (gene.status, gene.author, gene.origin, gene.scope, gene.domain)
        decision = self._decisions.get(key)
        if decision is None:
            r = self.receiver
            decision = self._snapshot.allowed_to_send(gene, r.peer_id, r.org, r.region)
            if len(self._decisions) < MAX_DECISIONS:
                self._decisions[key] = decision
        if not decision.allowed:
            return None
        if decision.anonymize or decision.scope != gene.scope:
            svc = self._service
            return derive_for(gene, self.receiver.peer_id, svc.key, svc.secret,
                              anonymize=decision.anonymize,
                              scope=decision.scope or ShareScope())
        return gene

    def derived_source(self, version_hash: bytes) -> str | None:
        """The gene whose form named to this receiver has this hash (a fetch of a
        derived form finds its source without searching every head)."""
        return self._service.repair_items.gene_of(self.receiver.peer_id, version_hash)

    def finish_batch(self, extra: Sequence[Gene] = ()) -> int:
        sent = self._filter.take_sent()
        sent += [self._cleared[g.version_hash] for g in extra
                 if g.version_hash in self._cleared]
        self._cleared.clear()
        return self._service.audit.record_sent(self.receiver.peer_id, sent)


class SovereignReceiverView:
    """`ReceiverView` for one sender: `InboundFilter` on a policy snapshot taken once per
    batch; writes `gene_received` / `gene_refused` records in the transaction that
    applies the batch (`audit_in`), or after it (`finish_batch`) for callers that
    apply without one."""

    def __init__(self, service: SovereigntyService, sender: PeerInfo) -> None:
        self.sender = sender
        self._service = service
        self._snapshot: PolicySet | None = None
        self._filter = InboundFilter(self._policies, sender)

    def _policies(self) -> PolicySet:
        if self._snapshot is None:
            self._snapshot = self._service.store.policies()
        return self._snapshot

    def accept(self, gene: Gene) -> bool:
        return self._filter.accept(gene)

    def begin_batch(self) -> None:
        """A new batch is judged on the policy as it stands now. The puller's group
        commit audits (`finish_batch`) only once per group of batches, so without this
        a group's later batches were judged on the snapshot of its first: a consent or
        a revocation made meanwhile went unseen (tests/sim/fedsim.py, seed 6)."""
        self._snapshot = None

    def _judged(self, refused_on_apply: Sequence[RejectedGene]
                ) -> tuple[list[tuple[Gene, ShareDecision]], list[tuple[Gene, ShareDecision]]]:
        """(accepted, refused) of the genes judged since the last `finish_batch`: what
        the store refused after our filter accepted it counts as refused, with the
        store's reason (never as received). Reads the view; changes nothing."""
        why = {r.gene_id: r.reason for r in refused_on_apply}
        accepted: list[tuple[Gene, ShareDecision]] = []
        refused: list[tuple[Gene, ShareDecision]] = list(self._filter.refused)
        for gene, decision in self._filter.accepted:
            if gene.id in why:
                refused.append((gene, replace(
                    decision, allowed=False, reason=why[gene.id],
                    steps=(*decision.steps, f"refused by the store: {why[gene.id]}"))))
            else:
                accepted.append((gene, decision))
        return accepted, refused

    def audit_in(self, txn: Txn, refused_on_apply: Sequence[RejectedGene] = ()) -> int:
        """Write the records `finish_batch` would, inside the transaction that applies
        the genes (`SyncStore.apply_batches(audit=...)`): a kill between the apply and
        a second audit transaction kept stored genes without `gene_received` records
        (ADR 0037). Changes no view state, since `Cortex.write` may run it twice; the
        caller then says `finish_batch(refused, audited=True)`."""
        accepted, refused = self._judged(refused_on_apply)
        return self._service.audit.received_in(txn, self.sender.peer_id, accepted, refused)

    def finish_batch(self, refused_on_apply: Sequence[RejectedGene] = (), *,
                     audited: bool = False) -> int:
        """Audit the batch (unless `audit_in` already did, in the apply's transaction)
        and start the next; returns how many genes were judged."""
        accepted, refused = self._judged(refused_on_apply)
        self._filter.accepted, self._filter.refused = [], []
        self._snapshot = None  # the next batch sees a revocation made meanwhile
        if audited:
            return len(accepted) + len(refused)
        return self._service.audit.record_received(self.sender.peer_id, accepted, refused)
