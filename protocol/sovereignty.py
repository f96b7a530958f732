"""Sovereignty: which genes may leave this node for whom, and which may come in (issue 7).

Sans-I/O and pure: rules, peer facts and genes go in, decisions and (re-signed) genes come
out. `node/store/policy_store.py` persists the rules and agreements; `node/` feeds both filters
below into the sync core (`gd.protocol.sync`).

The model, in the order `allowed_to_send` applies it (docs/sovereignty.md):

1. **Default deny.** Nothing flows unless a rule says so.
2. **Local rules.** A `ShareRule` names a subject (a peer id, ``org:NAME`` or
   ``region:R``), a domain (or ``*``), a direction (send, receive, both) and an effect.
   A matching *deny* overrides every allow, whatever their specificity (a deny is a
   promise "never", an allow only "may"). Among matching allows the most specific one
   (peer > org > region, then exact domain > ``*``) is named as the deciding rule; the
   options of all matching allows combine conservatively: any ``anonymize`` anonymises,
   ``allow_forward`` holds only if every matching allow grants it.
3. **Mutual consent** (Syncthing's model): the peer's side must agree as well. What we
   know of it is the rules its signed proposals addressed to us (`Proposal`); they are
   evaluated with us as the subject and the direction reversed (our send is its receive).
4. **Residency.** A `ResidencyRule` "domain D never leaves region R" lets genes of D go
   only to peers whose certified region is R; a gene's own ``scope.residency`` does the
   same for the region its origin chose.
5. **Forwarding scope.** A gene that reached us from another origin is passed on only
   when its origin set ``scope.forward``.

Anonymisation and re-scoping change the signed body, so the outgoing gene is then a
*derived* gene: same codons and action, its own id (per receiver), origin and author this
node, signed by us (`derive_for`). The original's signature could not survive the edit,
and claiming the origin's name for a body it never signed would be forgery.

Two more refusals keep derived genes from circulating without end (found by the
federation simulation, docs/simulation.md): **only a gene's origin derives** (a foreign
gene whose decision would need a derived form is not sent at all: passed on, it would
come back as a new gene under a new id on every hop of a cycle), and **no version goes
back to its author** (it holds it already; a derived form of it would be a new gene).

The vocabulary (peers, subjects, rules) is `gd.protocol.policy_rules`; derived genes and
pseudonyms `gd.protocol.sovereignty_anonymise`; signed proposals and agreements
`gd.protocol.sovereignty_agreements`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final

from gd.genome.errors import ValidationError
from gd.genome.gene import Gene, GeneStatus, ShareScope
from gd.genome.identity import NodeKey
from gd.protocol.policy_rules import (
    MAX_RULES,
    Direction,
    Effect,
    PeerInfo,
    ResidencyRule,
    ShareRule,
    Subject,
)
from gd.protocol.sovereignty_anonymise import derive_for


@dataclass(frozen=True, slots=True)
class ShareDecision:
    """The answer to "may this gene go to (come from) this peer", and why.

    `rule` is the rule that decided (the deny that refused, the allow that let it
    through), None for the default deny and for refusals that no rule made (the
    gene's own scope). `steps` is the explanation, check by check, for `policy test`.
    `scope` is the share scope the receiver must get (it differs from the gene's own
    when our rule is stricter, which forces a derived gene).
    """

    allowed: bool
    reason: str
    rule: ShareRule | ResidencyRule | None = None
    anonymize: bool = False
    allow_forward: bool = False
    scope: ShareScope | None = None
    steps: tuple[str, ...] = ()

    @property
    def rule_id(self) -> str:
        return self.rule.rule_id if self.rule is not None else "default-deny"

    def to_plain(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "reason": self.reason, "rule": self.rule_id,
                "anonymize": self.anonymize, "allow_forward": self.allow_forward,
                "scope": None if self.scope is None else self.scope.to_plain(),
                "steps": list(self.steps)}


def _refuse(reason: str, steps: list[str], rule: ShareRule | ResidencyRule | None = None
            ) -> ShareDecision:
    steps.append(f"refused: {reason}")
    return ShareDecision(False, reason, rule, steps=tuple(steps))


@dataclass(frozen=True, slots=True)
class _RuleVerdict:
    allowed: bool
    reason: str
    rule: ShareRule | None
    anonymize: bool = False
    allow_forward: bool = False


def evaluate_rules(rules: Sequence[ShareRule], peer: PeerInfo, domain: str,
                   direction: Direction) -> _RuleVerdict:
    """Default deny, deny overrides allow, most specific allow named (module docstring)."""
    matching = [r for r in rules if r.matches(peer, domain, direction)]
    denies = [r for r in matching if r.effect is Effect.DENY]
    if denies:
        rule = max(denies, key=lambda r: (r.specificity, r.rule_id))
        return _RuleVerdict(False, f"denied by rule {rule.rule_id}", rule)
    allows = [r for r in matching if r.effect is Effect.ALLOW]
    if not allows:
        return _RuleVerdict(False, f"no rule lets {domain} {direction} with "
                            f"{peer.peer_id} (default deny)", None)
    rule = max(allows, key=lambda r: (r.specificity, r.rule_id))
    return _RuleVerdict(True, f"allowed by rule {rule.rule_id}", rule,
                        anonymize=any(r.anonymize for r in allows),
                        allow_forward=all(r.allow_forward for r in allows))


def _no_derived_forward(gene: Gene, anonymize: bool, scope: ShareScope) -> str:
    """Why a foreign gene that would need a derived form is not sent at all.

    A derived gene has a new id and this node as its origin. If forwarders derived
    too, a gene passed on around any cycle of anonymising (or re-scoping) agreements
    would come back as a "new" gene of each node in turn, under a new id on every hop,
    and replicas would never settle. So only the origin derives; a forwarder passes a
    gene on exactly as its origin signed it, or not at all.
    """
    needs = []
    if anonymize:
        needs.append("anonymised")
    if scope.forward != gene.scope.forward:
        needs.append("without the right to forward it")
    if scope.residency != gene.scope.residency:
        needs.append(f"kept in region {scope.residency}")
    return (f"our rules would send this gene of origin {gene.origin} (version by "
            f"{gene.author}) {' and '.join(needs)}, which only its origin may do with a "
            "version it authored (a derived gene); a forwarder passes a gene on as its "
            "author signed it or not at all")


# Rule verdicts one `PolicySet` remembers (distinct peers x domains x directions).
MAX_VERDICTS: Final = 4096


@dataclass(frozen=True)
class PolicySet:
    """Everything a send or receive decision depends on, as one immutable value.

    `me`: this node (its org and region are what peers' rules match).
    `rules`: our share rules. `residency`: our residency rules.
    `remote`: peer id -> the rules that peer's in-force proposals addressed to us, i.e.
    our knowledge of its side of each agreement.
    """

    me: PeerInfo
    rules: tuple[ShareRule, ...] = ()
    residency: tuple[ResidencyRule, ...] = ()
    remote: Mapping[str, tuple[ShareRule, ...]] = field(default_factory=dict)
    # (ours?, peer, domain, direction) -> `evaluate_rules`' verdict (`_verdict`).
    _verdicts: dict[tuple[bool, PeerInfo, str, Direction], _RuleVerdict] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.rules) > MAX_RULES:
            raise ValidationError("rules", f"{len(self.rules)} rules, the limit is {MAX_RULES}")
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "residency", tuple(self.residency))
        object.__setattr__(self, "remote", MappingProxyType(
            {peer: tuple(rules) for peer, rules in self.remote.items()}))

    # -- immutable updates (what the store and the tests build sets with) -------------
    def with_rule(self, rule: ShareRule) -> PolicySet:
        """Add `rule`, replacing the rule with the same `rule_id` (new options)."""
        kept = tuple(r for r in self.rules if r.rule_id != rule.rule_id)
        return replace(self, rules=(*kept, rule))

    def without_rules(self, subject: Subject, domain: str, direction: Direction | None = None,
                      effect: Effect = Effect.ALLOW) -> PolicySet:
        """Drop the rules of `effect` for (subject, domain[, direction])."""
        return replace(self, rules=tuple(
            r for r in self.rules
            if not (r.subject == subject and r.domain == domain and r.effect is effect
                    and (direction is None or r.direction is direction))))

    def with_residency(self, rule: ResidencyRule) -> PolicySet:
        return replace(self, residency=(*(r for r in self.residency if r != rule), rule))

    def with_remote(self, peer_id: str, rules: Sequence[ShareRule]) -> PolicySet:
        remote = dict(self.remote)
        if rules:
            remote[peer_id] = tuple(rules)
        else:
            remote.pop(peer_id, None)
        return replace(self, remote=remote)

    # -- decisions ------------------------------------------------------------------------
    def _verdict(self, ours: bool, peer: PeerInfo, domain: str, direction: Direction
                 ) -> _RuleVerdict:
        """`evaluate_rules` of our rules for `peer` (ours) or of the rules `peer` sent us
        for us, remembered for this set's life: the set is immutable, so the verdict
        for (peer, domain, direction) cannot change, and a sync batch asks it of every
        gene (~40 us a gene on a repair responder, issue 15). At most MAX_VERDICTS kept.
        Threads may race on an entry; they compute the same value."""
        memo = self._verdicts
        key = (ours, peer, domain, direction)
        found = memo.get(key)
        if found is None:
            found = evaluate_rules(self.rules, peer, domain, direction) if ours else \
                evaluate_rules(self.remote.get(peer.peer_id, ()), self.me, domain, direction)
            if len(memo) < MAX_VERDICTS:
                memo[key] = found
        return found

    def _consent(self, peer: PeerInfo, domain: str, direction: Direction,
                 steps: list[str]) -> tuple[_RuleVerdict, ShareDecision | None]:
        """Our rule and the peer's known rule for `direction` (ours), or a refusal."""
        local = self._verdict(True, peer, domain, direction)
        steps.append(f"our rules, {direction} {domain} with {peer.peer_id}: {local.reason}")
        if not local.allowed:
            return local, _refuse(local.reason, steps, local.rule)
        theirs = self._verdict(False, peer, domain, direction.opposite)
        if not theirs.allowed:
            reason = (f"{peer.peer_id} has not agreed to {direction.opposite} {domain} "
                      f"with us (no mutual consent)")
            steps.append(f"their side: {theirs.reason}")
            return local, _refuse(reason, steps, theirs.rule)
        steps.append(f"their side: {theirs.reason} (mutual consent)")
        return local, None

    def allowed_to_send(self, gene: Gene, receiver_peer: str, receiver_org: str = "",
                        receiver_region: str = "") -> ShareDecision:
        """May `gene` go to this receiver, in which scope, anonymised or not."""
        peer = PeerInfo(receiver_peer, receiver_org, receiver_region)
        steps: list[str] = [f"send gene {gene.id} v{gene.version} ({gene.domain}) to "
                            f"{peer.peer_id} (org {peer.org or '?'}, region "
                            f"{peer.region or '?'})"]
        if gene.status is GeneStatus.REVOKED:
            return _refuse("its origin revoked this gene", steps)
        if gene.status is not GeneStatus.NATIVE:
            # A received gene is `adaptation_pending` until a person approves it; our own
            # variants likewise. Nothing unapproved leaves the node (issue 11, item 3).
            return _refuse(f"the gene is {gene.status}: only native genes are shared", steps)
        if gene.author == peer.peer_id:
            return _refuse(f"{peer.peer_id} authored this version: it holds it already, "
                           "and offering it back could only echo it (or, derived, loop it)",
                           steps)
        if gene.origin != self.me.peer_id and not gene.scope.forward:
            return _refuse(f"gene from origin {gene.origin} may not be forwarded "
                           "(scope.forward is false)", steps)
        local, refusal = self._consent(peer, gene.domain, Direction.SEND, steps)
        if refusal is not None:
            return refusal
        if gene.scope.residency and peer.region != gene.scope.residency:
            return _refuse(f"the gene's scope keeps it in region {gene.scope.residency}; "
                           f"the receiver is in {peer.region or 'an unknown region'}", steps)
        residency = ""
        for rule in self.residency:
            if rule.covers(gene.domain):
                if peer.region != rule.region:
                    return _refuse(f"{rule.describe()}; the receiver is in "
                                   f"{peer.region or 'an unknown region'}", steps, rule)
                residency = rule.region
                steps.append(f"residency: {rule.describe()}; the receiver is in it")
        forward = gene.scope.forward and local.allow_forward
        # The residency has to travel with the gene once receivers may pass it on,
        # or the next hop would not know where the gene must stay.
        scope = ShareScope(forward=forward,
                           residency=gene.scope.residency or (residency if forward else ""))
        authored = gene.origin == self.me.peer_id and gene.author == self.me.peer_id
        if not authored and (local.anonymize or scope != gene.scope):
            return _refuse(_no_derived_forward(gene, local.anonymize, scope), steps,
                           local.rule)
        if scope != gene.scope:
            steps.append(f"scope for this receiver: forward={scope.forward}, "
                         f"residency={scope.residency or '-'} (derived gene, re-signed by us)")
        if local.anonymize:
            steps.append("metadata is pseudonymised for this receiver (derived gene)")
        reason = local.reason
        steps.append(f"allowed: {reason}")
        return ShareDecision(True, reason, local.rule, local.anonymize, forward, scope,
                             tuple(steps))

    def allowed_to_receive(self, gene: Gene, sender_peer: str, sender_org: str = "",
                           sender_region: str = "") -> ShareDecision:
        """The receiver's own check on a verified gene from `sender_peer`."""
        peer = PeerInfo(sender_peer, sender_org, sender_region)
        steps = [f"receive gene {gene.id} v{gene.version} ({gene.domain}) from "
                 f"{peer.peer_id}"]
        if gene.origin != peer.peer_id and not gene.scope.forward:
            return _refuse(f"gene of origin {gene.origin} came through {peer.peer_id}, and "
                           "its scope forbids forwarding", steps)
        if gene.scope.residency and gene.scope.residency != self.me.region:
            return _refuse(f"the gene's scope keeps it in region {gene.scope.residency}; "
                           f"we are in {self.me.region or 'an unknown region'}", steps)
        local, refusal = self._consent(peer, gene.domain, Direction.RECEIVE, steps)
        if refusal is not None:
            return refusal
        steps.append(f"accepted: {local.reason}")
        return ShareDecision(True, local.reason, local.rule, steps=tuple(steps))

    explain = allowed_to_send


# -- filters for the sync core ---------------------------------------------------------------

FeedReader = Callable[[int, int], Iterable[tuple[int, Gene | None]]]


@dataclass(frozen=True, slots=True)
class SentGene:
    """A gene that went into a batch: the stored original, what went out, and why."""

    original: Gene
    outgoing: Gene
    decision: ShareDecision


class OutboundFilter:
    """`gd.protocol.sync.SyncSender`'s feed reader and policy for one receiver.

    The sync core sends `gene.to_wire()` of what the feed reader returns, for the entries
    its policy callback approves. So the filter decides on the *stored* gene inside
    `read_feed`, substitutes the derived form where one is needed (anonymised or
    re-scoped), and `policy` approves exactly the forms it cleared. A withheld gene is
    therefore never encoded for this peer. `policies` is called for every read, so a
    revocation takes effect on the very next batch. `sent` lists what the sync core
    actually put in batches (it asks the policy only for entries inside a batch);
    `withheld` what the last read refused, with the reasons.

        view = OutboundFilter(store.policies, receiver, key, secret, cortex_feed)
        sender = SyncSender(receiver.peer_id, view.read_feed, view.policy)
    """

    def __init__(self, policies: PolicySet | Callable[[], PolicySet], receiver: PeerInfo,
                 key: NodeKey, secret: bytes, read_feed: FeedReader) -> None:
        self._policies = policies if callable(policies) else (lambda: policies)
        self.receiver = receiver
        self.key = key
        self.secret = secret
        self._read_feed = read_feed
        self._cleared: dict[tuple[str, bytes], SentGene] = {}
        self.sent: list[SentGene] = []
        self.withheld: list[tuple[Gene, ShareDecision]] = []

    def read_feed(self, since: int, limit: int) -> Iterator[tuple[int, Gene | None]]:
        """Lazily: the sync core stops iterating once its batch is full, and entries it
        never reaches are neither evaluated nor derived (it scans up to 8x a batch).
        An entry the reader passed as None (the receiver's own version, not decoded)
        passes as None: there is nothing to judge, and nothing of it is sent."""
        policy = self._policies()
        self._cleared.clear()
        self.withheld.clear()
        for seq, gene in self._read_feed(since, limit):
            if gene is None:
                yield seq, None
                continue
            decision = policy.allowed_to_send(gene, self.receiver.peer_id, self.receiver.org,
                                              self.receiver.region)
            outgoing = gene
            if decision.allowed and (decision.anonymize or decision.scope != gene.scope):
                outgoing = derive_for(gene, self.receiver.peer_id, self.key, self.secret,
                                      anonymize=decision.anonymize,
                                      scope=decision.scope or ShareScope())
            if decision.allowed:
                self._cleared[(outgoing.id, outgoing.version_hash)] = SentGene(
                    gene, outgoing, decision)
            else:
                self.withheld.append((gene, decision))
            yield seq, outgoing

    def policy(self, receiver: str, gene: Gene) -> bool:
        if receiver != self.receiver.peer_id:
            return False
        cleared = self._cleared.get((gene.id, gene.version_hash))
        if cleared is None or cleared.outgoing is not gene:
            return False
        self.sent.append(cleared)
        return True

    def take_sent(self) -> list[SentGene]:
        """The genes sent since the last call (for the audit log)."""
        sent, self.sent = self.sent, []
        return sent


class InboundFilter:
    """`gd.protocol.sync.SyncReceiver`'s `accept` callback for one sender; it keeps each
    decision so the node can write the audit log after the batch applies."""

    def __init__(self, policies: PolicySet | Callable[[], PolicySet], sender: PeerInfo
                 ) -> None:
        self._policies = policies if callable(policies) else (lambda: policies)
        self.sender = sender
        self.accepted: list[tuple[Gene, ShareDecision]] = []
        self.refused: list[tuple[Gene, ShareDecision]] = []

    def accept(self, gene: Gene) -> bool:
        decision = self._policies().allowed_to_receive(
            gene, self.sender.peer_id, self.sender.org, self.sender.region)
        (self.accepted if decision.allowed else self.refused).append((gene, decision))
        return decision.allowed
