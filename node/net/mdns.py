"""mDNS on the LAN: announce ourselves, and dial the gd peers that others announce.

py-libp2p 0.8.1's `MDNSDiscovery` (zeroconf) registers our service and *reports* peers
it hears: a callback on the process-wide `peerDiscovery` emitter, called from zeroconf's
own thread. It never connects; connecting is ours, through the same `Gate.connect`
(dial + signed handshake) as every other dial, after the same checks: not ourselves,
not on the deny list, not banned, not connected or being dialled, not backing off.

Details that matter:
* The service type is `_p2p-gd._udp.local.` (libp2p's "private network" form), so we
  hear only gd nodes, not every IPFS node on the LAN.
* Reports cross from zeroconf's thread into trio with `TrioToken.run_sync_soon` into a
  bounded channel; when the channel is full, reports are dropped (the peer announces
  again, and the DHT finds it anyway).
* Zeroconf's socket setup, service registration (~1.5 s of probing) and unregistration
  block, so they run in a worker thread. `MDNSDiscovery.start()` would spawn a trio
  system task that outlives the daemon; we call `broadcaster.register()` and prune stale
  entries from our own loop instead.
* `peerDiscovery` is a module-level singleton: with several daemons in one process
  (tests) every handler hears every report; each ignores its own peer id.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.discovery.mdns.mdns import MDNSDiscovery, create_mdns_discovery

from gd.genome.identity import is_peer_id

if TYPE_CHECKING:
    from gd.node.net.gate import Gate

# `_p2p-<this>._udp.local.`: gd nodes only.
MDNS_NETWORK = "gd"
# Reports waiting for the trio side; LAN peers are few, announcements repeat.
REPORT_QUEUE = 64
# Addresses taken from one report (a host announces one per interface).
MAX_REPORT_ADDRS = 8
# Address TTL in the peerstore and age after which a silent announcement is forgotten
# (libp2p's default, twice the announcement interval).
MDNS_TTL_S = 120
CLEANUP_INTERVAL_S = 60.0
# Registering and unregistering probe the network for ~1.5 s each; bound them.
MDNS_START_TIMEOUT_S = 15.0
MDNS_STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class LanReport:
    """One mDNS announcement heard: a peer id and the addresses it announced."""

    peer_id: str
    addrs: tuple[str, ...]


def skip_reason(report: LanReport, *, self_id: str, denied: frozenset[str], banned: bool,
                connected: bool, dialing: bool, backing_off: bool) -> str | None:
    """Why we do not dial a reported peer, or None when we should."""
    if report.peer_id == self_id:
        return "self"
    if not is_peer_id(report.peer_id):
        return "not a peer id"
    if not report.addrs:
        return "no address"
    if report.peer_id in denied:
        return "denied"
    if banned:
        return "banned"
    if connected:
        return "connected"
    if dialing:
        return "dialing"
    if backing_off:
        return "backing off"
    return None


def _report(info: Any) -> LanReport:
    addrs = tuple(str(a) for a in info.addrs)[:MAX_REPORT_ADDRS]
    return LanReport(info.peer_id.to_base58(), addrs)


class MdnsService:
    """Announces the daemon on the LAN and dials the gd peers announced there."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.started = False  # announcing and listening (False: no multicast here)
        self.heard = 0
        self.dropped = 0
        self._dialing: set[str] = set()
        self._nursery: trio.Nursery | None = None

    def on_report(self, report: LanReport) -> str | None:
        """Act on one report (trio thread): dial the peer, or return why not."""
        d = self.gate
        now = d.clock.monotonic()
        rec = d.table.get(report.peer_id)
        reason = skip_reason(
            report, self_id=d.peer_id, denied=d.denied,
            banned=d.planner.is_banned(report.peer_id, now),
            connected=rec is not None and rec.connected,
            dialing=report.peer_id in self._dialing,
            backing_off=d.planner.next_attempt_at(report.peer_id) > now)
        if reason is not None:
            return reason
        if self._nursery is None:
            return "not running"
        d.table.learn(report.peer_id, report.addrs)
        d.log.info("mdns.dial", peer=report.peer_id, addrs=list(report.addrs))
        self._dialing.add(report.peer_id)
        self._nursery.start_soon(self._dial, report.peer_id)
        return None

    async def _dial(self, peer_id: str) -> None:
        try:
            self.gate.planner.dial_started(peer_id)
            await self.gate.dial(peer_id)
        finally:
            self._dialing.discard(peer_id)

    async def run(self) -> None:
        """Until cancelled: announce, listen, dial. Without multicast it logs and idles."""
        token = trio.lowlevel.current_trio_token()
        send, receive = trio.open_memory_channel[LanReport](REPORT_QUEUE)

        def offer(report: LanReport) -> None:
            try:
                send.send_nowait(report)
            except (trio.WouldBlock, trio.ClosedResourceError):
                self.dropped += 1

        def heard(info: Any) -> None:  # zeroconf's thread
            try:
                report = _report(info)
            except Exception:  # a malformed announcement is someone else's problem
                return
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(offer, report)

        host = self.gate.host
        peerDiscovery.register_peer_discovered_handler(heard)
        mdns: MDNSDiscovery | None = None
        try:
            try:
                with trio.fail_after(MDNS_START_TIMEOUT_S):
                    mdns = await trio.to_thread.run_sync(lambda: create_mdns_discovery(
                        host.get_network(), host=host, ttl=MDNS_TTL_S,
                        private_network_fingerprint=MDNS_NETWORK))
                    await trio.to_thread.run_sync(mdns.broadcaster.register)
            except (OSError, trio.TooSlowError) as exc:
                self.gate.log.warning("mdns.unavailable", error=repr(exc)[:200])
                await trio.sleep_forever()
            assert mdns is not None
            self.started = True
            self.gate.log.info("mdns.started", service=mdns.service_name)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._prune, mdns)
                async for report in receive:
                    self.heard += 1
                    reason = self.on_report(report)
                    if reason not in (None, "self", "connected", "dialing"):
                        self.gate.log.debug("mdns.skip", peer=report.peer_id, reason=reason)
        finally:
            self._nursery, self.started = None, False
            peerDiscovery.unregister_peer_discovered_handler(heard)
            send.close()
            if mdns is not None:
                # trio-typing's stubs (a libp2p dependency) predate both keywords.
                with trio.move_on_after(MDNS_STOP_TIMEOUT_S,  # type: ignore[call-arg]
                                        shield=True):
                    await trio.to_thread.run_sync(  # type: ignore[call-arg]
                        mdns.stop, abandon_on_cancel=True)

    async def _prune(self, mdns: MDNSDiscovery) -> None:
        while True:
            await trio.sleep(CLEANUP_INTERVAL_S)
            mdns.listener.cleanup_stale_entries(max_age=MDNS_TTL_S * 2)
