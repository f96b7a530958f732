"""The daemon: one trio task tree that turns a home directory into a running peer.

    run_daemon
    ├── pid lock on HOME/gd-node.pid (a second daemon on the same home refuses)
    ├── libp2p host (node/net/host.py: node key, Noise only, yamux) + Kademlia DHT
    ├── /gd/handshake/2.0.0 inbound handler; outbound handshakes after each dial
    ├── mesh loop (node/net/mesh.py plans; we dial and drop), discovery loop (node/net/discovery.py)
    ├── liveness loop (/gd/ping/1.0.0 with a bounded wait: RTT feeds scores)
    ├── handshake watchdog: a connection with no handshake after a deadline is closed
    ├── circuit relay v2 (node/net/relay.py): hop for the region, reservations when private
    ├── mDNS (node/net/mdns.py) when `mdns = true`: announce, and dial the peers heard
    ├── control socket (node/control.py) and /healthz + /metrics (node/metrics.py)
    └── SIGINT/SIGTERM → stop: cancel the loops, close the host within a bounded time

Every protocol stream other than the handshake goes through `register_protocol`, which
admits only handshaken peers and enforces the per-peer limits (streams, frame size,
bytes/s: throttle, then disconnect and ban).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.kad_dht import KadDHT
from libp2p.network.connection.swarm_connection import SwarmConn
from libp2p.network.swarm import Swarm
from libp2p.tools.anyio_service import background_trio_service

from gd.genome.identity import NodeKey
from gd.node.api.auto_adapt_jobs import attach_auto_adapt
from gd.node.api.server import check_api_config, start_api
from gd.node.config import NodeConfig
from gd.node.control import ControlMethods, ControlServer
from gd.node.control_methods.daemon_side import register_write_methods
from gd.node.credentials import NodeCredentials, load_credentials
from gd.node.home import Home
from gd.node.lock import PidLock
from gd.node.logging import get_logger
from gd.node.metrics import MetricsServer, NodeMetrics
from gd.node.net.denylist import load_deny_list, save_deny_list
from gd.node.net.discovery import BootstrapPeer, Discovery, load_bootstrap, new_dht
from gd.node.net.host import dialable_addrs, peer_info, running_host, to_id
from gd.node.net.mdns import MdnsService
from gd.node.net.mesh import MeshPlanner
from gd.node.net.peers import LimitExceeded, PeerBudget, PeerRecord, PeerTable
from gd.node.net.relay import RELAY_CAPABILITY, RelayService, is_circuit_addr
from gd.node.net.streams import (
    HANDSHAKE_TIMEOUT_S,
    PING_NONCE_BYTES,
    PING_PROTOCOL_ID,
    FramedStream,
    PeerTimeout,
    Ping,
    Pong,
    StreamGone,
    drive_handshake,
)
from gd.node.services.ledger_service import LedgerService
from gd.node.services.sovereignty_service import SovereigntyService
from gd.node.services.sync_service import SyncService
from gd.node.supervise import peer_task, supervised
from gd.protocol.errors import RemoteProtocolError
from gd.protocol.handshake import PROTOCOL_ID as _HANDSHAKE_ID
from gd.protocol.handshake import (
    Accepted,
    Handshake,
    HandshakeOffer,
    Outcome,
    PeerHello,
    Rejected,
)
from gd.protocol.sync import SharePolicy

# Shutdown: the loops are cancelled at once; closing the host (streams, connections,
# listeners) gets this long. systemd's default stop timeout is 90 s; we stay far below.
SHUTDOWN_GRACE_S = 10.0
MESH_TICK_S = 1.0
# Discovery runs at once when a new peer is verified, else this often; provider records
# are re-published every REPROVIDE_S (the DHT keeps them ~24 h; go-libp2p republishes
# every 22 h, we do it hourly because regions are small and records cheap).
DISCOVERY_INTERVAL_S = 30.0
REPROVIDE_S = 3600.0
# The ping interval and the handshake deadline are [mesh] settings (node/config_sections.py).
PING_TIMEOUT_S = 5.0
DIAL_TIMEOUT_S = 10.0

ProtocolHandler = Callable[[FramedStream, PeerRecord], Awaitable[None]]

# The sans-I/O handshake module does not import libp2p; its id is typed here.
HANDSHAKE_PROTOCOL_ID = TProtocol(_HANDSHAKE_ID)


class _ConnectionWatcher(INotifee):
    """libp2p connection events → the daemon (only disconnects and inbound bans matter)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        await self.daemon._on_connected(conn.muxed_conn.peer_id.to_base58())

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self.daemon._on_disconnected(conn.muxed_conn.peer_id.to_base58())

    async def listen(self, network: INetwork, multiaddr: Any) -> None:
        return

    async def listen_close(self, network: INetwork, multiaddr: Any) -> None:
        return


