"""Messages of the change-feed sync (`gd.protocol.sync`), with strict decoding.

Two messages, pull-based (the CouchDB ``_changes?since=`` shape):

* `ChangesRequest` ``["changes?", since, max_genes]``: the receiver asks for the
  sender's feed entries after sequence number `since` (the checkpoint it holds for
  that sender), at most `max_genes` genes.
* `ChangeBatch` ``["changes", since, upto, more, [gene_wire, ...]]``: the sender's
  answer: the genes (wire form: signed body + signature, never local state) of its
  feed entries in ``(since, upto]`` that its share policy lets this receiver see;
  `upto` is the checkpoint the receiver stores once it has applied the batch, and
  `more` says whether the feed goes on past `upto`.

`upto` advances past entries the policy filtered out, so a receiver that may see
little of a large feed still makes progress and never learns what was withheld
beyond "something changed". Genes stay plain data here; `gd.protocol.sync` turns them
into `Gene` values and verifies them one by one, so one bad gene does not void a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from gd.genome import canonical
from gd.genome.errors import DecodeError
from gd.protocol.errors import RemoteProtocolError

# At most this many genes per batch. 256 genes of ~1.5 KB make a ~400 KB frame: big
# enough that per-batch costs (one LMDB commit, one round trip) are amortised, small
# enough to keep one yamux window and bound the work lost when a link drops mid-batch.
MAX_BATCH_GENES: Final = 256
# A batch message larger than this is refused before decoding: 256 genes at the gene
# model's largest realistic size (~12 KiB with 64 codons and long texts) is ~3 MiB.
MAX_BATCH_BYTES: Final = 4 * 1024 * 1024
# Feed sequence numbers are u64 (LMDB keys are 8-byte big-endian counters).
MAX_SEQ: Final = 2**64 - 1

REQUEST_TAG: Final = "changes?"
BATCH_TAG: Final = "changes"


class SyncProtocolError(RemoteProtocolError, ValueError):
    """The peer sent a sync message that is malformed or breaks the protocol: the
    peer's fault (`RemoteProtocolError`); a ValueError too, so a frame's field check
    that raises it reads as a bad frame to `gd.protocol.wire`."""


def _uint(name: str, value: Any, maximum: int = MAX_SEQ) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise SyncProtocolError(f"{name} must be an int in 0..{maximum}, got {value!r}")
    return value


def _decode(data: bytes) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SyncProtocolError(f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_BATCH_BYTES:
        raise SyncProtocolError(f"message of {len(data)} bytes exceeds {MAX_BATCH_BYTES}")
    try:
        return canonical.decode(bytes(data))
    except DecodeError as exc:
        raise SyncProtocolError(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class ChangesRequest:
    since: int
    max_genes: int = MAX_BATCH_GENES

    def __post_init__(self) -> None:
        _uint("since", self.since)
        _uint("max_genes", self.max_genes, MAX_BATCH_GENES)
        if self.max_genes == 0:
            raise SyncProtocolError("max_genes must be at least 1")

    def to_plain(self) -> list[Any]:
        return [REQUEST_TAG, self.since, self.max_genes]

    @classmethod
    def from_plain(cls, plain: Any) -> ChangesRequest:
        if not isinstance(plain, list) or len(plain) != 3 or plain[0] != REQUEST_TAG:
            raise SyncProtocolError(f"expected [{REQUEST_TAG!r}, since, max_genes]")
        return cls(plain[1], plain[2])

    def encode(self) -> bytes:
        return canonical.encode_plain(self.to_plain())

    @classmethod
    def decode(cls, data: bytes) -> ChangesRequest:
        return cls.from_plain(_decode(data))


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    since: int
    upto: int
    more: bool
    genes: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        _uint("since", self.since)
        _uint("upto", self.upto)
        if self.upto < self.since:
            raise SyncProtocolError(f"batch goes backwards: upto {self.upto} < since "
                                    f"{self.since}")
        if not isinstance(self.more, bool):
            raise SyncProtocolError("more must be a bool")
        if len(self.genes) > MAX_BATCH_GENES:
            raise SyncProtocolError(f"{len(self.genes)} genes exceed {MAX_BATCH_GENES}")
        if self.genes and self.upto == self.since:
            raise SyncProtocolError("a batch with genes must advance the feed position")
        for i, gene in enumerate(self.genes):
            if not isinstance(gene, dict):
                raise SyncProtocolError(f"genes[{i}] must be a map")

    def to_plain(self) -> list[Any]:
        return [BATCH_TAG, self.since, self.upto, self.more, list(self.genes)]

    @classmethod
    def from_plain(cls, plain: Any) -> ChangeBatch:
        if not isinstance(plain, list) or len(plain) != 5 or plain[0] != BATCH_TAG:
            raise SyncProtocolError(f"expected [{BATCH_TAG!r}, since, upto, more, genes]")
        if not isinstance(plain[4], list):
            raise SyncProtocolError("genes must be a list")
        return cls(plain[1], plain[2], plain[3], tuple(plain[4]))

    def encode(self) -> bytes:
        return canonical.encode_plain(self.to_plain())

    @classmethod
    def decode(cls, data: bytes) -> ChangeBatch:
        return cls.from_plain(_decode(data))
