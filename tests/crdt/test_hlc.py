"""Hybrid logical clock: monotonic, causal, packed, drift-bounded."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gd.crdt.hlc import (
    HLC,
    MAX_CLOCK_DRIFT_MS,
    MAX_LOGICAL,
    MAX_WALL_MS,
    ClockDriftError,
    ClockError,
    pack,
    unpack,
)

T0 = 1_700_000_000_000
physical = st.integers(T0, T0 + 10_000)


@settings(max_examples=150)
@given(st.lists(physical, min_size=1, max_size=50))
def test_now_is_strictly_monotonic_even_when_the_clock_steps_back(times: list[int]) -> None:
    clock = HLC()
    stamps = []
    for t in times:
        clock = clock.now(t)
        stamps.append(clock.packed)
        assert clock.wall_ms >= t  # never behind our own physical clock
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


@settings(max_examples=150)
@given(st.lists(st.tuples(st.sampled_from("ab"), st.sampled_from(["send", "recv"]),
                          st.integers(0, 3000)), max_size=60), st.integers(-5000, 5000))
def test_receive_orders_after_send_across_skewed_clocks(
        script: list[tuple[str, str, int]], skew: int) -> None:
    """Two nodes whose physical clocks differ by `skew`: every message is received
    with a stamp above the one it was sent with, and each node stays monotonic."""
    clocks = {"a": HLC(), "b": HLC()}
    offset = {"a": 0, "b": skew}
    inbox: dict[str, list[int]] = {"a": [], "b": []}
    last = {"a": -1, "b": -1}
    elapsed = 0
    for node, action, step in script:
        elapsed += step
        now = T0 + elapsed + offset[node]
        other = "b" if node == "a" else "a"
        if action == "send" or not inbox[node]:
            clocks[node] = clocks[node].now(now)
            inbox[other].append(clocks[node].packed)
        else:
            sent = inbox[node].pop(0)
            clocks[node] = clocks[node].update(sent, now)
            assert clocks[node].packed > sent
        assert clocks[node].packed > last[node]
        last[node] = clocks[node].packed


@settings(max_examples=100)
@given(st.integers(0, MAX_WALL_MS), st.integers(0, MAX_LOGICAL))
def test_pack_round_trips_and_orders_like_pairs(wall: int, logical: int) -> None:
    assert unpack(pack(wall, logical)) == (wall, logical)
    assert HLC.from_packed(pack(wall, logical)) == HLC(wall, logical)
    assert pack(wall, logical) < 2**64


def test_update_takes_the_remote_wall_when_it_is_ahead() -> None:
    clock = HLC(T0, 3).update(pack(T0 + 500, 7), T0 + 100)
    assert clock == HLC(T0 + 500, 8)
    assert HLC(T0, 3).update(pack(T0 - 10, 9), T0 + 100) == HLC(T0 + 100, 0)
    assert HLC(T0, 3).update(pack(T0, 9), T0 - 5) == HLC(T0, 10)


def test_logical_overflow_borrows_the_next_millisecond() -> None:
    assert HLC(T0, MAX_LOGICAL).now(T0) == HLC(T0 + 1, 0)


def test_remote_stamp_too_far_ahead_is_refused() -> None:
    clock = HLC(T0, 0)
    ok = clock.update(pack(T0 + MAX_CLOCK_DRIFT_MS, 0), T0)
    assert ok.wall_ms == T0 + MAX_CLOCK_DRIFT_MS
    with pytest.raises(ClockDriftError, match="ahead"):
        clock.update(pack(T0 + MAX_CLOCK_DRIFT_MS + 1, 0), T0)
    assert clock == HLC(T0, 0)


@pytest.mark.parametrize("bad", [-1, 2**64, True, 1.5, "1"])
def test_bad_stamps_are_refused(bad: object) -> None:
    with pytest.raises(ClockError):
        unpack(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, MAX_WALL_MS + 1, 1.0])
def test_bad_physical_times_are_refused(bad: object) -> None:
    with pytest.raises(ClockError):
        HLC().now(bad)  # type: ignore[arg-type]
