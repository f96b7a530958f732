"""One strict decoder for the ledger's signed records (entries and tree heads).

Both arrive from peers and from disk, so both get the same three checks in the same order:
a size bound before any parsing (an outsider cannot make us decode a huge blob), the
record's own `from_plain` (types, fields, ranges), and canonical form (the bytes must be
the ones the record re-encodes to, or two encodings of one record could hash and sign
differently). Every failure is a `RemoteLedgerError` naming the record: the bytes are at
fault, not us.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from gd.genome import canonical
from gd.genome.errors import DecodeError, ValidationError
from gd.ledger.errors import RemoteLedgerError


class Encodable(Protocol):
    def encode(self) -> bytes: ...


R = TypeVar("R", bound=Encodable)


def decode_canonical(raw: bytes, *, limit: int, what: str,
                     parse: Callable[[Any], R]) -> R:
    """`parse(canonical.decode(raw))`, refused unless `raw` is at most `limit` bytes and is
    exactly the record's canonical encoding. `what` names the record in the errors."""
    if len(raw) > limit:
        raise RemoteLedgerError(f"{what} of {len(raw)} bytes exceeds {limit}")
    try:
        record = parse(canonical.decode(raw))
    except (DecodeError, ValidationError) as exc:
        raise RemoteLedgerError(f"malformed {what}: {exc}") from None
    if record.encode() != bytes(raw):
        raise RemoteLedgerError(f"{what} bytes are not in canonical form")
    return record
