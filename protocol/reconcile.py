"""Range-based set reconciliation (the Negentropy approach), sans-I/O.

The anti-entropy repair of issue 6: two peers that share a domain find which gene
versions one holds and the other lacks, in O(differences · log n) bytes, whatever the
change feed missed (a restore from backup, a bug, a newly shared domain).

Items and order
---------------
An item is ``(timestamp, id)``: the gene version's HLC stamp (u64) and its 32-byte
version hash. Items are totally ordered by timestamp, then id. Keying by HLC makes recent
changes cluster at the end of the order, so a peer that missed the last hour's edits
differs in a few adjacent ranges instead of everywhere. The caller builds the `ItemSet`
from the versions the share policy lets *this peer* see, so unauthorised ids never
appear in any message (not even as part of a fingerprint).

Ranges and fingerprints
-----------------------
A *bound* ``(timestamp, id_prefix)`` splits the order; a range is every item from the
previous bound (inclusive) to its own upper bound (exclusive). Bounds carry only as many
id bytes as needed to separate two neighbouring items (none when their timestamps
differ). A range's fingerprint is::

    SHA-256( (sum of its ids as little-endian 256-bit ints, mod 2**256) as 32 bytes LE
             || item count as u64 LE )[:16]

The sum makes a fingerprint computable from prefix sums in O(1) for any range, and the
count and hash stop an attacker-free collision by accident (two different multisets
with equal sums and counts are astronomically unlikely for hash-derived ids). This is
the construction of Negentropy v1 (hoytech/negentropy), written here from its spec,
with our own canonical msgpack framing rather than its varint byte format.

Messages and rounds
-------------------
A message is a list of ranges that cover the order from the lowest bound up to some
bound (anything after the last range is implicitly skipped). Each range is one of:

* ``SKIP``: nothing to do for this range;
* ``FINGERPRINT``: "my fingerprint of this range is F";
* ``ID_LIST``: "these are all my ids in this range".

The initiator opens with one range over everything (split into `BRANCHING` fingerprint
buckets, or an id list when it holds few items). On receiving a message each side walks
its ranges: a matching fingerprint becomes SKIP; a mismatching one is split into
`BRANCHING` sub-ranges with their fingerprints, or listed as ids when it holds fewer
than `ID_LIST_THRESHOLD` items; an ID_LIST from the initiator is answered with the
responder's own ids for that range; an ID_LIST received by the initiator settles that
range (the initiator now knows both sides) and becomes SKIP. The initiator is done when
its next message would hold only skips. Identical sets therefore cost one round trip:
the initiator's fingerprints all match and the responder answers with an empty message.

Only the initiator learns the differences: `have` (ids it holds that the responder
lacks: push them) and `need` (ids the responder holds that it lacks: fetch them).

Frame limits: a side whose reply grows past `frame_limit` stops, lists as many ids as
fit, and ends the message with one fingerprint over everything from there to the end of
the order; the next round continues from that point (Negentropy's frame size limit).

Errors: `ReconcileProtocolError` when the peer's bytes are malformed or break the
protocol (close that conversation; nothing was changed); `ReconcileUsageError` when
this side is misused (bad items, wrong call order). The messages and their strict
decoding are `gd.protocol.reconcile_messages`.
"""

from __future__ import annotations

import enum
import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from itertools import accumulate
from typing import Any, Final

from gd.protocol.reconcile_messages import (
    FINGERPRINT_LEN,
    ID_LEN,
    INFINITE,
    MAX_MESSAGE_BYTES,
    MAX_TIMESTAMP,
    Bound,
    Item,
    Mode,
    Range,
    ReconcileMessage,
    ReconcileProtocolError,
    minimal_bound,
)

# How many sub-ranges a mismatching range splits into. Negentropy uses 16: a difference
# costs log16(n) levels (5 for 100k items) of 16 fingerprints each; 2 would mean
# 17 levels and 17 round trips, 256 would mean 2 levels but 4 KiB per level.
BRANCHING: Final = 16
# Ranges holding fewer items than this are listed instead of split: 32 ids (1 KiB) cost
# less than another round trip of 16 fingerprints (~500 B) plus the latency.
ID_LIST_THRESHOLD: Final = 2 * BRANCHING

