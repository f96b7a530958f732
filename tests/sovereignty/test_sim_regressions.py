"""The three sovereignty bugs the federation simulation found (docs/simulation.md,
"Findings"), each pinned on its own, small and deterministic:

* overlapping share rules: every rule is proposed and revoked per (peer, rule id);
* derived genes looping: only a gene's origin derives, and no version goes back to its
  author;
* a late share undoing a revoke: stale proposals are ignored, outbox numbers and
  proposal stamps never go back (across restarts too).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gd_testkit import key_from_int
from sov_sim import MemNode, sync

from gd.genome import Codon, Gene, NodeKey, ShareScope
from gd.node.store.audit import AuditLog
from gd.node.store.cortex import Cortex
from gd.node.store.policy_store import PolicyStore, rule_from_options
from gd.protocol.policy_rules import Direction, PeerInfo, ResidencyRule, ShareRule, Subject
from gd.protocol.sovereignty import OutboundFilter, PolicySet
from gd.protocol.sovereignty_agreements import Agreement, AgreementState, Proposal, ProposalKind
from gd.protocol.sovereignty_anonymise import anonymisation_secret

ACME, BOB, CAROL = key_from_int(301), key_from_int(302), key_from_int(303)
BOB_INFO = PeerInfo(BOB.peer_id, "bobco", "eu-west")
CAROL_INFO = PeerInfo(CAROL.peer_id, "bobco", "eu-west")


class Node:
    """A PolicyStore on its own Cortex that can be closed and reopened (a restart)."""

    def __init__(self, root: Path, key: NodeKey, org: str, region: str = "eu-west") -> None:
        self.key, self.org, self.region = key, org, region
        self.path = root / key.peer_id[-8:]
        self.open()

    def open(self) -> None:
        self.cortex = Cortex.open(self.path)
        self.audit = AuditLog(self.cortex)
        self.store = PolicyStore(self.cortex, self.key, org=self.org, region=self.region,
                                 audit=self.audit)

    def restart(self) -> None:
        self.cortex.close()
        self.open()

    @property
    def info(self) -> PeerInfo:
        return self.store.me


def deliver(src: Node, dst: Node) -> list[bool]:
    """Hand `dst` all of `src`'s outbox, acknowledge it; the `stale` flag of each."""
    box = src.store.outbox(dst.key.peer_id)
    stale = [dst.store.receive_proposal(data, src.key.peer_id, hlc=seq).stale
             for seq, data in box]
    if box:
        src.store.delivered(dst.key.peer_id, box[-1][0])
    return stale


def believes(node: Node, peer: Node) -> set[str]:
    """The rule ids `node` holds as `peer`'s consent."""
    return {r.rule_id for r in node.store.remote_rules().get(peer.key.peer_id, ())}


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[Node, Node, Node]]:
    made = (Node(tmp_path, ACME, "acme"), Node(tmp_path, BOB, "bobco"),
            Node(tmp_path, CAROL, "bobco"))
    yield made
    for node in made:
        node.cortex.close()


# -- 1. overlapping rules ---------------------------------------------------------------------


def test_a_peer_met_later_gets_every_matching_rule_not_only_the_first(nodes) -> None:
    acme, bob, _ = nodes
    by_peer = rule_from_options(BOB.peer_id, "turbofan", direction="send")
    by_org = rule_from_options("org:bobco", "turbofan")
    acme.store.share(by_org, hlc=1)
    acme.store.share(by_peer, hlc=2)  # proposed at once: a peer rule names its peer
    deliver(acme, bob)
    acme.store.set_peer(BOB_INFO, hlc=3)  # the handshake: the org rule matches now
    deliver(acme, bob)
    assert believes(bob, acme) == {by_peer.rule_id, by_org.rule_id}
    assert acme.store.set_peer(BOB_INFO, hlc=4) == 0  # and only once


