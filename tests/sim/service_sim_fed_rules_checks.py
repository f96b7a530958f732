"""The invariants `service_sim_fed_rules.RulesNet` checks, on its model: every gene sent
or accepted is judged by `service_sim_fed_oracle` against the rules each side held (and
the proposals each had heard) at that moment; forwarded genes carry their consent;
repair items name only what a peer may have; and the audit chains hold every record,
checked tail by tail after each step. A mixin: `RulesNet` holds the state.
"""

from __future__ import annotations

from typing import Any

import service_sim_sov
from service_sim_fed_oracle import (
    consents,
    flows,
    outgoing_scope,
    receive_reason,
    subject_matches,
)
from service_sim_sov import SovNode
from service_sim_sov_checks import SECRET_MARKS

from gd.genome import canonical
from gd.genome.gene import Gene, GeneStatus
from gd.node.store.audit import AUDIT_DB, chain_hash
from gd.protocol.policy_rules import (
    Direction,
    Effect,
)
from gd.protocol.sovereignty_anonymise import (
    anonymisation_secret,
    derive_for,
    derived_id,
    peer_key,
)


class RulesInvariants:
    """The checks of `RulesNet` (which mixes this in before `FedNet`)."""

    def check_send(self, node: Any, peer: str, gene: Gene) -> None:
        self.judge_send(node, peer, gene, form=True)

    def original_of(self, node: Any, to: SovNode, gene: Gene) -> Gene:
        """The stored version `gene` is, or is a form derived from for `to` (its first
        parent is the derivation tag of the original's id)."""
        stored = node.cortex.get_by_version_hash(gene.version_hash)
        if stored is not None:
            return stored  # type: ignore[no-any-return]
        pkey = peer_key(anonymisation_secret(node.key), to.peer)
        tag = gene.parents[0] if gene.parents else None
        for gene_id in node.cortex.gene_ids():
            if derived_id(pkey, gene_id) == tag:
                original = node.cortex.get_gene_version(gene_id, gene.version)
                if original is not None:
                    return original  # type: ignore[no-any-return]
        self.fail(f"node {node.index} sent {to.index} gene {gene.id} it never held")

    def judge_send(self, node: Any, peer: str, gene: Gene, form: bool) -> None:
        """What goes (or is named) to a peer: the sender's own rules allow the stored
        version now, the peer's newest proposals consent, and (for what goes) its form
        is the one those rules ask for: anonymised or not, forwardable or not, with
        the residency it must keep."""
        to = self.by_peer(peer)
        sent, gene = gene, self.original_of(node, to, gene) if form else gene
        verdict = self.verdict(node, to, gene)
        where = f"node {node.index} sent {gene.domain} gene {gene.id} to {to.index}"
        if form and gene.author == to.peer:
            self.fail(f"echo: {where} offers the receiver a version it authored")
        if form and sent.version_hash != gene.version_hash and gene.origin != node.peer:
            self.fail(f"loop: {where} sends a derived form of a gene of origin "
                      f"{self.by_peer(gene.origin).index}, not the sender")
        self.check_forward(node, to, sent)
        if not verdict.allowed:
            self.fail(f"{where} with no rule of its own allowing it ({verdict.reason})")
        if not consents(self.believed(node, to), self.info(node), gene.domain,
                        Direction.RECEIVE):
            self.fail(f"{where} whose newest proposal it knows refuses it")
        self.stats["sent"] += 1
        if not form:
            return
        if verdict.anonymize:
            leaked = [m for m in SECRET_MARKS if m in sent.encode()]
            if leaked:
                self.fail(f"{where} anonymised, carrying {leaked[0]!r}")
            self.stats["anonymised_out"] += 1
        if sent.scope != outgoing_scope(gene, verdict):
            self.fail(f"{where} in scope {sent.scope.to_plain()}; its rules give "
                      f"{outgoing_scope(gene, verdict).to_plain()}")
        if sent.scope.residency:
            self.stats["sent_with_residency"] += 1
        if sent.version_hash != gene.version_hash:
            self.stats["derived_out"] += 1

    def check_forward(self, node: Any, to: Any, gene: Gene) -> None:
        if gene.origin == node.peer:
            return
        if not gene.scope.forward:
            self.fail(f"node {node.index} forwarded {gene.id} of {gene.origin} to "
                      f"{to.index} against its scope")
        self.stats["forwarded"] += 1

    def check_items(self, node: Any, peer: str, items: Any) -> None:
        """A repair round names only versions the peer may have now, or its own heads."""
        to = self.by_peer(peer)
        forms: dict[bytes, Gene] | None = None
        for vhash in items.ids(0, len(items)):
            gene = node.cortex.get_by_version_hash(vhash)
            if gene is None:
                forms = forms if forms is not None else self.derived_forms(node, to)
                gene = forms.get(vhash)
                if gene is None:
                    self.fail(f"node {node.index} names to {to.index} a version "
                              f"{vhash.hex()[:16]} it holds no head for")
            if gene.author == to.peer:
                self.stats["listed_own_heads"] += 1
                continue
            self.judge_send(node, peer, gene, form=False)
            self.stats["listed_items"] += 1

    def form_of(self, a: SovNode, b: SovNode, head: Gene) -> Gene | None:
        """The form of `a`'s head that `a`'s own rules let `b` have now (None: none)."""
        verdict = self.verdict(a, b, head)
        if not verdict.allowed:
            return None
        scope = outgoing_scope(head, verdict)
        if not verdict.anonymize and scope == head.scope:
            return head
        if head.origin != a.peer or head.author != a.peer:
            return None  # only the origin derives
        key = (a.index, b.index, head.version_hash, verdict.anonymize, scope)
        if key not in self.forms:
            self.forms[key] = derive_for(head, b.peer, a.key, anonymisation_secret(a.key),
                                         anonymize=verdict.anonymize, scope=scope)
        return self.forms[key]

    def derived_forms(self, node: Any, to: Any) -> dict[bytes, Gene]:
        out: dict[bytes, Gene] = {}
        for head in node.cortex.genes():
            form = self.form_of(node, to, head)
            if form is not None and form.version_hash != head.version_hash:
                out[form.version_hash] = form
        return out

    def allowed_in(self, node: SovNode, src: SovNode, gene: Gene, since: float) -> bool:
        """Did `node`'s own rules accept `gene` from `src` at some moment since `since`?"""
        shots = self.snapshots[node.index]
        start = max(i for i, (t, _) in enumerate(shots) if t <= since)
        return any(not receive_reason(self.info(node), rules, self.info(src), gene)
                   for _, rules in shots[start:])

    def check_accept(self, node: Any, peer: str, gene: Gene, opened: float) -> None:
        src = self.by_peer(peer)
        self.check_forwarded_in(node, src, gene)
        if not self.allowed_in(node, src, gene, opened):
            self.fail(f"node {node.index} accepted {gene.domain} gene {gene.id} from "
                      f"{src.index}: its own rule never allowed that in this round")
        if gene.id not in self.originals and gene.origin != src.peer \
                and not gene.scope.forward:  # a derived form travels on if forwardable
            self.fail(f"gene {gene.id} from {src.index} to {node.index} is neither an "
                      "original nor a form its sender derived")
        if gene.scope.residency:
            self.stats["accepted_with_residency"] += 1

    def check_refused(self, node: Any, peer: str, gene: Gene, opened: float) -> None:
        """A refusal has a reason the model names: the gene's scope, the receiver's own
        rules now or a change of them during the round, the sender's consent not
        heard (or heard anew during the round), or a gene of the receiver's own."""
        src = self.by_peer(peer)
        changed = self.snapshots[node.index][-1][0] >= opened
        if receive_reason(self.info(node), self.book[node.index].values(), self.info(src),
                          gene) or changed or gene.origin == node.peer \
                or not consents(self.believed(node, src), self.info(node), gene.domain,
                                Direction.SEND) \
                or self.heard_at.get((node.index, src.index), -1.0) >= opened:
            self.stats["refusals_explained"] += 1
            return
        self.fail(f"node {node.index} refused {gene.domain} gene {gene.id} from "
                  f"{src.index} without a reason: its rule and the sender's consent held "
                  "all round")

    def form_for(self, a: Any, b: Any, head: Gene) -> Gene | None:
        """After settling: what of `a`'s head reaches `b` (both sides' rules, both
        sides' consent as proposed, the receiver's residency)."""
        if head.status is not GeneStatus.NATIVE or head.author == b.peer:
            return None
        if not consents([r for r in self.book[b.index].values()], self.info(a), head.domain,
                        Direction.RECEIVE):
            return None
        form = self.form_of(a, b, head)
        if form is None or receive_reason(self.info(b), self.book[b.index].values(),
                                          self.info(a), form):
            return None
        if form.origin == b.peer and b.cortex.get_gene(form.id) is None:
            # b's edit of a form derived for it: its origin never held that id and
            # refuses a gene "of its own" it did not author (fedsim seed 241)
            self.stats["derived_edits_not_returned"] += 1
            return None
        return form

    def check_consent(self) -> None:
        """What each node believes of each peer's rules is what they are."""
        for a in self.nodes:
            remote = a.sov.store.remote_rules()
            for b in self.nodes:
                if a is b:
                    continue
                mine = [r for r in self.book[b.index].values() if r.effect is Effect.ALLOW]
                for domain in service_sim_sov.DOMAINS:
                    for direction in (Direction.SEND, Direction.RECEIVE):
                        view = consents(remote.get(b.peer, ()), self.info(a), domain,
                                        direction)
                        truth = consents(mine, self.info(a), domain, direction)
                        if view != truth:
                            self.fail(f"node {a.index} believes node {b.index} "
                                      f"{'allows' if view else 'refuses'} {direction} "
                                      f"{domain}; it {'does not' if view else 'does'}")
                        self.stats["consent_checked"] += 1

    def check_audit_and_ledger(self) -> None:
        """Audit chains verify; each removed allow rule is a revocation on the node's
        ledger, and each agreement in force (allow rules of one domain on both sides
        whose directions meet) is an agreement there."""
        sent: dict[int, set[tuple[str, str, bytes]]] = {}
        received: dict[int, set[tuple[str, str, bytes]]] = {}
        for node in self.nodes:
            sent[node.index], received[node.index], recorded = self.audited(
                node, "allow rules revoked")
            for other in self.nodes:
                if other is node:
                    continue
                for domain in (*service_sim_sov.DOMAINS, "*"):
                    ours = [r for r in self.book[node.index].values() if r.domain == domain
                            and r.effect is Effect.ALLOW and subject_matches(
                                r, self.info(other))]
                    theirs = [r for r in self.book[other.index].values()
                              if r.domain == domain and r.effect is Effect.ALLOW
                              and subject_matches(r, self.info(node))]
                    if flows(ours, theirs):
                        self.stats["agreements_checked"] += 1
                        if (other.peer, domain) not in recorded:
                            self.fail(f"node {node.index}: the agreement with "
                                      f"{other.index} on {domain} is not on its ledger")
        self.check_provenance(sent, received)

    def check_audit_tails(self) -> None:
        """Each up node's audit log from where the last check stopped: the last record
        checked is unchanged and every new one chains on (fedsim's per-step check)."""
        for node in self.nodes:
            if node.cortex is None:
                continue
            count, head = self.audit_seen[node.index]
            db = node.cortex.open_db(AUDIT_DB)
            with node.cortex.env.begin() as txn:
                if count:
                    raw = txn.get((count - 1).to_bytes(8, "big"), db=db)
                    if raw is None or canonical.decode(raw)["hash"] != head:
                        self.fail(f"node {node.index}: audit record {count - 1} changed")
                cur = txn.cursor(db=db)
                if cur.set_range(count.to_bytes(8, "big")):
                    for key, raw in cur:
                        stored = canonical.decode(raw)
                        index = int.from_bytes(key, "big")
                        if index != count or stored["prev"] != head or \
                                chain_hash(head, stored["body"]) != stored["hash"]:
                            self.fail(f"node {node.index}: audit chain broken at {index}")
                        count, head = count + 1, stored["hash"]
                        self.stats["audit_records_checked"] += 1
            self.audit_seen[node.index] = (count, head)
