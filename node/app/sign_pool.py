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

The workers are plain subprocesses (`gd.node.app.sign_worker`, speaking msgpack frames
over stdin/stdout like the sync verifier's, ADR 0038), not multiprocessing `spawn`
children, which re-imported the parent's main module (`gd.cli.main`: 1.66 s of CPU per
worker) before signing a line (ADR 0041). The key's seed goes to each worker once, as
its first frame, over the pipe to a process this one started; it is never written
anywhere. A worker that dies, hangs or answers nonsense loses nothing: its chunks, and
every chunk after them, are signed here instead with the same key and stamps, so the
same bytes are stored (tested by killing a worker mid-import).
"""

from __future__ import annotations

import queue
import subprocess
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from gd.genome.gene import GeneStatus
from gd.genome.identity import NodeKey
from gd.node.app.sign_worker import LineJob, LineResult, SignedLine, sign_lines
from gd.node.services.worker_procs import STOP_WAIT_S, WorkerFailed, WorkerProcess

__all__ = ["LineJob", "LineResult", "SignPool", "SignedLine", "StoredVersion", "sign_lines"]

# Lines per task: big enough that the pipe round trip (~100 µs) is small beside the work
# (~90 µs a line), small enough that the writer is not left waiting at the start.
CHUNK_LINES = 250
# Tasks in flight per worker: one being signed, one queued, so no worker idles while the
# writer collects; bounded so a huge file is never all in memory at once.
AHEAD_PER_WORKER = 2
# How long the writer waits for one chunk before it takes the worker for hung (a chunk
# is ~25 ms of work; this is generous for a machine loaded many times over).
CHUNK_WAIT_S = 120.0
# What a worker runs, after the interpreter.
WORKER_ARGS: tuple[str, ...] = ("-m", "gd.node.app.sign_worker")


class StoredVersion(NamedTuple):
    """A signed gene version plus this node's local view, as the Cortex writes it
    (`gd.node.store.gene_records.GeneVersion`), without a `Gene` object; one per
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


def _as_results(reply: Any, chunk: list[LineJob]) -> list[LineResult]:
    """A worker's reply to `chunk` as results; `WorkerFailed` unless it is one result
    per line, in order, each shaped as `sign_lines` makes it."""
    if not isinstance(reply, list) or len(reply) != len(chunk):
        raise WorkerFailed(f"not {len(chunk)} results")
    out: list[LineResult] = []
    for (number, _, _), item in zip(chunk, reply, strict=True):
        if not isinstance(item, list) or not item or item[0] != number:
            raise WorkerFailed(f"no result for line {number}")
        if len(item) == len(SignedLine._fields):
            out.append(SignedLine(*item))
        elif len(item) == 2 and isinstance(item[1], str):
            out.append((number, item[1]))
        else:
            raise WorkerFailed(f"a malformed result for line {number}")
    return out


class _Signer:
    """One worker process and the thread that reads its replies (so the writer never
    blocks writing a chunk to a worker that is itself blocked writing a reply)."""

    def __init__(self, seed: bytes) -> None:
        self.proc = WorkerProcess(WORKER_ARGS)
        self.replies: queue.Queue[Any] = queue.Queue()
        self.queued = 0  # chunks sent, not yet taken
        try:
            self.proc.send(seed)
        except WorkerFailed:
            self.proc.stop()  # reaped before the pool hears of it
            raise
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"gd-sign-reader-{self.proc.pid}")
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                reply = self.proc.receive()
            except WorkerFailed as exc:
                self.replies.put(exc)
                return
            self.replies.put(reply)

    def take(self, chunk: list[LineJob]) -> list[LineResult]:
        try:
            reply = self.replies.get(timeout=CHUNK_WAIT_S)
        except queue.Empty:
            raise WorkerFailed(f"sign worker {self.proc.pid} gave no answer in "
                               f"{CHUNK_WAIT_S:.0f} s") from None
        if isinstance(reply, WorkerFailed):
            raise reply
        return _as_results(reply, chunk)

    def stop(self, *, kill: bool = False) -> None:
        """End of input (or SIGKILL), reap the worker, then its reader."""
        proc = self.proc.proc
        if kill and proc.poll() is None:
            proc.kill()
        self.proc.end_input()
        try:
            proc.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._reader.join(timeout=STOP_WAIT_S)  # the worker is gone: its output ends
        self.proc.stop()  # closes the output pipe; the process is already reaped


class SignPool:
    """`workers` processes signing import lines in order, a bounded window ahead."""

    def __init__(self, key: NodeKey, workers: int) -> None:
        if workers < 1:
            raise ValueError("a SignPool needs at least one worker")
        self.workers = workers
        self._key = key
        self._signers: list[_Signer] = []
        self.lost = False  # a worker failed: the rest is signed in this process
        try:
            for _ in range(workers):
                self._signers.append(_Signer(key.seed))
        except WorkerFailed:
            self._give_up()

    @property
    def pids(self) -> list[int]:
        """The running workers' process ids (empty once they are given up)."""
        return [s.proc.pid for s in self._signers]

    def _give_up(self) -> None:
        self.lost = True
        signers, self._signers = self._signers, []
        for signer in signers:
            signer.stop(kill=True)

    def results(self, jobs: Iterable[LineJob]) -> Iterator[LineResult]:
        """Each job's result, in job order; at most `workers * AHEAD_PER_WORKER` chunks
        are read ahead of what the caller has taken."""
        window: deque[tuple[_Signer | None, list[LineJob]]] = deque()
        limit = self.workers * AHEAD_PER_WORKER
        turn = 0

        def submit(chunk: list[LineJob]) -> None:
            nonlocal turn
            signer = None
            if self._signers:  # the worker with the fewest chunks still to sign (in
                # turn on a tie): one that the machine's load slows is given fewer
                n = len(self._signers)
                signer = min((self._signers[(turn + i) % n] for i in range(n)),
                             key=lambda s: s.queued - s.replies.qsize())
                turn += 1
            if signer is not None:
                signer.queued += 1
                try:
                    signer.proc.send(chunk)
                except WorkerFailed:
                    self._give_up()
                    signer = None
            window.append((signer, chunk))

        def take() -> list[LineResult]:
            signer, chunk = window.popleft()
            if signer is not None:
                signer.queued -= 1
            if signer is not None and not self.lost:
                try:
                    return signer.take(chunk)
                except WorkerFailed:
                    self._give_up()
            return sign_lines(self._key, chunk)

        chunk: list[LineJob] = []
        for job in jobs:
            chunk.append(job)
            if len(chunk) >= CHUNK_LINES:
                submit(chunk)
                chunk = []
                if len(window) >= limit:
                    yield from take()
        if chunk:
            submit(chunk)
        while window:
            yield from take()

    def close(self) -> None:
        """Stop the workers (chunks in flight are dropped) and reap them."""
        signers, self._signers = self._signers, []
        for signer in signers:
            signer.stop()

    def __enter__(self) -> SignPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
