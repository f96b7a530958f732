"""A peer that keeps its connection open and stops answering: a black hole in the region.

py-libp2p raises nothing when a connection delivers nothing (our writes succeed), so a
region peer that swallows everything would hold its slot until the timed ping gave up,
up to `ping_interval_s` + 5 s, and a black-holed link between two voters stalled
elections for that long (docs/ledger.md, the failover tail). The ledger's links hear
every region peer's gossip each second; one silent for `SILENT_S` is probed at once
(`node/net/liveness.py`) and dropped, without a ban, when the probe goes unanswered.
The timed ping is set to a minute here, so only the suspicion can drop the peer.
"""

from __future__ import annotations

import trio
from daemon_cluster import DaemonCluster
from gd_testkit import key_from_int
from hostile import _sink, hostile_peer

from gd.ledger.link_core import SILENT_S
from gd.node.net.liveness import SUSPECT_TIMEOUT_S
from gd.node.net.streams import PING_PROTOCOL_ID

SLOW_TIMER = {"ping_interval_s": 60}


def connected(daemon, peer_id: str) -> bool:
    return peer_id in {r.peer_id for r in daemon.table.connected()}


async def test_a_peer_that_swallows_everything_is_probed_and_dropped_without_a_ban():
    voters = [key_from_int(1).peer_id, key_from_int(2).peer_id]
    with DaemonCluster.in_tmp("gd-silent-") as fed:
        async with trio.open_nursery() as nursery:
            node = await fed.start_daemon(nursery, 1, voters=voters, mesh=SLOW_TIMER)
            honest = await fed.start_daemon(nursery, 2, voters=voters, boot=[node],
                                            mesh=SLOW_TIMER)
            await fed.connected(node, honest)
            async with hostile_peer() as evil:
                evil.host.set_stream_handler(PING_PROTOCOL_ID, _sink)  # never answers
                await evil.handshake(node, org="black-hole", region="eu")
                await fed.until(lambda: connected(node, evil.peer_id))
                joined = trio.current_time()
                with trio.fail_after(SILENT_S * 3 + SUSPECT_TIMEOUT_S + 5):
                    while connected(node, evil.peer_id):
                        await trio.sleep(0.05)
                took = trio.current_time() - joined
                liveness = node.gate.liveness
                assert liveness.suspected[evil.peer_id] >= 1
                assert liveness.dropped >= 1
                # Silence first, then the short probe: not the minute-long timer.
                assert took >= SILENT_S
                # Slow, not proven hostile: it may come back.
                assert not node.gate.planner.is_banned(evil.peer_id, node.clock.monotonic())
                # The honest voter gossips every second: never suspected, still there.
                assert liveness.suspected[honest.peer_id] == 0
                assert honest.gate.liveness.suspected[node.peer_id] == 0
                assert connected(node, honest.peer_id)
                assert node.health()["ok"] and not node.stop_event.is_set()
            fed.stop_all(node, honest)


async def test_a_silent_peer_that_answers_the_probe_stays():
    """Suspicion alone drops no one: a region peer that runs no ledger (nothing on
    /gd/raft) but answers pings is kept, and probed less and less often."""
    voters = [key_from_int(1).peer_id, key_from_int(2).peer_id]
    with DaemonCluster.in_tmp("gd-quiet-") as fed:
        async with trio.open_nursery() as nursery:
            node = await fed.start_daemon(nursery, 1, voters=voters, mesh=SLOW_TIMER)
            async with hostile_peer() as quiet:  # its pings are answered (hostile._pong)
                await quiet.handshake(node, org="quiet", region="eu")
                await fed.until(lambda: connected(node, quiet.peer_id))
                liveness = node.gate.liveness
                await fed.until(lambda: liveness.suspected[quiet.peer_id] >= 1)
                await trio.sleep(SUSPECT_TIMEOUT_S + 0.5)  # the probe has its answer
                assert connected(node, quiet.peer_id)
                assert liveness.dropped == 0
                # The next suspicion waits twice as long: one more at most by now.
                assert liveness.suspected[quiet.peer_id] <= 2
            fed.stop_all(node)
