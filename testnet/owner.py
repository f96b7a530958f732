"""One `testnet up` at a time: the invocation that starts a testnet owns it.

`testnet up` holds an flock on `DIR/testnet.lock` while it starts the nodes and, with
`--dashboard`, for as long as it shows the dashboard: its Ctrl-C stops the testnet. A
second `up` on the same directory (a second `make run` in another terminal) finds the
lock held and refuses, naming the owner, before it starts or stops anything — never two
invocations that each believe Ctrl-C is theirs to stop the same nodes with (issue 13).
The kernel drops the lock when its holder dies, even on SIGKILL, so a crashed owner never
blocks the next `up`; the nodes it left running are attached to and owned from then on.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from gd.node.lock import AlreadyRunning, PidLock, holder_pid
from gd.testnet.plan import TestnetError

OWNER_FILE = "testnet.lock"


class TestnetBusy(TestnetError):
    """Another live `gd-node testnet up` owns this testnet directory."""

    __test__ = False


def owner_pid(directory: Path) -> int | None:
    """The pid of the `testnet up` owning `directory`, or None when nobody does."""
    pid = holder_pid(directory / OWNER_FILE)
    return pid if pid is None or pid > 0 else None


class TestnetOwner:
    """The owner lock of one testnet directory (a context manager)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = PidLock(directory / OWNER_FILE)

    def acquire(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except AlreadyRunning:
            raise TestnetBusy(busy_message(self.directory)) from None

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> TestnetOwner:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def busy_message(directory: Path) -> str:
    """What a second `up` says: who runs the testnet and what the user can do instead."""
    pid = holder_pid(directory / OWNER_FILE)
    since = ""
    with contextlib.suppress(OSError):  # the owner may just have finished
        started = (directory / OWNER_FILE).stat().st_mtime
        since = f", since {time.strftime('%H:%M:%S', time.localtime(started))}"
    who = f"pid {pid}" if pid and pid > 0 else "another process"
    return (f"the testnet in {directory} is already running under `gd-node testnet up` "
            f"({who}{since}), which stops it on Ctrl-C; nothing was started or stopped. "
            f"Watch it with `gd-node testnet status --dir {directory}`, or stop that one "
            f"first (Ctrl-C in its terminal).")
