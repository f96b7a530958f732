"""The vocabulary of a share policy: peers, subjects, share rules and residency rules.

Plain validated values with their canonical plain form, sans-I/O. How they combine into
a decision is `gd.protocol.sovereignty` (and its module docstring, docs/sovereignty.md).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from gd.genome import checks
from gd.genome.errors import ValidationError
from gd.genome.identity import is_peer_id

DOMAIN_ANY: Final = "*"
# A node keeps at most this many rules. Every send decision scans them, and a policy
# this large is no longer something a person can read; Syncthing's largest setups share
# a few hundred folders with a few hundred devices.
MAX_RULES: Final = 4096


class Direction(enum.StrEnum):
    SEND = "send"
    RECEIVE = "receive"
    BOTH = "both"

    def covers(self, wanted: Direction) -> bool:
        return self is Direction.BOTH or self is wanted

    @property
    def opposite(self) -> Direction:
        if self is Direction.SEND:
            return Direction.RECEIVE
        if self is Direction.RECEIVE:
            return Direction.SEND
        return Direction.BOTH


class Effect(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class SubjectKind(enum.StrEnum):
    PEER = "peer"
    ORG = "org"
    REGION = "region"


# Specificity of a subject: a rule about one peer says more than one about its org, which
# says more than one about its region.
_SPECIFICITY: Final = {SubjectKind.PEER: 3, SubjectKind.ORG: 2, SubjectKind.REGION: 1}


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What we know of a peer: its id and its *certified* org and region ("" when no org
    key we trust certified them). A self-asserted claim is never put here: the node key
    proves only the node (DESIGN.md, "Federation → Identity"; docs/adr/0008)."""

    peer_id: str
    org: str = ""
    region: str = ""

    def __post_init__(self) -> None:
        if not is_peer_id(self.peer_id):
            raise ValidationError("peer", f"{self.peer_id!r} is not an Ed25519 peer id")
        checks.text("org", self.org, 128)
        if self.region:
            checks.slug("region", self.region)

    def to_plain(self) -> dict[str, Any]:
        return {"org": self.org, "peer": self.peer_id, "region": self.region}

    @classmethod
    def from_plain(cls, data: Any) -> PeerInfo:
        data = checks.require_map("peer", data)
        checks.known_keys("peer", data, {"org", "peer", "region"})
        return cls(data.get("peer", ""), data.get("org", ""), data.get("region", ""))


@dataclass(frozen=True, slots=True)
class Subject:
    """Whom a rule is about: one peer, every peer of an org, or every peer of a region."""

    kind: SubjectKind
    value: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", SubjectKind(self.kind))
        if self.kind is SubjectKind.PEER and not is_peer_id(self.value):
            raise ValidationError("subject", f"{self.value!r} is not a peer id")
        if self.kind is SubjectKind.ORG:
            checks.text("subject", self.value, 128, required=True)
        if self.kind is SubjectKind.REGION:
            checks.slug("subject", self.value)

    @classmethod
    def parse(cls, text: str) -> Subject:
        """``PEER_ID`` | ``org:NAME`` | ``region:R`` (the `--with` syntax)."""
        if not isinstance(text, str):
            raise ValidationError("subject", f"expected text, got {type(text).__name__}")
        for kind in (SubjectKind.ORG, SubjectKind.REGION):
            prefix = f"{kind}:"
            if text.startswith(prefix):
                return cls(kind, text[len(prefix):])
        if text.startswith(f"{SubjectKind.PEER}:"):
            return cls(SubjectKind.PEER, text[len("peer:"):])
        if not is_peer_id(text):
            raise ValidationError("subject", f"{text!r} is neither a peer id, org:NAME nor "
                                  "region:R")
        return cls(SubjectKind.PEER, text)

    def __str__(self) -> str:
        return self.value if self.kind is SubjectKind.PEER else f"{self.kind}:{self.value}"

    def matches(self, peer: PeerInfo) -> bool:
        """A peer subject matches the authenticated peer id; an org or region subject
        matches only a certified org or region (an uncertified peer's are "", which no
        subject value can be)."""
        if self.kind is SubjectKind.PEER:
            return peer.peer_id == self.value
        if self.kind is SubjectKind.ORG:
            return peer.org == self.value
        return peer.region == self.value

    @property
    def specificity(self) -> int:
        return _SPECIFICITY[self.kind]


class PeerDirectory(Protocol):
    """The peers a node has met (the policy store's peer table)."""

    def peer(self, peer_id: str) -> PeerInfo | None: ...

    def peers(self) -> list[PeerInfo]: ...


