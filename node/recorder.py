"""Recording events on the node's ledger: what motors, approvals and agreements call.

`LedgerRecorder.append(kind, payload_hash, summary, idempotency_key)` signs a ledger
statement with the node key and appends it durably (fsync'd before it returns), then signs
a tree head over the new size. This is the *region of one voter* path of the ledger issue:
a node with no region configured orders its own ledger. When the node is a member of a
region, the same statements are proposed through Raft instead (`gd.ledger.raft`), and
the committed order is applied to this same `Ledger`.

The summary is public (the ledger is shared across organisations): callers put ids,
hashes, verdicts and scores there, never gene content.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lmdb

from gd.crdt.hlc import HLC
from gd.genome.identity import NodeKey
from gd.ledger.chain import AppendReceipt, AppendStatus
from gd.ledger.entry import EntryKind, LedgerEntry
from gd.ledger.store import MAX_BATCH, Ledger


class LedgerRecorder:
    """Signs and appends statements to the local ledger; one per process and Cortex env."""

    def __init__(self, env: lmdb.Environment, key: NodeKey,
                 wall_ms: Callable[[], int] | None = None) -> None:
        self.ledger = Ledger(env)
        self.key = key
        self._wall_ms = wall_ms or (lambda: int(time.time() * 1000))
        self._clock = HLC(0, 0)

    def stamp(self) -> int:
        """The next hybrid-logical-clock stamp of this node (monotonic)."""
        self._clock = self._clock.now(self._wall_ms())
        return self._clock.packed

    def append(self, kind: EntryKind | str, payload_hash: bytes,
               summary: Mapping[str, Any] | None = None,
               idempotency_key: str | None = None) -> AppendReceipt:
        """Record one event. A retry of the same event (same kind, payload and key) gets
        the original entry's receipt as DUPLICATE, even though its clock stamp would
        differ; another event under a key already used is a CONFLICT."""
        key_text = idempotency_key or payload_hash.hex()
        existing = self.ledger.find(self.key.peer_id, key_text)
        if existing is not None:
            same = existing.kind == EntryKind(kind) and existing.payload_hash == payload_hash
            assert existing.index is not None
            return AppendReceipt(AppendStatus.DUPLICATE if same else AppendStatus.CONFLICT,
                                 existing.index, existing.entry_hash, existing.author, key_text)
        entry = LedgerEntry.create(self.key, kind, self.stamp(), payload_hash, summary,
                                   key_text)
        result = self.ledger.append_batch([entry], head_key=self.key,
                                          timestamp=self._wall_ms())
        return result.receipts[0]

    def append_many(self, events: Sequence[tuple[EntryKind | str, bytes, Mapping[str, Any]]]
                    ) -> list[AppendReceipt]:
        """Record many events (kind, payload hash, summary) in one durable batch — one
        fsync and one signed tree head for, say, a thousand decisions. Keys default to the
        payload hash, so a retried batch is all DUPLICATE."""
        receipts: list[AppendReceipt] = []
        for start in range(0, len(events), MAX_BATCH):
            chunk = events[start:start + MAX_BATCH]
            entries = [LedgerEntry.create(self.key, kind, self.stamp(), payload, summary)
                       for kind, payload, summary in chunk]
            result = self.ledger.append_batch(entries, head_key=self.key,
                                              timestamp=self._wall_ms())
            receipts.extend(result.receipts)
        return receipts

    def head(self) -> tuple[int, bytes]:
        """(size, root) for the handshake's ledger head."""
        size = self.ledger.size
        return size, self.ledger.root(size)
