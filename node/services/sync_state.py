"""What sync keeps per peer and per round: counters for `gd-node sync now` and the
metrics, and the locks, wake-up event and cancel scope of each peer's loop."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Final

import trio

# A peer served no batch for this long is not catching up on our feed any more.
CATCH_UP_IDLE_S: Final = 3.0
# A due repair round waits for a peer catching up on our feed at most this long in a row
# (a peer pulling a feed that keeps growing would otherwise hold it forever).
MAX_REPAIR_HOLD_S: Final = 120.0
# How often a held repair round looks again.
REPAIR_HOLD_POLL_S: Final = 1.0


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
    # When we last served this peer a batch that left it behind our feed's head (None:
    # the last one reached it), and since when a repair round with it waits for that
    # (ADR 0061).
    served_behind_at: float | None = None
    repair_held_since: float | None = None
    # Pull conversations of this peer's that we are serving: one stays open until the
    # puller has committed what it read (it closes the stream after its last commit).
    pulls_open: int = 0

    def catching_up(self, now: float) -> bool:
        """Whether the peer is still pulling our feed: a pull of its is open (it may
        have read up to our head and still be committing), or it was served a batch
        short of our head within `CATCH_UP_IDLE_S` (a peer that stopped pulling is not
        waited for)."""
        return self.pulls_open > 0 or (self.served_behind_at is not None
                                       and now - self.served_behind_at < CATCH_UP_IDLE_S)

    def hold_repair(self, now: float) -> bool:
        """Whether a due repair round with this peer waits (ADR 0061): while it catches
        up on our feed, for at most `MAX_REPAIR_HOLD_S` in a row."""
        if not self.catching_up(now):
            self.repair_held_since = None
            return False
        if self.repair_held_since is None:
            self.repair_held_since = now
        if now - self.repair_held_since >= MAX_REPAIR_HOLD_S:
            self.repair_held_since = None
            return False
        return True
