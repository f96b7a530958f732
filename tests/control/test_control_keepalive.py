"""The control socket keeps a connection for many calls (ADR 0049): one connect for a
persistent client, errors that leave the connection usable, and the server's bounds
(oversize request, connections at once, idle cut-off) with a clear error each."""

from __future__ import annotations

import shutil
import socket
import struct
import tempfile
from pathlib import Path

import msgpack
import pytest
import structlog
import trio

from gd.node import control, control_server
from gd.node.control import (
    ConnectionSpoiled,
    ControlError,
    ControlMethods,
    DaemonNotRunning,
    call,
)
from gd.node.control_client import IDLE_RECONNECT_S, ControlConnection
from gd.node.control_server import ControlServer
from gd.node.home import Home


@pytest.fixture
def home():
    root = Path(tempfile.mkdtemp(prefix="gdc", dir="/tmp"))  # a short socket path
    yield Home(root)
    shutil.rmtree(root, ignore_errors=True)


class Served:
    """A ControlServer with `echo` and `count` (how many calls it dispatched)."""

    def __init__(self) -> None:
        self.calls = 0
        self.methods = ControlMethods()

        async def echo(value: object = None) -> object:
            self.calls += 1
            return value

        self.methods.add("echo", echo)


async def serve(nursery: trio.Nursery, home: Home) -> Served:
    served = Served()
    server = ControlServer(home.control_socket, served.methods, structlog.get_logger())
    await nursery.start(server.serve)
    return served


def raw_request(sock: socket.socket, payload: bytes, length: int | None = None) -> object:
    """Send one framed request (`length` may lie) and read one framed reply."""
    sock.sendall(struct.pack(">I", len(payload) if length is None else length) + payload)
    header = sock.recv(4, socket.MSG_WAITALL)
    (n,) = struct.unpack(">I", header)
    return msgpack.unpackb(sock.recv(n, socket.MSG_WAITALL), raw=False)


def closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(5.0)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


async def test_one_connection_carries_many_calls_and_survives_an_error_reply(home, nursery):
    served = await serve(nursery, home)

    def client() -> tuple[list[object], int]:
        with ControlConnection(home, timeout=10.0) as conn:
            results = [conn.call("echo", value=i) for i in range(50)]
            with pytest.raises(ControlError, match="unknown method 'nope'"):
                conn.call("nope")
            with pytest.raises(ControlError, match="bad parameters for echo"):
                conn.call("echo", wrong=1)
            results.append(conn.call("echo", value=b"after errors"))
            return results, conn.connects

    results, connects = await trio.to_thread.run_sync(client)
    assert results == [*range(50), b"after errors"]
    assert connects == 1  # one connect, one accept, for 53 calls
    assert served.calls == 51
    # The one-shot client the CLI uses behaves as before.
    assert await trio.to_thread.run_sync(lambda: call(home, "echo", value="cli")) == "cli"


async def test_idle_connection_is_reopened_before_sending_never_resent(home, nursery):
    await serve(nursery, home)
    now = [0.0]

    def client() -> int:
        conn = ControlConnection(home, timeout=10.0, clock=lambda: now[0])
        try:
            conn.call("echo", value=1)
            now[0] += IDLE_RECONNECT_S - 0.5
            conn.call("echo", value=2)  # still fresh enough
            now[0] += IDLE_RECONNECT_S
            conn.call("echo", value=3)  # the daemon may have dropped it: a new one
            return conn.connects
        finally:
            conn.close()

    assert await trio.to_thread.run_sync(client) == 2


async def test_oversize_request_on_a_kept_connection_is_refused_and_closes_it(home, nursery):
    served = await serve(nursery, home)

    def client() -> tuple[object, object, bool]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10.0)
            sock.connect(str(home.control_socket))
            first = raw_request(sock, msgpack.packb({"method": "echo",
                                                     "params": {"value": 1}}))
            # A length over the limit, with no body sent: refused at the header.
            second = raw_request(sock, b"", length=control.MAX_CONTROL_MESSAGE + 1)
            return first, second, closed_by_peer(sock)

    first, second, closed = await trio.to_thread.run_sync(client)
    assert first == {"ok": True, "result": 1}
    assert second == {"ok": False, "error": "request too large"}
    assert closed
    assert served.calls == 1  # nothing dispatched for the oversize request


async def test_garbage_after_a_good_call_gets_a_clear_error_and_closes(home, nursery):
    served = await serve(nursery, home)

    def client() -> tuple[object, bool]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10.0)
            sock.connect(str(home.control_socket))
            raw_request(sock, msgpack.packb({"method": "echo", "params": {}}))
            reply = raw_request(sock, b"\xc1\xc1 not msgpack")
            return reply, closed_by_peer(sock)

    reply, closed = await trio.to_thread.run_sync(client)
    assert reply == {"ok": False, "error": "request is not msgpack"}
    assert closed and served.calls == 1


async def test_connections_at_once_are_bounded_with_a_clear_error(home, nursery,
                                                                  monkeypatch):
    monkeypatch.setattr(control_server, "MAX_CONNECTIONS", 2)
    served = await serve(nursery, home)

    def client() -> tuple[str, object]:
        held = [ControlConnection(home, timeout=10.0) for _ in range(2)]
        try:
            for conn in held:
                conn.call("echo", value=0)  # both kept open by the server
            with pytest.raises(ControlError) as refused:
                call(home, "echo", value=1, timeout=10.0)
            held[0].close()
            deadline = 50  # the server notices the close at its next read
            while True:
                try:
                    return str(refused.value), call(home, "echo", value=2, timeout=10.0)
                except ControlError:
                    deadline -= 1
                    if deadline == 0:
                        raise
                    import time
                    time.sleep(0.05)
        finally:
            for conn in held:
                conn.close()

    message, after = await trio.to_thread.run_sync(client)
    assert "too many control connections (at most 2)" in message
    assert after == 2
    assert served.calls == 3  # the refused call was never dispatched


async def test_server_drops_a_connection_idle_past_its_timeout(home, nursery, monkeypatch):
    monkeypatch.setattr(control_server, "SERVER_READ_TIMEOUT_S", 0.2)
    await serve(nursery, home)

    def client() -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10.0)
            sock.connect(str(home.control_socket))
            raw_request(sock, msgpack.packb({"method": "echo", "params": {}}))
            return closed_by_peer(sock)  # nothing more sent: dropped after 0.2 s

    assert await trio.to_thread.run_sync(client)


async def test_a_dead_daemon_spoils_the_connection_and_the_next_call_says_so(home):
    def client() -> None:
        conn = ControlConnection(home, timeout=5.0)
        with pytest.raises(DaemonNotRunning):
            conn.call("echo")
        assert conn.connects == 0

    await trio.to_thread.run_sync(client)
    async with trio.open_nursery() as nursery:
        await serve(nursery, home)
        conn = ControlConnection(home, timeout=5.0)
        assert await trio.to_thread.run_sync(lambda: conn.call("echo", value=1)) == 1
        nursery.cancel_scope.cancel()
    # The server is gone (its socket file removed): the kept connection fails in
    # transport, is closed, and the next call reports no daemon.
    with pytest.raises(ConnectionSpoiled):
        await trio.to_thread.run_sync(lambda: conn.call("echo", value=2))
    with pytest.raises(DaemonNotRunning):
        await trio.to_thread.run_sync(lambda: conn.call("echo", value=3))
