"""The frames of the sync (`/gd/sync/2.0.0`) and repair (`/gd/reconcile/2.0.0`)
conversations: registered wire messages, one encoding per frame (issue 12, item 4).

Version 2 of the sync frames carries the feed request and the batch envelope as the
frame's own fields, where version 1 wrapped a canonical `ChangesRequest` / `ChangeBatch`
in a bytes field (msgpack inside msgpack). The one bytes field left is a batch's *genes*:
the canonical array of wire genes, because that is what zstd compresses, and a
compressed payload is bytes whatever encoding is under it. The repair step carries the
reconcile core's message as a nested record (`/gd/reconcile/2.0.0`; 1.0.0 wrapped its
bytes): the frame registry builds it with `ReconcileMessage.from_plain`'s checks and
bounds, and the core is fed the decoded message. Proposals and tombstones travel as
their *signed* bytes, which a receiver must have byte for byte to check the signature.

Everything here is sans-I/O: dataclasses, pure checks, and the zstd helpers the cores
use to pack and open a batch (CPU work the daemon runs in a worker thread).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack
import zstandard

from gd.genome import canonical
from gd.genome.errors import DecodeError
from gd.protocol.errors import RemoteProtocolError
from gd.protocol.reconcile_messages import ID_LEN, ReconcileMessage
from gd.protocol.sync_messages import (
    MAX_BATCH_BYTES,
    MAX_BATCH_GENES,
    MAX_SEQ,
    ChangeBatch,
    ChangesRequest,
    SyncProtocolError,
)
from gd.protocol.wire import Message, message

# 2.0.0: the request and the batch envelope became frame fields (no msgpack in msgpack).
# A node of an older build is refused at stream negotiation, by name (issue 17), rather
# than scored as a peer sending garbage.
SYNC_PROTOCOL_ID: Final = "/gd/sync/2.0.0"
# 2.0.0: the reconcile message became the step's field (no msgpack in msgpack).
RECONCILE_PROTOCOL_ID: Final = "/gd/reconcile/2.0.0"
# A repair fetch asks for at most this many versions: the same bound as a feed batch,
# so a reply fits the same frame and LMDB transaction budget.
MAX_FETCH_HASHES: Final = MAX_BATCH_GENES
# Batches smaller than this are sent as they are: zstd saves little on a few hundred
# bytes and the frame flag costs nothing either way.
ZSTD_MIN_BYTES: Final = 1024
# Level 3 is zstd's default: ~3-5x on msgpack genes at hundreds of MB/s; higher levels
# gain a few percent for several times the CPU on a 2-core node.
ZSTD_LEVEL: Final = 3


def compress(raw: bytes, allowed: bool) -> tuple[bytes, bool]:
    """(data, compressed): zstd only when the receiver asked for it and it pays."""
    if not allowed or len(raw) < ZSTD_MIN_BYTES:
        return raw, False
    packed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw)
    return (packed, True) if len(packed) < len(raw) else (raw, False)


def decompress(data: bytes, compressed: bool) -> bytes:
    """The raw bytes of a (maybe) compressed payload; a peer's bad or oversize zstd is
    `RemoteProtocolError` (the output is bounded: no decompression bomb)."""
    if not compressed:
        return data
    try:
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_BATCH_BYTES)
    except zstandard.ZstdError as exc:
        raise RemoteProtocolError(f"bad zstd payload (or over {MAX_BATCH_BYTES} bytes): "
                                  f"{exc}") from None


def _array_header(n: int) -> int:
    return 1 if n < 16 else 3 if n < 65536 else 5


def genes_payload(raw_len: int, n_genes: int) -> int:
    """Gene bytes inside an encoded array of `n_genes` wire genes of `raw_len` bytes:
    msgpack is compositional, so they are everything but the array's header."""
    return raw_len - _array_header(n_genes) if n_genes else 0


def wire_array(wires: Sequence[bytes]) -> bytes:
    """The canonical array of genes given as their canonical wire bytes
    (`Gene.wire_bytes`): msgpack is compositional, so it is the array's header followed
    by the genes' bytes as they are, with no gene decoded into a dict or re-encoded
    (issue 15: 1 µs a gene where `encode_plain([g.to_wire() ...])` took 20)."""
    header: bytes = msgpack.Packer().pack_array_header(len(wires))  # msgpack is untyped
    return header + b"".join(wires)


def decode_wire_genes(raw: bytes, most: int) -> list[dict[str, Any]]:
    """A canonical array of at most `most` wire genes (maps); RemoteProtocolError else.
    Each gene is checked on its own later (`verify_genes`), so one bad gene does not
    void the rest."""
    try:
        wires = canonical.decode(raw)
    except DecodeError as exc:
        raise RemoteProtocolError(f"bad gene list: {exc}") from None
    if not isinstance(wires, list) or len(wires) > most or not all(
            isinstance(w, dict) for w in wires):
        raise RemoteProtocolError(f"genes must be a list of at most {most} maps")
    return wires


# ---- /gd/sync ------------------------------------------------------------------------


