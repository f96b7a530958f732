"""The Cortex: the node's LMDB store of genes, synapses, experiences and decisions.

One LMDB environment, named sub-databases (DESIGN.md). The invariants:

* **One write, one transaction.** A gene, its version record, its hash lookup, its three
  index entries and its change-feed entry are written in the same LMDB transaction, so a
  crash (even SIGKILL mid-batch) leaves all of them or none. LMDB commits with fsync
  (`sync=True`, `metasync=True`), so an acknowledged write survives power loss too.
* **Nothing is silently overwritten.** A second, different body for an existing
  (gene id, version) is a `VersionConflict`; sync decides what to do with concurrent
  versions (conflict queue), the store never picks one for it.
* **The change feed is the sync source.** Every stored gene version or deletion gets the
  next sequence number; peers resume from the last number they applied.

Keys are bytes built from ASCII ids joined by NUL (ids cannot contain NUL, see
`gd.genome.checks.ID_RE`), so prefix scans answer "all genes of domain D" in key order.
"""

from __future__ import annotations

import contextlib
import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import lmdb

from gd.genome import canonical
from gd.genome.decision import Decision
from gd.genome.errors import DecodeError, ValidationError
from gd.genome.experience import Experience
from gd.genome.gene import Gene, GeneStatus
from gd.genome.synapse import Synapse, SynapseKind
from gd.node.home import PRIVATE_FILE_MODE, make_private, private_dir

SCHEMA_VERSION = 1
# Sub-databases. Other modules (ledger, sync, sovereignty) open their own through
# `open_db`; LMDB needs the total up front, 64 leaves ample room.
MAX_DBS = 64
DEFAULT_MAP_SIZE = 1 << 30
# When the map fills, it doubles, up to this ceiling (the map is sparse: the file only
# grows as data is written, so a large ceiling costs nothing until used).
MAX_MAP_SIZE = 1 << 40
# A k-hop query stops after visiting this many genes: a hub gene must not make one query
# walk the whole graph.
MAX_NEIGHBOURHOOD = 10_000

_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")
SEP = b"\x00"

_CORE_DBS = (
    "meta", "genes", "gene_versions", "by_vhash", "idx_domain", "idx_status", "idx_origin",
    "synapses", "synapses_rev", "experiences", "decisions", "idx_decision_gene", "changes",
    "checkpoints",
)

T = TypeVar("T")

# The one typed edge to lmdb. Every transaction here is opened with lmdb's default
# buffers=False, so reads return bytes; lmdb's stubs type a bare Transaction as returning
# `bytes | memoryview`. Stores annotate their transactions with this alias instead of
# converting at each read.
Txn: TypeAlias = "lmdb.Transaction[bytes]"



def open_named_db(env: lmdb.Environment, name: bytes, *, create: bool) -> Any:
    """Open (or create) a named sub-database inside an explicit transaction.

    `env.open_db` without one begins a write transaction internally while holding the
    GIL: if a worker thread holds the write lock and waits for the GIL to finish its put,
    both wait forever (seen in the suite: the event loop opening the ledger's tables
    while sync applied a batch). `env.begin` waits for the lock with the GIL released."""
    if not create:  # a read-only open takes no write lock
        return env.open_db(name, create=False)
    with env.begin(write=True) as txn:
        return env.open_db(name, txn=txn, create=True)

class CortexError(RuntimeError):
    """The Cortex cannot be opened or used (missing, corrupt, newer schema, locked)."""


class VersionConflict(CortexError):
    """A different body already exists for this (gene id, version)."""


