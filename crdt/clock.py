"""The clock every node component reads: wall time, monotonic time and HLC stamps.

Why one protocol: issue 12 asks that nothing read `time` directly, so a simulation (or a
test) can drive the daemon, its gate and its services on a clock it controls. The cores
may name this protocol (it does no I/O); the real clock lives in `gd.node.clock`.
"""

from __future__ import annotations

from typing import Protocol

from gd.crdt import hlc


class Clock(Protocol):
    """Where time comes from: `wall()` (seconds since the epoch, for stamps that travel
    or persist), `monotonic()` (seconds, for deadlines and scores) and `hlc_now()` (a
    hybrid-logical-clock stamp for a local write)."""

    def wall(self) -> float: ...

    def monotonic(self) -> float: ...

    def hlc_now(self) -> int: ...


class ManualClock:
    """A clock that moves only when told (`advance`): tests and simulations."""

    def __init__(self, wall: float = 1_700_000_000.0, monotonic: float = 0.0) -> None:
        if wall < 0 or monotonic < 0:
            raise ValueError("a manual clock starts at a non-negative time")
        self._wall = wall
        self._monotonic = monotonic

    def wall(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._monotonic

    def hlc_now(self) -> int:
        return hlc.pack(int(self._wall * 1000), 0)

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by `seconds` (never back: monotonic means monotonic)."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go back (advance by {seconds})")
        self._wall += seconds
        self._monotonic += seconds
