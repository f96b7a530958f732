"""In-process daemons on 127.0.0.1: bootstrap, handshake, DHT discovery, limits, shutdown."""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import trio
from daemon_cluster import LOOPBACK, launch, until
from gd_testkit import key_from_int

from gd.node.config import MeshSettings, NodeConfig
from gd.node.control import ControlError, DaemonNotRunning, call
from gd.node.daemon import Daemon, run_daemon
from gd.node.home import Home
from gd.node.lock import AlreadyRunning
from gd.node.net.host import dialable_addrs, peer_info, running_host, to_id
from gd.node.net.streams import PING_PROTOCOL_ID, Ping, drive_handshake
from gd.protocol.handshake import (
    PROTOCOL_ID,
    Handshake,
    HandshakeOffer,
    Rejected,
    RejectReason,
    make_hello,
)
from gd.protocol.wire import encode_frame

FAST = {"backoff_base_s": 0.2, "backoff_max_s": 1.0, "ping_interval_s": 0.5}


@pytest.fixture
def homes():
    """Short paths: a Unix socket path must stay under ~104 bytes."""
    root = Path(tempfile.mkdtemp(prefix="gdn", dir="/tmp"))
    made: list[Home] = []

    def make(name: str) -> Home:
        home = Home(root / name)
        home.root.mkdir()
        made.append(home)
        return home

    yield make
    shutil.rmtree(root, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start(nursery, home: Home, n: int, region: str = "eu", *, boot: list[Daemon] = (),
                mesh: dict | None = None, metrics_port: int = 0) -> Daemon:
    cfg = NodeConfig(org=f"org{n}", region=region, metrics_port=metrics_port,
                     mesh=MeshSettings(**{**FAST, **(mesh or {})}))
    return await launch(nursery, home, cfg, key_from_int(n), boot=boot)


def connected_ids(d: Daemon) -> set[str]:
    return {r.peer_id for r in d.table.connected()}


async def test_two_daemons_meet_via_bootstrap_and_answer_control_calls(homes):
    ha, hb = homes("a"), homes("b")
    port = free_port()
    async with trio.open_nursery() as nursery:
        a = await start(nursery, ha, 1, metrics_port=port)
        b = await start(nursery, hb, 2, boot=[a])
        await until(lambda: a.peer_id in connected_ids(b) and b.peer_id in connected_ids(a))
        rows = await trio.to_thread.run_sync(lambda: call(ha, "peers"))
        assert [(r["peer_id"], r["org"], r["region"]) for r in rows] == [(b.peer_id, "org2", "eu")]
        status = await trio.to_thread.run_sync(lambda: call(hb, "status"))
        assert status["peers"] == 1 and status["peer_id"] == b.peer_id
        with pytest.raises(ControlError, match="unknown method"):
            await trio.to_thread.run_sync(lambda: call(ha, "nope"))
        body = await trio.to_thread.run_sync(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode())
        assert 'gd_peers{region="eu"} 1.0' in body
        health = await trio.to_thread.run_sync(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").read())
        assert b'"ok": true' in health
        a.stop()
        b.stop()
    for home in (ha, hb):
        assert not home.control_socket.exists() and not home.pid_path.exists()
    with pytest.raises(DaemonNotRunning):
        call(ha, "status")


async def test_second_daemon_on_the_same_home_refuses(homes):
    home = homes("a")
    async with trio.open_nursery() as nursery:
        d = await start(nursery, home, 1)
        with pytest.raises(AlreadyRunning, match="already runs"):
            await run_daemon(home, d.cfg, d.key, cortex=None, listen=LOOPBACK, bootstrap=None,
                             handle_signals=False)
        d.stop()


async def test_five_daemons_find_their_region_through_the_dht(homes):
    """Everyone bootstraps to node 1 only; the eu nodes must find each other via the DHT,
    the us node stays a bridge at most."""
    async with trio.open_nursery() as nursery:
        first = await start(nursery, homes("n1"), 1, mesh={"target_region_peers": 4})
        others = [await start(nursery, homes(f"n{i}"), i, region="us" if i == 5 else "eu",
                              boot=[first], mesh={"target_region_peers": 4})
                  for i in range(2, 6)]
        eu = [first, *others[:3]]
        eu_ids = {d.peer_id for d in eu}
        await until(lambda: all(eu_ids - {d.peer_id} <= connected_ids(d) for d in eu), 40)
        # Nodes 2..4 only knew node 1: the others came from region provider records.
        learned = [r for r in others[0].table.all() if r.peer_id in eu_ids - {first.peer_id}]
        assert learned and all(r.region == "eu" for r in learned)
        for d in [first, *others]:
            d.stop()


async def test_peer_reconnects_after_restart(homes):
    ha, hb = homes("a"), homes("b")
    async with trio.open_nursery() as nursery:
        a = await start(nursery, ha, 1)
        b = await start(nursery, hb, 2, boot=[a])
        await until(lambda: b.peer_id in connected_ids(a))
        b.stop()
        await until(lambda: b.peer_id not in connected_ids(a))
        b2 = await start(nursery, hb, 2, boot=[a])
        await until(lambda: b2.peer_id in connected_ids(a) and a.peer_id in connected_ids(b2))
        a.stop()
        b2.stop()


async def raw_handshake(target: Daemon, n: int, *, versions=None, forge_with: int | None = None):
    """Dial `target` from a bare host and run a handshake by hand (honest or not)."""
    me = key_from_int(n)
    async with running_host(me, LOOPBACK) as host:
        await host.connect(peer_info(target.peer_id, dialable_addrs(target.host)))
        stream = await host.new_stream(target.host.get_id(), [PROTOCOL_ID])
        offer = HandshakeOffer(org="x", region="eu", **({"versions": versions} if versions else {}))
        now_ms = time.time_ns() // 1_000_000
        hs = Handshake(me, offer, target.peer_id, now_ms=now_ms, nonce=b"r" * 16)
        if forge_with is not None:
            hs.data_to_send()  # discard the honest Hello; send one signed by another key
            hs._out += encode_frame(make_hello(key_from_int(forge_with), offer, target.peer_id,
                                               nonce=b"f" * 16, now_ms=now_ms))
        await drive_handshake(stream, hs)
        return hs.outcome


async def test_wrong_version_and_bad_signature_are_rejected_with_reasons(homes):
    async with trio.open_nursery() as nursery:
        a = await start(nursery, homes("a"), 1)
        wrong = await raw_handshake(a, 20, versions=("gd/99",))
        forged = await raw_handshake(a, 21, forge_with=22)
        assert isinstance(wrong, Rejected) and wrong.reason is RejectReason.VERSION
        assert isinstance(forged, Rejected) and forged.reason is RejectReason.SIGNATURE
        assert forged.by_peer and "gd/99" not in forged.detail
        assert a.table.connected() == []
        assert a.metrics.handshakes.labels(outcome="bad-signature")._value.get() == 1
        a.stop()


async def test_flooding_peer_is_throttled_then_dropped_while_others_keep_working(homes):
    limits = {"max_bytes_per_s": 200_000, "burst_bytes": 200_000, "max_throttle_debt_s": 1.0}
    async with trio.open_nursery() as nursery:
        victim = await start(nursery, homes("v"), 1, mesh=limits)

        async def sink(fs, rec):
            while True:
                await fs.receive()

        victim.gate.register_protocol("/gd/test/sink/1", sink)
        flooder = await start(nursery, homes("f"), 2, boot=[victim])
        good = await start(nursery, homes("g"), 3, boot=[victim])
        await until(lambda: {flooder.peer_id, good.peer_id} <= connected_ids(victim))

        stream = await flooder.host.new_stream(to_id(victim.peer_id), ["/gd/test/sink/1"])
        frame = encode_frame(Ping(nonce=b"12345678")) * 4000  # ~100 KB per write

        async def flood():
            with trio.move_on_after(15):
                while True:
                    try:
                        await stream.write(frame)
                    except Exception:
                        return

        nursery.start_soon(flood)
        await until(lambda: flooder.peer_id not in connected_ids(victim), 15)
        budget_gone = flooder.peer_id not in victim.gate.budgets
        assert victim.planner.is_banned(flooder.peer_id, time.monotonic())
        assert budget_gone
        # Dropped by the budget (LimitExceeded comes only after the throttle debt grew).
        # The budget is the peer's, shared by its streams: whichever reads next trips it
        # (the flood's, or a liveness ping's arriving while the flood is throttled).
        errors = victim.metrics.frame_errors
        assert sum(errors.labels(protocol=p)._value.get()
                   for p in ("/gd/test/sink/1", PING_PROTOCOL_ID)) >= 1
        assert victim.metrics.dropped.labels(reason="misbehaviour")._value.get() == 1
        rtt = await victim.gate.liveness.ping(good.peer_id)
        assert rtt > 0 and good.peer_id in connected_ids(victim)
        for d in (victim, flooder, good):
            d.stop()
