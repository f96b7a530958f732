"""One writer per node (issue 12.1, ADR 0022): with a daemon running, a CLI write goes
through it and the daemon hints its peers at once; with none, the CLI writes under the
home's lock; a lock held by a silent process is a clear error, never a second writer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner
from daemon_cluster import DaemonCluster, quiet_libp2p
from gd_testkit import key_from_int
from lock_watch import lock_holders_during

from gd.cli import writer
from gd.cli.main import cli
from gd.node.config import NodeConfig
from gd.node.control import call
from gd.node.control_methods import ops
from gd.node.home import Home
from gd.node.local import initialise_home
from gd.node.lock import PidLock, holder_pid
from gd.node.services.sync_service import share_all
from gd.node.store.cortex import Cortex

GENES = "\n".join(json.dumps({
    "domain": "turbofan", "name": f"inspect-hot-{i}", "action": "inspect",
    "codons": [{"feature": "s11", "op": ">", "threshold": 47.0 + i}]}) for i in range(3))
# Peers pull on their own only every 10 minutes here: a gene that arrives came by a hint.
NO_PERIODIC = {"debounce_s": 0.05, "interval_s": 600.0, "repair_interval_s": 600.0}


@pytest.fixture(autouse=True)
def _quiet() -> None:
    quiet_libp2p()


def _init(home: Home, n: int) -> None:
    home.root.mkdir(parents=True, exist_ok=True)
    initialise_home(home, NodeConfig(org=f"org{n}", region="eu"), key_from_int(n))


def _genes_file(root: Path) -> Path:
    path = root / "genes.jsonl"
    path.write_text(GENES + "\n")
    return path


def _cli(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


async def test_genes_import_goes_through_the_running_daemon_and_reaches_a_peer_by_hint(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with DaemonCluster.in_tmp("gdw") as c:
        _init(c.home(1), 1)
        _init(c.home(2), 2)
        genes = _genes_file(c.root)
        async with trio.open_nursery() as nursery:
            a = await c.start_daemon(nursery, 1, sync=NO_PERIODIC, share_policy=share_all)
            b = await c.start_daemon(nursery, 2, sync=NO_PERIODIC, share_policy=share_all,
                                     boot=[a])
            await c.connected(a, b)
            await c.until(lambda: b.sync.state(a.peer_id).scope is not None)
            st = b.sync.state(a.peer_id)
            await c.until(lambda: not st.wake.is_set() and not st.pull_lock.locked())
            await trio.sleep(1.0)  # the pull on connect (empty feed) is over: none pending
            # The watcher has no timer (peers come as gate events): only a notification
            # moves it.

            def no_local_write(*args: object, **kwargs: object) -> None:
                raise AssertionError("the CLI opened the Cortex beside a running daemon")

            monkeypatch.setattr(writer, "open_local", no_local_write)
            code, out = await trio.to_thread.run_sync(
                _cli, "genes", "import", genes, "--home", c.home(1).root, "--json")
            assert code == 0, out
            assert json.loads(out)["added"] == 3
            served = await trio.to_thread.run_sync(
                lambda: call(c.home(1), "writes_served"))
            assert served == {"writes": 1, "pid": os.getpid()}
            assert len(list(a.cortex.genes())) == 3
            await c.until(lambda: len(list(b.cortex.genes())) == 3)
            assert not list(c.home(1).root.glob("cli-upload-*"))  # the upload is gone
            c.stop_all(a, b)


def test_with_no_daemon_the_cli_writes_under_the_homes_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = Home(tmp_path / "n1")
    _init(home, 1)
    holders = lock_holders_during(monkeypatch, ops, "import_genes", home)
    code, out = _cli("genes", "import", _genes_file(tmp_path), "--home", home.root, "--json")
    assert code == 0, out
    assert json.loads(out)["added"] == 3
    assert holders == [os.getpid()]  # the lock was ours while writing ...
    assert holder_pid(home.pid_path) is None  # ... and released after
    with Cortex.open(home.cortex_path, readonly=True, create=False) as cortex:
        assert len(list(cortex.genes())) == 3


def test_a_locked_home_with_no_daemon_answering_is_an_error_not_a_second_writer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = Home(tmp_path / "n1")
    _init(home, 1)
    monkeypatch.setattr(writer, "LOCK_WAIT_S", 0.3)
    with PidLock(home.pid_path):  # a daemon that holds the home but serves no socket
        code, out = _cli("genes", "import", _genes_file(tmp_path), "--home", home.root)
    assert code == 1
    assert "no daemon answers" in out and "nothing was written" in out
    assert "Traceback" not in out
    with Cortex.open(home.cortex_path, readonly=True, create=False) as cortex:
        assert list(cortex.genes()) == []
