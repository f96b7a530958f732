"""A `PolicySet` remembers its rule verdicts per (ours/theirs, peer, domain, direction)
(issue 15: `evaluate_rules` ran for every gene of a batch): the decisions, their rules
and explanations are what a fresh set gives for each gene, the rules are evaluated once
per kind of question, and a changed policy (a new set) is judged on its own rules."""

from __future__ import annotations

import dataclasses

from gd_testkit import key_from_int, make_gene

from gd.protocol import sovereignty
from gd.protocol.policy_rules import Direction, PeerInfo, ShareRule, Subject
from gd.protocol.sovereignty import PolicySet, ShareDecision

A, B, C = key_from_int(91), key_from_int(92), key_from_int(93)
ME = PeerInfo(A.peer_id, "acme", "eu-west")
BOB = PeerInfo(B.peer_id, "bobco", "eu-west")
CAROL = PeerInfo(C.peer_id, "carolco", "us-east")


def policy() -> PolicySet:
    """Bob: turbofan both ways, loan send-only (we send, he only receives); Carol: loan
    receive-only. Both told us the matching other side."""
    ours = (ShareRule(Subject.parse(f"peer:{B.peer_id}"), "turbofan"),
            ShareRule(Subject.parse(f"peer:{B.peer_id}"), "loan", Direction.SEND),
            ShareRule(Subject.parse(f"peer:{C.peer_id}"), "loan", Direction.RECEIVE))
    theirs = {B.peer_id: (ShareRule(Subject.parse("org:acme"), "turbofan"),
                          ShareRule(Subject.parse("org:acme"), "loan", Direction.RECEIVE)),
              C.peer_id: (ShareRule(Subject.parse("org:acme"), "loan", Direction.SEND),)}
    return PolicySet(ME, ours, (), theirs)


def questions() -> list[tuple[str, object, PeerInfo]]:
    genes = [make_gene(k, f"g{i}", domain) for i, (k, domain) in enumerate(
        [(A, "turbofan"), (A, "loan"), (B, "turbofan"), (C, "loan"), (A, "loan"),
         (B, "loan"), (C, "turbofan")])]
    return [(way, g, peer) for way in ("send", "receive") for g in genes
            for peer in (BOB, CAROL)]


def ask(p: PolicySet, way: str, gene, peer: PeerInfo) -> ShareDecision:
    judge = p.allowed_to_send if way == "send" else p.allowed_to_receive
    return judge(gene, peer.peer_id, peer.org, peer.region)


def test_remembered_verdicts_decide_as_a_fresh_set_would(monkeypatch) -> None:
    calls: list[tuple[str, str, Direction]] = []
    real = sovereignty.evaluate_rules

    def counted(rules, peer, domain, direction):
        calls.append((peer.peer_id, domain, direction))
        return real(rules, peer, domain, direction)

    monkeypatch.setattr(sovereignty, "evaluate_rules", counted)
    shared = policy()
    got = [ask(shared, *q) for q in questions() * 3]
    reused = len(calls)
    want = [ask(policy(), *q) for q in questions() * 3]  # a fresh set per question
    assert got == want
    assert {d.allowed for d in got} == {True, False}  # both kinds of answer occur
    # Each distinct (ours/theirs, peer, domain, direction) was evaluated once.
    assert reused == len(set(calls)) < len(calls) - reused


def test_a_new_set_is_judged_on_its_own_rules() -> None:
    p = policy()
    gene = make_gene(A, "hot", "turbofan")
    assert ask(p, "send", gene, BOB).allowed
    revoked = p.without_rules(Subject.parse(f"peer:{B.peer_id}"), "turbofan")
    assert not ask(revoked, "send", gene, BOB).allowed
    assert ask(p, "send", gene, BOB).allowed  # the old set is unchanged
    assert dataclasses.replace(p) == p  # the memo takes no part in equality
