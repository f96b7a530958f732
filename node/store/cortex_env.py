"""The Cortex's LMDB environment: opening, schema, write transactions, backup.

`Cortex` (cortex.py) is this base plus its record kinds (cortex_genes.py,
cortex_records.py); every part shares the one environment and its named tables. The
environment commits with fsync (`sync=True`, `metasync=True`), so an acknowledged write
survives power loss; a full map doubles and the transaction runs again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self, TypeVar

import lmdb

from gd.genome.errors import DecodeError
from gd.node.home import PRIVATE_FILE_MODE, make_private, private_dir
from gd.node.store.lmdb_tables import U64, Txn, open_named_db

# 2: gene indexes keyed by index number (ADR 0060); 3: gene bodies keyed by it too (ADR
# 0062). An older Cortex is upgraded on its first read-write open and still read by a
# read-only one.
SCHEMA_VERSION = 3
# Sub-databases. Other modules (ledger, sync, sovereignty) open their own through
# `open_db`; LMDB needs the total up front, 64 leaves ample room.
MAX_DBS = 64
DEFAULT_MAP_SIZE = 1 << 30
# When the map fills, it doubles, up to this ceiling (the map is sparse: the file only
# grows as data is written, so a large ceiling costs nothing until used).
MAX_MAP_SIZE = 1 << 40

_CORE_DBS = (
    "meta", "genes", "gene_versions", "by_vhash", "idx_domain", "idx_status", "idx_origin",
    "synapses", "synapses_rev", "experiences", "decisions", "idx_decision_gene", "changes",
    "checkpoints",
)

T = TypeVar("T")
log = logging.getLogger("gd.store")


class CortexError(RuntimeError):
    """The Cortex cannot be opened or used (missing, corrupt, newer schema, locked)."""


class VersionConflict(CortexError):
    """A different body already exists for this (gene id, version)."""


class UnknownGene(CortexError, KeyError):
    """The named gene is not in the Cortex."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown gene"


