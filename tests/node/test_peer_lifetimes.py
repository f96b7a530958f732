"""Per-peer lifetimes (node/net/lifetimes.py) and the services that follow peers through
gate events instead of polling `table.connected()` (issue 12 item 3)."""

from __future__ import annotations

import trio
from daemon_cluster import DaemonCluster, quiet_libp2p
from gd_testkit import key_from_int, make_gene

from gd.node.net.host import dialable_addrs, parse_multiaddrs, to_id
from gd.node.net.lifetimes import PeerLifetimes
from gd.node.services.sync_service import share_all


class _Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def error(self, event: str, **kw: object) -> None:
        self.events.append((event, kw))


async def _forever(peer: str, running: set[str], cancelled: list[str]) -> None:
    running.add(peer)
    try:
        await trio.sleep_forever()
    finally:
        running.discard(peer)
        cancelled.append(peer)


async def test_a_peer_going_cancels_all_its_tasks_and_only_its_own() -> None:
    failed: list[str] = []

    async def on_failure(peer: str, exc: BaseException) -> None:
        failed.append(peer)

    lives = PeerLifetimes(_Log(), on_failure)
    running: set[str] = set()
    cancelled: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(lives.run)
        for peer in ("a", "b"):
            lives.begin(peer)
            assert lives.spawn(peer, _forever, f"{peer}1", running, cancelled)
            assert lives.spawn(peer, _forever, f"{peer}2", running, cancelled)
        await trio.testing.wait_all_tasks_blocked()
        assert running == {"a1", "a2", "b1", "b2"}
        assert lives.end("a") == 2
        await trio.testing.wait_all_tasks_blocked()
        assert running == {"b1", "b2"} and sorted(cancelled) == ["a1", "a2"]
        assert lives.tasks("b") == 2 and lives.tasks("a") == 0
        # A peer that is not connected gets no work started.
        assert not lives.spawn("a", _forever, "a3", running, cancelled)
        assert not lives.spawn("never", _forever, "n", running, cancelled)
        await trio.testing.wait_all_tasks_blocked()
        assert running == {"b1", "b2"} and failed == []
        nursery.cancel_scope.cancel()


async def test_a_failing_task_reports_its_peer_and_leaves_the_others_running() -> None:
    failed: list[tuple[str, str]] = []
    log = _Log()
    lives = PeerLifetimes(log, lambda p, e: _record(failed, p, e))
    running: set[str] = set()
    cancelled: list[str] = []

    async def boom() -> None:
        raise RuntimeError("the hostile peer's input broke us")

    async with trio.open_nursery() as nursery:
        await nursery.start(lives.run)
        lives.begin("evil")
        lives.begin("good")
        lives.spawn("evil", _forever, "evil1", running, cancelled)
        lives.spawn("good", _forever, "good1", running, cancelled)
        lives.spawn("evil", boom)
        await trio.testing.wait_all_tasks_blocked()
        assert failed == [("evil", "RuntimeError")]
        assert log.events[0][0] == "peer.task_failed" and log.events[0][1]["peer"] == "evil"
        # The failure was reported, not raised: every task still runs until the peer goes.
        assert running == {"evil1", "good1"}
        nursery.cancel_scope.cancel()
    assert sorted(cancelled) == ["evil1", "good1"]  # the daemon stopping ends them all


async def _record(out: list[tuple[str, str]], peer: str, exc: BaseException) -> None:
    out.append((peer, type(exc).__name__))


async def test_work_for_an_early_peer_waits_for_the_nursery_then_runs() -> None:
    lives = PeerLifetimes(_Log(), lambda p, e: _record([], p, e))
    running: set[str] = set()
    lives.begin("early")  # handshaken while the daemon still wires its services
    assert lives.spawn("early", _forever, "early1", running, [])
    async with trio.open_nursery() as nursery:
        await nursery.start(lives.run)
        await trio.testing.wait_all_tasks_blocked()
        assert running == {"early1"} and lives.tasks("early") == 1
        nursery.cancel_scope.cancel()


