"""`RepairItems`: a peer's repair items kept by deltas. A round's work is the genes that
changed, not the genes stored, and the items always equal a full `items_for` pass."""

from __future__ import annotations

import os
import random

import pytest
from gd_testkit import key_from_int, make_gene

from gd.genome.gene import Gene
from gd.protocol.reconcile import ItemSet
from gd.protocol.repair import items_for
from gd.protocol.repair_items import RepairItems

ME = key_from_int(21)
PEER = key_from_int(22)


class CountingPolicy:
    """Shares genes whose name does not start with "secret"; counts its decisions."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, gene: Gene) -> Gene | None:
        self.calls += 1
        return None if gene.name.startswith("secret") else gene


def snapshot(s: ItemSet) -> list[tuple[int, bytes]]:
    return [s[i] for i in range(len(s))]


def test_a_round_judges_only_the_changed_genes_whatever_is_stored():
    costs = []
    for stored in (50, 800):
        policy = CountingPolicy()
        items = RepairItems(PEER.peer_id)
        for i in range(stored):
            g = make_gene(ME, name=f"g-{i:04d}")
            items.update(g.id, g, policy)
        items.item_set()
        before, judged = policy.calls, items.judged
        changed = [make_gene(ME, name=f"new-{i}") for i in range(5)]
        for g in changed:
            items.update(g.id, g, policy)
        assert len(items.item_set()) == stored + 5
        items.item_set()  # nothing changed since: no decision, no rebuild
        costs.append((policy.calls - before, items.judged - judged))
    assert costs == [(5, 5), (5, 5)]


def test_items_after_deltas_equal_a_full_items_for_pass():
    rng = random.Random(7)
    policy = CountingPolicy()
    heads: dict[str, Gene] = {}
    items = RepairItems(PEER.peer_id)

    def put(g: Gene) -> None:
        heads[g.id] = g
        items.update(g.id, g, policy)

    for i in range(60):
        put(make_gene(ME, name=f"g-{i:03d}", threshold=float(i)))
    for i in range(10):  # the peer's own genes are named though we may not send them
        put(make_gene(PEER, name=f"secret-theirs-{i}"))
    for i in range(5):
        put(make_gene(ME, name=f"secret-{i}"))
    for step in range(40):
        gid = rng.choice(sorted(heads))
        action = rng.randrange(3)
        if action == 0:  # deleted
            del heads[gid]
            items.update(gid, None, policy)
        elif action == 1:  # a new version
            old = heads[gid]
            put(old.edited(ME if old.author == ME.peer_id else PEER,
                           hlc=old.hlc + 1 + step, purpose=f"edit {step}"))
        else:
            put(make_gene(ME, name=f"added-{step}"))
        expected = ItemSet(items_for(PEER.peer_id, heads.values(), policy))
        got = items.item_set()
        assert snapshot(got) == snapshot(expected)
        assert got.fingerprint(0, len(got)) == expected.fingerprint(0, len(expected))
    named = {item[1] for item in snapshot(items.item_set())}
    assert all(items.gene_of(h) is not None for h in named)
    assert items.gene_of(os.urandom(32)) is None


def test_reset_forgets_everything():
    policy = CountingPolicy()
    items = RepairItems(PEER.peer_id)
    g = make_gene(ME)
    items.update(g.id, g, policy)
    items.reset()
    assert len(items) == 0 and len(items.item_set()) == 0
    assert items.gene_of(g.version_hash) is None


@pytest.mark.parametrize(("n", "k"), [(0, 3), (5, 0), (300, 7), (40, 40)])
def test_merged_item_set_equals_a_fresh_one(n: int, k: int):
    rng = random.Random(n * 1000 + k)

    def item() -> tuple[int, bytes]:
        return (rng.randrange(2**64), rng.randbytes(32))

    old = [item() for _ in range(n)]
    new = [item() for _ in range(k)]
    merged = ItemSet.trusted(old).merged(new)
    fresh = ItemSet(old + new)
    assert snapshot(merged) == snapshot(fresh)
    for lo, hi in ((0, len(fresh)), (0, len(fresh) // 2), (len(fresh) // 3, len(fresh))):
        assert merged.fingerprint(lo, hi) == fresh.fingerprint(lo, hi)
