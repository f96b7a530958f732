"""The control socket: how the CLI talks to a running daemon.

A Unix stream socket at `HOME/control.sock`, mode 0600 (only the node's user may drive
it). Each way a length-prefixed msgpack map, one request answered before the next is read:

    request  {"method": str, "params": {str: value}}
    response {"ok": true, "result": value} | {"ok": false, "error": str}

A method registered with `streaming=True` may send progress frames `{"progress": value}`
before its response (a long gene import reports lines done); `call(..., on_progress=f)`
hands each to `f`. Clients that pass no callback still read past them.

This module is the protocol, the method registry and the client; the daemon's server is
`gd.node.control_server` (trio), so a CLI command does not import trio to make a call.

Methods live in a `ControlMethods` registry so each feature (sync, ledger, genes) adds
its own; the daemon registers `status` and `peers`. `call(home, method, **params)` is the
synchronous client the CLI uses; it raises `DaemonNotRunning` when nobody listens.

A connection stays open for further requests (keep-alive, ADR 0049): `call` closes it
after one, `gd.node.control_client.ControlConnection` keeps it for many (the ledger
benchmark's clients: no connect, accept and task per call). The server drops a
connection idle for `SERVER_READ_TIMEOUT_S` and serves at most `MAX_CONNECTIONS` at once.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack

from gd.node.home import Home

# Control messages stay on this machine; the largest are listings (genes, peers). 64 MiB
# bounds what a confused client can make the daemon buffer.
MAX_CONTROL_MESSAGE = 64 * 1024 * 1024
# One chunk of an uploaded file per control message (`upload_*`, the CLI's gene import
# through the daemon): 4 MiB is a few thousand genes, well under the message limit, and
# keeps the progress bar moving while the file goes over.
MAX_UPLOAD_CHUNK = 4 * 1024 * 1024
# A CLI call waits this long for the daemon; status and peers answer in milliseconds.
DEFAULT_CALL_TIMEOUT_S = 30.0
# A connected client that sends nothing is dropped after this long (also between
# requests on a kept-alive connection).
SERVER_READ_TIMEOUT_S = 30.0
# Connections served at once; one more is told so and closed. Each holds at most one
# request of MAX_CONTROL_MESSAGE, so this bounds what local callers can pin.
MAX_CONNECTIONS = 1024
FRAME_LEN = struct.Struct(">I")

Handler = Callable[..., Awaitable[Any]]
# What a streaming handler receives as `progress`: sends one progress frame.
Progress = Callable[[Any], Awaitable[None]]


class ControlError(RuntimeError):
    """The daemon answered with an error (unknown method, bad parameters, failure)."""


class MethodFailed(Exception):
    """A method's own refusal, already worded for the user: the reply carries the
    message alone (no exception type), as the same command run without a daemon says."""


class DaemonNotRunning(ControlError):
    """No daemon listens on this home's control socket."""


class ControlMethods:
    """name -> async handler(**params) returning msgpack-able data."""

    def __init__(self) -> None:
        self._methods: dict[str, Handler] = {}
        self._streaming: set[str] = set()

    def add(self, name: str, handler: Handler, *, streaming: bool = False) -> None:
        """Register `handler`; a streaming one is also passed `progress=` (a Progress)."""
        if name in self._methods:
            raise ValueError(f"control method {name!r} is already registered")
        self._methods[name] = handler
        if streaming:
            self._streaming.add(name)

    def method(self, name: str) -> Callable[[Handler], Handler]:
        def deco(fn: Handler) -> Handler:
            self.add(name, fn)
            return fn
        return deco

    def names(self) -> list[str]:
        return sorted(self._methods)

    async def dispatch(self, request: Any, progress: Progress | None = None
                       ) -> dict[str, Any]:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return {"ok": False, "error": "request must be {method: str, params: map}"}
        params = request.get("params") or {}
        if not isinstance(params, dict):
            return {"ok": False, "error": "params must be a map"}
        handler = self._methods.get(request["method"])
        if handler is None:
            return {"ok": False, "error": f"unknown method {request['method']!r}; "
                                          f"known: {', '.join(self.names())}"}
        if request["method"] in self._streaming:
            params = {**params, "progress": progress or _no_progress}
        try:
            return {"ok": True, "result": await handler(**params)}
        except MethodFailed as exc:
            return {"ok": False, "error": str(exc)}
        except TypeError as exc:
            return {"ok": False, "error": f"bad parameters for {request['method']}: {exc}"}
        except (ValueError, LookupError, RuntimeError) as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


