"""Received genes checked in worker processes (issue 15, apply path; ADR 0034).

The thread pool (`gd.node.services.verify_pool`) overlaps only the Ed25519 call: the
rest of `verify_wire` (building and validating a `Gene`, re-encoding its body to check
the canonical form) is Python that holds the GIL, ~2/3 of a received gene's cost. Here
the whole `verify_wire` runs in spawned processes, which send back one short verdict
per gene, never a gene: "" (valid, and the bytes we sent are exactly its canonical
encoding), the reason it is refused, or None (valid but not canonical bytes, or not
checkable there). The caller then rebuilds each valid gene with `Gene.from_stored` from
the same bytes (~8x cheaper than `from_wire`, no second validation): safe because a
worker ran every check `verify_wire` runs on exactly those bytes, and found that the
validated gene encodes to them byte for byte. A None is checked again inline with
`verify_wire`, so the verdicts are the core's, gene for gene, in the same order.

Batches under `MIN_BATCH` genes are checked inline (a pipe round trip and the start of
the processes would cost more). The processes start on the first big batch; they exit
with their parent (a SIGKILLed daemon leaves none behind) and are reaped by `close`.
A pool whose worker died is dropped: that batch is checked inline, the next starts a
new pool.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Final

import msgpack

from gd.genome import canonical
from gd.genome.errors import DecodeError
from gd.genome.gene import Gene
from gd.node.services.verify_pool import default_workers
from gd.protocol.sync import verify_wire

# Below this many genes a batch is checked inline: the pipe round trip (~0.2 ms) and
# the pickling are then a large part of the work.
MIN_BATCH: Final = 64
# How often a worker checks that the process it verifies for still lives.
PARENT_CHECK_S: Final = 0.5

Verdict = tuple[Gene | None, str]


def _start_worker(parent: int) -> None:
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True,
                     name="gd-verify-parent-watch").start()


def _exit_with_parent(parent: int) -> None:
    """End this worker once its parent is gone: an idle worker blocks on its task pipe
    and would otherwise outlive a SIGKILLed daemon."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(1)


def check_raw(raws: Sequence[bytes]) -> list[str | None]:
    """Per encoded wire gene: "" when `verify_wire` accepts it and the gene encodes to
    exactly these bytes, its reason when refused, None when the caller must check it
    itself (valid but not canonical bytes, or bytes this decoder does not take).
    Runs in a worker process."""
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


class ProcessVerifyPool:
    """A `WireChecker` (`gd.protocol.sync`) that runs `verify_wire` in processes."""

    def __init__(self, workers: int | None = None, *, min_batch: int = MIN_BATCH) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if min_batch < 1:
            raise ValueError(f"min_batch must be at least 1, got {min_batch}")
        self.workers = workers or default_workers()
        self.min_batch = min_batch
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _pool(self) -> ProcessPoolExecutor | None:
        """The executor, started on first use; None once closed (checks run inline)."""
        with self._lock:
            if self._closed:
                return None
            if self._executor is None:
                # spawn, not fork: the daemon has threads (trio, LMDB writers), and a
                # forked child of a threaded process may inherit a held lock.
                self._executor = ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_worker, initargs=(os.getpid(),))
            return self._executor

    def __call__(self, wires: Sequence[dict[str, Any]]) -> list[Verdict]:
        """`verify_wire` of every wire gene, in order."""
        n = len(wires)
        pool = self._pool() if n >= self.min_batch else None
        if pool is None:
            return [verify_wire(w) for w in wires]
        raws: list[bytes | None] = []
        for wire in wires:
            try:
                raws.append(canonical.encode_plain(wire))
            except (TypeError, ValueError, OverflowError):  # not msgpack: checked inline
                raws.append(None)
        sent = [r for r in raws if r is not None]
        size = -(-len(sent) // self.workers) or 1
        try:
            futures = [pool.submit(check_raw, sent[i:i + size])
                       for i in range(0, len(sent), size)]
            verdicts = [v for f in futures for v in f.result()]
        except (BrokenProcessPool, RuntimeError):  # a worker died, or closed meanwhile
            self._drop(pool)
            return [verify_wire(w) for w in wires]
        out: list[Verdict] = []
        it = iter(verdicts)
        for wire, raw in zip(wires, raws, strict=True):
            verdict = None if raw is None else next(it)
            if verdict is None:
                out.append(verify_wire(wire))
            elif verdict:
                out.append((None, verdict))
            else:
                out.append(_rebuilt(wire, raw))
        return out

    def _drop(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is pool:
                self._executor = None
        pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """Stop and reap the workers (idempotent); later calls check inline."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


def _rebuilt(wire: dict[str, Any], raw: bytes | None) -> Verdict:
    """The gene a worker accepted, from the bytes it checked (no second validation)."""
    try:
        return Gene.from_stored(wire, raw=raw), ""
    except DecodeError:  # cannot happen for bytes a worker accepted; check it here
        return verify_wire(wire)
