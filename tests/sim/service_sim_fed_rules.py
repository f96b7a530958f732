"""fedsim's breadth on the real services: `service_sim_fed`'s conflict workload, with
every kind of rule fedsim drew, 3 to 5 nodes in two regions (now and then two nodes of
one organisation), clock skew between nodes, and the audit chains checked after every
step (issue 12 item 6: what kept `fedsim` alive).

Why: `service_sim_fed` runs the real `SyncService` and `SovereigntyService` on trio's
mock clock over a simulated gate, but with allow rules by peer or org only, three
nodes of three organisations in one region and one clock. Here, as fedsim drew them:

* **rules**: subjects by peer, org or region (6:2:1); 6% deny rules; directions both,
  send-only, receive-only (7:1.5:1.5); 5% for every domain (`*`); anonymise 20%, allow
  forwarding 60% (fedsim 35%, over more steps); a revoke removes one of the node's
  rules (allow or deny);
* **residency**: a quarter of the nodes start with a residency rule (a domain kept in
  their region); now and then one is added or removed; 15% of new genes carry their
  origin's region as residency scope;
* **topology**: 3-5 nodes, each in `eu` or `us`; with more than 3 nodes, 30% of runs
  give the last node the first one's organisation (same org, its own key);
* **clock skew**: each node's injected clock (`SovGate.clock`, its stamps, the
  resolutions' HLC) runs up to `MAX_SKEW_MS` ahead or behind; a resolution must
  still be stamped above both versions it settles;
* **audit**: after every step each node's audit log is read from where the last check
  stopped (the new tail only) and must chain on; the records already checked must not
  have changed.

The model is the harness's own record of each node's rules over time and of the newest
proposal each node heard for each of a peer's rules; `service_sim_fed_oracle` judges it
without the product's policy code.

`python tests/sim/service_sim_fed_rules.py [FIRST [COUNT]]` sweeps seeds.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import service_sim_sov
import trio
from service_sim import EPOCH_MS
from service_sim_fed import FedNet
from service_sim_fed_oracle import (
    Info,
    consents,
    flows,
    outgoing_scope,
    receive_reason,
    send_verdict,
    subject_matches,
)
from service_sim_sov import SovNode, SovSimResult
from service_sim_sov_checks import SECRET_MARKS

from gd.genome import canonical
from gd.genome.gene import Gene, GeneStatus, ShareScope
from gd.genome.identity import NodeKey
from gd.node.store.audit import AUDIT_DB, GENESIS, AuditKind, chain_hash
from gd.node.store.ledger_store import Ledger
from gd.node.store.sync_store import Conflict, resolve_conflict
from gd.protocol.policy_rules import (
    Direction,
    Effect,
    ResidencyRule,
    ShareRule,
    Subject,
    SubjectKind,
)
from gd.protocol.sovereignty_agreements import Proposal, ProposalKind
from gd.protocol.sovereignty_anonymise import (
    anonymisation_secret,
    derive_for,
    derived_id,
    peer_key,
)

REGIONS: Final = ("eu", "us")
MAX_SKEW_MS: Final = 2_000  # inside the handshake's 5-minute and the HLC's 60 s limits
RESIDENCY_RATE: Final = 0.03  # share of steps that add or remove a residency rule
Snapshot = tuple[float, tuple[ShareRule, ...]]


class RulesNet(FedNet):
    """`FedNet` with fedsim's rules, topology, skew and per-step audit checks."""

    steps = 110
    deny_rate = 0.06
    send_only_rate = 0.15
    receive_only_rate = 0.15
    region_rate = 1 / 9
    org_rate = 2 / 9
    any_domain_rate = 0.05
    anonymize_rate = 0.2
    forward_rate = 0.6  # fedsim: 0.35 over 300 steps; fewer steps here, so more
    residency_start = 0.25
    scope_residency_rate = 0.15
    shared_org_rate = 0.3
    max_skew_ms = MAX_SKEW_MS

    def __init__(self, seed: int, root: Path) -> None:
        super().__init__(seed, root)
        indices = [n.index for n in self.nodes]
        self.book: dict[int, dict[str, ShareRule]] = {i: {} for i in indices}
        self.kept: dict[int, dict[str, ResidencyRule]] = {i: {} for i in indices}
        self.snapshots: dict[int, list[Snapshot]] = {i: [(-1.0, ())] for i in indices}
        self.beliefs: dict[tuple[int, int], dict[str, tuple[int, ProposalKind, ShareRule]]] \
            = {}
        self.heard_at: dict[tuple[int, int], float] = {}
        self.forms: dict[tuple[int, int, bytes, bool, ShareScope], Gene] = {}
        self.audit_seen: dict[int, tuple[int, bytes]] = dict.fromkeys(indices, (0, GENESIS))
        for node in self.nodes:  # set in each home when it is first opened
            if self.rng.random() < self.residency_start:
                rule = ResidencyRule(self.rng.choice(service_sim_sov.DOMAINS), node.region)
                self.kept[node.index][rule.rule_id] = rule
        self.stats[f"nodes_{len(self.nodes)}"] += 1
        self.stats["shared_org"] += len({n.org for n in self.nodes}) < len(self.nodes)
        self.trace.append("setup " + " ".join(f"{n.index}:{n.org}/{n.region}/{n.skew_ms:+d}ms"
                                     for n in self.nodes))

    def make_nodes(self) -> list[SovNode]:
        rng = self.rng
        count = rng.randint(3, 5)
        orgs = [f"org{i}" for i in range(count)]
        if count > 3 and rng.random() < self.shared_org_rate:
            orgs[-1] = orgs[0]  # two nodes of one organisation, each with its own key
        return [SovNode(i, NodeKey.from_seed(hashlib.sha256(
            f"service-sim-fed-rules/{self.seed}/{i}".encode()).digest()), orgs[i],
            self.root / f"node{i}", region=rng.choice(REGIONS),
            skew_ms=rng.randint(-self.max_skew_ms, self.max_skew_ms)) for i in range(count)]

    def open(self, node: SovNode) -> None:
        super().open(node)
        if node.life == 1:
            for rule in list(self.kept[node.index].values()):
                self.set_residency(node, rule)

    # -- the model ---------------------------------------------------------------------
    @staticmethod
    def info(node: SovNode) -> Info:
        return (node.peer, node.org, node.region)

    def verdict(self, node: SovNode, to: SovNode, gene: Gene) -> Any:
        return send_verdict(node.peer, self.book[node.index].values(),
                            self.kept[node.index].values(), self.info(to), gene)

    def believed(self, node: SovNode, peer: SovNode) -> list[ShareRule]:
        """The rules of `peer` that `node` heard proposed last as a share."""
        heard = self.beliefs.get((node.index, peer.index), {})
        return [rule for _, kind, rule in heard.values() if kind is ProposalKind.SHARE]

    def changed(self, node: SovNode) -> None:
        self.snapshots[node.index].append((trio.current_time(),
                                           tuple(self.book[node.index].values())))

    def random_rule(self, other: SovNode, domain: str) -> ShareRule:
        """fedsim's rule generator."""
        rng = self.rng
        kind = rng.choices(("peer", "org", "region"),
                           (1 - self.org_rate - self.region_rate, self.org_rate,
                            self.region_rate))[0]
        subject = (Subject(SubjectKind.PEER, other.peer) if kind == "peer" else
                   Subject(SubjectKind.ORG, other.org) if kind == "org" else
                   Subject(SubjectKind.REGION, other.region))
        if rng.random() < self.deny_rate:
            return ShareRule(subject, domain, Direction.BOTH, Effect.DENY)
        direction = rng.choices(
            (Direction.BOTH, Direction.SEND, Direction.RECEIVE),
            (1 - self.send_only_rate - self.receive_only_rate, self.send_only_rate,
             self.receive_only_rate))[0]
        return ShareRule(subject, "*" if rng.random() < self.any_domain_rate else domain,
                         direction, Effect.ALLOW, rng.random() < self.anonymize_rate,
                         rng.random() < self.forward_rate)

    def learned(self, node: Any, sender: str, proposal: Proposal) -> None:
        src = self.by_peer(sender)
        key = (node.index, src.index)
        heard = self.beliefs.setdefault(key, {})
        rule = proposal.rule
        if rule.rule_id not in heard or heard[rule.rule_id][0] < proposal.hlc:
            heard[rule.rule_id] = (proposal.hlc, proposal.kind, rule)
        else:
            self.stats["stale_proposals"] += 1  # a duplicate, or overtaken: no change
        if proposal.kind is ProposalKind.REVOKE:
            for domain in service_sim_sov.DOMAINS:
                if rule.domain in ("*", domain):
                    self.revoke_heard.add((node.index, src.index, domain))
        self.heard_at[key] = trio.current_time()

    # -- the workload ------------------------------------------------------------------
    def share(self, node: SovNode, pair: service_sim_sov.Pair) -> None:
        assert node.sov is not None
        rule = self.random_rule(self.nodes[pair[1]], pair[2])
        self.allow[pair] = True  # the step's bookkeeping of which pairs to act on
        if self.overlaps(node, rule):
            self.stats["overlapping_rules"] += 1
        node.sov.store.share(rule, ledger=node.sov.ledger, hlc=self.tick(node))
        self.book[node.index][rule.rule_id] = rule
        self.changed(node)
        self.stats[f"rule_{rule.effect}_{rule.direction}_{rule.subject.kind}"] += 1
        self.stats["rule_any_domain"] += rule.domain == "*"
        self.log(f"share {node.index} {rule.describe()[:90]}")

    def overlaps(self, node: SovNode, rule: ShareRule) -> bool:
        """Would `rule` and another allow rule of `node` match one peer and domain?
        (Each is proposed and revoked on its own: fedsim seeds 0 and 2.)"""
        if rule.effect is not Effect.ALLOW:
            return False
        return any(other.effect is Effect.ALLOW and other.rule_id != rule.rule_id
                   and ("*" in (rule.domain, other.domain) or rule.domain == other.domain)
                   and subject_matches(rule, self.info(peer))
                   and subject_matches(other, self.info(peer))
                   for other in self.book[node.index].values()
                   for peer in self.nodes if peer is not node)

    def revoke(self, node: SovNode, pair: service_sim_sov.Pair) -> None:
        assert node.sov is not None
        self.allow[pair] = False
        book = self.book[node.index]
        if not book:
            return
        rule = book[self.rng.choice(sorted(book))]
        removed = node.sov.store.revoke(rule.subject, rule.domain, direction=rule.direction,
                                        effect=rule.effect, ledger=node.sov.ledger,
                                        hlc=self.tick(node))
        want = [r for r in book.values() if r.subject == rule.subject and
                r.domain == rule.domain and r.effect is rule.effect and
                r.direction is rule.direction]
        if sorted(r.rule_id for r in removed) != sorted(r.rule_id for r in want):
            self.fail(f"node {node.index}: revoking {rule.rule_id} removed "
                      f"{[r.rule_id for r in removed]}")
        for gone in want:
            del book[gone.rule_id]
        self.revokes[node.index] += sum(1 for r in want if r.effect is Effect.ALLOW)
        self.changed(node)
        self.log(f"revoke {node.index} {rule.describe()[:90]}")

    def set_residency(self, node: SovNode, rule: ResidencyRule, remove: bool = False) -> None:
        assert node.sov is not None
        node.sov.store.set_residency(rule, remove=remove)
        if remove:
            self.kept[node.index].pop(rule.rule_id, None)
        else:
            self.kept[node.index][rule.rule_id] = rule
        self.log(f"residency {node.index} {sorted(self.kept[node.index])}")

    def act_residency(self, node: SovNode) -> None:
        kept = self.kept[node.index]
        if kept and self.rng.random() < 0.5:
            self.set_residency(node, kept[self.rng.choice(sorted(kept))], remove=True)
        else:
            self.set_residency(node, ResidencyRule(self.rng.choice(service_sim_sov.DOMAINS),
                                                   node.region))

    def new_scope(self, node: SovNode) -> ShareScope:
        return ShareScope(forward=self.rng.random() < 0.8,
                          residency=node.region if self.rng.random()
                          < self.scope_residency_rate else "")

    def edit(self, node: SovNode, head: Gene) -> None:
        node.last_hlc = max(node.last_hlc, head.hlc)  # a person's edit follows what it saw
        super().edit(node, head)

    def resolve(self, node: SovNode, conflict: Conflict) -> None:
        """A person keeps one side, on the node's own (skewed) clock: the resolution's
        stamp must still be above both sides'."""
        assert node.sync is not None and node.gate is not None
        keep = self.rng.choice(("local", "remote"))
        resolved = resolve_conflict(node.sync.store, node.key, conflict.key, keep, None,
                                    physical_ms=EPOCH_MS + node.skew_ms
                                    + int(trio.current_time() * 1000),
                                    clock=node.gate.clock)
        if resolved.hlc <= max(conflict.local.hlc, conflict.remote.hlc):
            self.fail(f"node {node.index}: the resolution of {conflict.key[:12]} is stamped "
                      f"{resolved.hlc}, not above both sides")
        self.ack(node, resolved)
        self.resolutions.append((node.index, resolved.id))
        self.stats["resolved_skewed" if node.skew_ms else "resolved"] += 1
        self.log(f"resolve {node.index} {conflict.key[:12]} keep={keep}")

    async def step(self) -> None:
        if self.rng.random() < RESIDENCY_RATE:
            up = [n for n in self.nodes if n.up]
            if up:
                self.act_residency(self.rng.choice(up))
        else:
            await super().step()
        self.check_audit_tails()

    # -- the checks, on the model ------------------------------------------------------
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
            assert node.sov is not None and node.cortex is not None
            report = node.sov.audit.verify()
            if not report.ok:
                self.fail(f"node {node.index} audit log: {report.reason}")
            records = list(node.sov.audit.records())
            sent[node.index] = {(r.peer, r.gene_id, r.version_hash) for r in records
                                if r.kind == AuditKind.GENE_SENT}
            received[node.index] = {(r.peer, r.gene_id, r.version_hash) for r in records
                                    if r.kind == AuditKind.GENE_RECEIVED}
            entries = list(Ledger(node.cortex.env).entries())
            revocations = sum(1 for e in entries if e.kind == "revocation")
            if revocations != self.revokes[node.index]:
                self.fail(f"node {node.index}: {self.revokes[node.index]} allow rules "
                          f"revoked, {revocations} on the ledger")
            recorded = {(e.summary.get("peer"), e.summary.get("domain")) for e in entries
                        if e.kind == "agreement"}
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


def run(seed: int, root: Path, net_class: type[RulesNet] = RulesNet) -> SovSimResult:
    """One seeded run under `root`; `ServiceSimFailure` when an invariant breaks."""
    return service_sim_sov.run(seed, root, net_class)


def run_seed(seed: int) -> SovSimResult:
    """`run` in a scratch directory of its own on /dev/shm when there is one."""
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as scratch:
        return run(seed, Path(scratch))


def main(argv: list[str]) -> int:
    """`python tests/sim/service_sim_fed_rules.py [FIRST [COUNT]]`: one line per failing
    seed, a summary with CPU seconds per seed; exit status 1 if any seed failed."""
    first = int(argv[0]) if argv else 0
    count = int(argv[1]) if len(argv) > 1 else 100
    failed = 0
    started = time.process_time()
    for seed in range(first, first + count):
        try:
            run_seed(seed)
        except service_sim_sov.ServiceSimFailure as exc:
            failed += 1
            print(exc, flush=True)
    spent = time.process_time() - started
    print(f"{count} seeds from {first}: {failed} failed, {spent / count:.3f} CPU s/seed",
          flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
