"""Hybrid logical clock (Kulkarni, Demirbas et al., "Logical Physical Clocks", 2014).

An HLC timestamp is a pair (wall, logical): `wall` is the largest physical time (in
milliseconds since the Unix epoch) this node has seen, its own or a peer's; `logical`
counts events within one `wall` millisecond. It gives two guarantees plain wall clocks
do not: timestamps never go backwards on one node, and if event e happened before f
(same node, or f is the receipt of a message carrying e's stamp) then hlc(e) < hlc(f).
And unlike a pure Lamport clock it stays within the clock drift of real time, so it is
meaningful to a person and lets range reconciliation cluster recent changes together.

Packing: one unsigned 64-bit int, ``wall << 16 | logical`` -- 48 bits of milliseconds
(good until the year 10889) and 16 bits of counter, the layout CockroachDB and
MongoDB-style HLCs use. Packed stamps order exactly like the (wall, logical) pairs,
so genes store and compare one int.

Sans-I/O: nothing here reads a clock. The caller passes the physical time in, so tests
and the simulator drive time explicitly. `HLC` is an immutable value; `now` and `update`
return the next value and the caller keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

WALL_BITS: Final = 48
LOGICAL_BITS: Final = 16
MAX_WALL_MS: Final = (1 << WALL_BITS) - 1
MAX_LOGICAL: Final = (1 << LOGICAL_BITS) - 1
MAX_PACKED: Final = (1 << (WALL_BITS + LOGICAL_BITS)) - 1

# A remote stamp more than this far ahead of our physical clock is refused. Nodes are
# expected to run NTP (typical error well under a second); a minute leaves room for a
# badly kept server while stopping one peer with a wild clock from dragging every HLC in
# the region into the future, which could never be undone (an HLC never goes back).
# CockroachDB refuses at 500 ms by default, within one datacentre; we span organisations.
MAX_CLOCK_DRIFT_MS: Final = 60_000


class ClockError(ValueError):
    """A local misuse: a physical time or stamp outside the 48/16-bit layout."""


class ClockDriftError(ValueError):
    """A peer's stamp is further ahead of our physical clock than `MAX_CLOCK_DRIFT_MS`."""

    def __init__(self, remote_wall_ms: int, physical_ms: int) -> None:
        super().__init__(
            f"remote clock at {remote_wall_ms} ms is {remote_wall_ms - physical_ms} ms ahead "
            f"of ours ({physical_ms} ms); the limit is {MAX_CLOCK_DRIFT_MS} ms")
        self.remote_wall_ms = remote_wall_ms
        self.physical_ms = physical_ms


def _check_physical(physical_ms: int) -> int:
    if isinstance(physical_ms, bool) or not isinstance(physical_ms, int):
        raise ClockError(f"physical time must be an int of ms, got {type(physical_ms).__name__}")
    if not 0 <= physical_ms <= MAX_WALL_MS:
        raise ClockError(f"physical time {physical_ms} ms is outside 0..{MAX_WALL_MS}")
    return physical_ms


def pack(wall_ms: int, logical: int) -> int:
    """The 64-bit stamp for (wall_ms, logical)."""
    _check_physical(wall_ms)
    if isinstance(logical, bool) or not isinstance(logical, int) or not 0 <= logical <= MAX_LOGICAL:
        raise ClockError(f"logical counter {logical!r} is outside 0..{MAX_LOGICAL}")
    return (wall_ms << LOGICAL_BITS) | logical


def unpack(stamp: int) -> tuple[int, int]:
    """(wall_ms, logical) of a 64-bit stamp; `ClockError` if it is not one."""
    if isinstance(stamp, bool) or not isinstance(stamp, int) or not 0 <= stamp <= MAX_PACKED:
        raise ClockError(f"{stamp!r} is not a 64-bit HLC stamp")
    return stamp >> LOGICAL_BITS, stamp & MAX_LOGICAL


@dataclass(frozen=True, slots=True, order=True)
class HLC:
    """One node's clock state, which is also the last stamp it issued or saw."""

    wall_ms: int = 0
    logical: int = 0

    def __post_init__(self) -> None:
        pack(self.wall_ms, self.logical)  # validates both fields

    @classmethod
    def from_packed(cls, stamp: int) -> HLC:
        wall, logical = unpack(stamp)
        return cls(wall, logical)

    @property
    def packed(self) -> int:
        return (self.wall_ms << LOGICAL_BITS) | self.logical

    def now(self, physical_ms: int) -> HLC:
        """The stamp for a local or send event at physical time `physical_ms`.

        Strictly greater than `self`, whatever `physical_ms` says (a clock stepped back
        by NTP does not make stamps go back).
        """
        physical_ms = _check_physical(physical_ms)
        if physical_ms > self.wall_ms:
            return HLC(physical_ms, 0)
        return self._next_logical(self.wall_ms, self.logical)

    def update(self, received: int, physical_ms: int) -> HLC:
        """The stamp for receiving a message stamped `received` at `physical_ms`.

        Strictly greater than both `self` and `received`. Raises `ClockDriftError` (the
        peer's fault; our state is unchanged because we return a new value) when the
        remote wall time is more than `MAX_CLOCK_DRIFT_MS` ahead of `physical_ms`.
        """
        physical_ms = _check_physical(physical_ms)
        r_wall, r_logical = unpack(received)
        if r_wall > physical_ms + MAX_CLOCK_DRIFT_MS:
            raise ClockDriftError(r_wall, physical_ms)
        wall = max(self.wall_ms, r_wall, physical_ms)
        if wall == self.wall_ms == r_wall:
            return self._next_logical(wall, max(self.logical, r_logical))
        if wall == self.wall_ms:
            return self._next_logical(wall, self.logical)
        if wall == r_wall:
            return self._next_logical(wall, r_logical)
        return HLC(wall, 0)

    @staticmethod
    def _next_logical(wall_ms: int, logical: int) -> HLC:
        # More than 65,535 events inside one millisecond: borrow the next millisecond
        # rather than wrap (which would go backwards) or fail. The wall part then runs a
        # little ahead of physical time, which the drift check on receivers bounds.
        if logical < MAX_LOGICAL:
            return HLC(wall_ms, logical + 1)
        if wall_ms >= MAX_WALL_MS:
            raise ClockError("HLC exhausted the 48-bit millisecond range")
        return HLC(wall_ms + 1, 0)
