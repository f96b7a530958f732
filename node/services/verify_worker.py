"""One verify worker process (`python -m gd.node.services.verify_worker`; ADR 0038).

Started by `gd.node.services.verify_procs.ProcessVerifyPool` as a plain subprocess, not
through multiprocessing: a spawned multiprocessing child first re-imports its parent's
main module (the whole daemon, or a benchmark with libp2p and trio: ~1.5 s of CPU per
worker, measured), this one imports only the checks. It reads requests from stdin and
answers on stdout, one at a time, each a 4-byte big-endian length and a msgpack body
(`gd.node.services.worker_procs`, shared with the import signer): request = array of
encoded wire genes, reply = array of verdicts (`check_raw`). It ends at end of input:
when the pool closes it, or when its parent dies (the pipe closes with the parent, so a
SIGKILLed daemon leaves no worker behind).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO

import msgpack

from gd.node.services.worker_procs import FRAME, read_frame, write_frame
from gd.node.services.worker_procs import serve as serve_frames
from gd.protocol.sync import verify_wire

__all__ = ["FRAME", "check_raw", "read_frame", "serve", "write_frame"]


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


def serve(inp: IO[bytes], out: IO[bytes]) -> int:
    """Answer requests until end of input; the number answered."""
    return serve_frames(inp, out, check_raw)


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