def test_revoking_the_less_specific_of_two_rules_tells_the_peer(nodes) -> None:
    acme, bob, _ = nodes
    acme.store.set_peer(BOB_INFO, hlc=1)
    by_peer = rule_from_options(BOB.peer_id, "turbofan", direction="send")
    by_org = rule_from_options("org:bobco", "turbofan")
    acme.store.share(by_peer, hlc=2)
    acme.store.share(by_org, hlc=3)
    deliver(acme, bob)
    # The agreement names the peer rule (most specific) and keeps both.
    row = acme.store.agreement(BOB.peer_id, "turbofan")
    assert row.our_rule == by_peer and set(row.our_rules) == {by_peer, by_org}
    assert acme.store.revoke(Subject.parse("org:bobco"), "turbofan", hlc=4) == [by_org]
    (revoke,) = [Proposal.decode(d) for _, d in acme.store.outbox(BOB.peer_id)]
    assert revoke.kind is ProposalKind.REVOKE and revoke.rule == by_org
    deliver(acme, bob)
    assert believes(bob, acme) == {by_peer.rule_id}
    assert acme.store.agreement(BOB.peer_id, "turbofan").our_rules == (by_peer,)


def test_a_revoke_goes_to_every_peer_the_rule_was_proposed_to(nodes) -> None:
    acme, bob, carol = nodes
    rule = rule_from_options("org:bobco", "loan")
    acme.store.share(rule, hlc=1)
    acme.store.set_peer(BOB_INFO, hlc=2)
    acme.store.set_peer(CAROL_INFO, hlc=3)
    for peer in (bob, carol):
        deliver(acme, peer)
        assert believes(peer, acme) == {rule.rule_id}
    acme.store.revoke(Subject.parse("org:bobco"), "loan", hlc=4)
    for peer in (bob, carol):
        deliver(acme, peer)
        assert believes(peer, acme) == set()


def test_an_agreement_stays_effective_while_one_of_their_rules_is_in_force(nodes) -> None:
    acme, bob, _ = nodes
    acme.store.set_peer(BOB_INFO, hlc=1)
    bob.store.set_peer(acme.info, hlc=1)
    acme.store.share(rule_from_options("org:bobco", "turbofan"), hlc=2)
    bob.store.share(rule_from_options(ACME.peer_id, "turbofan"), hlc=3)
    bob.store.share(rule_from_options("org:acme", "turbofan"), hlc=4)
    deliver(bob, acme)
    assert acme.store.agreement(BOB.peer_id, "turbofan").state is AgreementState.EFFECTIVE
    bob.store.revoke(Subject.parse(ACME.peer_id), "turbofan", hlc=5)
    deliver(bob, acme)
    row = acme.store.agreement(BOB.peer_id, "turbofan")
    assert row.state is AgreementState.EFFECTIVE and row.flows == ("out", "in")
    listed = row.to_json()
    assert listed["their_rules"] == ["allow:both:turbofan:org:acme"]
    bob.store.revoke(Subject.parse("org:acme"), "turbofan", hlc=6)
    deliver(bob, acme)
    assert acme.store.agreement(BOB.peer_id, "turbofan").state is AgreementState.REVOKED


def test_an_agreement_row_written_with_one_share_per_side_still_reads() -> None:
    share = Proposal.create(ACME, ProposalKind.SHARE, BOB.peer_id,
                            rule_from_options("org:bobco", "turbofan"), 1).encode()
    old = Agreement.from_plain({"peer": BOB.peer_id, "domain": "turbofan", "ours": share,
                                "theirs": None, "revoked": False, "events": [["shared", 1]]})
    assert old.our_shares == (share,) and old.their_shares == () and old.ours == share
    assert old.state is AgreementState.PROPOSED
    assert Agreement.from_plain(old.to_plain()) == old


# -- 2. derived genes never loop --------------------------------------------------------------


def forwardable(key: NodeKey, n: int, domain: str = "turbofan") -> Gene:
    return Gene.create(key, domain=domain, name=f"rule-{n}", codons=[Codon.simple(
        "s11", ">", 40.0 + n)], action="inspect", purpose="p", hlc=(n + 1) << 16,
        scope=ShareScope(forward=True))


ME = PeerInfo(ACME.peer_id, "acme", "eu-west")


