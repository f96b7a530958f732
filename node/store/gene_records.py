"""How the Cortex lays out a gene in LMDB: its records, their keys and the feed counter.

Why apart from `cortex_genes.py` (the store's operations): the records are written by
three writers (a gene at a time, an import batch gathered table by table in
`new_gene_batch.py`, and `gathered_puts.py`) and read by the record views in
`cortex_records.py`; each needs the format, none needs the others. Per gene version:

* `gene_versions[u64(index number) u64(version)]` = the signed body (wire bytes), once
  (`body_key`);
* `by_vhash[version hash]` = that body key;
* `genes[id]` = the head record (`head_record`): current version, the local view and
  the gene's index number;
* `idx_domain`, `idx_status`, `idx_origin[value SEP u64(index number)]` = the id
  (`index_keys`);
* `changes[u64(seq)]` = the feed entry (`change_record`); `meta[change_seq]` the counter.

Index number (schema 2, ADR 0060): a gene gets the next `meta[index_seq]` when its first
head is written and keeps it; its index keys sort by it, so a batch of new genes appends
to the end of each value's range instead of dirtying a random page per gene per index
(ids are hashes). Schema 3 (ADR 0062) keys the bodies by it too: a batch of new genes
appends its bodies, the largest records, at the end of the table instead of splitting a
random leaf page per gene. Schema 1 keyed the indexes `value SEP id` and schemas 1 and 2
the bodies `id SEP u64(version)`; `schema_upgrade.py` rewrites an older Cortex on its
first read-write open, and a read-only open still reads one (`Layout`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Final, Protocol

from gd.genome import canonical
from gd.genome.errors import DecodeError
from gd.genome.gene import GeneStatus
from gd.node.store.lmdb_tables import (
    SEP,
    U64,
    TableWrites,
    Txn,
    get_u64,
    prefix_keys,
    scan_prefix,
)

CHANGE_SEQ_KEY = b"change_seq"
INDEX_SEQ_KEY = b"index_seq"
INDEX_TABLES = ("idx_domain", "idx_status", "idx_origin")
# The first schema whose indexes, then whose bodies, are keyed by index number (see the
# module docstring).
INDEXED_BY_NUMBER_SCHEMA = 2
BODIES_BY_NUMBER_SCHEMA = 3
# A body key: index number, version. Its first byte is 0 (no Cortex reaches 2**56 genes)
# and an older key's is an id's first character, never 0: the upgrade rewrites the
# bodies in place without a collision (`gd.genome.checks.ID_RE`).
BODY_KEY: Final = struct.Struct(">QQ")


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


class GeneVersion(Protocol):
    """What the Cortex writes of a gene version: a `Gene`, or the bytes a signer already
    produced with the fields the head and indexes repeat (`gd.node.app.sign_pool`), so
    an import stores them without rebuilding or re-encoding a gene."""

    @property
    def id(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def domain(self) -> str: ...
    @property
    def origin(self) -> str: ...
    @property
    def status(self) -> GeneStatus: ...
    @property
    def successes(self) -> int: ...
    @property
    def failures(self) -> int: ...
    @property
    def wire_bytes(self) -> bytes: ...
    @property
    def version_hash(self) -> bytes: ...


def head_record(gene: GeneVersion, iseq: int) -> bytes:
    """The head record: which version is current, this node's local view of the gene and
    its index number `iseq`. The signed body lives once, in `gene_versions`; domain and
    origin are repeated here so re-indexing on an update needs no decode of the old body."""
    return canonical.encode_plain(
        [gene.version, str(gene.status), gene.successes, gene.failures, gene.domain,
         gene.origin, iseq])


@dataclass(frozen=True)
class Head:
    version: int
    status: str
    successes: int
    failures: int
    domain: str
    origin: str
    iseq: int

    @classmethod
    def decode(cls, raw: bytes) -> Head:
        """A head record; a schema-1 one (six fields, read by a read-only open of a Cortex
        not yet upgraded) has index number 0, which no schema-2 gene has."""
        try:
            fields = canonical.decode(raw)
            if isinstance(fields, list) and len(fields) == 6:
                fields = [*fields, 0]
            version, status, successes, failures, domain, origin, iseq = fields
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"corrupt gene head record: {exc}") from None
        return cls(version, status, successes, failures, domain, origin, iseq)

    def index_values(self) -> tuple[str, str, str]:
        return self.domain, self.status, self.origin


def body_key(iseq: int, version: int) -> bytes:
    """Where the signed body of version `version` of the gene numbered `iseq` is stored."""
    return BODY_KEY.pack(iseq, version)


@dataclass(frozen=True, slots=True)
class Layout:
    """How one snapshot keys the records whose keys changed between schemas. A
    read-write open upgrades first, so it always reads the current layout; a read-only
    open (`status`, `backup`) asks per read transaction, as a daemon may upgrade the
    Cortex under it."""

    schema: int

    @classmethod
    def of(cls, txn: Txn, meta_db: Any) -> Layout:
        raw = txn.get(b"schema", db=meta_db)
        return cls(BODIES_BY_NUMBER_SCHEMA if raw is None else U64.unpack(raw)[0])

    @property
    def indexes_by_number(self) -> bool:
        return self.schema >= INDEXED_BY_NUMBER_SCHEMA

    @property
    def bodies_by_number(self) -> bool:
        return self.schema >= BODIES_BY_NUMBER_SCHEMA

    def body_key(self, gene_id: bytes, iseq: int, version: int) -> bytes:
        if self.bodies_by_number:
            return body_key(iseq, version)
        return gene_id + SEP + U64.pack(version)

    def body_prefix(self, gene_id: bytes, iseq: int) -> bytes:
        """The prefix of every body key of a gene; a key's last 8 bytes are its version."""
        if self.bodies_by_number:
            return U64.pack(iseq)
        return gene_id + SEP


