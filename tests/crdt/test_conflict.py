"""The conflict decision rule for two versions of one gene."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gd.crdt.conflict import (
    ConflictPolicy,
    Resolution,
    Side,
    VersionStamp,
    decide,
    merged_vv,
)
from gd.crdt.vclock import Order, compare


def stamp(vv: dict[str, int], hlc: int = 1, tag: str = "") -> VersionStamp:
    h = hashlib.sha256(repr((sorted(vv.items()), hlc, tag)).encode()).digest()
    return VersionStamp.of(vv, hlc, h)


LOCAL = stamp({"a": 2, "b": 1}, hlc=10)
AHEAD = stamp({"a": 2, "b": 2}, hlc=11)
BEHIND = stamp({"a": 1, "b": 1}, hlc=5)
CONC = stamp({"a": 1, "b": 2}, hlc=12)
MERGE_LWW = ConflictPolicy(merge=True, lww=True)


def test_no_local_version_applies() -> None:
    assert decide(None, LOCAL).resolution is Resolution.APPLY


def test_descending_incoming_applies_and_descended_incoming_is_ignored() -> None:
    assert decide(LOCAL, AHEAD).resolution is Resolution.APPLY
    assert decide(LOCAL, BEHIND).resolution is Resolution.IGNORE
    assert decide(LOCAL, LOCAL).resolution is Resolution.IGNORE


def test_concurrent_goes_to_the_queue_by_default() -> None:
    d = decide(LOCAL, CONC)
    assert d.resolution is Resolution.QUEUE and d.order is Order.CONCURRENT
    assert not d.stores_incoming


def test_concurrent_merges_when_the_domain_can_and_falls_back_to_lww() -> None:
    assert decide(LOCAL, CONC, MERGE_LWW).resolution is Resolution.MERGE
    d = decide(LOCAL, CONC, MERGE_LWW, mergeable=False)
    assert d.resolution is Resolution.LWW and d.keep is Side.INCOMING and d.stores_incoming
    assert decide(LOCAL, CONC, ConflictPolicy(merge=True), mergeable=False).resolution \
        is Resolution.QUEUE


def test_lww_keeps_the_higher_hlc_then_hash() -> None:
    lww = ConflictPolicy(lww=True)
    older = stamp({"a": 1, "b": 2}, hlc=3)
    assert decide(LOCAL, older, lww).keep is Side.LOCAL
    same_hlc = stamp({"a": 1, "b": 2}, hlc=LOCAL.hlc, tag="x")
    expected = Side.INCOMING if same_hlc.version_hash > LOCAL.version_hash else Side.LOCAL
    assert decide(LOCAL, same_hlc, lww).keep is expected


def test_equal_vectors_with_different_hashes_tie_break_deterministically() -> None:
    x = stamp({"a": 2, "b": 2}, hlc=20, tag="x")
    y = stamp({"a": 2, "b": 2}, hlc=20, tag="y")
    # Each side, holding one, makes the same choice about the other: they converge.
    winner = max(x, y, key=lambda s: s.lww_key)
    for local, incoming in ((x, y), (y, x)):
        d = decide(local, incoming)
        assert d.stores_incoming is (incoming is winner)


policies = st.sampled_from([ConflictPolicy(), ConflictPolicy(lww=True),
                            ConflictPolicy(merge=True), MERGE_LWW])
vvs = st.dictionaries(st.sampled_from("abc"), st.integers(1, 3), min_size=1)


@settings(max_examples=150)
@given(vvs, vvs, st.integers(0, 5), st.integers(0, 5), policies, st.booleans())
def test_both_replicas_reach_the_same_content(va: dict, vb: dict, ha: int, hb: int,
                                              policy: ConflictPolicy, mergeable: bool) -> None:
    """Replica 1 holds A and receives B; replica 2 holds B and receives A. Whatever the
    rule says, they end up holding the same version (or both merge, or both queue)."""
    a, b = stamp(va, ha, "A"), stamp(vb, hb, "B")
    d1, d2 = decide(a, b, policy, mergeable=mergeable), decide(b, a, policy,
                                                               mergeable=mergeable)
    if d1.resolution in (Resolution.MERGE, Resolution.QUEUE):
        assert d2.resolution is d1.resolution
        return
    kept1 = b if d1.stores_incoming else a
    kept2 = a if d2.stores_incoming else b
    assert kept1 == kept2


@settings(max_examples=100)
@given(vvs, vvs)
def test_merged_vv_descends_both(va: dict, vb: dict) -> None:
    resolved = merged_vv(va, vb, resolver="c")
    assert compare(resolved, va) is Order.DESCENDS and compare(resolved, vb) is Order.DESCENDS
    auto = merged_vv(va, vb)
    if compare(va, vb) is Order.CONCURRENT:
        assert compare(auto, va) is Order.DESCENDS and compare(auto, vb) is Order.DESCENDS


def test_stamp_validation() -> None:
    with pytest.raises(ValueError):
        VersionStamp.of({"a": 1}, -1, b"\0" * 32)
    with pytest.raises(ValueError):
        VersionStamp.of({"a": 1}, 1, b"short")
