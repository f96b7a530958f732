"""The invariants `fedsim` kept that the sovereign service simulation lacked, checked
against the real services of `service_sim_fed` (issue 12 item 6).

Why a module of its own: `service_sim_sov_checks.SovInvariants` assumes genes only flow
from their origin and are never edited by a receiver. Here receivers approve, edit and
pass on forwardable genes, so concurrent versions meet, queue as conflicts or are
settled last-writer-wins, and a person resolves them. These checks extend the sovereign
ones where forwarding and edits change the answer, and add fedsim's:

6. every acknowledged local gene write (a create, an edit, a resolution) survives in its
   node's Cortex: the version is kept and the head descends it (an LWW domain may lose
   it to a higher concurrent write, never to an older or lower one);
7. no received gene (authored elsewhere) is `native` without this node's approval;
8. after settling, every version that may flow from A to B is accounted for at B: the
   same version, a descendant, a queued conflict, or an LWW loss where the domain is
   LWW; two nodes that share a gene both ways with no conflict pending hold the same
   version; a conflict a node resolved leaves no queued pair, on a node its resolution
   reaches, that the resolution descends from;
9. each node's view of its peers' consent (their share rules, as agreements delivered
   them) matches what the peers agreed.

The model of what may flow is the harness's own reading of the rules it made (allow,
anonymise, forward), not the policy code's.
"""

from __future__ import annotations

from typing import Any, Final

from service_sim_sov_checks import SECRET_MARKS, Pair, SovInvariants

from gd.crdt.conflict import VersionStamp
from gd.crdt.vclock import Order, compare, descends
from gd.genome.gene import Gene, GeneStatus, ShareScope
from gd.protocol.policy_rules import Effect, SubjectKind
from gd.protocol.sovereignty_anonymise import anonymisation_secret, derive_for

LWW_DOMAINS: Final = frozenset({"loan"})

Ack = tuple[str, bytes, str, VersionStamp]  # (gene id, version hash, domain, stamp)


def stamp(gene: Gene) -> VersionStamp:
    return VersionStamp.of(gene.vv, gene.hlc, gene.version_hash)


