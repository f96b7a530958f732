"""The node's wall clock for hybrid-logical-clock stamps of local writes.

One place reads it, so the rooms below the shell (stores, the application) need not
read `time` themselves, and a simulation can swap it. Issue 12 asks for one injected
clock (wall, monotonic, HLC) everywhere; this is its first piece.
"""

from __future__ import annotations

import time

from gd.crdt import hlc


def hlc_now() -> int:
    """A hybrid-logical-clock stamp for a local write (logical counter 0): the same
    packing as `gd.crdt.hlc`, so local writes order with synced ones."""
    return hlc.pack(int(time.time() * 1000), 0)
