"""`/healthz` and `/metrics` (Prometheus text format) on 127.0.0.1:`metrics_port`.

Each daemon owns a `CollectorRegistry` (not the process-global one) so several daemons
can run in one test process. The HTTP server is a small HTTP/1.1 responder on the
daemon's own trio loop (issue 11, item 8): the standard library's single-threaded
`wsgiref` server it replaced let one idle TCP connection block every scrape and health
check. Each connection gets one request, read within a deadline and a size bound, one
response, and is closed; concurrent connections are capped. Scrapes are tiny and rare,
so answering on the event loop costs nothing measurable.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import trio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from gd.node.errors import HostError

METRICS_HOST = "127.0.0.1"  # never exposed beyond the machine; put a proxy in front
# Bounds on the HTTP endpoint, each against one way a local client could tie it up:
# a scraper sends its whole request at once, so the head must arrive within this (one
# deadline for the whole head, so trickling a byte at a time does not extend it);
HTTP_READ_TIMEOUT_S = 5.0
# and a slow reader of our answer is cut off after this;
HTTP_WRITE_TIMEOUT_S = 5.0
# a GET's request line and headers are a few hundred bytes; beyond this: 431 and close;
HTTP_MAX_REQUEST_BYTES = 8192
# Prometheus, a health checker and an operator's curl need a handful at once; beyond
# this a connection is answered 503 at once (within HTTP_BUSY_WRITE_TIMEOUT_S) and closed.
HTTP_MAX_CONNECTIONS = 16
HTTP_BUSY_WRITE_TIMEOUT_S = 1.0
# After answering, unread request bytes (an oversized head) would make the kernel reset
# the connection and the client could lose our answer: we half-close and drain at most
# this much for at most this long (Apache's "lingering close").
HTTP_LINGER_BYTES = 65536
HTTP_LINGER_S = 1.0
_READ_CHUNK = 4096


class NodeMetrics:
    """Every metric the daemon exports, on its own registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.peers = Gauge("gd_peers", "Connected, handshaken peers by region", ["region"],
                           registry=r)
        self.streams = Gauge("gd_streams", "Open inbound gd protocol streams", registry=r)
        self.bytes = Counter("gd_bytes", "Bytes on gd streams", ["protocol", "direction"],
                             registry=r)
        self.frame_errors = Counter("gd_frame_errors", "Peer protocol errors (bad frames, "
                                    "limits, timeouts)", ["protocol"], registry=r)
        self.handshakes = Counter("gd_handshakes", "Handshakes by outcome", ["outcome"],
                                  registry=r)
        self.dropped = Counter("gd_peers_dropped", "Peers disconnected by the mesh",
                               ["reason"], registry=r)
        self.cortex_bytes = Gauge("gd_cortex_bytes", "Size of the Cortex LMDB file", registry=r)
        self.ledger_height = Gauge("gd_ledger_height", "Entries in the regional ledger",
                                   registry=r)
        self.sync_lag = Gauge("gd_sync_lag", "Changes not yet pulled from peers (max)",
                              registry=r)
        # Sync (node/services/sync_service.py). Payload = canonical gene bytes before compression;
        # wire = frame bytes on sync and reconcile streams; overhead = wire - payload.
        self.sync_peer_lag = Gauge("gd_sync_peer_lag", "Changes not yet pulled, per peer",
                                   ["peer"], registry=r)
        self.sync_genes = Counter("gd_sync_genes", "Genes moved by sync",
                                  ["direction"], registry=r)
        self.sync_bytes = Counter("gd_sync_bytes", "Sync bytes: kind=payload (gene bytes) "
                                  "or wire (frames)", ["direction", "kind"], registry=r)
        self.sync_conflicts = Counter("gd_sync_conflicts", "Incoming versions queued as "
                                      "conflicts", registry=r)
        self.sync_rejected = Counter("gd_sync_rejected", "Incoming genes rejected "
                                     "(signature, policy)", registry=r)
        self.sync_rounds = Counter("gd_sync_rounds", "Sync and repair rounds by outcome",
                                   ["kind", "outcome"], registry=r)

    def set_peers(self, by_region: dict[str, int]) -> None:
        self.peers.clear()
        for region, n in by_region.items():
            self.peers.labels(region=region).set(n)


