"""Agreements: signed share proposals and the state both sides' consent makes, sans-I/O.

Agreements follow Syncthing's mutual consent: our signed share is the proposal, the
peer's matching share the acceptance (either may come first). A `Proposal` is one side's
signed share or revoke of one rule; an `Agreement` is what is in force between us and one
peer on one domain, with its recent events. `node/store/policy_store.py` persists both and
applies each operation in one transaction with its audit record.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, replace
from typing import Any, Final

from gd.genome import canonical, checks
from gd.genome.errors import DecodeError, SignatureError, ValidationError
from gd.genome.identity import NodeKey, is_peer_id, verify
from gd.protocol.errors import RemoteProtocolError
from gd.protocol.policy_rules import Direction, Effect, ShareRule

# A signed proposal is a peer id pair, one rule and a signature: well under 1 KiB. The
# bound is what one hostile proposal may make us decode.
MAX_PROPOSAL_BYTES: Final = 4096
PROPOSAL_TAG: Final = b"gd-share-proposal/1\x00"
# An agreement keeps its last events for `agreements list`; older ones stay in the audit
# log, which is the full history.
MAX_AGREEMENT_EVENTS: Final = 32


class ProposalError(RemoteProtocolError):
    """A peer's share proposal is malformed, mis-addressed or not signed by the sender."""



# -- signed proposals -------------------------------------------------------------------------


class ProposalKind(enum.StrEnum):
    SHARE = "share"
    REVOKE = "revoke"


_PROPOSAL_FIELDS: Final = {"hlc", "kind", "peer", "proposer", "rule", "sig"}


@dataclass(frozen=True, slots=True)
class Proposal:
    """A signed share (or revoke) from `proposer` to `peer` for one rule.

    A share is the proposer's half of an agreement; the matching share from the other
    side is the acceptance. Signed so that either side can show the other's consent (and
    record it on the ledger) without trusting the channel it came by.
    """

    kind: ProposalKind
    proposer: str
    peer: str
    rule: ShareRule
    hlc: int
    signature: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", ProposalKind(self.kind))
        for name in ("proposer", "peer"):
            if not is_peer_id(getattr(self, name)):
                raise ValidationError(name, f"{getattr(self, name)!r} is not a peer id")
        if not isinstance(self.rule, ShareRule) or self.rule.effect is not Effect.ALLOW:
            raise ValidationError("rule", "a proposal carries one allow rule")
        checks.uint("hlc", self.hlc)
        if not isinstance(self.signature, bytes) or len(self.signature) not in (0, 64):
            raise ValidationError("sig", "expected 64 bytes")

    def _plain(self) -> dict[str, Any]:
        return {"hlc": self.hlc, "kind": str(self.kind), "peer": self.peer,
                "proposer": self.proposer, "rule": self.rule.to_plain()}

    @property
    def signing_bytes(self) -> bytes:
        return PROPOSAL_TAG + canonical.encode(self._plain())

    @classmethod
    def create(cls, key: NodeKey, kind: ProposalKind | str, peer: str, rule: ShareRule,
               hlc: int) -> Proposal:
        unsigned = cls(ProposalKind(kind), key.peer_id, peer, rule, hlc)
        return replace(unsigned, signature=key.sign(unsigned.signing_bytes))

    def verify(self) -> None:
        try:
            verify(self.proposer, self.signing_bytes, self.signature)
        except SignatureError as exc:
            raise ProposalError(f"proposal not signed by {self.proposer}: {exc}") from None

    def encode(self) -> bytes:
        plain = self._plain()
        plain["sig"] = self.signature
        return canonical.encode(plain)

    @classmethod
    def decode(cls, data: bytes) -> Proposal:
        """Strictly decode and verify a peer's proposal; `ProposalError` if anything is off.

        Memoised on the exact bytes (the result is a pure function of them and immutable;
        a refusal is never cached): the policy store decodes every stored proposal again
        on each `policies()` read, and re-checking those signatures was a third of a
        federation simulation's CPU."""
        if not isinstance(data, bytes) or len(data) > MAX_PROPOSAL_BYTES:
            raise ProposalError(f"a proposal is bytes of at most {MAX_PROPOSAL_BYTES}")
        if cls is Proposal:
            return _decode_proposal(data)
        return cls._decode_checked(data)

    @classmethod
    def _decode_checked(cls, data: bytes) -> Proposal:
        try:
            plain = canonical.decode(data)
            plain = checks.require_map("proposal", plain)
            checks.known_keys("proposal", plain, _PROPOSAL_FIELDS)
            if set(plain) != _PROPOSAL_FIELDS:
                raise ValidationError("proposal", "missing fields")
            proposal = cls(plain["kind"], plain["proposer"], plain["peer"],
                           ShareRule.from_plain(plain["rule"]), plain["hlc"], plain["sig"])
        except (DecodeError, ValidationError, ValueError, TypeError) as exc:
            raise ProposalError(f"malformed proposal: {exc}") from None
        if proposal.encode() != data:
            raise ProposalError("proposal bytes are not canonical")
        proposal.verify()
        return proposal


@functools.lru_cache(maxsize=8192)
def _decode_proposal(data: bytes) -> Proposal:
    return Proposal._decode_checked(data)


# -- agreements ------------------------------------------------------------------------------


class AgreementState(enum.StrEnum):
    PROPOSED = "proposed"
    EFFECTIVE = "effective"
    REVOKED = "revoked"


# Decoding a proposal verifies its signature; an agreement row is read far more often than
# written, and its bytes never change, so the rule of each distinct proposal is decoded once.
_RULE_CACHE_SIZE: Final = 4096