class Daemon:
    """The running node's state and behaviour; `run_daemon` builds and drives one."""

    def __init__(self, *, home: Home, cfg: NodeConfig, key: NodeKey, cortex: Any,
                 host: IHost, dht: KadDHT, bootstrap: Sequence[BootstrapPeer],
                 domains: tuple[str, ...], log: Any,
                 credentials: NodeCredentials | None = None) -> None:
        self.home, self.cfg, self.key, self.cortex = home, cfg, key, cortex
        # Our org certificate and the org keys we trust (node/credentials.py); without
        # them we offer no certificate and every peer is uncertified.
        self.credentials = credentials or NodeCredentials()
        # Where the bootstrap pins came from: `org trust` reloads the anchors (ADR 0022).
        self.boot_path: Path | None = None
        self.host, self.dht, self.log = host, dht, log
        self.policy, self.limits = cfg.mesh.policy(cfg.region), cfg.mesh.limits()
        self.planner = MeshPlanner(self.policy, seed=cfg.mesh.seed)
        self.table = PeerTable()
        self.discovery = Discovery(host, dht)
        self.metrics = NodeMetrics()
        self.methods = ControlMethods()
        self.domains = domains
        self.budgets: dict[str, PeerBudget] = {}
        self._verified: dict[str, trio.Event] = {}
        self._discover_now = trio.Event()
        self.stop_event = trio.Event()
        self.started_at = time.time()
        self.capabilities: tuple[str, ...] = (RELAY_CAPABILITY,) if cfg.relay else ()
        # Later subsystems (the ledger) replace this with their live head.
        self.ledger_head: Callable[[], tuple[int, bytes]] = lambda: (0, b"\x00" * 32)
        self.rng_nonce = os.urandom
        self.metrics_port: int | None = None
        self._new_since_provide = True
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
        # Connections not yet handshaken: peer id -> monotonic time the connection opened.
        self._unverified: dict[str, float] = {}
        for peer in bootstrap:
            if peer.peer_id != key.peer_id:  # a shared bootstrap file names us too
                self.table.learn(peer.peer_id, peer.addrs, peer.region)
        self.denied: frozenset[str] = load_deny_list(home.root)
        self.methods.add("status", self._status)
        self.methods.add("peers", self._peers)
        self.methods.add("deny", self._deny)
        host.set_stream_handler(HANDSHAKE_PROTOCOL_ID, self._inbound_handshake)
        self.register_protocol(PING_PROTOCOL_ID, self._serve_ping)
        host.get_network().register_notifee(_ConnectionWatcher(self))
        self.relay = RelayService(self)

    @property
    def peer_id(self) -> str:
        return self.key.peer_id

    def stop(self) -> None:
        self.stop_event.set()

    # ---- handshake -----------------------------------------------------------------

    def _offer(self) -> HandshakeOffer:
        size, root = self.ledger_head()
        return HandshakeOffer(org=self.cfg.org, region=self.cfg.region,
                              capabilities=self.capabilities, domains=self.domains,
                              ledger_size=size, ledger_root=root,
                              certificate=self.credentials.certificate)

    def _admit(self, hello: PeerHello) -> str | None:
        if hello.peer_id in self.denied:
            return "this peer is on our deny list"
        if self.planner.is_banned(hello.peer_id, time.monotonic()):
            return "this peer is temporarily banned for misbehaving"
        return None

    async def _deny(self, peers: list[str]) -> list[str]:
        """Control method: replace the deny list (persisted) and drop denied peers now."""
        lifted = self.denied - set(peers)
        self.denied = save_deny_list(self.home.root, set(peers))
        for peer_id in lifted:  # dial them again now, not after the partition's backoff
            self.planner.connected(peer_id)
            self._discover_now.set()
        for peer_id in sorted(self.denied):
            rec = self.table.get(peer_id)
            if rec is not None and rec.connected:
                self.log.info("peer.denied", peer=peer_id)
                await self._close_connection(peer_id)
        return sorted(self.denied)

    async def _handshake(self, stream: INetStream, remote: str, direction: str) -> Outcome:
        hs = Handshake(self.key, self._offer(), remote, now_ms=int(time.time() * 1000),
                       nonce=self.rng_nonce(16), admit=self._admit,
                       trust=self.credentials.trust)
        await drive_handshake(stream, hs, HANDSHAKE_TIMEOUT_S)
        with contextlib.suppress(Exception):
            await stream.close()
        outcome = hs.outcome
        assert outcome is not None
        if isinstance(outcome, Accepted):
            self.metrics.handshakes.labels(outcome="accepted").inc()
            addrs = self._known_addrs(remote)
            self.table.verified(outcome.peer, addrs, time.time())
            self._unverified.pop(remote, None)
            self.planner.connected(remote)
            self.event_for(remote).set()
            with contextlib.suppress(Exception):
                await self.discovery.add_peer(remote)
            self.metrics.set_peers(self.table.by_region())
            self._new_since_provide = True
            self._discover_now.set()
            peer = outcome.peer
            self.log.info("peer.accepted", peer=remote, org=peer.org, region=peer.region,
                          certified=peer.certified, direction=direction)
            if peer.certificate_problem:
                self.log.warning("peer.uncertified", peer=remote, claimed_org=peer.org,
                                 problem=peer.certificate_problem)
        else:
            assert isinstance(outcome, Rejected)
            self.metrics.handshakes.labels(outcome=outcome.reason.value).inc()
            rec = self.table.learn(remote)
            if not outcome.by_peer:
                rec.score.protocol_error(time.monotonic())
            self.log.warning("peer.rejected", peer=remote, reason=outcome.reason.value,
                             detail=outcome.detail, by_peer=outcome.by_peer,
                             direction=direction)
            await self._close_connection(remote)
        return outcome

    def _known_addrs(self, peer_id: str) -> tuple[str, ...]:
        """The peerstore's addresses for a peer (none for one that listens nowhere, such
        as a private node reached through a relay: the peerstore then raises)."""
        try:
            return tuple(str(a) for a in self.host.get_peerstore().addrs(to_id(peer_id)))
        except Exception:
            return ()

    async def _inbound_handshake(self, stream: INetStream) -> None:
        remote = stream.muxed_conn.peer_id.to_base58()
        await self.peer_task(remote, self._handshake, stream, remote, "inbound")

    async def connect(self, peer_id: str, addrs: Sequence[str] = (), *,
                      via_relay: bool = True) -> Outcome:
        """Dial `peer_id` (at `addrs` or the addresses we know) and handshake.

        Direct addresses first; circuit addresses (`.../p2p-circuit/...`) through their
        relay when there is no direct one or it fails (`via_relay=False`: never)."""
        rec = self.table.learn(peer_id, tuple(addrs))
        direct = [a for a in rec.addrs if not is_circuit_addr(a)]
        relayed = [a for a in rec.addrs if is_circuit_addr(a)] if via_relay else []
        with trio.fail_after(DIAL_TIMEOUT_S):
            # Already connected (it dialled us, or through a relay): just handshake.
            if not self.host.get_network().get_connections(to_id(peer_id)):
                await self._open_connection(peer_id, direct, relayed)
            stream = await self.host.new_stream(to_id(peer_id), [HANDSHAKE_PROTOCOL_ID])
        return await self._handshake(stream, peer_id, "outbound")

    async def _open_connection(self, peer_id: str, direct: list[str], relayed: list[str]
                               ) -> None:
        self._forget_dead_connections(peer_id)
        if direct or not relayed:
            try:
                await self.host.connect(peer_info(peer_id, direct))
                return
            except Exception:
                if not relayed:
                    raise
        await self.relay.dial(peer_id, relayed)

    def _forget_dead_connections(self, peer_id: str) -> None:
        """Undo two py-libp2p 0.8.1 habits before we dial (found by tests/chaos): it keeps
        closed connections listed, so `host.connect` returns at once without dialling and
        every stream then fails; and after a failed dial it refuses to dial that peer for
        60 s. Our own redial planner already paces retries, so both only get in the way
        (a healed partition stayed apart for over a minute)."""
        swarm = self.host.get_network()
        if not isinstance(swarm, Swarm):  # py-libp2p's only network; the interface lacks these
            return
        pid = to_id(peer_id)
        for conn in list(swarm.get_connections(pid)):
            if conn.is_closed and isinstance(conn, SwarmConn):
                swarm.remove_conn(conn)
        swarm.unblock_peer(pid)

    def addresses_changed(self) -> None:
        """What we advertise changed (a relay reservation): re-provide our records now."""
        self._new_since_provide = True
        self._discover_now.set()

    def event_for(self, peer_id: str) -> trio.Event:
        """Set once `peer_id` has handshaken: streams that race the handshake wait on it."""
        return self._verified.setdefault(peer_id, trio.Event())

    async def _on_connected(self, peer_id: str) -> None:
        if peer_id in self.denied or self.planner.is_banned(peer_id, time.monotonic()):
            self.log.info("peer.refused_banned", peer=peer_id)
            await self._close_connection(peer_id)
            return
        rec = self.table.get(peer_id)
        if rec is None or not rec.connected:
            self._unverified.setdefault(peer_id, time.monotonic())

    def _on_disconnected(self, peer_id: str) -> None:
        rec = self.table.get(peer_id)
        if rec is not None and rec.connected:
            self.log.info("peer.disconnected", peer=peer_id)
            self.planner.disconnected(peer_id, time.monotonic())
        self.table.disconnected(peer_id)
        self._verified.pop(peer_id, None)
        self._unverified.pop(peer_id, None)
        self.budgets.pop(peer_id, None)
        self.metrics.set_peers(self.table.by_region())

    async def _close_connection(self, peer_id: str) -> None:
        with contextlib.suppress(Exception), trio.move_on_after(HANDSHAKE_TIMEOUT_S):
            await self.host.disconnect(to_id(peer_id))
        self._on_disconnected(peer_id)

    async def peer_task(self, peer_id: str, fn: Callable[..., Awaitable[Any]],
                        *args: Any) -> None:
        """Work for one peer: a failure drops that peer, never the daemon."""
        await peer_task(self.log, peer_id, self._peer_failed, fn, *args)

    async def _peer_failed(self, peer_id: str, exc: BaseException) -> None:
        self.metrics.dropped.labels(reason="task-failed").inc()
        await self.drop(peer_id, f"a task for this peer failed: {type(exc).__name__}",
                        ban=False)

    async def drop(self, peer_id: str, reason: str, *, ban: bool) -> None:
        """Disconnect a peer (and keep it away for the ban period when it misbehaved)."""
        if ban:
            self.planner.ban(peer_id, time.monotonic())
        self.metrics.dropped.labels(reason="misbehaviour" if ban else "surplus").inc()
        self.log.warning("peer.dropped", peer=peer_id, reason=reason, ban=ban)
        await self._close_connection(peer_id)

    # ---- guarded protocols ---------------------------------------------------------

    def register_protocol(self, protocol_id: str, handler: ProtocolHandler) -> None:
        """Serve `protocol_id` to handshaken peers only, within their per-peer limits."""
        async def guarded(stream: INetStream) -> None:
            await self._serve_stream(protocol_id, handler, stream)

        self.host.set_stream_handler(protocol_id, guarded)  # type: ignore[arg-type]

    def _count(self, protocol_id: str) -> Callable[[str, int], None]:
        def count(direction: str, n: int) -> None:
            self.metrics.bytes.labels(protocol=protocol_id, direction=direction).inc(n)
        return count

    async def _serve_stream(self, protocol_id: str, handler: ProtocolHandler,
                            stream: INetStream) -> None:
        remote = stream.muxed_conn.peer_id.to_base58()
        with trio.move_on_after(HANDSHAKE_TIMEOUT_S):
            await self.event_for(remote).wait()  # its handshake may finish a moment later
        rec = self.table.get(remote)
        if rec is None or not rec.connected:
            with contextlib.suppress(Exception):
                await stream.reset()
            return
        budget = self.budgets.setdefault(remote, PeerBudget(self.limits, time.monotonic()))
        try:
            budget.open_stream()
        except LimitExceeded as exc:
            with contextlib.suppress(Exception):
                await stream.reset()
            await self.misbehaved(remote, protocol_id, exc)
            return
        self.metrics.streams.inc()
        fs = FramedStream(stream, max_frame_size=self.limits.max_frame_size, budget=budget,
                          count_bytes=self._count(protocol_id))
        try:
            await handler(fs, rec)
        except StreamGone:
            return
        except RemoteProtocolError as exc:
            await fs.reset()
            await self.misbehaved(remote, protocol_id, exc)
        except Exception as exc:  # our handler failed on this peer's input: drop the peer
            await fs.reset()
            self.log.error("peer.handler_failed", peer=remote, protocol=protocol_id,
                           error=f"{type(exc).__name__}: {exc}"[:300])
            await self._peer_failed(remote, exc)
        finally:
            budget.close_stream()
            self.metrics.streams.dec()
            await fs.close()

    async def misbehaved(self, peer_id: str, protocol_id: str, exc: RemoteProtocolError
                         ) -> None:
        """Score a peer's protocol error (a timeout counts as a failure); drop and ban it
        when its score says so or it broke a hard limit. Services call this too."""
        now = time.monotonic()
        rec = self.table.learn(peer_id)
        self.metrics.frame_errors.labels(protocol=protocol_id).inc()
        if isinstance(exc, PeerTimeout):
            rec.score.failure(now)
        else:
            rec.score.protocol_error(now)
        self.log.warning("peer.protocol_error", peer=peer_id, protocol=protocol_id,
                         error=exc.message)
        if isinstance(exc, LimitExceeded) or rec.score.should_drop(now):
            await self.drop(peer_id, exc.message, ban=True)

    async def _serve_ping(self, fs: FramedStream, rec: PeerRecord) -> None:
        while True:
            msg = await fs.receive()
            if not isinstance(msg, Ping):
                raise RemoteProtocolError(f"expected gd.ping, got {msg.TYPE}")
            await fs.send(Pong(nonce=msg.nonce))

    async def ping(self, peer_id: str) -> float:
        """Round trip in ms over a fresh stream; PeerTimeout / StreamGone on failure."""
        with trio.fail_after(PING_TIMEOUT_S):
            stream = await self.host.new_stream(to_id(peer_id), [PING_PROTOCOL_ID])
        fs = FramedStream(stream, read_timeout_s=PING_TIMEOUT_S,
                          count_bytes=self._count(PING_PROTOCOL_ID))
        try:
            nonce = self.rng_nonce(PING_NONCE_BYTES)
            start = time.perf_counter()
            reply = await fs.request(Ping(nonce=nonce))
            rtt_ms = (time.perf_counter() - start) * 1000
            if not isinstance(reply, Pong) or reply.nonce != nonce:
                raise RemoteProtocolError("ping answered with the wrong message")
            return rtt_ms
        finally:
            await fs.close()

    # ---- loops ---------------------------------------------------------------------

    async def dial(self, peer_id: str) -> None:
        """Connect and handshake; a failure only scores the peer and backs the planner off."""
        try:
            outcome = await self.connect(peer_id)
        except Exception as exc:  # any dial failure is just a failed attempt
            self.table.learn(peer_id).score.failure(time.monotonic())
            retry = self.planner.dial_failed(peer_id, time.monotonic())
            self.log.info("peer.dial_failed", peer=peer_id, error=repr(exc)[:200],
                          retry_in_s=round(retry - time.monotonic(), 1))
            return
        if not isinstance(outcome, Accepted):
            self.planner.dial_failed(peer_id, time.monotonic())

    async def mesh_loop(self, nursery: trio.Nursery) -> None:
        while True:
            plan = self.planner.plan(time.monotonic(), self.table)
            for drop in plan.drop:
                nursery.start_soon(self.peer_task, drop.peer_id,
                                   functools.partial(self.drop, drop.peer_id, drop.reason,
                                                     ban=drop.ban))
            for peer_id in plan.dial:
                self.planner.dial_started(peer_id)
                nursery.start_soon(self.peer_task, peer_id, self.dial, peer_id)
            await trio.sleep(MESH_TICK_S)

    async def discovery_loop(self) -> None:
        last_provide = -REPROVIDE_S
        while True:
            with trio.move_on_after(DISCOVERY_INTERVAL_S):
                await self._discover_now.wait()
            self._discover_now = trio.Event()
            if not self.table.connected():
                continue
            now = time.monotonic()
            try:
                if now - last_provide >= REPROVIDE_S or self._new_since_provide:
                    self._new_since_provide = False
                    await self.discovery.advertise(self.cfg.region, self.domains,
                                                   relay=self.cfg.relay)
                    last_provide = now
                found = await self.discovery.find_region_peers(self.cfg.region)
                if self.relay.private and len(self.relay.book.held) < self.relay.book.wanted:
                    found += await self.discovery.find_relays(self.cfg.region)
            except Exception as exc:  # the DHT is best effort; the mesh keeps what it has
                self.log.info("discovery.failed", error=repr(exc)[:200])
                continue
            for peer in found:
                if peer.peer_id != self.peer_id:
                    self.table.learn(peer.peer_id, peer.addrs, self.cfg.region)
            self.log.debug("discovery.round", found=len(found))

    async def liveness_loop(self, nursery: trio.Nursery) -> None:
        async def probe(peer_id: str) -> None:
            rec = self.table.get(peer_id)
            try:
                rtt = await self.ping(peer_id)
            except Exception as exc:  # timeout, reset, garbage: all mean no answer
                if rec is not None and rec.connected:
                    rec.score.failure(time.monotonic())
                    self.log.info("peer.ping_failed", peer=peer_id, error=repr(exc)[:200])
                    await self.drop(peer_id, "no answer to ping", ban=False)
                return
            if rec is not None:
                rec.score.rtt(rtt)

        interval = self.cfg.mesh.ping_interval_s
        while True:
            await trio.sleep(interval)
            for rec in self.table.connected():
                nursery.start_soon(self.peer_task, rec.peer_id, probe, rec.peer_id)

    async def handshake_watchdog(self) -> None:
        """Close connections whose peer has not handshaken within the deadline."""
        deadline = self.cfg.mesh.handshake_deadline_s
        while True:
            await trio.sleep(min(MESH_TICK_S, deadline / 4))
            now = time.monotonic()
            for peer_id, since in list(self._unverified.items()):
                rec = self.table.get(peer_id)
                if rec is not None and rec.connected:
                    self._unverified.pop(peer_id, None)
                elif now - since >= deadline:
                    self._unverified.pop(peer_id, None)
                    self.table.learn(peer_id).score.failure(now)
                    self.metrics.dropped.labels(reason="no-handshake").inc()
                    self.log.warning("peer.no_handshake", peer=peer_id,
                                     after_s=round(now - since, 1))
                    await self._close_connection(peer_id)

    # ---- control methods -----------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return {"ok": not self.stop_event.is_set(), "peer_id": self.peer_id,
                "peers": len(self.table.connected()),
                "uptime_s": round(time.time() - self.started_at, 1)}

    def _cortex_bytes(self) -> int:
        try:
            return (self.home.cortex_path / "data.mdb").stat().st_size
        except OSError:
            return 0

    async def _status(self) -> dict[str, Any]:
        size, root = self.ledger_head()
        cortex_bytes = self._cortex_bytes()
        self.metrics.cortex_bytes.set(cortex_bytes)
        self.metrics.ledger_height.set(size)
        return {
            "peer_id": self.peer_id, "org": self.cfg.org, "region": self.cfg.region,
            "addrs": dialable_addrs(self.host), "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "peers": len(self.table.connected()), "peers_by_region": self.table.by_region(),
            "known_peers": len(self.table), "dht_peers": self.dht.get_routing_table_size(),
            "cortex_bytes": cortex_bytes, "ledger_height": size, "ledger_root": root.hex(),
            "metrics_port": self.metrics_port, "api_url": self.api_url,
            "adaptation": (await trio.to_thread.run_sync(self.auto_adapt.summary)
                           if self.auto_adapt is not None else None),
            "methods": self.methods.names(),
            "sync_lag": self.sync.lag() if self.sync is not None else 0,
            "conflicts": (await trio.to_thread.run_sync(lambda: len(self.sync.store.conflicts()))
                          if self.sync is not None else 0),
        }

    async def _peers(self, all: bool = False) -> list[dict[str, Any]]:
        return self.table.rows(time.monotonic(), connected_only=not all)


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
                     share_policy: SharePolicy | None = None) -> None:
    """Run the node until SIGINT/SIGTERM (or `daemon.stop()`), then shut down cleanly.

    `share_policy` (tests and benchmarks, in-process only: the binary never passes one)
    replaces sovereignty's per-peer views with a plain `(receiver, gene) -> bool`.

    `listen` overrides `cfg.listen`; `bootstrap` overrides the config's bootstrap file.
    `ready_callback(daemon)` runs once the host listens and the control socket is up.
    The caller opens and closes `cortex`; we only read its size. Raises
    AlreadyRunning, BootstrapError, ConfigError or HostError before starting.
    """
    log = get_logger("gd.node").bind(peer_id=key.peer_id)
    boot_path = bootstrap if bootstrap is not None else cfg.resolve_bootstrap(home.root)
    boot_peers = load_bootstrap(boot_path) if boot_path is not None else []
    credentials = load_credentials(home.root, cfg, key, boot_path)
    if credentials.note:
        log.warning("node.certificate_unusable", note=credentials.note)
    check_api_config(cfg.api, home.root)
    with PidLock(home.pid_path):
        async with running_host(key, listen or list(cfg.listen)) as host:
            dht = new_dht(host)
            async with background_trio_service(dht):
                daemon = Daemon(home=home, cfg=cfg, key=key, cortex=cortex, host=host, dht=dht,
                                bootstrap=boot_peers, domains=domains, log=log,
                                credentials=credentials)
                daemon.boot_path = boot_path
                if cortex is not None:
                    daemon.sync = SyncService(daemon, share_policy=share_policy)
                    daemon.ledger = LedgerService(daemon)
                    daemon.ledger_head = daemon.ledger.head
                    daemon.sovereignty = SovereigntyService(
                        daemon, daemon.sync, ledger_route=daemon.ledger.route())
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
                        if metrics_server is not None:  # on this loop: see node/metrics.py
                            nursery.start_soon(metrics_server.serve)
                        if handle_signals and threading.current_thread() is threading.main_thread():
                            nursery.start_soon(_watch_signals, daemon)
                        services: list[tuple[str, Callable[..., Awaitable[Any]],
                                             tuple[Any, ...]]] = [
                            ("mesh", daemon.mesh_loop, (nursery,)),
                            ("discovery", daemon.discovery_loop, ()),
                            ("liveness", daemon.liveness_loop, (nursery,)),
                            ("handshake-watchdog", daemon.handshake_watchdog, ()),
                            ("relay", daemon.relay.run, ()),
                        ]
                        if cfg.mdns:
                            daemon.mdns = MdnsService(daemon)
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
