"""The gate: the one object between the libp2p host and the node's services.

Why one object (issue 12 item 3): protocol registration, serving streams within the
per-peer budgets, misbehaviour scoring, the handshake and each peer's lifetime used to
live in the Daemon, and services reached into it (and into each other). The gate owns
them; services receive the gate and their stores, register their protocols here, report
a peer's protocol errors through `misbehaved`, and follow peers through `on_peer`
(a `PeerChange` when a peer has handshaken and when it has gone) instead of polling.

    connection opened ──► unverified (the watchdog closes it after the deadline)
    handshake accepted ──► table.verified, planner.connected, PeerChange(up=True)
    stream for a registered protocol ──► budget ──► handler ──► misbehaved / drop
    disconnected ──► table.disconnected, budget forgotten, PeerChange(up=False)

Whether a connected peer still answers is `node/net/liveness.py`'s (`gate.liveness`: the
timed pings, and a probe at once for a peer a service finds silent). Time comes from the
injected clock (`gd.crdt.clock.Clock`), never from `time`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.custom_types import TProtocol
from libp2p.network.connection.swarm_connection import SwarmConn
from libp2p.network.swarm import Swarm

from gd.crdt.clock import Clock
from gd.genome.identity import NodeKey
from gd.node.config import NodeConfig
from gd.node.credentials import NodeCredentials
from gd.node.metrics import NodeMetrics
from gd.node.net.conn_order import ConnectionOrder
from gd.node.net.denylist import save_deny_list
from gd.node.net.discovery import Discovery
from gd.node.net.host import peer_info, to_id
from gd.node.net.lifetimes import PeerLifetimes
from gd.node.net.liveness import Liveness
from gd.node.net.mesh import MeshPlanner
from gd.node.net.peers import LimitExceeded, PeerBudget, PeerRecord, PeerTable
from gd.node.net.relay import RELAY_CAPABILITY, RelayService, is_circuit_addr
from gd.node.net.streams import (
    HANDSHAKE_TIMEOUT_S,
    FramedStream,
    PeerTimeout,
    StreamGone,
    drive_handshake,
)
from gd.node.supervise import peer_task
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

DIAL_TIMEOUT_S = 10.0
# How often the handshake watchdog looks at unverified connections (at most).
WATCHDOG_TICK_S = 1.0

ProtocolHandler = Callable[[FramedStream, PeerRecord], Awaitable[None]]

# The sans-I/O handshake module does not import libp2p; its id is typed here.
HANDSHAKE_PROTOCOL_ID = TProtocol(_HANDSHAKE_ID)


@dataclass(frozen=True)
class PeerChange:
    """A peer has handshaken (`up`) or its connection has gone (`not up`)."""

    peer_id: str
    up: bool


PeerListener = Callable[[PeerChange], None]


class _ConnectionWatcher(INotifee):
    """libp2p connection events → the gate (only connects and disconnects matter)."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self.gate.conn_order.opened(conn.muxed_conn)
        await self.gate.connection_opened(conn.muxed_conn.peer_id.to_base58())

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id
        # A peer reached on two connections (a simultaneous dial; py-libp2p trims the
        # surplus one after its grace period) is still connected when one of them
        # closes: ending its lifetime then cancelled its work mid-flight for nothing.
        if any(c is not conn and not c.is_closed for c in network.get_connections(peer)):
            return
        self.gate.connection_closed(peer.to_base58())

    async def listen(self, network: INetwork, multiaddr: Any) -> None:
        return

    async def listen_close(self, network: INetwork, multiaddr: Any) -> None:
        return


