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
    send_verdict,
    subject_matches,
)
from service_sim_fed_rules_checks import RulesInvariants
from service_sim_sov import SovNode, SovSimResult

from gd.genome.gene import Gene, ShareScope
from gd.genome.identity import NodeKey
from gd.node.store.audit import GENESIS
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

REGIONS: Final = ("eu", "us")
MAX_SKEW_MS: Final = 2_000  # inside the handshake's 5-minute and the HLC's 60 s limits
RESIDENCY_RATE: Final = 0.03  # share of steps that add or remove a residency rule
Snapshot = tuple[float, tuple[ShareRule, ...]]


class RulesNet(RulesInvariants, FedNet):
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
