"""mDNS: two daemons on one host find each other by multicast and connect; the handler
that turns a report into a dial respects the deny list and bans."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest
import trio
from daemon_cluster import launch, until
from gd_testkit import key_from_int

from gd.node.config import MeshSettings, NodeConfig
from gd.node.daemon import Daemon
from gd.node.home import Home
from gd.node.net.host import dialable_addrs
from gd.node.net.mdns import LanReport, skip_reason

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
FAST = {"backoff_base_s": 0.2, "backoff_max_s": 1.0, "ping_interval_s": 0.5}
P1, P2 = key_from_int(1).peer_id, key_from_int(2).peer_id
ADDR = ("/ip4/192.168.1.7/tcp/4001",)


def test_skip_reason_covers_every_refusal() -> None:
    ok = {"self_id": P1, "denied": frozenset(), "banned": False, "connected": False,
          "dialing": False, "backing_off": False}
    report = LanReport(P2, ADDR)
    assert skip_reason(report, **ok) is None
    assert skip_reason(LanReport(P1, ADDR), **ok) == "self"
    assert skip_reason(LanReport("QmNotOurs", ADDR), **ok) == "not a peer id"
    assert skip_reason(LanReport(P2, ()), **ok) == "no address"
    assert skip_reason(report, **{**ok, "denied": frozenset({P2})}) == "denied"
    for flag in ("banned", "connected", "dialing", "backing_off"):
        assert skip_reason(report, **{**ok, flag: True}) == flag.replace("_", " ")


@pytest.fixture
def homes():
    root = Path(tempfile.mkdtemp(prefix="gdm", dir="/tmp"))

    def make(name: str) -> Home:
        home = Home(root / name)
        home.root.mkdir()
        return home

    yield make
    shutil.rmtree(root, ignore_errors=True)


async def start(nursery: trio.Nursery, home: Home, n: int, *, mdns: bool) -> Daemon:
    cfg = NodeConfig(org=f"org{n}", region="eu", listen=LOOPBACK, mdns=mdns,
                     mesh=MeshSettings(**FAST))
    return await launch(nursery, home, cfg, key_from_int(n), listen=None)


def connected(d: Daemon, peer_id: str) -> bool:
    rec = d.table.get(peer_id)
    return rec is not None and rec.connected


async def test_two_daemons_find_each_other_by_multicast_and_handshake(homes) -> None:
    async with trio.open_nursery() as nursery:
        a = await start(nursery, homes("a"), 1, mdns=True)
        b = await start(nursery, homes("b"), 2, mdns=True)
        assert a.table.get(P2) is None and b.table.get(P1) is None  # no bootstrap
        await until(lambda: a.mdns.started and b.mdns.started)
        await until(lambda: connected(a, P2) and connected(b, P1))
        assert a.mdns.heard + b.mdns.heard >= 1
        assert a.table.get(P2).org == "org2" and b.table.get(P1).org == "org1"
        a.stop()
        b.stop()


async def test_a_report_becomes_a_dial_unless_denied_or_banned(homes) -> None:
    async with trio.open_nursery() as nursery:
        a = await start(nursery, homes("a"), 1, mdns=True)
        b = await start(nursery, homes("b"), 2, mdns=False)   # silent on the LAN
        c = await start(nursery, homes("c"), 3, mdns=False)
        await until(lambda: a.mdns.started)
        report_b = LanReport(P2, tuple(dialable_addrs(b.host)))
        report_c = LanReport(c.peer_id, tuple(dialable_addrs(c.host)))

        assert await a.gate.set_deny_list([P2]) == [P2]
        assert a.mdns.on_report(report_b) == "denied"
        a.planner.ban(c.peer_id, time.monotonic())
        assert a.mdns.on_report(report_c) == "banned"
        assert a.table.get(P2) is None and a.table.get(c.peer_id) is None  # nothing learnt

        await a.gate.set_deny_list([])
        assert a.mdns.on_report(report_b) is None          # dialled
        await until(lambda: connected(a, P2) and connected(b, P1))
        assert a.mdns.on_report(report_b) == "connected"
        assert not connected(a, c.peer_id)
        for d in (a, b, c):
            d.stop()
