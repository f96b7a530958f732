"""What the API's handlers reach: the daemon's own stores and services, in-process.

The daemon is the node's one writer: API mutations call the same objects its services
use (the sovereignty service's policy store, adaptation desk and audit log; the sync
service's conflict resolution; the ledger service's status) rather than opening the
Cortex a second time. A node without those services (an in-process daemon started with
no Cortex) has no API at all.
"""

from __future__ import annotations

from typing import Any

import trio

from gd.crdt.clock import Clock
from gd.node.api.events import EventBus, PeerEvents
from gd.node.api.job_store import JobStore
from gd.node.api.oidc import OidcVerifier
from gd.node.api.ratelimit import RateLimiter
from gd.node.api.settings import ApiSettings
from gd.node.api.tokens import TokenStore
from gd.node.local import LocalNode
from gd.node.store.audit import AuditLog
from gd.node.store.ledger_store import Ledger

# Audit record kind of an API call that changed something.
AUDIT_KIND = "api_call"


class ApiServices:
    """Built once per daemon start, on the event loop (it opens sub-databases)."""

    def __init__(self, daemon: Any, settings: ApiSettings) -> None:
        if daemon.cortex is None or daemon.sovereignty is None or daemon.sync is None:
            raise RuntimeError("the HTTP API needs a daemon with a Cortex")
        self.daemon = daemon
        self.settings = settings
        self.cortex = daemon.cortex
        self.log = daemon.log.bind(component="api")
        # The motors' glue (gd.node.app.decisions) takes a LocalNode; this one shares the
        # daemon's open Cortex and is never closed here (the runner closes the Cortex).
        self.node = LocalNode(daemon.home, daemon.cfg, daemon.key, daemon.cortex)
        # Every time the API reads (token expiry, rate limits, OIDC exp/nbf, job stamps,
        # event times) is the daemon's injected clock: a test or simulation drives it.
        self.clock: Clock = daemon.gate.clock
        self.tokens = TokenStore(self.cortex, self.clock)
        self.oidc = (OidcVerifier(settings.oidc, clock=self.clock)
                     if settings.oidc is not None else None)
        self.jobs = JobStore(self.cortex, self.clock)
        self.audit: AuditLog = daemon.sovereignty.audit
        self.desk = daemon.sovereignty.desk
        self.policies = daemon.sovereignty.store
        self._ledger = Ledger(self.cortex.env)
        self.limiter = RateLimiter(settings.rate_per_s, settings.rate_burst, self.clock)
        self.events = EventBus(self.clock)
        # Peer events follow the gate's connection events (no polling of the table).
        daemon.gate.on_peer(PeerEvents(self.events, daemon.gate.table))
        self.write_lock = trio.Lock()
        from gd.node.api.jobs import JobRunner  # jobs imports this module's type only

        self.runner = JobRunner(self)

    def now_ms(self) -> int:
        return int(self.clock.wall() * 1000)

    def ledger(self) -> Ledger:
        return self._ledger

    def record_call(self, actor: str, method: str, path: str, status: int,
                    payload_hash: str, gene_id: str = "") -> None:
        """The audit record of one mutating call: who, what, when (the record's time),
        the SHA-256 of what they sent, and how it ended."""
        self.cortex.write(lambda txn: self.record_call_in(
            txn, actor, method, path, status, payload_hash, gene_id))

    def record_call_in(self, txn: Any, actor: str, method: str, path: str, status: int,
                       payload_hash: str, gene_id: str = "") -> object:
        """`record_call` inside the caller's write transaction."""
        return self.audit.append_in(txn, AUDIT_KIND, gene_id=gene_id[:256], detail={
            "actor": actor, "method": method, "path": path[:512], "status": status,
            "payload_sha256": payload_hash})
