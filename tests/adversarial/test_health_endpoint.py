"""Issue 11, item 8: one idle TCP connection must not block /healthz and /metrics.

The endpoint used to be the standard library's single-threaded `wsgiref` server: a client
that connected and said nothing held it in `readline()` forever, and every scrape and
health check after it hung. It now answers on the daemon's trio loop with a read deadline,
a request size bound and a cap on concurrent connections (node/metrics.py)."""

from __future__ import annotations

import contextlib
import socket

import trio
from daemon_cluster import DaemonCluster, launch
from gd_testkit import key_from_int

from gd.node.config import NodeConfig

IDLE_CLIENTS = 3
ANSWER_WITHIN_S = 3.0  # far below the read deadline (5 s) the idle clients could hold


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def get(port: int, path: str) -> tuple[int, bytes]:
    """One HTTP/1.1 GET; (status, body)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_idle_connections_do_not_block_healthz_or_metrics():
    port = free_port()
    with DaemonCluster.in_tmp("gd-adv-") as fed:
        cfg = NodeConfig(org="org1", region="eu", metrics_port=port)
        async with trio.open_nursery() as nursery:
            node = await launch(nursery, fed.home(1), cfg, key_from_int(1),
                                cortex=fed.cortex(1))
            assert node.metrics_port == port
            async with contextlib.AsyncExitStack() as stack:
                for _ in range(IDLE_CLIENTS):  # connect, send nothing, keep it open
                    idle = await trio.open_tcp_stream("127.0.0.1", port)
                    await stack.enter_async_context(idle)
                half = await trio.open_tcp_stream("127.0.0.1", port)  # a request cut short
                await stack.enter_async_context(half)
                await half.send_all(b"GET /healthz HTTP/1.1\r\n")
                with trio.fail_after(ANSWER_WITHIN_S):
                    status, body = await get(port, "/healthz")
                assert status == 200 and b'"ok": true' in body
                with trio.fail_after(ANSWER_WITHIN_S):
                    status, body = await get(port, "/metrics")
                assert status == 200 and b"gd_handshakes_total" in body
            node.stop()