# A side aims to keep each message under `frame_limit` bytes (it may overshoot by one
# split, under 2 KiB). 256 KiB keeps one message well inside one libp2p stream write and
# a yamux window, and lists ~8,000 ids per round on a cold sync.
DEFAULT_FRAME_LIMIT: Final = 256 * 1024
# Below this a message could not hold one split plus the remainder fingerprint, and a
# round might not make progress.
MIN_FRAME_LIMIT: Final = 4 * 1024
MAX_FRAME_LIMIT: Final = MAX_MESSAGE_BYTES // 2  # leaves room for the overshoot of one split
# An initiator gives up after this many rounds. An honest responder needs about
# log16(n) rounds plus one per `frame_limit` of listed ids: 1M items on a cold sync at
# the minimum frame limit is ~8,000 rounds; a peer that keeps the conversation going
# past this is broken or hostile.
MAX_ROUNDS: Final = 10_000


class ReconcileUsageError(ValueError):
    """This side was misused: bad items, or a call out of order."""


class ReconcileRole(enum.Enum):
    """Which side of a conversation a `Reconciler` plays (not an API role)."""

    INITIATOR = "initiator"
    RESPONDER = "responder"


def fingerprint(id_sum: int, count: int) -> bytes:
    """Fingerprint of a range from the sum of its ids (as LE ints) and its item count."""
    body = (id_sum % 2**256).to_bytes(32, "little") + count.to_bytes(8, "little")
    return hashlib.sha256(body).digest()[:FINGERPRINT_LEN]


class ItemSet:
    """A sorted, immutable snapshot of one side's items, with O(1) range fingerprints."""

    __slots__ = ("_ids", "_items", "_prefix")

    def __init__(self, items: Iterable[Item]) -> None:
        by_id: dict[bytes, int] = {}
        for item in items:
            if not isinstance(item, tuple) or len(item) != 2:
                raise ReconcileUsageError(f"item {item!r} is not a (timestamp, id) pair")
            ts, item_id = item
            if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= MAX_TIMESTAMP:
                raise ReconcileUsageError(f"timestamp {ts!r} is not a u64")
            if not isinstance(item_id, bytes) or len(item_id) != ID_LEN:
                raise ReconcileUsageError(f"id {item_id!r} is not {ID_LEN} bytes")
            if by_id.setdefault(item_id, ts) != ts:
                raise ReconcileUsageError(
                    f"id {item_id.hex()} appears with timestamps {by_id[item_id]} and {ts}")
        self._items: list[Item] = sorted((ts, i) for i, ts in by_id.items())
        self._ids: list[bytes] = [i for _, i in self._items]
        prefix = [0] * (len(self._items) + 1)
        acc = 0
        for n, item_id in enumerate(self._ids, 1):
            acc += int.from_bytes(item_id, "little")
            prefix[n] = acc
        self._prefix = prefix

    @classmethod
    def trusted(cls, items: Iterable[Item]) -> ItemSet:
        """An ItemSet of items this node built itself from stored heads (u64 stamps,
        32-byte hashes, each id once): sorted and summed without the per-item checks,
        so a cached item list becomes a snapshot in a sort and a sum (`RepairItems`)."""
        self = cls.__new__(cls)
        self._items = sorted(items)
        self._ids = [i for _, i in self._items]
        self._prefix = [0, *accumulate(int.from_bytes(i, "little") for i in self._ids)]
        return self

    def merged(self, added: Iterable[Item]) -> ItemSet:
        """A new ItemSet of these items plus `added` (trusted, none already here): the
        two sorted runs merge in linear time, and the sums before the first new item
        are reused."""
        new = sorted(added)
        if not new:
            return self
        out = ItemSet.__new__(ItemSet)
        out._items = sorted(self._items + new)  # two sorted runs: one linear merge
        out._ids = [i for _, i in out._items]
        keep = bisect_left(self._items, new[0])  # every item below the first new one
        out._prefix = self._prefix[:keep + 1]
        out._prefix += accumulate((int.from_bytes(i, "little") for i in out._ids[keep:]),
                                  initial=out._prefix[-1])
        del out._prefix[keep + 1]  # accumulate repeats its initial value first
        return out

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Item:
        return self._items[index]

    def ids(self, lo: int, hi: int) -> list[bytes]:
        return self._ids[lo:hi]

    def index_of(self, bound: Bound) -> int:
        """Index of the first item at or above `bound`."""
        if bound.is_infinite:
            return len(self._items)
        return bisect_left(self._items, bound.key())

    def fingerprint(self, lo: int, hi: int) -> bytes:
        return fingerprint(self._prefix[hi] - self._prefix[lo], hi - lo)


