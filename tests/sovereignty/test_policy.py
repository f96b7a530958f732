"""The pure policy core: default deny, deny overrides, mutual consent, residency, scope."""

from __future__ import annotations

import dataclasses

import pytest
from gd_testkit import key_from_int, make_gene

from gd.genome import Gene, ShareScope, ValidationError
from gd.genome.gene import GeneStatus, gene_id_for, id_is_bound
from gd.protocol.errors import LocalProtocolError
from gd.protocol.policy_rules import Direction, Effect, PeerInfo, ResidencyRule, ShareRule, Subject
from gd.protocol.sovereignty import PolicySet
from gd.protocol.sovereignty_agreements import Proposal, ProposalError, ProposalKind
from gd.protocol.sovereignty_anonymise import (
    PARAM_PSEUDONYM_PREFIX,
    anonymisation_secret,
    derive_for,
    round_hlc,
)

A, B, C = key_from_int(11), key_from_int(12), key_from_int(13)
ME = PeerInfo(A.peer_id, "acme", "eu-west")
BOB = PeerInfo(B.peer_id, "bobco", "eu-west")
CAROL = PeerInfo(C.peer_id, "carolco", "us-east")


def allow(subject: str, domain: str = "turbofan", **kw: object) -> ShareRule:
    return ShareRule(Subject.parse(subject), domain, **kw)  # type: ignore[arg-type]


def consent_from(peer: PeerInfo, domain: str = "turbofan") -> tuple[ShareRule, ...]:
    """What `peer` told us: it shares `domain` with our org, both ways."""
    return (allow("org:acme", domain),)


def agreed(*rules: ShareRule, residency: tuple[ResidencyRule, ...] = ()) -> PolicySet:
    return PolicySet(ME, rules, residency, {BOB.peer_id: consent_from(BOB),
                                            CAROL.peer_id: consent_from(CAROL)})


def send(policy: PolicySet, gene: Gene, peer: PeerInfo) -> bool:
    return policy.allowed_to_send(gene, peer.peer_id, peer.org, peer.region).allowed


def test_default_deny_with_no_rules() -> None:
    decision = PolicySet(ME).allowed_to_send(make_gene(A), BOB.peer_id, "bobco", "eu-west")
    assert not decision.allowed and decision.rule is None
    assert decision.rule_id == "default-deny" and "default deny" in decision.reason


def test_allow_needs_mutual_consent() -> None:
    gene = make_gene(A)
    ours_only = PolicySet(ME, (allow(BOB.peer_id),))
    decision = ours_only.allowed_to_send(gene, BOB.peer_id, "bobco", "eu-west")
    assert not decision.allowed and "mutual consent" in decision.reason
    assert send(agreed(allow(BOB.peer_id)), gene, BOB)


def test_their_side_must_agree_to_the_reverse_direction() -> None:
    gene = make_gene(A)
    they_only_send = PolicySet(ME, (allow(BOB.peer_id),), (),
                               {BOB.peer_id: (allow("org:acme", direction=Direction.SEND),)})
    assert not send(they_only_send, gene, BOB)


def test_deny_overrides_a_more_specific_allow() -> None:
    gene = make_gene(A)
    policy = agreed(allow(BOB.peer_id), allow("region:eu-west", effect=Effect.DENY))
    decision = policy.allowed_to_send(gene, BOB.peer_id, "bobco", "eu-west")
    assert not decision.allowed
    assert decision.rule_id == "deny:both:turbofan:region:eu-west"


def test_most_specific_allow_decides_and_options_combine_conservatively() -> None:
    gene = make_gene(A)
    policy = agreed(allow("region:eu-west", "*", allow_forward=True),
                    allow(BOB.peer_id, anonymize=True))
    decision = policy.allowed_to_send(gene, BOB.peer_id, "bobco", "eu-west")
    assert decision.allowed and decision.rule_id == f"allow:both:turbofan:{BOB.peer_id}"
    assert decision.anonymize and not decision.allow_forward


def test_domain_and_direction_must_match() -> None:
    policy = agreed(allow(BOB.peer_id, direction=Direction.RECEIVE))
    assert not send(policy, make_gene(A), BOB)
    assert not send(agreed(allow(BOB.peer_id, "loan")), make_gene(A), BOB)
    assert send(agreed(allow(BOB.peer_id, "*")), make_gene(A), BOB)


def test_residency_rule_keeps_domain_in_region() -> None:
    policy = agreed(allow("org:bobco"), allow("org:carolco"),
                    residency=(ResidencyRule("turbofan", "eu-west"),))
    assert send(policy, make_gene(A), BOB)
    decision = policy.allowed_to_send(make_gene(A), CAROL.peer_id, "carolco", "us-east")
    assert not decision.allowed and decision.rule_id == "residency:turbofan:eu-west"
    assert not policy.allowed_to_send(make_gene(A), BOB.peer_id, "bobco", "").allowed


def test_forwarding_needs_the_origins_scope() -> None:
    foreign = make_gene(B)  # origin Bob, scope.forward False
    policy = agreed(allow("org:carolco"))
    decision = policy.allowed_to_send(foreign, CAROL.peer_id, "carolco", "us-east")
    assert not decision.allowed and "forwarded" in decision.reason
    forwardable = Gene.create(B, domain="turbofan", name="fwd", codons=foreign.codons,
                              action="inspect", scope=ShareScope(forward=True))
    assert send(agreed(allow("org:carolco", allow_forward=True)), forwardable, CAROL)
    # Without allow_forward it would have to go re-scoped: a derived gene, which only
    # its origin may make (docs/sovereignty.md), so a forwarder does not send it at all.
    decision = policy.allowed_to_send(forwardable, CAROL.peer_id, "carolco", "us-east")
    assert not decision.allowed and "only its origin" in decision.reason


