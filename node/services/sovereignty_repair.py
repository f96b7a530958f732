"""Repair items per peer, kept current from the Cortex's change feed (issue 15).

Why: the items a repair round names for a peer (`gd.protocol.repair.items_for`) used to
be rebuilt from every stored gene on every round, on both sides: each round decoded and
judged the whole Cortex (a cold sync of 100k genes spent most of its time there, and a
peer could ask for rounds at will). Here each peer's `RepairItems` is updated only with
the genes the change feed says were stored or deleted since its last round.

What the feed does not carry resets a peer's items (one full pass, then deltas again):
a new policy snapshot (rules, agreements), a new certified org or region for the peer,
and `invalidate()`, which sovereignty calls after honouring a revocation (it marks
genes `revoked` without a feed entry). Every other local status change either makes a
gene native (a feed entry) or concerns a gene no peer is offered (pending, rejected,
retired). docs/adr/0034-incremental-repair-items.md.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Final

from gd.protocol.policy_rules import PeerInfo
from gd.protocol.reconcile import ItemSet
from gd.protocol.repair_items import Outgoing, RepairItems
from gd.protocol.sovereignty import PolicySet

# Feed entries read per page while catching up (one read transaction each).
FEED_PAGE: Final = 4096
# Peers whose items are kept; the least recently used beyond this are dropped (a peer
# met again starts with one full pass). Bounds what many peer ids can make us hold.
MAX_PEERS: Final = 64


@dataclass
class _PeerItems:
    items: RepairItems
    key: tuple[Any, ...] = ()
    seq: int = -1  # the feed position the items reflect (-1: never built)
    lock: threading.Lock = field(default_factory=threading.Lock)


class RepairItemCache:
    """Every peer's `RepairItems` for one daemon (worker threads call it)."""

    def __init__(self, cortex: Any, *, max_peers: int = MAX_PEERS) -> None:
        self._cortex = cortex
        self._max_peers = max_peers
        self._lock = threading.Lock()
        self._peers: OrderedDict[str, _PeerItems] = OrderedDict()
        self._generation = 0
        self.full_passes = 0  # how many times a peer's items were rebuilt from scratch

    def invalidate(self) -> None:
        """Local state changed in a way the feed does not carry: rebuild on next use."""
        with self._lock:
            self._generation += 1

    def _entry(self, peer: str) -> tuple[_PeerItems, int]:
        with self._lock:
            entry = self._peers.get(peer)
            if entry is None:
                entry = self._peers[peer] = _PeerItems(RepairItems(peer))
                while len(self._peers) > self._max_peers:
                    self._peers.popitem(last=False)
            self._peers.move_to_end(peer)
            return entry, self._generation

    def item_set(self, receiver: PeerInfo, policies: PolicySet,
                 outgoing: Outgoing) -> ItemSet:
        """Worker thread: the items `receiver` may be offered under `policies`, brought
        up to date with the feed (`outgoing` judges each changed gene)."""
        entry, generation = self._entry(receiver.peer_id)
        key = (receiver, policies, generation)
        with entry.lock:
            if entry.key != key:
                self._rebuild(entry, outgoing)
                entry.key = key
            else:
                self._catch_up(entry, outgoing)
            return entry.items.item_set()

    def gene_of(self, peer: str, version_hash: bytes) -> str | None:
        """The gene whose form named to `peer` has this hash (derived forms)."""
        with self._lock:
            entry = self._peers.get(peer)
        if entry is None:
            return None
        with entry.lock:
            return entry.items.gene_of(version_hash)

    def _rebuild(self, entry: _PeerItems, outgoing: Outgoing) -> None:
        # The feed position first: a gene stored during the pass is judged again by the
        # next catch-up (judging a head twice is harmless).
        seq = self._cortex.last_seq
        entry.items.reset()
        for head in self._cortex.genes():
            entry.items.update(head.id, head, outgoing)
        entry.seq = seq
        self.full_passes += 1

    def _catch_up(self, entry: _PeerItems, outgoing: Outgoing) -> None:
        cortex = self._cortex
        target = cortex.last_seq
        while entry.seq < target:  # each page moves `seq` forward: bounded by the feed
            changes = cortex.changes_since(entry.seq, FEED_PAGE)
            if not changes:
                break
            for gene_id in dict.fromkeys(c.id for c in changes):
                entry.items.update(gene_id, cortex.get_gene(gene_id), outgoing)
            entry.seq = changes[-1].seq
