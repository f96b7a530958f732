"""A control-socket client that keeps its connection for many calls (ADR 0049).

`gd.node.control.call` connects, asks once and closes: right for a CLI command, costly
for a caller that submits thousands of times (the ledger benchmark's clients, a script
feeding decisions): each call pays a connect, the daemon's accept and a new task. A
`ControlConnection` connects on its first call and reuses the connection until it is
closed, a call fails in transport, or it sat idle long enough that the daemon may have
dropped it (`control.SERVER_READ_TIMEOUT_S`): it then reconnects *before* sending, never
by resending a request that may have reached the daemon. One call at a time per
connection (a lock serialises threads that share one); concurrent callers each keep
their own, as etcd's clients each keep a keep-alive HTTP connection.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from gd.node.clock import SYSTEM_CLOCK
from gd.node.control import (
    DEFAULT_CALL_TIMEOUT_S,
    SERVER_READ_TIMEOUT_S,
    ConnectionSpoiled,
    connect,
    exchange,
)
from gd.node.home import Home

# Reconnect before sending when the connection has been idle this long: well inside the
# daemon's idle cut-off, so a request never races the daemon closing the connection.
IDLE_RECONNECT_S: Final = SERVER_READ_TIMEOUT_S / 2


class ControlConnection:
    """`call` like `gd.node.control.call`, over one kept-alive connection (any thread)."""

    def __init__(self, home: Home | Path | str, *,
                 timeout: float = DEFAULT_CALL_TIMEOUT_S,
                 clock: Callable[[], float] = SYSTEM_CLOCK.monotonic) -> None:
        self.home = home if isinstance(home, Home) else Home.resolve(home)
        self.timeout = timeout
        self._clock = clock
        self._sock: socket.socket | None = None
        self._last_used = 0.0
        self._lock = threading.Lock()
        self.connects = 0  # connections opened: for tests and the benchmark

    def call(self, method: str, *, timeout: float | None = None,
             on_progress: Callable[[Any], None] | None = None, **params: Any) -> Any:
        """Call `method` and return its result; raises as `control.call` does. A
        transport failure closes the connection (the next call opens a new one); the
        failed request is not resent, since the daemon may have acted on it."""
        wait = self.timeout if timeout is None else timeout
        with self._lock:
            sock = self._ready(wait)
            try:
                result = exchange(sock, method, params, timeout=wait, on_progress=on_progress)
            except ConnectionSpoiled:
                self._drop()
                raise
            self._last_used = self._clock()
            return result

    def _ready(self, timeout: float) -> socket.socket:
        if self._sock is not None and self._clock() - self._last_used >= IDLE_RECONNECT_S:
            self._drop()
        if self._sock is None:
            self._sock = connect(self.home, timeout)
            self.connects += 1
            self._last_used = self._clock()
        self._sock.settimeout(timeout)
        return self._sock

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        """Close the connection (the daemon sees the client leave); calls may reopen it."""
        with self._lock:
            self._drop()

    def __enter__(self) -> ControlConnection:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


__all__ = ["IDLE_RECONNECT_S", "ControlConnection"]
