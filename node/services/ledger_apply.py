"""Applying committed Raft entries to the ledger, in its own task (group commit).

The service's loop hands committed entries over (`hand_over`) and goes on persisting the
next Ready; the applier appends everything waiting in one durable transaction (one fsync
per group, more only past `MAX_BATCH` statements), with the applied Raft index and the
outbox clean-up in the same transaction. The log may run ahead of the ledger only by
`MAX_APPLY_BACKLOG` entries (`hand_over` waits), which bounds memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import lmdb
import trio

from gd.genome.identity import NodeKey
from gd.ledger.chain import AppendReceipt
from gd.ledger.entry import LedgerEntry
from gd.ledger.proposer import decode_batch
from gd.ledger.raft_records import Entry
from gd.ledger.sth import SignedTreeHead
from gd.node.services.ledger_group import CheckedStatements, check_signatures
from gd.node.store.ledger_outbox import RegionBook
from gd.node.store.ledger_store import MAX_BATCH, Ledger

# Committed Raft entries (batches) the log may run ahead of the ledger before the loop
# waits for the applier: bounds memory and keeps `applied` close to `commit`.
MAX_APPLY_BACKLOG: Final = 256


@dataclass
class ApplyResult:
    receipts: list[tuple[LedgerEntry, AppendReceipt]]
    head: SignedTreeHead | None
    size: int


class Applier:
    """Committed entries → ledger, one group at a time; `applied_index` is what it holds."""

    def __init__(self, ledger: Ledger, book: RegionBook, key: NodeKey, *, log_id: str,
                 wall_ms: Callable[[], int], verified: CheckedStatements,
                 on_applied: Callable[[ApplyResult], Awaitable[None]], log: Any) -> None:
        self.ledger = ledger
        self.book = book
        self.key = key
        self.log_id = log_id
        self.wall_ms = wall_ms
        self.verified = verified
        self.on_applied = on_applied
        self.log = log
        self.applied_index = book.applied()
        self.queued_to = self.applied_index
        self._to_apply: list[tuple[list[Entry], frozenset[int], bool]] = []
        self._wake = trio.Event()
        self._done = trio.Event()

    async def hand_over(self, committed: Sequence[Entry], duplicates: frozenset[int],
                        sign: bool) -> None:
        """Queue committed entries (those not queued before); wait while the backlog is
        over MAX_APPLY_BACKLOG. `sign`: we lead, so sign a head after the group."""
        entries = [e for e in committed if e.index > self.queued_to]
        if not entries:
            return
        self.queued_to = entries[-1].index
        self._to_apply.append((entries, duplicates, sign))
        self._wake.set()
        await self.wait_applied(MAX_APPLY_BACKLOG)

    async def wait_applied(self, backlog: int) -> None:
        """Until at most `backlog` committed Raft entries wait to be applied."""
        while self.queued_to - self.applied_index > backlog:
            await self._done.wait()

    def restored(self, index: int) -> None:
        """A snapshot up to `index` was restored (and recorded): nothing below it waits."""
        self.applied_index = max(self.applied_index, index)
        self.queued_to = max(self.queued_to, self.applied_index)

    async def run(self) -> None:
        """Apply everything committed since the last apply in one go (group commit)."""
        while True:
            if not self._to_apply:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            items, self._to_apply = self._to_apply, []
            entries = [e for its, _, _ in items for e in its]
            duplicates = frozenset().union(*(d for _, d, _ in items))
            await self._apply(entries, duplicates, items[-1][2])
            done, self._done = self._done, trio.Event()
            done.set()

    async def _apply(self, entries: list[Entry], duplicates: frozenset[int],
                     sign: bool) -> None:
        entries = [e for e in entries if e.index > self.applied_index]
        if not entries:
            return
        result = await trio.to_thread.run_sync(self._apply_sync, entries, duplicates, sign)
        self.applied_index = entries[-1].index
        await self.on_applied(result)

    def _apply_sync(self, entries: Sequence[Entry], duplicates: frozenset[int],
                    sign: bool) -> ApplyResult:
        """Worker thread: append the committed batches, in log order, with the applied
        index and the outbox clean-up in the same durable transaction. Signatures are
        checked across cores first; a statement with a bad one (a member proposed
        garbage) is dropped, identically on every node, and the rest appended."""
        statements: list[LedgerEntry] = []
        checked: set[int] = set()  # ids of the statements checked at submit here

        def known(raw: bytes) -> LedgerEntry | None:
            statement = self.verified.take(raw)
            if statement is not None:
                checked.add(id(statement))
            return statement

        for entry in entries:
            if entry.index in duplicates or not entry.client_id or not entry.data:
                continue
            statements.extend(decode_batch(entry.data, known))
        unchecked = [i for i, s in enumerate(statements) if id(s) not in checked]
        bad = {unchecked[i] for i in check_signatures([statements[i] for i in unchecked])}
        for i in sorted(bad):
            self.log.error("ledger.bad_statement", author=statements[i].author,
                           key=statements[i].idempotency_key)
        if bad:
            statements = [s for i, s in enumerate(statements) if i not in bad]
        applied = entries[-1].index
        chunks = [statements[i:i + MAX_BATCH] for i in range(0, len(statements), MAX_BATCH)]
        pairs: list[tuple[LedgerEntry, AppendReceipt]] = []
        head = None
        for n, chunk in enumerate(chunks):
            final = n == len(chunks) - 1

            def also(txn: lmdb.Transaction, chunk: list[LedgerEntry] = chunk,
                     final: bool = final) -> None:
                self.book.forget_in(txn, chunk)
                if final:
                    self.book.set_applied_in(txn, applied)

            result = self.ledger.append_batch(
                chunk, head_key=self.key if sign and final else None,
                timestamp=self.wall_ms(), log_id=self.log_id, signatures_checked=True,
                also=also)
            pairs.extend(zip(chunk, result.receipts, strict=True))
            head = result.head or head
        if not chunks:
            self.book.set_applied(applied)
        return ApplyResult(pairs, head, self.ledger.size)


__all__ = ["MAX_APPLY_BACKLOG", "Applier", "ApplyResult"]
