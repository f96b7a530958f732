"""Version vectors: which edits of one gene a version has seen.

A gene's version vector maps an *origin* (the peer id of an organisation's node) to the
number of edits that origin has made to the gene along this version's history. Two
versions are then ordered by the pointwise comparison of their vectors:

* ``EQUAL``        every counter equal: the same history;
* ``DESCENDS``     ``a >= b`` pointwise and not equal: ``a`` has seen everything ``b`` has;
* ``DESCENDED_BY`` the mirror image;
* ``CONCURRENT``   each has seen an edit the other has not: a conflict to resolve.

This is a partial order and `merge` (pointwise max) is its least upper bound, which is
what makes a merge of two concurrent versions descend both. One counter per
*organisation* (not per user or per device) keeps vectors small: Riak's "dotted version
vector" work showed that per-client actors make vectors grow without bound, whereas the
number of organisations that edit one gene is small.

Vectors here are immutable values (`VersionVector`, a read-only `Mapping[str, int]`);
zero counters are never stored, so equal histories have equal values and equal hashes.
Every function accepts any `Mapping[str, int]` (a gene's ``vv`` included) and returns a
`VersionVector`.

Bounded growth: folding retired origins
---------------------------------------
Without pruning a vector keeps one entry per organisation that ever edited the gene.
An entry can be dropped ("folded") when its origin is in the region's *folded set*, a set
of origins that satisfies both of these (docs/adr/0004-version-vector-pruning.md):

1. **Retired**: the origin's retirement is recorded on the ledger, after which honest
   nodes accept no version authored by it; since only the author of an edit increments
   its own counter, and merges take maxima of existing counters, no vector anywhere can
   ever hold a larger counter for that origin than the largest it held at retirement.
2. **Stable**: every replica has acknowledged (a ledger checkpoint) that, for every gene,
   its current version descends every version the origin authored, and no version from
   before that checkpoint is ever compared again (a node restored from an older backup
   re-fetches from its peers before comparing, see the ADR).

Under (1) and (2), for each gene every live version carries the *same* counter for a
folded origin (its final one). A coordinate that is constant over all vectors being
compared cannot change any comparison, nor any merge beyond that constant, so dropping
it from every vector is an order isomorphism: `compare(prune(a), prune(b)) ==
compare(a, b)`. Because some replicas may prune before others, `compare` and `merge`
take the folded set and ignore those entries on both sides, so a pruned vector and an
unpruned one compare correctly. A broken precondition is detected where it can be: two
vectors that both still carry a folded origin with *different* counters raise
`FoldedOriginMismatch`, because then the coordinate was not constant after all.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from typing import Final

# Counters are stored as unsigned 64-bit ints in the canonical encoding (genome.checks).
MAX_COUNTER: Final = 2**64 - 1
# Same limit as the gene model's `MAX_VV_ENTRIES`: one entry per editing organisation;
# 256 organisations editing one gene is far beyond any federation we expect, and the
# bound keeps a hostile vector from costing unbounded memory and comparison time.
MAX_ENTRIES: Final = 256
# A libp2p Ed25519 peer id is 52 characters; 128 matches genome.checks.MAX_ID_LEN.
MAX_ORIGIN_LEN: Final = 128

NO_FOLDED: Final[frozenset[str]] = frozenset()


class VectorError(ValueError):
    """A vector (or a counter in it) is malformed: bad origin, counter or size."""


class FoldedOriginMismatch(ValueError):
    """Two vectors disagree on a folded origin's counter: the fold was not yet stable."""


class Order(enum.Enum):
    """How version ``a`` relates to version ``b`` (read: "a <ORDER> b")."""

    EQUAL = "equal"
    DESCENDS = "descends"
    DESCENDED_BY = "descended_by"
    CONCURRENT = "concurrent"


def _check_entry(origin: object, counter: object) -> tuple[str, int]:
    if not isinstance(origin, str) or not origin or len(origin) > MAX_ORIGIN_LEN:
        raise VectorError(f"origin {origin!r} must be a non-empty str of at most "
                          f"{MAX_ORIGIN_LEN} characters")
    if isinstance(counter, bool) or not isinstance(counter, int):
        raise VectorError(f"counter for {origin} must be an int, got {type(counter).__name__}")
    if counter < 0 or counter > MAX_COUNTER:
        raise VectorError(f"counter for {origin} is {counter}, outside 0..{MAX_COUNTER}")
    return origin, counter


