"""The daemon: one trio task tree that turns a home directory into a running peer.

    run_daemon
    ├── pid lock on HOME/gd-node.pid (a second daemon on the same home refuses)
    ├── libp2p host (node/net/host.py: node key, Noise only, yamux) + Kademlia DHT
    ├── the gate (node/net/gate.py): handshakes, protocols, budgets, scores, lifetimes,
    │   its handshake watchdog (no handshake after a deadline: closed) and its pings
    │   (node/net/liveness.py: timed, and at once for a peer a service finds silent)
    ├── mesh and discovery loops (node/daemon_loops.py) over the gate
    ├── services (sync, sovereignty, ledger): each gets the gate and the Cortex
    ├── circuit relay v2 (node/net/relay.py): hop for the region, reservations when private
    ├── mDNS (node/net/mdns.py) when `mdns = true`: announce, and dial the peers heard
    ├── control socket (node/control.py; status/peers/deny in node/daemon_status.py)
    │   and /healthz + /metrics (node/metrics.py)
    └── SIGINT/SIGTERM → stop: cancel the loops, close the host within a bounded time

Every protocol stream other than the handshake goes through `Gate.register_protocol`, which
admits only handshaken peers and enforces the per-peer limits (streams, frame size,
bytes/s: throttle, then disconnect and ban).
"""

from __future__ import annotations

import functools
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import KadDHT
from libp2p.tools.anyio_service import background_trio_service

from gd.crdt.clock import Clock
from gd.genome.identity import NodeKey
from gd.node.api.auto_adapt_jobs import attach_auto_adapt
from gd.node.api.server import check_api_config, start_api
from gd.node.clock import SYSTEM_CLOCK
from gd.node.config import NodeConfig
from gd.node.control import ControlMethods
from gd.node.control_methods.daemon_side import register_write_methods
from gd.node.control_server import ControlServer
from gd.node.credentials import NodeCredentials, load_credentials
from gd.node.daemon_loops import discovery_loop, mesh_loop
from gd.node.daemon_status import health, register_status_methods
from gd.node.home import Home
from gd.node.lock import PidLock
from gd.node.logging import get_logger
from gd.node.metrics import MetricsServer, NodeMetrics
from gd.node.net.bootstrap_file import BootstrapPeer, load_bootstrap
from gd.node.net.denylist import load_deny_list
from gd.node.net.discovery import Discovery, new_dht
from gd.node.net.gate import Gate
from gd.node.net.host import dialable_addrs, running_host
from gd.node.net.mdns import MdnsService
from gd.node.services.ledger_service import LedgerService
from gd.node.services.sovereignty_service import SovereigntyService
from gd.node.services.sync_service import SyncService
from gd.node.supervise import supervised
from gd.protocol.sync import SharePolicy

# Shutdown: the loops are cancelled at once; closing the host (streams, connections,
# listeners) gets this long. systemd's default stop timeout is 90 s; we stay far below.
SHUTDOWN_GRACE_S = 10.0


