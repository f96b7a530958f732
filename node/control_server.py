"""The daemon's side of the control socket (`gd.node.control` holds the protocol, the
method registry and the CLI's client): a trio listener on `HOME/control.sock`, mode
0600, serving each connection's requests in order until it closes or idles out.

Apart from the client so that a CLI command, which only calls, never imports trio.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Any

import msgpack
import trio

from gd.node.control import (
    FRAME_LEN,
    MAX_CONNECTIONS,
    MAX_CONTROL_MESSAGE,
    SERVER_READ_TIMEOUT_S,
    ControlMethods,
    pack_frame,
    unpack_body,
)


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
        self._connections = 0

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
            if self._connections >= MAX_CONNECTIONS:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_all(pack_frame({
                        "ok": False, "error": f"too many control connections (at most "
                                              f"{MAX_CONNECTIONS}); retry shortly"}))
                return
            self._connections += 1
            try:
                while await self._serve_one(stream):
                    pass
            finally:
                self._connections -= 1

    async def _serve_one(self, stream: trio.SocketStream) -> bool:
        """Read, dispatch and answer one request; False when the connection is done
        (the client closed it, went idle, or sent something that ends it)."""
        body: bytes | None = None
        with trio.move_on_after(SERVER_READ_TIMEOUT_S):
            header = await _recv_exact(stream, FRAME_LEN.size)
            if header is None:
                return False
            (length,) = FRAME_LEN.unpack(header)
            if length > MAX_CONTROL_MESSAGE:
                await stream.send_all(pack_frame({"ok": False, "error": "request too large"}))
                return False
            body = await _recv_exact(stream, length)
        if body is None:
            return False  # closed mid-request, idle or too slow: dropped
        try:
            request = unpack_body(body)
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
                msgpack.StackError):
            await stream.send_all(pack_frame({"ok": False, "error": "request is not msgpack"}))
            return False

        async def progress(value: Any) -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(pack_frame({"progress": value}))

        response = await self.methods.dispatch(request, progress)
        try:
            data = pack_frame(response)
        except (TypeError, ValueError) as exc:
            self.log.error("control.unencodable_result", method=request.get("method"),
                           error=str(exc))
            data = pack_frame({"ok": False, "error": "result could not be encoded"})
        try:
            await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True
