"""Mesh policy, peer scores and per-peer budgets: pure logic, no network, no clock."""

from __future__ import annotations

import pytest

from gd.node.net.mesh import MeshPlanner, MeshPolicy
from gd.node.net.peers import (
    DROP_SCORE,
    LimitExceeded,
    PeerBudget,
    PeerLimits,
    PeerScore,
    PeerTable,
)
from gd.protocol.handshake import PeerHello


def hello(pid: str, region: str) -> PeerHello:
    return PeerHello(peer_id=pid, version="gd/1", org="o", region=region, capabilities=(),
                     domains=(), ledger_size=0, ledger_root=b"\0" * 32, timestamp_ms=0)


def table_with(connected: dict[str, str], known: dict[str, str | None]) -> PeerTable:
    t = PeerTable()
    for pid, region in connected.items():
        t.verified(hello(pid, region), ("/ip4/127.0.0.1/tcp/1",), now_wall=0)
    for pid, region in known.items():
        t.learn(pid, ("/ip4/127.0.0.1/tcp/2",), region)
    return t


def test_planner_fills_region_first_then_bridges_to_distinct_regions():
    policy = MeshPolicy(region="eu", target_region_peers=2, target_bridges=2)
    t = table_with({}, {"e1": "eu", "e2": "eu", "e3": "eu", "u1": "us", "u2": "us", "a1": "ap"})
    plan = MeshPlanner(policy, seed=1).plan(0.0, t)
    assert set(plan.dial) == {"e1", "e2", "u1", "a1"}
    assert plan.drop == ()


def test_planner_counts_dials_in_flight_and_connected_peers():
    policy = MeshPolicy(region="eu", target_region_peers=2, target_bridges=0)
    t = table_with({"e1": "eu"}, {"e2": "eu", "e3": "eu"})
    mp = MeshPlanner(policy)
    mp.dial_started("e2")
    assert mp.plan(0.0, t).dial == ()


def test_unknown_region_hints_are_dialled_to_learn_their_region():
    t = table_with({}, {"x": None})
    assert MeshPlanner(MeshPolicy(region="eu")).plan(0.0, t).dial == ("x",)


def test_excess_peers_are_dropped_worst_first_without_ban():
    policy = MeshPolicy(region="eu", target_region_peers=1, max_region_peers=2)
    t = table_with({"e1": "eu", "e2": "eu", "e3": "eu"}, {})
    t.get("e2").score.failure(0.0)
    plan = MeshPlanner(policy).plan(0.0, t)
    assert [(d.peer_id, d.ban) for d in plan.drop] == [("e2", False)]


def test_misbehaving_peer_is_dropped_banned_and_not_redialled():
    t = table_with({"e1": "eu"}, {})
    for _ in range(5):
        t.get("e1").score.protocol_error(0.0)
    mp = MeshPlanner(MeshPolicy(region="eu"))
    plan = mp.plan(0.0, t)
    assert plan.drop[0].peer_id == "e1" and plan.drop[0].ban
    mp.ban("e1", 0.0)
    t.disconnected("e1")
    assert "e1" not in mp.plan(1.0, t).dial
    assert mp.is_banned("e1", 10.0) and not mp.is_banned("e1", 10_000.0)


def test_backoff_grows_exponentially_is_capped_and_replays_from_seed():
    def schedule(seed: int) -> list[float]:
        mp = MeshPlanner(MeshPolicy(region="eu", backoff_max_s=60.0), seed=seed)
        return [mp.dial_failed("p", 0.0) for _ in range(10)]

    a = schedule(7)
    assert a == schedule(7) and a != schedule(8)
    assert 0.8 <= a[0] <= 1.2 and 3.2 <= a[2] <= 4.8
    assert max(a) <= 60.0 * 1.2 and a[-1] >= 60.0 * 0.8


def test_peer_in_backoff_is_skipped_until_its_time():
    t = table_with({}, {"e1": "eu"})
    mp = MeshPlanner(MeshPolicy(region="eu"), seed=3)
    mp.dial_started("e1")
    at = mp.dial_failed("e1", 100.0)
    assert mp.plan(at - 0.01, t).dial == ()
    assert mp.plan(at, t).dial == ("e1",)


def test_score_penalties_decay_and_latency_only_ranks():
    s = PeerScore()
    for _ in range(5):
        s.protocol_error(0.0)
    assert s.should_drop(0.0)
    assert not s.should_drop(600.0 * 3)  # three half-lives later
    slow = PeerScore()
    for _ in range(50):
        slow.rtt(10_000.0)
    assert slow.value(0.0) > DROP_SCORE and slow.value(0.0) < 0


def test_verified_claims_override_hints_but_hints_never_override_claims():
    t = table_with({}, {"p": "us"})
    t.verified(hello("p", "eu"), (), now_wall=5.0)
    t.learn("p", (), "ap")
    assert t.get("p").region == "eu" and t.get("p").since == 5.0
    assert t.by_region() == {"eu": 1}
    t.disconnected("p")
    assert t.rows(0.0) == [] and t.rows(0.0, connected_only=False)[0]["region"] == "eu"


def test_budget_throttles_a_fast_sender_then_drops_a_flooder():
    lim = PeerLimits(max_bytes_per_s=1000, burst_bytes=1000, max_throttle_debt_s=3.0)
    b = PeerBudget(lim, now=0.0)
    assert b.charge(1000, 0.0) == 0.0  # the burst
    assert b.charge(500, 0.0) == pytest.approx(0.5)  # throttled
    assert b.charge(500, 1.0) == 0.0  # after pausing as told: back within the rate
    with pytest.raises(LimitExceeded):
        for i in range(10):  # 5x the rate, without pause: a flood
            b.charge(5000, 1.0 + i * 0.01)


def test_budget_refills_and_bounds_streams():
    b = PeerBudget(PeerLimits(max_bytes_per_s=1000, burst_bytes=1000, max_streams=2), now=0.0)
    b.charge(1000, 0.0)
    assert b.charge(1000, 1.0) == 0.0
    b.open_stream()
    b.open_stream()
    with pytest.raises(LimitExceeded):
        b.open_stream()
    b.close_stream()
    b.open_stream()
