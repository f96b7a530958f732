"""A region of one's appends: no Raft, the node's own ledger, group commit (issue 15).

Why apart from `LedgerService`: a node alone in its region (no voters configured)
appends straight to its ledger, and that path shares nothing with the Raft loop but the
ledger and the outbox. Concurrent callers share one transaction and one fsync through a
`GroupCommitter` once the service runs; before that (the outbox flushed at start, and
the recorder's worker threads), a direct append. The outbox slots of what is appended are
cleared in the append's own transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lmdb
import trio

from gd.genome.identity import NodeKey
from gd.ledger.chain import AppendReceipt
from gd.ledger.entry import LedgerEntry
from gd.node.services.ledger_group import GroupCommitter, check_signatures
from gd.node.services.recorder import same_event_is_duplicate
from gd.node.store.ledger_outbox import RegionBook
from gd.node.store.ledger_store import MAX_BATCH, Ledger


class SoloAppender:
    """Appends a region of one's statements and signs its head."""

    def __init__(self, ledger: Ledger, book: RegionBook, key: NodeKey,
                 wall_ms: Callable[[], int]) -> None:
        self.ledger = ledger
        self.book = book
        self.key = key
        self.wall_ms = wall_ms
        # Signatures are checked a group at a time, across cores, while the group before
        # commits (ADR 0059), not on the event loop as each submission arrives.
        self.group: GroupCommitter[LedgerEntry, AppendReceipt] = GroupCommitter(
            self._commit, MAX_BATCH, check=_check)

    async def append(self, statements: Sequence[LedgerEntry]) -> list[AppendReceipt]:
        """Checked and shared with concurrent callers once the group runs; before that
        a direct append (which checks them) in a worker thread."""
        if self.group.running:
            return await self.group.submit(statements)
        return await trio.to_thread.run_sync(self.append_now, statements)

    def _commit(self, statements: list[LedgerEntry]) -> list[AppendReceipt]:
        return self.append_now(statements, signatures_checked=True)

    def append_now(self, statements: Sequence[LedgerEntry], *,
                   signatures_checked: bool = False) -> list[AppendReceipt]:
        """Append in this thread (any thread), MAX_BATCH statements per transaction."""
        receipts: list[AppendReceipt] = []
        for start in range(0, len(statements), MAX_BATCH):
            chunk = statements[start:start + MAX_BATCH]

            def also(txn: lmdb.Transaction, chunk: Sequence[LedgerEntry] = chunk) -> None:
                self.book.forget_in(txn, chunk)

            result = self.ledger.append_batch(
                chunk, head_key=self.key, timestamp=self.wall_ms(),
                signatures_checked=signatures_checked, also=also)
            receipts.extend(result.receipts)
        return same_event_is_duplicate(self.ledger, statements, receipts)


def _check(statements: list[LedgerEntry]) -> None:
    """Raise RemoteLedgerError (with the reason) unless every signature verifies."""
    bad = check_signatures(statements)
    if bad:
        statements[bad[0]].verify_signature()


__all__ = ["SoloAppender"]
