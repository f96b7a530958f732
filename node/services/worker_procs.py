"""Plain worker subprocesses speaking length-prefixed msgpack on stdin/stdout (ADR 0038).

Shared by the sync verifier (`verify_procs` / `verify_worker`) and the import signer
(`gd.node.app.sign_pool` / `gd.node.app.sign_worker`). Why not multiprocessing: a
`spawn` child first re-imports its parent's main module (`gd.cli.main` under `gd-node`,
or a benchmark with trio and libp2p), measured at 1.6-1.9 s of CPU per worker; a worker
started as `python -m <module>` imports only what it needs. A worker ends at end of
input, so it dies with its parent (the pipe closes with the parent) and `stop` reaps it.

A worker runs `WORKER_NICENESS` below its parent's priority (ADR 0052). Workers feed one
writer (the importer's LMDB transactions, the sync receiver's apply), and that writer is
the critical path: on two cores, two workers and the writer are three runnable processes,
and the scheduler preempted the writer a third of the time. Below it, a worker takes
whatever the writer leaves, chiefly while the writer waits for its commit's msync;
sign + ingest went from ~14.0k to ~15.6k genes/s (median of runs, 100k genes).

Each frame is a 4-byte big-endian length and a msgpack body. This module imports only
the standard library and msgpack, so a worker stays cheap to start.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from typing import IO, Any, Final

import msgpack

FRAME: Final = struct.Struct(">I")
# How long `stop` waits for a worker to exit at end of input before killing it.
STOP_WAIT_S: Final = 5.0
# How far below its parent's priority a worker runs (nice levels; capped at 19).
WORKER_NICENESS: Final = 10
# Pipe buffer asked for each way (Linux's default ceiling for unprivileged processes).
PIPE_BYTES: Final = 1 << 20


class WorkerFailed(Exception):
    """A worker died, could not start, or answered something that is not a reply."""


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


def serve(inp: IO[bytes], out: IO[bytes], handle: Callable[[Any], Any]) -> int:
    """The worker's side: answer each request with `handle(request)` until end of input;
    the number answered."""
    answered = 0
    while (body := read_frame(inp)) is not None:
        request = msgpack.unpackb(body, raw=False)
        write_frame(out, msgpack.packb(handle(request), use_bin_type=True))
        answered += 1
    return answered


def _widen(pipe: IO[bytes] | None) -> None:
    """Give a pipe `PIPE_BYTES` of buffer where the system allows it (Linux): a request
    of a few hundred lines (~60 KiB) then fits whole, so the caller queueing one for a
    busy worker does not block on the default 64 KiB."""
    setsz = getattr(fcntl, "F_SETPIPE_SZ", None)
    if pipe is None or setsz is None:
        return
    with contextlib.suppress(OSError):
        fcntl.fcntl(pipe.fileno(), setsz, PIPE_BYTES)


def _lower_priority(pid: int) -> None:
    """Run worker `pid` `WORKER_NICENESS` levels below this process, where the system
    allows it (POSIX). Set from here, not in the worker, so that every worker gets it,
    whatever module it runs; a worker already running a few microseconds at the
    parent's priority changes nothing. A refusal leaves the worker as it is: slower
    writes, same results."""
    getp = getattr(os, "getpriority", None)
    setp = getattr(os, "setpriority", None)
    if getp is None or setp is None:
        return
    with contextlib.suppress(OSError):
        setp(os.PRIO_PROCESS, pid, min(19, getp(os.PRIO_PROCESS, 0) + WORKER_NICENESS))


class WorkerProcess:
    """One worker subprocess (`python <args>`) and its two pipes; the caller's side."""

    def __init__(self, args: tuple[str, ...]) -> None:
        """Start it; `WorkerFailed` if the interpreter cannot be started."""
        try:
            self.proc = subprocess.Popen(
                [sys.executable, *args],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        except OSError as exc:
            raise WorkerFailed(f"cannot start a worker process: {exc}") from None
        for pipe in (self.proc.stdin, self.proc.stdout):
            _widen(pipe)
        _lower_priority(self.proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, value: Any) -> None:
        """One request; `WorkerFailed` if the worker is gone."""
        assert self.proc.stdin is not None
        try:
            write_frame(self.proc.stdin, msgpack.packb(value, use_bin_type=True))
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise WorkerFailed(f"worker {self.proc.pid}: {exc}") from None

    def receive(self) -> Any:
        """The next reply, decoded; `WorkerFailed` at end of output or on garbage."""
        assert self.proc.stdout is not None
        try:
            body = read_frame(self.proc.stdout)
        except (OSError, ValueError) as exc:
            raise WorkerFailed(f"worker {self.proc.pid}: {exc}") from None
        if body is None:
            raise WorkerFailed(f"worker {self.proc.pid} ended")
        try:
            return msgpack.unpackb(body, raw=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError,
                msgpack.StackError) as exc:
            raise WorkerFailed(f"worker {self.proc.pid}: {exc}") from None

    def end_input(self) -> None:
        """Close the worker's input: it finishes what it holds and exits."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def stop(self) -> None:
        """End of input, then reap (killed if it does not exit in time)."""
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        try:
            self.proc.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