class Gate:
    """Owns who may talk to us and how: handshake, protocols, budgets, scores, lifetimes."""

    def __init__(self, *, host: IHost, key: NodeKey, cfg: NodeConfig, log: Any,
                 metrics: NodeMetrics, methods: Any, clock: Clock, home_root: Path,
                 domains: tuple[str, ...], denied: frozenset[str],
                 credentials: NodeCredentials, nonce: Callable[[int], bytes],
                 discovery: Discovery) -> None:
        self.host, self.key, self.cfg, self.log = host, key, cfg, log
        self.discovery = discovery
        self.metrics, self.methods, self.clock = metrics, methods, clock
        self.home_root, self.domains, self.denied = home_root, domains, denied
        # Our org certificate and the org keys we trust; `org trust` replaces them.
        self.credentials = credentials
        self.rng_nonce = nonce
        self.policy, self.limits = cfg.mesh.policy(cfg.region), cfg.mesh.limits()
        self.planner = MeshPlanner(self.policy, seed=cfg.mesh.seed)
        self.table = PeerTable()
        self.budgets: dict[str, PeerBudget] = {}
        self.capabilities: tuple[str, ...] = (RELAY_CAPABILITY,) if cfg.relay else ()
        # The ledger replaces this with its live head (offered in each handshake).
        self.ledger_head: Callable[[], tuple[int, bytes]] = lambda: (0, b"\x00" * 32)
        # Connections not yet handshaken: peer id -> monotonic time the connection opened.
        self.unverified: dict[str, float] = {}
        self._verified: dict[str, trio.Event] = {}
        self._listeners: list[PeerListener] = []
        # Each connected peer's work (`spawn`), cancelled when its connection goes.
        self.lifetimes = PeerLifetimes(log, self._peer_failed)
        self._discover_now = trio.Event()
        self._new_addresses = True
        host.set_stream_handler(HANDSHAKE_PROTOCOL_ID, self._inbound_handshake)
        self.liveness = Liveness(self)  # serves /gd/ping; the daemon runs its timer
        # Streams go on a peer's newest connection (ADR 0056), numbered as they open.
        self.conn_order = ConnectionOrder()
        self.conn_order.install(host.get_network())
        host.get_network().register_notifee(_ConnectionWatcher(self))
        self.relay = RelayService(self)

    @property
    def peer_id(self) -> str:
        return self.key.peer_id

    # ---- connection events -------------------------------------------------------------

    def on_peer(self, listener: PeerListener) -> None:
        """Call `listener` (on the trio thread, must not block) for every PeerChange."""
        self._listeners.append(listener)

    def _announce(self, change: PeerChange) -> None:
        for listener in self._listeners:
            try:
                listener(change)
            except Exception as exc:  # one service's bug must not cut the others off
                self.log.error("gate.listener_failed", peer=change.peer_id,
                               error=f"{type(exc).__name__}: {exc}"[:300])

    def event_for(self, peer_id: str) -> trio.Event:
        """Set once `peer_id` has handshaken: streams that race the handshake wait on it."""
        return self._verified.setdefault(peer_id, trio.Event())

    def addresses_changed(self) -> None:
        """What we advertise changed (a relay reservation): re-provide our records now."""
        self._new_addresses = True
        self._discover_now.set()

    async def wait_for_discovery(self, timeout_s: float) -> None:
        """Until a new peer or new addresses ask for a discovery round, or `timeout_s`."""
        with trio.move_on_after(timeout_s):
            await self._discover_now.wait()
        self._discover_now = trio.Event()

    def take_new_addresses(self) -> bool:
        """Whether our records changed since the last call (then re-provide them)."""
        new, self._new_addresses = self._new_addresses, False
        return new

    async def connection_opened(self, peer_id: str) -> None:
        if peer_id in self.denied or self.planner.is_banned(peer_id, self.clock.monotonic()):
            self.log.info("peer.refused_banned", peer=peer_id)
            await self.close_connection(peer_id)
            return
        rec = self.table.get(peer_id)
        if rec is None or not rec.connected:
            self.unverified.setdefault(peer_id, self.clock.monotonic())

    def connection_closed(self, peer_id: str) -> None:
        rec = self.table.get(peer_id)
        was_up = rec is not None and rec.connected
        if was_up:
            self.log.info("peer.disconnected", peer=peer_id)
            self.planner.disconnected(peer_id, self.clock.monotonic())
        self.table.disconnected(peer_id)
        self.lifetimes.end(peer_id)
        self._verified.pop(peer_id, None)
        self.unverified.pop(peer_id, None)
        self.budgets.pop(peer_id, None)
        self.metrics.set_peers(self.table.by_region())
        if was_up:
            self._announce(PeerChange(peer_id, up=False))

    async def close_connection(self, peer_id: str) -> None:
        # Shielded (and bounded): a task of the peer's own lifetime may be the one
        # dropping it, and its scope is cancelled half-way through the disconnect.
        with trio.CancelScope(shield=True):
            with contextlib.suppress(Exception), trio.move_on_after(HANDSHAKE_TIMEOUT_S):
                await self.host.disconnect(to_id(peer_id))
            self.connection_closed(peer_id)

    async def handshake_watchdog(self) -> None:
        """Close connections whose peer has not handshaken within the deadline."""
        deadline = self.cfg.mesh.handshake_deadline_s
        while True:
            await trio.sleep(min(WATCHDOG_TICK_S, deadline / 4))
            now = self.clock.monotonic()
            for peer_id, since in list(self.unverified.items()):
                rec = self.table.get(peer_id)
                if rec is not None and rec.connected:
                    self.unverified.pop(peer_id, None)
                elif now - since >= deadline:
                    self.unverified.pop(peer_id, None)
                    self.table.learn(peer_id).score.failure(now)
                    self.metrics.dropped.labels(reason="no-handshake").inc()
                    self.log.warning("peer.no_handshake", peer=peer_id,
                                     after_s=round(now - since, 1))
                    await self.close_connection(peer_id)

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
        if self.planner.is_banned(hello.peer_id, self.clock.monotonic()):
            return "this peer is temporarily banned for misbehaving"
        return None

    async def set_deny_list(self, peers: Sequence[str]) -> list[str]:
        """Replace the deny list (persisted) and drop denied peers now."""
        lifted = self.denied - set(peers)
        self.denied = save_deny_list(self.home_root, set(peers))
        for peer_id in lifted:  # dial them again now, not after the partition's backoff
            self.planner.connected(peer_id)
            self._discover_now.set()
        for peer_id in sorted(self.denied):
            rec = self.table.get(peer_id)
            if rec is not None and rec.connected:
                self.log.info("peer.denied", peer=peer_id)
                await self.close_connection(peer_id)
        return sorted(self.denied)

    async def _handshake(self, stream: INetStream, remote: str, direction: str) -> Outcome:
        hs = Handshake(self.key, self._offer(), remote, now_ms=int(self.clock.wall() * 1000),
                       nonce=self.rng_nonce(16), admit=self._admit,
                       trust=self.credentials.trust)
        await drive_handshake(stream, hs, HANDSHAKE_TIMEOUT_S)
        with contextlib.suppress(Exception):
            await stream.close()
        outcome = hs.outcome
        assert outcome is not None
        if isinstance(outcome, Accepted):
            self.metrics.handshakes.labels(outcome="accepted").inc()
            self.table.verified(outcome.peer, self._known_addrs(remote), self.clock.wall())
            self.unverified.pop(remote, None)
            self.lifetimes.begin(remote)
            self.planner.connected(remote)
            self.event_for(remote).set()
            with contextlib.suppress(Exception):
                await self.discovery.add_peer(remote)
            self.metrics.set_peers(self.table.by_region())
            self._new_addresses = True
            self._discover_now.set()
            peer = outcome.peer
            self.log.info("peer.accepted", peer=remote, org=peer.org, region=peer.region,
                          certified=peer.certified, direction=direction)
            if peer.certificate_problem:
                self.log.warning("peer.uncertified", peer=remote, claimed_org=peer.org,
                                 problem=peer.certificate_problem)
            self._announce(PeerChange(remote, up=True))
        else:
            assert isinstance(outcome, Rejected)
            self.metrics.handshakes.labels(outcome=outcome.reason.value).inc()
            rec = self.table.learn(remote)
            if not outcome.by_peer:
                rec.score.protocol_error(self.clock.monotonic())
            self.log.warning("peer.rejected", peer=remote, reason=outcome.reason.value,
                             detail=outcome.detail, by_peer=outcome.by_peer,
                             direction=direction)
            await self.close_connection(remote)
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

    # ---- dialling ----------------------------------------------------------------------

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

    async def dial(self, peer_id: str) -> None:
        """Connect and handshake; a failure only scores the peer and backs the planner off."""
        try:
            outcome = await self.connect(peer_id)
        except Exception as exc:  # any dial failure is just a failed attempt
            now = self.clock.monotonic()
            self.table.learn(peer_id).score.failure(now)
            retry = self.planner.dial_failed(peer_id, now)
            self.log.info("peer.dial_failed", peer=peer_id, error=repr(exc)[:200],
                          retry_in_s=round(retry - now, 1))
            return
        if not isinstance(outcome, Accepted):
            self.planner.dial_failed(peer_id, self.clock.monotonic())

    # ---- per-peer work, scores, drops -------------------------------------------------

    def spawn(self, peer_id: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Run `fn(*args)` in the connected peer's lifetime (node/net/lifetimes.py): its
        going cancels it, its failure drops only that peer. False if not connected."""
        return self.lifetimes.spawn(peer_id, fn, *args)

    async def peer_task(self, peer_id: str, fn: Callable[..., Awaitable[Any]],
                        *args: Any) -> None:
        """Work about a peer that is not (yet) connected (dial, handshake, drop): a
        failure drops that peer, never the daemon; the caller's nursery owns it."""
        await peer_task(self.log, peer_id, self._peer_failed, fn, *args)

    async def _peer_failed(self, peer_id: str, exc: BaseException) -> None:
        self.metrics.dropped.labels(reason="task-failed").inc()
        await self.drop(peer_id, f"a task for this peer failed: {type(exc).__name__}",
                        ban=False)

    async def drop(self, peer_id: str, reason: str, *, ban: bool) -> None:
        """Disconnect a peer (and keep it away for the ban period when it misbehaved)."""
        if ban:
            self.planner.ban(peer_id, self.clock.monotonic())
        self.metrics.dropped.labels(reason="misbehaviour" if ban else "surplus").inc()
        self.log.warning("peer.dropped", peer=peer_id, reason=reason, ban=ban)
        await self.close_connection(peer_id)

    async def misbehaved(self, peer_id: str, protocol_id: str, exc: RemoteProtocolError
                         ) -> None:
        """Score a peer's protocol error (a timeout counts as a failure); drop and ban it
        when its score says so or it broke a hard limit. Services call this too."""
        now = self.clock.monotonic()
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

    # ---- guarded protocols ---------------------------------------------------------

    def register_protocol(self, protocol_id: str, handler: ProtocolHandler) -> None:
        """Serve `protocol_id` to handshaken peers only, within their per-peer limits."""
        async def guarded(stream: INetStream) -> None:
            await self._serve_stream(protocol_id, handler, stream)

        self.host.set_stream_handler(protocol_id, guarded)  # type: ignore[arg-type]

    def count_bytes(self, protocol_id: str) -> Callable[[str, int], None]:
        """A FramedStream byte counter feeding the per-protocol traffic metric."""
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
        budget = self.budgets.setdefault(remote, PeerBudget(self.limits,
                                                            self.clock.monotonic()))
        try:
            budget.open_stream()
        except LimitExceeded as exc:
            with contextlib.suppress(Exception):
                await stream.reset()
            await self.misbehaved(remote, protocol_id, exc)
            return
        self.metrics.streams.inc()
        fs = FramedStream(stream, max_frame_size=self.limits.max_frame_size, budget=budget,
                          count_bytes=self.count_bytes(protocol_id), now=self.clock.monotonic)
        try:
            with self.lifetimes.scope(remote):  # the peer going cancels what it asked for
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
