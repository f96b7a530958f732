"""The signing worker of `bench/cortex.py` ("sign + ingest end to end"), and the genes
it signs: `python bench/cortex_signer.py`, a plain subprocess speaking length-prefixed
msgpack on stdin/stdout (`gd.node.services.worker_procs`), as `genes import`'s signing
workers do (`gd.node.app.sign_worker`, ADR 0041). A multiprocessing `spawn` worker
re-imported the benchmark (lmdb, the Cortex, the importer) before signing a gene; this
one imports only the genome.

Request: [lo, hi, n]; reply: genes lo..hi-1 of the benchmark's n, signed, each as the
fields `gd.node.app.sign_pool.StoredVersion` takes (id, version, domain, origin, wire
bytes, version hash).
"""

from __future__ import annotations

import functools
import random
import sys
from typing import Any

from gd.genome import Codon, Gene, NodeKey
from gd.node.gc_tuning import batch_gc
from gd.node.services.worker_procs import serve

KEY_SEED = bytes(32)
DOMAINS = ("turbofan", "loan", "supply", "energy")

GeneArgs = list[tuple[int, str, float, str, float]]


def gene_args(n: int) -> GeneArgs:
    """The benchmark's n genes' varying parts (seeded: every process builds the same)."""
    rng = random.Random(7)
    return [(i, f"s{rng.randint(1, 21)}", rng.uniform(0, 100), f"s{rng.randint(1, 21)}",
             rng.uniform(0, 100)) for i in range(n)]


def build(key: NodeKey, args: GeneArgs) -> list[Gene]:
    """The genes, signed, with the bytes and hash the Cortex stores already computed (a
    signer hands those over: `gd.node.app.sign_pool`)."""
    genes = [Gene.create(key, domain=DOMAINS[i % len(DOMAINS)], name=f"rule-{i}",
                         codons=[Codon.simple(f1, ">", t1), Codon.simple(f2, "<=", t2)],
                         action="inspect", purpose="benchmark rule", hlc=i << 16)
             for i, f1, t1, f2, t2 in args]
    for g in genes:
        g.wire_bytes, g.version_hash  # noqa: B018 - cached on the gene
    return genes


@functools.cache
def _inputs(n: int) -> tuple[NodeKey, GeneArgs]:
    return NodeKey.from_seed(KEY_SEED), gene_args(n)  # once per worker process


def sign_range(request: Any) -> list[tuple[str, int, str, str, bytes, bytes]]:
    """Genes lo..hi-1 of n built and signed, as bytes and the fields stored beside."""
    lo, hi, n = request
    key, args = _inputs(n)
    with batch_gc():  # as `gd.node.app.sign_worker.sign_lines` signs a chunk
        return [(g.id, g.version, g.domain, g.origin, g.wire_bytes, g.version_hash)
                for g in build(key, args[lo:hi])]


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer, sign_range)
