"""Received genes checked in worker processes (issue 15, apply path; ADR 0038).

The thread pool (`gd.node.services.verify_pool`) overlaps only the Ed25519 call: the
rest of `verify_wire` (building and validating a `Gene`, re-encoding its body to check
the canonical form) is Python that holds the GIL, ~2/3 of a received gene's cost. Here
the whole `verify_wire` runs in worker processes (`gd.node.services.verify_worker`),
which send back one short verdict per gene, never a gene: "" (valid, and the bytes we
sent are exactly its canonical encoding), the reason it is refused, or None (valid but
not canonical bytes, or not checkable there). The caller then rebuilds each valid gene
with `Gene.from_stored` from the same bytes (~8x cheaper than `from_wire`, no second
validation): safe because a worker ran every check `verify_wire` runs on exactly those
bytes, and found that the validated gene encodes to them byte for byte. A None is
checked again inline with `verify_wire`, so the verdicts are the core's, gene for gene,
in the same order.

Batches under `MIN_BATCH` genes are checked inline (a pipe round trip and the start of
the processes would cost more). The workers start on the first big batch; they exit
with their parent (their input pipe closes) and are reaped by `close`. If a worker dies
or answers nonsense, that batch is checked inline and the next starts new workers;
after `MAX_FAILURES` such batches in a row, every batch is checked inline.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Final

from gd.genome import canonical
from gd.genome.errors import DecodeError
from gd.genome.gene import Gene
from gd.node.services.verify_pool import default_workers
from gd.node.services.verify_worker import check_raw
from gd.node.services.worker_procs import WorkerFailed, WorkerProcess
from gd.protocol.sync import verify_wire

__all__ = ["MIN_BATCH", "ProcessVerifyPool", "check_raw"]

# Below this many genes a batch is checked inline: the pipe round trip (~0.2 ms) and
# the encoding are then a large part of the work.
MIN_BATCH: Final = 64
# After this many failed batches in a row the workers are not started again (a worker
# that cannot start would otherwise cost a process start per batch): inline for good.
MAX_FAILURES: Final = 3
# What a worker runs, after the interpreter.
WORKER_ARGS: tuple[str, ...] = ("-m", "gd.node.services.verify_worker")

Verdict = tuple[Gene | None, str]


class _Worker(WorkerProcess):
    """One `verify_worker` subprocess: a request is a list of encoded wire genes, the
    reply one verdict per gene."""

    def __init__(self) -> None:
        super().__init__(WORKER_ARGS)

    def receive_verdicts(self, n: int) -> list[str | None]:
        out = self.receive()
        if not isinstance(out, list) or len(out) != n or not all(
                v is None or isinstance(v, str) for v in out):
            raise WorkerFailed(f"verify worker {self.pid}: not {n} verdicts")
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
        self._procs: list[_Worker] = []
        # One batch at a time goes through the workers (sync and repair may both call).
        self._lock = threading.Lock()
        self._closed = False
        self.failures = 0  # failed batches in a row

    @property
    def pids(self) -> list[int]:
        """The running workers' process ids (none before the first big batch)."""
        return [w.proc.pid for w in self._procs]

    def __call__(self, wires: Sequence[dict[str, Any]]) -> list[Verdict]:
        """`verify_wire` of every wire gene, in order."""
        if len(wires) < self.min_batch or self._closed or self.failures >= MAX_FAILURES:
            return [verify_wire(w) for w in wires]
        raws: list[bytes | None] = []
        for wire in wires:
            try:
                raws.append(canonical.encode_plain(wire))
            except (TypeError, ValueError, OverflowError):  # not msgpack: checked inline
                raws.append(None)
        sent = [r for r in raws if r is not None]
        with self._lock:
            if self._closed:
                return [verify_wire(w) for w in wires]
            try:
                verdicts = self._run(sent)
                self.failures = 0
            except WorkerFailed:
                self._stop_all()
                self.failures += 1
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

    def _run(self, sent: list[bytes]) -> list[str | None]:
        """The workers' verdicts for `sent`, one contiguous chunk per worker (under the
        lock)."""
        if not self._procs:
            started: list[_Worker] = []
            try:
                for _ in range(self.workers):
                    started.append(_Worker())
            except WorkerFailed:
                for worker in started:
                    worker.stop()
                raise
            self._procs = started
        size = -(-len(sent) // len(self._procs)) or 1
        parts = [sent[i:i + size] for i in range(0, len(sent), size)]
        for worker, part in zip(self._procs, parts, strict=False):
            worker.send(part)
        return [v for worker, part in zip(self._procs, parts, strict=False)
                for v in worker.receive_verdicts(len(part))]

    def _stop_all(self) -> None:
        procs, self._procs = self._procs, []
        for worker in procs:
            worker.stop()

    def close(self) -> None:
        """Stop and reap the workers (idempotent); later calls check inline."""
        self._closed = True
        with self._lock:
            self._stop_all()


def _rebuilt(wire: dict[str, Any], raw: bytes | None) -> Verdict:
    """The gene a worker accepted, from the bytes it checked (no second validation)."""
    try:
        return Gene.from_stored(wire, raw=raw), ""
    except DecodeError:  # cannot happen for bytes a worker accepted; check it here
        return verify_wire(wire)
