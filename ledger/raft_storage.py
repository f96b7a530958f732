"""Where a Raft node's durable state lives: the interface and an in-memory store (the LMDB
store is `gd.node.store.raft_lmdb`: cores import no I/O library).

The Ready contract (etcd/raft's, see docs/raft.md): the caller persists a Ready's hard
state, snapshot and entries *durably* with `save`, then sends its messages, then applies
its committed entries, then calls `RaftNode.advance`. A node never answers a vote or an
append before the vote or the entries are on disk, because the answer promises exactly
that (Raft Figure 2, "persistent state on all servers ... updated on stable storage
before responding to RPCs").
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gd.ledger.raft_records import (
    ConfChange,
    ConfChangeOp,
    Entry,
    HardState,
    RaftEntryKind,
    RaftLocalError,
    Snapshot,
)

# Bootstrap entries carry term 1, as etcd's do: every founding member writes the same
# configuration entries at term 1, so their logs agree before anyone campaigns.
BOOTSTRAP_TERM = 1


@dataclass(frozen=True, slots=True)
class PersistedState:
    """Everything a node restarts from."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot = field(default_factory=Snapshot)
    entries: tuple[Entry, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.entries and self.snapshot.index == 0 and self.hard_state.term == 0


def bootstrap_state(voters: Iterable[str], learners: Iterable[str] = ()) -> PersistedState:
    """The state every founding member of a region starts with (identical on all).

    The initial configuration is written as committed CONF_CHANGE entries 1..n, so a
    member that joins later learns it from the log (or a snapshot) like any change.
    """
    voters = sorted(set(voters))
    learners = sorted(set(learners) - set(voters))
    if not voters:
        raise RaftLocalError("a region needs at least one voter")
    changes = [ConfChange(ConfChangeOp.ADD_VOTER, v) for v in voters]
    changes += [ConfChange(ConfChangeOp.ADD_LEARNER, n) for n in learners]
    entries = tuple(
        Entry(BOOTSTRAP_TERM, index, RaftEntryKind.CONF_CHANGE, change.encode())
        for index, change in enumerate(changes, start=1)
    )
    return PersistedState(HardState(BOOTSTRAP_TERM, None, len(entries)), Snapshot(), entries)


class RaftStorage(abc.ABC):
    """Durable Raft state. Every method returns only once its writes are durable."""

    @abc.abstractmethod
    def load(self) -> PersistedState:
        """The state to restart from (empty for a node that never ran)."""

    @abc.abstractmethod
    def save(self, hard_state: HardState | None, entries: Sequence[Entry],
             snapshot: Snapshot | None = None) -> None:
        """Persist one Ready atomically: snapshot (replacing the whole log), then entries
        (replacing any stored entries from the first one's index on), then hard state."""

    @abc.abstractmethod
    def compact(self, snapshot: Snapshot) -> None:
        """Store a snapshot the node took locally and drop entries up to its index."""

    def bootstrap(self, voters: Iterable[str], learners: Iterable[str] = ()) -> None:
        """Write the founding configuration; refuses a store that already holds state."""
        if not self.load().is_empty:
            raise RaftLocalError("storage already holds raft state; refusing to bootstrap")
        state = bootstrap_state(voters, learners)
        self.save(state.hard_state, state.entries)


class MemoryRaftStorage(RaftStorage):
    """In-memory storage for tests and the simulator.

    Writes land in a volatile copy first and become durable at the end of `save` (as an
    fsync would make them). `crash()` forgets everything not durable; `fail_next_save`
    makes the next save die half-way, like a power cut mid-write, so the simulator can
    check that an interrupted Ready is never acknowledged.
    """

    def __init__(self) -> None:
        self._durable = PersistedState()
        self.saves = 0

    def load(self) -> PersistedState:
        return self._durable

    def save(self, hard_state: HardState | None, entries: Sequence[Entry],
             snapshot: Snapshot | None = None) -> None:
        state = self._durable
        stored = list(state.entries)
        snap = state.snapshot
        if snapshot is not None:
            snap, stored = snapshot, []
        if entries:
            first = entries[0].index
            base = snap.index
            if first <= base:
                raise RaftLocalError(f"entries from {first} fall inside snapshot {base}")
            if first > base + len(stored) + 1:
                raise RaftLocalError(f"entries from {first} leave a gap after {base + len(stored)}")
            del stored[first - base - 1:]
            stored.extend(entries)
        self._durable = PersistedState(hard_state or state.hard_state, snap, tuple(stored))
        self.saves += 1

    def compact(self, snapshot: Snapshot) -> None:
        state = self._durable
        if snapshot.index <= state.snapshot.index:
            return
        keep = tuple(e for e in state.entries if e.index > snapshot.index)
        self._durable = PersistedState(state.hard_state, snapshot, keep)

    def crash(self) -> PersistedState:
        """What a node finds after a power cut: exactly the durable state."""
        return self._durable


# LMDB layout: three named sub-databases, all prefixed `raft_` so they sit beside the
# Cortex's own tables in one environment.
