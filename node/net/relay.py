"""Circuit relay v2: reaching a node that cannot be dialled directly.

Three roles, all on py-libp2p 0.8.1's relay v2 (`libp2p.relay.circuit_v2`):

* **hop** (`relay = true`): we serve `/libp2p/circuit/relay/0.2.0/hop` to handshaken
  peers *of our region* only — a certified region, not a claim (reservations and
  connects alike); everyone else gets a
  reset. The relay forwards Noise ciphertext: it never sees what the two ends say.
* **private** (`reachability = "private"`): we advertise no direct address. Once a
  handshaken peer of our region offers the `relay-v2` capability, we reserve a slot on
  it and advertise `<relay addr>/p2p/RELAY/p2p-circuit/p2p/ME` instead: in the DHT
  provider records (they carry `host.get_addrs()`), in identify and in `status`.
* **dialer** (every node): an address with `/p2p-circuit` is dialled through the relay
  it names (the relay itself is dialled and handshaken first, so its region check
  passes). py-libp2p's swarm skips circuit addresses, so `Gate.connect` routes them
  here.

The handshake runs over the relayed connection exactly as over TCP: the peer id comes
from the Noise session between the two *ends*, so a relay cannot impersonate either.

`ReservationBook` decides which relays to (re)reserve and what to advertise; it is
sans-I/O (wall-clock `now` passed in) and unit-tested. `RelayService` does the I/O.

Traps of the pinned version, handled here:
* A `RelayLimits.data` of 0 does not mean "unlimited": every byte is refused.
* `host.get_addrs()` strips everything after the first `/p2p/` of an address before
  appending ours, so an `addrs_factory` cannot produce circuit addresses; a private
  node replaces its host's `get_addrs` instead (the host object is ours alone).
* `CircuitV2Transport.reserve()` starts its own refresher; we refresh from our loop
  and call `_make_reservation` (a private method of the pinned version) directly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import multiaddr
import trio
from libp2p.abc import INetStream
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.tools.anyio_service import background_trio_service

from gd.node.net.host import to_id
from gd.node.net.streams import HANDSHAKE_TIMEOUT_S

if TYPE_CHECKING:
    from gd.node.net.gate import Gate

# Offered in the signed handshake by `relay = true` nodes: a private node learns which
# peers relay from a claim it has verified, not from an unsigned DHT record.
RELAY_CAPABILITY = "relay-v2"
CIRCUIT = "/p2p-circuit"

# ---- what a relay grants ---------------------------------------------------------------
# Reservations: one per private peer of the region; a region is tens of nodes, and each
# reservation costs only a table entry until a circuit opens.
MAX_RESERVATIONS = 32
# Concurrent circuits to one reserved peer: its in-region mesh (≤ 12 peers, mesh.py) plus
# slack for redials that overlap a closing circuit.
MAX_CIRCUITS_PER_PEER = 16
# A reservation lives an hour (libp2p's default); the holder refreshes well before.
RESERVATION_TTL_S = 3600
# A circuit is cut after an hour or 1 GiB (a full 100k-gene sync is ~100 MB); the mesh
# then redials through the relay, which re-checks the reservation. go-libp2p's defaults
# (2 min, 128 KiB) only cover a hole punch; our relays carry whole sessions, in region.
CIRCUIT_MAX_S = 3600
CIRCUIT_MAX_BYTES = 1 << 30

# ---- what a private node does ------------------------------------------------------------
# Relays to hold a reservation on: two, so losing one leaves the node reachable.
RELAYS_WANTED = 2
# Refresh a reservation this long before it expires (a refresh is one round trip).
REFRESH_MARGIN_S = 300.0
# After a refused or failed reservation, wait this long before asking that relay again.
RESERVE_RETRY_S = 30.0
# Bound on one reservation request (stream open + one round trip).
RESERVE_TIMEOUT_S = 10.0
# How often the reservation loop looks at the peer table.
RESERVATION_TICK_S = 1.0
# Direct addresses of one relay used to build our circuit addresses.
MAX_RELAY_ADDRS = 4


def is_circuit_addr(addr: str) -> bool:
    return CIRCUIT + "/" in addr + "/"


def _strip_p2p(addr: str) -> str:
    """`/ip4/.../tcp/N/p2p/ID` → `/ip4/.../tcp/N` (one trailing /p2p component)."""
    head, sep, _tail = addr.rpartition("/p2p/")
    return head if sep and "/" not in _tail else addr


def circuit_relay(addr: str, peer_id: str) -> tuple[str, tuple[str, ...], str]:
    """Relay peer id, its direct addresses (maybe none) and the address to dial.

    `/ip4/1.2.3.4/tcp/4001/p2p/R/p2p-circuit[/p2p/D]` with `peer_id` D →
    (R, ("/ip4/1.2.3.4/tcp/4001",), ".../p2p/R/p2p-circuit/p2p/D"). Raises ValueError
    when `addr` is not a circuit address that names its relay, names another
    destination, or names `peer_id` as its own relay.
    """
    relay_part, sep, rest = addr.partition(CIRCUIT)
    head, p2p, relay_id = relay_part.rpartition("/p2p/")
    if not sep or not p2p or not relay_id or "/" in relay_id:
        raise ValueError(f"{addr} is not a circuit address naming its relay")
    if rest not in ("", f"/p2p/{peer_id}"):
        raise ValueError(f"{addr} does not lead to {peer_id}")
    if relay_id == peer_id:
        raise ValueError(f"{addr}: a peer cannot relay for itself")
    return relay_id, ((head,) if head else ()), f"{relay_part}{CIRCUIT}/p2p/{peer_id}"


def circuit_addr(relay_addr: str, relay_id: str, peer_id: str) -> str:
    return f"{_strip_p2p(relay_addr)}/p2p/{relay_id}{CIRCUIT}/p2p/{peer_id}"


def relay_limits() -> RelayLimits:
    return RelayLimits(duration=CIRCUIT_MAX_S, data=CIRCUIT_MAX_BYTES,
                       max_circuit_conns=MAX_CIRCUITS_PER_PEER,
                       max_reservations=MAX_RESERVATIONS, reservation_ttl=RESERVATION_TTL_S)


# ---- sans-I/O: which relays, which addresses ---------------------------------------------


@dataclass
class _Held:
    expires_at: float
    addrs: tuple[str, ...]


@dataclass
class ReservationBook:
    """A private node's reservations. `now` is wall-clock seconds (reservation expiries
    come from the relay as Unix times)."""

    wanted: int = RELAYS_WANTED
    held: dict[str, _Held] = field(default_factory=dict)
    _retry_at: dict[str, float] = field(default_factory=dict)

    def due(self, now: float, candidates: Iterable[str]) -> list[str]:
        """Relays to ask now: held ones near expiry, then new ones up to `wanted`."""
        pool = sorted(set(candidates))
        out = [r for r in pool if r in self.held
               and self.held[r].expires_at - now <= REFRESH_MARGIN_S
               and self._retry_at.get(r, 0.0) <= now]
        free = self.wanted - len(self.held)
        for relay in pool:
            if free <= 0:
                break
            if relay not in self.held and self._retry_at.get(relay, 0.0) <= now:
                out.append(relay)
                free -= 1
        return out

    def reserved(self, relay_id: str, expires_at: float, addrs: tuple[str, ...]) -> bool:
        """Record a granted reservation; True when the advertised addresses change."""
        before = self.held.get(relay_id)
        self.held[relay_id] = _Held(expires_at, addrs[:MAX_RELAY_ADDRS])
        self._retry_at.pop(relay_id, None)
        return before is None or before.addrs != self.held[relay_id].addrs

    def failed(self, relay_id: str, now: float) -> None:
        self._retry_at[relay_id] = now + RESERVE_RETRY_S

    def prune(self, now: float, candidates: Iterable[str]) -> bool:
        """Forget reservations on relays we no longer reach or that expired; True if any."""
        live = set(candidates)
        gone = [r for r, h in self.held.items() if r not in live or h.expires_at <= now]
        for relay in gone:
            del self.held[relay]
        return bool(gone)

    def advertised(self, peer_id: str) -> list[str]:
        """Our circuit addresses, one per (relay, relay address), stable order."""
        return [circuit_addr(a, relay, peer_id)
                for relay in sorted(self.held) for a in self.held[relay].addrs]


# ---- the I/O ----------------------------------------------------------------------------


class RelayService:
    """Relay v2 for one gate: hop for our region, reservations when private, dialing."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.host = gate.host
        self.hop = gate.cfg.relay
        self.private = gate.cfg.reachability == "private"
        self.limits = relay_limits()
        # allow_hop=False: the protocol would register an unguarded hop handler; ours
        # (below) admits region peers and then hands the stream to the protocol.
        self.protocol = CircuitV2Protocol(self.host, limits=self.limits, allow_hop=False)
        # STOP only: dialing through a relay must not make a reservation on it first.
        self.transport = CircuitV2Transport(
            self.host, self.protocol, RelayConfig(roles=RelayRole.STOP, limits=self.limits))
        self.book = ReservationBook()
        if self.hop:
            self.host.set_stream_handler(HOP_PROTOCOL_ID, self._serve_hop)
        if self.private:
            self.host.get_addrs = self._advertised_multiaddrs  # type: ignore[method-assign]

    # ---- hop ---------------------------------------------------------------------------

    async def _serve_hop(self, stream: INetStream) -> None:
        d = self.gate
        remote = stream.muxed_conn.peer_id.to_base58()
        with trio.move_on_after(HANDSHAKE_TIMEOUT_S):
            await d.event_for(remote).wait()
        rec = d.table.get(remote)
        # The region must be certified (an org key we pin vouches for it): relaying
        # carries whole sessions, so a bare claim of our region gets nothing.
        if (rec is None or not rec.connected or rec.certified_region != d.cfg.region
                or remote in d.denied):
            d.log.info("relay.refused", peer=remote,
                       region=None if rec is None else rec.certified_region)
            with contextlib.suppress(Exception):
                await stream.reset()
            return
        await self.protocol._handle_hop_stream(stream)

    # ---- private: reservations ------------------------------------------------------------

    def _advertised_multiaddrs(self) -> list[multiaddr.Multiaddr]:
        return [multiaddr.Multiaddr(a) for a in self.book.advertised(self.gate.peer_id)]

    def candidates(self) -> list[str]:
        """Connected, handshaken peers of our region that offer relay v2."""
        region = self.gate.cfg.region
        return [r.peer_id for r in self.gate.table.connected()
                if r.certified_region == region and RELAY_CAPABILITY in r.capabilities]

    def _relay_addrs(self, relay_id: str) -> tuple[str, ...]:
        rec = self.gate.table.get(relay_id)
        addrs = () if rec is None else rec.addrs
        direct = (_strip_p2p(a) for a in addrs if not is_circuit_addr(a))
        return tuple(dict.fromkeys(a for a in direct if a and a != "/"))

    async def reserve(self, relay_id: str) -> float | None:
        """Ask `relay_id` for a slot; its expiry (Unix seconds), or None if refused."""
        rid = to_id(relay_id)
        with trio.move_on_after(RESERVE_TIMEOUT_S):
            try:
                stream = await self.host.new_stream(rid, [HOP_PROTOCOL_ID])
            except Exception:  # no hop protocol, or the relay's guard reset the stream
                return None
            try:
                if await self.transport._make_reservation(stream, rid):
                    return float(self.transport._reservations.get(rid, 0))
            finally:
                with contextlib.suppress(Exception):
                    await stream.close()
        return None

    async def reservation_loop(self) -> None:
        d = self.gate
        while True:
            now = d.clock.wall()
            candidates = self.candidates()
            changed = self.book.prune(now, candidates)
            for relay_id in self.book.due(now, candidates):
                addrs = self._relay_addrs(relay_id)
                expires = await self.reserve(relay_id) if addrs else None
                if expires is None:
                    self.book.failed(relay_id, d.clock.wall())
                    d.log.info("relay.reserve_failed", relay=relay_id,
                               reason="no direct address" if not addrs else "refused")
                    continue
                if self.book.reserved(relay_id, expires, addrs):
                    changed = True
                    d.log.info("relay.reserved", relay=relay_id,
                               expires_in_s=round(expires - d.clock.wall()))
            if changed:
                d.addresses_changed()
            await trio.sleep(RESERVATION_TICK_S)

    # ---- dialer ------------------------------------------------------------------------

    async def dial(self, peer_id: str, circuit_addrs: Iterable[str]) -> None:
        """Connect to `peer_id` through the first relay that works. Raises the last
        error (or ConnectionError when no address names a relay)."""
        last: Exception = ConnectionError(f"no usable circuit address for {peer_id}")
        for addr in circuit_addrs:
            try:
                relay_id, relay_addrs, target = circuit_relay(addr, peer_id)
                if relay_id == self.gate.peer_id:
                    raise ValueError(f"{addr}: we cannot relay to ourselves")
                rec = self.gate.table.get(relay_id)
                if rec is None or not rec.connected:
                    await self.gate.connect(relay_id, relay_addrs, via_relay=False)
                await self.transport.dial(multiaddr.Multiaddr(target))
                return
            except Exception as exc:  # try the next relay; the caller sees the last error
                last = exc
        raise last

    async def run(self) -> None:
        """The protocol service (STOP handler for relayed inbound connections) and, when
        private, the reservation loop."""
        async with background_trio_service(self.protocol):
            if self.private:
                await self.reservation_loop()
            else:
                await trio.sleep_forever()
