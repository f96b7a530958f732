"""A peer's repair items kept up to date by deltas, sans-I/O (issue 15).

Why: anti-entropy repair names the heads a peer may see (`gd.protocol.repair.items_for`).
Building that list from scratch decodes every stored gene and runs the share policy
(and, for a derived form, a signature) on each: O(all genes) per round, on both sides,
and a peer can ask for a round whenever it likes. A cold sync of 100k genes spent most
of its time there. `RepairItems` keeps the list per peer and is told only which genes
changed (the node reads them from its change feed), so a round costs O(changes since
the last one) policy decisions, and none at all when nothing changed.

The caller owns invalidation: a new policy snapshot, a new certified org or region for
the peer, or a local status change the feed does not carry means `reset()` and one full
pass (docs/adr/0034-incremental-repair-items.md).
"""

from __future__ import annotations

from collections.abc import Callable

from gd.genome.gene import Gene
from gd.protocol.reconcile import ItemSet
from gd.protocol.reconcile_messages import Item

# The form of a stored head the peer may have, or None (a sender view's `outgoing`).
Outgoing = Callable[[Gene], Gene | None]


def item_of(peer: str, head: Gene, outgoing: Outgoing) -> Item | None:
    """The item `items_for` names for one head: its outgoing form, else the head itself
    when `peer` authored it (it holds it already), else nothing."""
    out = outgoing(head)
    if out is not None:
        return (out.hlc, out.version_hash)
    if head.author == peer:
        return (head.hlc, head.version_hash)
    return None


class RepairItems:
    """One peer's items: gene id -> the item named for its head (or nothing).

    `update(gene_id, head, outgoing)` re-judges one gene (head None: it was deleted);
    `item_set()` is the sorted snapshot the reconciler reads, rebuilt only after a
    change, without re-judging or re-hashing anything. `judged` counts policy decisions
    (what a round costs; tests count it)."""

    __slots__ = ("_added", "_by_gene", "_gene_of", "_removed", "_set", "judged", "peer")

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self._by_gene: dict[str, Item] = {}
        self._gene_of: dict[bytes, str] = {}  # named version hash -> gene id
        self._set = ItemSet.trusted(())  # the last snapshot
        # Since that snapshot: the items added, and whether any was removed. With
        # additions only, the next snapshot merges two sorted runs instead of sorting.
        self._added: list[Item] = []
        self._removed = False
        self.judged = 0

    def __len__(self) -> int:
        return len(self._by_gene)

    def reset(self) -> None:
        """Forget every item (the policy or the peer's identity changed)."""
        self._by_gene.clear()
        self._gene_of.clear()
        self._set = ItemSet.trusted(())
        self._added, self._removed = [], False

    def update(self, gene_id: str, head: Gene | None, outgoing: Outgoing) -> None:
        """Re-judge `gene_id` against its current head (None: the gene is gone)."""
        old = self._by_gene.pop(gene_id, None)
        if old is not None:
            self._gene_of.pop(old[1], None)
            self._removed = True
        if head is None:
            return
        self.judged += 1
        item = item_of(self.peer, head, outgoing)
        if item is not None:
            self._by_gene[gene_id] = item
            self._gene_of[item[1]] = gene_id
            self._added.append(item)

    def gene_of(self, version_hash: bytes) -> str | None:
        """The gene whose named form has this hash: how a fetch for a derived form
        (which exists only per receiver, never in the store) finds its source."""
        return self._gene_of.get(version_hash)

    def item_set(self) -> ItemSet:
        """The items as the reconciler's sorted snapshot (rebuilt only after a change)."""
        if self._removed:
            self._set = ItemSet.trusted(self._by_gene.values())
        elif self._added:
            self._set = self._set.merged(self._added)
        self._added, self._removed = [], False
        return self._set
