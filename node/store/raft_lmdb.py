"""The LMDB store of a Raft node's durable state (`RaftStorage`): hard state, snapshot and
entries in three sub-databases of the node's environment, saved in one transaction per
Ready (docs/raft.md). Moved out of `gd.ledger` so the core imports no I/O library."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import lmdb

from gd.genome import canonical
from gd.genome.errors import DecodeError
from gd.ledger.raft_records import Entry, HardState, RaftRemoteError, Snapshot
from gd.ledger.raft_storage import PersistedState, RaftStorage
from gd.node.store.lmdb_tables import open_named_db

STATE_DB = b"raft_state"
RAFT_ENTRIES_DB = b"raft_entries"
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
        self._state = open_named_db(env, STATE_DB, create=True)
        self._entries = open_named_db(env, RAFT_ENTRIES_DB, create=True)
        self._snapshot = open_named_db(env, SNAPSHOT_DB, create=True)
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
