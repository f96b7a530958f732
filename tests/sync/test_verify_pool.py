"""Received genes checked across cores (gd.node.services.verify_pool): the same verdicts as the
one-by-one core, in the same order, with the receiver's policy still run in order in
the caller's thread."""

from __future__ import annotations

import threading

import pytest
from gd_testkit import key_from_int
from wire_batch import mixed_wire_batch

from gd.node.services.verify_pool import MIN_CHUNK, VerifyPool
from gd.protocol.sync import verify_genes, verify_wire

A, B = key_from_int(1), key_from_int(2)


def batch(n: int) -> list[dict]:
    """n wire genes with forged, unbound and non-gene entries (`mixed_wire_batch`)."""
    return mixed_wire_batch(n, A, B)


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_parallel_checks_match_the_core_gene_for_gene(workers):
    wires = batch(4 * MIN_CHUNK + 9)
    serial = verify_genes(wires, lambda g: True)
    pool = VerifyPool(workers)
    try:
        parallel = verify_genes(wires, lambda g: True, check=pool)
    finally:
        pool.close()
    assert [g.version_hash for g in parallel[0]] == [g.version_hash for g in serial[0]]
    assert parallel[1] == serial[1]
    assert len(serial[1]) > 10 and any(r.gene_id == "not-a-gene" for r in serial[1])


def test_the_pool_really_runs_chunks_on_its_threads():
    wires = batch(4 * MIN_CHUNK)
    seen: set[str] = set()
    pool = VerifyPool(4)
    original = pool._pool

    def spying():
        executor = original()
        assert executor is not None
        submit = executor.map

        def spy_map(fn, parts):
            def wrapped(part):
                seen.add(threading.current_thread().name)
                return fn(part)
            return submit(wrapped, parts)

        executor.map = spy_map  # type: ignore[method-assign]
        return executor

    pool._pool = spying  # type: ignore[method-assign]
    try:
        good, _ = verify_genes(wires, lambda g: True, check=pool)
    finally:
        pool.close()
    assert good and seen and all(name.startswith("gd-verify") for name in seen)


def test_accept_runs_in_order_in_the_callers_thread():
    wires = batch(4 * MIN_CHUNK)
    calls: list[tuple[str, int]] = []
    pool = VerifyPool(4)

    def accept(gene):
        calls.append((gene.name, threading.get_ident()))
        return gene.name != "g012"

    try:
        good, rejected = verify_genes(wires, accept, check=pool)
    finally:
        pool.close()
    assert [name for name, _ in calls] == sorted(name for name, _ in calls)
    assert {ident for _, ident in calls} == {threading.get_ident()}
    assert "g012" not in {g.name for g in good}
    assert any(r.reason == "refused by the receiver's own policy" for r in rejected)


def test_a_closed_pool_checks_inline_and_a_bad_size_is_refused():
    pool = VerifyPool(2)
    pool.close()
    pool.close()
    wires = batch(3 * MIN_CHUNK)
    inline = pool(wires)
    assert [reason for _, reason in inline] == [verify_wire(w)[1] for w in wires]
    assert sum(g is None for g, _ in inline) > 5
    assert len(verify_genes(wires, lambda g: True, check=pool)[0]) == len(
        verify_genes(wires, lambda g: True)[0])
    with pytest.raises(ValueError, match="at least 1"):
        VerifyPool(0)