class ChangeSeq:
    """The change-feed counter of one write transaction, and the index-number counter
    beside it: each read once (the index counter when first needed), stored once."""

    __slots__ = ("_db", "_first", "_index", "_index_first", "_txn", "value")

    def __init__(self, txn: Txn, meta_db: Any) -> None:
        self._txn, self._db = txn, meta_db
        self.value = self._first = get_u64(txn, meta_db, CHANGE_SEQ_KEY)
        self._index = self._index_first = -1  # not read yet

    def next(self) -> int:
        self.value += 1
        return self.value

    def next_index(self) -> int:
        """The index number of a gene whose first head this transaction writes."""
        if self._index < 0:
            self._index = self._index_first = get_u64(self._txn, self._db, INDEX_SEQ_KEY)
        self._index += 1
        return self._index

    def store(self) -> None:
        if self.value != self._first:
            self._txn.put(CHANGE_SEQ_KEY, U64.pack(self.value), db=self._db)
        if self._index != self._index_first:
            self._txn.put(INDEX_SEQ_KEY, U64.pack(self._index), db=self._db)


def change_record(op: str, gene: GeneVersion) -> bytes:
    """The stored value of a feed entry (`Change.to_plain` without the seq, which is the
    key), encoded straight from the gene's fields."""
    return canonical.encode_plain({"id": gene.id, "kind": "gene", "op": op,
                                   "version": gene.version, "vhash": gene.version_hash})


def index_keys(iseq: int, domain: str, status: str,
               origin: str) -> tuple[tuple[str, bytes], ...]:
    """The three index keys of a gene with index number `iseq` (schema 2)."""
    number = U64.pack(iseq)
    return (("idx_domain", domain.encode() + SEP + number),
            ("idx_status", status.encode() + SEP + number),
            ("idx_origin", origin.encode() + SEP + number))


def index_gene(w: TableWrites, gene_id: bytes, iseq: int, domain: str, status: str,
               origin: str) -> None:
    for table, key in index_keys(iseq, domain, status, origin):
        w.put(table, key, gene_id)


def unindex_gene(w: TableWrites, iseq: int, domain: str, status: str, origin: str) -> None:
    for table, key in index_keys(iseq, domain, status, origin):
        w.delete(table, key)


def indexed_ids(txn: Txn, db: Any, prefix: bytes, by_number: bool) -> list[bytes]:
    """The gene ids under `prefix` (an index value and SEP) of one index, in id order
    (the order these reads have always had, whatever the layout)."""
    if by_number:
        return sorted(value for _, value in scan_prefix(txn, db, prefix))
    return [key[len(prefix):] for key in prefix_keys(txn, db, prefix)]


__all__ = ["BODIES_BY_NUMBER_SCHEMA", "BODY_KEY", "CHANGE_SEQ_KEY", "INDEXED_BY_NUMBER_SCHEMA",
           "INDEX_SEQ_KEY", "INDEX_TABLES", "Change", "ChangeSeq", "GeneVersion", "Head",
           "Layout", "body_key", "change_record", "head_record", "index_gene", "index_keys",
           "indexed_ids", "unindex_gene"]
