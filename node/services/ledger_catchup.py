"""Snapshots of the region's ledger: compaction, and catching up from one.

Every `compact_every` applied entries the Raft log is compacted; the snapshot's
application state is a *pointer* (`SnapshotState`: ledger size, root, Raft index), not
the entries. A node that installs a snapshot fetches the ledger entries it lacks from a
member (`LedgerFetch` → `LedgerChunk`), checks the root, and goes on from the snapshot's
index. A chunk that does not fit is the member's fault (`RemoteProtocolError`, the next
member is asked); a root that disagrees with ours is a fork no automatic step may paper
over (`LocalLedgerError`: applying stops, the operator must look).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import trio

from gd.genome import canonical
from gd.genome.errors import DecodeError
from gd.ledger.entry import LedgerEntry
from gd.ledger.errors import LocalLedgerError, RemoteLedgerError
from gd.ledger.raft import RaftNode
from gd.ledger.raft_records import Snapshot
from gd.node.net.streams import FramedStream, StreamGone
from gd.node.services.ledger_apply import Applier
from gd.node.services.ledger_links import REOPEN_BACKOFF_MAX_S, REOPEN_BACKOFF_S
from gd.node.services.ledger_wire import LedgerChunk, LedgerFetch
from gd.node.store.ledger_store import Ledger
from gd.node.store.raft_lmdb import LmdbRaftStorage
from gd.protocol.errors import RemoteProtocolError

# Applied Raft entries between compactions. Each entry is a batch, so 10k entries are
# up to 20M statements; the log below the snapshot is then dropped.
COMPACT_EVERY: Final = 10_000
# A fetch reply (snapshot catch-up) carries at most this many bytes of entries.
FETCH_CHUNK_BYTES: Final = 2 * 1024 * 1024
FETCH_CHUNK_ENTRIES: Final = 10_000
FETCH_TIMEOUT_S: Final = 30.0


@dataclass(frozen=True)
class SnapshotState:
    """The application state in a Raft snapshot: a pointer into the ledger."""

    size: int
    root: bytes
    applied: int

    def encode(self) -> bytes:
        return canonical.encode({"applied": self.applied, "root": self.root,
                                 "size": self.size})

    @classmethod
    def decode(cls, data: bytes) -> SnapshotState:
        try:
            obj = canonical.decode(data)
            if not isinstance(obj, dict) or set(obj) != {"applied", "root", "size"}:
                raise ValueError("expected {applied, root, size}")
            size, applied, root = obj["size"], obj["applied"], obj["root"]
            if type(size) is not int or type(applied) is not int or size < 0 or applied < 0 \
                    or not isinstance(root, bytes) or len(root) != 32:
                raise ValueError("bad field types")
        except (DecodeError, ValueError) as exc:
            raise RemoteLedgerError(f"snapshot state: {exc}") from None
        return cls(size, root, applied)


def ledger_chunk(ledger: Ledger, start: int, stop: int) -> LedgerChunk:
    """Our answer to a member's `LedgerFetch` (worker thread): bounded in entries and bytes."""
    out: list[bytes] = []
    nbytes = 0
    stop = min(stop, start + FETCH_CHUNK_ENTRIES)
    for entry in ledger.entries(start, stop):
        if out and nbytes + len(entry.encoded) > FETCH_CHUNK_BYTES:
            break
        out.append(entry.encoded)
        nbytes += len(entry.encoded)
    return LedgerChunk(start=start, entries=tuple(out), size=ledger.size)


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
        if node.log.applied - node.log.snapshot_index < self.compact_every:
            return
        if node.log.applied > self.applier.applied_index:
            # The applier is behind: the snapshot's pointer must describe the ledger at
            # the snapshot's index, so let it catch up first (once per compact_every).
            await self.applier.wait_applied(0)
        size, root = await trio.to_thread.run_sync(self._head)
        snap = node.compact(SnapshotState(size, root, node.log.applied).encode())
        await trio.to_thread.run_sync(self.storage.compact, snap)
        self.log.info("raft.compacted", index=snap.index, ledger_size=size)

    async def restore(self, snap: Snapshot, source: str | None) -> None:
        """Bring the ledger to the snapshot's state: fetch the entries we lack from a
        member, check the root, and remember the snapshot's index as applied."""
        state = SnapshotState.decode(snap.data)
        attempt = 0
        while True:
            size = await trio.to_thread.run_sync(lambda: self.ledger.size)
            if size >= state.size:
                break
            peers = [p for p in ([source] if source else []) +
                     sorted(snap.conf.voters | self.voters) if p and p != self.peer_id]
            peer = peers[attempt % len(peers)] if peers else None
            attempt += 1
            if peer is None:
                raise LocalLedgerError("a snapshot with no member to fetch entries from")
            try:
                await self._fetch_from(peer, size, state.size)
            except (StreamGone, RemoteProtocolError, RemoteLedgerError, LocalLedgerError,
                    trio.TooSlowError) as exc:
                self.log.warning("raft.fetch_failed", peer=peer, error=str(exc)[:200])
                await trio.sleep(min(REOPEN_BACKOFF_MAX_S, REOPEN_BACKOFF_S * attempt))
        root = await trio.to_thread.run_sync(self.ledger.root, state.size)
        if root != state.root:
            self.log.error("ledger.snapshot_root_mismatch", size=state.size,
                           ours=root.hex(), snapshot=state.root.hex())
            raise LocalLedgerError(f"our ledger disagrees with the snapshot at size "
                                   f"{state.size}")
        await trio.to_thread.run_sync(self.applier.book.set_applied, snap.index)
        self.applier.restored(snap.index)
        self.log.info("raft.snapshot_restored", index=snap.index, ledger_size=state.size)

    async def _fetch_from(self, peer: str, start: int, stop: int) -> None:
        fs = await self.open_stream(peer)
        try:
            while start < stop:
                with trio.fail_after(FETCH_TIMEOUT_S):
                    reply = await fs.request(LedgerFetch(start=start, stop=stop))
                if not isinstance(reply, LedgerChunk) or reply.start != start \
                        or not reply.entries:
                    raise RemoteProtocolError("bad or empty ledger chunk")
                entries = [LedgerEntry.decode(raw) for raw in reply.entries]
                await trio.to_thread.run_sync(self._append_fetched, entries)
                start += len(entries)
        finally:
            await fs.close()

    def _append_fetched(self, entries: list[LedgerEntry]) -> None:
        self.ledger.append_batch(entries, log_id=self.log_id)


__all__ = ["COMPACT_EVERY", "Catchup", "SnapshotState", "ledger_chunk"]
