"""The messages of range-based set reconciliation: items, bounds, ranges, strict decoding.

A message is ``[version, [[ts_code, prefix, mode, payload]...]]``: a list of ranges that
cover the item order from the lowest bound up to some bound, each a SKIP, a FINGERPRINT
or an ID_LIST (`gd.protocol.reconcile` says how the two sides use them). A message from a
peer is decoded strictly, with hard bounds on its size, range and id counts, before any
memory is spent on it.

On the wire the message is the `ReconcileStep` frame's own field (`gd.protocol.wire`
builds it with `from_plain`, so a frame is decoded once, issue 12 item 4); `encode` and
`decode` are its standalone canonical bytes (tests, the fuzz target, size accounting).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from gd.genome import canonical
from gd.genome.errors import DecodeError

PROTOCOL_VERSION: Final = 1
ID_LEN: Final = 32  # a gene version hash (SHA-256)
FINGERPRINT_LEN: Final = 16  # Negentropy v1's length: 128 bits against accidental matches
MAX_TIMESTAMP: Final = 2**64 - 1  # HLC stamps are u64
_INFINITE_TS: Final = 2**64  # above every item; written as timestamp code 0
# Hard bounds on what we decode from a peer, whatever its frame limit: a message bigger
# than 1 MiB, or with more ranges or ids than such a message can honestly hold, is
# refused before we spend memory on it.
MAX_MESSAGE_BYTES: Final = 1024 * 1024
# Our own size estimate counts >= 16 B per range, so an honest message under
# MAX_FRAME_LIMIT (plus one split) holds fewer ranges than this.
MAX_RANGES_PER_MESSAGE: Final = MAX_MESSAGE_BYTES // 16
MAX_IDS_PER_MESSAGE: Final = MAX_MESSAGE_BYTES // ID_LEN

Item = tuple[int, bytes]


class ReconcileProtocolError(ValueError):
    """The peer sent bytes that are not a valid reconciliation message for this state."""


class Mode(enum.IntEnum):
    SKIP = 0
    FINGERPRINT = 1
    ID_LIST = 2


@dataclass(frozen=True, slots=True, order=True)
class Bound:
    """An upper bound in the item order: items below ``(timestamp, prefix)`` are inside."""

    timestamp: int
    prefix: bytes = b""

    @property
    def is_infinite(self) -> bool:
        return self.timestamp == _INFINITE_TS

    def key(self) -> tuple[int, bytes]:
        return (self.timestamp, self.prefix)


MIN_BOUND: Final = Bound(0, b"")
INFINITE: Final = Bound(_INFINITE_TS, b"")


def minimal_bound(prev: Item, cur: Item) -> Bound:
    """The shortest bound with ``prev < bound <= cur`` (prev < cur in the item order)."""
    if prev[0] != cur[0]:
        return Bound(cur[0], b"")
    shared = 0
    while prev[1][shared] == cur[1][shared]:
        shared += 1
    return Bound(cur[0], cur[1][: shared + 1])


@dataclass(frozen=True, slots=True)
class Range:
    """One range of a message: its upper bound, its mode and that mode's payload."""

    upper: Bound
    mode: Mode
    fingerprint: bytes = b""
    ids: tuple[bytes, ...] = ()

    def payload(self) -> bytes:
        if self.mode is Mode.FINGERPRINT:
            return self.fingerprint
        if self.mode is Mode.ID_LIST:
            return b"".join(self.ids)
        return b""

    def size_hint(self) -> int:
        """An upper estimate of this range's encoded size (array header, ints, bins)."""
        return 16 + len(self.upper.prefix) + len(self.fingerprint) + ID_LEN * len(self.ids)


