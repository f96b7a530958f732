"""Snapshots of the region's ledger: the driver of compaction and snapshot catch-up.

The decisions live in the sans-I/O `gd.ledger.catchup_core` (which member to ask, what
to ask, whether the answer fits, when to compact); this module does the I/O they need:
the ledger and the Raft storage in worker threads, the `/gd/raft` stream to the member.
A chunk that does not fit is the member's fault (`RemoteProtocolError`, the next member
is asked); a root that disagrees with ours stops applying (`LocalLedgerError`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from gd.ledger.catchup_core import (
    COMPACT_EVERY,
    FETCH_TIMEOUT_S,
    SnapshotFetch,
    SnapshotState,
    chunk_reply,
    chunk_stop,
    should_compact,
)
from gd.ledger.chain import AppendReceipt, AppendStatus
from gd.ledger.entry import LedgerEntry
from gd.ledger.errors import LocalLedgerError, RemoteLedgerError
from gd.ledger.ledger_frames import LedgerChunk
from gd.ledger.proposer import LedgerProposer
from gd.ledger.raft import RaftNode
from gd.ledger.raft_records import Snapshot
from gd.node.net.streams import FramedStream, StreamGone
from gd.node.services.ledger_apply import Applier
from gd.node.store.ledger_store import Ledger
from gd.node.store.raft_lmdb import LmdbRaftStorage
from gd.protocol.errors import RemoteProtocolError


def ledger_chunk(ledger: Ledger, start: int, stop: int) -> LedgerChunk:
    """Our answer to a member's `LedgerFetch` (worker thread): bounded in entries and bytes."""
    entries = (entry.encoded for entry in ledger.entries(start, chunk_stop(start, stop)))
    return chunk_reply(entries, start, stop, ledger.size)


def receipts_on_ledger(ledger: Ledger, statements: Sequence[LedgerEntry]
                       ) -> list[AppendReceipt]:
    """Receipts for those of `statements` whose slot the ledger holds now (any thread):
    DUPLICATE for the same event, CONFLICT for another one under the key, as `append`
    answers a retry. After a snapshot restore, the proposer settles these (they reached
    the ledger without an apply here; H1's ledger service simulation, seed 43)."""
    out = []
    for statement in statements:
        held = ledger.find(statement.author, statement.idempotency_key)
        if held is None or held.index is None:
            continue
        same = held.kind == statement.kind and held.payload_hash == statement.payload_hash
        out.append(AppendReceipt(AppendStatus.DUPLICATE if same else AppendStatus.CONFLICT,
                                 held.index, held.entry_hash, statement.author,
                                 statement.idempotency_key))
    return out


class Catchup:
    """Compaction of our Raft log and restoring the ledger from a member's snapshot."""

    def __init__(self, ledger: Ledger, storage: LmdbRaftStorage, applier: Applier, *,
                 peer_id: str, voters: frozenset[str], log_id: str,
                 open_stream: Callable[[str], Awaitable[FramedStream]],
                 compact_every: int, log: Any) -> None:
        self.ledger = ledger
        self.storage = storage
        self.applier = applier
        self.peer_id = peer_id
        self.voters = voters
        self.log_id = log_id
        self.open_stream = open_stream
        self.compact_every = compact_every
        self.log = log

    def _head(self) -> tuple[int, bytes]:
        size = self.ledger.size
        return size, self.ledger.root(size)

    async def maybe_compact(self, node: RaftNode) -> None:
        if not should_compact(node.log.applied, node.log.snapshot_index, self.compact_every):
            return
        if node.log.applied > self.applier.applied_index:
            # The applier is behind: the snapshot's pointer must describe the ledger at
            # the snapshot's index, so let it catch up first (once per compact_every).
            await self.applier.wait_applied(0)
        size, root = await trio.to_thread.run_sync(self._head)
        snap = node.compact(SnapshotState(size, root, node.log.applied).encode())
        await trio.to_thread.run_sync(self.storage.compact, snap)
        self.log.info("raft.compacted", index=snap.index, ledger_size=size)

    async def settle(self, proposer: LedgerProposer) -> list[tuple[int, AppendReceipt]]:
        """After a restore: the proposer's statements the snapshot brought to the ledger
        are settled, and their tickets come back with receipts (`receipts_on_ledger`)."""
        receipts = await trio.to_thread.run_sync(receipts_on_ledger, self.ledger,
                                                 proposer.pending())
        return proposer.settled(receipts)

    async def restore(self, snap: Snapshot, source: str | None) -> None:
        """Bring the ledger to the snapshot's state: fetch the entries we lack from a
        member, check the root, and remember the snapshot's index as applied."""
        fetch = SnapshotFetch(snap.data, source=source, me=self.peer_id,
                              snapshot_voters=snap.conf.voters, voters=self.voters)
        while True:
            size = await trio.to_thread.run_sync(lambda: self.ledger.size)
            step = fetch.next(size)
            if step.done:
                break
            assert step.peer is not None
            await trio.sleep(step.delay_s)
            try:
                await self._fetch_from(step.peer, fetch)
            except (StreamGone, RemoteProtocolError, RemoteLedgerError, LocalLedgerError,
                    trio.TooSlowError) as exc:
                self.log.warning("raft.fetch_failed", peer=step.peer, error=str(exc)[:200])
                fetch.failed()
        state = fetch.state
        root = await trio.to_thread.run_sync(self.ledger.root, state.size)
        try:
            fetch.check_root(root)
        except LocalLedgerError:
            self.log.error("ledger.snapshot_root_mismatch", size=state.size,
                           ours=root.hex(), snapshot=state.root.hex())
            raise
        await trio.to_thread.run_sync(self.applier.book.set_applied, snap.index)
        self.applier.restored(snap.index)
        self.log.info("raft.snapshot_restored", index=snap.index, ledger_size=state.size)

    async def _fetch_from(self, peer: str, fetch: SnapshotFetch) -> None:
        fs = await self.open_stream(peer)
        try:
            request = fetch.more()
            while request is not None:
                with trio.fail_after(FETCH_TIMEOUT_S):
                    reply = await fs.request(request)
                entries = fetch.received(reply)
                await trio.to_thread.run_sync(self._append_fetched, entries)
                request = fetch.more()
        finally:
            await fs.close()

    def _append_fetched(self, entries: list[LedgerEntry]) -> None:
        self.ledger.append_batch(entries, log_id=self.log_id)


__all__ = ["COMPACT_EVERY", "Catchup", "SnapshotState", "ledger_chunk", "receipts_on_ledger"]
