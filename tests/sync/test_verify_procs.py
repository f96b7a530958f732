"""Received genes checked in worker processes (gd.node.services.verify_procs, ADR 0038):
the core's verdicts gene for gene, genes equal to the ones `from_wire` builds, inline
when small, closed or broken, and no worker outlives its parent."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import msgpack
import pytest
from gd_testkit import key_from_int, make_gene
from wire_batch import mixed_wire_batch

from gd.genome import canonical
from gd.node.services import verify_procs
from gd.node.services.verify_procs import MAX_FAILURES, ProcessVerifyPool, check_raw
from gd.node.services.verify_worker import FRAME, serve
from gd.protocol.sync import verify_genes, verify_wire

A, B = key_from_int(1), key_from_int(2)


def batch(n: int) -> list[dict]:
    """n wire genes with forged, unbound, non-canonical and non-gene entries."""
    return mixed_wire_batch(n, A, B, non_canonical=True)


def test_verdicts_and_genes_match_the_core_gene_for_gene():
    wires = batch(150)
    serial = [verify_wire(w) for w in wires]
    pool = ProcessVerifyPool(2, min_batch=8)
    try:
        parallel = pool(wires)
        assert len(pool.pids) == 2 and all(_alive(p) for p in pool.pids)  # in processes
    finally:
        pool.close()
    assert [reason for _, reason in parallel] == [reason for _, reason in serial]
    for (mine, _), (core, _) in zip(parallel, serial, strict=True):
        assert (mine is None) == (core is None)
        if core is not None:
            assert mine == core
            assert mine.wire_bytes == core.wire_bytes
            assert mine.signing_bytes == core.signing_bytes
            assert mine.version_hash == core.version_hash
    bad = sum(g is None for g, _ in serial)
    assert 20 < bad < 60
    # The non-canonical ones were accepted (inline) and carry canonical bytes.
    lax = [i for i in range(150) if i % 13 == 6 and i % 7 != 3 and i % 11 != 5 and i != 40]
    assert lax and all(parallel[i][0] is not None for i in lax)
    assert all(canonical.decode(parallel[i][0].wire_bytes)["body"]["codons"][0]["threshold"]
               == 47.0 for i in lax)


def test_through_verify_genes_accept_still_judges_in_order():
    wires = batch(100)
    pool = ProcessVerifyPool(2, min_batch=8)
    try:
        good, rejected = verify_genes(wires, lambda g: g.name != "g012", check=pool)
    finally:
        pool.close()
    core_good, core_rejected = verify_genes(wires, lambda g: g.name != "g012")
    assert [g.version_hash for g in good] == [g.version_hash for g in core_good]
    assert rejected == core_rejected
    assert any(r.reason == "refused by the receiver's own policy" for r in rejected)


def test_small_batches_and_a_closed_pool_check_inline_and_start_nothing():
    wires = batch(50)
    pool = ProcessVerifyPool(2)  # MIN_BATCH = 64
    assert [r for _, r in pool(wires)] == [verify_wire(w)[1] for w in wires]
    assert pool.pids == []
    pool.close()
    pool.close()
    assert [r for _, r in pool(batch(100))] == [verify_wire(w)[1] for w in batch(100)]
    assert pool.pids == []
    with pytest.raises(ValueError, match="at least 1"):
        ProcessVerifyPool(0)
    with pytest.raises(ValueError, match="at least 1"):
        ProcessVerifyPool(2, min_batch=0)


def test_close_reaps_the_workers():
    pool = ProcessVerifyPool(2, min_batch=8)
    pool(batch(30))
    procs = [w.proc for w in pool._procs]
    assert len(procs) == 2 and all(p.poll() is None for p in procs)
    pool.close()
    assert all(p.returncode == 0 for p in procs)  # ended at end of input, reaped
    assert pool.pids == []


def test_a_dead_worker_costs_one_inline_batch_and_the_next_starts_new_ones():
    wires = batch(60)
    expected = [r for _, r in (verify_wire(w) for w in wires)]
    pool = ProcessVerifyPool(2, min_batch=8)
    try:
        pool(wires)
        first = pool.pids
        assert len(first) == 2
        victim = pool._procs[1].proc
        victim.kill()
        victim.wait(10)
        assert [r for _, r in pool(wires)] == expected  # dead worker: checked inline
        assert pool.pids == [] and not any(_alive(p) for p in first)
        assert [r for _, r in pool(wires)] == expected
        assert len(pool.pids) == 2 and not set(pool.pids) & set(first)
    finally:
        pool.close()


def test_a_worker_answering_nonsense_is_dropped():
    wires = batch(30)
    pool = ProcessVerifyPool(1, min_batch=8)
    try:
        pool(wires)
        worker = pool._procs[0]
        real_out = worker.proc.stdout
        one = msgpack.packb([""])  # one verdict for 30 genes
        worker.proc.stdout = io.BytesIO(FRAME.pack(len(one)) + one)
        assert [r for _, r in pool(wires)] == [verify_wire(w)[1] for w in wires]
        assert pool.pids == [] and worker.proc.returncode is not None
    finally:
        pool.close()
        real_out.close()


def test_check_raw_sends_back_verdicts_not_genes():
    good = make_gene(A, "fine")
    lax = good.to_wire()
    lax["body"]["codons"][0]["threshold"] = 47  # the gene encodes 47.6; this is a lie
    raws = [good.wire_bytes, b"\xc1", canonical.encode_plain([1, 2]),
            canonical.encode_plain(lax), good.wire_bytes + b"\x00"]
    out = check_raw(raws)
    assert out[0] == ""
    assert out[1] is None and out[2] is None and out[4] is None
    assert out[3] and "Signature" in out[3]  # refused, with the core's reason
    nonc = make_gene(A, "int", threshold=47.0).to_wire()
    nonc["body"]["codons"][0]["threshold"] = 47
    assert check_raw([canonical.encode_plain(nonc)]) == [None]  # valid, not canonical


CHILD = """
import os, sys
from gd_testkit import key_from_int, make_gene
from wire_batch import mixed_wire_batch
from gd.node.services.verify_procs import ProcessVerifyPool
if __name__ == "__main__":
    pool = ProcessVerifyPool(2, min_batch=1)
    pool([make_gene(key_from_int(1), f"g{i}").to_wire() for i in range(4)])
    print(" ".join(str(p) for p in pool.pids), flush=True)
    sys.stdin.read()