@message
@dataclass(frozen=True)
class SyncPull(Message):
    """Receiver -> sender: "your feed after `since`, at most `max_genes` genes" (the
    core's `ChangesRequest`); `zstd`: we take compressed batches."""

    TYPE = "gd.sync.pull"
    VERSION = 2
    since: int
    max_genes: int = MAX_BATCH_GENES
    zstd: bool = False

    def __post_init__(self) -> None:
        self.request()  # the core's checks: u64 since, 1..MAX_BATCH_GENES genes

    def request(self) -> ChangesRequest:
        return ChangesRequest(self.since, self.max_genes)


@message
@dataclass(frozen=True)
class SyncBatch(Message):
    """Sender -> receiver: the core's `ChangeBatch` (its envelope as fields, its genes as
    one canonical array, zstd-compressed when `zstd`) and the sender's feed head, for
    the lag metric and to notice a feed that went back."""

    TYPE = "gd.sync.batch"
    VERSION = 2
    since: int
    upto: int
    more: bool
    head: int
    genes: bytes = b""
    zstd: bool = False

    def __post_init__(self) -> None:
        ChangeBatch(self.since, self.upto, self.more)  # the envelope's own checks
        if not 0 <= self.head <= MAX_SEQ:
            raise SyncProtocolError("feed head is not a u64")

    @classmethod
    def pack(cls, batch: ChangeBatch, head: int, zstd: bool) -> tuple[SyncBatch, int]:
        """The frame of `batch` and its payload (the genes' canonical bytes)."""
        n = len(batch.genes)
        raw = canonical.encode_plain(list(batch.genes)) if n else b""
        data, packed = compress(raw, zstd)
        frame = cls(batch.since, batch.upto, batch.more, head, data, packed)
        return frame, genes_payload(len(raw), n)

    @classmethod
    def pack_wire(cls, since: int, upto: int, more: bool, wires: Sequence[bytes],
                  head: int, zstd: bool) -> tuple[SyncBatch, int]:
        """`pack` of genes given as their canonical wire bytes (`Gene.wire_bytes`, what
        the Cortex stores). msgpack is compositional, so the canonical array is its
        header followed by the genes' bytes as they are: the sender neither decodes a
        stored gene into a dict nor re-encodes it (issue 15, item 1)."""
        n = len(wires)
        if n > MAX_BATCH_GENES:
            raise ValueError(f"{n} genes exceed {MAX_BATCH_GENES}")
        raw = wire_array(wires) if n else b""
        data, packed = compress(raw, zstd)
        return cls(since, upto, more, head, data, packed), genes_payload(len(raw), n)

    def open(self) -> tuple[ChangeBatch, int]:
        """Decompress and decode (a worker thread's job): the core's batch and its
        payload bytes. A malformed one is `RemoteProtocolError`."""
        if not self.genes:
            if self.zstd:
                raise RemoteProtocolError("a compressed batch without data")
            return ChangeBatch(self.since, self.upto, self.more), 0
        raw = decompress(self.genes, self.zstd)
        wires = decode_wire_genes(raw, MAX_BATCH_GENES)
        batch = ChangeBatch(self.since, self.upto, self.more, tuple(wires))
        return batch, genes_payload(len(raw), len(wires))


@message
@dataclass(frozen=True)
class SyncHint(Message):
    """"My feed is at `head`: pull from me." With `wait`, the peer pulls at once and
    answers `SyncPulled` (that is how `sync now` moves genes out)."""

    TYPE = "gd.sync.hint"
    head: int
    wait: bool = False


@message
@dataclass(frozen=True)
class SyncPulled(Message):
    """Answer to a waiting hint: what the pull from us brought the peer."""

    TYPE = "gd.sync.pulled"
    genes: int
    conflicts: int
    rejected: int
    error: str = ""


# ---- /gd/reconcile -------------------------------------------------------------------


@message
@dataclass(frozen=True)
class ReconcileStep(Message):
    """One `gd.protocol.reconcile` message, either way, decoded with the frame."""

    TYPE = "gd.reconcile.step"
    VERSION = 2
    msg: ReconcileMessage


@message
@dataclass(frozen=True)
class FetchVersions(Message):
    """Initiator -> responder after reconciling: send me these versions (by hash)."""

    TYPE = "gd.reconcile.fetch"
    hashes: tuple[bytes, ...]
    zstd: bool = False

    def __post_init__(self) -> None:
        if len(self.hashes) > MAX_FETCH_HASHES:
            raise ValueError(f"more than {MAX_FETCH_HASHES} hashes")
        if any(len(h) != ID_LEN for h in self.hashes):
            raise ValueError(f"version hashes are {ID_LEN} bytes")


@message
@dataclass(frozen=True)
class Versions(Message):
    """The fetched versions the responder holds *and* may share: a canonical list of wire
    genes (zstd when flagged). Unknown or withheld hashes are left out silently."""

    TYPE = "gd.reconcile.versions"
    genes: bytes
    zstd: bool


@message
@dataclass(frozen=True)
class ReconcileEnd(Message):
    """Initiator -> responder: done; you lack `you_lack` versions I hold, so reconcile
    with me when you can (only the initiator learns the differences)."""

    TYPE = "gd.reconcile.end"
    you_lack: int

