"""A node that kept a ledger alone, restarted as a member of a region (`[ledger] voters`):
a real `gd-node run` must start, move its solo statements to the outbox and empty the
local log (it hung at start when the migration opened a table inside its write
transaction)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from gd_testkit import key_from_int

from gd.cli.main import cli
from gd.genome import canonical
from gd.genome.identity import NodeKey
from gd.node.control import ControlError, call
from gd.node.home import Home
from gd.node.services.recorder import DirectRoute, LedgerRecorder, OutboxRoute
from gd.node.store.cortex import Cortex
from gd.node.store.ledger_store import open_ledger

GD_NODE = Path(sys.executable).with_name("gd-node")
# A daemon starts in ~2 s on an idle machine; generous for a loaded 2-core box.
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
SOLO_STATEMENTS = 3


@pytest.fixture
def short_tmp():
    root = Path(tempfile.mkdtemp(prefix="gdm", dir="/tmp"))  # socket paths <= 108 bytes
    yield root
    shutil.rmtree(root, ignore_errors=True)


def solo_home(root: Path) -> tuple[Home, NodeKey]:
    home = Home(root / "n1")
    result = CliRunner().invoke(cli, ["init", "--home", str(home.root), "--org", "org1",
                                      "--region", "eu", "--seed", (1).to_bytes(32, "big").hex(),
                                      "--listen", "/ip4/127.0.0.1/tcp/0"])
    assert result.exit_code == 0, result.output
    key = NodeKey.load(home.key_path)
    with Cortex.open(home.cortex_path) as cortex:
        recorder = LedgerRecorder(cortex.env, key)
        assert isinstance(recorder.route, DirectRoute)
        for i in range(SOLO_STATEMENTS):
            receipt = recorder.append("decision", canonical.sha256(bytes([i])), {"i": i})
            assert receipt.status == "appended"
        assert recorder.ledger.size == SOLO_STATEMENTS
    return home, key


def status_of(home: Home) -> dict | None:
    try:
        return call(home, "ledger_status", timeout=2.0)
    except ControlError:
        return None


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)


def test_a_solo_ledger_restarted_with_voters_starts_and_moves_to_the_outbox(short_tmp):
    home, key = solo_home(short_tmp)
    voters = [key.peer_id, key_from_int(2).peer_id, key_from_int(3).peer_id]
    text = home.config_path.read_text()
    assert "voters = []" in text
    home.config_path.write_text(text.replace(
        "voters = []", "voters = [" + ", ".join(f'"{v}"' for v in voters) + "]"))
    proc = subprocess.Popen([str(GD_NODE), "run", "--home", str(home.root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        status = None
        while status is None and time.monotonic() < deadline and proc.poll() is None:
            status = status_of(home)
            time.sleep(0.1)
        assert proc.poll() is None, f"the daemon exited with {proc.returncode}"
        assert status is not None, f"the daemon did not answer within {START_TIMEOUT_S} s"
        assert status["mode"] == "raft"
        # No quorum (the other voters never start): the statements wait in the queue.
        assert status["size"] == 0
        assert status["queued"] == SOLO_STATEMENTS
    finally:
        stop(proc)
    with Cortex.open(home.cortex_path) as cortex:
        queued = OutboxRoute(cortex.env).queued()
    assert sorted(s.summary["i"] for s in queued) == list(range(SOLO_STATEMENTS))
    assert all(not s.is_sequenced and s.author == key.peer_id for s in queued)
    with open_ledger(home.root, readonly=True) as ledger:
        assert ledger.size == 0 and ledger.latest_head() is None
