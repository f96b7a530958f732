"""The node's one real clock (wall, monotonic, HLC), injected where time is read.

Why: issue 12 asks for one injected clock so a simulation can drive the daemon, its gate
and its services on time it controls (`gd.crdt.clock.ManualClock`). The daemon builds
one `SystemClock` and hands it to the gate; `hlc_now()` stays for the rooms below the
shell (stores, the application) that stamp local writes and have no clock passed yet.
"""

from __future__ import annotations

import time

from gd.crdt import hlc
from gd.crdt.clock import Clock


class SystemClock:
    """The operating system's clocks: `time.time()` and `time.monotonic()`."""

    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def hlc_now(self) -> int:
        """A hybrid-logical-clock stamp for a local write (logical counter 0): the same
        packing as `gd.crdt.hlc`, so local writes order with synced ones."""
        return hlc.pack(int(self.wall() * 1000), 0)


SYSTEM_CLOCK: Clock = SystemClock()


def hlc_now() -> int:
    """`SYSTEM_CLOCK.hlc_now()`: for code that stamps local writes without a clock passed."""
    return SYSTEM_CLOCK.hlc_now()
