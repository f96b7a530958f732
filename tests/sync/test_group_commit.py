"""Group commit on the sync receiver (gd.node.services.sync_group): several verified
batches in one LMDB transaction, in order, with the checkpoint; a crash or a kill
between groups loses nothing the checkpoint on disk covers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from gd_testkit import key_from_int, make_gene

from gd.crdt.clock import ManualClock
from gd.genome import Gene
from gd.node.services.sync_group import GroupCommit
from gd.node.store.cortex import Cortex
from gd.node.store.sync_store import SyncStore

SENDER = key_from_int(41)
PEER = SENDER.peer_id


def genes(n: int, prefix: str = "g") -> list[Gene]:
    return [make_gene(SENDER, name=f"{prefix}-{i:04d}") for i in range(n)]


@pytest.fixture
def store(tmp_path: Path):
    cortex = Cortex.open(tmp_path / "c")
    yield SyncStore(cortex)
    cortex.close()


class CountingWrites:
    """Counts the store's write transactions (each one an fsync'd commit)."""

    def __init__(self, store: SyncStore) -> None:
        self.calls = 0
        real = store.cortex.write

        def write(fn):  # type: ignore[no-untyped-def]
            self.calls += 1
            return real(fn)

        store.cortex.write = write  # type: ignore[method-assign]


def test_a_group_of_batches_commits_in_one_transaction_in_order(store: SyncStore):
    writes = CountingWrites(store)
    clock = ManualClock()
    group = GroupCommit(store, clock.monotonic, max_batches=8)
    first = make_gene(SENDER, name="twice")
    second = first.edited(SENDER, hlc=first.hlc + 5, action="overhaul")
    group.stage(PEER, [first, *genes(3, "a")], 4)
    group.stage(PEER, [second, *genes(3, "b")], 8)
    group.stage(PEER, genes(2, "c"), 10)
    assert store.cortex.get_checkpoint(PEER) == 0  # staged is not committed
    assert store.cortex.get_gene(first.id) is None
    done = group.commit()
    assert writes.calls == 1
    assert [b.upto for b, _ in done] == [4, 8, 10]
    assert [s.applied for _, s in done] == [4, 4, 2]
    assert store.cortex.get_checkpoint(PEER) == 10
    # Batch 2 saw batch 1's version inside the same transaction: the later one is head.
    assert store.cortex.get_gene(first.id).version_hash == second.version_hash
    assert len(list(store.cortex.genes())) == 3 + 3 + 2 + 1
    assert group.staged == () and group.commit() == []


def test_a_group_is_due_at_its_batch_byte_or_age_bound(store: SyncStore):
    clock = ManualClock()
    by_count = GroupCommit(store, clock.monotonic, max_batches=2, max_bytes=10**9,
                           max_age_s=60)
    assert not by_count.due()
    by_count.stage(PEER, [], 1, 100)
    assert not by_count.due()
    by_count.stage(PEER, [], 2, 100)
    assert by_count.due()
    by_bytes = GroupCommit(store, clock.monotonic, max_batches=99, max_bytes=1000,
                           max_age_s=60)
    by_bytes.stage(PEER, [], 1, 999)
    assert not by_bytes.due()
    by_bytes.stage(PEER, [], 2, 1)
    assert by_bytes.due()
    by_age = GroupCommit(store, clock.monotonic, max_batches=99, max_bytes=10**9,
                         max_age_s=0.5)
    by_age.stage(PEER, [], 1, 1)
    clock.advance(0.4)
    by_age.stage(PEER, [], 2, 1)
    assert not by_age.due()
    clock.advance(0.1)  # the FIRST batch's age counts
    assert by_age.due()
    by_genes = GroupCommit(store, clock.monotonic, max_batches=99, max_bytes=10**9,
                           max_age_s=60, max_genes=3)
    three = genes(3)
    by_genes.stage(PEER, three[:2], 1, 1)
    assert not by_genes.due()
    by_genes.stage(PEER, three[2:], 2, 1)
    assert by_genes.due()  # big batches: few of them must not make a long commit
    with pytest.raises(ValueError):
        GroupCommit(store, clock.monotonic, max_batches=0)
    with pytest.raises(ValueError):
        GroupCommit(store, clock.monotonic, max_genes=0)


def test_a_failure_inside_a_group_commits_none_of_it(store: SyncStore):
    clock = ManualClock()
    committed = GroupCommit(store, clock.monotonic)
    committed.stage(PEER, genes(3, "ok"), 3)
    committed.commit()
    bad = make_gene(SENDER, name="explodes")

    def check(gene: Gene) -> str:
        if gene.id == bad.id:
            raise OSError("disk gone")  # a crash in the middle of the transaction
        return ""

    store.content_check = check
    group = GroupCommit(store, clock.monotonic)
    group.stage(PEER, genes(4, "x"), 7)
    group.stage(PEER, [bad], 8)
    with pytest.raises(OSError):
        group.commit()
    assert store.cortex.get_checkpoint(PEER) == 3
    assert {g.name for g in store.cortex.genes()} == {f"ok-{i:04d}" for i in range(3)}
    assert [b.upto for b in group.staged] == [7, 8]  # still staged, nothing half-done


CHILD = """
import sys
from gd_testkit import key_from_int, make_gene
from gd.crdt.clock import ManualClock
from gd.node.services.sync_group import GroupCommit
from gd.node.store.cortex import Cortex
from gd.node.store.sync_store import SyncStore

key = key_from_int(41)
store = SyncStore(Cortex.open(sys.argv[1]))
group = GroupCommit(store, ManualClock().monotonic, max_batches=3)
upto = 0
for batch in range(10_000):
    upto += 4
    group.stage(key.peer_id, [make_gene(key, name=f"k-{upto - 4 + i:06d}")
                              for i in range(4)], upto)
    if group.due():
        group.commit()
        print("committed", upto, flush=True)
"""


def test_kill_9_between_groups_loses_nothing_committed_and_keeps_order(tmp_path: Path):
    path = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "support"),
         os.environ.get("PYTHONPATH", "")]))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)],
                             stdout=subprocess.PIPE, text=True, env=env)
    acknowledged = 0
    try:
        assert child.stdout is not None
        for _ in range(5):  # five groups committed, then kill -9 mid-stream
            line = child.stdout.readline()
            assert line.startswith("committed"), line
            acknowledged = int(line.split()[1])
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    with Cortex.open(path) as cortex:
        checkpoint = cortex.get_checkpoint(PEER)
        names = sorted(g.name for g in cortex.genes())
    assert checkpoint >= acknowledged == 5 * 12
    assert checkpoint % 12 == 0  # whole groups only
    # Exactly the genes the checkpoint covers, none missing, none beyond it.
    assert names == [f"k-{i:06d}" for i in range(checkpoint)]
