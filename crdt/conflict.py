"""What to do when a version of a gene arrives and we already hold one.

The rule (issue 6, DESIGN.md "Differential sync"), in order:

==============================  =============================================
incoming vs local (vv)          decision
==============================  =============================================
no local version                APPLY
incoming descends local         APPLY   (it has seen our edit and more)
local descends incoming         IGNORE  (stale or replayed)
equal vv, same version hash     IGNORE  (the same version again)
equal vv, different hash        TIEBREAK: APPLY if incoming wins, else IGNORE
concurrent, domain merges       MERGE   (the domain's merge rule builds the result)
concurrent, domain is LWW       LWW     (keep the higher (hlc, version_hash))
concurrent, otherwise           QUEUE   (both kept for a person to resolve)
==============================  =============================================

Why an equal vector with a different hash is decided like LWW whatever the domain: it
only arises when two replicas independently build the *same* automatic merge (same
vector, `merged_vv` without a resolver) but sign it with different keys. Both
contents come from the same deterministic rule, so keeping one deterministically is
lossless, and every replica picking the same one is what makes them converge.

Why LWW keeps the winning version as it is, rather than writing a new version: every
replica that sees the same pair picks the same winner, so they converge on one version
hash with no new signatures; a new "resolution" version written by each replica would
itself be concurrent with the others' and conflict again.

Pure: no gene model, no storage; it takes the stamps of the two versions.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from gd.crdt import vclock
from gd.crdt.vclock import NO_FOLDED, Order, VersionVector

VERSION_HASH_LEN: Final = 32


class Resolution(enum.Enum):
    APPLY = "apply"
    IGNORE = "ignore"
    MERGE = "merge"
    LWW = "lww"
    QUEUE = "queue"


class Side(enum.Enum):
    LOCAL = "local"
    INCOMING = "incoming"


@dataclass(frozen=True, slots=True)
class ConflictPolicy:
    """A domain's configured handling of concurrent edits.

    `merge`: the domain has an automatic merge rule (it may still decline a given pair,
    see `decide(mergeable=...)`). `lww`: last-writer-wins by HLC is acceptable for this
    domain. Neither (the default): every conflict goes to the queue, nothing is lost.
    """

    merge: bool = False
    lww: bool = False


QUEUE_ALL: Final = ConflictPolicy()


@dataclass(frozen=True, slots=True)
class VersionStamp:
    """What the rule needs to know about one version of a gene."""

    vv: VersionVector
    hlc: int
    version_hash: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "vv", vclock.as_vector(self.vv))
        if isinstance(self.hlc, bool) or not isinstance(self.hlc, int) or self.hlc < 0:
            raise ValueError(f"hlc must be a non-negative int, got {self.hlc!r}")
        if not isinstance(self.version_hash, bytes) or len(self.version_hash) != VERSION_HASH_LEN:
            raise ValueError(f"version_hash must be {VERSION_HASH_LEN} bytes")

    @classmethod
    def of(cls, vv: Mapping[str, int], hlc: int, version_hash: bytes) -> VersionStamp:
        return cls(vclock.as_vector(vv), hlc, version_hash)

    @property
    def lww_key(self) -> tuple[int, bytes]:
        """Total order used by LWW and tie-breaks: HLC first, version hash to break ties."""
        return (self.hlc, self.version_hash)


@dataclass(frozen=True, slots=True)
class ConflictDecision:
    """The decision and, for LWW and tie-breaks, which side's version to keep."""

    resolution: Resolution
    order: Order | None
    keep: Side | None = None

    @property
    def stores_incoming(self) -> bool:
        """True when the incoming version replaces the local one as it is."""
        return self.resolution is Resolution.APPLY or (
            self.resolution is Resolution.LWW and self.keep is Side.INCOMING)


def decide(
    local: VersionStamp | None,
    incoming: VersionStamp,
    policy: ConflictPolicy = QUEUE_ALL,
    *,
    mergeable: bool = True,
    folded: frozenset[str] = NO_FOLDED,
) -> ConflictDecision:
    """Decide what to do with `incoming` given the `local` version (None: we have none).

    `mergeable` says whether the domain's merge rule accepts this particular pair (a
    rule such as "same codons, CP = max" declines pairs whose codons differ); it only
    matters when `policy.merge` is set. `folded` is the region's folded-origin set
    (see `gd.crdt.vclock`).
    """
    if local is None:
        return ConflictDecision(Resolution.APPLY, None)
    order = vclock.compare(incoming.vv, local.vv, folded)
    if order is Order.DESCENDS:
        return ConflictDecision(Resolution.APPLY, order)
    if order is Order.DESCENDED_BY:
        return ConflictDecision(Resolution.IGNORE, order)
    if order is Order.EQUAL:
        if incoming.version_hash == local.version_hash:
            return ConflictDecision(Resolution.IGNORE, order)
        if incoming.lww_key > local.lww_key:
            return ConflictDecision(Resolution.APPLY, order, Side.INCOMING)
        return ConflictDecision(Resolution.IGNORE, order, Side.LOCAL)
    if policy.merge and mergeable:
        return ConflictDecision(Resolution.MERGE, order)
    if policy.lww:
        keep = Side.INCOMING if incoming.lww_key > local.lww_key else Side.LOCAL
        return ConflictDecision(Resolution.LWW, order, keep)
    return ConflictDecision(Resolution.QUEUE, order)


def merged_vv(
    local: Mapping[str, int],
    incoming: Mapping[str, int],
    resolver: str | None = None,
    folded: frozenset[str] = NO_FOLDED,
) -> VersionVector:
    """The vector of a version that resolves `local` and `incoming`: it descends both.

    With `resolver` (a person's resolution: a new edit by that node) the resolver's
    counter is also incremented, so the result strictly descends both inputs even when
    one already descends the other. Without it (an automatic, deterministic merge) the
    result is the pointwise max, which strictly descends both inputs exactly when they
    are concurrent -- and two replicas that build the same merge get the same vector,
    which `decide` then settles by tie-break instead of conflicting again.
    """
    result = vclock.merge(local, incoming, folded)
    if resolver is not None:
        result = vclock.increment(result, resolver)
    return result