def receivers(directory: PeerDirectory, subject: Subject, org: str | None = None,
              region: str | None = None) -> list[PeerInfo]:
    """The peers a policy test is about (`gd-node policy test` and the API's): a peer
    subject is that peer, as met or not yet met, with `org`/`region` assumed when given;
    an org or region subject is every known peer it matches. Empty when none matches:
    each caller says so in its own words (a CLI failure, an HTTP 404)."""
    if subject.kind is SubjectKind.PEER:
        known = directory.peer(subject.value) or PeerInfo(subject.value)
        return [PeerInfo(known.peer_id, org if org is not None else known.org,
                         region if region is not None else known.region)]
    return [p for p in directory.peers() if subject.matches(p)]


def _domain(value: Any, field_name: str = "domain") -> str:
    if value == DOMAIN_ANY:
        return DOMAIN_ANY
    return checks.slug(field_name, value)


@dataclass(frozen=True, slots=True)
class ShareRule:
    """One line of a node's share policy (see the module docstring for how rules combine)."""

    subject: Subject
    domain: str
    direction: Direction = Direction.BOTH
    effect: Effect = Effect.ALLOW
    anonymize: bool = False
    allow_forward: bool = False
    _id: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        if not isinstance(self.subject, Subject):
            raise ValidationError("subject", "expected a Subject")
        _domain(self.domain)
        object.__setattr__(self, "direction", Direction(self.direction))
        object.__setattr__(self, "effect", Effect(self.effect))
        checks.boolean("anonymize", self.anonymize)
        checks.boolean("allow_forward", self.allow_forward)
        if self.effect is Effect.DENY and (self.anonymize or self.allow_forward):
            raise ValidationError("effect", "a deny rule takes no anonymize/allow_forward "
                                  "option: nothing it matches is sent")
        object.__setattr__(self, "_id",
                           f"{self.effect}:{self.direction}:{self.domain}:{self.subject}")

    @property
    def rule_id(self) -> str:
        """Readable identity: one rule per (effect, direction, domain, subject); sharing
        again with other options replaces the rule, it does not add one."""
        return self._id

    def matches(self, peer: PeerInfo, domain: str, direction: Direction) -> bool:
        return (self.direction.covers(direction)
                and (self.domain == DOMAIN_ANY or self.domain == domain)
                and self.subject.matches(peer))

    @property
    def specificity(self) -> tuple[int, int]:
        return self.subject.specificity, int(self.domain != DOMAIN_ANY)

    def describe(self) -> str:
        options = [name for name, on in (("anonymize", self.anonymize),
                                         ("allow-forward", self.allow_forward)) if on]
        extra = f" ({', '.join(options)})" if options else ""
        return f"{self.effect} {self.direction} {self.domain} with {self.subject}{extra}"

    def to_plain(self) -> dict[str, Any]:
        return {"allow_forward": self.allow_forward, "anonymize": self.anonymize,
                "direction": str(self.direction), "domain": self.domain,
                "effect": str(self.effect), "subject": str(self.subject)}

    @classmethod
    def from_plain(cls, data: Any) -> ShareRule:
        data = checks.require_map("rule", data)
        checks.known_keys("rule", data, {"allow_forward", "anonymize", "direction", "domain",
                                         "effect", "subject"})
        try:
            return cls(Subject.parse(data["subject"]), data["domain"],
                       Direction(data.get("direction", "both")),
                       Effect(data.get("effect", "allow")), data.get("anonymize", False),
                       data.get("allow_forward", False))
        except KeyError as exc:
            raise ValidationError(f"rule.{exc.args[0]}", "is required") from None
        except ValueError as exc:
            if isinstance(exc, ValidationError):
                raise
            raise ValidationError("rule", str(exc)) from None


@dataclass(frozen=True, slots=True)
class ResidencyRule:
    """Data residency: genes of `domain` (or of every domain, ``*``) never leave `region`."""

    domain: str
    region: str

    def __post_init__(self) -> None:
        _domain(self.domain)
        checks.slug("region", self.region)

    @property
    def rule_id(self) -> str:
        return f"residency:{self.domain}:{self.region}"

    def covers(self, domain: str) -> bool:
        return self.domain in (DOMAIN_ANY, domain)

    def describe(self) -> str:
        return f"genes of {self.domain} never leave region {self.region}"

    def to_plain(self) -> dict[str, Any]:
        return {"domain": self.domain, "region": self.region}

    @classmethod
    def from_plain(cls, data: Any) -> ResidencyRule:
        data = checks.require_map("residency", data)
        checks.known_keys("residency", data, {"domain", "region"})
        return cls(data.get("domain", ""), data.get("region", ""))


