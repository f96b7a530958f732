"""What sync keeps per peer and per round: counters for `gd-node sync now` and the
metrics, and the locks, wake-up event and cancel scope of each peer's loop."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import trio


@dataclass
class RoundStats:
    """What one round with one peer moved (what `gd-node sync now` prints)."""

    peer: str
    genes_in: int = 0
    genes_out: int = 0
    payload_in: int = 0
    wire_in: int = 0
    payload_out: int = 0
    wire_out: int = 0
    conflicts: int = 0
    rejected: int = 0
    ignored: int = 0
    batches: int = 0
    repaired: int = 0
    repair_round_trips: int = 0
    repair_wire: int = 0
    errors: list[str] = field(default_factory=list)

    def to_plain(self) -> dict[str, Any]:
        out = asdict(self)
        out["overhead_in"] = self.wire_in - self.payload_in
        out["overhead_out"] = self.wire_out - self.payload_out
        return out


@dataclass
class ServedCounters:
    """What we sent one peer, ever (sender side)."""

    genes: int = 0
    payload: int = 0
    wire: int = 0


@dataclass
class PeerSyncState:
    pull_lock: trio.Lock = field(default_factory=trio.Lock)
    repair_lock: trio.Lock = field(default_factory=trio.Lock)
    wake: trio.Event = field(default_factory=trio.Event)
    repair_due: bool = False
    head: int = 0
    checkpoint: int = 0
    served: ServedCounters = field(default_factory=ServedCounters)
    scope: trio.CancelScope | None = None
