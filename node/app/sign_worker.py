"""One import signing worker (`python -m gd.node.app.sign_worker`; issue 15, ADR 0041).

Started by `gd.node.app.sign_pool.SignPool` as a plain subprocess speaking
length-prefixed msgpack on stdin/stdout (`gd.node.services.worker_procs`, the pattern of
the sync verifier, ADR 0038), not through multiprocessing: a spawned child re-imports
its parent's main module first (`gd.cli.main` under `gd-node`: 1.66 s of CPU per worker,
measured), this one imports only the line parser, the pack checks and the genome.

The first frame is the key's seed (it comes over the pipe from the process that started
this one and is never written anywhere); each later frame is a chunk of lines, answered
with one result per line, in order (`sign_lines`). The worker ends at end of input: when
the pool closes it, or when the importing process dies (its pipe closes with it).
"""

from __future__ import annotations

import sys
from typing import IO, NamedTuple

import msgpack

from gd.genome.errors import ValidationError
from gd.genome.gene import Gene
from gd.genome.identity import NodeKey
from gd.node.app.import_lines import parse_line
from gd.node.gc_tuning import batch_gc
from gd.node.services.worker_procs import read_frame, serve


class SignedLine(NamedTuple):
    """A line signed as a new gene: what the Cortex stores for it, nothing to re-encode.
    A named tuple: it crosses the pipe for every line (as a msgpack array) and is cheap
    to rebuild from one."""

    line: int
    id: str
    domain: str
    origin: str
    wire_bytes: bytes
    version_hash: bytes
    has_synapses: bool


LineResult = SignedLine | tuple[int, str]
# (line number, JSON text of the line, HLC stamp the writer assigned to it)
LineJob = tuple[int, bytes, int]


def sign_lines(key: NodeKey, jobs: list[LineJob]) -> list[LineResult]:
    """Parse, check and sign each line as a new gene (the workers' work, and the pool's
    own when a worker is lost: same key and stamp, so the same bytes)."""
    out: list[LineResult] = []
    # A chunk's parsed lines and genes are acyclic and dropped with the chunk: no
    # young-generation collections while it is signed (`batch_gc`, issue 15).
    with batch_gc():
        for number, text, stamp in jobs:
            spec = parse_line(number, text)
            if isinstance(spec, tuple):
                out.append(spec)
                continue
            try:
                gene = Gene.create(key, domain=spec.domain, name=spec.name, codons=spec.codons,
                                   action=spec.action, params=spec.params,
                                   purpose=spec.purpose, hlc=stamp, gene_id=spec.gene_id)
            except ValidationError as exc:
                out.append((number, str(exc)))
                continue
            out.append(SignedLine(number, gene.id, gene.domain, gene.origin, gene.wire_bytes,
                                  gene.version_hash, bool(spec.synapses)))
    return out


def run(inp: IO[bytes], out: IO[bytes]) -> int:
    """Read the seed, then sign chunks until end of input; the chunks answered."""
    first = read_frame(inp)
    if first is None:
        return 0
    key = NodeKey.from_seed(msgpack.unpackb(first))
    return serve(inp, out, lambda jobs: sign_lines(key, [tuple(j) for j in jobs]))


if __name__ == "__main__":
    run(sys.stdin.buffer, sys.stdout.buffer)