"""


def test_workers_exit_when_their_parent_is_killed(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    support = os.path.join(os.path.dirname(os.path.dirname(__file__)), "support")
    env = {**os.environ, "PYTHONPATH": support}
    child = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, env=env, text=True)
    try:
        pids = [int(p) for p in child.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        child.kill()
    finally:
        child.kill()
        child.wait(30)
    deadline = time.monotonic() + 30
    try:
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in pids)
    finally:  # a failing run leaves no orphan behind
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Is `pid` a live process (not a zombie: orphans are reaped by init)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_serve_answers_each_request_until_end_of_input():
    good = make_gene(A, "fine")
    requests = b"".join(FRAME.pack(len(b)) + b for b in (
        msgpack.packb([good.wire_bytes]), msgpack.packb([good.wire_bytes, b"\xc1"])))
    out = io.BytesIO()
    assert serve(io.BytesIO(requests + b"\x00\x00"), out) == 2  # a cut frame ends it
    raw = out.getvalue()
    first = FRAME.unpack(raw[:4])[0]
    assert msgpack.unpackb(raw[4:4 + first]) == [""]
    assert msgpack.unpackb(raw[8 + first:]) == ["", None]


def test_workers_that_cannot_start_are_given_up_after_a_few_batches(monkeypatch):
    monkeypatch.setattr(verify_procs, "WORKER_ARGS", ("-c", "import sys; sys.exit(3)"))
    started = []
    real = verify_procs._Worker.__init__

    def counting(self):
        started.append(1)
        real(self)

    monkeypatch.setattr(verify_procs._Worker, "__init__", counting)
    wires = batch(20)
    expected = [verify_wire(w)[1] for w in wires]
    pool = ProcessVerifyPool(2, min_batch=8)
    try:
        for _ in range(MAX_FAILURES + 2):
            assert [r for _, r in pool(wires)] == expected
        assert pool.failures == MAX_FAILURES and pool.pids == []
        assert len(started) == 2 * MAX_FAILURES  # not started again after giving up
    finally:
        pool.close()


def test_verify_workers_run_below_the_receivers_priority():
    """The receiver's apply is sync's critical path; workers take what it leaves (ADR
    0052). The receiver itself keeps its priority."""
    from gd.node.services.worker_procs import WORKER_NICENESS

    ours = os.getpriority(os.PRIO_PROCESS, 0)
    pool = ProcessVerifyPool(2, min_batch=8)
    try:
        pool(batch(40))
        levels = [os.getpriority(os.PRIO_PROCESS, pid) for pid in pool.pids]
    finally:
        pool.close()
    assert len(levels) == 2
    assert levels == [min(19, ours + WORKER_NICENESS)] * 2
    assert os.getpriority(os.PRIO_PROCESS, 0) == ours