def policy(*rules: ShareRule, residency: tuple[ResidencyRule, ...] = ()) -> PolicySet:
    """Acme's rules, with Bob and Carol having agreed to everything with Acme."""
    consent = (ShareRule(Subject.parse(ACME.peer_id), "*"),)
    return PolicySet(ME, rules, residency, {BOB.peer_id: consent, CAROL.peer_id: consent})


def to_carol(p: PolicySet, gene: Gene):
    return p.allowed_to_send(gene, CAROL.peer_id, CAROL_INFO.org, CAROL_INFO.region)


@pytest.mark.parametrize("options, needs", [
    ({"anonymize": True, "allow_forward": True}, "anonymised"),
    ({"allow_forward": False}, "without the right to forward it"),
])
def test_a_forwarder_never_derives_a_foreign_gene(options: dict, needs: str) -> None:
    rule = ShareRule(Subject.parse(CAROL.peer_id), "*", **options)
    decision = to_carol(policy(rule), forwardable(BOB, 1))
    assert not decision.allowed and needs in decision.reason
    assert "only its origin" in decision.reason and decision.rule == rule
    # The origin itself still derives its own gene for the same rule.
    own = to_carol(policy(rule), forwardable(ACME, 2))
    assert own.allowed and (own.anonymize or not own.scope.forward)


def test_a_residency_rule_that_would_rescope_a_foreign_gene_refuses_it() -> None:
    rule = ShareRule(Subject.parse(CAROL.peer_id), "*", allow_forward=True)
    stay = (ResidencyRule("turbofan", "eu-west"),)
    decision = to_carol(policy(rule, residency=stay), forwardable(BOB, 1))
    assert not decision.allowed and "kept in region eu-west" in decision.reason
    assert to_carol(policy(rule), forwardable(BOB, 1)).allowed  # as it is: fine


def test_a_foreign_gene_goes_on_as_its_origin_signed_it() -> None:
    rule = ShareRule(Subject.parse(CAROL.peer_id), "*", allow_forward=True)
    gene = forwardable(BOB, 1)
    decision = to_carol(policy(rule), gene)
    assert decision.allowed and decision.scope == gene.scope and not decision.anonymize


def test_no_version_goes_back_to_its_author() -> None:
    rule = ShareRule(Subject.parse(BOB.peer_id), "*", anonymize=True, allow_forward=True)
    theirs = forwardable(BOB, 1)
    ours_edited_by_bob = forwardable(ACME, 2).edited(BOB, hlc=9 << 16, action="hold")
    for gene in (theirs, ours_edited_by_bob):
        decision = policy(rule).allowed_to_send(gene, BOB.peer_id, "bobco", "eu-west")
        assert not decision.allowed and "authored this version" in decision.reason
    assert policy(rule).allowed_to_send(forwardable(ACME, 3), BOB.peer_id, "bobco",
                                        "eu-west").allowed


def test_the_outbound_filter_never_batches_a_receivers_own_version() -> None:
    rule = ShareRule(Subject.parse(BOB.peer_id), "*", allow_forward=True)
    feed = [(1, forwardable(BOB, 1)), (2, forwardable(ACME, 2))]
    view = OutboundFilter(policy(rule), BOB_INFO, ACME, anonymisation_secret(ACME),
                          lambda since, limit: feed[since:since + limit])
    out = list(view.read_feed(0, 10))
    assert [view.policy(BOB.peer_id, g) for _, g in out] == [False, True]
    assert [g.id for g, _ in view.withheld] == [feed[0][1].id]


def test_a_cycle_of_anonymising_forwarding_agreements_settles() -> None:
    """Three nodes, each anonymising with allow-forward to the next, round and round:
    the set of genes held stops growing after the origin's derived forms went out."""
    keys = [ACME, BOB, CAROL]
    infos = [PeerInfo(k.peer_id, f"org{i}", "eu-west") for i, k in enumerate(keys)]
    nodes = []
    for i, info in enumerate(infos):
        rules = tuple(ShareRule(Subject.parse(o.peer_id), "*", Direction.BOTH,
                                anonymize=True, allow_forward=True)
                      for o in infos if o != info)
        remote = {o.peer_id: (ShareRule(Subject.parse(info.peer_id), "*"),)
                  for o in infos if o != info}
        nodes.append(MemNode(keys[i], info, PolicySet(info, rules, (), remote)))
    for i, node in enumerate(nodes):
        node.add(forwardable(keys[i], i))
    sizes = []
    for _ in range(6):
        for a in nodes:
            for b in nodes:
                if a is not b:
                    sync(a, b)
        sizes.append(sum(len(n.feed) for n in nodes))
    # Each origin's gene plus one derived form per other node, nothing more, ever.
    assert sizes[-1] == sizes[1] == 3 * 3
    for node in nodes:
        for _, gene in node.received:
            assert gene.origin != node.peer  # nothing came back to its origin


