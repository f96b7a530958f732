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

import pytest
import trio
from daemon_cluster import DaemonCluster
from gd_testkit import key_from_int
from hostile import _sink, hostile_peer

from gd.ledger.link_core import SILENT_S
from gd.node.net.host import dialable_addrs, parse_multiaddrs, to_id
from gd.node.net.liveness import SUSPECT_TIMEOUT_S
from gd.node.net.streams import PING_PROTOCOL_ID, PeerTimeout, StreamGone

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


async def ping_until_answered(frm, to, attempts: int = 20) -> None:
    for _ in range(attempts):
        try:
            await frm.gate.liveness.ping(to.peer_id, 2.0)
            return
        except (StreamGone, PeerTimeout):
            await trio.sleep(0.1)
    raise AssertionError(f"no ping answered in {attempts} attempts")


def ports(muxed) -> tuple[int, int]:
    """(local, remote) TCP ports under a libp2p connection (Noise over TCP)."""
    raw = muxed.secured_conn.conn.read_writer.read_write_closer  # RawConnection
    sock = raw.stream.stream.socket
    return sock.getsockname()[1], sock.getpeername()[1]


async def test_a_ping_on_a_connection_we_do_not_list_closes_the_split_and_both_redial():
    """Two connections between a pair, each side listing a different one: the peer
    writes to us on one, our streams to it go on the other. The peer's ping arrives on
    the one we do not list; every connection to it is closed and both sides dial afresh,
    ending with one connection both list."""
    with DaemonCluster.in_tmp("gd-split-") as fed:
        async with trio.open_nursery() as nursery:
            a = await fed.start_daemon(nursery, 1, mesh=SLOW_TIMER)
            b = await fed.start_daemon(nursery, 2, boot=[a], mesh=SLOW_TIMER)
            await fed.connected(a, b)
            assert await b.gate.liveness.ping(a.peer_id) > 0  # one connection: no split
            assert a.gate.liveness.splits == 0
            swarm_a, swarm_b = a.host.get_network(), b.host.get_network()
            a_id, b_id = to_id(a.peer_id), to_id(b.peer_id)
            first_b = swarm_b.get_connections(a_id)[0]
            second_b = await swarm_b.dial_addr(parse_multiaddrs(dialable_addrs(a.host))[0],
                                               a_id)
            await fed.until(lambda: len(swarm_a.get_connections(b_id)) == 2)
            second_a = next(c for c in swarm_a.get_connections(b_id)
                            if ports(c.muxed_conn)[1] == ports(second_b.muxed_conn)[0])
            # The split: A lists only the first connection, B only the second.
            swarm_a.connections[b_id].remove(second_a)
            swarm_b.connections[a_id].remove(first_b)
            with pytest.raises((StreamGone, PeerTimeout)):  # closed under the ping
                await b.gate.liveness.ping(a.peer_id, 2.0)
            assert a.gate.liveness.splits == 1
            await fed.until(lambda: first_b.is_closed and second_b.is_closed)
            await fed.connected(a, b)  # redialled, and talking again (a ping opened
            # on a connection a simultaneous redial is closing fails: the next is tried)
            await ping_until_answered(b, a)
            await ping_until_answered(a, b)
            fed.stop_all(a, b)


def link_stream(daemon, peer_id: str):
    """The muxed connection under `daemon`'s `/gd/raft` stream to `peer_id`, or None."""
    link = daemon.ledger.links._links.get(peer_id)
    return None if link is None or link.fs is None else link.fs.stream.muxed_conn


async def test_a_peer_writing_on_a_newer_connection_takes_our_streams_there():
    """As caught in the failover tail: we list the old and the new connection to a
    peer, the peer only the new one. py-libp2p opened our streams on the old one (it
    had more streams), which the peer no longer read. Now the swarm opens streams on
    the newest connection, and our Raft stream moves as soon as the peer's own
    `/gd/raft` stream arrives on the newer one (ADR 0056); no connection is closed."""
    voters = [key_from_int(1).peer_id, key_from_int(2).peer_id]
    with DaemonCluster.in_tmp("gd-newer-") as fed:
        async with trio.open_nursery() as nursery:
            a = await fed.start_daemon(nursery, 1, voters=voters, mesh=SLOW_TIMER)
            b = await fed.start_daemon(nursery, 2, voters=voters, boot=[a], mesh=SLOW_TIMER)
            await fed.connected(a, b)
            swarm_a, swarm_b = a.host.get_network(), b.host.get_network()
            a_id, b_id = to_id(a.peer_id), to_id(b.peer_id)
            await fed.until(lambda: link_stream(a, b.peer_id) is not None
                            and link_stream(b, a.peer_id) is not None)
            old_a = swarm_a.get_connections(b_id)[0]
            assert link_stream(a, b.peer_id) is old_a.muxed_conn
            old_b = swarm_b.get_connections(a_id)[0]
            new_b = await swarm_b.dial_addr(parse_multiaddrs(dialable_addrs(a.host))[0],
                                            a_id)
            await fed.until(lambda: len(swarm_a.get_connections(b_id)) == 2)
            new_a = next(c for c in swarm_a.get_connections(b_id) if c is not old_a)
            assert ports(new_a.muxed_conn) == ports(new_b.muxed_conn)[::-1]
            # New streams go on the newest connection (py-libp2p's own choice is the
            # one with more streams: the old one, which carries both Raft streams).
            probe = await a.host.new_stream(b_id, [PING_PROTOCOL_ID])
            assert probe.muxed_conn is new_a.muxed_conn
            await probe.reset()
            # B forgets the old connection (A keeps it) and its Raft stream to A
            # breaks: B reopens it on the only one it lists, the new one.
            swarm_b.connections[a_id].remove(old_b)
            await b.ledger.links._links[a.peer_id].fs.reset()
            await fed.until(lambda: link_stream(b, a.peer_id) is new_b.muxed_conn)
            # A's stream follows B there, though A's old connection still works.
            await fed.until(lambda: link_stream(a, b.peer_id) is new_a.muxed_conn)
            assert a.ledger.links.moved >= 1
            assert not old_a.is_closed and len(swarm_a.get_connections(b_id)) == 2
            assert connected(a, b.peer_id) and connected(b, a.peer_id)
            fed.stop_all(a, b)
