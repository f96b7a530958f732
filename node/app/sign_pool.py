"""Import lines parsed, checked and signed in worker processes, ahead of the writer.

Why processes: building a gene is ~90 µs of CPU per line on this machine, of which the
Ed25519 signature is about half; the other half (JSON, `spec_from_mapping`, the domain
pack check, `Gene.__post_init__`, the canonical encoding) is Python that holds the GIL.
Threads therefore could not overlap it: two threads signed at 0.79× the rate of one
(bench/RESULTS.md), the second thread adding only GIL hand-offs. A process per core runs
all of it in parallel, and ships back only bytes.

What goes out is the raw line (JSON text; a CSV row is turned into the same text by the
reader); what comes back per line is a rejection or a `SignedLine`: the gene's id and the
exact bytes to store (`wire_bytes`, version hash), signed *as a new gene* (version 1).
The writer decides whether the gene is new (then it stores these bytes as they are) or
already known (then it builds the edit itself, as before): the workers never read the
Cortex, so signing batch n+1 while batch n is written cannot see a stale store.

The key's seed goes to the workers once, at start, over the pool's pipe to processes
this one started; it is never written anywhere.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import NamedTuple

from gd.genome.errors import ValidationError
from gd.genome.gene import Gene, GeneStatus
from gd.genome.identity import NodeKey

# Lines per task: big enough that the pipe round trip (~100 µs) is small beside the work
# (~90 µs a line), small enough that the writer is not left waiting at the start.
CHUNK_LINES = 250
# Tasks in flight per worker: one being signed, one queued, so no worker idles while the
# writer collects; bounded so a huge file is never all in memory at once.
AHEAD_PER_WORKER = 2
# How often a worker checks that the importing process still lives.
PARENT_CHECK_S = 0.2


class SignedLine(NamedTuple):
    """A line signed as a new gene: what the Cortex stores for it, nothing to re-encode.
    A named tuple: it crosses the pipe for every line, and unpickles ~4x faster than a
    frozen dataclass (0.6 against 2.4 µs)."""

    line: int
    id: str
    domain: str
    origin: str
    wire_bytes: bytes
    version_hash: bytes
    has_synapses: bool


class StoredVersion(NamedTuple):
    """A signed gene version plus this node's local view, as the Cortex writes it
    (`gd.node.store.cortex_genes.GeneVersion`), without a `Gene` object; one per
    imported line, so as cheap to build as a tuple."""

    id: str
    version: int
    domain: str
    origin: str
    wire_bytes: bytes
    version_hash: bytes
    status: GeneStatus = GeneStatus.NATIVE
    successes: int = 0
    failures: int = 0


LineResult = SignedLine | tuple[int, str]
# (line number, JSON text of the line, HLC stamp the writer assigned to it)
LineJob = tuple[int, bytes, int]

_KEY: NodeKey | None = None


def _start_worker(seed: bytes, parent: int) -> None:
    global _KEY
    _KEY = NodeKey.from_seed(seed)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True,
                     name="gd-sign-parent-watch").start()


def _exit_with_parent(parent: int) -> None:
    """End this worker once the importing process is gone (SIGKILL, crash): an idle
    worker blocks on its task pipe and would otherwise outlive it, holding the key."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(1)


def sign_lines(jobs: list[LineJob]) -> list[LineResult]:
    """Parse, check and sign each line as a new gene (runs in a worker process)."""
    from gd.node.app.import_lines import parse_line  # the worker imports it once

    key = _KEY
    if key is None:
        raise RuntimeError("sign_lines runs in a SignPool worker")
    out: list[LineResult] = []
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


class SignPool:
    """`workers` processes signing import lines in order, a bounded window ahead."""

    def __init__(self, key: NodeKey, workers: int) -> None:
        if workers < 1:
            raise ValueError("a SignPool needs at least one worker")
        self.workers = workers
        # spawn, not fork: the daemon that imports has threads (trio, LMDB writers), and
        # a forked child of a threaded process may inherit a held lock.
        self._pool = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker, initargs=(key.seed, os.getpid()))

    def results(self, jobs: Iterable[LineJob]) -> Iterator[LineResult]:
        """Each job's result, in job order; at most `workers * AHEAD_PER_WORKER` chunks
        are read ahead of what the caller has taken."""
        window: deque[Future[list[LineResult]]] = deque()
        limit = self.workers * AHEAD_PER_WORKER
        chunk: list[LineJob] = []
        for job in jobs:
            chunk.append(job)
            if len(chunk) >= CHUNK_LINES:
                window.append(self._pool.submit(sign_lines, chunk))
                chunk = []
                if len(window) >= limit:
                    yield from window.popleft().result()
        if chunk:
            window.append(self._pool.submit(sign_lines, chunk))
        while window:
            yield from window.popleft().result()

    def close(self) -> None:
        """Stop the workers (queued chunks are dropped) and reap them."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> SignPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