class CortexEnv:
    """An open LMDB Cortex environment. Use `Cortex.open(path)`; close with `.close()`
    or `with`."""

    def __init__(self, env: lmdb.Environment, path: Path, readonly: bool) -> None:
        self.env = env
        self.path = path
        self.readonly = readonly
        self._dbs: dict[str, Any] = {}
        for name in _CORE_DBS:
            self._dbs[name] = self.open_db(name)

    # -- lifecycle --------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = False,
             map_size: int = DEFAULT_MAP_SIZE, create: bool = True) -> Self:
        """Open (or, unless `readonly` or `create=False`, create) the Cortex at `path`."""
        path = Path(path)
        if readonly or not create:
            if not (path / "data.mdb").exists():
                raise CortexError(f"no Cortex at {path}: run `gd-node init` first")
        else:
            private_dir(path)
        try:
            env = lmdb.open(
                str(path), map_size=map_size, max_dbs=MAX_DBS, readonly=readonly,
                mode=PRIVATE_FILE_MODE,
                sync=True, metasync=True, lock=True, max_readers=256,
                # Writes go straight into the map instead of malloc'd copies: 1.6× the
                # ingest rate at 100k genes (ADR 0002). Copy-on-write still never touches
                # pages of the last committed tree, so a kill mid-transaction loses only
                # that transaction; sync=True still msyncs before a commit returns.
                writemap=not readonly,
            )
        except lmdb.Error as exc:
            raise CortexError(f"cannot open Cortex at {path}: {exc}") from None
        try:
            if not readonly:
                # Private whatever the umask or an older gd-node left (home.py).
                make_private(path)
            cortex = cls(env, path, readonly)
            cortex._check_schema()
        except OSError as exc:
            env.close()
            raise CortexError(f"cannot make the Cortex at {path} private: {exc}") from None
        except lmdb.Error as exc:
            env.close()
            raise CortexError(f"Cortex at {path} is unusable: {exc}") from None
        except CortexError:
            env.close()
            raise
        return cortex

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open_db(self, name: str) -> Any:
        """A named sub-database (created on first open unless read-only)."""
        if name in self._dbs:
            return self._dbs[name]
        try:
            db = open_named_db(self.env, name.encode(), create=not self.readonly)
        except lmdb.NotFoundError:
            raise CortexError(
                f"sub-database {name!r} does not exist yet (open read-write once)") from None
        self._dbs[name] = db
        return db

    def _check_schema(self) -> None:
        meta = self._dbs["meta"]
        with self.env.begin() as txn:
            raw = txn.get(b"schema", db=meta)
        if raw is None:
            if self.readonly:
                raise CortexError(f"Cortex at {self.path} has no schema version")
            with self.env.begin(write=True) as txn:
                txn.put(b"schema", U64.pack(SCHEMA_VERSION), db=meta)
            return
        version = U64.unpack(raw)[0]
        if version > SCHEMA_VERSION:
            raise CortexError(
                f"Cortex at {self.path} has schema {version}, newer than this gd-node "
                f"understands ({SCHEMA_VERSION}): upgrade gd-node")
        if version < SCHEMA_VERSION and not self.readonly:
            self._upgrade(version)

    def _upgrade(self, version: int) -> None:
        # Imported here: only an older Cortex needs it, once.
        from gd.node.store.schema_upgrade import upgrade_bodies, upgrade_indexes

        def run(txn: Txn) -> int:
            # Read again inside the write lock: another process may have upgraded it.
            raw = txn.get(b"schema", db=self._dbs["meta"])
            found = SCHEMA_VERSION if raw is None else U64.unpack(raw)[0]
            if found >= SCHEMA_VERSION:
                return 0
            if found < 2:
                upgrade_indexes(txn, self._dbs)
            return upgrade_bodies(txn, self._dbs)

        try:
            count = self.write(run)
        except DecodeError as exc:
            raise CortexError(f"Cortex at {self.path} cannot be upgraded from schema "
                              f"{version}: {exc}") from None
        log.info("cortex at %s upgraded from schema %d to %d (%d gene bodies rekeyed)",
                 self.path, version, SCHEMA_VERSION, count)

    @property
    def schema_version(self) -> int:
        with self.env.begin() as txn:
            return U64.unpack(must_get(txn, self._dbs["meta"], b"schema", "meta"))[0]

    # -- transactions -----------------------------------------------------------
    def write(self, fn: Callable[[Txn], T]) -> T:
        """Run `fn(txn)` in one write transaction and commit (fsync) it.

        If the map is full, the transaction is aborted, the map doubled and `fn` run
        again, so `fn` must only act through `txn` (no side effects outside it).
        """
        if self.readonly:
            raise CortexError("the Cortex is open read-only")
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    return fn(txn)
            except lmdb.MapFullError:
                size = self.env.info()["map_size"]
                if size >= MAX_MAP_SIZE:
                    raise CortexError(f"Cortex map is full at {size} bytes") from None
                self.env.set_mapsize(min(size * 2, MAX_MAP_SIZE))

    def backup(self, dest: str | Path) -> Path:
        """Online, compacting copy of the environment into the empty directory `dest`.
        Runs in a read transaction: the daemon keeps writing meanwhile."""
        dest = Path(dest)
        if dest.exists() and any(dest.iterdir()):
            raise CortexError(f"backup destination {dest} is not empty")
        private_dir(dest)  # 0700 before the copy: its files are never visible to others
        self.env.copy(str(dest), compact=True)
        make_private(dest)
        return dest


def must_get(txn: Txn, db: Any, key: bytes, what: str) -> bytes:
    """A read that the Cortex's own meta or indexes promise will find a record. A miss means
    the store is damaged: say so (and where to look) instead of failing inside a decoder."""
    raw = txn.get(key, db=db)
    if raw is None:
        raise CortexError(f"Cortex is damaged: {what} {key!r} is referenced but missing "
                          "(see `Cortex.check_indexes`)")
    return raw
