"""How the Cortex lays out a gene in LMDB: its records, their keys and the feed counter.

Why apart from `cortex_genes.py` (the store's operations): the records are written by
three writers (a gene at a time, an import batch gathered table by table in
`new_gene_batch.py`, and `gathered_puts.py`) and read by the record views in
`cortex_records.py`; each needs the format, none needs the others. Per gene version:

* `gene_versions[id SEP u64(version)]` = the signed body (wire bytes), once;
* `by_vhash[version hash]` = that version key;
* `genes[id]` = the head record (`head_record`): current version and the local view;
* `idx_domain`, `idx_status`, `idx_origin[value SEP id]` = empty (`index_keys`);
* `changes[u64(seq)]` = the feed entry (`change_record`); `meta[change_seq]` the counter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from gd.genome import canonical
from gd.genome.errors import DecodeError
from gd.genome.gene import GeneStatus
from gd.node.store.lmdb_tables import SEP, U64, TableWrites, Txn, get_u64

CHANGE_SEQ_KEY = b"change_seq"


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


def head_record(gene: GeneVersion) -> bytes:
    """The head record: which version is current plus this node's local view of the gene.
    The signed body lives once, in `gene_versions`; domain and origin are repeated here
    so re-indexing on an update needs no decode of the old body."""
    return canonical.encode_plain(
        [gene.version, str(gene.status), gene.successes, gene.failures, gene.domain,
         gene.origin])


@dataclass(frozen=True)
class Head:
    version: int
    status: str
    successes: int
    failures: int
    domain: str
    origin: str

    @classmethod
    def decode(cls, raw: bytes) -> Head:
        try:
            version, status, successes, failures, domain, origin = canonical.decode(raw)
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"corrupt gene head record: {exc}") from None
        return cls(version, status, successes, failures, domain, origin)


def version_key(gene_id: str, version: int) -> bytes:
    return gene_id.encode() + SEP + U64.pack(version)


class ChangeSeq:
    """The change-feed counter of one write transaction: read once, stored once."""

    __slots__ = ("_db", "_first", "_txn", "value")

    def __init__(self, txn: Txn, meta_db: Any) -> None:
        self._txn, self._db = txn, meta_db
        self.value = self._first = get_u64(txn, meta_db, CHANGE_SEQ_KEY)

    def next(self) -> int:
        self.value += 1
        return self.value

    def store(self) -> None:
        if self.value != self._first:
            self._txn.put(CHANGE_SEQ_KEY, U64.pack(self.value), db=self._db)


def change_record(op: str, gene: GeneVersion) -> bytes:
    """The stored value of a feed entry (`Change.to_plain` without the seq, which is the
    key), encoded straight from the gene's fields."""
    return canonical.encode_plain({"id": gene.id, "kind": "gene", "op": op,
                                   "version": gene.version, "vhash": gene.version_hash})


def index_keys(gene_id: bytes, domain: str, status: str,
                origin: str) -> tuple[tuple[str, bytes], ...]:
    # `join_key(value, gene_id)` for each index, spelled out: this runs three times per
    # stored gene.
    return (("idx_domain", domain.encode() + SEP + gene_id),
            ("idx_status", status.encode() + SEP + gene_id),
            ("idx_origin", origin.encode() + SEP + gene_id))


def index_gene(w: TableWrites, gene_id: bytes, domain: str, status: str,
           origin: str) -> None:
    for table, key in index_keys(gene_id, domain, status, origin):
        w.put(table, key, b"")


def unindex_gene(w: TableWrites, gene_id: bytes, domain: str, status: str,
             origin: str) -> None:
    for table, key in index_keys(gene_id, domain, status, origin):
        w.delete(table, key)


__all__ = ["CHANGE_SEQ_KEY", "Change", "ChangeSeq", "GeneVersion", "Head", "change_record",
           "head_record", "index_gene", "index_keys", "unindex_gene", "version_key"]
