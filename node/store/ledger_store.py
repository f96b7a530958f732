"""The ledger persisted in LMDB: the `Ledger` a node appends to, proves from and verifies.

The ledger lives in the node's one LMDB environment (the Cortex's, ``HOME/cortex``), in
its own named sub-databases, all prefixed ``ledger_``:

==================  =====================================  =================================
sub-database        key                                    value
==================  =====================================  =================================
ledger_entries      index, u64 big-endian                  the entry's canonical encoding
ledger_keys         author peer id, 0x00, idempotency key  index u64, statement hash, entry
                                                           hash (8 + 32 + 32 bytes)
ledger_tree         level u8, index u64 big-endian         perfect-subtree hash (32 bytes;
                                                           level 0 = leaf hashes)
ledger_heads        tree size, u64 big-endian              signed tree head encoding
ledger_meta         b"size", b"last_hash", b"latest_head"  u64 / 32 bytes / u64
ledger_alarms       sequence, u64 big-endian               fork alarm encoding
==================  =====================================  =================================

A batch of appends (and the tree head signed over it, when the caller signs one) is one
write transaction: entries, idempotency keys, tree nodes and metadata commit together or
not at all. `append_batch` returns only after the commit, and LMDB's default
``sync=True`` makes the commit an fsync; if the environment was opened without it we
fsync explicitly, so an acknowledged entry survives a crash.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lmdb

from gd.genome.identity import NodeKey
from gd.ledger.chain import (
    AppendReceipt,
    ChainHead,
    KeyHolder,
    SequencedBatch,
    VerifyReport,
    sequence_batch,
    verify_chain,
)
from gd.ledger.entry import GENESIS_PREV, LedgerEntry
from gd.ledger.errors import LocalLedgerError, RemoteLedgerError
from gd.ledger.forks import ForkAlarm
from gd.ledger.merkle import ConsistencyProof, InclusionProof, MerkleTree
from gd.ledger.sth import DEFAULT_LOG_ID, SignedTreeHead
from gd.node.store.lmdb_tables import open_named_db

ENTRIES_DB = b"ledger_entries"
KEYS_DB = b"ledger_keys"
TREE_DB = b"ledger_tree"
HEADS_DB = b"ledger_heads"
META_DB = b"ledger_meta"
ALARMS_DB = b"ledger_alarms"
SUBDATABASES = (ENTRIES_DB, KEYS_DB, TREE_DB, HEADS_DB, META_DB, ALARMS_DB)

META_SIZE = b"size"
META_LAST_HASH = b"last_hash"
META_LATEST_HEAD = b"latest_head"

CORTEX_DIR = "cortex"
# Must match the Cortex: LMDB allows one named-database table per environment.
MAX_DBS = 64
# The map `open_ledger` asks for; the Cortex's default too (config `cortex.map_size_mb`).
# LMDB keeps the larger of this and the size recorded in the file, and a full map is
# doubled on demand up to MAX_MAP_SIZE (address space, not disk: ~100M entries).
MAP_SIZE = 1024**3
MAX_MAP_SIZE = 64 * 1024**3
# One write transaction holds a batch in LMDB's dirty-page list (memory) until commit;
# 10k entries is ~4 MiB of entries plus tree nodes, and far above what a Raft batch holds.
MAX_BATCH = 10_000

_U64 = struct.Struct(">Q")
_NODE_KEY = struct.Struct(">BQ")
_HOLDER_BYTES = 8 + 32 + 32


def _u64(value: int) -> bytes:
    return _U64.pack(value)


def _key_slot(author: str, idempotency_key: str) -> bytes:
    return author.encode() + b"\x00" + idempotency_key.encode()


class TxnNodeStore:
    """A Merkle `NodeStore` over the ``ledger_tree`` sub-database inside one transaction."""

    def __init__(self, txn: lmdb.Transaction, db: Any) -> None:
        self.txn = txn
        self.db = db

    def get_node(self, level: int, index: int) -> bytes:
        value = self.txn.get(_NODE_KEY.pack(level, index), db=self.db)
        if value is None:
            raise RemoteLedgerError(f"stored Merkle node (level {level}, index {index}) is "
                                    "missing")
        return bytes(value)

    def put_node(self, level: int, index: int, value: bytes) -> None:
        self.txn.put(_NODE_KEY.pack(level, index), value, db=self.db)


@dataclass(frozen=True)
class BatchResult:
    """What one committed batch did: a receipt per statement, the new size, the head."""

    receipts: tuple[AppendReceipt, ...]
    size: int
    head: SignedTreeHead | None = None


class Ledger:
    """The ledger in an LMDB environment. Every method runs in its own transaction, so a
    read-only `Ledger` (the CLI) can run beside the daemon's writing one."""

    def __init__(self, env: lmdb.Environment, *, readonly: bool = False,
                 owns_env: bool = False) -> None:
        self.env = env
        self.readonly = readonly
        self._owns_env = owns_env
        try:
            dbs = {name: open_named_db(env, name, create=not readonly)
                   for name in SUBDATABASES}
        except lmdb.NotFoundError:
            raise LocalLedgerError(
                f"no ledger in {env.path()} yet: nothing has been recorded on this node "
                "(the tables are created when it first writes)"
            ) from None
        except lmdb.Error as exc:
            raise LocalLedgerError(f"cannot open the ledger tables: {exc}") from None
        self._entries = dbs[ENTRIES_DB]
        self._keys = dbs[KEYS_DB]
        self._tree = dbs[TREE_DB]
        self._heads = dbs[HEADS_DB]
        self._meta = dbs[META_DB]
        self._alarms = dbs[ALARMS_DB]

    def close(self) -> None:
        """Close the environment if `open_ledger` opened it for us."""
        if self._owns_env:
            self.env.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state --------------------------------------------------------------------------

    def _head(self, txn: lmdb.Transaction) -> ChainHead:
        size = txn.get(META_SIZE, db=self._meta)
        last = txn.get(META_LAST_HASH, db=self._meta)
        return ChainHead(size=_U64.unpack(size)[0] if size else 0,
                         last_hash=bytes(last) if last else GENESIS_PREV)

    @property
    def head(self) -> ChainHead:
        with self.env.begin(buffers=False) as txn:
            return self._head(txn)

    @property
    def size(self) -> int:
        return self.head.size

    def _key_holder(self, txn: lmdb.Transaction, author: str, key: str) -> KeyHolder | None:
        value = txn.get(_key_slot(author, key), db=self._keys)
        if value is None or len(value) != _HOLDER_BYTES:
            return None
        value = bytes(value)
        return KeyHolder(_U64.unpack(value[:8])[0], value[8:40], value[40:])

    # -- appends ------------------------------------------------------------------------

    def append(self, entry: LedgerEntry) -> AppendReceipt:
        """Append one statement (a batch of one); see `append_batch`."""
        return self.append_batch([entry]).receipts[0]

    def append_batch(self, statements: Sequence[LedgerEntry], *,
                     head_key: NodeKey | None = None, timestamp: int = 0,
                     log_id: str = DEFAULT_LOG_ID, signatures_checked: bool = False,
                     also: Callable[[lmdb.Transaction], None] | None = None) -> BatchResult:
        """Append `statements` in one durable transaction; return once it is on disk.

        Signatures are checked first: one bad statement raises RemoteLedgerError and
        nothing is written. A caller that has just checked them itself (across cores,
        `gd.node.services.ledger_group.check_signatures`) says so with `signatures_checked`, so no
        signature is verified twice on the write path. Duplicates and key conflicts come
        back as receipts (see `gd.ledger.chain`). With `head_key`, a tree head over the
        new size is signed and stored in the same transaction (the leader publishes it
        after each batch). `also(txn)` writes the caller's own bookkeeping (the Raft
        applied index, the outbox) in the same transaction: group commit, one fsync.
        """
        if self.readonly:
            raise LocalLedgerError("this ledger was opened read-only")
        if len(statements) > MAX_BATCH:
            raise LocalLedgerError(f"a batch holds at most {MAX_BATCH} entries")
        for statement in statements:
            if not isinstance(statement, LedgerEntry):
                raise LocalLedgerError(f"expected LedgerEntry, got {type(statement).__name__}")
            if not signatures_checked:
                statement.verify_signature()
        while True:
            try:
                batch, head = self._write_batch(statements, head_key, timestamp, log_id, also)
                break
            except lmdb.MapFullError:
                self._grow_map()
        self._make_durable()
        return BatchResult(batch.receipts, batch.head.size, head)

    def _write_batch(self, statements: Sequence[LedgerEntry], head_key: NodeKey | None,
                     timestamp: int, log_id: str,
                     also: Callable[[lmdb.Transaction], None] | None = None,
                     ) -> tuple[SequencedBatch, SignedTreeHead | None]:
        """One write transaction; acts only through `txn`, so a map-full retry is safe."""
        head = None
        with self.env.begin(write=True) as txn:
            before = self._head(txn)
            batch = sequence_batch(before, statements, lambda a, k: self._key_holder(txn, a, k))
            tree = MerkleTree(TxnNodeStore(txn, self._tree), before.size)
            for entry in batch.entries:
                assert entry.index is not None  # sequence_batch placed it
                txn.put(_u64(entry.index), entry.encoded, db=self._entries, append=True)
                txn.put(_key_slot(entry.author, entry.idempotency_key),
                        _u64(entry.index) + entry.statement_hash + entry.entry_hash,
                        db=self._keys)
                tree.append(entry.leaf_hash)
            txn.put(META_SIZE, _u64(batch.head.size), db=self._meta)
            txn.put(META_LAST_HASH, batch.head.last_hash, db=self._meta)
            if head_key is not None:
                head = SignedTreeHead.create(head_key, tree.size, tree.root(), timestamp, log_id)
                self._put_head(txn, head)
            if also is not None:
                also(txn)
        return batch, head

    def _grow_map(self) -> None:
        """Double the LMDB map after MapFullError (as the Cortex does), up to MAX_MAP_SIZE."""
        size = self.env.info()["map_size"]
        if size >= MAX_MAP_SIZE:
            raise LocalLedgerError(f"the LMDB map is full at {size} bytes")
        self.env.set_mapsize(min(size * 2, MAX_MAP_SIZE))

    def _make_durable(self) -> None:
        flags = self.env.flags()
        if not flags.get("sync", True) or not flags.get("metasync", True):
            self.env.sync(True)

    def _put_head(self, txn: lmdb.Transaction, head: SignedTreeHead) -> None:
        txn.put(_u64(head.size), head.encode(), db=self._heads)
        latest = txn.get(META_LATEST_HEAD, db=self._meta)
        if latest is None or _U64.unpack(latest)[0] <= head.size:
            txn.put(META_LATEST_HEAD, _u64(head.size), db=self._meta)

    def sign_head(self, key: NodeKey, timestamp: int,
                  log_id: str = DEFAULT_LOG_ID) -> SignedTreeHead:
        """Sign and store a tree head over the whole log as it is now."""
        if self.readonly:
            raise LocalLedgerError("this ledger was opened read-only")
        with self.env.begin(write=True) as txn:
            size = self._head(txn).size
            root = MerkleTree(TxnNodeStore(txn, self._tree), size).root()
            head = SignedTreeHead.create(key, size, root, timestamp, log_id)
            self._put_head(txn, head)
        self._make_durable()
        return head

    def add_head(self, head: SignedTreeHead) -> None:
        """Store a head signed elsewhere (the region's leader) after checking it against
        this log: RemoteLedgerError when the signature fails or the root differs from
        ours at that size (that is a fork: feed both heads to a `ForkMonitor`)."""
        if self.readonly:
            raise LocalLedgerError("this ledger was opened read-only")
        head.verify()
        with self.env.begin(write=True) as txn:
            size = self._head(txn).size
            if head.size > size:
                raise LocalLedgerError(f"head at size {head.size} is beyond our {size} entries")
            root = MerkleTree(TxnNodeStore(txn, self._tree), size).root(head.size)
            if root != head.root:
                raise RemoteLedgerError(f"head at size {head.size} disagrees with our root")
            self._put_head(txn, head)
        self._make_durable()

    # -- reads --------------------------------------------------------------------------

    def raw_entry(self, index: int) -> bytes:
        with self.env.begin(buffers=False) as txn:
            size = self._head(txn).size
            if not 0 <= index < size:
                raise LocalLedgerError(f"no entry {index}: the ledger has {size} entries")
            value = txn.get(_u64(index), db=self._entries)
        if value is None:
            raise RemoteLedgerError(f"entry {index} is missing from the store")
        return value

    def entry(self, index: int) -> LedgerEntry:
        """Entry `index`, strictly decoded (RemoteLedgerError if the stored bytes are bad)."""
        return LedgerEntry.decode(self.raw_entry(index))

    def entries(self, start: int = 0, stop: int | None = None) -> Iterator[LedgerEntry]:
        """Entries ``start <= index < stop`` in order, from one consistent snapshot."""
        with self.env.begin(buffers=False) as txn:
            size = self._head(txn).size
            stop = size if stop is None else min(stop, size)
            cursor = txn.cursor(db=self._entries)
            if start >= stop or not cursor.set_range(_u64(max(start, 0))):
                return
            for key, value in cursor:
                if _U64.unpack(key)[0] >= stop:
                    return
                yield LedgerEntry.decode(value)

    def find(self, author: str, idempotency_key: str) -> LedgerEntry | None:
        """The entry `author` appended under `idempotency_key`, if any: how a client whose
        request timed out learns whether it committed."""
        with self.env.begin(buffers=False) as txn:
            holder = self._key_holder(txn, author, idempotency_key)
            if holder is None:
                return None
            value = txn.get(_u64(holder.index), db=self._entries)
        return LedgerEntry.decode(value) if value is not None else None

    def root(self, size: int | None = None) -> bytes:
        with self.env.begin(buffers=False) as txn:
            return self._tree_view(txn).root(size)

    def leaf_hash(self, index: int) -> bytes:
        with self.env.begin(buffers=False) as txn:
            return self._tree_view(txn).leaf(index)

    def inclusion_proof(self, index: int, size: int | None = None) -> InclusionProof:
        with self.env.begin(buffers=False) as txn:
            return self._tree_view(txn).inclusion_proof(index, size)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> ConsistencyProof:
        with self.env.begin(buffers=False) as txn:
            return self._tree_view(txn).consistency_proof(old_size, new_size)

    def _tree_view(self, txn: lmdb.Transaction) -> MerkleTree:
        return MerkleTree(TxnNodeStore(txn, self._tree), self._head(txn).size)

    def latest_head(self) -> SignedTreeHead | None:
        with self.env.begin(buffers=False) as txn:
            latest = txn.get(META_LATEST_HEAD, db=self._meta)
            raw = txn.get(latest, db=self._heads) if latest is not None else None
        return SignedTreeHead.decode(raw) if raw is not None else None

    def heads(self) -> list[SignedTreeHead]:
        """Every stored tree head, by size."""
        with self.env.begin(buffers=False) as txn:
            return [SignedTreeHead.decode(v) for _, v in txn.cursor(db=self._heads)]

    # -- verification -------------------------------------------------------------------

    def verify(self, trusted_signers: Collection[str] | None = None, *,
               require_head: bool = False) -> VerifyReport:
        """Recompute links, signatures, the tree, the idempotency index and every signed
        head's root, from one snapshot; report the first bad index and why
        (`gd.ledger.chain.verify_chain`). `trusted_signers` pins who may sign heads (the
        region's voters); `require_head` makes a non-empty log without a head a failure."""
        with self.env.begin(buffers=False) as txn:
            head = self._head(txn)
            heads = []
            for key, raw in txn.cursor(db=self._heads):
                head_size = int.from_bytes(key, "big")
                try:
                    parsed = SignedTreeHead.decode(raw)
                except RemoteLedgerError as exc:
                    return VerifyReport(ok=False, size=head.size, checked=0,
                                        root=bytes(32), first_bad_index=max(head_size - 1, 0),
                                        reason=f"stored head at size {head_size}: {exc}")
                if parsed.size != head_size:
                    return VerifyReport(ok=False, size=head.size, checked=0, root=bytes(32),
                                        first_bad_index=max(head_size - 1, 0),
                                        reason=f"head stored at size {head_size} claims "
                                               f"size {parsed.size}")
                heads.append(parsed)
            records = ((int.from_bytes(k, "big"), v)
                       for k, v in txn.cursor(db=self._entries))
            report = verify_chain(records, size=head.size, last_hash=head.last_hash,
                                  nodes=TxnNodeStore(txn, self._tree), heads=heads,
                                  key_holder=lambda a, k: self._key_holder(txn, a, k),
                                  trusted_signers=trusted_signers, require_head=require_head,
                                  key_count=txn.stat(self._keys)["entries"])
            if not report.ok and report.reason.startswith("the idempotency index holds"):
                stray = self._stray_key(txn, head.size)
                if stray is not None:
                    report = replace(report, reason=f"{report.reason}; {stray}")
            return report

    def _stray_key(self, txn: lmdb.Transaction, size: int) -> str | None:
        """Name one idempotency key that points at no entry of its own (verify's detail)."""
        for slot, value in txn.cursor(db=self._keys):
            author, _, key = bytes(slot).partition(b"\x00")
            holder_index = _U64.unpack(bytes(value)[:8])[0] if len(value) >= 8 else size
            raw = txn.get(_u64(holder_index), db=self._entries) if holder_index < size else None
            try:
                entry = LedgerEntry.decode(bytes(raw)) if raw is not None else None
            except RemoteLedgerError:
                entry = None
            if entry is None or (entry.author.encode(), entry.idempotency_key.encode()) != (
                    author, key):
                return (f"key {key.decode(errors='replace')!r} of {author.decode(errors='replace')}"
                        f" names entry {holder_index}, which is not its statement")
        return None

    # -- migration ----------------------------------------------------------------------

    def take_all(self, txn: lmdb.Transaction) -> list[bytes]:
        """Every stored entry's encoding, in order, after which the log is emptied (entries,
        idempotency index, tree, heads, metadata; fork alarms stay), all inside the
        caller's write transaction `txn`.

        For a node whose solo ledger moves to its region (`gd.node.services.ledger_service`). It
        uses the tables opened at construction: opening a table inside an open write
        transaction starts a second writer on the same thread, and LMDB then waits for
        itself forever.
        """
        if self.readonly:
            raise LocalLedgerError("this ledger was opened read-only")
        raws = [bytes(v) for v in txn.cursor(db=self._entries).iternext(keys=False)]
        for db in (self._entries, self._keys, self._tree, self._heads, self._meta):
            txn.drop(db, delete=False)
        return raws

    # -- fork alarms --------------------------------------------------------------------

    def record_alarm(self, alarm: ForkAlarm) -> int:
        """Keep a fork alarm for `ledger alarms`; returns its sequence number."""
        if self.readonly:
            raise LocalLedgerError("this ledger was opened read-only")
        with self.env.begin(write=True) as txn:
            cursor = txn.cursor(db=self._alarms)
            seq = _U64.unpack(cursor.key())[0] + 1 if cursor.last() else 0
            txn.put(_u64(seq), alarm.encode(), db=self._alarms)
        self._make_durable()
        return seq

    def alarms(self) -> list[ForkAlarm]:
        with self.env.begin(buffers=False) as txn:
            return [ForkAlarm.decode(v) for _, v in txn.cursor(db=self._alarms)]


