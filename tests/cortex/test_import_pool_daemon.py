"""`genes import` of a big file with a daemon running: the CLI hands it to the daemon
(one writer), whose importer signs in a pool of worker subprocesses
(`python -m gd.node.app.sign_worker`, ADR 0041). Every line is stored, signed by the node's key, the
progress reaches the CLI, and no signing worker is left behind."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from gd.cli.main import cli
from gd.genome import NodeKey
from gd.node.app.importer import POOL_MIN_BYTES
from gd.node.control import ControlError, call
from gd.node.home import Home
from gd.node.store.cortex import Cortex

GD_NODE = Path(sys.executable).with_name("gd-node")
SEED = (9).to_bytes(32, "big")
LINES = 3_000
START_TIMEOUT_S = 60.0
IMPORT_TIMEOUT_S = 300.0


@pytest.fixture
def home() -> Iterator[Home]:
    root = Path(tempfile.mkdtemp(prefix="gdp", dir="/tmp"))  # short: the socket path
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        home = Home(root / "n")
        result = CliRunner().invoke(cli, [
            "init", "--home", str(home.root), "--org", "org1", "--region", "eu",
            "--seed", SEED.hex(), "--listen", f"/ip4/127.0.0.1/tcp/{port}"])
        assert result.exit_code == 0, result.output
        yield home
    finally:
        shutil.rmtree(root, ignore_errors=True)


def signing_workers(pid: int) -> list[int]:
    """Children of `pid` that are signing workers."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                cmd = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"gd.node.app.sign_worker" in cmd:
                out.append(int(child))
    return out


def test_a_big_import_through_the_daemon_signs_in_a_pool_and_stores_every_line(
        home: Home, tmp_path: Path) -> None:
    source = tmp_path / "genes.jsonl"
    source.write_text("".join(json.dumps({
        "domain": "turbofan", "name": f"pool-{i:05d}", "action": "inspect",
        "purpose": "a line long enough that the file is over the pool's threshold " * 2,
        "codons": [{"feature": "s11", "op": ">", "threshold": 40.0 + i / LINES}]}) + "\n"
        for i in range(LINES)))
    assert source.stat().st_size >= POOL_MIN_BYTES  # the pool path is the one taken
    log = tmp_path / "daemon.log"
    with log.open("ab") as out:
        daemon = subprocess.Popen([str(GD_NODE), "run", "--home", str(home.root)],
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert daemon.poll() is None, log.read_text()[-1000:]
            assert time.monotonic() < deadline, "the daemon did not start"
            try:
                call(home, "ledger_status", timeout=2.0)
                break
            except (ControlError, OSError):
                time.sleep(0.1)
        importing = subprocess.Popen([str(GD_NODE), "genes", "import", str(source),
                                      "--batch", "500", "--home", str(home.root), "--json"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        seen: set[int] = set()  # the daemon's signing workers, while the import runs
        deadline = time.monotonic() + IMPORT_TIMEOUT_S
        while importing.poll() is None and time.monotonic() < deadline:
            seen.update(signing_workers(daemon.pid))
            time.sleep(0.02)
        try:
            stdout, stderr = importing.communicate(timeout=30)
        finally:
            if importing.poll() is None:
                importing.kill()
                importing.wait()
        assert importing.returncode == 0, stderr[-1000:]
        assert seen, "no signing worker ran in the daemon"
        report = json.loads(stdout)
        assert (report["added"], report["rejected"]) == (LINES, [])
        assert call(home, "writes_served")["writes"] == 1  # the daemon wrote it
        # The pool is shut down with the import: its workers are gone.
        deadline = time.monotonic() + 30
        while (left := signing_workers(daemon.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert left == []
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(timeout=30)
    assert daemon.returncode == 0, log.read_text()[-1000:]
    peer = NodeKey.from_seed(SEED).peer_id
    with Cortex.open(home.cortex_path, readonly=True) as cortex:
        genes = list(cortex.genes())
        assert len(genes) == LINES and cortex.check_indexes() == []
        assert cortex.last_seq == LINES
        for gene in genes:
            assert gene.origin == peer and gene.author == peer
            gene.verify()
