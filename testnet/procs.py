"""Starting, stopping and killing a testnet's node processes.

Each node is a real `gd-node run` process in its own session (so a Ctrl-C meant for the
dashboard does not hit the nodes before `down` can stop them in order), logging JSON to
`HOME/daemon.log`. Liveness is read from the node's own pid lock (`gd-node.pid`, an
flock the kernel drops when the process dies), never from a pid we remember: a pid can
be reused, a held flock cannot lie.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from gd.node.home import Home
from gd.node.lock import holder_pid
from gd.testnet.plan import BOOTSTRAP_FILE, NodePlan, TestnetError, TestnetPlan

LOG_FILE = "daemon.log"
# How long a node may take to come up (import libp2p ≈1.5 s, open LMDB, bind) and to
# stop after SIGTERM (the daemon's own shutdown is bounded at a few seconds).
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
_POLL_S = 0.1
REAP_WAIT_S = 5.0
# The nodes this process started, by pid: whoever kills one (`testnet kill` in another
# terminal, a crash), its exit status is ours to collect, or it lingers as <defunct>
# until we exit. `reap_children` collects them; the dashboard calls it every refresh.
_children: dict[int, subprocess.Popen[bytes]] = {}


def node_pid(node: NodePlan) -> int | None:
    pid = holder_pid(Home.resolve(node.home).pid_path)
    return pid if pid and pid > 0 else None


def is_running(node: NodePlan) -> bool:
    return node_pid(node) is not None


def _command(node: NodePlan, plan: TestnetPlan) -> list[str]:
    return [sys.executable, "-c", "from gd.cli.main import main; main()", "run",
            "--home", node.home, "--bootstrap", str(Path(plan.directory) / BOOTSTRAP_FILE),
            "--log-format", "json"]


def start_node(node: NodePlan, plan: TestnetPlan, *, wait: bool = True) -> int:
    """Start one node (no-op if it runs). Returns its pid once it holds its lock."""
    pid = node_pid(node)
    if pid is not None:
        return pid
    log = open(Path(node.home) / LOG_FILE, "ab")  # noqa: SIM115 (handed to the child)
    try:
        proc = subprocess.Popen(_command(node, plan), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    finally:
        log.close()
    _children[proc.pid] = proc
    if not wait:
        return proc.pid
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TestnetError(f"{node.name} exited with code {proc.returncode} at start; "
                               f"see {Path(node.home) / LOG_FILE}")
        if (pid := node_pid(node)) is not None and Home.resolve(node.home).control_socket.exists():
            return pid
        time.sleep(_POLL_S)
    proc.kill()
    proc.wait()
    _children.pop(proc.pid, None)
    raise TestnetError(f"{node.name} did not start within {START_TIMEOUT_S:.0f} s")


def stop_node(node: NodePlan, *, hard: bool = False, signalled: bool = False) -> bool:
    """SIGTERM (or SIGKILL with `hard`) one node and wait until its lock is released.
    A node that ignores SIGTERM past STOP_TIMEOUT_S is killed. Returns False if it was
    not running. `signalled`: the caller already sent SIGTERM — never send a second one,
    it would hit a node mid-shutdown, after it stopped handling signals, and kill it
    before it released its lock."""
    pid = node_pid(node)
    if pid is None:
        return False
    if not signalled:
        try:
            os.kill(pid, signal.SIGKILL if hard else signal.SIGTERM)
        except ProcessLookupError:
            return False
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if node_pid(node) is None:
            _reap(pid)
            return True
        time.sleep(_POLL_S)
    os.kill(pid, signal.SIGKILL)
    while node_pid(node) is not None:
        time.sleep(_POLL_S)
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    """Collect the exit status if the node is our child (no zombie left behind)."""
    proc = _children.get(pid)
    if proc is not None:
        # The daemon drops its lock just before it exits: give it a moment to finish.
        try:
            proc.wait(timeout=REAP_WAIT_S)
        except subprocess.TimeoutExpired:
            return  # still exiting: `reap_children` collects it later
        del _children[pid]
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return


def started_children() -> list[int]:
    """Pids of the nodes this process started and has not collected yet."""
    return list(_children)


def reap_children() -> list[int]:
    """Collect every node we started that has exited since; returns their pids."""
    gone = [pid for pid, proc in _children.items() if proc.poll() is not None]
    for pid in gone:
        del _children[pid]
    return gone


def stop_all(plan: TestnetPlan) -> list[str]:
    """Stop every node: SIGTERM to all first (they shut down in parallel), then wait."""
    running = [n for n in plan.nodes if is_running(n)]
    for node in running:
        pid = node_pid(node)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
    for node in running:
        stop_node(node, signalled=True)
    return [n.name for n in running]


def set_deny_list(node: NodePlan, peers: set[str]) -> None:
    """Make `node` refuse `peers`: through its control socket when it runs (it drops them
    at once), else in its home's deny file (read when it starts)."""
    from gd.node.control import DaemonNotRunning, call
    from gd.node.net.denylist import save_deny_list

    if is_running(node):
        try:
            call(Home.resolve(node.home), "deny", peers=sorted(peers))
            return
        except DaemonNotRunning:
            pass  # it stopped in between: the file below is read at its next start
    save_deny_list(Path(node.home), peers)


def partition(plan: TestnetPlan, groups: list[list[NodePlan]]) -> None:
    """Cut the testnet into `groups`: every node denies every node outside its group.
    Nodes named in no group form one more group of their own."""
    named = {n.name for group in groups for n in group}
    rest = [n for n in plan.nodes if n.name not in named]
    all_groups = [g for g in (*groups, rest) if g]
    for group in all_groups:
        inside = {n.peer_id for n in group}
        outside = {n.peer_id for n in plan.nodes} - inside
        for node in group:
            set_deny_list(node, outside)


def heal(plan: TestnetPlan) -> None:
    for node in plan.nodes:
        set_deny_list(node, set())


def terminate_all(procs: Sequence[subprocess.Popen[bytes]],
                  timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop processes we started and hold a `Popen` for (benchmarks, tests): SIGTERM to
    every live one first, so they shut down in parallel, then wait for each; one still
    running after `timeout_s` is killed. Every one is reaped (no <defunct> left)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
