"""Catching up from a snapshot, sans-I/O: which member to ask, what to ask, whether its
answer fits, when to compact (issue 12, item 4).

A Raft snapshot's application state is a *pointer* (`SnapshotState`: ledger size, root,
Raft index), not the entries. A node that installs one fetches the entries it lacks from
a member (`LedgerFetch` -> `LedgerChunk`). `SnapshotFetch` is that conversation: fed our
ledger's size, the chunks and the failures, it returns the next `FetchStep` (ask this
peer for [start, stop), after this delay) and the decoded entries to store. A chunk that
does not fit is the member's fault (`RemoteProtocolError`: the driver asks the next
member); a root that disagrees with ours is a fork no automatic step may paper over
(`LocalLedgerError`: applying stops, the operator must look). `chunk_reply` is the
serving side: an answer bounded in entries and bytes. No I/O: the driver
(`gd.node.services.ledger_catchup`) reads and writes the ledger and the streams.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Final

from gd.genome import canonical
from gd.genome.errors import DecodeError
from gd.ledger.entry import LedgerEntry
from gd.ledger.errors import LocalLedgerError, RemoteLedgerError
from gd.ledger.ledger_frames import LedgerChunk, LedgerFetch
from gd.protocol.errors import RemoteProtocolError
from gd.protocol.wire import Message

# Applied Raft entries between compactions. Each entry is a batch, so 10k entries are
# up to 20M statements; the log below the snapshot is then dropped.
COMPACT_EVERY: Final = 10_000
# A fetch reply (snapshot catch-up) carries at most this many bytes of entries.
FETCH_CHUNK_BYTES: Final = 2 * 1024 * 1024
FETCH_CHUNK_ENTRIES: Final = 10_000
FETCH_TIMEOUT_S: Final = 30.0
# After a failed fetch, wait attempt x this (at most the max) before asking the next one.
FETCH_BACKOFF_S: Final = 0.2
FETCH_BACKOFF_MAX_S: Final = 5.0


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


def should_compact(applied: int, snapshot_index: int, every: int) -> bool:
    """Compact once `every` entries were applied past the last snapshot."""
    return applied - snapshot_index >= every


def check_fetch(msg: LedgerFetch) -> None:
    """A fetch's range must be a range: RemoteProtocolError otherwise."""
    if msg.start < 0 or msg.stop < msg.start:
        raise RemoteProtocolError("bad fetch range")


def chunk_reply(entries: Iterable[bytes], start: int, stop: int, size: int) -> LedgerChunk:
    """Our answer to a member's `LedgerFetch`: the encoded entries of [start, stop) from
    `entries` (read lazily), at most FETCH_CHUNK_ENTRIES and FETCH_CHUNK_BYTES."""
    out: list[bytes] = []
    nbytes = 0
    for encoded in entries:
        if len(out) >= min(stop - start, FETCH_CHUNK_ENTRIES):
            break
        if out and nbytes + len(encoded) > FETCH_CHUNK_BYTES:
            break
        out.append(encoded)
        nbytes += len(encoded)
    return LedgerChunk(start=start, entries=tuple(out), size=size)


def chunk_stop(start: int, stop: int) -> int:
    """The last index (exclusive) one chunk may read: what the driver asks the store for."""
    return min(stop, start + FETCH_CHUNK_ENTRIES)


@dataclass(frozen=True)
class FetchStep:
    """Ask `peer` for `request` (after waiting `delay_s`), or `done` when we hold enough."""

    peer: str | None
    request: LedgerFetch | None
    delay_s: float = 0.0

    @property
    def done(self) -> bool:
        return self.request is None


class SnapshotFetch:
    """One snapshot's catch-up: the members to ask in turn and the checks on their answers.

    Members are the snapshot's source (the leader that sent it) first, then every voter
    of the snapshot's configuration and of our config, in a fixed order; each failure
    moves to the next one, with a growing delay.
    """

    def __init__(self, snapshot_data: bytes, *, source: str | None, me: str,
                 snapshot_voters: Collection[str], voters: Collection[str]) -> None:
        self.state = SnapshotState.decode(snapshot_data)
        self.peers = [p for p in ([source] if source else []) +
                      sorted(set(snapshot_voters) | set(voters)) if p and p != me]
        self.attempt = 0
        self._asked: LedgerFetch | None = None
        self._delay = 0.0

    def next(self, size: int) -> FetchStep:
        """What to do with our ledger at `size`: done, or the next fetch and from whom.
        LocalLedgerError when no member is left to ask."""
        if size >= self.state.size:
            self._asked = None
            return FetchStep(None, None)
        if not self.peers:
            raise LocalLedgerError("a snapshot with no member to fetch entries from")
        peer = self.peers[self.attempt % len(self.peers)]
        self._asked = LedgerFetch(start=size, stop=self.state.size)
        delay, self._delay = self._delay, 0.0
        return FetchStep(peer, self._asked, delay)

    def failed(self) -> None:
        """The fetch from the current peer failed: the next step asks the next member,
        after attempt x FETCH_BACKOFF_S."""
        self.attempt += 1
        self._delay = min(FETCH_BACKOFF_MAX_S, FETCH_BACKOFF_S * self.attempt)

    def received(self, reply: Message) -> list[LedgerEntry]:
        """The member's answer to our last fetch: its entries, decoded, to store in order.
        RemoteProtocolError when it is not a chunk of what we asked, or empty."""
        asked = self._asked
        if asked is None:
            raise RemoteProtocolError("a ledger chunk we did not ask for")
        if not isinstance(reply, LedgerChunk) or reply.start != asked.start \
                or not reply.entries:
            raise RemoteProtocolError("bad or empty ledger chunk")
        if len(reply.entries) > asked.stop - asked.start:
            raise RemoteProtocolError("ledger chunk longer than asked")
        try:
            entries = [LedgerEntry.decode(raw) for raw in reply.entries]
        except RemoteLedgerError as exc:
            raise RemoteProtocolError(f"ledger chunk: {exc}") from None
        self._asked = LedgerFetch(start=asked.start + len(entries), stop=asked.stop)
        return entries

    def more(self) -> LedgerFetch | None:
        """The next fetch on the same stream after a chunk, or None when it covered all."""
        asked = self._asked
        if asked is None or asked.start >= asked.stop:
            return None
        return asked

    def check_root(self, root: bytes) -> None:
        """Our ledger's root at the snapshot's size: it must be the snapshot's."""
        if root != self.state.root:
            raise LocalLedgerError(f"our ledger disagrees with the snapshot at size "
                                   f"{self.state.size}: ours {root.hex()[:16]}…, snapshot "
                                   f"{self.state.root.hex()[:16]}…")


__all__ = ["COMPACT_EVERY", "FETCH_BACKOFF_MAX_S", "FETCH_BACKOFF_S", "FETCH_CHUNK_BYTES",
           "FETCH_CHUNK_ENTRIES", "FETCH_TIMEOUT_S", "FetchStep", "SnapshotFetch",
           "SnapshotState", "check_fetch", "chunk_reply", "chunk_stop", "should_compact"]
