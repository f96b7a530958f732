"""Crash safety: SIGKILL in the middle of batched writes leaves every acknowledged batch,
and the batch in flight either whole or not at all, with indexes consistent.

Three writers are killed, each only once it has shown that it is inside a batch:

* a script writing batches through `Cortex.put_genes`, which prints `begin b` before
  and `acked b` after each batch (one variant stops half-way through a transaction and
  waits there, so the kill is certain to land inside it);
* a real `gd-node genes import` process, watched through a read-only Cortex until two
  whole batches are visible, then killed while it works on a later one (mostly while
  gathering and signing it: the write itself is short, which is why the scripted
  writer above proves the inside-the-transaction case);
* a real `gd-node run` daemon while clients append to its ledger through the control
  socket, killed with calls in flight.

After each kill the stores are reopened: the batch boundary holds (all or nothing per
batch), every acknowledged write is there, and `check_indexes` / `ledger verify` pass.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from gd.cli.main import cli
from gd.genome import NodeKey, canonical
from gd.genome.gene import gene_id_for
from gd.node.control import ControlError, call
from gd.node.home import Home
from gd.node.store.cortex import Cortex
from gd.node.store.ledger_store import open_ledger

GD_NODE = Path(sys.executable).with_name("gd-node")
BATCH = 2_000
BATCHES = 10
WRITER_KEY_SEED = bytes(31) + b"\x01"
# One `print` per batch boundary ("acked b" and "begin b+1" in one write), so a kill can
# never fall between an ack and the next batch's start: the last line read tells where
# the kill landed.
WRITER = r"""
import sys
from gd.genome import Codon, Gene, NodeKey
from gd.node.store.cortex import Cortex
key = NodeKey.from_seed(bytes(31) + b"\x01")
cortex = Cortex.open(sys.argv[1])
size, count, hold = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
genes = [Gene.create(key, domain="turbofan", name=f"g{i}",
                     codons=[Codon.simple("s11", ">", 47.0)], action="inspect")
         for i in range(size * count)]
print("ready", flush=True)
print("begin 0", flush=True)
for b in range(count):
    batch = genes[b * size:(b + 1) * size]
    if b == hold:
        def half_then_wait(txn):
            for i, gene in enumerate(batch):
                cortex.put_gene_in(txn, gene)
                if i + 1 == size // 2:
                    print("inside", b, i + 1, flush=True)
                    sys.stdin.read()  # the parent kills us here, transaction open
        cortex.write(half_then_wait)
    cortex.put_genes(batch)
    print(f"acked {b}" + (f"\nbegin {b + 1}" if b + 1 < count else "\ndone"), flush=True)
"""
# Bounds for a loaded 2-core machine; each loop below is bounded by one of them.
READY_TIMEOUT_S = 120.0
IMPORT_TIMEOUT_S = 300.0
DAEMON_START_TIMEOUT_S = 60.0
APPEND_TIMEOUT_S = 10.0


def _writer_ids(count: int) -> list[str]:
    peer = NodeKey.from_seed(WRITER_KEY_SEED).peer_id
    return [gene_id_for(peer, "turbofan", f"g{i}") for i in range(count)]


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    """The writer's next line, failing (not hanging) if none comes in `timeout`."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert box and box[0], f"the writer said nothing for {timeout} s (exit {proc.poll()})"
    return box[0].strip()