class MetricsServer:
    """Serves `/metrics` from `metrics` and `/healthz` from `health()` (a JSON-able dict
    with a boolean "ok"; 200 when ok, 503 otherwise) on METRICS_HOST:`port` (0: any).

    `port = await server.bind()`, then run `server.serve` in a nursery (cancelling it
    stops the server and closes every connection) and `await server.aclose()` after."""

    def __init__(self, metrics: NodeMetrics, health: Callable[[], dict[str, Any]],
                 port: int) -> None:
        self._registry = metrics.registry
        self._health = health
        self._wanted_port = port
        self.port: int | None = None
        self._listeners: list[trio.SocketListener] = []
        self.active = 0  # connections being served now (at most HTTP_MAX_CONNECTIONS)

    async def bind(self) -> int:
        """Listen (before the daemon's nursery starts, so a busy port is a clean error)."""
        try:
            self._listeners = list(await trio.open_tcp_listeners(self._wanted_port,
                                                                 host=METRICS_HOST))
        except OSError as exc:
            raise HostError(f"cannot serve /metrics on {METRICS_HOST}:{self._wanted_port}: "
                            f"{exc.strerror or exc}") from None
        self.port = self._listeners[0].socket.getsockname()[1]
        return self.port

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Answer connections until cancelled (binds first if `bind` was not called)."""
        if not self._listeners:
            await self.bind()
        await trio.serve_listeners(self._connection, self._listeners, task_status=task_status)

    async def aclose(self) -> None:
        """Close the listeners (serve closes them too; this covers a serve never run)."""
        for listener in self._listeners:
            await listener.aclose()

    async def _connection(self, stream: trio.SocketStream) -> None:
        if self.active >= HTTP_MAX_CONNECTIONS:
            with trio.move_on_after(HTTP_BUSY_WRITE_TIMEOUT_S):
                await _send(stream, 503, "text/plain", b"busy\n")
                await _linger(stream)
            return
        self.active += 1
        try:
            head = await _read_head(stream)
            try:
                status, ctype, body = self._answer(head)
            except Exception as exc:  # health() or a collector failed: say so, stay up
                status, ctype, body = 500, "text/plain", f"{type(exc).__name__}\n".encode()
            with trio.move_on_after(HTTP_WRITE_TIMEOUT_S):
                await _send(stream, status, ctype, body,
                            head_only=head is not None and head.startswith(b"HEAD "))
                await _linger(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return  # the client went away; nothing to answer
        finally:
            self.active -= 1

    def _answer(self, head: bytes | None) -> tuple[int, str, bytes]:
        if head is None:
            return 408, "text/plain", b"request not received in time\n"
        if len(head) > HTTP_MAX_REQUEST_BYTES:
            return 431, "text/plain", b"request header too large\n"
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return 400, "text/plain", b"bad request\n"
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return 405, "text/plain", b"only GET and HEAD\n"
        if target == b"/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if target == b"/healthz":
            health = self._health()
            return (200 if health.get("ok") else 503, "application/json",
                    json.dumps(health).encode())
        return 404, "text/plain", b"try /healthz or /metrics\n"


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}


async def _read_head(stream: trio.SocketStream) -> bytes | None:
    """The request line and headers (None if they did not arrive in time); stops reading
    past HTTP_MAX_REQUEST_BYTES and returns what it has (the caller answers 431)."""
    buf = b""
    with trio.move_on_after(HTTP_READ_TIMEOUT_S):
        while b"\r\n\r\n" not in buf and len(buf) <= HTTP_MAX_REQUEST_BYTES:
            chunk = await stream.receive_some(_READ_CHUNK)
            if not chunk:
                break
            buf += chunk
        if b"\r\n\r\n" in buf:
            return buf.split(b"\r\n\r\n", 1)[0]
        return buf if len(buf) > HTTP_MAX_REQUEST_BYTES else None
    return None


async def _send(stream: trio.SocketStream, status: int, ctype: str, body: bytes, *,
                head_only: bool = False) -> None:
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    await stream.send_all(head if head_only else head + body)


async def _linger(stream: trio.SocketStream) -> None:
    """Half-close, then drain what the client still sends, boundedly (see HTTP_LINGER_S)."""
    await stream.send_eof()
    drained = 0
    with trio.move_on_after(HTTP_LINGER_S):
        while drained < HTTP_LINGER_BYTES:
            chunk = await stream.receive_some(_READ_CHUNK)
            if not chunk:
                return
            drained += len(chunk)