async def _no_progress(value: Any) -> None:
    """The progress sink of a dispatch with no client to report to (tests, in-process)."""
    del value


def pack_frame(obj: Any) -> bytes:
    """One frame: the 4-byte length, then the msgpack body."""
    body = msgpack.packb(obj, use_bin_type=True)
    return FRAME_LEN.pack(len(body)) + body


def unpack_body(body: bytes) -> Any:
    return msgpack.unpackb(body, raw=False, strict_map_key=False)


def daemon_listening(home: Home) -> bool:
    """Whether a daemon accepts connections on `home`'s control socket right now."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(DEFAULT_CALL_TIMEOUT_S)
    try:
        sock.connect(str(home.control_socket))
    except OSError:
        return False
    finally:
        sock.close()
    return True


def connect(home: Home | Path | str, timeout: float = DEFAULT_CALL_TIMEOUT_S
            ) -> socket.socket:
    """A connected socket to `home`'s daemon (its reads and writes time out after
    `timeout`); DaemonNotRunning when nobody listens there."""
    home = home if isinstance(home, Home) else Home.resolve(home)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(home.control_socket))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise DaemonNotRunning(
            f"no gd-node daemon is running on {home.root} (start one with "
            f"`gd-node run --home {home.root}`)") from None
    except OSError as exc:  # a full backlog (EAGAIN), a timeout, no permission
        sock.close()
        raise ControlError(f"cannot reach the daemon on {home.root}: {exc}") from None
    return sock


class ConnectionSpoiled(ControlError):
    """The call failed in transport (timeout, reset, cut or unreadable reply): the
    connection can carry no further request and must be closed."""


def exchange(sock: socket.socket, method: str, params: dict[str, Any], *,
             timeout: float = DEFAULT_CALL_TIMEOUT_S,
             on_progress: Callable[[Any], None] | None = None) -> Any:
    """One request and its reply on a connected socket (see `call`). ControlError for
    the daemon's error reply (the connection stays usable), ConnectionSpoiled when the
    transport failed (it does not)."""
    try:
        sock.sendall(pack_frame({"method": method, "params": params}))
        while True:
            header = _recv_all(sock, FRAME_LEN.size)
            (length,) = FRAME_LEN.unpack(header)
            if length > MAX_CONTROL_MESSAGE:
                raise ConnectionSpoiled(f"daemon reply of {length} bytes is over the limit")
            reply = unpack_body(_recv_all(sock, length))
            if not (isinstance(reply, dict) and "progress" in reply and "ok" not in reply):
                break
            if on_progress is not None:
                on_progress(reply["progress"])
    except TimeoutError:
        raise ConnectionSpoiled(f"the daemon did not answer {method!r} within {timeout} s"
                                ) from None
    except OSError as exc:  # reset or broken pipe: the daemon died during the call
        raise ConnectionSpoiled(f"the daemon closed the connection during {method!r}: {exc}"
                                ) from None
    except (ValueError, msgpack.ExtraData, msgpack.FormatError) as exc:
        raise ConnectionSpoiled(f"unreadable reply from the daemon: {exc}") from None
    if not isinstance(reply, dict) or "ok" not in reply:
        raise ConnectionSpoiled("malformed reply from the daemon")
    if not reply["ok"]:
        raise ControlError(str(reply.get("error")))
    return reply.get("result")


def call(home: Home | Path | str, method: str, *, timeout: float = DEFAULT_CALL_TIMEOUT_S,
         on_progress: Callable[[Any], None] | None = None, **params: Any) -> Any:
    """Call `method` on the daemon running on `home` and return its result.

    Progress frames of a streaming method go to `on_progress`; `timeout` bounds each
    wait for the next frame, so a long import that keeps reporting is not cut off.
    Raises DaemonNotRunning (no socket, or nobody listening: a crashed daemon's leftover)
    and ControlError (the daemon reported an error, or the reply was cut short).
    One connection per call; `control_client.ControlConnection` keeps one for many.
    """
    sock = connect(home, timeout)
    try:
        return exchange(sock, method, params, timeout=timeout, on_progress=on_progress)
    finally:
        sock.close()


def _recv_all(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionSpoiled("the daemon closed the connection mid-reply")
        buf += chunk
    return bytes(buf)