class VersionVector(Mapping[str, int]):
    """An immutable version vector: origin -> counter (>= 1), kept sorted by origin.

    Zero counters are dropped on construction, so ``VersionVector({"a": 0}) ==
    VersionVector()``. Hashable, and equal to any vector with the same entries.
    """

    __slots__ = ("_entries", "_index")

    _entries: tuple[tuple[str, int], ...]
    _index: dict[str, int]

    def __init__(self, entries: Mapping[str, int] | Iterable[tuple[str, int]] = ()) -> None:
        items = entries.items() if isinstance(entries, Mapping) else entries
        index: dict[str, int] = {}
        for origin, counter in items:
            origin, counter = _check_entry(origin, counter)
            if origin in index:
                raise VectorError(f"origin {origin} appears twice")
            if counter:
                index[origin] = counter
        if len(index) > MAX_ENTRIES:
            raise VectorError(f"vector has {len(index)} entries, the limit is {MAX_ENTRIES}")
        self._entries = tuple(sorted(index.items()))
        self._index = dict(self._entries)

    def __getitem__(self, origin: str) -> int:
        return self._index[origin]

    def get(self, origin: str, default: int = 0) -> int:  # type: ignore[override]
        return self._index.get(origin, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._entries)

    def __hash__(self) -> int:
        return hash(self._entries)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, VersionVector):
            return self._entries == other._entries
        if isinstance(other, Mapping):
            return self._entries == tuple(sorted((k, v) for k, v in other.items() if v))
        return NotImplemented

    def __repr__(self) -> str:
        return f"VersionVector({dict(self._entries)!r})"

    def to_dict(self) -> dict[str, int]:
        """Plain dict, sorted by origin (what `Gene(vv=...)` and the encoder take)."""
        return dict(self._entries)


def as_vector(vv: Mapping[str, int]) -> VersionVector:
    """`vv` as a validated `VersionVector` (returned unchanged if it already is one)."""
    return vv if isinstance(vv, VersionVector) else VersionVector(vv)


def _counter(vv: Mapping[str, int], origin: str) -> int:
    return vv.get(origin, 0)


def _check_folded(a: Mapping[str, int], b: Mapping[str, int], folded: frozenset[str]) -> None:
    for origin in folded:
        if origin in a and origin in b and a[origin] != b[origin]:
            raise FoldedOriginMismatch(
                f"folded origin {origin} has counters {a[origin]} and {b[origin]}: "
                "the fold was declared before every replica had seen its final edit")


def compare(a: Mapping[str, int], b: Mapping[str, int],
            folded: frozenset[str] = NO_FOLDED) -> Order:
    """How `a` relates to `b`, ignoring the entries of `folded` origins on both sides."""
    va, vb = as_vector(a), as_vector(b)
    if folded:
        _check_folded(va, vb, folded)
    a_ahead = b_ahead = False
    for origin in va.keys() | vb.keys():
        if origin in folded:
            continue
        ca, cb = _counter(va, origin), _counter(vb, origin)
        if ca > cb:
            a_ahead = True
        elif cb > ca:
            b_ahead = True
        if a_ahead and b_ahead:
            return Order.CONCURRENT
    if a_ahead:
        return Order.DESCENDS
    if b_ahead:
        return Order.DESCENDED_BY
    return Order.EQUAL


def descends(a: Mapping[str, int], b: Mapping[str, int],
             folded: frozenset[str] = NO_FOLDED) -> bool:
    """True when `a` has seen every edit `b` has (`a >= b`, equality included)."""
    return compare(a, b, folded) in (Order.DESCENDS, Order.EQUAL)


def merge(a: Mapping[str, int], b: Mapping[str, int],
          folded: frozenset[str] = NO_FOLDED) -> VersionVector:
    """Pointwise maximum: the least vector that descends both `a` and `b`.

    Entries of `folded` origins are dropped from the result (they carry no order
    information once folded, see the module docstring).
    """
    va, vb = as_vector(a), as_vector(b)
    if folded:
        _check_folded(va, vb, folded)
    return VersionVector(
        (origin, max(_counter(va, origin), _counter(vb, origin)))
        for origin in va.keys() | vb.keys() if origin not in folded
    )


def increment(vv: Mapping[str, int], origin: str) -> VersionVector:
    """`vv` after one more edit by `origin` (that origin's counter + 1)."""
    v = as_vector(vv)
    origin, _ = _check_entry(origin, 0)
    current = _counter(v, origin)
    if current >= MAX_COUNTER:
        raise VectorError(f"counter for {origin} would pass {MAX_COUNTER}")
    updated = dict(v.items())
    updated[origin] = current + 1
    return VersionVector(updated)


def prune(vv: Mapping[str, int], folded: frozenset[str]) -> VersionVector:
    """`vv` without the entries of `folded` origins (retired and stable, see above).

    Safe only under the folding rule in the module docstring; `compare` and `merge`
    given the same `folded` set treat pruned and unpruned vectors alike.
    """
    return VersionVector((o, c) for o, c in as_vector(vv).items() if o not in folded)