def test_revoked_genes_are_never_sent() -> None:
    gene = make_gene(A).with_local(status=GeneStatus.REVOKED)
    assert not send(agreed(allow(BOB.peer_id)), gene, BOB)


def test_receiver_checks_consent_forwarding_and_residency() -> None:
    bob_policy = PolicySet(BOB, (allow(A.peer_id),), (), {A.peer_id: (allow("org:bobco"),)})
    own = make_gene(A)
    assert bob_policy.allowed_to_receive(own, A.peer_id, "acme", "eu-west").allowed
    assert not PolicySet(BOB, (allow(A.peer_id),)).allowed_to_receive(
        own, A.peer_id).allowed  # A never agreed to send to us
    relayed = make_gene(C)  # origin Carol, not forwardable, arriving from A
    decision = bob_policy.allowed_to_receive(relayed, A.peer_id, "acme", "eu-west")
    assert not decision.allowed and "forbids forwarding" in decision.reason
    resident = Gene.create(A, domain="turbofan", name="stay", codons=own.codons,
                           action="inspect", scope=ShareScope(residency="us-east"))
    assert not bob_policy.allowed_to_receive(resident, A.peer_id).allowed


def test_explain_lists_every_check() -> None:
    policy = agreed(allow(BOB.peer_id, anonymize=True))
    decision = policy.explain(make_gene(A), BOB.peer_id, "bobco", "eu-west")
    text = "\n".join(decision.steps)
    assert "our rules" in text and "their side" in text and "pseudonymised" in text


def test_rule_parsing_and_validation() -> None:
    assert str(Subject.parse("org:acme")) == "org:acme"
    assert Subject.parse(f"peer:{B.peer_id}") == Subject.parse(B.peer_id)
    with pytest.raises(ValidationError):
        Subject.parse("nobody")
    with pytest.raises(ValidationError):
        ShareRule(Subject.parse("org:a"), "Bad Domain")
    with pytest.raises(ValidationError):
        ShareRule(Subject.parse("org:a"), "x", effect=Effect.DENY, anonymize=True)
    rule = allow("region:eu-west", "*", anonymize=True)
    assert ShareRule.from_plain(rule.to_plain()) == rule


def test_derived_gene_is_deterministic_signed_and_pseudonymous() -> None:
    gene = Gene.create(A, domain="turbofan", name="secret-name", codons=make_gene(A).codons,
                       action="inspect", purpose="tenant 42 purpose",
                       params={"site": "plant-7", "limit": 3}, hlc=(1_700_000_123_456 << 16) | 5)
    secret = anonymisation_secret(A)
    one = derive_for(gene, B.peer_id, A, secret, anonymize=True, scope=ShareScope())
    assert one == derive_for(gene, B.peer_id, A, secret, anonymize=True, scope=ShareScope())
    one.verify()
    assert one.origin == A.peer_id and one.name.startswith("anon-")
    # Parameter names are pseudonymised too; numeric values stay (they are the rule).
    assert sorted(one.params.values(), key=str) != sorted(gene.params.values(), key=str)
    assert 3 in one.params.values() and "plant-7" not in one.params.values()
    assert not {"site", "limit"} & set(one.params)
    assert all(k.startswith(PARAM_PSEUDONYM_PREFIX) for k in one.params)
    assert one.hlc == round_hlc(gene.hlc) and (one.hlc >> 16) % 3_600_000 == 0
    assert id_is_bound(one) and one.parents[0] != gene.id
    other = derive_for(gene, C.peer_id, A, secret, anonymize=True, scope=ShareScope())
    assert other.name != one.name and other.id != one.id
    assert set(other.params) != set(one.params)  # per receiver: not linkable across peers
    plain = derive_for(gene, B.peer_id, A, secret, anonymize=False,
                       scope=ShareScope(forward=True))
    assert id_is_bound(plain) and plain.parents[1] == gene.id and plain.id != gene.id


def test_only_genes_we_authored_are_derived() -> None:
    """Issue 11, item 3: a gene that merely claims our origin is never signed by us."""
    claimed = Gene.create(B, domain="turbofan", name="x", codons=make_gene(A).codons,
                          action="inspect")
    forged = dataclasses.replace(claimed, origin=A.peer_id, author="", signature=b"",
                                 id=gene_id_for(A.peer_id, "turbofan", "x")).signed(B)
    with pytest.raises(LocalProtocolError, match="only a gene we authored"):
        derive_for(forged, C.peer_id, A, anonymisation_secret(A), anonymize=True,
                   scope=ShareScope())


def test_proposal_round_trip_and_tampering() -> None:
    proposal = Proposal.create(A, ProposalKind.SHARE, B.peer_id, allow("org:bobco"), 7)
    assert Proposal.decode(proposal.encode()) == proposal
    raw = bytearray(proposal.encode())
    raw[-70] ^= 1
    with pytest.raises(ProposalError):
        Proposal.decode(bytes(raw))
    with pytest.raises(ProposalError):
        Proposal.decode(b"\x93\x01\x02\x03")
