"""One verify worker process (`python -m gd.node.services.verify_worker`; ADR 0038).

Started by `gd.node.services.verify_procs.ProcessVerifyPool` as a plain subprocess, not
through multiprocessing: a spawned multiprocessing child first re-imports its parent's
main module (the whole daemon, or a benchmark with libp2p and trio: ~1.5 s of CPU per
worker, measured), this one imports only the checks. It reads requests from stdin and
answers on stdout, one at a time, each a 4-byte big-endian length and a msgpack body:
request = array of encoded wire genes, reply = array of verdicts (`check_raw`). It ends
at end of input: when the pool closes it, or when its parent dies (the pipe closes with
the parent, so a SIGKILLed daemon leaves no worker behind).
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from typing import IO, Final

import msgpack

from gd.protocol.sync import verify_wire

FRAME: Final = struct.Struct(">I")


def check_raw(raws: Sequence[bytes]) -> list[str | None]:
    """Per encoded wire gene: "" when `verify_wire` accepts it and the gene encodes to
    exactly these bytes, its reason when refused, None when the caller must check it
    itself (valid but not canonical bytes, or bytes this decoder does not take)."""
    out: list[str | None] = []
    for raw in raws:
        try:
            wire = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
                msgpack.StackError, RecursionError):
            out.append(None)
            continue
        if not isinstance(wire, dict):
            out.append(None)
            continue
        gene, reason = verify_wire(wire)
        if gene is None:
            out.append(reason)
        else:
            out.append("" if gene.wire_bytes == raw else None)
    return out


def read_frame(stream: IO[bytes]) -> bytes | None:
    """One length-prefixed frame, or None at end of input (or a cut frame)."""
    head = stream.read(FRAME.size)
    if len(head) < FRAME.size:
        return None
    (size,) = FRAME.unpack(head)
    body = stream.read(size)
    return body if len(body) == size else None


def write_frame(stream: IO[bytes], body: bytes) -> None:
    stream.write(FRAME.pack(len(body)) + body)
    stream.flush()


def serve(inp: IO[bytes], out: IO[bytes]) -> int:
    """Answer requests until end of input; the number answered."""
    answered = 0
    while (body := read_frame(inp)) is not None:
        raws = msgpack.unpackb(body, raw=False)
        write_frame(out, msgpack.packb(check_raw(raws), use_bin_type=True))
        answered += 1
    return answered


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