# -- 3. a late share cannot undo a revoke -----------------------------------------------------


def test_a_late_share_after_its_revoke_changes_nothing(nodes) -> None:
    acme, bob, _ = nodes
    acme.store.set_peer(BOB_INFO, hlc=1)
    rule = rule_from_options("org:bobco", "turbofan")
    acme.store.share(rule, hlc=2)
    (_, share), = acme.store.outbox(BOB.peer_id)
    deliver(acme, bob)
    acme.store.revoke(Subject.parse("org:bobco"), "turbofan", hlc=3)
    deliver(acme, bob)
    records = len(bob.audit)
    outcome = bob.store.receive_proposal(share, ACME.peer_id, hlc=4)  # duplicated, late
    assert outcome.stale and outcome.revoked_domain is None
    assert believes(bob, acme) == set() and len(bob.audit) == records
    bob.restart()  # the mark is persisted
    assert bob.store.receive_proposal(share, ACME.peer_id, hlc=5).stale
    assert believes(bob, acme) == set()


def test_a_duplicate_is_stale_and_a_newer_share_applies(nodes) -> None:
    acme, bob, _ = nodes
    acme.store.set_peer(BOB_INFO, hlc=1)
    acme.store.share(rule_from_options("org:bobco", "turbofan"), hlc=2)
    (_, first), = acme.store.outbox(BOB.peer_id)
    assert deliver(acme, bob) == [False]
    assert bob.store.receive_proposal(first, ACME.peer_id, hlc=3).stale
    acme.store.share(rule_from_options("org:bobco", "turbofan", anonymize=True), hlc=4)
    assert deliver(acme, bob) == [False]
    (held,) = bob.store.remote_rules()[ACME.peer_id]
    assert held.anonymize


def test_proposal_stamps_never_go_back_even_when_the_clock_does(nodes) -> None:
    acme, bob, _ = nodes
    acme.store.set_peer(BOB_INFO, hlc=1)
    rule = rule_from_options("org:bobco", "turbofan")
    acme.store.share(rule, hlc=100)
    deliver(acme, bob)
    acme.restart()
    # Same instant, then a clock stepped back: each revoke / share is still newer.
    acme.store.revoke(Subject.parse("org:bobco"), "turbofan", hlc=100)
    acme.store.share(rule, hlc=50)
    stamps = [Proposal.decode(d).hlc for _, d in acme.store.outbox(BOB.peer_id)]
    assert stamps == sorted(stamps) and stamps[0] > 100 and len(set(stamps)) == 2
    assert deliver(acme, bob) == [False, False]
    assert believes(bob, acme) == {rule.rule_id}


def test_outbox_numbers_never_restart_once_the_outbox_drains(nodes) -> None:
    acme, _, _ = nodes
    acme.store.set_peer(BOB_INFO, hlc=1)
    acme.store.share(rule_from_options("org:bobco", "turbofan"), hlc=2)
    (first, _), = acme.store.outbox(BOB.peer_id)
    acme.store.delivered(BOB.peer_id, first)
    assert acme.store.outbox(BOB.peer_id) == []
    acme.restart()
    acme.store.revoke(Subject.parse("org:bobco"), "turbofan", hlc=3)
    (second, _), = acme.store.outbox(BOB.peer_id)
    assert second > first
    acme.store.delivered(BOB.peer_id, first)  # a late acknowledgement of the old entry
    assert [seq for seq, _ in acme.store.outbox(BOB.peer_id)] == [second]
