"""The control socket: how the CLI talks to a running daemon.

A Unix stream socket at `HOME/control.sock`, mode 0600 (only the node's user may drive
it). One request per connection turn, each way a length-prefixed msgpack map:

    request  {"method": str, "params": {str: value}}
    response {"ok": true, "result": value} | {"ok": false, "error": str}

A method registered with `streaming=True` may send progress frames `{"progress": value}`
before its response (a long gene import reports lines done); `call(..., on_progress=f)`
hands each to `f`. Clients that pass no callback still read past them.

Methods live in a `ControlMethods` registry so each feature (sync, ledger, genes) adds
its own; the daemon registers `status` and `peers`. `call(home, method, **params)` is the
synchronous client the CLI uses; it raises `DaemonNotRunning` when nobody listens.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import trio

from gd.node.home import Home

# Control messages stay on this machine; the largest are listings (genes, peers). 64 MiB
# bounds what a confused client can make the daemon buffer.
MAX_CONTROL_MESSAGE = 64 * 1024 * 1024
# A CLI call waits this long for the daemon; status and peers answer in milliseconds.
DEFAULT_CALL_TIMEOUT_S = 30.0
# A connected client that sends nothing is dropped after this long.
SERVER_READ_TIMEOUT_S = 30.0
_LEN = struct.Struct(">I")

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


def _pack(obj: Any) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return _LEN.pack(len(body)) + body


def _unpack(body: bytes) -> Any:
    return msgpack.unpackb(body, raw=False, strict_map_key=False)


async def _recv_exact(stream: trio.SocketStream, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.receive_some(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


class ControlServer:
    """Serves `methods` on `path` until cancelled; removes the socket file on exit."""

    def __init__(self, path: Path, methods: ControlMethods, log: Any) -> None:
        self.path = path
        self.methods = methods
        self.log = log

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if len(str(self.path).encode()) >= 104:  # sun_path is 104-108 bytes by platform
            raise OSError(f"control socket path too long for a Unix socket: {self.path}")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket from a crash; the pid lock says we own it
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is born 0600: no window for others
        try:
            await sock.bind(str(self.path))
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        # Room for many concurrent callers (scripts, the ledger benchmark's 64-256
        # clients): a full backlog makes connect() fail with EAGAIN on a Unix socket.
        sock.listen(256)
        listener = trio.SocketListener(sock)
        try:
            task_status.started()
            await trio.serve_listeners(self._client, [listener])
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            await listener.aclose()

    async def _client(self, stream: trio.SocketStream) -> None:
        async with stream:
            while True:
                with trio.move_on_after(SERVER_READ_TIMEOUT_S):
                    header = await _recv_exact(stream, _LEN.size)
                    if header is None:
                        return
                    (length,) = _LEN.unpack(header)
                    if length > MAX_CONTROL_MESSAGE:
                        await stream.send_all(_pack({"ok": False, "error": "request too large"}))
                        return
                    body = await _recv_exact(stream, length)
                    if body is None:
                        return
                    break
            else:
                return
            try:
                request = _unpack(body)
            except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
                    msgpack.StackError):
                await stream.send_all(_pack({"ok": False, "error": "request is not msgpack"}))
                return
            async def progress(value: Any) -> None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_all(_pack({"progress": value}))

            response = await self.methods.dispatch(request, progress)
            try:
                data = _pack(response)
            except (TypeError, ValueError) as exc:
                self.log.error("control.unencodable_result", method=request.get("method"),
                               error=str(exc))
                data = _pack({"ok": False, "error": "result could not be encoded"})
            try:
                await stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return


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


def call(home: Home | Path | str, method: str, *, timeout: float = DEFAULT_CALL_TIMEOUT_S,
         on_progress: Callable[[Any], None] | None = None, **params: Any) -> Any:
    """Call `method` on the daemon running on `home` and return its result.

    Progress frames of a streaming method go to `on_progress`; `timeout` bounds each
    wait for the next frame, so a long import that keeps reporting is not cut off.
    Raises DaemonNotRunning (no socket, or nobody listening: a crashed daemon's leftover)
    and ControlError (the daemon reported an error, or the reply was cut short).
    """
    home = home if isinstance(home, Home) else Home.resolve(home)
    path = home.control_socket
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonNotRunning(
                f"no gd-node daemon is running on {home.root} (start one with "
                f"`gd-node run --home {home.root}`)") from None
        sock.sendall(_pack({"method": method, "params": params}))
        while True:
            header = _recv_all(sock, _LEN.size)
            (length,) = _LEN.unpack(header)
            if length > MAX_CONTROL_MESSAGE:
                raise ControlError(f"daemon reply of {length} bytes is over the limit")
            reply = _unpack(_recv_all(sock, length))
            if not (isinstance(reply, dict) and "progress" in reply and "ok" not in reply):
                break
            if on_progress is not None:
                on_progress(reply["progress"])
    except TimeoutError:
        raise ControlError(f"the daemon did not answer {method!r} within {timeout} s") from None
    except OSError as exc:  # reset or broken pipe: the daemon died during the call
        raise ControlError(f"the daemon closed the connection during {method!r}: {exc}"
                           ) from None
    except (ValueError, msgpack.ExtraData, msgpack.FormatError) as exc:
        raise ControlError(f"unreadable reply from the daemon: {exc}") from None
    finally:
        sock.close()
    if not isinstance(reply, dict) or "ok" not in reply:
        raise ControlError("malformed reply from the daemon")
    if not reply["ok"]:
        raise ControlError(str(reply.get("error")))
    return reply.get("result")


def _recv_all(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ControlError("the daemon closed the connection mid-reply")
        buf += chunk
    return bytes(buf)
