"""The region ledger's own bookkeeping in the Cortex environment, beside the ledger:

* ``ledger_outbox`` — signed statements waiting for the region to order them, keyed by
  (author, idempotency key). The CLI fills it while no daemon runs; the daemon's ledger
  service proposes it at start and deletes each slot in the transaction that appends
  the statement to the ledger (`forget_in`), so a crash never loses nor doubles one.
* ``ledger_net`` — the Raft index applied to the ledger (written with each applied
  group), and whether a solo ledger was migrated into the region.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import lmdb

from gd.ledger.entry import LedgerEntry
from gd.node.store.ledger_store import Ledger
from gd.node.store.lmdb_tables import open_named_db

LEDGER_OUTBOX_DB: Final = b"ledger_outbox"
LEDGER_NET_DB: Final = b"ledger_net"
_APPLIED_KEY: Final = b"applied"
_MIGRATED_KEY: Final = b"migrated"


def slot_key(author: str, idempotency_key: str) -> bytes:
    """The outbox key of a statement (the same shape as the ledger's idempotency index)."""
    return author.encode() + b"\x00" + idempotency_key.encode()


class RegionBook:
    """The outbox and the applied index of one node's region ledger."""

    def __init__(self, env: lmdb.Environment) -> None:
        self.env = env
        self.outbox = open_named_db(env, LEDGER_OUTBOX_DB, create=True)
        self.meta = open_named_db(env, LEDGER_NET_DB, create=True)

    def applied(self) -> int:
        """The Raft index whose entries the ledger holds (0: none)."""
        with self.env.begin() as txn:
            raw = txn.get(_APPLIED_KEY, db=self.meta)
        return int.from_bytes(raw, "big") if raw else 0

    def set_applied_in(self, txn: lmdb.Transaction, index: int) -> None:
        """Record `index` as applied inside the caller's write transaction."""
        txn.put(_APPLIED_KEY, index.to_bytes(8, "big"), db=self.meta)

    def set_applied(self, index: int) -> None:
        with self.env.begin(write=True) as txn:
            self.set_applied_in(txn, index)

    def forget_in(self, txn: lmdb.Transaction, statements: Iterable[LedgerEntry]) -> None:
        """Drop the outbox slots of statements appended in `txn`."""
        for statement in statements:
            txn.delete(slot_key(statement.author, statement.idempotency_key), db=self.outbox)

    def queued(self) -> list[bytes]:
        """Every statement in the outbox, encoded, in key order."""
        with self.env.begin() as txn:
            return [bytes(v) for v in txn.cursor(db=self.outbox).iternext(keys=False)]

    def migrate(self, ledger: Ledger) -> int | None:
        """A node that kept a ledger alone and now joins a region: its local statements
        move to the outbox (to be proposed) and the local tables are emptied in the same
        transaction, once. Returns how many moved, None if it was done before."""
        moved = 0
        with self.env.begin(write=True) as txn:
            if txn.get(_MIGRATED_KEY, db=self.meta) is not None:
                return None
            for raw in ledger.take_all(txn):
                statement = LedgerEntry.decode(raw).unsequenced()
                txn.put(slot_key(statement.author, statement.idempotency_key),
                        statement.encoded, db=self.outbox)
                moved += 1
            txn.put(_MIGRATED_KEY, moved.to_bytes(8, "big"), db=self.meta)
        return moved


__all__ = ["LEDGER_NET_DB", "LEDGER_OUTBOX_DB", "RegionBook", "slot_key"]
