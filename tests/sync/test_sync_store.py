"""Change-feed sync between real Cortexes through the sans-I/O core, with the conflict
queue and its resolution."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from gd_testkit import key_from_int, make_gene

from gd.crdt.conflict import ConflictPolicy
from gd.genome import Gene, GeneStatus
from gd.node.store.cortex import Cortex
from gd.node.store.cortex_env import UnknownGene
from gd.node.store.sync_store import SyncStore
from gd.protocol.sync import SyncReceiver, SyncSender

A, B, C = (key_from_int(i) for i in (11, 12, 13))
ALLOW_ALL = lambda receiver, gene: True  # noqa: E731  (tests set an explicit allow-all)


class Replica:
    def __init__(self, tmp: Path, key, policy=None) -> None:
        self.key = key
        self.cortex = Cortex.open(tmp / key.peer_id[-8:])
        self.store = SyncStore(self.cortex, policy or (lambda d: ConflictPolicy()))

    def pull_from(self, other: Replica, *, drop_every: int = 0, rng=None) -> None:
        """Pull until the sender has nothing more; optionally lose replies on the way."""
        sender = SyncSender(self.key.peer_id, other.store.read_feed, ALLOW_ALL)
        receiver = SyncReceiver(other.key.peer_id, self.store.apply_batch,
                                checkpoint=self.cortex.get_checkpoint(other.key.peer_id),
                                max_genes=7)
        for _ in range(10_000):
            reply = sender.receive(receiver.request())
            if drop_every and rng.random() < 1 / drop_every:
                continue  # the reply was lost: ask again
            before = receiver.checkpoint
            outcome = receiver.receive(reply)
            if rng is not None and outcome.checkpoint != before and rng.random() < 0.3:
                assert receiver.receive(reply).stale  # a duplicate changes nothing
            if not outcome.more:
                return
        raise AssertionError("sync did not finish after 10,000 rounds")

    def contents(self) -> dict[str, bytes]:
        return {g.id: g.version_hash for g in self.cortex.genes()}

    def close(self) -> None:
        self.cortex.close()


def edit_on_both(a: Replica, b: Replica, hlc_a: int, hlc_b: int) -> Gene:
    """A gene of A's, pulled by b, then edited on both sides (a: "overhaul" at `hlc_a`,
    b: "continue" at `hlc_b`) before either pulls again: the original gene."""
    g = make_gene(A, "g")
    a.cortex.put_gene(g)
    b.pull_from(a)
    a.cortex.put_gene(g.edited(A, hlc=hlc_a << 16, action="overhaul"))
    b.cortex.put_gene(b.cortex.get_gene(g.id).edited(B, hlc=hlc_b << 16, action="continue"))
    return g


@pytest.fixture
def replicas(tmp_path: Path):
    made: list[Replica] = []

    def make(key, policy=None) -> Replica:
        made.append(Replica(tmp_path, key, policy))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_pull_copies_genes_as_pending_and_resumes_from_checkpoint(replicas) -> None:
    a, b = replicas(A), replicas(B)
    a.cortex.put_genes([make_gene(A, f"g{i}") for i in range(30)])
    b.pull_from(a, drop_every=3, rng=random.Random(1))
    assert b.contents() == a.contents()
    assert {g.status for g in b.cortex.genes()} == {GeneStatus.ADAPTATION_PENDING}
    assert b.cortex.get_checkpoint(A.peer_id) == 30
    a.cortex.put_gene(make_gene(A, "later"))
    before = b.store.stats.applied
    b.pull_from(a)
    assert b.store.stats.applied - before == 1  # only the new gene moved


def test_descendant_edit_applies_and_older_is_ignored(replicas) -> None:
    a, b = replicas(A), replicas(B)
    g = make_gene(A, "g")
    a.cortex.put_gene(g)
    b.pull_from(a)
    edited = b.cortex.get_gene(g.id).edited(B, hlc=5 << 16, action="overhaul")
    b.cortex.put_gene(edited)
    a.pull_from(b)
    assert a.cortex.get_gene(g.id).version_hash == edited.version_hash
    assert a.store.conflicts() == []


def test_concurrent_edits_queue_then_resolution_converges(replicas) -> None:
    a, b = replicas(A), replicas(B)
    g = edit_on_both(a, b, 6, 7)
    b.pull_from(a)
    a.pull_from(b)
    for replica in (a, b):
        (conflict,) = replica.store.conflicts()
        assert {conflict.local.action, conflict.remote.action} == {"overhaul", "continue"}
    # neither version was lost or overwritten
    assert a.cortex.get_gene(g.id).action == "overhaul"
    assert b.cortex.get_gene(g.id).action == "continue"
    key = a.store.conflicts()[0].key
    resolved = a.store.resolve(key, A, keep="remote", hlc=8 << 16)
    assert resolved.action == "continue" and resolved.status == GeneStatus.NATIVE
    assert a.store.conflicts() == []
    b.pull_from(a)
    assert b.cortex.get_gene(g.id).version_hash == resolved.version_hash
    # The resolution made on a settles b's queued copy of the same conflict too.
    assert b.store.conflicts() == []
    with pytest.raises(UnknownGene):
        a.store.conflict("nope")


def test_lww_domain_keeps_the_later_writer_everywhere(replicas) -> None:
    lww = lambda domain: ConflictPolicy(lww=True)  # noqa: E731
    a, b = replicas(A, lww), replicas(B, lww)
    g = edit_on_both(a, b, 20, 10)
    b.pull_from(a)
    a.pull_from(b)
    assert a.contents() == b.contents()
    assert b.cortex.get_gene(g.id).action == "overhaul"
    assert a.store.conflicts() == b.store.conflicts() == []


@pytest.mark.parametrize("seed", range(25))
def test_three_replicas_with_random_edits_and_lost_replies_converge(replicas, seed) -> None:
    rng = random.Random(seed)
    lww = lambda domain: ConflictPolicy(lww=True)  # noqa: E731
    nodes = [replicas(k, lww) for k in (A, B, C)]
    for _ in range(40):
        node = rng.choice(nodes)
        fresh = make_gene(node.key, f"g{rng.randrange(12)}")
        if (rng.random() < 0.5 or not node.contents()) and not node.cortex.get_gene(fresh.id):
            node.cortex.put_gene(fresh)
        elif node.contents():
            gid = rng.choice(sorted(node.contents()))
            gene: Gene = node.cortex.get_gene(gid)
            node.cortex.put_gene(gene.edited(node.key, hlc=gene.hlc + rng.randrange(1, 99),
                                             version=node.cortex.next_version(gid),
                                             action=rng.choice(["inspect", "overhaul"])))
        if rng.random() < 0.4:
            x, y = rng.sample(nodes, 2)
            x.pull_from(y, drop_every=4, rng=rng)
    for _ in range(2):
        for x in nodes:
            for y in nodes:
                if x is not y:
                    x.pull_from(y, rng=rng)
    assert nodes[0].contents() == nodes[1].contents() == nodes[2].contents()


def test_merge_domain_settles_same_condition_edits_and_queues_the_rest(replicas) -> None:
    from gd.node.store.sync_store import domain_conflict_policies

    policy = domain_conflict_policies({"turbofan": {"conflict": "merge"}})
    a, b = replicas(A, policy), replicas(B, policy)
    g = make_gene(A, "g")
    h = make_gene(A, "h")
    a.cortex.put_genes([g, h])
    b.pull_from(a)
    # g: both sides change only the purpose (same codons, same action) -> merged
    a.cortex.put_gene(g.edited(A, hlc=6 << 16, purpose="ours"))
    b.cortex.put_gene(b.cortex.get_gene(g.id).edited(B, hlc=7 << 16, purpose="theirs",
                                                      version=b.cortex.next_version(g.id)))
    # h: the actions differ -> the merge rule declines, the pair is queued
    a.cortex.put_gene(h.edited(A, hlc=6 << 16, action="overhaul"))
    b.cortex.put_gene(b.cortex.get_gene(h.id).edited(B, hlc=7 << 16, action="continue",
                                                      version=b.cortex.next_version(h.id)))
    b.pull_from(a)
    a.pull_from(b)
    assert a.cortex.get_gene(g.id).version_hash == b.cortex.get_gene(g.id).version_hash
    assert a.cortex.get_gene(g.id).purpose == "theirs"  # the later HLC
    assert [c.gene_id for c in a.store.conflicts()] == [h.id]
    assert [c.gene_id for c in b.store.conflicts()] == [h.id]


@pytest.mark.parametrize(("table", "message"), [
    ({"turbofan": {"conflict": "newest"}}, "must be one of"),
    ({"turbofan": {"colour": "red"}}, "unknown keys"),
    ({"turbofan": "lww"}, "must be a table"),
])
def test_domain_conflict_settings_are_validated(table, message) -> None:
    from gd.node.config import ConfigError
    from gd.node.store.sync_store import domain_conflict_policies

    with pytest.raises(ConfigError, match=message):
        domain_conflict_policies(table)


def test_resolve_conflict_stamps_by_the_injected_clock(replicas) -> None:
    """With no `physical_ms`, the resolution's HLC reads the clock it is given (the
    daemon's), never the system's: a simulation on a manual clock stays deterministic."""
    from gd.crdt.clock import ManualClock
    from gd.crdt.hlc import unpack
    from gd.node.store.sync_store import resolve_conflict

    a, b = replicas(A), replicas(B)
    edit_on_both(a, b, 6, 7)
    a.pull_from(b)
    (conflict,) = a.store.conflicts()
    clock = ManualClock(wall=1_234_567.0)
    resolved = resolve_conflict(a.store, A, conflict.key, "remote", None, clock=clock)
    assert unpack(resolved.hlc)[0] == 1_234_567_000
