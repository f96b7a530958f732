"""Issue 11, item 1: outsiders must not be able to stop the daemon.

Thirteen throwaway keys claiming the node's region push the mesh planner past its
in-region limit (12); the drop it then plans once ran `drop(peer, reason, ban)` with a
keyword-only argument passed positionally, and the `TypeError` killed the daemon. Now a
failing peer task drops that peer and a failing service restarts, logged, never the
process."""

from __future__ import annotations

import contextlib

import trio
from daemon_cluster import DaemonCluster
from hostile import HostilePeer, hostile_peer

from gd.node.net.mesh import MAX_REGION_PEERS

ATTACKERS = MAX_REGION_PEERS + 1


async def test_more_region_peers_than_the_limit_do_not_crash_the_daemon():
    with DaemonCluster.in_tmp("gd-adv-") as fed:
        async with trio.open_nursery() as nursery:
            node = await fed.start_daemon(nursery, 1, region="eu-west")
            async with contextlib.AsyncExitStack() as stack:
                evil: list[HostilePeer] = [
                    await stack.enter_async_context(hostile_peer()) for _ in range(ATTACKERS)]
                for peer in evil:
                    await peer.handshake(node, org="throwaway", region="eu-west")
                # The planner sees 13 in-region peers and drops the surplus.
                surplus = node.metrics.dropped.labels(reason="surplus")
                await fed.until(lambda: surplus._value.get() >= 1, timeout=30)
                await fed.until(lambda: len(node.table.connected()) <= MAX_REGION_PEERS,
                                timeout=30)
                # The daemon is alive and serving: a new honest peer still gets in.
                assert not node.stop_event.is_set()
                honest = await fed.start_daemon(nursery, 2, region="us-east", boot=[node])
                await fed.connected(node, honest)
                assert node.health()["ok"]
            fed.stop_all(node, honest)
