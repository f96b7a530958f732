"""Upgrading an older Cortex in place, on its first read-write open (ADR 0060).

Schema 1 keyed the three gene indexes `value SEP id`; schema 2 keys them by each gene's
index number (`gene_records.py`), which its head record carries. The upgrade gives every
head an index number in id order, rebuilds the indexes from the heads and stores the
new schema, all in ONE write transaction: a crash or kill -9 part way leaves schema 1
as it was, and the next open upgrades again. Nothing else changes: bodies, the feed,
checkpoints and every other table are untouched, so peers see no difference.
"""

from __future__ import annotations

import logging
from typing import Any

from gd.genome import canonical
from gd.genome.errors import DecodeError
from gd.node.store.gene_records import (
    INDEX_SEQ_KEY,
    INDEX_TABLES,
    INDEXED_BY_NUMBER_SCHEMA,
    index_keys,
)
from gd.node.store.lmdb_tables import U64, Txn

log = logging.getLogger("gd.store")

# Heads are read and rewritten this many at a time (bounded memory on a big Cortex).
UPGRADE_CHUNK = 5_000


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
        chunk = _next_heads(cursor, after)
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


def _next_heads(cursor: Any, after: bytes | None) -> list[tuple[bytes, bytes]]:
    """Up to `UPGRADE_CHUNK` (id, head) pairs after `after` (from the first if None)."""
    found = cursor.first() if after is None else (
        cursor.set_range(after) and (cursor.key() != after or cursor.next()))
    out: list[tuple[bytes, bytes]] = []
    while found and len(out) < UPGRADE_CHUNK:
        out.append((bytes(cursor.key()), bytes(cursor.value())))
        found = cursor.next()
    return out
