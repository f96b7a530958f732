"""The one canonical encoding of every record: msgpack with sorted keys.

Hashes and signatures are computed over these bytes, so two nodes must produce the same
bytes for the same value. The rules:

* maps have `str` keys only and are written in sorted key order;
* tuples and lists are both written as msgpack arrays;
* floats are always float64 and must be finite (NaN has many bit patterns and breaks
  equality; infinities have no place in a decision rule);
* ints stay ints within msgpack's range [-2^63, 2^64-1] (it picks the smallest
  width, which is deterministic);
* no other types: a value that cannot round-trip is refused at encode time.

Decoding untrusted bytes is bounded (`MAX_*` below) and every failure becomes
`DecodeError`, never a crash.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Mapping
from typing import Any, overload

import msgpack

from gd.genome.errors import DecodeError

# A record larger than this is refused at decode time. A gene with 64 codons and a long
# purpose is ~4 KiB; decisions carrying a batch of states are the largest records we
# store, and 16 MiB bounds the memory one hostile blob can make us allocate.
MAX_RECORD_BYTES = 16 * 1024 * 1024
MAX_CONTAINER_LEN = 1_000_000
MAX_STR_LEN = 1024 * 1024

Canonical = None | bool | int | float | str | bytes | list["Canonical"] | dict[str, "Canonical"]


@overload
def normalize(value: Mapping[str, Any], path: str = "$") -> dict[str, Canonical]: ...
@overload
def normalize(value: Any, path: str = "$") -> Canonical: ...
def normalize(value: Any, path: str = "$") -> Canonical:
    """Return `value` as plain canonical data (sorted dicts, lists), or raise TypeError."""
    if value is None or isinstance(value, bool | str | bytes):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value <= 2**64 - 1:
            raise TypeError(f"{path}: integer {value} does not fit msgpack's 64 bits")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{path}: non-finite float {value!r} has no canonical form")
        return value
    if isinstance(value, Mapping):
        out: dict[str, Canonical] = {}
        for key in sorted(value):
            if not isinstance(key, str):
                raise TypeError(f"{path}: map key {key!r} is not a str")
            out[key] = normalize(value[key], f"{path}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [normalize(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise TypeError(f"{path}: {type(value).__name__} has no canonical encoding")


class _Packers(threading.local):
    """One reused msgpack Packer per thread. `msgpack.packb` builds a Packer (and
    allocates its buffer) on every call, half the cost of encoding a gene body (issue
    15); a Packer resets its buffer after each `pack`, also when packing raises. Per
    thread, not shared: packing a dict subclass calls back into Python, where another
    thread could start packing into the same buffer."""

    def __init__(self) -> None:
        self.pack = msgpack.Packer(use_bin_type=True).pack


_PACKERS = _Packers()


def encode(value: Any) -> bytes:
    """Canonical msgpack bytes of `value` (see module docstring for the rules)."""
    packed: bytes = _PACKERS.pack(normalize(value))
    return packed


def encode_plain(value: Canonical) -> bytes:
    """Encode data that is already canonical (sorted keys, finite floats).

    The hot path for records that build their own sorted dicts; `encode` re-checks.
    Same bytes as `msgpack.packb(value, use_bin_type=True)`.
    """
    packed: bytes = _PACKERS.pack(value)  # msgpack is untyped
    return packed


def encode_texts(parts: list[str]) -> bytes:
    """`encode(parts)` of a list of text (ids are derived from one, `gene_id_for`),
    without `normalize`'s walk: a list of `str` is already canonical. Anything else
    takes `encode`, with its checks and errors."""
    for part in parts:
        if type(part) is not str:
            return encode(parts)
    return encode_plain(parts)  # type: ignore[arg-type]  # list[str] is canonical


def decode(data: bytes) -> Any:
    """Decode canonical bytes. Raises `DecodeError` on anything malformed or oversize.

    Containers come back as lists and dicts. Non-canonical but valid msgpack (unsorted
    keys) is accepted here; records re-encode and compare hashes where that matters.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_RECORD_BYTES:
        raise DecodeError(f"record of {len(data)} bytes exceeds {MAX_RECORD_BYTES}")
    return unpack_bounded(bytes(data), max_str_len=MAX_STR_LEN, max_bin_len=MAX_RECORD_BYTES,
                          max_container_len=MAX_CONTAINER_LEN)


def unpack_bounded(data: bytes, *, max_str_len: int, max_bin_len: int,
                   max_container_len: int) -> Any:
    """Untrusted msgpack within the given bounds: text keys only, no extension types,
    containers as lists and dicts. The one bounded decoder: records (`decode`) and wire
    frames (`gd.protocol.wire`, which reports the DecodeError as the peer's fault) both
    use it, so a limit or a caught error cannot differ between the two."""
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=max_str_len,
            max_bin_len=max_bin_len,
            max_array_len=max_container_len,
            max_map_len=max_container_len,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError, RecursionError) as exc:
        raise DecodeError(f"malformed msgpack: {exc}") from exc


def sha256(data: bytes) -> bytes:
    """SHA-256 digest; the hash every content address in gd-node uses."""
    return hashlib.sha256(data).digest()
