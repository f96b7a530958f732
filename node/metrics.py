"""`/healthz` and `/metrics` (Prometheus text format) on 127.0.0.1:`metrics_port`.

Each daemon owns a `CollectorRegistry` (not the process-global one) so several daemons
can run in one test process. The HTTP server is the standard library's WSGI server in a
daemon thread: scrapes are rare and tiny, and the trio loop never blocks on them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app

METRICS_HOST = "127.0.0.1"  # never exposed beyond the machine; put a proxy in front


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
        # Sync (node/sync_service.py). Payload = canonical gene bytes before compression;
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


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


class MetricsServer:
    """Serves `/metrics` from `metrics` and `/healthz` from `health()` (a JSON-able dict
    with a boolean "ok"; 200 when ok, 503 otherwise)."""

    def __init__(self, metrics: NodeMetrics, health: Callable[[], dict[str, Any]],
                 port: int) -> None:
        self._prom = make_wsgi_app(metrics.registry)
        self._health = health
        self._server: WSGIServer = make_server(METRICS_HOST, port, self._app,
                                               handler_class=_QuietHandler)
        self.port: int = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="gd-metrics", daemon=True)

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]
             ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._prom(environ, start_response)
        if path == "/healthz":
            body = self._health()
            status = "200 OK" if body.get("ok") else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [json.dumps(body).encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"try /healthz or /metrics\n"]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
