"""The /healthz + /metrics HTTP responder (node/metrics.py) against misbehaving clients:
bounded reads, bounded request size, bounded concurrency, clear status codes."""

from __future__ import annotations

import json

import pytest
import trio

from gd.node import metrics as metrics_mod
from gd.node.errors import HostError
from gd.node.metrics import HTTP_MAX_CONNECTIONS, HTTP_MAX_REQUEST_BYTES, MetricsServer, NodeMetrics


async def request(port: int, raw: bytes) -> tuple[int, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(raw)
        data = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


@pytest.fixture
async def server(nursery):
    health = {"ok": True, "peer_id": "me"}
    m = NodeMetrics()
    m.handshakes.labels(outcome="accepted").inc()
    srv = MetricsServer(m, lambda: dict(health), 0)
    port = await srv.bind()
    nursery.start_soon(srv.serve)
    srv.health_state = health
    yield srv, port
    await srv.aclose()


async def test_the_endpoints_answer_as_before(server):
    srv, port = server
    status, body = await request(port, get("/healthz"))
    assert status == 200 and json.loads(body) == {"ok": True, "peer_id": "me"}
    srv.health_state["ok"] = False
    status, body = await request(port, get("/healthz"))
    assert status == 503 and json.loads(body)["ok"] is False
    status, body = await request(port, get("/metrics?x=1"))
    assert status == 200 and b'gd_handshakes_total{outcome="accepted"} 1.0' in body
    assert (await request(port, get("/nope")))[0] == 404
    assert (await request(port, get("/healthz", "POST")))[0] == 405
    assert (await request(port, b"garbage\r\n\r\n"))[0] == 400
    status, body = await request(port, get("/healthz", "HEAD"))
    assert status == 503 and body == b""


async def test_an_oversized_request_is_refused(server):
    _, port = server
    huge = b"GET /healthz HTTP/1.1\r\nX: " + b"a" * (2 * HTTP_MAX_REQUEST_BYTES) + b"\r\n\r\n"
    assert (await request(port, huge))[0] == 431


async def test_a_silent_client_is_cut_off_after_the_read_deadline(server, monkeypatch):
    monkeypatch.setattr(metrics_mod, "HTTP_READ_TIMEOUT_S", 0.2)
    _, port = server
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /healthz HTTP/1.1\r\n")  # and never the blank line
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(4096):
                data += chunk
    assert data.startswith(b"HTTP/1.1 408 ")


async def test_connections_beyond_the_cap_are_refused_at_once_and_slots_return(server):
    srv, port = server
    idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(HTTP_MAX_CONNECTIONS)]
    with trio.fail_after(10):
        while srv.active < HTTP_MAX_CONNECTIONS:
            await trio.sleep(0.01)
    with trio.fail_after(2):  # refused quickly, not after the read deadline
        status, body = await request(port, get("/healthz"))
    assert status == 503 and body == b"busy\n"
    for s in idle:
        await s.aclose()
    with trio.fail_after(10):
        while srv.active:
            await trio.sleep(0.01)
    assert (await request(port, get("/healthz")))[0] == 200


async def test_a_busy_port_is_a_clear_error(server):
    _, port = server
    with pytest.raises(HostError, match=f"cannot serve /metrics on 127.0.0.1:{port}"):
        await MetricsServer(NodeMetrics(), dict, port).bind()
