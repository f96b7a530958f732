"""Issue 11, item 5: silent connections must not use up the node's inbound slots.

Outsiders complete Noise + yamux, never send our handshake, and are closed by the
handshake watchdog. py-libp2p 0.8.1 kept each one's inbound slot until the host stopped
(node/net/inbound.py, docs/libp2p-notes.md), so after `max_connections` of them the node
refused every new inbound connection. The test lowers the slot count from 128 to
`SLOTS` (through `set_inbound_slots`, the same limiter) to stay fast, closes twice that
many silent connections, and then a fresh peer must still connect and handshake.
"""

from __future__ import annotations

import contextlib

import trio
from daemon_cluster import FAST_MESH, DaemonCluster, launch
from gd_testkit import key_from_int
from hostile import HostilePeer, hostile_peer

from gd.node.config import MeshSettings, NodeConfig
from gd.node.net.host import MAX_CONNECTIONS, to_id
from gd.node.net.inbound import inbound_slots, set_inbound_slots
from gd.protocol.handshake import Accepted

SLOTS = 6
WAVES = 2  # 2 x SLOTS silent connections in all
DEADLINE_S = 0.5


async def test_silent_connections_closed_by_the_watchdog_give_their_slots_back():
    with DaemonCluster.in_tmp("gd-adv-") as fed:
        cfg = NodeConfig(org="org1", region="eu",
                         mesh=MeshSettings(**FAST_MESH, handshake_deadline_s=DEADLINE_S))
        async with trio.open_nursery() as nursery:
            node = await launch(nursery, fed.home(1), cfg, key_from_int(1),
                                cortex=fed.cortex(1))
            assert inbound_slots(node.host) == MAX_CONNECTIONS  # the production bound
            set_inbound_slots(node.host, SLOTS)
            no_handshake = node.metrics.dropped.labels(reason="no-handshake")
            swarm = node.host.get_network()
            for wave in range(WAVES):
                async with contextlib.AsyncExitStack() as stack:
                    silent: list[HostilePeer] = [
                        await stack.enter_async_context(hostile_peer()) for _ in range(SLOTS)]
                    for peer in silent:
                        await peer.dial(node)  # refused here once the slots have leaked
                    await fed.until(lambda w=wave: no_handshake._value.get() >= (w + 1) * SLOTS,
                                    timeout=30)
                    await fed.until(lambda s=silent: not any(
                        swarm.get_connections(to_id(p.peer_id)) for p in s), timeout=30)
            assert no_handshake._value.get() == WAVES * SLOTS
            # Every slot came back: a new peer connects (inbound) and handshakes.
            async with hostile_peer() as honest:
                outcome = await honest.handshake(node, org="honest", region="eu")
                assert isinstance(outcome, Accepted)
                await fed.until(lambda: node.table.get(honest.peer_id) is not None
                                and node.table.get(honest.peer_id).connected)
            # And the limiter holds no token for the closed connections.
            await fed.until(lambda: swarm._inbound_limiter.borrowed_tokens == 0, timeout=30)
            node.stop()
