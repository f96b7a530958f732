"""An independent reading of the sovereignty rules, for the federation service sims
(`service_sim_fed_rules`): fedsim's oracle, kept when fedsim went (issue 12 item 6).

Why its own code: an oracle that called the product's `PolicySet` would agree with
every bug in it. So this module restates the documented model (docs/sovereignty.md,
`protocol/sovereignty.py`'s docstring) over plain tuples: default deny, a matching deny
overrides every allow, send-only / receive-only rules, peer, org and region subjects,
`*` domains, residency rules and a gene's own residency scope, forwarding scope; the
options of all matching allows combine conservatively (any anonymise anonymises,
forwarding only if every matching allow grants it). It imports no policy code; the
rule values themselves (`ShareRule`, `ResidencyRule`) are only read field by field.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gd.genome.gene import Gene, ShareScope
from gd.protocol.policy_rules import Direction, Effect, ResidencyRule, ShareRule, SubjectKind

Info = tuple[str, str, str]  # (peer id, org, region) as the peer's handshake proved them


def rule_matches(rule: ShareRule, peer: Info, domain: str, direction: Direction) -> bool:
    """Does `rule` speak of `peer`, `domain` and `direction`?"""
    if rule.direction is not Direction.BOTH and rule.direction is not direction:
        return False
    if rule.domain not in ("*", domain):
        return False
    return subject_matches(rule, peer)


def subject_matches(rule: ShareRule, peer: Info) -> bool:
    kind, value = rule.subject.kind, rule.subject.value
    peer_id, org, region = peer
    return ((kind is SubjectKind.PEER and peer_id == value)
            or (kind is SubjectKind.ORG and org == value)
            or (kind is SubjectKind.REGION and region == value))


@dataclass(frozen=True)
class Verdict:
    """May a gene go to a peer by the sender's own rules, and how."""

    allowed: bool
    reason: str = ""
    anonymize: bool = False
    forward: bool = False
    residency: str = ""


def send_verdict(me: str, rules: Iterable[ShareRule], residency: Iterable[ResidencyRule],
                 to: Info, gene: Gene) -> Verdict:
    """The sender's own rules on `gene` going to `to` (consent is judged apart)."""
    if gene.origin != me and not gene.scope.forward:
        return Verdict(False, "not forwardable")
    matching = [r for r in rules if rule_matches(r, to, gene.domain, Direction.SEND)]
    if any(r.effect is Effect.DENY for r in matching):
        return Verdict(False, "a deny rule matches")
    allows = [r for r in matching if r.effect is Effect.ALLOW]
    if not allows:
        return Verdict(False, "no allow rule for send")
    if gene.scope.residency and gene.scope.residency != to[2]:
        return Verdict(False, "the gene's residency scope")
    kept = ""
    for rule in residency:
        if rule.domain in ("*", gene.domain):
            if rule.region != to[2]:
                return Verdict(False, f"residency rule {rule.domain}->{rule.region}")
            kept = rule.region
    return Verdict(True, "", any(r.anonymize for r in allows),
                   gene.scope.forward and all(r.allow_forward for r in allows), kept)


def receive_reason(me: Info, rules: Iterable[ShareRule], sender: Info, gene: Gene) -> str:
    """Why the receiver's own rules refuse `gene` from `sender` ("" if they accept)."""
    if gene.origin != sender[0] and not gene.scope.forward:
        return "forwarded without scope.forward"
    if gene.scope.residency and gene.scope.residency != me[2]:
        return "outside its residency region"
    matching = [r for r in rules if rule_matches(r, sender, gene.domain, Direction.RECEIVE)]
    if any(r.effect is Effect.DENY for r in matching):
        return "a deny rule matches"
    if not any(r.effect is Effect.ALLOW for r in matching):
        return "no allow rule for receive"
    return ""


def consents(rules: Iterable[ShareRule], about: Info, domain: str,
             direction: Direction) -> bool:
    """Do these (a peer's, as proposed) rules let `about` have `direction` of `domain`?
    Only allow rules are ever proposed, so any matching allow is consent."""
    return any(r.effect is Effect.ALLOW and rule_matches(r, about, domain, direction)
               for r in rules)


def outgoing_scope(gene: Gene, verdict: Verdict) -> ShareScope:
    """The scope a receiver gets: forwardable only if the rules grant it, and then
    carrying the residency the sender's rules keep the domain in."""
    forward = gene.scope.forward and verdict.forward
    return ShareScope(forward=forward,
                      residency=gene.scope.residency or (verdict.residency if forward else ""))


def flows(ours: Iterable[ShareRule], theirs: Iterable[ShareRule]) -> bool:
    """Would an agreement row holding these allow rules of each side be in force?"""
    ours, theirs = list(ours), list(theirs)

    def covers(rules: list[ShareRule], d: Direction) -> bool:
        return any(r.direction in (Direction.BOTH, d) for r in rules)

    return (covers(ours, Direction.SEND) and covers(theirs, Direction.RECEIVE)) or (
        covers(ours, Direction.RECEIVE) and covers(theirs, Direction.SEND))
