"""Where a Raft node's durable state lives: the interface, an in-memory store, and LMDB.

The Ready contract (etcd/raft's, see docs/raft.md): the caller persists a Ready's hard
state, snapshot and entries *durably* with `save`, then sends its messages, then applies
its committed entries, then calls `RaftNode.advance`. A node never answers a vote or an
append before the vote or the entries are on disk, because the answer promises exactly
that (Raft Figure 2, "persistent state on all servers ... updated on stable storage
before responding to RPCs").
"""

from __future__ import annotations

import abc
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import lmdb

from gd.genome import canonical
from gd.genome.errors import DecodeError
from gd.ledger.raft_messages import (
    ConfChange,
    ConfChangeOp,
    Entry,
    EntryKind,
    HardState,
    RaftLocalError,
    RaftRemoteError,
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
        Entry(BOOTSTRAP_TERM, index, EntryKind.CONF_CHANGE, change.encode())
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
STATE_DB = b"raft_state"
ENTRIES_DB = b"raft_entries"
SNAPSHOT_DB = b"raft_snapshot"
_HARD_KEY = b"hard"
_SNAPSHOT_KEY = b"snapshot"
_INDEX = struct.Struct(">Q")  # big-endian so LMDB's byte order is index order


class LmdbRaftStorage(RaftStorage):
    """Raft state in an `lmdb.Environment` the caller opened (the Cortex's).

    One Ready is one write transaction; its commit is fsync'd (LMDB does so at commit
    unless the environment was opened with sync=False, in which case we call
    `env.sync(True)` ourselves) before `save` returns, so the node's replies that follow
    are backed by the disk.
    """

    def __init__(self, env: lmdb.Environment) -> None:
        self._env = env
        self._state = env.open_db(STATE_DB)
        self._entries = env.open_db(ENTRIES_DB)
        self._snapshot = env.open_db(SNAPSHOT_DB)
        self._needs_explicit_sync = not env.flags().get("sync", True)

    def _decode(self, raw: bytes, what: str) -> object:
        try:
            return canonical.decode(raw)
        except DecodeError as exc:
            raise RaftRemoteError(f"stored {what} is corrupt: {exc}") from exc

    def load(self) -> PersistedState:
        with self._env.begin() as txn:
            raw_hard = txn.get(_HARD_KEY, db=self._state)
            raw_snap = txn.get(_SNAPSHOT_KEY, db=self._snapshot)
            hard = (HardState.from_plain(self._decode(raw_hard, "hard state"))
                    if raw_hard else HardState())
            snap = (Snapshot.from_plain(self._decode(raw_snap, "snapshot"))
                    if raw_snap else Snapshot())
            entries = []
            cursor = txn.cursor(db=self._entries)
            if cursor.set_range(_INDEX.pack(snap.index + 1)):
                for key, value in cursor:
                    entry = Entry.from_plain(self._decode(value, "entry"))
                    if entry.index != _INDEX.unpack(key)[0]:
                        raise RaftRemoteError(
                            f"stored entry under key {key.hex()} has index {entry.index}")
                    entries.append(entry)
        return PersistedState(hard, snap, tuple(entries))

    def _delete_from(self, txn: lmdb.Transaction, index: int) -> None:
        cursor = txn.cursor(db=self._entries)
        if cursor.set_range(_INDEX.pack(index)):
            while cursor.delete():
                if not cursor.key():
                    break

    def _delete_through(self, txn: lmdb.Transaction, index: int) -> None:
        cursor = txn.cursor(db=self._entries)
        if cursor.first():
            while cursor.key() and _INDEX.unpack(cursor.key())[0] <= index:
                if not cursor.delete():
                    break

    def save(self, hard_state: HardState | None, entries: Sequence[Entry],
             snapshot: Snapshot | None = None) -> None:
        with self._env.begin(write=True) as txn:
            if snapshot is not None:
                txn.put(_SNAPSHOT_KEY, canonical.encode(snapshot.to_plain()), db=self._snapshot)
                self._delete_from(txn, 0)
            if entries:
                self._delete_from(txn, entries[0].index)
                for entry in entries:
                    txn.put(_INDEX.pack(entry.index), canonical.encode(entry.to_plain()),
                            db=self._entries, append=True)
            if hard_state is not None:
                txn.put(_HARD_KEY, canonical.encode(hard_state.to_plain()), db=self._state)
        if self._needs_explicit_sync:
            self._env.sync(True)

    def compact(self, snapshot: Snapshot) -> None:
        with self._env.begin(write=True) as txn:
            raw = txn.get(_SNAPSHOT_KEY, db=self._snapshot)
            if raw and Snapshot.from_plain(self._decode(raw, "snapshot")).index >= snapshot.index:
                return
            txn.put(_SNAPSHOT_KEY, canonical.encode(snapshot.to_plain()), db=self._snapshot)
            self._delete_through(txn, snapshot.index)
        if self._needs_explicit_sync:
            self._env.sync(True)
