"""The daemon's per-peer repair items over a real Cortex: a round after the first judges
only what the change feed says was stored or deleted since, whatever the Cortex holds;
a new policy, a new peer identity or `invalidate()` means one full pass."""

from __future__ import annotations

from pathlib import Path

from gd_testkit import key_from_int, make_gene

from gd.genome.gene import Gene
from gd.node.services.sovereignty_repair import RepairItemCache
from gd.node.store.cortex import Cortex
from gd.protocol.policy_rules import PeerInfo
from gd.protocol.reconcile import ItemSet
from gd.protocol.repair import items_for
from gd.protocol.sovereignty import PolicySet

ME = key_from_int(31)
PEER = PeerInfo(key_from_int(32).peer_id, "peerco", "eu")
POLICY = PolicySet(PeerInfo(ME.peer_id, "meco", "eu"))


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, gene: Gene) -> Gene | None:
        self.calls += 1
        return None if gene.name.startswith("secret") else gene


def listed(s: ItemSet) -> list[tuple[int, bytes]]:
    return [s[i] for i in range(len(s))]


def full(cortex: Cortex) -> list[tuple[int, bytes]]:
    return listed(ItemSet(items_for(PEER.peer_id, cortex.genes(), Counting())))


def test_a_later_round_judges_only_the_feed_delta(tmp_path: Path):
    costs = []
    for stored in (40, 400):
        with Cortex.open(tmp_path / f"c{stored}") as cortex:
            cortex.put_genes([make_gene(ME, name=f"g-{i:04d}") for i in range(stored)])
            cache, policy = RepairItemCache(cortex), Counting()
            assert len(cache.item_set(PEER, POLICY, policy)) == stored
            first = policy.calls
            cortex.put_genes([make_gene(ME, name=f"new-{i}") for i in range(3)])
            cortex.put_gene(make_gene(ME, name="secret-plan"))
            got = cache.item_set(PEER, POLICY, policy)
            assert listed(got) == full(cortex)
            again = cache.item_set(PEER, POLICY, policy)  # nothing new: no decision
            costs.append((first, policy.calls - first, len(again), cache.full_passes))
    assert costs == [(40, 4, 43, 1), (400, 4, 403, 1)]


def test_deletes_policy_changes_and_invalidation(tmp_path: Path):
    with Cortex.open(tmp_path / "c") as cortex:
        genes = [make_gene(ME, name=f"g-{i:02d}") for i in range(20)]
        cortex.put_genes(genes)
        cache, policy = RepairItemCache(cortex), Counting()
        cache.item_set(PEER, POLICY, policy)
        cortex.delete_gene(genes[3].id)
        got = cache.item_set(PEER, POLICY, policy)
        assert genes[3].version_hash not in {h for _, h in listed(got)}
        assert listed(got) == full(cortex)
        assert cache.gene_of(PEER.peer_id, genes[4].version_hash) == genes[4].id
        assert cache.gene_of(PEER.peer_id, genes[3].version_hash) is None
        assert cache.full_passes == 1
        # A status change without a feed entry is caught only through invalidate().
        cortex.put_genes([genes[5].with_local(status="revoked")])
        shared_unless_revoked = Counting()

        def outgoing(g: Gene) -> Gene | None:
            return None if str(g.status) == "revoked" else shared_unless_revoked(g)

        stale = cache.item_set(PEER, POLICY, outgoing)
        assert genes[5].version_hash in {h for _, h in listed(stale)}
        cache.invalidate()
        fresh = cache.item_set(PEER, POLICY, outgoing)
        assert genes[5].version_hash not in {h for _, h in listed(fresh)}
        assert cache.full_passes == 2
        # Another policy snapshot or another certified identity: one full pass each.
        cache.item_set(PEER, PolicySet(PeerInfo(ME.peer_id, "meco", "us")), outgoing)
        cache.item_set(PeerInfo(PEER.peer_id, "other", "eu"), POLICY, outgoing)
        assert cache.full_passes == 4


def test_peers_kept_are_bounded(tmp_path: Path):
    with Cortex.open(tmp_path / "c") as cortex:
        cortex.put_gene(make_gene(ME))
        cache = RepairItemCache(cortex, max_peers=3)
        for n in range(10):
            cache.item_set(PeerInfo(key_from_int(100 + n).peer_id), POLICY, Counting())
        assert len(cache._peers) == 3
        assert cache.full_passes == 10