@functools.lru_cache(maxsize=_RULE_CACHE_SIZE)
def _rule_of(data: bytes) -> ShareRule:
    return Proposal.decode(data).rule


def with_share(shares: tuple[bytes, ...], data: bytes) -> tuple[bytes, ...]:
    """`shares` with `data` in place of any share of the same rule id (sorted by rule id,
    so a row's bytes do not depend on the order the shares came in)."""
    rule_id = _rule_of(data).rule_id
    kept = [s for s in shares if _rule_of(s).rule_id != rule_id]
    return tuple(sorted((*kept, data), key=lambda s: _rule_of(s).rule_id))


def without_rule(shares: tuple[bytes, ...], rule_id: str) -> tuple[bytes, ...]:
    return tuple(s for s in shares if _rule_of(s).rule_id != rule_id)


def _most_specific(shares: tuple[bytes, ...]) -> bytes | None:
    if not shares:
        return None
    return max(shares, key=lambda s: (_rule_of(s).specificity, _rule_of(s).rule_id))


def _shares(value: Any) -> tuple[bytes, ...]:
    """A stored side: a list of signed shares, or (rows written before several rules per
    side were kept) one share or None."""
    if value is None:
        return ()
    if isinstance(value, bytes):
        return (value,)
    return tuple(value)


@dataclass(frozen=True)
class Agreement:
    """Both sides' shares in force between us and `peer` on `domain` (or ``*``).

    Each side may have several allow rules in force for one peer and domain (a rule for
    the peer and one for its org, say), so each side is the set of its signed shares, one
    per rule id. `ours` / `theirs` name the most specific one of each side (the rule a
    decision reports); `flows` looks at all of them.
    """

    peer: str
    domain: str
    our_shares: tuple[bytes, ...] = ()  # our signed shares in force (Proposal bytes)
    their_shares: tuple[bytes, ...] = ()  # the peer's signed shares in force
    revoked: bool = False  # a side revoked since the last share
    events: tuple[tuple[str, int], ...] = ()  # (event, hlc), newest last

    @property
    def ours(self) -> bytes | None:
        """Our most specific share in force, if any."""
        return _most_specific(self.our_shares)

    @property
    def theirs(self) -> bytes | None:
        """The peer's most specific share in force, if any."""
        return _most_specific(self.their_shares)

    @property
    def our_rules(self) -> tuple[ShareRule, ...]:
        return tuple(_rule_of(s) for s in self.our_shares)

    @property
    def their_rules(self) -> tuple[ShareRule, ...]:
        return tuple(_rule_of(s) for s in self.their_shares)

    @property
    def our_rule(self) -> ShareRule | None:
        return _rule_of(self.ours) if self.ours else None

    @property
    def their_rule(self) -> ShareRule | None:
        return _rule_of(self.theirs) if self.theirs else None

    @property
    def flows(self) -> tuple[str, ...]:
        """Which directions both sides agreed to: "out" (we send) and/or "in"."""
        ours, theirs = self.our_rules, self.their_rules
        out = []
        if any(r.direction.covers(Direction.SEND) for r in ours) and \
                any(r.direction.covers(Direction.RECEIVE) for r in theirs):
            out.append("out")
        if any(r.direction.covers(Direction.RECEIVE) for r in ours) and \
                any(r.direction.covers(Direction.SEND) for r in theirs):
            out.append("in")
        return tuple(out)

    @property
    def state(self) -> AgreementState:
        if self.flows:
            return AgreementState.EFFECTIVE
        if self.revoked:
            return AgreementState.REVOKED
        return AgreementState.PROPOSED

    def with_event(self, event: str, hlc: int, **changes: Any) -> Agreement:
        events = (*self.events, (event, hlc))[-MAX_AGREEMENT_EVENTS:]
        fields: dict[str, Any] = {"our_shares": self.our_shares,
                                  "their_shares": self.their_shares, "revoked": self.revoked}
        fields.update(changes)
        return Agreement(self.peer, self.domain, events=events, **fields)

    def to_plain(self) -> dict[str, Any]:
        return {"domain": self.domain, "events": [list(e) for e in self.events],
                "ours": list(self.our_shares), "peer": self.peer, "revoked": self.revoked,
                "theirs": list(self.their_shares)}

    @classmethod
    def from_plain(cls, data: Any) -> Agreement:
        return cls(data["peer"], data["domain"], _shares(data["ours"]),
                   _shares(data["theirs"]), data["revoked"],
                   tuple((e, h) for e, h in data["events"]))

    def to_json(self) -> dict[str, Any]:
        ours, theirs = self.our_rules, self.their_rules
        return {"peer": self.peer, "domain": self.domain, "state": str(self.state),
                "flows": list(self.flows),
                "ours": "; ".join(r.describe() for r in ours) or None,
                "theirs": "; ".join(r.describe() for r in theirs) or None,
                "our_rules": [r.rule_id for r in ours],
                "their_rules": [r.rule_id for r in theirs],
                "events": [{"event": e, "hlc": h} for e, h in self.events]}


@dataclass(frozen=True)
class ProposalOutcome:
    """What a received proposal changed (the daemon acts on `revoked_domain`)."""

    proposal: Proposal
    agreement: Agreement
    revoked_domain: str | None = None  # set when the peer revoked a share to us
    # True when the proposal was not newer than the last one applied for its rule (a
    # duplicate, or a late share overtaken by its revoke): nothing changed.
    stale: bool = False