# -- the state machine --------------------------------------------------------------


class _Output:
    """Ranges of the reply being built: coalesces skips, tracks the size budget."""

    def __init__(self, frame_limit: int) -> None:
        self.ranges: list[Range] = []
        self.size = 8
        self.frame_limit = frame_limit
        self._pending_skip: Bound | None = None

    def skip(self, upper: Bound) -> None:
        self._pending_skip = upper

    def add(self, r: Range) -> None:
        if self._pending_skip is not None:
            self.ranges.append(Range(self._pending_skip, Mode.SKIP))
            self.size += 16 + len(self._pending_skip.prefix)
            self._pending_skip = None
        self.ranges.append(r)
        self.size += r.size_hint()

    @property
    def full(self) -> bool:
        return self.size >= self.frame_limit

    @property
    def room_for_ids(self) -> int:
        return max(1, (self.frame_limit - self.size) // ID_LEN)

    @property
    def has_work(self) -> bool:
        """True when the message asks the peer for something (not only skips)."""
        return bool(self.ranges)


class Reconciler:
    """One side of one reconciliation conversation over a fixed `ItemSet`.

    Initiator: ``msg = r.initiate()``; then ``msg = r.receive(reply)`` until it returns
    None; then read ``r.have`` and ``r.need``. Responder: ``reply = r.receive(msg)`` for
    every message it gets (a responder keeps no state between messages, so it can serve
    a resumed conversation too). Messages are decoded `ReconcileMessage`s: the frame that
    carries one (`ReconcileStep`) is decoded and checked once, by the frame registry.
    """

    def __init__(self, items: ItemSet | Iterable[Item], role: ReconcileRole, *,
                 frame_limit: int = DEFAULT_FRAME_LIMIT, max_rounds: int = MAX_ROUNDS) -> None:
        if not MIN_FRAME_LIMIT <= frame_limit <= MAX_FRAME_LIMIT:
            raise ReconcileUsageError(
                f"frame_limit {frame_limit} outside {MIN_FRAME_LIMIT}..{MAX_FRAME_LIMIT}")
        self.items = items if isinstance(items, ItemSet) else ItemSet(items)
        self.role = role
        self.frame_limit = frame_limit
        self.max_rounds = max_rounds
        self.have: set[bytes] = set()
        self.need: set[bytes] = set()
        self.rounds = 0
        self.done = False
        self._started = False

    @classmethod
    def initiator(cls, items: ItemSet | Iterable[Item], **kw: Any) -> Reconciler:
        return cls(items, ReconcileRole.INITIATOR, **kw)

    @classmethod
    def responder(cls, items: ItemSet | Iterable[Item], **kw: Any) -> Reconciler:
        return cls(items, ReconcileRole.RESPONDER, **kw)

    @property
    def is_initiator(self) -> bool:
        return self.role is ReconcileRole.INITIATOR

    def initiate(self) -> ReconcileMessage:
        """The initiator's first message: everything, as fingerprints or an id list."""
        if not self.is_initiator:
            raise ReconcileUsageError("only the initiator opens a conversation")
        if self._started:
            raise ReconcileUsageError("initiate() was already called")
        self._started = True
        out = _Output(self.frame_limit)
        self._split(out, 0, len(self.items), INFINITE)
        return ReconcileMessage(tuple(out.ranges))

    def receive(self, message: ReconcileMessage) -> ReconcileMessage | None:
        """Process the peer's message; return the reply, or None when the initiator is done.

        Raises `ReconcileProtocolError` for an out-of-protocol message (past the rounds'
        bound); the sets `have` and `need` are then unchanged by that message.
        """
        if self.is_initiator:
            if not self._started:
                raise ReconcileUsageError("call initiate() before receive()")
            if self.done:
                raise ReconcileUsageError("the conversation is finished")
            if self.rounds >= self.max_rounds:
                raise ReconcileProtocolError(f"no convergence after {self.max_rounds} rounds")
        if not isinstance(message, ReconcileMessage):
            raise ReconcileUsageError(f"expected a ReconcileMessage, got {type(message).__name__}")
        have: set[bytes] = set()
        need: set[bytes] = set()
        out = self._process(message.ranges, have, need)
        self.rounds += 1
        self.have |= have
        self.need |= need
        if self.is_initiator and not out.has_work:
            self.done = True
            return None
        return ReconcileMessage(tuple(out.ranges))

    def _process(self, ranges: Sequence[Range], have: set[bytes], need: set[bytes]) -> _Output:
        items = self.items
        out = _Output(self.frame_limit)
        lo = 0
        for n, r in enumerate(ranges):
            hi = items.index_of(r.upper)
            if r.mode is Mode.SKIP:
                out.skip(r.upper)
            elif r.mode is Mode.FINGERPRINT:
                if items.fingerprint(lo, hi) == r.fingerprint:
                    out.skip(r.upper)
                else:
                    self._split(out, lo, hi, r.upper)
            elif self.is_initiator:
                theirs = set(r.ids)
                for item_id in items.ids(lo, hi):
                    if item_id in theirs:
                        theirs.discard(item_id)
                    else:
                        have.add(item_id)
                need |= theirs
                out.skip(r.upper)
            elif self._list_ids(out, lo, hi, r.upper):
                break
            lo = hi
            if out.full and n + 1 < len(ranges):
                out.add(Range(INFINITE, Mode.FINGERPRINT,
                              fingerprint=items.fingerprint(lo, len(items))))
                break
        return out

    def _list_ids(self, out: _Output, lo: int, hi: int, upper: Bound) -> bool:
        """Answer an id list with ours for [lo, hi). If they do not all fit, list those
        that do, close the message with a fingerprint of the rest and return True (the
        message is finished); return False when everything fit."""
        items = self.items
        room = out.room_for_ids
        if hi - lo <= room:
            out.add(Range(upper, Mode.ID_LIST, ids=tuple(items.ids(lo, hi))))
            return False
        cut = lo + room
        out.add(Range(minimal_bound(items[cut - 1], items[cut]), Mode.ID_LIST,
                      ids=tuple(items.ids(lo, cut))))
        out.add(Range(INFINITE, Mode.FINGERPRINT,
                      fingerprint=items.fingerprint(cut, len(items))))
        return True

    def _split(self, out: _Output, lo: int, hi: int, upper: Bound) -> None:
        """Describe [lo, hi) to the peer: ids if few, else `BRANCHING` fingerprinted buckets."""
        items = self.items
        count = hi - lo
        if count < ID_LIST_THRESHOLD:
            out.add(Range(upper, Mode.ID_LIST, ids=tuple(items.ids(lo, hi))))
            return
        per_bucket, extra = divmod(count, BRANCHING)
        start = lo
        for bucket in range(BRANCHING):
            end = start + per_bucket + (1 if bucket < extra else 0)
            bound = upper if bucket == BRANCHING - 1 else minimal_bound(items[end - 1],
                                                                        items[end])
            out.add(Range(bound, Mode.FINGERPRINT, fingerprint=items.fingerprint(start, end)))
            start = end


def reconcile_in_memory(ours: ItemSet | Iterable[Item], theirs: ItemSet | Iterable[Item],
                        **kw: Any) -> tuple[set[bytes], set[bytes], list[int]]:
    """Run a whole conversation between two in-memory sides (tests, bench, simulator).

    Returns (have, need, sizes): the initiator's results and the byte size of every
    message (its canonical encoding), in the order sent (initiator first).
    """
    initiator = Reconciler.initiator(ours, **kw)
    responder = Reconciler.responder(theirs, **kw)
    msg: ReconcileMessage | None = initiator.initiate()
    sizes: list[int] = []
    while msg is not None:
        sizes.append(len(msg.encode()))
        reply = responder.receive(msg)
        assert reply is not None, "only an initiator ends a conversation"
        sizes.append(len(reply.encode()))
        msg = initiator.receive(reply)
    return initiator.have, initiator.need, sizes
