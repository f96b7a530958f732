"""The import's signing processes (issue 15, ADR 0041): plain subprocesses that give the
bytes the inline path gives; a worker lost mid-import costs speed, never a line, and
leaves the store byte for byte what an import without workers stores."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lmdb
import pytest

from gd.genome.identity import NodeKey
from gd.node.app import importer, sign_pool
from gd.node.app.sign_pool import SignedLine, SignPool, sign_lines
from gd.node.store.cortex import Cortex

KEY = NodeKey.from_seed(bytes(range(32)))


def row(i: int) -> dict:
    out = {"domain": "turbofan", "name": f"rule-{i}",
           "codons": [{"feature": "s11", "op": ">", "threshold": 40.0 + i}],
           "action": "inspect", "params": {}, "purpose": "pool"}
    if i % 97 == 5:
        out["synapses"] = [{"target": "rule-1"}]
    return out


def jobs(n: int) -> list[tuple[int, bytes, int]]:
    texts = [json.dumps(row(i)).encode() for i in range(n)]
    texts[3] = json.dumps(dict(row(3), action="no-such-action")).encode()
    texts[600] = b"{not json"
    return [(i + 1, t, 10_000 + i) for i, t in enumerate(texts)]


def test_the_pool_answers_what_signing_inline_answers_and_reaps_its_workers():
    work = jobs(1300)  # six chunks, so both workers take several, in turn
    with SignPool(KEY, 2) as pool:
        pids = pool.pids
        assert len(pids) == 2 and os.getpid() not in pids
        got = list(pool.results(iter(work)))
        assert not pool.lost
    assert got == sign_lines(KEY, work)
    assert [r[0] for r in got] == list(range(1, 1301))
    assert [r[0] for r in got if not isinstance(r, SignedLine)] == [4, 601]
    for pid in pids:  # reaped: no such process (not even a zombie) is left
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_workers_that_die_at_once_leave_the_signing_to_the_pool(monkeypatch):
    monkeypatch.setattr(sign_pool, "WORKER_ARGS", ("-c", "import sys; sys.exit(3)"))
    work = jobs(700)
    with SignPool(KEY, 2) as pool:
        got = list(pool.results(iter(work)))
        assert pool.lost and pool.pids == []
    assert got == sign_lines(KEY, work)


def test_a_worker_answering_nonsense_is_given_up(monkeypatch):
    # Reads the seed, then answers every chunk with one frame that is not a result list.
    fake = ("import sys, struct\n"
            "from gd.node.services.worker_procs import read_frame, write_frame\n"
            "read_frame(sys.stdin.buffer)\n"
            "while read_frame(sys.stdin.buffer) is not None:\n"
            "    write_frame(sys.stdout.buffer, b'\\x91\\x01')\n")
    monkeypatch.setattr(sign_pool, "WORKER_ARGS", ("-c", fake))
    work = jobs(700)
    with SignPool(KEY, 2) as pool:
        got = list(pool.results(iter(work)))
        assert pool.lost
    assert got == sign_lines(KEY, work)


def dump(path: Path) -> dict[bytes, list[tuple[bytes, bytes]]]:
    """Every record of every table of a closed LMDB environment."""
    env = lmdb.open(str(path), max_dbs=64, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            names = [k for k, _ in txn.cursor()]
            return {name: list(txn.cursor(db=env.open_db(name, txn=txn, create=False)))
                    for name in names}
    finally:
        env.close()


def import_with(tmp_path: Path, source: Path, name: str, workers: int,
                monkeypatch: pytest.MonkeyPatch, *, kill: bool = False
                ) -> dict[bytes, list[tuple[bytes, bytes]]]:
    stamps = itertools.count(1 << 40)  # the same stamps in every run: comparable bytes
    monkeypatch.setattr(importer, "hlc_now", lambda: next(stamps))
    pools: list[SignPool] = []

    class Watched(SignPool):
        def __init__(self, key: NodeKey, n: int) -> None:
            super().__init__(key, n)
            pools.append(self)

    monkeypatch.setattr(importer, "SignPool", Watched)
    killed: list[int] = []

    def progress(done: int) -> None:
        if kill and not killed:  # SIGKILL one worker after the first batch is stored
            killed.append(pools[0].pids[0])
            os.kill(killed[0], signal.SIGKILL)

    with Cortex.open(tmp_path / name) as cortex:
        report = importer.import_genes(cortex, KEY, source, batch_size=250,
                                       workers=workers, progress=progress)
        assert (report.added, len(report.rejected)) == (2998, 2)
        assert cortex.check_indexes() == []
    if workers > 1:
        assert pools and pools[0].lost == kill
    if kill:
        assert killed
        with pytest.raises(ProcessLookupError):
            os.kill(killed[0], 0)  # reaped
    return dump(tmp_path / name)


def test_a_worker_killed_mid_import_leaves_the_store_the_inline_import_writes(
        tmp_path, monkeypatch):
    source = tmp_path / "genes.jsonl"
    source.write_text("".join(t.decode() + "\n" for _, t, _ in jobs(3000)))
    inline = import_with(tmp_path, source, "inline", 1, monkeypatch)
    assert sum(len(v) for v in inline.values()) > 7 * 2998
    assert import_with(tmp_path, source, "pool", 2, monkeypatch) == inline
    assert import_with(tmp_path, source, "killed", 2, monkeypatch, kill=True) == inline


def test_workers_end_when_the_importing_process_is_killed(tmp_path):
    script = ("import sys, time\n"
              "from gd.genome.identity import NodeKey\n"
              "from gd.node.app.sign_pool import SignPool\n"
              "pool = SignPool(NodeKey.from_seed(bytes(32)), 2)\n"
              "print(*pool.pids, flush=True)\n"
              "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 30
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in pids if running(p)]
        time.sleep(0.05)
    assert alive == []  # orphans exit at end of input (init reaps them)


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def test_the_worker_reads_the_seed_then_answers_each_chunk_in_order():
    import io

    import msgpack

    from gd.node.app import sign_worker
    from gd.node.services.worker_procs import read_frame, write_frame

    work = jobs(700)
    inp = io.BytesIO()
    write_frame(inp, msgpack.packb(KEY.seed))
    for lo in (0, 300):
        write_frame(inp, msgpack.packb(work[lo:lo + 300] if lo == 0 else work[lo:]))
    inp.seek(0)
    out = io.BytesIO()
    assert sign_worker.run(inp, out) == 2
    out.seek(0)
    replies = []
    while (body := read_frame(out)) is not None:
        replies.append(sign_pool._as_results(msgpack.unpackb(body), work[:300] if not replies
                                             else work[300:]))
    assert replies[0] + replies[1] == sign_lines(KEY, work)
    assert sign_worker.run(io.BytesIO(), io.BytesIO()) == 0  # no seed: nothing to do


def test_signing_workers_run_below_the_writers_priority():
    """The writer is the import's critical path; workers take what it leaves (ADR 0052)."""
    from gd.node.services.worker_procs import WORKER_NICENESS

    ours = os.getpriority(os.PRIO_PROCESS, 0)
    with SignPool(KEY, 2) as pool:
        levels = [os.getpriority(os.PRIO_PROCESS, pid) for pid in pool.pids]
        assert os.getpriority(os.PRIO_PROCESS, 0) == ours  # the writer is left as it was
    assert levels == [min(19, ours + WORKER_NICENESS)] * 2
    assert ours < 19 and levels[0] > ours
