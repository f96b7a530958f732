"""The Raft core's tunables (`RaftConfig`), its unit of work for the caller (`Ready`),
and the leader's view of each member's log (`Progress`, etcd/raft's flow control).

Kept apart from the state machine (`gd.ledger.raft`) so each reads on its own; nothing
here does I/O or reads a clock.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from gd.ledger.raft_messages import RaftMessage
from gd.ledger.raft_records import Entry, HardState, RaftLocalError, RaftRole, Snapshot

# Ticks are the caller's clock unit (node/ ticks every 100 ms). etcd recommends an
# election timeout of 10 heartbeats; with 100 ms ticks that is a 1-2 s election after a
# leader dies (randomized in [10, 20) ticks), inside the 2 s failover target.
DEFAULT_ELECTION_TICKS = 10
DEFAULT_HEARTBEAT_TICKS = 1
# Bytes of entries per append message: etcd's default MaxSizePerMsg is 1 MiB.
DEFAULT_MAX_APPEND_BYTES = 1024 * 1024
# Append messages in flight per follower before the leader waits for acks (etcd's
# MaxInflightMsgs is 256 in its examples); it bounds memory in a slow link's queue.
DEFAULT_MAX_INFLIGHT = 256
# Proposed-but-uncommitted bytes a leader accepts before refusing proposals: without a
# quorum, clients would otherwise grow the leader's log without bound (etcd's
# MaxUncommittedEntriesSize serves the same purpose).
DEFAULT_MAX_UNCOMMITTED_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Tunables. `seed` drives election-timeout randomization (mixed with the node id)."""

    seed: int = 0
    election_ticks: int = DEFAULT_ELECTION_TICKS
    heartbeat_ticks: int = DEFAULT_HEARTBEAT_TICKS
    prevote: bool = True
    check_quorum: bool = True
    max_append_bytes: int = DEFAULT_MAX_APPEND_BYTES
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    max_uncommitted_bytes: int = DEFAULT_MAX_UNCOMMITTED_BYTES

    def __post_init__(self) -> None:
        if self.heartbeat_ticks < 1 or self.election_ticks <= self.heartbeat_ticks:
            raise RaftLocalError("need 1 <= heartbeat_ticks < election_ticks")
        if self.max_inflight < 1 or self.max_append_bytes < 1 or self.max_uncommitted_bytes < 1:
            raise RaftLocalError("flow-control limits must be positive")


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work for the caller, handled in this order:

    1. persist `snapshot` (if any), `entries` and `hard_state` (if any), durably;
    2. send `messages`;
    3. restore from `snapshot` (if any), then apply `committed_entries` in order,
       skipping indices in `duplicates` (repeats of an already committed request);
    4. call `RaftNode.advance(ready)`.
    """

    hard_state: HardState | None
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None
    messages: tuple[RaftMessage, ...]
    committed_entries: tuple[Entry, ...]
    duplicates: frozenset[int]
    role: RaftRole
    leader: str | None


class ProgressState(enum.Enum):
    """How the leader replicates to one member (etcd/raft's progress states)."""

    PROBE = "probe"  # one append at a time until we find where the logs agree
    REPLICATE = "replicate"  # stream appends, up to max_inflight unacknowledged
    SNAPSHOT = "snapshot"  # a snapshot is on its way; wait for its acknowledgement


class Progress:
    """The leader's view of one member's log."""

    __slots__ = ("inflight", "match", "next", "pending_snapshot", "probe_sent",
                 "recent_active", "sent_commit", "snapshot_elapsed", "state")

    def __init__(self, next_index: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_elapsed = 0
        self.recent_active = False
        self.sent_commit = 0  # highest commit index told to this member
        self.inflight: deque[int] = deque()

    def paused(self, max_inflight: int) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return len(self.inflight) >= max_inflight
        return True

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.inflight.clear()

    def become_snapshot(self, index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_elapsed = 0
        self.inflight.clear()

    def maybe_update(self, index: int) -> bool:
        """A success ack for `index`; False if stale (an old or duplicated response)."""
        self.probe_sent = False
        if index <= self.match:
            self.next = max(self.next, index + 1)
            return False
        self.match = index
        self.next = max(self.next, index + 1)
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        return True

    def maybe_decrease(self, rejected: int, hint: int) -> bool:
        """A rejection of the append at `rejected`; False if it is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, hint + 1), self.match + 1, 1)
        self.probe_sent = False
        return True


__all__ = ["Progress", "ProgressState", "RaftConfig", "Ready"]
