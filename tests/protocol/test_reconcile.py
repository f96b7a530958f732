"""Range-based set reconciliation: exact results, cost, limits and strict decoding."""

from __future__ import annotations

import contextlib
import random

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gd.genome import canonical
from gd.protocol import reconcile as rc
from gd.protocol import reconcile_messages as rcm
from gd.protocol.errors import RemoteProtocolError
from gd.protocol.reconcile import ItemSet, Reconciler, ReconcileUsageError, reconcile_in_memory
from gd.protocol.reconcile_messages import (
    INFINITE,
    Bound,
    Mode,
    Range,
    ReconcileMessage,
    ReconcileProtocolError,
    minimal_bound,
)
from gd.protocol.sync_frames import RECONCILE_PROTOCOL_ID, ReconcileStep
from gd.protocol.wire import LENGTH_PREFIX, MAX_FRAME_SIZE, decode_frame, encode_frame

T0 = 1_700_000_000_000 << 16  # an HLC stamp


def make_items(rng: random.Random, n: int, span: int = 10**9, start: int = T0) -> list[rcm.Item]:
    return [(start + rng.randrange(span), rng.randbytes(32)) for _ in range(n)]


def ids(items: list[rcm.Item]) -> set[bytes]:
    return {i for _, i in items}


def split_sets(rng: random.Random, shared: int, only_a: int, only_b: int,
               **kw: int) -> tuple[list[rcm.Item], list[rcm.Item], list[rcm.Item], list[rcm.Item]]:
    common = make_items(rng, shared, **kw)
    a_only, b_only = make_items(rng, only_a, **kw), make_items(rng, only_b, **kw)
    return common + a_only, common + b_only, a_only, b_only


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.integers(0, 600), st.integers(0, 40), st.integers(0, 40),
       st.sampled_from([10**3, 10**9]))
def test_random_sets_reconcile_exactly(seed: int, shared: int, only_a: int, only_b: int,
                                       span: int) -> None:
    # A small timestamp span forces many equal timestamps, hence prefix bounds.
    a, b, a_only, b_only = split_sets(random.Random(seed), shared, only_a, only_b, span=span)
    have, need, _ = reconcile_in_memory(a, b)
    assert have == ids(a_only)
    assert need == ids(b_only)


