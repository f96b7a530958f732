"""Per-entry work a replica does for every statement it applies, made cheaper (issue 15).

A helper for `gd.ledger.entry.LedgerEntry`, kept apart so the entry module stays a
plain description of the format (its cached values use the gene's lock-free
`gd.genome.memo.memo`: on Python 3.11 every first access of a `cached_property` takes a
per-class RLock, four per applied statement):

* `placed_encoding`: the canonical encoding of a statement placed at (index, prev), made
  from the statement's own canonical encoding by putting the two values where it holds
  `nil`, instead of building the ten-field map and packing it again. A statement's map
  has its keys in sorted order (author, hlc, index, key, kind, payload_hash, prev, ...),
  so the two `nil`s sit at offsets fixed by the lengths of the fields before them. The
  offsets are computed, then checked against the bytes; anything unexpected answers
  None and the caller encodes the entry in full, so the bytes are always the canonical
  ones (tests/ledger/test_entry_cache.py compares both ways over random statements).
"""

from __future__ import annotations

_INDEX_NIL = b"\xa5index\xc0"  # fixstr "index", then nil
_PREV_NIL = b"\xa4prev\xc0"  # fixstr "prev", then nil
# Bytes before the author's value: the fixmap header of 10 fields and fixstr "author".
_BEFORE_AUTHOR = 1 + 7
_HLC_KEY = 4  # fixstr "hlc"
_KEY_KEY = 4  # fixstr "key"
_KIND_KEY = 5  # fixstr "kind"
# fixstr "payload_hash" (13), then its value: bin8 header (2) and 32 bytes.
_PAYLOAD_HASH_FIELD = 13 + 2 + 32


def _str_size(text: str) -> int:
    """Bytes of `text` packed as a msgpack str (header and UTF-8)."""
    n = len(text) if text.isascii() else len(text.encode())
    return n + (1 if n < 32 else 2 if n < 0x100 else 3 if n < 0x10000 else 5)


def _uint(value: int) -> bytes:
    """`value` (0..2^64-1) packed as msgpack packs it: the smallest unsigned form."""
    if value < 0x80:
        return _BYTES[value]
    if value < 0x100:
        return b"\xcc" + _BYTES[value]
    if value < 0x10000:
        return b"\xcd" + value.to_bytes(2, "big")
    if value < 0x100000000:
        return b"\xce" + value.to_bytes(4, "big")
    return b"\xcf" + value.to_bytes(8, "big")


_BYTES = [bytes((i,)) for i in range(256)]
_BIN32 = b"\xc4\x20"  # bin8 header of a 32-byte value


def placed_encoding(encoded: bytes, author: str, hlc: int, key: str, kind: str,
                    index: int, prev_hash: bytes) -> bytes | None:
    """`encoded` (an unsequenced statement's canonical bytes) with `index` and
    `prev_hash` in place of its two `nil`s; None if the bytes are not laid out as a
    statement with these fields would be (the caller then encodes in full)."""
    if not 0 <= hlc < 1 << 64 or not 0 <= index < 1 << 64 or len(prev_hash) != 32:
        return None
    at_index = _BEFORE_AUTHOR + _str_size(author) + _HLC_KEY + len(_uint(hlc))
    at_prev = (at_index + len(_INDEX_NIL) + _KEY_KEY + _str_size(key) + _KIND_KEY
               + _str_size(kind) + _PAYLOAD_HASH_FIELD)
    if encoded[at_index:at_index + len(_INDEX_NIL)] != _INDEX_NIL \
            or encoded[at_prev:at_prev + len(_PREV_NIL)] != _PREV_NIL:
        return None
    index_value = at_index + len(_INDEX_NIL) - 1
    prev_value = at_prev + len(_PREV_NIL) - 1
    return b"".join((encoded[:index_value], _uint(index), encoded[index_value + 1:prev_value],
                     _BIN32, prev_hash, encoded[prev_value + 1:]))


__all__ = ["placed_encoding"]
