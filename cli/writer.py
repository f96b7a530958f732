"""One writer per node: how a CLI command that changes the node gets it done.

When a daemon runs on the home, the command goes over its control socket and the daemon
writes (and tells its services at once); the CLI never opens the Cortex for writing
beside it. When none runs, the command opens the Cortex itself under the home's lock
(the daemon's pid lock, so no daemon starts mid-write). Both run the same function
(`gd.node.control_methods.ops`), so results print the same. A daemon that holds the
lock but does not answer is an error, never a reason to write anyway (ADR 0022).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

from gd.crdt.clock import Clock
from gd.node.app.adaptation import AdaptationDesk
from gd.node.clock import SYSTEM_CLOCK
from gd.node.control import (
    MAX_UPLOAD_CHUNK,
    ControlError,
    DaemonNotRunning,
    call,
    daemon_listening,
)
from gd.node.control_methods.admin_ops import SERVICE_OPS, WRITE_OPS
from gd.node.control_methods.ops import STREAMING, Sovereignty
from gd.node.home import Home
from gd.node.local import LocalNode, load_identity, open_local
from gd.node.lock import AlreadyRunning, PidLock, holder_pid
from gd.node.services.recorder import LedgerRecorder
from gd.node.store.audit import AuditLog
from gd.node.store.policy_store import PolicyStore

# A write waits this long for the daemon between progress frames: an import reports
# after every batch, a share or approve answers in well under a second.
WRITE_TIMEOUT_S: Final = 300.0
# The lock may be held by a daemon still starting (its socket comes up a moment later)
# or by another command writing: look again this often, for this long, then give up.
LOCK_RETRY_S: Final = 0.25
LOCK_WAIT_S: Final = 10.0

Progress = Callable[[int], None]
T = TypeVar("T")


class DaemonUnreachable(ControlError):
    """A daemon holds the home but its control socket does not answer."""


class LocalWriteContext:
    """A write in the CLI process (no daemon): fresh stores over the open Cortex."""

    def __init__(self, node: LocalNode) -> None:
        self.node = node
        self.clock: Clock = SYSTEM_CLOCK  # no daemon: this process's own clock
        self._sovereignty: Sovereignty | None = None

    def sovereignty(self) -> Sovereignty:
        if self._sovereignty is None:
            audit = AuditLog(self.node.cortex)
            store = PolicyStore(self.node.cortex, self.node.key, org=self.node.config.org,
                                region=self.node.config.region, audit=audit)
            ledger = LedgerRecorder(self.node.cortex.env, self.node.key)
            desk = AdaptationDesk(self.node.cortex, self.node.key, ledger, audit)
            self._sovereignty = Sovereignty(audit, store, ledger, desk)
        return self._sovereignty


class Writer:
    """The node's writer for one command: the daemon (`via_daemon`) or this process."""

    def __init__(self, home: Home, node: LocalNode | None) -> None:
        self.home = home
        self.node = node
        self.via_daemon = node is None

    def run(self, method: str, *, progress: Progress | None = None, **params: Any) -> Any:
        """Run write operation `method` and return its plain result."""
        if self.node is not None:
            if method in STREAMING:
                params["progress"] = progress
            op = WRITE_OPS.get(method) or SERVICE_OPS[method]
            return op.run(LocalWriteContext(self.node), **params)
        return self._remote(method, progress, params)

    def _remote(self, method: str, progress: Progress | None, params: dict[str, Any]) -> Any:
        def on_progress(value: Any) -> None:
            if progress is not None and isinstance(value, int):
                progress(value)

        try:
            return call(self.home, method, timeout=WRITE_TIMEOUT_S, on_progress=on_progress,
                        **params)
        except DaemonNotRunning:
            raise DaemonUnreachable(
                f"the daemon on {self.home.root} went away during {method!r}; nothing was "
                "written by this command (run it again)") from None

    def upload(self, path: Path, progress: Progress | None = None) -> str:
        """Stream a file to the daemon in chunks; the upload id for the write that uses
        it. `progress(bytes_sent)` after each chunk."""
        upload = self._remote("upload_open", None, {"suffix": path.suffix.lower() or ".jsonl"})
        sent = 0
        with path.open("rb") as handle:
            while chunk := handle.read(MAX_UPLOAD_CHUNK):
                sent = self._remote("upload_chunk", None, {"upload": upload, "data": chunk})
                if progress is not None:
                    progress(sent)
        return str(upload)


@contextlib.contextmanager
def node_writer(home: Home, *, wait_s: float | None = None) -> Iterator[Writer]:
    """The writer for a command on `home`: the running daemon, or the Cortex opened here
    under the home's lock. Raises DaemonUnreachable when something holds the lock and
    no daemon answers within `wait_s` (a wedged daemon, or another command writing)."""
    deadline = time.monotonic() + (LOCK_WAIT_S if wait_s is None else wait_s)
    while True:
        if daemon_listening(home):  # the daemon knows its own identity
            yield Writer(home, None)
            return
        load_identity(home)  # a missing or half-made home says so before any lock
        lock = PidLock(home.pid_path)
        try:
            lock.acquire()
        except AlreadyRunning:
            if time.monotonic() >= deadline:
                raise DaemonUnreachable(
                    f"process {holder_pid(home.pid_path) or '?'} holds {home.root} (a daemon "
                    f"or another command) but no daemon answers on {home.control_socket}; "
                    "nothing was written (a second writer beside it is refused)") from None
            time.sleep(LOCK_RETRY_S)
            continue
        try:
            with open_local(home) as node:
                yield Writer(home, node)
        finally:
            lock.release()
        return


def write(home: Path | None, method: str, **params: Any) -> Any:
    """Write operation `method` through the node's writer (`node_writer`: the daemon, or
    this process under the home's lock) and its plain result: what most commands that
    change the node do, in one call."""
    with node_writer(Home.resolve(home)) as writer:
        return writer.run(method, **params)


def read(home: Path | None, query: Callable[..., T], *args: Any) -> T:
    """`query(node, *args)` over the home's Cortex opened read-only here: reads need no
    writer (LMDB readers run beside a daemon), so they never go through the daemon."""
    with open_local(Home.resolve(home), readonly=True) as node:
        return query(node, *args)