async def test_a_served_stream_is_cancelled_when_its_peer_goes() -> None:
    lives = PeerLifetimes(_Log(), lambda p, e: _record([], p, e))
    lives.begin("p")
    outcome: list[str] = []

    async def serve() -> None:
        with lives.scope("p") as scope:
            await trio.sleep_forever()
        outcome.append("cancelled" if scope.cancelled_caught else "returned")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await trio.testing.wait_all_tasks_blocked()
        lives.end("p")
    assert outcome == ["cancelled"]
    with lives.scope("gone") as scope:  # not connected: cancelled at once
        await trio.sleep(0)
    assert scope.cancelled_caught


# ---- the services follow gate events --------------------------------------------------

HOUR = {"debounce_s": 0.05, "interval_s": 3600.0, "repair_interval_s": 3600.0}


async def test_a_new_peer_is_pulled_from_and_met_at_once_with_hour_long_timers() -> None:
    """No timer of an hour fires in this test: only the gate's PeerChange starts b's
    pull of a's feed and both sides' sovereignty meeting."""
    quiet_libp2p()
    with DaemonCluster.in_tmp("gdpe") as c:
        c.cortex(1).put_genes([make_gene(key_from_int(1), f"g{i}") for i in range(20)])
        async with trio.open_nursery() as nursery:
            a = await c.start_daemon(nursery, 1, sync=HOUR, share_policy=share_all)
            b = await c.start_daemon(nursery, 2, sync=HOUR, share_policy=share_all,
                                     boot=[a])
            await c.connected(a, b)
            await c.until(lambda: len(list(b.cortex.genes())) == 20, timeout=15)
            assert b.gate.lifetimes.tasks(a.peer_id) >= 1  # b's sync loop for a
            await c.until(lambda: a.sovereignty.store.peer(b.peer_id) is not None
                          and b.sovereignty.store.peer(a.peer_id) is not None, timeout=15)
            c.stop_all(a, b)


async def test_a_peer_on_two_connections_stays_when_one_closes_and_goes_with_the_last():
    """A simultaneous dial leaves a pair on two connections until py-libp2p trims one.
    That close is not the peer going: its lifetime (and the work in it) goes on."""
    with DaemonCluster.in_tmp("gd-twoconn-") as fed:
        async with trio.open_nursery() as nursery:
            a = await fed.start_daemon(nursery, 1, mesh={"ping_interval_s": 60})
            b = await fed.start_daemon(nursery, 2, boot=[a], mesh={"ping_interval_s": 60})
            await fed.connected(a, b)
            swarm_b, a_id = b.host.get_network(), to_id(a.peer_id)
            first = swarm_b.get_connections(a_id)[0]
            second = await swarm_b.dial_addr(parse_multiaddrs(dialable_addrs(a.host))[0],
                                             a_id)
            await fed.until(lambda: len(a.host.get_network().get_connections(
                to_id(b.peer_id))) == 2)
            running: set[str] = set()
            cancelled: list[str] = []
            downs: list[str] = []
            a.gate.on_peer(lambda change: downs.append(change.peer_id) if not change.up
                           else None)
            assert a.gate.spawn(b.peer_id, _forever, b.peer_id, running, cancelled)
            await fed.until(lambda: b.peer_id in running)

            await first.close()
            await fed.until(lambda: len(a.host.get_network().get_connections(
                to_id(b.peer_id))) == 1)
            await trio.sleep(0.3)  # the disconnect notice has come and gone
            assert downs == [] and cancelled == [] and b.peer_id in running
            assert b.peer_id in {r.peer_id for r in a.table.connected()}
            assert await a.gate.liveness.ping(b.peer_id) > 0  # on the one left

            await second.close()
            await fed.until(lambda: cancelled == [b.peer_id])
            assert downs == [b.peer_id]
            fed.stop_all(a, b)
