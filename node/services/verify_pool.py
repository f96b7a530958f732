"""Received genes checked across cores (issue 15, apply path).

Every gene a peer sends is decoded, validated, signature-checked and id-checked
(`gd.protocol.sync.verify_wire`) before anything looks at it. Ed25519 verification is
the largest single cost of a cold sync and pynacl releases the GIL while it runs, so a
batch is split into one contiguous chunk per core and the chunks are checked on a
thread pool. The checks are exactly the core's (the same function runs); only where
it runs changes. The receiver's own `accept` policy still runs afterwards, in order,
in the caller's thread (`verify_genes`): it keeps per-batch audit state that is not
meant to be shared between threads.

The pool is created on first use and closed with the sync service, so a daemon that
never receives a batch starts no threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from gd.genome.gene import Gene
from gd.protocol.sync import verify_wire

# Below this many genes per worker, handing chunks to threads costs more than it saves.
MIN_CHUNK: Final = 16


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class VerifyPool:
    """A `WireChecker` (`gd.protocol.sync`) that checks a batch's chunks in parallel."""

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers or default_workers()
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _pool(self) -> ThreadPoolExecutor | None:
        """The executor, started on first use; None once closed (checks run inline)."""
        with self._lock:
            if self._closed:
                return None
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers,
                                                    thread_name_prefix="gd-verify")
            return self._executor

    def __call__(self, wires: Sequence[dict[str, Any]]) -> list[tuple[Gene | None, str]]:
        """`verify_wire` of every wire gene, in order."""
        n = len(wires)
        chunks = min(self.workers, n // MIN_CHUNK)
        pool = self._pool() if chunks > 1 else None
        if pool is None:
            return _check_chunk(wires)
        size = -(-n // chunks)
        parts = [wires[i:i + size] for i in range(0, n, size)]
        out: list[tuple[Gene | None, str]] = []
        for part in pool.map(_check_chunk, parts):
            out += part
        return out

    def close(self) -> None:
        """Wait for running checks and stop the threads (idempotent); later calls check
        inline."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


def _check_chunk(wires: Sequence[dict[str, Any]]) -> list[tuple[Gene | None, str]]:
    return [verify_wire(w) for w in wires]