@dataclass(frozen=True, slots=True)
class ReconcileMessage:
    """One message of the conversation: ``[version, [[ts_code, prefix, mode, payload]...]]``.

    ``ts_code`` is 0 for the infinite bound, else 1 + the timestamp's increase over the
    previous range's bound (0 for the first), so that bounds of nearby HLC stamps cost
    one to five bytes instead of nine.
    """

    # What `from_plain` raises on bad input: the frame registry builds a `ReconcileStep`'s
    # message with these checks (`gd.protocol.wire`, nested records).
    WIRE_ERRORS: ClassVar[tuple[type[Exception], ...]] = (ReconcileProtocolError,)
    ranges: tuple[Range, ...] = ()

    def to_plain(self) -> list[Any]:
        out: list[Any] = []
        prev_ts = 0
        for r in self.ranges:
            if r.upper.is_infinite:
                code = 0
            else:
                code = 1 + r.upper.timestamp - prev_ts
                prev_ts = r.upper.timestamp
            out.append([code, r.upper.prefix, int(r.mode), r.payload()])
        return [PROTOCOL_VERSION, out]

    def encode(self) -> bytes:
        return canonical.encode_plain(self.to_plain())

    @classmethod
    def decode(cls, data: bytes) -> ReconcileMessage:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ReconcileProtocolError(f"expected bytes, got {type(data).__name__}")
        if len(data) > MAX_MESSAGE_BYTES:
            raise ReconcileProtocolError(
                f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
        try:
            plain = canonical.decode(bytes(data))
        except DecodeError as exc:
            raise ReconcileProtocolError(str(exc)) from exc
        return cls.from_plain(plain)

    @classmethod
    def from_plain(cls, plain: Any) -> ReconcileMessage:
        """Strictly validate a decoded message: shapes, types, sizes, bound order. The
        byte bound counts each range as our sender's budget does (`Range.size_hint`): a
        message worth more than MAX_MESSAGE_BYTES is refused however it was framed."""
        if not isinstance(plain, list) or len(plain) != 2:
            raise ReconcileProtocolError("message must be [version, ranges]")
        version, raw_ranges = plain
        if _not_int(version) or version != PROTOCOL_VERSION:
            raise ReconcileProtocolError(f"unsupported protocol version {version!r}")
        if not isinstance(raw_ranges, list):
            raise ReconcileProtocolError("ranges must be a list")
        if len(raw_ranges) > MAX_RANGES_PER_MESSAGE:
            raise ReconcileProtocolError(
                f"{len(raw_ranges)} ranges exceed {MAX_RANGES_PER_MESSAGE}")
        ranges: list[Range] = []
        prev = MIN_BOUND
        prev_ts = 0
        total_ids = 0
        size = 8
        for n, raw in enumerate(raw_ranges):
            if prev.is_infinite:
                raise ReconcileProtocolError(f"range {n} follows the infinite bound")
            upper, mode, payload = _decode_range(n, raw, prev_ts)
            size += 16 + len(upper.prefix) + len(payload)
            if size > MAX_MESSAGE_BYTES:
                raise ReconcileProtocolError(f"message exceeds {MAX_MESSAGE_BYTES} bytes")
            if upper <= prev:
                raise ReconcileProtocolError(f"range {n}: bounds must strictly increase")
            if mode is Mode.FINGERPRINT:
                if len(payload) != FINGERPRINT_LEN:
                    raise ReconcileProtocolError(f"range {n}: fingerprint is not "
                                                 f"{FINGERPRINT_LEN} bytes")
                ranges.append(Range(upper, mode, fingerprint=payload))
            elif mode is Mode.ID_LIST:
                if len(payload) % ID_LEN:
                    raise ReconcileProtocolError(f"range {n}: id list is not a multiple "
                                                 f"of {ID_LEN} bytes")
                ids = tuple(payload[i:i + ID_LEN] for i in range(0, len(payload), ID_LEN))
                total_ids += len(ids)
                if total_ids > MAX_IDS_PER_MESSAGE:
                    raise ReconcileProtocolError(f"more than {MAX_IDS_PER_MESSAGE} ids")
                if len(set(ids)) != len(ids):
                    raise ReconcileProtocolError(f"range {n}: id list repeats an id")
                ranges.append(Range(upper, mode, ids=ids))
            else:
                if payload:
                    raise ReconcileProtocolError(f"range {n}: skip carries a payload")
                ranges.append(Range(upper, mode))
            prev = upper
            if not upper.is_infinite:
                prev_ts = upper.timestamp
        return cls(tuple(ranges))


def _not_int(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, int)


def _decode_range(n: int, raw: Any, prev_ts: int) -> tuple[Bound, Mode, bytes]:
    if not isinstance(raw, list) or len(raw) != 4:
        raise ReconcileProtocolError(f"range {n} must be [ts_code, prefix, mode, payload]")
    code, prefix, mode, payload = raw
    if _not_int(code) or code < 0:
        raise ReconcileProtocolError(f"range {n}: timestamp code {code!r} is not a uint")
    if not isinstance(prefix, bytes) or len(prefix) > ID_LEN:
        raise ReconcileProtocolError(f"range {n}: bound prefix must be <= {ID_LEN} bytes")
    if _not_int(mode) or mode not in Mode._value2member_map_:
        raise ReconcileProtocolError(f"range {n}: unknown mode {mode!r}")
    if not isinstance(payload, bytes):
        raise ReconcileProtocolError(f"range {n}: payload must be bytes")
    if code == 0:
        if prefix:
            raise ReconcileProtocolError(f"range {n}: the infinite bound has no prefix")
        return INFINITE, Mode(mode), payload
    ts = prev_ts + code - 1
    if ts > MAX_TIMESTAMP:
        raise ReconcileProtocolError(f"range {n}: bound timestamp {ts} exceeds u64")
    return Bound(ts, prefix), Mode(mode), payload
