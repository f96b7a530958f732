"""The receiver's group transaction writes received genes gathered per table
(gd.node.store.gathered_puts, ADR 0038): every table, byte for byte, and every batch's
stats are what applying the same genes one at a time, each in its own transaction,
gives; including a gene named twice in a group (the second version must see the first
as head), queued conflicts, late versions, refusals and the checkpoints."""

from __future__ import annotations

from pathlib import Path

from gd_testkit import key_from_int, make_gene

from gd.crdt.conflict import ConflictPolicy
from gd.genome.gene import Gene, GeneStatus
from gd.node.store.cortex import Cortex
from gd.node.store.cortex_env import _CORE_DBS
from gd.node.store.sync_store import CONFLICTS_DB, SyncStore

A, B, ME = key_from_int(21), key_from_int(22), key_from_int(23)


def held() -> list[Gene]:
    """What the receiver holds before the group: A's genes, and one we edited."""
    return [make_gene(A, f"held-{i}") for i in range(6)]


def group(before: list[Gene]) -> list[tuple[str, list[Gene], int]]:
    """Three batches from A, every case `_apply_in` tells apart."""
    fresh = [make_gene(A, f"new-{i:02d}", threshold=40.0 + i) for i in range(30)]
    again = fresh[3].edited(A, hlc=9 << 16, purpose="second version, same group")
    third = again.edited(A, hlc=10 << 16, purpose="third version, next batch")
    bad_action = make_gene(A, "wrong-pack", action="launch-rocket")  # pack check refuses
    concurrent = before[1].edited(A, hlc=7 << 16, purpose="A's edit")  # we edited too
    late = before[2]  # v1 again after we hold v2 from A: kept, not head
    return [
        (A.peer_id, [*fresh[:15], bad_action, before[0].edited(A, hlc=5 << 16)], 10),
        (A.peer_id, [fresh[15], again, *fresh[16:], concurrent, late], 20),
        (A.peer_id, [third, make_gene(B, "relayed"), again], 30),
    ]


def prepared(path: Path) -> tuple[Cortex, SyncStore]:
    cortex = Cortex.open(path)
    store = SyncStore(cortex, lambda d: ConflictPolicy(), local_peer=ME.peer_id)
    before = held()
    store.apply_batch(A.peer_id, before, 5)
    store.apply_batch(A.peer_id, [before[2].edited(A, hlc=6 << 16)], 6)
    mine = cortex.get_gene(before[1].id)
    assert mine is not None
    cortex.put_gene(mine.edited(ME, hlc=6 << 16, purpose="our edit").with_local(
        status=GeneStatus.NATIVE))
    return cortex, store


def tables(cortex: Cortex) -> dict[str, list[tuple[bytes, bytes]]]:
    with cortex.env.begin() as txn:
        return {name: list(txn.cursor(db=cortex.open_db(name)))
                for name in (*_CORE_DBS, CONFLICTS_DB)}


def test_a_gathered_group_writes_what_one_gene_at_a_time_writes(tmp_path: Path) -> None:
    c1, grouped = prepared(tmp_path / "grouped")
    c2, single = prepared(tmp_path / "single")
    batches = group(held())
    out = grouped.apply_batches(batches)
    counts = [(s.applied, s.ignored, s.queued, [r.gene_id for r in s.refused]) for s in out]
    expected = []
    for sender, genes, upto in batches:
        parts = [single.apply_batch(sender, [g], upto if i == len(genes) - 1 else None)
                 for i, g in enumerate(genes)]
        expected.append((sum(s.applied for s in parts), sum(s.ignored for s in parts),
                         sum(s.queued for s in parts),
                         [r.gene_id for s in parts for r in s.refused]))
    assert counts == expected
    # Every case happened: applied, ignored (the same version again), a queued
    # conflict, a pack refusal.
    assert sum(c[0] for c in counts) > 30 and sum(c[1] for c in counts) >= 1
    assert sum(c[2] for c in counts) == 1 and any(c[3] for c in counts)
    t1, t2 = tables(c1), tables(c2)
    assert t1.keys() == t2.keys()
    for name in t1:
        assert t1[name] == t2[name], name
    head = c1.get_gene(batches[1][1][1].id)
    assert head is not None and head.version == 3  # the version of the next batch
    assert c1.get_checkpoint(A.peer_id) == 30
    c1.close()
    c2.close()
