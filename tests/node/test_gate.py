"""The gate (node/net/gate.py): connection events services follow instead of polling,
and time read only from the injected clock."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import trio
from daemon_cluster import until
from gd_testkit import key_from_int

from gd.crdt.clock import ManualClock
from gd.node.config import NodeConfig
from gd.node.daemon import Daemon, run_daemon
from gd.node.home import Home
from gd.node.net.gate import PeerChange
from gd.node.net.host import dialable_addrs
from gd.node.net.mesh import BAN_S

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]


@pytest.fixture
def root():
    path = Path(tempfile.mkdtemp(prefix="gdg", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start(nursery: trio.Nursery, home: Home, n: int, box: list[Daemon], **kw: object) -> None:
    home.root.mkdir(parents=True, exist_ok=True)
    nursery.start_soon(lambda: run_daemon(
        home, NodeConfig(org=f"o{n}", region="eu"), key_from_int(n), cortex=None,
        listen=LOOPBACK, bootstrap=None, ready_callback=box.append, handle_signals=False,
        **kw))


async def test_peers_coming_and_going_are_announced_to_every_listener(root) -> None:
    box: list[Daemon] = []
    async with trio.open_nursery() as nursery:
        start(nursery, Home(root / "a"), 1, box)
        await until(lambda: len(box) == 1)
        start(nursery, Home(root / "b"), 2, box)
        await until(lambda: len(box) == 2)
        a, b = box
        seen_a: list[PeerChange] = []
        seen_b: list[PeerChange] = []

        def broken(change: PeerChange) -> None:
            raise RuntimeError("a buggy listener")

        a.gate.on_peer(broken)  # registered first: the next listener still hears
        a.gate.on_peer(seen_a.append)
        b.gate.on_peer(seen_b.append)
        await a.gate.connect(b.peer_id, dialable_addrs(b.host))
        await until(lambda: PeerChange(a.peer_id, up=True) in seen_b)
        assert seen_a == [PeerChange(b.peer_id, up=True)]
        await a.gate.drop(b.peer_id, "test: go away", ban=False)
        await until(lambda: PeerChange(a.peer_id, up=False) in seen_b)
        assert seen_a == [PeerChange(b.peer_id, up=True), PeerChange(b.peer_id, up=False)]
        assert seen_b == [PeerChange(a.peer_id, up=True), PeerChange(a.peer_id, up=False)]
        a.stop()
        b.stop()


async def test_the_daemon_and_its_gate_read_the_injected_clock(root) -> None:
    clock = ManualClock(wall=1_800_000_000.0, monotonic=100.0)
    box: list[Daemon] = []
    async with trio.open_nursery() as nursery:
        start(nursery, Home(root / "a"), 1, box, clock=clock)
        await until(lambda: bool(box))
        d = box[0]
        assert d.health()["uptime_s"] == 0.0
        clock.advance(42.0)
        assert d.health()["uptime_s"] == 42.0
        reply = await d.methods.dispatch({"method": "status", "params": {}})
        assert reply["result"]["uptime_s"] == 42.0
        stranger = key_from_int(7).peer_id
        await d.gate.drop(stranger, "test: misbehaved", ban=True)
        assert d.planner.is_banned(stranger, clock.monotonic())
        clock.advance(BAN_S + 1)  # the ban ends on the injected clock, not the system's
        assert not d.planner.is_banned(stranger, clock.monotonic())
        d.stop()


def test_a_manual_clock_only_moves_forward() -> None:
    clock = ManualClock(wall=10.0, monotonic=1.0)
    clock.advance(0.5)
    assert (clock.wall(), clock.monotonic()) == (10.5, 1.5)
    assert clock.hlc_now() == 10_500 << 16
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="non-negative"):
        ManualClock(wall=-1)