@pytest.mark.parametrize(("seed", "shared", "diffs"), [(1, 30_000, 300), (2, 20_000, 1)])
def test_large_seeded_sets_reconcile_exactly(seed: int, shared: int, diffs: int) -> None:
    a, b, a_only, b_only = split_sets(random.Random(seed), shared, diffs, diffs // 2 + 1)
    have, need, _ = reconcile_in_memory(a, b)
    assert (have, need) == (ids(a_only), ids(b_only))


def test_identical_sets_cost_one_round_trip() -> None:
    items = make_items(random.Random(3), 5000)
    have, need, sizes = reconcile_in_memory(items, list(reversed(items)))
    assert (have, need) == (set(), set())
    assert len(sizes) == 2  # one message each way
    assert sizes[1] == len(ReconcileMessage().encode())  # the responder says "all equal"
    small = make_items(random.Random(4), 10)  # few items: listed instead of fingerprinted
    assert len(reconcile_in_memory(small, small)[2]) == 2


def test_empty_sides() -> None:
    items = make_items(random.Random(5), 300)
    assert reconcile_in_memory([], items)[:2] == (set(), ids(items))
    assert reconcile_in_memory(items, [])[:2] == (ids(items), set())
    assert reconcile_in_memory([], [])[:2] == (set(), set())


def test_cost_grows_with_log_n_not_n() -> None:
    """Same number of differences, 16x more items: bytes grow by the extra tree levels,
    far less than 16x."""
    costs = []
    for n in (2_000, 32_000):
        a, b, _, _ = split_sets(random.Random(6), n, 5, 5)
        costs.append(sum(reconcile_in_memory(a, b)[2]))
    assert costs[1] < 2.5 * costs[0]
    assert costs[1] < 32_000 * 32 / 20  # and a small fraction of listing every id


def test_recent_differences_cost_less_than_scattered() -> None:
    rng = random.Random(7)
    common = make_items(rng, 20_000)
    scattered = make_items(rng, 50)
    recent = make_items(rng, 50, start=T0 + 2 * 10**9, span=1000)
    cost_scattered = sum(reconcile_in_memory(common + scattered, common)[2])
    cost_recent = sum(reconcile_in_memory(common + recent, common)[2])
    assert cost_recent < cost_scattered / 3


def test_frame_limit_bounds_every_message_and_still_converges() -> None:
    rng = random.Random(8)
    a, b, a_only, b_only = split_sets(rng, 3_000, 2_000, 1_500)
    limit = rc.MIN_FRAME_LIMIT
    have, need, sizes = reconcile_in_memory(a, b, frame_limit=limit)
    assert (have, need) == (ids(a_only), ids(b_only))
    assert max(sizes) <= limit + 2048
    assert len(sizes) > 4  # it really took several rounds


def test_initiator_gives_up_after_max_rounds() -> None:
    rng = random.Random(9)
    a, b, _, _ = split_sets(rng, 100, 0, 3000)
    with pytest.raises(ReconcileProtocolError, match="rounds"):
        reconcile_in_memory(a, b, frame_limit=rc.MIN_FRAME_LIMIT, max_rounds=2)


def test_minimal_bound_separates_neighbours() -> None:
    prev = (5, bytes([1, 2, 3]) + bytes(29))
    cur = (5, bytes([1, 2, 9]) + bytes(29))
    bound = minimal_bound(prev, cur)
    assert bound == Bound(5, bytes([1, 2, 9]))
    assert prev < bound.key() <= cur
    assert minimal_bound((4, cur[1]), cur) == Bound(5, b"")


def test_message_round_trips_through_canonical_plain_form() -> None:
    msg = ReconcileMessage((
        Range(Bound(T0, b""), Mode.SKIP),
        Range(Bound(T0 + 7, b"\x01\x02"), Mode.FINGERPRINT, fingerprint=b"f" * 16),
        Range(INFINITE, Mode.ID_LIST, ids=(b"a" * 32, b"b" * 32)),
    ))
    assert ReconcileMessage.decode(msg.encode()) == msg
    assert ReconcileMessage.from_plain(msg.to_plain()) == msg


def _raw(ranges: list, version: int = 1) -> bytes:
    return canonical.encode([version, ranges])


@pytest.mark.parametrize(("data", "reason"), [
    (b"\xc1", "malformed"),
    (canonical.encode({"v": 1}), "version, ranges"),
    (_raw([], version=2), "version"),
    (canonical.encode([True, []]), "version"),
    (canonical.encode([1, {}]), "list"),
    (_raw([[2, b"", 9, b""]]), "mode"),
    (_raw([[2, b"", True, b""]]), "mode"),
    (_raw([[2, b"", 1, b"short"]]), "fingerprint"),
    (_raw([[2, b"", 2, b"x" * 33]]), "multiple"),
    (_raw([[2, b"", 2, b"x" * 64]]), "repeats"),
    (_raw([[2, b"", 0, b"x"]]), "payload"),
    (_raw([[2, b"x" * 33, 0, b""]]), "prefix"),
    (_raw([[-1, b"", 0, b""]]), "uint"),
    (_raw([[2**64 - 1, b"", 0, b""], [3, b"", 0, b""]]), "u64"),
    (_raw([[1, b"", 0, b""]]), "increase"),  # upper == the minimum bound: empty range
    (_raw([[5, b"", 0, b""], [1, b"", 0, b""]]), "increase"),
    (_raw([[0, b"", 0, b""], [3, b"", 0, b""]]), "infinite"),
    (_raw([[0, b"x", 0, b""]]), "prefix"),
    (_raw([[2, b"", 0]]), "ts_code"),
    (b"\x00" * (rcm.MAX_MESSAGE_BYTES + 1), "exceeds"),
])
def test_garbage_is_a_remote_protocol_error(data: bytes, reason: str) -> None:
    with pytest.raises(ReconcileProtocolError, match=reason):
        ReconcileMessage.decode(data)
    if reason in ("malformed", "exceeds"):
        return  # not msgpack, or over the bytes codec's own limit: no plain form to frame
    # The same message inside a /gd/reconcile/2.0.0 step: refused by the frame decoder,
    # with the same check, before any core sees it.
    body = msgpack.packb(["gd.reconcile.step", 2, {"msg": canonical.decode(data)}],
                         use_bin_type=True)
    with pytest.raises(RemoteProtocolError, match=reason):
        decode_frame(LENGTH_PREFIX.pack(len(body)) + body)


def test_a_step_is_one_frame_decoded_once() -> None:
    msg = Reconciler.initiator(make_items(random.Random(3), 200)).initiate()
    data = encode_frame(ReconcileStep(msg))
    assert decode_frame(data) == ReconcileStep(msg)
    [_tag, version, fields] = msgpack.unpackb(data[LENGTH_PREFIX.size:], raw=False)
    assert version == 2 and isinstance(fields["msg"], list)  # not bytes in a bytes field
    assert RECONCILE_PROTOCOL_ID == "/gd/reconcile/2.0.0"


def test_the_byte_bound_holds_inside_a_frame() -> None:
    """1 MiB of ranges fits a 4 MiB frame: the message's own bound still refuses it."""
    ranges = [[2, b"", 1, b"f" * 16] for _ in range(rcm.MAX_MESSAGE_BYTES // 32 + 1)]
    body = msgpack.packb(["gd.reconcile.step", 2, {"msg": [1, ranges]}], use_bin_type=True)
    assert len(body) < MAX_FRAME_SIZE
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        decode_frame(LENGTH_PREFIX.pack(len(body)) + body)


def test_too_many_ids_are_refused() -> None:
    many = [[0, b"", 2, b"".join(i.to_bytes(32, "big")
                                 for i in range(rcm.MAX_IDS_PER_MESSAGE + 1))]]
    with pytest.raises(ReconcileProtocolError):
        ReconcileMessage.decode(_raw(many))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_escape_as_other_errors(data: bytes) -> None:
    with contextlib.suppress(ReconcileProtocolError):
        Reconciler.responder(make_items(random.Random(0), 40)).receive(
            ReconcileMessage.decode(data))


def test_a_bad_reply_changes_nothing_on_the_initiator() -> None:
    rng = random.Random(10)
    a, b, _, _ = split_sets(rng, 50, 3, 3)
    init, resp = Reconciler.initiator(a), Reconciler.responder(b)
    reply = resp.receive(init.initiate())
    assert reply is not None
    frame = encode_frame(ReconcileStep(reply))
    with pytest.raises(RemoteProtocolError):  # cut short: the frame never decodes
        decode_frame(frame[:-1])
    assert (init.have, init.need, init.rounds) == (set(), set(), 0)
    assert init.receive(reply) is None  # the intact reply still completes it
    assert len(init.have) == 3 and len(init.need) == 3


def test_misuse_is_a_usage_error() -> None:
    with pytest.raises(ReconcileUsageError):
        Reconciler.responder([]).initiate()
    init = Reconciler.initiator([])
    with pytest.raises(ReconcileUsageError):
        init.receive(ReconcileMessage())
    init.initiate()
    with pytest.raises(ReconcileUsageError):
        init.initiate()
    with pytest.raises(ReconcileUsageError, match="ReconcileMessage"):
        init.receive(ReconcileMessage().encode())  # type: ignore[arg-type]  # bytes: not decoded
    assert init.receive(ReconcileMessage()) is None
    with pytest.raises(ReconcileUsageError, match="finished"):
        init.receive(ReconcileMessage())
    with pytest.raises(ReconcileUsageError):
        Reconciler.initiator([], frame_limit=10)


@pytest.mark.parametrize("bad", [
    [(1, b"short")], [(-1, b"x" * 32)], [(2**64, b"x" * 32)], [(True, b"x" * 32)],
    [(1, b"x" * 32), (2, b"x" * 32)], ["nope"],
])
def test_bad_items_are_refused(bad: list) -> None:
    with pytest.raises(ReconcileUsageError):
        ItemSet(bad)


def test_exact_duplicate_items_count_once() -> None:
    item = (T0, b"z" * 32)
    assert len(ItemSet([item, item])) == 1