def open_ledger(home_path: Path, readonly: bool) -> Ledger:
    """Open the ledger in ``home_path/cortex`` (the Cortex's environment) on its own.

    For the CLI when no daemon runs; a running node passes its Cortex's environment to
    `Ledger` instead (LMDB forbids opening one environment twice in a process).
    LocalLedgerError with a readable reason when there is nothing to open.
    """
    path = Path(home_path) / CORTEX_DIR
    if readonly and not (path / "data.mdb").exists():
        raise LocalLedgerError(f"no Cortex at {path}: is this a gd-node home?")
    try:
        if not readonly:
            # Private like the Cortex (gd.node.home): 0700 / 0600 whatever the umask.
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(path, 0o700)
        env = lmdb.open(str(path), max_dbs=MAX_DBS, readonly=readonly, map_size=MAP_SIZE,
                        mode=0o600)
    except (OSError, lmdb.Error) as exc:
        raise LocalLedgerError(f"cannot open the Cortex at {path}: {exc}") from None
    try:
        if not readonly:
            for name in ("data.mdb", "lock.mdb"):
                os.chmod(path / name, 0o600)
        return Ledger(env, readonly=readonly, owns_env=True)
    except OSError as exc:
        env.close()
        raise LocalLedgerError(f"cannot make the Cortex at {path} private: {exc}") from None
    except LocalLedgerError:
        env.close()
        raise
