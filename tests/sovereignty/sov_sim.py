"""In-memory nodes that run the real sync core with the sovereignty filters plugged in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gd.genome import Gene, NodeKey
from gd.protocol.policy_rules import PeerInfo
from gd.protocol.sovereignty import InboundFilter, OutboundFilter, PolicySet, SentGene
from gd.protocol.sovereignty_anonymise import anonymisation_secret
from gd.protocol.sync import SyncReceiver, SyncSender


@dataclass(eq=False)
class MemNode:
    """A node's stores as plain memory: a feed of gene versions and the sync checkpoints."""

    key: NodeKey
    info: PeerInfo
    policy: PolicySet
    feed: list[Gene] = field(default_factory=list)
    held: set[tuple[str, bytes]] = field(default_factory=set)
    checkpoints: dict[str, int] = field(default_factory=dict)
    received: list[tuple[str, Gene]] = field(default_factory=list)

    @property
    def peer(self) -> str:
        return self.info.peer_id

    def add(self, gene: Gene) -> None:
        if (gene.id, gene.version_hash) not in self.held:
            self.held.add((gene.id, gene.version_hash))
            self.feed.append(gene)

    def read_feed(self, since: int, limit: int) -> Sequence[tuple[int, Gene]]:
        return [(since + i + 1, g) for i, g in enumerate(self.feed[since:since + limit])]

    def apply(self, sender: str, genes: Sequence[Gene], checkpoint: int) -> None:
        for gene in genes:
            self.received.append((sender, gene))
            self.add(gene)
        self.checkpoints[sender] = checkpoint


@dataclass
class SyncRun:
    batches: list[bytes]
    sent: list[SentGene]
    refused: int
    refused_genes: list[Gene] = field(default_factory=list)  # by the receiver's own rules
    applied: list[Gene] = field(default_factory=list)


def sync(src: MemNode, dst: MemNode, max_genes: int = 7) -> SyncRun:
    """One full pull of `src`'s feed by `dst`, through both filters, over encoded bytes."""
    view = OutboundFilter(lambda: src.policy, dst.info, src.key,
                          anonymisation_secret(src.key), src.read_feed)
    sender = SyncSender(dst.peer, view.read_feed, view.policy)
    inbound = InboundFilter(lambda: dst.policy, src.info)
    receiver = SyncReceiver(src.peer, dst.apply, dst.checkpoints.get(src.peer, 0),
                            accept=inbound.accept, max_genes=max_genes)
    batches = []
    applied: list[Gene] = []
    while True:
        data = sender.receive(receiver.request())
        batches.append(data)
        outcome = receiver.receive(data)
        applied += outcome.applied
        if not outcome.more:
            break
    return SyncRun(batches, view.take_sent(), len(inbound.refused),
                   [gene for gene, _ in inbound.refused], applied)