def _kill_writer(path: Path, hold: int, until: Callable[[str], bool], delay: float = 0.0
                 ) -> list[str]:
    """Run the writer, SIGKILL it once `until(line)` holds (after `delay`), and return
    every line it printed before it died."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(BATCH),
                             str(BATCHES), str(hold)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert _read_line(proc, READY_TIMEOUT_S) == "ready"
        for _ in range(4 * BATCHES):
            lines.append(_read_line(proc, READY_TIMEOUT_S))
            if until(lines[-1]):
                break
        else:
            pytest.fail(f"the kill point never came: {lines}")
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        lines.extend(line.strip() for line in proc.stdout)  # what it printed before dying
        proc.stdout.close()
        proc.stdin.close()
    assert proc.returncode == -signal.SIGKILL, "the writer finished before the kill"
    return lines


def _check_batches(path: Path, lines: list[str]) -> int:
    """Whole batches only, every acknowledged one present, indexes sound; returns the
    number of batches stored."""
    acked = [int(line.split()[1]) for line in lines if line.startswith("acked")]
    assert acked == list(range(len(acked)))
    # The kill landed inside a batch: after its `begin`, before its ack.
    assert lines[-1].split()[:2] in (["begin", str(len(acked))], ["inside", str(len(acked))]), \
        f"the kill did not land mid-batch: last line {lines[-1]!r}"
    ids = _writer_ids(BATCH * BATCHES)
    with Cortex.open(path, readonly=True) as cortex:
        stored = cortex.stats().genes
        assert stored % BATCH == 0, f"partial batch: {stored} genes"
        batches = stored // BATCH
        assert batches >= len(acked), "an acknowledged batch was lost"
        # At most the batch in flight, and only if it committed before its ack was printed.
        assert batches <= len(acked) + 1
        assert cortex.check_indexes() == []
        assert cortex.stats().changes == stored
        # The stored genes are exactly the first batches, in order.
        assert all(cortex.get_gene(ids[i]) is not None for i in range(0, stored, 97))
        assert cortex.get_gene(ids[stored - 1]) is not None if stored else True
        assert stored == len(ids) or cortex.get_gene(ids[stored]) is None
    return batches


def test_sigkill_inside_an_open_transaction_loses_that_batch_whole(tmp_path: Path) -> None:
    path = tmp_path / "cortex"
    Cortex.open(path).close()
    hold = 3
    lines = _kill_writer(path, hold, lambda line: line.startswith("inside"))
    assert lines[-1] == f"inside {hold} {BATCH // 2}"
    # Half of batch 3 was written into the map inside its transaction; none survives.
    assert _check_batches(path, lines) == hold


@pytest.mark.parametrize(("batch", "delay"), [(0, 0.0), (3, 0.02), (7, 0.06)])
def test_sigkill_mid_batch_keeps_acknowledged_batches_and_no_partial_one(
        tmp_path: Path, batch: int, delay: float) -> None:
    path = tmp_path / "cortex"
    Cortex.open(path).close()
    lines = _kill_writer(path, -1, lambda line: line == f"begin {batch}", delay)
    assert _check_batches(path, lines) >= batch


# -- real processes -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def home() -> Iterator[Home]:
    # A short path: the control socket's path must fit in sun_path.
    root = Path(tempfile.mkdtemp(prefix="gdc", dir="/tmp"))
    try:
        home = Home(root / "n")
        result = CliRunner().invoke(cli, [
            "init", "--home", str(home.root), "--org", "org1", "--region", "eu",
            "--seed", (7).to_bytes(32, "big").hex(),
            "--listen", f"/ip4/127.0.0.1/tcp/{_free_port()}"])
        assert result.exit_code == 0, result.output
        yield home
    finally:
        shutil.rmtree(root, ignore_errors=True)


IMPORT_LINES = 12_000
IMPORT_BATCH = 1_000


def child_pids(pid: int) -> list[int]:
    """The live children of `pid` (Linux /proc)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue  # the thread ended meanwhile
    return out


def running(pid: int) -> bool:
    """Whether `pid` still runs (a zombie waiting for its reaper has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_sigkill_of_gd_node_genes_import_keeps_whole_batches(home: Home, tmp_path: Path
                                                              ) -> None:
    names = [f"imp-{i:05d}" for i in range(IMPORT_LINES)]
    source = tmp_path / "genes.jsonl"
    source.write_text("".join(json.dumps({
        "domain": "turbofan", "name": name, "action": "inspect",
        "codons": [{"feature": "s11", "op": ">", "threshold": 47.0 + i / IMPORT_LINES}]})
        + "\n" for i, name in enumerate(names)))
    peer = NodeKey.from_seed((7).to_bytes(32, "big")).peer_id
    ids = [gene_id_for(peer, "turbofan", name) for name in names]
    proc = subprocess.Popen([str(GD_NODE), "genes", "import", str(source), "--batch",
                             str(IMPORT_BATCH), "--home", str(home.root), "--json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = 0
    try:
        deadline = time.monotonic() + IMPORT_TIMEOUT_S
        # Committed batches are what a reader can see: wait for two, then kill while
        # the importer is gathering or writing the next one.
        while seen < 2 * IMPORT_BATCH:
            assert time.monotonic() < deadline, f"import stuck at {seen} genes"
            assert proc.poll() is None, proc.stderr.read().decode()[-500:]
            with Cortex.open(home.cortex_path, readonly=True) as cortex:
                seen = cortex.stats().genes
            time.sleep(0.02)
        workers = child_pids(proc.pid)  # the signing pool, when this machine has cores
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the import finished before the kill"
    # Its signing workers see their pipe close and exit: none outlives the import.
    deadline = time.monotonic() + 30
    while (alive := [pid for pid in workers if running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive, f"signing workers {alive} outlived the killed import"
    with Cortex.open(home.cortex_path, readonly=True) as cortex:
        stored = cortex.stats().genes
        assert cortex.check_indexes() == []
        present = [cortex.get_gene(gene_id) is not None for gene_id in ids]
    assert stored % IMPORT_BATCH == 0, f"partial batch: {stored} genes"
    assert seen <= stored < IMPORT_LINES, (seen, stored)  # nothing seen was lost
    assert present == [i < stored for i in range(IMPORT_LINES)]  # whole batches, in order
    # The killed import leaves a store the same import completes.
    done = subprocess.run([str(GD_NODE), "genes", "import", str(source), "--batch",
                           str(IMPORT_BATCH), "--home", str(home.root), "--json"],
                          capture_output=True, text=True, timeout=IMPORT_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr[-500:]
    report = json.loads(done.stdout)
    assert (report["added"], report["unchanged"]) == (IMPORT_LINES - stored, stored)
    with Cortex.open(home.cortex_path, readonly=True) as cortex:
        assert cortex.stats().genes == IMPORT_LINES and cortex.check_indexes() == []


# -- a daemon under write load ---------------------------------------------------------

APPENDERS = 3
ACKS_BEFORE_KILL = 40


class Appender:
    """Clients appending to the daemon's ledger; a write is acknowledged by its receipt."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.acked: list[tuple[str, str, int, bytes]] = []  # author, key, index, hash
        self.in_flight = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def run(self, client: int) -> None:
        for n in range(100_000):
            if self.stop.is_set():
                return
            key = f"crash-{client}-{n}"
            with self.lock:
                self.in_flight += 1
            try:
                receipt = call(self.home, "ledger_append", timeout=APPEND_TIMEOUT_S + 5,
                               kind="decision", payload_hash=canonical.sha256(key.encode()),
                               summary={"crash": key}, idempotency_key=key,
                               timeout_s=APPEND_TIMEOUT_S)
            except (ControlError, OSError):
                return  # the daemon died mid-call: not acknowledged
            finally:
                with self.lock:
                    self.in_flight -= 1
            if receipt.get("status") != "appended":
                self.errors.append(f"{key}: {receipt}")
                return
            with self.lock:
                self.acked.append((receipt["author"], key, int(receipt["index"]),
                                   bytes.fromhex(receipt["entry_hash"])))


