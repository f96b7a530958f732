"""bootstrap-peers.toml parsing, [mesh] settings, and the libp2p log rate limit."""

from __future__ import annotations

import logging
import tomllib

import pytest
from gd_testkit import key_from_int

from gd.crdt.clock import ManualClock
from gd.node.config import ConfigError, MeshSettings, NodeConfig
from gd.node.logging import ThirdPartyRateLimit
from gd.node.net.bootstrap_file import (
    BootstrapError,
    BootstrapPeer,
    parse_bootstrap,
    render_bootstrap,
)

PID = key_from_int(1).peer_id


def test_bootstrap_round_trips_through_render():
    peers = [BootstrapPeer(PID, ("/ip4/127.0.0.1/tcp/4001",), "eu"),
             BootstrapPeer(key_from_int(2).peer_id, ("/ip4/10.0.0.1/tcp/1",))]
    assert parse_bootstrap(tomllib.loads(render_bootstrap(peers))) == peers


@pytest.mark.parametrize(("entry", "why"), [
    ({"peer_id": "QmNotEd25519", "addrs": ["/ip4/1.2.3.4/tcp/1"]}, "not an Ed25519 peer id"),
    ({"peer_id": PID, "addrs": []}, "addrs must be"),
    ({"peer_id": PID, "addrs": ["1.2.3.4:4001"]}, "addrs must be"),
    ({"peer_id": PID, "addrs": ["/ip4/1.2.3.4/tcp/1"], "region": "EU West"}, "region"),
    ({"peer_id": PID, "addrs": ["/ip4/1.2.3.4/tcp/1"], "port": 1}, "unknown keys"),
    ({"peer_id": PID, "addrs": [f"/ip4/1.2.3.4/tcp/1/p2p/{key_from_int(3).peer_id}"]},
     "different peer id"),
])
def test_bad_bootstrap_entries_name_the_entry_and_the_problem(entry, why):
    with pytest.raises(BootstrapError, match=why) as info:
        parse_bootstrap({"peers": [entry]}, "boot.toml")
    assert "boot.toml: peers[0]" in str(info.value)


def test_bootstrap_refuses_unknown_top_level_keys():
    with pytest.raises(BootstrapError, match="expected \\[\\[peers\\]\\]"):
        parse_bootstrap({"peer": []})


def test_mesh_section_is_validated():
    cfg = NodeConfig(org="o", region="eu",
                     mesh=MeshSettings(target_region_peers=3, max_streams=4, seed=9))
    policy, limits = cfg.mesh.policy(cfg.region), cfg.mesh.limits()
    assert (policy.target_region_peers, policy.region, limits.max_streams,
            cfg.mesh.seed) == (3, "eu", 4, 9)
    for bad in ({"target_region_peers": 20}, {"seed": "x"}, {"ping_interval_s": 0}):
        with pytest.raises(ConfigError, match=r"\[mesh\]"):
            MeshSettings(**bad)  # type: ignore[arg-type]


def test_third_party_logs_are_rate_limited_and_ours_are_not():
    clock = ManualClock()
    limit = ThirdPartyRateLimit(burst=3, window_s=10.0, clock=clock)

    def rec(name: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.WARNING, __file__, 1, "StreamEOF", (), None)

    passed = [limit.filter(rec("libp2p.kad_dht")) for _ in range(10)]
    assert passed.count(True) == 3
    assert all(limit.filter(rec("gd.node")) for _ in range(10))
    clock.advance(11.0)  # the window rolls over on the injected clock's monotonic time
    note = rec("libp2p.kad_dht")
    assert limit.filter(note) and "7 more libp2p lines suppressed" in note.getMessage()
