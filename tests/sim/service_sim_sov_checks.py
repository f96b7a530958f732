"""The invariants of the sovereign service simulation (`service_sim_sov.py`), kept
apart from the harness that drives the services: an independent model of each
organisation's own rules over time and of the newest proposal each node has received
from each peer, and the checks made against it while genes flow and after settling.
The module docstring of `service_sim_sov` lists the invariants.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final, NoReturn

import trio

from gd.genome.gene import Gene, GeneStatus, ShareScope
from gd.node.store.audit import AuditKind
from gd.node.store.ledger_store import Ledger
from gd.protocol.sovereignty_agreements import Proposal, ProposalKind
from gd.protocol.sovereignty_anonymise import anonymisation_secret, derive_for

# Markers of an original gene's identity; fixed width, so no serial is a prefix of another.
SECRET_MARKS: Final = (b"secret-rule-", b"private-purpose-", b"tenant-")

Pair = tuple[int, int, str]  # (from node, to node, domain)


class SovInvariants:
    """The model and the checks; `SovNet` fills the model as it acts and observes."""

    nodes: list[Any]
    allow: dict[Pair, bool]  # each org's own allow rule for (peer, domain), now
    history: dict[Pair, list[tuple[float, bool]]]  # and when it changed
    anon: dict[Pair, bool]
    known: dict[Pair, tuple[int, ProposalKind]]  # newest proposal received, by stamp
    learned_at: dict[Pair, float]  # when a proposal for the pair last arrived
    derived: dict[tuple[int, bytes], tuple[bytes, Gene]]  # (to, head hash) -> its form
    revoke_heard: set[Pair]
    revokes: list[int]  # revokes each node made (each must be on its ledger)
    stats: Counter[str]

    def fail(self, text: str) -> NoReturn:
        raise NotImplementedError

    def by_peer(self, peer: str) -> Any:
        raise NotImplementedError

    # -- the model -----------------------------------------------------------------------
    def learned(self, node: Any, sender: str, proposal: Proposal) -> None:
        pair = (node.index, self.by_peer(sender).index, proposal.rule.domain)
        if proposal.kind is ProposalKind.REVOKE:
            self.revoke_heard.add(pair)
        if pair not in self.known or self.known[pair][0] < proposal.hlc:
            self.known[pair] = (proposal.hlc, proposal.kind)
        self.learned_at[pair] = trio.current_time()

    def allowed_since(self, pair: Pair, since: float) -> bool:
        """Did the org's own rule allow the pair at `since` or at any moment after?"""
        if self.allow[pair]:
            return True
        before = [ok for t, ok in self.history[pair] if t <= since]
        return bool(before and before[-1]) or any(
            ok for t, ok in self.history[pair] if t > since)

    def check_send(self, node: Any, peer: str, gene: Gene) -> None:
        """Invariant 1, the sender's side (and no forwarding)."""
        to = self.by_peer(peer)
        pair = (node.index, to.index, gene.domain)
        self.check_forward(node, to, gene)
        if not self.allow[pair]:
            self.fail(f"node {node.index} sent {gene.domain} gene {gene.id} to {to.index} "
                      "with no rule of its own allowing it")
        known = self.known.get((node.index, to.index, gene.domain))
        if known is None or known[1] is not ProposalKind.SHARE:
            self.fail(f"node {node.index} sent {gene.domain} gene {gene.id} to {to.index} "
                      f"whose newest proposal it knows is {known}")
        self.stats["sent"] += 1

    def check_forward(self, node: Any, to: Any, gene: Gene) -> None:
        """Nothing is forwarded: a node sends only genes of its own origin."""
        if gene.origin != node.peer:
            self.fail(f"node {node.index} forwarded {gene.id} of {gene.origin} to {to.index}")

    def check_accept(self, node: Any, peer: str, gene: Gene, opened: float) -> None:
        """Invariants 1 (the receiver's side) and 2."""
        src = self.by_peer(peer)
        self.check_forwarded_in(node, src, gene)
        if not self.allowed_since((node.index, src.index, gene.domain), opened):
            self.fail(f"node {node.index} accepted {gene.domain} gene {gene.id} from "
                      f"{src.index}: its own rule never allowed that in this round")
        self.check_form(node, src, gene)

    def check_items(self, node: Any, peer: str, items: Any) -> None:
        """A repair round names to a peer only versions it may be sent now (checked as
        a send: the sender's rule and the peer's newest proposal), or heads the peer
        authored (naming those tells it nothing it does not hold). fedsim's
        `check_reconcile`; the per-peer item cache is where this once went wrong."""
        to = self.by_peer(peer)
        forms: dict[bytes, Gene] | None = None
        for vhash in items.ids(0, len(items)):
            gene = node.cortex.get_by_version_hash(vhash)
            if gene is None:  # a derived form: which of our heads is it of?
                forms = forms if forms is not None else self.derived_forms(node, to)
                gene = forms.get(vhash)
                if gene is None:
                    self.fail(f"node {node.index} names to {to.index} a version "
                              f"{vhash.hex()[:16]} it holds no head for")
            if gene.author == to.peer:
                self.stats["listed_own_heads"] += 1
                continue
            self.check_send(node, peer, gene)
            self.stats["listed_items"] += 1

    def derived_forms(self, node: Any, to: Any) -> dict[bytes, Gene]:
        """Derived (anonymised) form's hash -> that form, for `node`'s own heads."""
        secret = anonymisation_secret(node.key)
        out: dict[bytes, Gene] = {}
        for head in node.cortex.genes():
            if head.origin != node.peer or head.author != node.peer:
                continue
            cached = self.derived.get((to.index, head.version_hash))
            if cached is None:
                form = derive_for(head, to.peer, node.key, secret, anonymize=True,
                                  scope=ShareScope())
                cached = self.derived[(to.index, head.version_hash)] = (form.version_hash,
                                                                        form)
            out[cached[0]] = cached[1]
        return out

    def check_refused(self, node: Any, peer: str, gene: Gene, opened: float) -> None:
        """Nothing is refused without a reason the model can name: the gene was
        forwarded against its scope, the receiver's own rule did not allow it at some
        moment of the round, or the sender's consent was not known to be in force
        (never, or a proposal arrived during the round)."""
        src = self.by_peer(peer)
        pair = (node.index, src.index, gene.domain)
        known = self.known.get(pair)
        if (gene.origin != src.peer and not gene.scope.forward) or not self.allow[pair] \
                or any(t >= opened for t, _ in self.history[pair]) \
                or known is None or known[1] is not ProposalKind.SHARE \
                or self.learned_at.get(pair, -1.0) >= opened:
            self.stats["refusals_explained"] += 1
            return
        self.fail(f"node {node.index} refused {gene.domain} gene {gene.id} from "
                  f"{src.index} without a reason: its rule and the sender's consent held "
                  "all round")

    def check_forwarded_in(self, node: Any, src: Any, gene: Gene) -> None:
        """Nothing forwarded is accepted: every gene comes from its origin."""
        if gene.origin != src.peer:
            self.fail(f"node {node.index} accepted {gene.id} of {gene.origin} from "
                      f"{src.index}: forwarded")

    def check_form(self, node: Any, src: Any, gene: Gene) -> None:
        """Invariant 2: anonymised forms carry no identity; clear ones are originals."""
        blob = gene.encode()
        originals = {g.id for g in src.written}
        if self.anon[(src.index, node.index, gene.domain)]:
            leaked = [m for m in SECRET_MARKS if m in blob]
            leaked += [i for i in originals if i.encode() in blob]
            if leaked:
                self.fail(f"anonymised gene {gene.id} from {src.index} to {node.index} "
                          f"carries {leaked[0]!r}")
            self.stats["anonymised_in"] += 1
        elif gene.id not in originals:
            self.fail(f"gene {gene.id} from {src.index} to {node.index} is not an original")


    # -- checks ----------------------------------------------------------------------------
    def check_statuses(self) -> None:
        """Invariant 3, and the service logs: no local failure anywhere."""
        for node in self.nodes:
            if node.cortex is None or node.gate is None:
                continue
            failed = [e for e in node.gate.log.events if e[0] == "error"]
            if failed:
                self.fail(f"node {node.index}: {failed[0]}")
            for gene in node.cortex.genes():
                if gene.origin == node.peer:
                    continue
                origin = self.by_peer(gene.origin).index
                if gene.status is GeneStatus.ADAPTATION_PENDING:
                    continue
                if gene.status is GeneStatus.REVOKED and \
                        (node.index, origin, gene.domain) in self.revoke_heard:
                    continue
                self.fail(f"node {node.index}: received gene {gene.id} is {gene.status}")

    def audited(self, node: Any, revoked: str
                ) -> tuple[set[tuple[str, str, bytes]], set[tuple[str, str, bytes]],
                           set[tuple[Any, Any]]]:
        """One node's audit chain verified and its ledger's revocations counted against
        the model's (`revoked` names what the model counts); returns its `gene_sent` and
        `gene_received` records and the (peer, domain) agreements on its ledger."""
        assert node.sov is not None and node.cortex is not None
        report = node.sov.audit.verify()
        if not report.ok:
            self.fail(f"node {node.index} audit log: {report.reason}")
        records = list(node.sov.audit.records())
        sent = {(r.peer, r.gene_id, r.version_hash) for r in records
                if r.kind == AuditKind.GENE_SENT}
        received = {(r.peer, r.gene_id, r.version_hash) for r in records
                    if r.kind == AuditKind.GENE_RECEIVED}
        entries = list(Ledger(node.cortex.env).entries())
        revocations = sum(1 for e in entries if e.kind == "revocation")
        if revocations != self.revokes[node.index]:
            self.fail(f"node {node.index}: {self.revokes[node.index]} {revoked}, "
                      f"{revocations} on the ledger")
        recorded = {(e.summary.get("peer"), e.summary.get("domain")) for e in entries
                    if e.kind == "agreement"}
        return sent, received, recorded

    def check_audit_and_ledger(self) -> None:
        """Invariant 4."""
        sent: dict[int, set[tuple[str, str, bytes]]] = {}
        received: dict[int, set[tuple[str, str, bytes]]] = {}
        for node in self.nodes:
            sent[node.index], received[node.index], recorded = self.audited(node, "revokes")
            for (a, b, d), ok in sorted(self.allow.items()):
                if a == node.index and ok and self.allow[(b, a, d)] and \
                        (self.nodes[b].peer, d) not in recorded:
                    self.fail(f"node {a}: the agreement with {b} on {d} is not on its ledger")
        self.check_provenance(sent, received)

    def check_provenance(self, sent: dict[int, set[tuple[str, str, bytes]]],
                         received: dict[int, set[tuple[str, str, bytes]]]) -> None:
        """Every received gene held has its `gene_received` and its origin's `gene_sent`."""
        for node in self.nodes:
            assert node.cortex is not None
            for gene in node.cortex.genes():
                if gene.origin == node.peer:
                    continue
                origin = self.by_peer(gene.origin)
                if (origin.peer, gene.id, gene.version_hash) not in received[node.index]:
                    self.fail(f"node {node.index} holds {gene.id} with no gene_received")
                if (node.peer, gene.id, gene.version_hash) not in sent[origin.index]:
                    self.fail(f"node {origin.index} sent {gene.id} to {node.index} with no "
                              "gene_sent record")

    def check_convergence(self) -> None:
        """Invariant 5: every domain both sides allow has arrived, in the right form."""
        for (a, b, d), ok in sorted(self.allow.items()):
            if not ok or not self.allow[(b, a, d)]:
                continue
            src, dst = self.nodes[a], self.nodes[b]
            assert dst.cortex is not None
            want = {g.id: g.version_hash for g in src.written if g.domain == d}
            if self.anon[(a, b, d)]:
                secret = anonymisation_secret(src.key)
                derived = [derive_for(g, dst.peer, src.key, secret, anonymize=True,
                                      scope=ShareScope()) for g in src.written if g.domain == d]
                want = {g.id: g.version_hash for g in derived}
            held = {g.id: g.version_hash for g in dst.cortex.genes()
                    if g.origin == src.peer and g.domain == d}
            if held != want:
                self.fail(f"not converged: {d} from {a} to {b}: {len(held)} held of "
                          f"{len(want)}")
            self.stats["converged_pairs"] += 1

    def final_checks(self) -> None:
        """The invariants checked once everything has settled."""
        self.check_statuses()
        self.check_audit_and_ledger()
        self.check_convergence()