class UnknownGene(CortexError, KeyError):
    """The named gene is not in the Cortex."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown gene"


@dataclass(frozen=True)
class Change:
    """One entry of the local change feed."""

    seq: int
    kind: str  # "gene"
    op: str  # "put" | "delete"
    id: str
    version: int
    vhash: bytes

    def to_plain(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "op": self.op, "version": self.version,
                "vhash": self.vhash}


@dataclass(frozen=True)
class CortexStats:
    genes: int
    versions: int
    synapses: int
    experiences: int
    decisions: int
    changes: int
    last_seq: int
    size_bytes: int
    by_status: dict[str, int]
    by_domain: dict[str, int]


def _head(gene: Gene) -> bytes:
    """The head record: which version is current plus this node's local view of the gene.
    The signed body lives once, in `gene_versions`; domain and origin are repeated here
    so re-indexing on an update needs no decode of the old body."""
    return canonical.encode_plain(
        [gene.version, str(gene.status), gene.successes, gene.failures, gene.domain,
         gene.origin])


@dataclass(frozen=True)
class _Head:
    version: int
    status: str
    successes: int
    failures: int
    domain: str
    origin: str

    @classmethod
    def decode(cls, raw: bytes) -> _Head:
        try:
            version, status, successes, failures, domain, origin = canonical.decode(raw)
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"corrupt gene head record: {exc}") from None
        return cls(version, status, successes, failures, domain, origin)


def _k(*parts: str | bytes) -> bytes:
    return SEP.join(p.encode() if isinstance(p, str) else p for p in parts)


def _version_key(gene_id: str, version: int) -> bytes:
    return gene_id.encode() + SEP + _U64.pack(version)


class _ChangeSeq:
    """The change-feed counter of one write transaction: read once, stored once."""

    __slots__ = ("_db", "_first", "_txn", "value")

    def __init__(self, txn: Txn, meta_db: Any) -> None:
        self._txn, self._db = txn, meta_db
        raw = txn.get(b"change_seq", db=meta_db)
        self.value = self._first = _U64.unpack(raw)[0] if raw else 0

    def next(self) -> int:
        self.value += 1
        return self.value

    def store(self) -> None:
        if self.value != self._first:
            self._txn.put(b"change_seq", _U64.pack(self.value), db=self._db)


class Cortex:
    """An open LMDB Cortex. Use `Cortex.open(path)`; close with `.close()` or `with`."""

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
             map_size: int = DEFAULT_MAP_SIZE, create: bool = True) -> Cortex:
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

    def __enter__(self) -> Cortex:
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
                txn.put(b"schema", _U64.pack(SCHEMA_VERSION), db=meta)
            return
        version = _U64.unpack(raw)[0]
        if version > SCHEMA_VERSION:
            raise CortexError(
                f"Cortex at {self.path} has schema {version}, newer than this gd-node "
                f"understands ({SCHEMA_VERSION}): upgrade gd-node")

    @property
    def schema_version(self) -> int:
        with self.env.begin() as txn:
            return _U64.unpack(_must_get(txn, self._dbs["meta"], b"schema", "meta"))[0]

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

    # -- genes ------------------------------------------------------------------
    def put_gene(self, gene: Gene) -> int | None:
        """Store one gene version as the gene's head. Returns its change-feed sequence
        number, or None if this exact version and local state were already stored."""
        return self.put_genes([gene])[0]

    def put_genes(self, genes: Iterable[Gene]) -> list[int | None]:
        """Store a batch in ONE transaction (all or nothing); see `put_gene`."""
        batch = list(genes)

        def run(txn: Txn) -> list[int | None]:
            # The change counter is read once and written once per batch, and the feed's
            # keys only grow, so they are appended (no B-tree search per gene).
            seq = _ChangeSeq(txn, self._dbs["meta"])
            out = [self._put_gene(txn, g, seq=seq) for g in batch]
            seq.store()
            return out

        return self.write(run)

    def put_gene_in(self, txn: Txn, gene: Gene, *,
                    supersede: bool = False) -> int | None:
        """`put_gene` inside the caller's write transaction (sync applies a batch and its
        checkpoint together). `supersede=True` makes `gene` the head even over a higher
        version number and replaces a different body stored under the same (id, version)
        — only for a decided last-writer-wins, where the losing concurrent version is
        meant to disappear."""
        return self._put_gene(txn, gene, supersede=supersede)

    def get_gene_in(self, txn: Txn, gene_id: str) -> Gene | None:
        gid = gene_id.encode()
        raw = txn.get(gid, db=self._dbs["genes"])
        return self._load(txn, gid, raw) if raw is not None else None

    def set_checkpoint_in(self, txn: Txn, peer_id: str, seq: int) -> None:
        txn.put(peer_id.encode(), _U64.pack(seq), db=self._dbs["checkpoints"])

    def _put_gene(self, txn: Txn, gene: Gene, *, supersede: bool = False,
                  seq: _ChangeSeq | None = None) -> int | None:
        d = self._dbs
        gid = gene.id.encode()
        vkey = _version_key(gene.id, gene.version)
        wire = gene.wire_bytes
        existing = txn.get(vkey, db=d["gene_versions"])
        if existing is not None and existing != wire:
            if not supersede:
                raise VersionConflict(
                    f"gene {gene.id} version {gene.version} already exists with another body")
            loser = Gene.from_stored(canonical.decode(existing), raw=existing)
            txn.delete(loser.version_hash, db=d["by_vhash"])
            existing = None
        new_version = existing is None
        if new_version:
            txn.put(vkey, wire, db=d["gene_versions"])
            txn.put(gene.version_hash, vkey, db=d["by_vhash"])
        head = _head(gene)
        old_raw = txn.get(gid, db=d["genes"])
        if old_raw is not None:
            if old_raw == head:
                return None
            old = _Head.decode(old_raw)
            if old.version > gene.version and not supersede:
                # An older version arriving late is kept in history, not made head.
                return self._append_change(txn, "put", gene, seq) if new_version else None
            self._unindex(txn, gene.id, old.domain, old.status, old.origin)
        txn.put(gid, head, db=d["genes"])
        self._index(txn, gene.id, gene.domain, str(gene.status), gene.origin)
        if not new_version:
            # Only local state changed: nothing to sync, except a gene that became native
            # (a person approved it): only native genes are shared, so peers that skipped
            # it while it was pending must see it in the feed again.
            approved = (old_raw is not None and _Head.decode(old_raw).status != "native"
                        and gene.status is GeneStatus.NATIVE)
            return self._append_change(txn, "put", gene, seq) if approved else None
        return self._append_change(txn, "put", gene, seq)

    def _index(self, txn: Txn, gene_id: str, domain: str, status: str,
               origin: str) -> None:
        d = self._dbs
        txn.put(_k(domain, gene_id), b"", db=d["idx_domain"])
        txn.put(_k(status, gene_id), b"", db=d["idx_status"])
        txn.put(_k(origin, gene_id), b"", db=d["idx_origin"])

    def _unindex(self, txn: Txn, gene_id: str, domain: str, status: str,
                 origin: str) -> None:
        d = self._dbs
        txn.delete(_k(domain, gene_id), db=d["idx_domain"])
        txn.delete(_k(status, gene_id), db=d["idx_status"])
        txn.delete(_k(origin, gene_id), db=d["idx_origin"])

    def _load(self, txn: Txn, gene_id: bytes, head_raw: bytes, *,
              validate: bool = False) -> Gene:
        """The full Gene for a head record (signed body joined with local state). Our own
        records are rebuilt without re-validation (`Gene.from_stored`) unless `validate`."""
        head = _Head.decode(head_raw)
        raw = txn.get(gene_id + SEP + _U64.pack(head.version), db=self._dbs["gene_versions"])
        if raw is None:
            raise CortexError(f"gene {gene_id.decode()}: head version {head.version} missing")
        if validate:
            return Gene.from_wire(canonical.decode(raw), status=GeneStatus(head.status),
                                  successes=head.successes, failures=head.failures)
        return Gene.from_stored(canonical.decode(raw), raw=raw, status=head.status,
                                successes=head.successes, failures=head.failures)

    def _append_change(self, txn: Txn, op: str, gene: Gene,
                       batch_seq: _ChangeSeq | None = None) -> int:
        if batch_seq is not None:
            seq = batch_seq.next()
            change = Change(seq, "gene", op, gene.id, gene.version, gene.version_hash)
            txn.put(_U64.pack(seq), canonical.encode_plain(change.to_plain()),
                    db=self._dbs["changes"], append=True)
            return seq
        meta = self._dbs["meta"]
        raw = txn.get(b"change_seq", db=meta)
        seq = (_U64.unpack(raw)[0] if raw else 0) + 1
        change = Change(seq, "gene", op, gene.id, gene.version, gene.version_hash)
        txn.put(_U64.pack(seq), canonical.encode_plain(change.to_plain()),
                db=self._dbs["changes"])
        txn.put(b"change_seq", _U64.pack(seq), db=meta)
        return seq

    def get_gene(self, gene_id: str) -> Gene | None:
        gid = gene_id.encode()
        with self.env.begin() as txn:
            raw = txn.get(gid, db=self._dbs["genes"])
            return self._load(txn, gid, raw) if raw is not None else None

    def require_gene(self, gene_id: str) -> Gene:
        gene = self.get_gene(gene_id)
        if gene is None:
            raise UnknownGene(f"no gene {gene_id!r} in this Cortex")
        return gene

    def get_gene_version(self, gene_id: str, version: int) -> Gene | None:
        """A stored version's signed body, with the gene's current status (the status is
        the gene's, not the version's: what a sender's policy must judge) and counters
        at zero."""
        with self.env.begin() as txn:
            raw = txn.get(_version_key(gene_id, version), db=self._dbs["gene_versions"])
            head = txn.get(gene_id.encode(), db=self._dbs["genes"])
        if raw is None:
            return None
        status = _Head.decode(head).status if head is not None else GeneStatus.NATIVE
        return Gene.from_stored(canonical.decode(raw), raw=raw, status=status)

    def gene_versions(self, gene_id: str) -> list[int]:
        prefix = gene_id.encode() + SEP
        with self.env.begin() as txn:
            return [_U64.unpack(k[len(prefix):])[0]
                    for k in _prefix_keys(txn, self._dbs["gene_versions"], prefix)]

    def next_version(self, gene_id: str) -> int:
        """One above every version of the gene this Cortex holds (1 for a new gene): the
        number a local edit must take (see `Gene.edited`)."""
        versions = self.gene_versions(gene_id)
        return (max(versions) if versions else 0) + 1

    def get_by_version_hash(self, vhash: bytes) -> Gene | None:
        with self.env.begin() as txn:
            vkey = txn.get(vhash, db=self._dbs["by_vhash"])
            raw = txn.get(vkey, db=self._dbs["gene_versions"]) if vkey else None
        return Gene.from_stored(canonical.decode(raw), raw=raw) if raw is not None else None

    def delete_gene(self, gene_id: str) -> int | None:
        """Remove a gene, all its stored versions, indexes and synapses; append a
        tombstone to the change feed. Returns the tombstone's sequence, None if absent."""

        def run(txn: Txn) -> int | None:
            d = self._dbs
            raw = txn.get(gene_id.encode(), db=d["genes"])
            if raw is None:
                return None
            gene = self._load(txn, gene_id.encode(), raw)
            self._unindex(txn, gene.id, gene.domain, str(gene.status), gene.origin)
            txn.delete(gene_id.encode(), db=d["genes"])
            prefix = gene_id.encode() + SEP
            for key in list(_prefix_keys(txn, d["gene_versions"], prefix)):
                stored = _must_get(txn, d["gene_versions"], key, "gene version")
                body = Gene.from_stored(canonical.decode(stored), raw=stored)
                txn.delete(body.version_hash, db=d["by_vhash"])
                txn.delete(key, db=d["gene_versions"])
            for fwd, rev in (("synapses", "synapses_rev"), ("synapses_rev", "synapses")):
                for key in list(_prefix_keys(txn, d[fwd], prefix)):
                    _, kind, other = key.split(SEP)
                    txn.delete(key, db=d[fwd])
                    txn.delete(_k(other, kind, gene_id.encode()), db=d[rev])
            return self._append_change(txn, "delete", gene)

        return self.write(run)

    def set_status(self, gene_id: str, status: GeneStatus | str) -> Gene:
        """Change a gene's local status (approve, reject, retire...), index included."""
        status = GeneStatus(status)

        def run(txn: Txn) -> Gene:
            raw = txn.get(gene_id.encode(), db=self._dbs["genes"])
            if raw is None:
                raise UnknownGene(f"no gene {gene_id!r} in this Cortex")
            old = self._load(txn, gene_id.encode(), raw)
            new = old.with_local(status=status)
            self._unindex(txn, old.id, old.domain, str(old.status), old.origin)
            txn.put(gene_id.encode(), _head(new), db=self._dbs["genes"])
            self._index(txn, new.id, new.domain, str(new.status), new.origin)
            return new

        return self.write(run)

    def genes(self, *, domain: str | None = None, status: GeneStatus | str | None = None,
              origin: str | None = None) -> Iterator[Gene]:
        """Head versions, filtered; uses the most selective index given. Reads in one
        snapshot (a consistent view even while the daemon writes)."""
        filters = [("idx_domain", domain), ("idx_status", status and str(status)),
                   ("idx_origin", origin)]
        chosen = [(db, v) for db, v in filters if v is not None]
        with self.env.begin() as txn:
            genes_db = self._dbs["genes"]
            if not chosen:
                for gid, raw in txn.cursor(db=genes_db):
                    yield self._load(txn, gid, raw)
                return
            db, value = chosen[0]
            prefix = value.encode() + SEP
            for key in _prefix_keys(txn, self._dbs[db], prefix):
                gid = key[len(prefix):]
                gene = self._load(txn, gid, _must_get(txn, genes_db, gid, "gene"))
                if ((domain is None or gene.domain == domain)
                        and (status is None or gene.status == status)
                        and (origin is None or gene.origin == origin)):
                    yield gene

    def gene_ids(self, *, domain: str | None = None) -> list[str]:
        with self.env.begin() as txn:
            if domain is None:
                return [k.decode() for k, _ in txn.cursor(db=self._dbs["genes"])]
            prefix = domain.encode() + SEP
            return [k[len(prefix):].decode()
                    for k in _prefix_keys(txn, self._dbs["idx_domain"], prefix)]

    # -- change feed -------------------------------------------------------------
    def changes_since(self, seq: int, limit: int = 1000) -> list[Change]:
        """Feed entries with sequence > `seq`, oldest first, at most `limit`."""
        out: list[Change] = []
        with self.env.begin() as txn:
            cur = txn.cursor(db=self._dbs["changes"])
            if not cur.set_range(_U64.pack(seq + 1)):
                return out
            for key, raw in cur:
                data = canonical.decode(raw)
                out.append(Change(_U64.unpack(key)[0], data["kind"], data["op"], data["id"],
                                  data["version"], data["vhash"]))
                if len(out) >= limit:
                    break
        return out

    @property
    def last_seq(self) -> int:
        with self.env.begin() as txn:
            raw = txn.get(b"change_seq", db=self._dbs["meta"])
        return _U64.unpack(raw)[0] if raw else 0

    def get_checkpoint(self, peer_id: str) -> int:
        with self.env.begin() as txn:
            raw = txn.get(peer_id.encode(), db=self._dbs["checkpoints"])
        return _U64.unpack(raw)[0] if raw else 0

    def set_checkpoint(self, peer_id: str, seq: int) -> None:
        self.write(lambda txn: self.set_checkpoint_in(txn, peer_id, seq))

    # -- synapses ----------------------------------------------------------------
    def add_synapse(self, synapse: Synapse) -> None:
        """Add or re-weight an edge; both genes must exist."""

        def run(txn: Txn) -> None:
            for end in (synapse.source, synapse.target):
                if txn.get(end.encode(), db=self._dbs["genes"]) is None:
                    raise UnknownGene(f"no gene {end!r} in this Cortex")
            weight = _F64.pack(synapse.weight)
            kind = str(synapse.kind)
            txn.put(_k(synapse.source, kind, synapse.target), weight, db=self._dbs["synapses"])
            txn.put(_k(synapse.target, kind, synapse.source), weight,
                    db=self._dbs["synapses_rev"])

        self.write(run)

    def synapses_of(self, gene_id: str, *, incoming: bool = False) -> list[Synapse]:
        db = self._dbs["synapses_rev" if incoming else "synapses"]
        prefix = gene_id.encode() + SEP
        out = []
        with self.env.begin() as txn:
            for key in _prefix_keys(txn, db, prefix):
                _, kind, other = key.decode().split("\x00")
                weight = _F64.unpack(_must_get(txn, db, key, "synapse"))[0]
                src, dst = (other, gene_id) if incoming else (gene_id, other)
                out.append(Synapse(src, dst, SynapseKind(kind), weight))
        return out

    def neighbourhood(self, gene_id: str, k: int, *, kinds: Iterable[str] | None = None,
                      direction: str = "both") -> dict[str, int]:
        """Genes within `k` synapse hops of `gene_id` → their hop distance (BFS).

        `direction` is "out", "in" or "both"; `kinds` restricts the edge types. Stops after
        `MAX_NEIGHBOURHOOD` genes."""
        if k < 0:
            raise ValueError("k must be >= 0")
        if direction not in ("out", "in", "both"):
            raise ValueError("direction must be out, in or both")
        wanted = {str(SynapseKind(x)) for x in kinds} if kinds is not None else None
        dbs = []
        if direction in ("out", "both"):
            dbs.append(self._dbs["synapses"])
        if direction in ("in", "both"):
            dbs.append(self._dbs["synapses_rev"])
        seen: dict[str, int] = {gene_id: 0}
        queue = deque([gene_id])
        with self.env.begin() as txn:
            while queue and len(seen) <= MAX_NEIGHBOURHOOD:
                current = queue.popleft()
                hops = seen[current]
                if hops == k:
                    continue
                prefix = current.encode() + SEP
                for db in dbs:
                    for key in _prefix_keys(txn, db, prefix):
                        _, kind, other = key.decode().split("\x00")
                        if (wanted is None or kind in wanted) and other not in seen:
                            seen[other] = hops + 1
                            queue.append(other)
        del seen[gene_id]
        return seen

    # -- experiences -------------------------------------------------------------
    def add_experience(self, exp: Experience) -> str:
        """Record an outcome and bump the gene's success/failure counters, atomically.
        Recording the same experience twice changes nothing (content-addressed)."""

        def run(txn: Txn) -> str:
            key = _k(exp.gene_id, exp.id)
            if txn.get(key, db=self._dbs["experiences"]) is not None:
                return exp.id
            raw = txn.get(exp.gene_id.encode(), db=self._dbs["genes"])
            if raw is None:
                raise UnknownGene(f"no gene {exp.gene_id!r} in this Cortex")
            txn.put(key, exp.encode(), db=self._dbs["experiences"])
            gene = self._load(txn, exp.gene_id.encode(), raw)
            gene = gene.with_local(successes=gene.successes + int(exp.success),
                                   failures=gene.failures + int(not exp.success))
            txn.put(exp.gene_id.encode(), _head(gene), db=self._dbs["genes"])
            return exp.id

        return self.write(run)

    def add_experiences(self, exps: Iterable[Experience]) -> int:
        """Record many outcomes in ONE transaction (a history import): all or none, each
        gene's counters bumped once per new experience. Returns how many were new."""

        def run(txn: Txn) -> int:
            genes: dict[str, Gene] = {}
            added = 0
            for exp in exps:
                key = _k(exp.gene_id, exp.id)
                if txn.get(key, db=self._dbs["experiences"]) is not None:
                    continue
                gene = genes.get(exp.gene_id)
                if gene is None:
                    raw = txn.get(exp.gene_id.encode(), db=self._dbs["genes"])
                    if raw is None:
                        raise UnknownGene(f"no gene {exp.gene_id!r} in this Cortex")
                    gene = self._load(txn, exp.gene_id.encode(), raw)
                txn.put(key, exp.encode(), db=self._dbs["experiences"])
                genes[exp.gene_id] = gene.with_local(
                    successes=gene.successes + int(exp.success),
                    failures=gene.failures + int(not exp.success))
                added += 1
            for gene_id, gene in genes.items():
                txn.put(gene_id.encode(), _head(gene), db=self._dbs["genes"])
            return added

        return self.write(run)

    def experiences_for(self, gene_id: str) -> list[Experience]:
        prefix = gene_id.encode() + SEP
        db = self._dbs["experiences"]
        with self.env.begin() as txn:
            return [Experience.decode(_must_get(txn, db, key, "experience"))
                    for key in _prefix_keys(txn, db, prefix)]

    # -- decisions ---------------------------------------------------------------
    def put_decision(self, decision: Decision) -> str:
        return self.put_decisions([decision])[0]

    def put_decisions(self, decisions: Iterable[Decision]) -> list[str]:
        """Store decisions in ONE transaction: a batch evaluation is kept whole or not."""
        batch = list(decisions)

        def run(txn: Txn) -> list[str]:
            for decision in batch:
                txn.put(decision.id.encode(), decision.encode(), db=self._dbs["decisions"])
                txn.put(_k(decision.gene_id, _U64.pack(decision.decided_at), decision.id),
                        b"", db=self._dbs["idx_decision_gene"])
            return [d.id for d in batch]

        return self.write(run)

    def get_decision(self, decision_id: str) -> Decision | None:
        with self.env.begin() as txn:
            raw = txn.get(decision_id.encode(), db=self._dbs["decisions"])
        return Decision.decode(raw) if raw is not None else None

    def decisions(self, gene_id: str | None = None) -> Iterator[Decision]:
        with self.env.begin() as txn:
            if gene_id is None:
                for _, raw in txn.cursor(db=self._dbs["decisions"]):
                    yield Decision.decode(raw)
                return
            prefix = gene_id.encode() + SEP
            for key in _prefix_keys(txn, self._dbs["idx_decision_gene"], prefix):
                decision_id = key[len(prefix) + 9:]
                yield Decision.decode(
                    _must_get(txn, self._dbs["decisions"], decision_id, "decision"))

    # -- inspection and maintenance ----------------------------------------------
    def stats(self) -> CortexStats:
        d = self._dbs
        with self.env.begin() as txn:
            def count(name: str) -> int:
                return int(txn.stat(d[name])["entries"])

            by_status: dict[str, int] = {}
            for key, _ in txn.cursor(db=d["idx_status"]):
                name = key.split(SEP, 1)[0].decode()
                by_status[name] = by_status.get(name, 0) + 1
            by_domain: dict[str, int] = {}
            for key, _ in txn.cursor(db=d["idx_domain"]):
                name = key.split(SEP, 1)[0].decode()
                by_domain[name] = by_domain.get(name, 0) + 1
            raw = txn.get(b"change_seq", db=d["meta"])
            info = self.env.info()
            stat = self.env.stat()
            size = (info["last_pgno"] + 1) * stat["psize"]
            return CortexStats(
                genes=count("genes"), versions=count("gene_versions"),
                synapses=count("synapses"), experiences=count("experiences"),
                decisions=count("decisions"), changes=count("changes"),
                last_seq=_U64.unpack(raw)[0] if raw else 0, size_bytes=size,
                by_status=by_status, by_domain=by_domain,
            )

    def check_indexes(self) -> list[str]:
        """Every inconsistency between heads, versions and indexes (empty when sound).
        Used by tests and by `gd-node status --check`."""
        d = self._dbs
        problems: list[str] = []
        with self.env.begin() as txn:
            expected: dict[str, set[bytes]] = {"idx_domain": set(), "idx_status": set(),
                                               "idx_origin": set()}
            for key, raw in txn.cursor(db=d["genes"]):
                try:
                    gene = self._load(txn, key, raw, validate=True)
                except (DecodeError, ValidationError, CortexError) as exc:
                    problems.append(f"gene {key!r}: undecodable head: {exc}")
                    continue
                expected["idx_domain"].add(_k(gene.domain, gene.id))
                expected["idx_status"].add(_k(str(gene.status), gene.id))
                expected["idx_origin"].add(_k(gene.origin, gene.id))
                if txn.get(_version_key(gene.id, gene.version), db=d["gene_versions"]) is None:
                    problems.append(f"gene {gene.id}: head version {gene.version} not stored")
                if txn.get(gene.version_hash, db=d["by_vhash"]) is None:
                    problems.append(f"gene {gene.id}: version hash not indexed")
            for name, keys in expected.items():
                actual = {k for k, _ in txn.cursor(db=d[name])}
                for missing in sorted(keys - actual):
                    problems.append(f"{name}: missing {missing!r}")
                for extra in sorted(actual - keys):
                    problems.append(f"{name}: stale {extra!r}")
        return problems

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


def _must_get(txn: Txn, db: Any, key: bytes, what: str) -> bytes:
    """A read that the Cortex's own meta or indexes promise will find a record. A miss means
    the store is damaged: say so (and where to look) instead of failing inside a decoder."""
    raw = txn.get(key, db=db)
    if raw is None:
        raise CortexError(f"Cortex is damaged: {what} {key!r} is referenced but missing "
                          "(see `Cortex.check_indexes`)")
    return raw


def _prefix_keys(txn: Txn, db: Any, prefix: bytes) -> Iterator[bytes]:
    cur = txn.cursor(db=db)
    if not cur.set_range(prefix):
        return
    for key in cur.iternext(keys=True, values=False):
        if not key.startswith(prefix):
            break
        yield key


def restore(source: str | Path, target: str | Path) -> Path:
    """Replace the Cortex at `target` with the backup at `source`.

    The caller must ensure no daemon holds `target`. The backup is opened and checked
    first (schema, readable genes); the current Cortex is moved aside to
    `<target>.pre-restore-N`, never deleted, so a mistaken restore can be undone.
    """
    source, target = Path(source), Path(target)
    with Cortex.open(source, readonly=True) as backup:
        problems = backup.check_indexes()
        if problems:
            raise CortexError(f"backup at {source} is inconsistent: {problems[0]}")
        staging = target.with_name(target.name + ".restoring")
        if staging.exists():
            for child in staging.iterdir():
                child.unlink()
            staging.rmdir()
        staging.mkdir(parents=True)
        private_dir(staging)
        backup.env.copy(str(staging), compact=True)
        make_private(staging)
    aside = None
    if target.exists():
        n = 1
        while target.with_name(f"{target.name}.pre-restore-{n}").exists():
            n += 1
        aside = target.with_name(f"{target.name}.pre-restore-{n}")
        target.rename(aside)
        make_private(aside)
    staging.rename(target)
    with contextlib.suppress(OSError):
        _fsync_dir(target.parent)
    return aside or target


def _fsync_dir(path: Path) -> None:
    import os

    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
