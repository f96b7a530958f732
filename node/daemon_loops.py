"""The daemon's network loops: the mesh and discovery.

Why apart from the daemon: they are plain policies over the gate (plan → dial or drop,
ask the DHT) and read time only from the gate's clock, so the daemon
module stays the shell that wires rooms together (issue 12: no module over 500 lines).
The handshake watchdog and the pings are the gate's own (`Gate.handshake_watchdog`,
`node/net/liveness.py`).
"""

from __future__ import annotations

import functools

import trio

from gd.node.net.gate import Gate

MESH_TICK_S = 1.0
# Discovery runs at once when a new peer is verified, else this often; provider records
# are re-published every REPROVIDE_S (the DHT keeps them ~24 h; go-libp2p republishes
# every 22 h, we do it hourly because regions are small and records cheap).
DISCOVERY_INTERVAL_S = 30.0
REPROVIDE_S = 3600.0


async def mesh_loop(gate: Gate, nursery: trio.Nursery) -> None:
    """Every MESH_TICK_S: carry out the planner's plan (dial the missing, drop surplus)."""
    while True:
        plan = gate.planner.plan(gate.clock.monotonic(), gate.table)
        for drop in plan.drop:
            nursery.start_soon(gate.peer_task, drop.peer_id,
                               functools.partial(gate.drop, drop.peer_id, drop.reason,
                                                 ban=drop.ban))
        for peer_id in plan.dial:
            gate.planner.dial_started(peer_id)
            nursery.start_soon(gate.peer_task, peer_id, gate.dial, peer_id)
        await trio.sleep(MESH_TICK_S)


async def discovery_loop(gate: Gate) -> None:
    """Advertise our region (and relay role) in the DHT and learn the region's peers."""
    cfg, relay = gate.cfg, gate.relay
    last_provide = -REPROVIDE_S
    while True:
        await gate.wait_for_discovery(DISCOVERY_INTERVAL_S)
        if not gate.table.connected():
            continue
        now = gate.clock.monotonic()
        new_addresses = gate.take_new_addresses()
        try:
            if now - last_provide >= REPROVIDE_S or new_addresses:
                await gate.discovery.advertise(cfg.region, gate.domains, relay=cfg.relay)
                last_provide = now
            found = await gate.discovery.find_region_peers(cfg.region)
            if relay.private and len(relay.book.held) < relay.book.wanted:
                found += await gate.discovery.find_relays(cfg.region)
        except Exception as exc:  # the DHT is best effort; the mesh keeps what it has
            gate.log.info("discovery.failed", error=repr(exc)[:200])
            continue
        for peer in found:
            if peer.peer_id != gate.peer_id:
                gate.table.learn(peer.peer_id, peer.addrs, cfg.region)
        gate.log.debug("discovery.round", found=len(found))