class FedInvariants(SovInvariants):
    """The sovereign checks, loosened for forwarding and edits, plus fedsim's."""

    acked: dict[int, list[Ack]]
    approved: dict[int, set[tuple[str, bytes]]]
    resolutions: list[tuple[int, str]]
    originals: set[str]  # every id a node created (ids survive edits)

    # -- sovereign checks, loosened ---------------------------------------------------
    def check_forward(self, node: Any, to: Any, gene: Gene) -> None:
        """A node passes on another's gene only when its scope lets it be forwarded and
        the node's own rule for that peer allows forwarding (our rules do unless they
        anonymise)."""
        if gene.origin == node.peer:
            return
        if not gene.scope.forward or self.anon[(node.index, to.index, gene.domain)]:
            self.fail(f"node {node.index} forwarded {gene.id} of {gene.origin} to "
                      f"{to.index} against its scope or its rule")
        self.stats["forwarded"] += 1

    def check_forwarded_in(self, node: Any, src: Any, gene: Gene) -> None:
        if gene.origin != src.peer and not gene.scope.forward:
            self.fail(f"node {node.index} accepted {gene.id} of {gene.origin} from "
                      f"{src.index}: forwarded against its scope")

    def check_form(self, node: Any, src: Any, gene: Gene) -> None:
        """An anonymised form carries no identity; a clear one keeps an original's id."""
        if self.anon[(src.index, node.index, gene.domain)] and gene.origin == src.peer:
            blob = gene.encode()
            leaked = [m for m in SECRET_MARKS if m in blob]
            leaked += [i for i in self.originals if i.encode() in blob]
            if leaked:
                self.fail(f"anonymised gene {gene.id} from {src.index} to {node.index} "
                          f"carries {leaked[0]!r}")
            self.stats["anonymised_in"] += 1
        elif gene.id not in self.originals:
            self.fail(f"gene {gene.id} from {src.index} to {node.index} is not an original")

    def check_statuses(self) -> None:
        """The service logs (no local failure), and invariants 3 and 7."""
        for node in self.nodes:
            if node.cortex is None or node.gate is None:
                continue
            failed = [e for e in node.gate.log.events if e[0] == "error"]
            if failed:
                self.fail(f"node {node.index}: {failed[0]}")
            heard = {d for (i, _, d) in self.revoke_heard if i == node.index}
            for gene in node.cortex.genes():
                if gene.author == node.peer:
                    continue  # a version this node wrote
                if gene.status is GeneStatus.ADAPTATION_PENDING:
                    continue
                if gene.status is GeneStatus.REVOKED and gene.domain in heard:
                    continue
                if gene.status is GeneStatus.NATIVE and \
                        (gene.id, gene.version_hash) in self.approved[node.index]:
                    continue
                self.fail(f"node {node.index}: received gene {gene.id} v{gene.version} is "
                          f"{gene.status} without this node's approval")

    def check_provenance(self, sent: dict[int, set[tuple[str, str, bytes]]],
                         received: dict[int, set[tuple[str, str, bytes]]]) -> None:
        """Every version held that another node wrote was received from some peer
        (`gene_received`) that recorded sending it (`gene_sent`)."""
        for node in self.nodes:
            assert node.cortex is not None
            for gene in node.cortex.genes():
                if gene.author == node.peer:
                    continue
                senders = [p for p, i, v in received[node.index]
                           if i == gene.id and v == gene.version_hash]
                if not senders:
                    self.fail(f"node {node.index} holds {gene.id} with no gene_received")
                if not any((node.peer, gene.id, gene.version_hash)
                           in sent[self.by_peer(p).index] for p in senders):
                    self.fail(f"no sender of {gene.id} to {node.index} has a gene_sent "
                              "record")

    # -- fedsim's -----------------------------------------------------------------------
    def check_writes(self) -> None:
        """Invariant 6, on every node that is up."""
        for node in self.nodes:
            if node.cortex is None:
                continue
            for gene_id, vhash, domain, mine in self.acked[node.index]:
                head = node.cortex.get_gene(gene_id)
                if head is None:
                    self.fail(f"node {node.index} lost gene {gene_id} entirely")
                order = compare(head.vv, mine.vv)
                if domain in LWW_DOMAINS:
                    if order is Order.DESCENDED_BY or (
                            order is Order.CONCURRENT and stamp(head).lww_key < mine.lww_key):
                        self.fail(f"node {node.index}: LWW head of {gene_id} lost to an "
                                  "older or lower write")
                    continue
                if node.cortex.get_by_version_hash(vhash) is None:
                    self.fail(f"node {node.index} lost its acknowledged write {gene_id} "
                              f"{vhash.hex()[:16]}")
                if order not in (Order.EQUAL, Order.DESCENDS):
                    self.fail(f"node {node.index}: head of {gene_id} does not descend its "
                              f"acknowledged write ({order.value})")

    def form_for(self, a: Any, b: Any, head: Gene) -> Gene | None:
        """What of `a`'s head may reach `b` once everything settled, by the model: a
        native version `b` did not write, in a domain both sides agree on, of `a`'s origin
        or forwardable (never under an anonymising rule), derived where anonymised."""
        pair: Pair = (a.index, b.index, head.domain)
        if not (self.allow[pair] and self.allow[(b.index, a.index, head.domain)]):
            return None
        if head.status is not GeneStatus.NATIVE or head.author == b.peer:
            return None
        authored = head.origin == a.peer and head.author == a.peer
        if head.origin != a.peer and not head.scope.forward:
            return None
        if not self.anon[pair]:
            return head
        if not authored:
            return None
        return derive_for(head, b.peer, a.key, anonymisation_secret(a.key), anonymize=True,
                          scope=ShareScope())

    def check_convergence(self) -> None:
        """Invariant 8 (replaces the sovereign sim's origin-only convergence)."""
        flows: dict[tuple[int, int], dict[str, bytes]] = {}
        for a in self.nodes:
            for b in self.nodes:
                if a is b:
                    continue
                moved: dict[str, bytes] = {}
                for head in a.cortex.genes():
                    form = self.form_for(a, b, head)
                    if form is None:
                        continue
                    self.account(b, form, a)
                    if form.version_hash == head.version_hash:
                        moved[head.id] = head.version_hash
                flows[(a.index, b.index)] = moved
                self.stats["flows_checked"] += len(moved)
        for (i, j), moved in sorted(flows.items()):
            if i > j:
                continue
            back = flows[(j, i)]
            pending = {c.gene_id for n in (i, j)
                       for c in self.nodes[n].sync.store.conflicts()}
            for gene_id in sorted(set(moved) & set(back) - pending):
                if moved[gene_id] != back[gene_id]:
                    self.fail(f"nodes {i} and {j} share gene {gene_id} both ways with no "
                              "conflict pending, yet hold different versions")
                self.stats["two_way_pairs"] += 1
        self.check_settlement()

    def account(self, b: Any, gene: Gene, a: Any) -> None:
        head = b.cortex.get_gene(gene.id)
        where = f"gene {gene.id} v{gene.version} ({gene.domain}) from {a.index} at {b.index}"
        if head is None:
            self.fail(f"not converged: {where} never arrived")
        order = compare(head.vv, gene.vv)
        if order in (Order.EQUAL, Order.DESCENDS):
            if order is Order.EQUAL and head.version_hash != gene.version_hash and \
                    stamp(head).lww_key < stamp(gene).lww_key:
                self.fail(f"not converged: {where}: equal vectors, lower version kept")
            return
        if order is Order.CONCURRENT:
            if gene.domain in LWW_DOMAINS:
                if stamp(head).lww_key > stamp(gene).lww_key:
                    self.stats["lww_losses"] += 1
                    return
                self.fail(f"not converged: {where}: LWW kept the lower of two versions")
            for conflict in b.sync.store.conflicts():
                if conflict.gene_id == gene.id and descends(conflict.remote.vv, gene.vv):
                    self.stats["queued_accounted"] += 1
                    return
            self.fail(f"lost: {where} is concurrent with the head and in no conflict queue")
        self.fail(f"not converged: {where}: the receiver's head is older")

    def check_settlement(self) -> None:
        """A resolution that reaches a node leaves no queued pair there it settles."""
        for index, gene_id in self.resolutions:
            a = self.nodes[index]
            head = a.cortex.get_gene(gene_id)
            for b in self.nodes:
                form = None if b is a or head is None else self.form_for(a, b, head)
                if form is None:
                    continue
                self.stats["settlements_checked"] += 1
                for conflict in b.sync.store.conflicts():
                    if conflict.gene_id == form.id and descends(form.vv, conflict.local.vv) \
                            and descends(form.vv, conflict.remote.vv):
                        self.fail(f"node {b.index} still queues conflict {conflict.key} that "
                                  f"node {index}'s resolution (v{form.version}) settles")

    def check_consent(self) -> None:
        """Invariant 9: what each node believes of each peer's rules is what they are."""
        for a in self.nodes:
            remote = a.sov.store.remote_rules()
            for b in self.nodes:
                if a is b:
                    continue
                for domain in sorted({d for (_, _, d) in self.allow}):
                    believed = any(
                        r.effect is Effect.ALLOW and r.domain in (domain, "*") and (
                            (r.subject.kind is SubjectKind.PEER and r.subject.value == a.peer)
                            or (r.subject.kind is SubjectKind.ORG and r.subject.value == a.org))
                        for r in remote.get(b.peer, ()))
                    if believed != self.allow[(b.index, a.index, domain)]:
                        self.fail(f"node {a.index} believes node {b.index} "
                                  f"{'allows' if believed else 'refuses'} {domain}; it "
                                  f"{'does not' if believed else 'does'}")
                    self.stats["consent_checked"] += 1