def _start_daemon(home: Home, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        proc = subprocess.Popen([str(GD_NODE), "run", "--home", str(home.root),
                                 "--log-format", "json"], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + DAEMON_START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-1000:]
        try:
            call(home, "ledger_status", timeout=2.0)
            return proc
        except (ControlError, OSError):
            time.sleep(0.1)
    proc.kill()
    proc.wait(timeout=30)
    pytest.fail(f"the daemon did not start in {DAEMON_START_TIMEOUT_S} s")


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def test_sigkill_of_a_daemon_under_write_load_keeps_every_acknowledged_write(
        home: Home, tmp_path: Path) -> None:
    log = tmp_path / "daemon.log"
    proc = _start_daemon(home, log)
    load = Appender(home)
    threads = [threading.Thread(target=load.run, args=(c,), daemon=True)
               for c in range(APPENDERS)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while len(load.acked) < ACKS_BEFORE_KILL or load.in_flight == 0:
            assert time.monotonic() < deadline, f"only {len(load.acked)} appends acknowledged"
            assert all(t.is_alive() for t in threads), load.errors or log.read_text()[-1000:]
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)  # with appends in flight
        proc.wait(timeout=30)
    finally:
        load.stop.set()
        _stop(proc, signal.SIGKILL)
        for thread in threads:
            thread.join(timeout=APPEND_TIMEOUT_S + 10)
    assert proc.returncode == -signal.SIGKILL
    assert load.errors == []
    acked = list(load.acked)
    assert len(acked) >= ACKS_BEFORE_KILL
    ledger = open_ledger(home.root, readonly=True)
    try:
        for author, key, index, entry_hash in acked:
            found = ledger.find(author, key)
            assert found is not None, f"acknowledged entry {key} lost"
            assert (found.index, found.entry_hash) == (index, entry_hash)
        size = ledger.size
    finally:
        ledger.close()
    verify = subprocess.run([str(GD_NODE), "ledger", "verify", "--json", "--home",
                             str(home.root)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"] is True, verify.stdout
    with Cortex.open(home.cortex_path, readonly=True) as cortex:
        assert cortex.check_indexes() == []
    # It restarts on the same data and keeps appending after what it had.
    proc = _start_daemon(home, log)
    try:
        receipt = call(home, "ledger_append", timeout=APPEND_TIMEOUT_S + 5, kind="decision",
                       payload_hash=canonical.sha256(b"after"), summary={"crash": "after"},
                       idempotency_key="after-restart", timeout_s=APPEND_TIMEOUT_S)
        assert receipt["status"] == "appended" and int(receipt["index"]) >= size
        _, key, index, _ = acked[0]
        again = call(home, "ledger_append", timeout=APPEND_TIMEOUT_S + 5, kind="decision",
                     payload_hash=canonical.sha256(key.encode()), summary={"crash": key},
                     idempotency_key=key, timeout_s=APPEND_TIMEOUT_S)
        assert again["status"] == "duplicate" and int(again["index"]) == index
    finally:
        _stop(proc)
    assert proc.returncode == 0, log.read_text()[-1000:]
