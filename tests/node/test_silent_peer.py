"""A peer that connects but never handshakes is disconnected after a bounded time."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import trio
from daemon_cluster import until
from gd_testkit import key_from_int

from gd.node.config import ConfigError, MeshSettings, NodeConfig, parse_config
from gd.node.daemon import Daemon, run_daemon
from gd.node.home import Home
from gd.node.net.host import dialable_addrs, peer_info, running_host, to_id

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
DEADLINE_S = 0.5


@pytest.fixture
def home():
    root = Path(tempfile.mkdtemp(prefix="gds", dir="/tmp"))
    yield Home(root)
    shutil.rmtree(root, ignore_errors=True)


def test_the_deadline_is_configurable_and_checked() -> None:
    node = {"org": "o", "region": "eu"}
    assert parse_config({"node": node}).mesh.handshake_deadline_s == 15.0
    fast = parse_config({"node": node, "mesh": {"handshake_deadline_s": 2}})
    assert fast.mesh.handshake_deadline_s == 2.0
    with pytest.raises(ConfigError, match=r"\[mesh\] handshake_deadline_s: expected a number > 0"):
        parse_config({"node": node, "mesh": {"handshake_deadline_s": 0}})


async def test_a_connected_but_silent_peer_is_dropped(home) -> None:
    cfg = NodeConfig(org="o", region="eu",
                     mesh=MeshSettings(handshake_deadline_s=DEADLINE_S))
    box: list[Daemon] = []
    silent = key_from_int(9)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_daemon(home, cfg, key_from_int(1), cortex=None,
                                              listen=LOOPBACK, bootstrap=None,
                                              ready_callback=box.append,
                                              handle_signals=False))
        await until(lambda: bool(box))
        d = box[0]
        # A bare libp2p host (Noise, like any peer) connects and then says nothing.
        async with running_host(silent, LOOPBACK) as host:
            await host.connect(peer_info(d.peer_id, dialable_addrs(d.host)))
            await until(lambda: silent.peer_id in d.gate.unverified)
            assert d.host.get_network().get_connections(to_id(silent.peer_id))
            await until(lambda: not d.host.get_network().get_connections(
                to_id(silent.peer_id)))
            # Gone from both ends, counted, scored; never in the peer table as connected.
            await until(lambda: not host.get_network().get_connections(to_id(d.peer_id)))
            assert d.metrics.dropped.labels(reason="no-handshake")._value.get() == 1
            rec = d.table.get(silent.peer_id)
            assert rec is not None and not rec.connected and rec.score.failures == 1
            assert silent.peer_id not in d.gate.unverified
        d.stop()


async def test_a_peer_that_handshakes_outlives_the_deadline(home) -> None:
    cfg = NodeConfig(org="o", region="eu",
                     mesh=MeshSettings(handshake_deadline_s=DEADLINE_S))
    other_home = Home(home.root / "b")
    other_home.root.mkdir(parents=True)
    box: list[Daemon] = []
    async with trio.open_nursery() as nursery:
        for n, h in ((1, Home(home.root / "a")), (2, other_home)):
            h.root.mkdir(parents=True, exist_ok=True)
            nursery.start_soon(lambda n=n, h=h: run_daemon(
                h, cfg, key_from_int(n), cortex=None, listen=LOOPBACK, bootstrap=None,
                ready_callback=box.append, handle_signals=False))
        await until(lambda: len(box) == 2)
        a, b = box
        await a.gate.connect(b.peer_id, dialable_addrs(b.host))
        # Wait for several watchdog rounds past the deadline: still connected.
        with trio.move_on_after(4 * DEADLINE_S):
            await until(lambda: not a.table.get(b.peer_id).connected)
        assert a.table.get(b.peer_id).connected and b.table.get(a.peer_id).connected
        assert a.metrics.dropped.labels(reason="no-handshake")._value.get() == 0
        a.stop()
        b.stop()
