"""The local testnet: real node processes on 127.0.0.1, started, observed, killed,
restarted and stopped without leaving a process behind."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from gd.cli.main import cli
from gd.testnet import procs
from gd.testnet.plan import TestnetError, TestnetPlan, make_plan


def run(*args: str, ok: bool = True):  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_plan_is_deterministic_per_seed(tmp_path: Path) -> None:
    a = make_plan(tmp_path / "a", orgs=5, regions=2, seed=7)
    b = make_plan(tmp_path / "b", orgs=5, regions=2, seed=7)
    c = make_plan(tmp_path / "c", orgs=5, regions=2, seed=8)
    assert [n.peer_id for n in a.nodes] == [n.peer_id for n in b.nodes]
    assert [n.peer_id for n in a.nodes] != [n.peer_id for n in c.nodes]
    # 5 nodes in 2 regions: 4 + 1, not 3 + 2 (a 2-voter region stops on either loss)
    assert [n.region for n in a.nodes] == ["eu-west", "us-east"] + ["eu-west"] * 3
    assert sum(n.voter for n in a.nodes if n.region == "eu-west") == 3
    assert len({n.port for n in a.nodes}) == 5
    with pytest.raises(TestnetError):
        make_plan(tmp_path, orgs=2, regions=3, seed=1)


def test_corrupt_plan_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "testnet.json").write_text("{not json")
    result = run("testnet", "status", "--dir", str(tmp_path), ok=False)
    assert result.exit_code == 1 and "corrupt" in result.output


@pytest.mark.slow
def test_up_status_kill_start_join_down(tmp_path: Path) -> None:
    directory = tmp_path / "net"
    plan = None
    try:
        run("testnet", "up", "--dir", str(directory), "--orgs", "3", "--regions", "2",
            "--seed", "3")
        plan = TestnetPlan.load(directory)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            views = json.loads(run("testnet", "status", "--dir", str(directory),
                                   "--json").output)
            if all(v["running"] and v["peers"] >= 2 for v in views) and \
                    sum(v["pending"] for v in views) == 6:
                break
            time.sleep(0.5)
        assert all(v["running"] for v in views)
        assert all(v["peers"] >= 2 for v in views), views
        assert sum(v["native"] for v in views) == 8  # every demo gene has one origin
        # The demo agreements (node-1 shares turbofan with node-2 and loan with node-3)
        # bring the partner's genes of that domain, pending: 3 + 1 + 2.
        assert [v["pending"] for v in views] == [3, 1, 2], views
        run("testnet", "kill", "node-2", "--dir", str(directory))
        views = json.loads(run("testnet", "status", "--dir", str(directory), "--json").output)
        assert [v["running"] for v in views] == [True, False, True]
        assert views[1]["native"] > 0  # a dead node's Cortex is still readable
        assert run("testnet", "kill", "node-2", "--dir", str(directory), ok=False).exit_code == 1
        run("testnet", "start", "node-2", "--dir", str(directory))
        joined = json.loads(run("testnet", "join", "--bootstrap",
                                str(directory / "bootstrap-peers.toml"), "--json").output)
        assert joined["name"] == "node-4"
        plan = TestnetPlan.load(directory)
        assert all(procs.is_running(n) for n in plan.nodes)
        # `up` again is idempotent: same nodes, same pids
        pids = [procs.node_pid(n) for n in plan.nodes]
        run("testnet", "up", "--dir", str(directory))
        assert [procs.node_pid(n) for n in plan.nodes] == pids
    finally:
        if plan is None and (directory / "testnet.json").exists():
            plan = TestnetPlan.load(directory)
        if plan is not None:
            out = json.loads(run("testnet", "down", "--dir", str(directory), "--json").output)
            assert not any(procs.is_running(n) for n in plan.nodes)
            assert len(out["stopped"]) >= 1
            for node in plan.nodes:
                assert not (Path(node.home) / "control.sock").exists()
                assert not (Path(node.home) / "gd-node.pid").exists()


def _wait_for(directory: Path, predicate, timeout: float = 30.0) -> list:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    views: list = []
    while time.monotonic() < deadline:
        views = json.loads(run("testnet", "status", "--dir", str(directory), "--json").output)
        if predicate(views):
            return views
        time.sleep(0.5)
    raise AssertionError(f"condition not reached in {timeout} s: {views}")


@pytest.mark.slow
def test_partition_and_heal(tmp_path: Path) -> None:
    directory = tmp_path / "net"
    try:
        run("testnet", "up", "--dir", str(directory), "--orgs", "3", "--regions", "1",
            "--seed", "4")
        _wait_for(directory, lambda vs: all(v["peers"] == 2 for v in vs))
        run("testnet", "partition", "node-1,node-2", "|", "node-3", "--dir", str(directory))
        views = _wait_for(directory, lambda vs: [v["peers"] for v in vs] == [1, 1, 0])
        assert all(v["running"] for v in views)
        # a partition survives a restart of the cut-off node
        run("testnet", "kill", "node-3", "--dir", str(directory))
        run("testnet", "start", "node-3", "--dir", str(directory))
        time.sleep(3)
        views = json.loads(run("testnet", "status", "--dir", str(directory), "--json").output)
        assert views[2]["peers"] == 0
        run("testnet", "heal", "--dir", str(directory))
        _wait_for(directory, lambda vs: all(v["peers"] == 2 for v in vs), timeout=60)
        bad = run("testnet", "partition", "node-9", "--dir", str(directory), ok=False)
        assert bad.exit_code == 1 and "no node" in bad.output
    finally:
        if (directory / "testnet.json").exists():
            run("testnet", "down", "--dir", str(directory))