class Daemon:
    """The running node: its gate (node/net/gate.py), stores and services, wired once.

    `table`, `planner` and `relay` name the gate's own objects (tests and tools read
    them); everything that talks to peers is the gate's."""

    def __init__(self, *, home: Home, cfg: NodeConfig, key: NodeKey, cortex: Any,
                 host: IHost, dht: KadDHT, bootstrap: Sequence[BootstrapPeer],
                 domains: tuple[str, ...], log: Any,
                 credentials: NodeCredentials | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.home, self.cfg, self.key, self.cortex = home, cfg, key, cortex
        # Where the bootstrap pins came from: `org trust` reloads the anchors (ADR 0022).
        self.boot_path: Path | None = None
        self.host, self.dht, self.log, self.clock = host, dht, log, clock
        self.metrics = NodeMetrics()
        self.methods = ControlMethods()
        self.domains = domains
        self.stop_event = trio.Event()
        self.started_at = clock.wall()
        self.metrics_port: int | None = None
        # Our org certificate and the org keys we trust (node/credentials.py); without
        # them we offer no certificate and every peer is uncertified.
        self.gate = Gate(host=host, key=key, cfg=cfg, log=log, metrics=self.metrics,
                         methods=self.methods, clock=clock, home_root=home.root,
                         domains=domains, denied=load_deny_list(home.root),
                         credentials=credentials or NodeCredentials(), nonce=os.urandom,
                         discovery=Discovery(host, dht))
        self.table, self.planner, self.relay = self.gate.table, self.gate.planner, self.gate.relay
        self.sync: SyncService | None = None  # set by run_daemon when there is a Cortex
        self.sovereignty: SovereigntyService | None = None  # likewise
        self.ledger: LedgerService | None = None  # likewise (node/services/ledger_service.py)
        self.mdns: MdnsService | None = None  # set by run_daemon when `mdns = true`
        # The HTTP API (node/api/): its URL and services, set by run_daemon when enabled.
        self.api_url: str | None = None
        self.api: Any = None
        # Auto-adaptation (gd.node.app.auto_adapt), set with the API's job runner.
        self.auto_adapt: Any = None
        # Service name -> one element per restart after a failure (node/supervise.py).
        self.service_restarts: dict[str, list[int]] = {}
        for peer in bootstrap:
            if peer.peer_id != key.peer_id:  # a shared bootstrap file names us too
                self.table.learn(peer.peer_id, peer.addrs, peer.region)
        register_status_methods(self)

    @property
    def peer_id(self) -> str:
        return self.key.peer_id

    @property
    def credentials(self) -> NodeCredentials:
        """The gate's certificate and trust anchors (`org trust` replaces them)."""
        return self.gate.credentials

    @credentials.setter
    def credentials(self, value: NodeCredentials) -> None:
        self.gate.credentials = value

    def stop(self) -> None:
        self.stop_event.set()

    def health(self) -> dict[str, Any]:
        """The /healthz body (node/daemon_status.py)."""
        return health(self)


async def _watch_signals(daemon: Daemon) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            daemon.log.info("node.signal", signal=signal.Signals(signum).name)
            daemon.stop()
            return


async def run_daemon(home: Home, cfg: NodeConfig, key: NodeKey, *, cortex: Any,
                     listen: list[str] | None, bootstrap: Path | None,
                     ready_callback: Callable[[Daemon], Any] | None = None,
                     domains: tuple[str, ...] = (), handle_signals: bool = True,
                     share_policy: SharePolicy | None = None,
                     clock: Clock = SYSTEM_CLOCK) -> None:
    """Run the node until SIGINT/SIGTERM (or `daemon.stop()`), then shut down cleanly.

    `share_policy` (tests and benchmarks, in-process only: the binary never passes one)
    replaces sovereignty's per-peer views with a plain `(receiver, gene) -> bool`.
    `clock` (tests, simulations) replaces the system clock for the daemon and its gate.

    `listen` overrides `cfg.listen`; `bootstrap` overrides the config's bootstrap file.
    `ready_callback(daemon)` runs once the host listens and the control socket is up.
    The caller opens and closes `cortex`; we only read its size. Raises
    AlreadyRunning, BootstrapError, ConfigError or HostError before starting.
    """
    log = get_logger("gd.node").bind(peer_id=key.peer_id)
    boot_path = bootstrap if bootstrap is not None else cfg.resolve_bootstrap(home.root)
    boot_peers = load_bootstrap(boot_path) if boot_path is not None else []
    credentials = load_credentials(home.root, cfg, key, boot_path,
                                   now_ms=int(clock.wall() * 1000))
    if credentials.note:
        log.warning("node.certificate_unusable", note=credentials.note)
    check_api_config(cfg.api, home.root)
    with PidLock(home.pid_path):
        async with running_host(key, listen or list(cfg.listen)) as host:
            dht = new_dht(host)
            async with background_trio_service(dht):
                daemon = Daemon(home=home, cfg=cfg, key=key, cortex=cortex, host=host, dht=dht,
                                bootstrap=boot_peers, domains=domains, log=log,
                                credentials=credentials, clock=clock)
                daemon.boot_path = boot_path
                if cortex is not None:
                    daemon.sync = SyncService(daemon.gate, cortex, share_policy=share_policy)
                    daemon.ledger = LedgerService(daemon.gate, cortex)
                    daemon.gate.ledger_head = daemon.ledger.head
                    daemon.sovereignty = SovereigntyService(
                        daemon.gate, cortex, daemon.sync, ledger_route=daemon.ledger.route())
                    register_write_methods(daemon)  # CLI writes go through us (ADR 0022)
                api_server = start_api(daemon)
                daemon.auto_adapt = attach_auto_adapt(daemon, cfg.adaptation)
                metrics_server = None
                if cfg.metrics_port:
                    metrics_server = MetricsServer(daemon.metrics, daemon.health,
                                                   cfg.metrics_port)
                    daemon.metrics_port = await metrics_server.bind()
                try:
                    async with trio.open_nursery() as nursery:
                        control = ControlServer(home.control_socket, daemon.methods, log)
                        await nursery.start(control.serve)
                        # Each peer's work lives here (node/net/lifetimes.py), first.
                        await nursery.start(daemon.gate.lifetimes.run)
                        if metrics_server is not None:  # on this loop: see node/metrics.py
                            nursery.start_soon(metrics_server.serve)
                        if handle_signals and threading.current_thread() is threading.main_thread():
                            nursery.start_soon(_watch_signals, daemon)
                        services: list[tuple[str, Callable[..., Awaitable[Any]],
                                             tuple[Any, ...]]] = [
                            ("mesh", mesh_loop, (daemon.gate, nursery)),
                            ("discovery", discovery_loop, (daemon.gate,)),
                            ("liveness", daemon.gate.liveness.run, ()),
                            ("handshake-watchdog", daemon.gate.handshake_watchdog, ()),
                            ("relay", daemon.relay.run, ()),
                        ]
                        if cfg.mdns:
                            daemon.mdns = MdnsService(daemon.gate)
                            services.append(("mdns", daemon.mdns.run, ()))
                        for name, service in (("sync", daemon.sync),
                                              ("sovereignty", daemon.sovereignty),
                                              ("ledger", daemon.ledger)):
                            if service is not None:
                                services.append((name, service.run, ()))
                        if api_server is not None:
                            services.append(("api", api_server.run, ()))
                        for name, run, args in services:
                            nursery.start_soon(functools.partial(
                                supervised, log, name, run, *args,
                                restarts=daemon.service_restarts.setdefault(name, [])))
                        log.info("node.started", org=cfg.org, region=cfg.region,
                                 addrs=dialable_addrs(host), bootstrap_peers=len(boot_peers),
                                 control=str(home.control_socket),
                                 metrics_port=daemon.metrics_port)
                        if ready_callback is not None:
                            ready_callback(daemon)
                        await daemon.stop_event.wait()
                        log.info("node.stopping")
                        nursery.cancel_scope.cancel()
                finally:
                    if metrics_server is not None:
                        await metrics_server.aclose()
    log.info("node.stopped")
