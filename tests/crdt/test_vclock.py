"""Version vectors: the partial-order and lattice laws, and folding retired origins."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gd.crdt import vclock
from gd.crdt.vclock import (
    FoldedOriginMismatch,
    Order,
    VectorError,
    VersionVector,
    compare,
    descends,
    increment,
    merge,
    prune,
)

ORIGINS = ["org-a", "org-b", "org-c", "org-d"]
vectors = st.dictionaries(st.sampled_from(ORIGINS), st.integers(0, 4)).map(VersionVector)
FLIP = {Order.DESCENDS: Order.DESCENDED_BY, Order.DESCENDED_BY: Order.DESCENDS,
        Order.EQUAL: Order.EQUAL, Order.CONCURRENT: Order.CONCURRENT}


def leq(a: VersionVector, b: VersionVector) -> bool:
    return descends(b, a)


@settings(max_examples=150)
@given(vectors)
def test_order_is_reflexive(a: VersionVector) -> None:
    assert compare(a, a) is Order.EQUAL
    assert leq(a, a)


@settings(max_examples=150)
@given(vectors, vectors)
def test_order_is_antisymmetric_and_compare_is_its_mirror(a: VersionVector,
                                                          b: VersionVector) -> None:
    if leq(a, b) and leq(b, a):
        assert a == b
    assert compare(b, a) is FLIP[compare(a, b)]


@settings(max_examples=150)
@given(vectors, vectors, vectors)
def test_order_is_transitive(a: VersionVector, b: VersionVector, c: VersionVector) -> None:
    if leq(a, b) and leq(b, c):
        assert leq(a, c)


@settings(max_examples=150)
@given(vectors, vectors)
def test_compare_matches_pointwise_definition(a: VersionVector, b: VersionVector) -> None:
    ge = all(a.get(o) >= b.get(o) for o in ORIGINS)
    le = all(a.get(o) <= b.get(o) for o in ORIGINS)
    expected = {(True, True): Order.EQUAL, (True, False): Order.DESCENDS,
                (False, True): Order.DESCENDED_BY, (False, False): Order.CONCURRENT}[(ge, le)]
    assert compare(a, b) is expected


@settings(max_examples=150)
@given(vectors, vectors, vectors)
def test_merge_is_commutative_associative_idempotent(a: VersionVector, b: VersionVector,
                                                     c: VersionVector) -> None:
    assert merge(a, b) == merge(b, a)
    assert merge(merge(a, b), c) == merge(a, merge(b, c))
    assert merge(a, a) == a


@settings(max_examples=150)
@given(vectors, vectors, vectors)
def test_merge_is_the_least_upper_bound(a: VersionVector, b: VersionVector,
                                        c: VersionVector) -> None:
    m = merge(a, b)
    assert descends(m, a) and descends(m, b)
    if descends(c, a) and descends(c, b):
        assert descends(c, m)


@settings(max_examples=100)
@given(vectors, st.sampled_from(ORIGINS))
def test_increment_strictly_descends(a: VersionVector, origin: str) -> None:
    nxt = increment(a, origin)
    assert compare(nxt, a) is Order.DESCENDS
    assert nxt[origin] == a.get(origin) + 1


def test_concurrent_edits_are_detected_and_merge_descends_both() -> None:
    base = increment(VersionVector(), "org-a")
    left, right = increment(base, "org-a"), increment(base, "org-b")
    assert compare(left, right) is Order.CONCURRENT
    m = merge(left, right)
    assert compare(m, left) is Order.DESCENDS and compare(m, right) is Order.DESCENDS


def test_vector_is_an_immutable_hashable_mapping_without_zeros() -> None:
    v = VersionVector({"org-b": 2, "org-a": 1, "org-c": 0})
    assert list(v) == ["org-a", "org-b"] and len(v) == 2
    assert v == {"org-a": 1, "org-b": 2} and hash(v) == hash(VersionVector(v))
    assert v.to_dict() == {"org-a": 1, "org-b": 2}
    with pytest.raises(TypeError):
        v["org-a"] = 5  # type: ignore[index]


@pytest.mark.parametrize("bad", [
    {"": 1}, {"org-a": -1}, {"org-a": 2**64}, {"org-a": True}, {"org-a": 1.0}, {3: 1},
])
def test_malformed_vectors_are_refused(bad: dict) -> None:
    with pytest.raises(VectorError):
        VersionVector(bad)


def test_vector_size_is_bounded() -> None:
    with pytest.raises(VectorError, match="limit"):
        VersionVector({f"org-{i}": 1 for i in range(vclock.MAX_ENTRIES + 1)})


def test_increment_refuses_to_overflow() -> None:
    with pytest.raises(VectorError):
        increment({"org-a": vclock.MAX_COUNTER}, "org-a")


# -- folding retired origins --------------------------------------------------------


@st.composite
def stable_family(draw: st.DrawFn) -> tuple[list[VersionVector], frozenset[str]]:
    """Vectors that agree on the folded origins' counters: the stability precondition."""
    folded = frozenset(draw(st.sets(st.sampled_from(ORIGINS), max_size=2)))
    finals = {o: draw(st.integers(1, 4)) for o in folded}
    family = []
    for _ in range(3):
        v = draw(vectors).to_dict()
        v.update(finals)
        family.append(VersionVector(v))
    return family, folded


@settings(max_examples=150)
@given(stable_family(), st.data())
def test_pruning_preserves_order_under_the_stability_precondition(
        fam: tuple[list[VersionVector], frozenset[str]], data: st.DataObject) -> None:
    family, folded = fam
    for a in family:
        for b in family:
            expected = compare(a, b)
            # Any mix of pruned and unpruned vectors compares as the originals did.
            pa = prune(a, folded) if data.draw(st.booleans()) else a
            pb = prune(b, folded) if data.draw(st.booleans()) else b
            assert compare(pa, pb, folded) is expected
            assert merge(pa, pb, folded) == prune(merge(a, b), folded)
    assert all(not (set(prune(a, folded)) & folded) for a in family)


def test_folded_origins_that_disagree_are_reported() -> None:
    with pytest.raises(FoldedOriginMismatch):
        compare({"org-a": 1, "org-b": 2}, {"org-a": 1, "org-b": 3}, frozenset({"org-b"}))
    with pytest.raises(FoldedOriginMismatch):
        merge({"org-b": 2}, {"org-b": 3}, frozenset({"org-b"}))


def test_pruning_bounds_growth_to_unfolded_origins() -> None:
    v = VersionVector({f"org-{i}": 3 for i in range(50)})
    retired = frozenset(f"org-{i}" for i in range(45))
    assert len(prune(v, retired)) == 5
