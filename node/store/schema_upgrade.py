"""Upgrading an older Cortex in place, on its first read-write open (ADRs 0060, 0062).

Schema 1 keyed the three gene indexes `value SEP id`; schema 2 keys them by each gene's
index number (`gene_records.py`), which its head record carries; schema 3 keys the signed
bodies by it too (`u64(number) u64(version)` instead of `id SEP u64(version)`), and the
version-hash lookup names the new key. An upgrade from 1 gives every head an index
number in id order and rebuilds the indexes from the heads (`upgrade_indexes`), then
rekeys the bodies (`upgrade_bodies`); from 2 it only rekeys the bodies. All of it runs in
ONE write transaction with the new schema stored last: a crash or kill -9 part way
leaves the old schema as it was, and the next open upgrades again. The feed,
checkpoints and every other table are untouched, so peers see no difference.
"""

from __future__ import annotations

import logging
from typing import Any

from gd.genome import canonical
from gd.genome.errors import DecodeError
from gd.node.store.gene_records import (
    BODIES_BY_NUMBER_SCHEMA,
    INDEX_SEQ_KEY,
    INDEX_TABLES,
    INDEXED_BY_NUMBER_SCHEMA,
    Head,
    body_key,
    index_keys,
)
from gd.node.store.lmdb_tables import U64, Txn

log = logging.getLogger("gd.store")

# Records are read and rewritten this many at a time (bounded memory on a big Cortex).
UPGRADE_CHUNK = 5_000
# Every schema-1 or -2 body key starts with an id's first character (`ID_RE`), and no
# schema-3 key does (its first byte is 0): the old keys are the ones from here on.
_OLD_BODY_KEYS = b"\x01"


def upgrade_indexes(txn: Txn, dbs: dict[str, Any]) -> int:
    """Rewrite a schema-1 Cortex's heads and indexes as schema 2 inside `txn` (the
    caller's one write transaction) and store the schema. Returns how many genes were
    re-indexed. A head that is not a schema-1 record is damage: `DecodeError`, and the
    caller aborts the transaction."""
    for name in INDEX_TABLES:
        txn.drop(dbs[name], delete=False)
    heads, meta = dbs["genes"], dbs["meta"]
    cursor = txn.cursor(db=heads)
    number = 0
    after: bytes | None = None
    while True:
        chunk = _next_records(cursor, after)
        if not chunk:
            break
        for gid, raw in chunk:
            fields = canonical.decode(raw)
            if not isinstance(fields, list) or len(fields) != 6:
                raise DecodeError(f"gene {gid!r}: not a schema-1 head record")
            number += 1
            version, status, successes, failures, domain, origin = fields
            txn.put(gid, canonical.encode_plain(
                [version, status, successes, failures, domain, origin, number]), db=heads)
            for table, key in index_keys(number, domain, status, origin):
                txn.put(key, gid, db=dbs[table])
        after = chunk[-1][0]
        log.info("cortex upgrade: %d genes re-indexed", number)
    txn.put(INDEX_SEQ_KEY, U64.pack(number), db=meta)
    txn.put(b"schema", U64.pack(INDEXED_BY_NUMBER_SCHEMA), db=meta)
    return number


def upgrade_bodies(txn: Txn, dbs: dict[str, Any]) -> int:
    """Rekey a schema-2 Cortex's bodies by index number and point each version hash at
    the new key, inside `txn`, and store schema 3. Returns how many bodies moved. A
    body or hash entry whose gene has no head is damage: `DecodeError`, and the caller
    aborts the transaction."""
    bodies, hashes = dbs["gene_versions"], dbs["by_vhash"]
    numbers = _NumberOf(txn, dbs["genes"])
    moved = 0
    cursor = txn.cursor(db=bodies)
    after: bytes | None = None
    while chunk := _next_records(cursor, after, start=_OLD_BODY_KEYS):
        for old, body in chunk:
            txn.put(numbers.body_key(old), body, db=bodies)
            txn.delete(old, db=bodies)
        moved += len(chunk)
        after = chunk[-1][0]
        log.info("cortex upgrade: %d gene bodies rekeyed", moved)
    cursor = txn.cursor(db=hashes)
    after = None
    while chunk := _next_records(cursor, after):
        for vhash, old in chunk:
            if old[:1] >= _OLD_BODY_KEYS:
                txn.put(vhash, numbers.body_key(old), db=hashes)
        after = chunk[-1][0]
    txn.put(b"schema", U64.pack(BODIES_BY_NUMBER_SCHEMA), db=dbs["meta"])
    return moved


class _NumberOf:
    """The new key of an old body key (`id SEP u64(version)`), from the gene's head; the
    versions of one gene sit together, so the last head read is kept."""

    def __init__(self, txn: Txn, heads: Any) -> None:
        self._txn, self._heads = txn, heads
        self._last: tuple[bytes, int] = (b"", 0)

    def body_key(self, old: bytes) -> bytes:
        gid, version = old[:-9], U64.unpack(old[-8:])[0]
        if self._last[0] != gid:
            raw = self._txn.get(gid, db=self._heads)
            if raw is None:
                raise DecodeError(f"gene {gid!r} has a stored version but no head")
            self._last = (gid, Head.decode(raw).iseq)
        return body_key(self._last[1], version)


def _next_records(cursor: Any, after: bytes | None,
                  start: bytes = b"") -> list[tuple[bytes, bytes]]:
    """Up to `UPGRADE_CHUNK` (key, value) pairs after `after` (from the first at or past
    `start` if None)."""
    found = cursor.set_range(start) if after is None else (
        cursor.set_range(after) and (cursor.key() != after or cursor.next()))
    out: list[tuple[bytes, bytes]] = []
    while found and len(out) < UPGRADE_CHUNK:
        out.append((bytes(cursor.key()), bytes(cursor.value())))
        found = cursor.next()
    return out
