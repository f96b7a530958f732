"""Issue 13, what a new user did with `make run`, on real node processes: a node joined
to the running testnet, a second `make run`, Ctrl-C, a killed voter, `testnet status` on
an 80-column terminal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest
from click.testing import CliRunner

from gd.cli.main import cli
from gd.testnet import procs
from gd.testnet.observe import NodeView, observe, region_ledgers
from gd.testnet.owner import owner_pid
from gd.testnet.plan import TestnetPlan

pytestmark = pytest.mark.slow
GD = [sys.executable, "-c", "from gd.cli.main import main; main()"]


def run(*args: str, ok: bool = True):  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last})")


def views_of(directory: Path) -> list[NodeView]:
    return observe(TestnetPlan.load(directory))


def in_process_table(pid: int) -> bool:
    """Running, or dead but not reaped (<defunct>): either way it is still listed."""
    return Path(f"/proc/{pid}").exists()


def _stop_everything(directory: Path, owner: subprocess.Popen[bytes] | None) -> None:
    if owner is not None and owner.poll() is None:
        owner.kill()
        owner.wait(timeout=30)
    if (directory / "testnet.json").exists():
        procs.stop_all(TestnetPlan.load(directory))
    deadline = time.monotonic() + 10
    while procs.reap_children() is not None and procs.started_children() \
            and time.monotonic() < deadline:
        time.sleep(0.2)


def start_dashboard(tmp_path: Path, directory: Path, *, orgs: int, regions: int,
                    seed: int) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """`gd-node testnet up --dashboard` (`make run`) as its own process, its screen
    written to `dashboard.out` (the caller closes it, and stops the process)."""
    out = open(tmp_path / "dashboard.out", "wb")  # noqa: SIM115 (the caller closes it)
    owner = subprocess.Popen(
        [*GD, "testnet", "up", "--dir", str(directory), "--orgs", str(orgs), "--regions",
         str(regions), "--seed", str(seed), "--dashboard"], stdout=out,
        stderr=subprocess.STDOUT, env=dict(os.environ, COLUMNS="140"))
    return owner, out


def test_join_second_up_and_ctrl_c_on_a_running_dashboard(tmp_path: Path) -> None:
    directory = tmp_path / "net"
    owner, out = start_dashboard(tmp_path, directory, orgs=3, regions=2, seed=6)
    try:
        wait_for("3 nodes up under the dashboard", lambda: (directory / "testnet.json")
                 .exists() and owner_pid(directory) == owner.pid
                 and all(v.live and v.peers >= 2 for v in views_of(directory)), 180)
        plan = TestnetPlan.load(directory)
        pids = [procs.node_pid(n) for n in plan.nodes]

        # A second `make run` on the same directory: refused, naming the first; it
        # starts and stops nothing.
        second = run("testnet", "up", "--dir", str(directory), "--dashboard",
                     "--watch-seconds", "1", ok=False)
        assert second.exit_code == 1, second.output
        assert "already running" in second.output and f"pid {owner.pid}" in second.output
        assert [procs.node_pid(n) for n in plan.nodes] == pids

        # `testnet join`: node-4 lands in us-east and becomes a learner of its ledger.
        joined = json.loads(run("testnet", "join", "--bootstrap",
                                str(directory / "bootstrap-peers.toml"), "--json").output)
        assert joined["name"] == "node-4"
        node2 = TestnetPlan.load(directory).node("node-2")
        wait_for("node-4 a learner of us-east's ledger",
                 lambda: [v.role for v in views_of(directory) if v.name == "node-4"]
                 == ["learner"])
        height = views_of(directory)[3].ledger_height
        # its `share` (and the other side's) reach its ledger through the region's leader
        run("share", "--with", node2.peer_id, "--domain", "loan", "--home",
            joined["home"])
        run("share", "--with", joined["peer_id"], "--domain", "loan", "--home", node2.home)
        wait_for("node-4's agreement on its ledger",
                 lambda: views_of(directory)[3].ledger_height > height)

        # A node killed from another terminal is reaped by the dashboard (no <defunct>).
        node3_pid = procs.node_pid(plan.node("node-3"))
        assert node3_pid is not None
        run("testnet", "kill", "node-3", "--dir", str(directory))
        wait_for("node-3 reaped", lambda: not in_process_table(node3_pid), 15)

        # Ctrl-C on the dashboard stops every node, the joined one included.
        owner.send_signal(signal.SIGINT)
        assert owner.wait(timeout=90) == 0
        grown = TestnetPlan.load(directory)
        assert len(grown.nodes) == 4
        assert not any(procs.is_running(n) for n in grown.nodes)
        assert owner_pid(directory) is None
        out.close()
        screen = (tmp_path / "dashboard.out").read_text()
        assert "node-4" in screen and "stopped 3 node(s)" in screen
    finally:
        out.close()
        _stop_everything(directory, owner)


def test_sigterm_on_a_running_dashboard_stops_every_node_like_ctrl_c(tmp_path: Path) -> None:
    # `kill <pid>`, a service manager or a CI job ending: SIGTERM's default would end
    # the dashboard and leave every node it started running.
    directory = tmp_path / "net"
    owner, out = start_dashboard(tmp_path, directory, orgs=2, regions=1, seed=7)
    try:
        wait_for("2 nodes up under the dashboard", lambda: (directory / "testnet.json")
                 .exists() and owner_pid(directory) == owner.pid
                 and all(v.live for v in views_of(directory)), 180)
        plan = TestnetPlan.load(directory)
        pids = [procs.node_pid(n) for n in plan.nodes]
        assert len(pids) == 2 and all(pids)
        owner.send_signal(signal.SIGTERM)
        # 0 once the dashboard shows; 1 ("Aborted!") if `up` was still finishing its
        # start (under load it may be): SIGTERM's default would give -15.
        assert owner.wait(timeout=90) in (0, 1)
        assert not any(procs.is_running(n) for n in plan.nodes)
        assert not any(in_process_table(pid) for pid in pids if pid is not None)
        assert owner_pid(directory) is None
        out.close()
        assert "stopped 2 node(s)" in (tmp_path / "dashboard.out").read_text()
    finally:
        out.close()
        _stop_everything(directory, owner)


def test_default_testnet_keeps_its_ledger_after_losing_a_voter(tmp_path: Path) -> None:
    directory = tmp_path / "net"
    try:
        run("testnet", "up", "--dir", str(directory), "--seed", "2")  # the `make run` shape
        plan = TestnetPlan.load(directory)

        def eu_west_leader() -> str | None:
            views = observe(plan)
            ready = all(v.live for v in views)
            leader = next(r.leader for r in region_ledgers(plan, views)
                          if r.region == "eu-west")
            return leader if ready else None

        leader = wait_for("eu-west elects a leader", eu_west_leader)
        run("testnet", "kill", leader, "--dir", str(directory))
        survivors = [v for v in observe(plan) if v.region == "eu-west" and v.live]
        assert len(survivors) >= 2
        approver = next(v for v in survivors if v.pending > 0)
        gene = json.loads(run("pending", "list", "--home", plan.node(approver.name).home,
                              "--json").output)[0]["id"]
        before = {v.name: v.ledger_height for v in survivors}
        run("approve", gene, "--home", plan.node(approver.name).home)
        wait_for("the approval committed on every surviving eu-west node", lambda: all(
            v.ledger_height > before[v.name] for v in observe(plan) if v.name in before))

        # What `testnet status` shows on an 80-column terminal, with a node down and the
        # network cut.
        run("testnet", "partition", "node-2", "|", ",".join(
            n.name for n in plan.nodes if n.name != "node-2"), "--dir", str(directory))
        status = subprocess.run([*GD, "testnet", "status", "--dir", str(directory)],
                                capture_output=True, text=True, timeout=60,
                                env=dict(os.environ, COLUMNS="80"))
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert max(len(line) for line in lines) <= 80, status.stdout
        rows = {line.split()[0]: line for line in lines if line.startswith("node-")}
        assert sorted(rows) == sorted(n.name for n in plan.nodes)
        assert "down" in rows[leader] and "(" in rows[leader]  # last known, marked
        assert "ledger leaders" in status.stdout and f"eu-west: {leader}" not in status.stdout
        assert "eu-west: no leader" not in status.stdout
        partition = next(line for line in lines if line.startswith("partition"))
        assert "node-2 |" in partition or "| node-2" in partition
        assert any(line.startswith("state: ") for line in lines)  # the legend
    finally:
        if (directory / "testnet.json").exists():
            run("testnet", "heal", "--dir", str(directory))
            run("testnet", "down", "--dir", str(directory))
