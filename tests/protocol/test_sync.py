"""Change-feed sync core: deterministic in-memory replicas over a faulty network."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from gd.crdt.conflict import ConflictPolicy, Resolution
from gd.crdt.hlc import HLC
from gd.crdt.vclock import Order, compare
from gd.genome import Codon, Gene, NodeKey
from gd.protocol.sync import (
    MAX_SCAN_PER_BATCH,
    SyncReceiver,
    SyncSender,
    SyncUsageError,
    decide_for,
)
from gd.protocol.sync_messages import (
    MAX_BATCH_GENES,
    ChangeBatch,
    ChangesRequest,
    SyncProtocolError,
)

T0 = 1_700_000_000_000
LWW = ConflictPolicy(lww=True)


def allow_all(receiver: str, gene: Gene) -> bool:
    return True


@dataclass(eq=False)
class Replica:
    """A node's stores as plain memory: genes by id, a change feed, a conflict queue."""

    name: str
    policy: ConflictPolicy = field(default_factory=ConflictPolicy)
    key: NodeKey = field(init=False)
    genes: dict[str, Gene] = field(default_factory=dict)
    feed: list[Gene] = field(default_factory=list)
    queue: list[tuple[Gene, Gene]] = field(default_factory=list)
    checkpoints: dict[str, int] = field(default_factory=dict)
    clock: HLC = field(default_factory=HLC)
    now_ms: int = T0

    def __post_init__(self) -> None:
        self.key = NodeKey.from_seed(self.name.encode().ljust(32, b"."))

    @property
    def peer(self) -> str:
        return self.key.peer_id

    def tick(self) -> int:
        self.now_ms += 7
        self.clock = self.clock.now(self.now_ms)
        return self.clock.packed

    def store(self, gene: Gene) -> None:
        self.genes[gene.id] = gene
        self.feed.append(gene)

    def create(self, name: str) -> Gene:
        gene = Gene.create(self.key, domain="turbofan", name=name, action="inspect",
                           codons=[Codon.simple("s11", ">", 47.5)], hlc=self.tick())
        self.store(gene)
        return gene

    def edit(self, gene_id: str, threshold: float) -> Gene:
        gene = self.genes[gene_id].edited(
            self.key, hlc=self.tick(), codons=(Codon.simple("s11", ">", threshold),))
        self.store(gene)
        return gene

    def read_feed(self, since: int, limit: int) -> list[tuple[int, Gene]]:
        return [(since + 1 + i, g) for i, g in enumerate(self.feed[since:since + limit])]

    def apply(self, sender: str, genes: Sequence[Gene], upto: int) -> None:
        """One 'transaction': decide every gene, then commit genes and checkpoint."""
        for gene in genes:
            self.clock = self.clock.update(gene.hlc, self.now_ms)
            local = self.genes.get(gene.id)
            decision = decide_for(local, gene, self.policy)
            if decision.stores_incoming:
                self.store(gene)
            elif decision.resolution is Resolution.QUEUE and local is not None and \
                    all(q.version_hash != gene.version_hash for _, q in self.queue):
                self.queue.append((local, gene))
        self.checkpoints[sender] = upto

    def receiver_for(self, sender: Replica, max_genes: int = MAX_BATCH_GENES) -> SyncReceiver:
        return SyncReceiver(sender.peer, self.apply, self.checkpoints.get(sender.peer, 0),
                            max_genes=max_genes)

    def sender_for(self, receiver: Replica) -> SyncSender:
        return SyncSender(receiver.peer, self.read_feed, allow_all)

    def contents(self) -> dict[str, bytes]:
        return {gid: g.version_hash for gid, g in self.genes.items()}


def sync_clean(receiver: Replica, sender: Replica, max_genes: int = MAX_BATCH_GENES) -> int:
    """Pull until the sender has nothing more; return the number of batches."""
    rx, tx = receiver.receiver_for(sender, max_genes), sender.sender_for(receiver)
    batches = 0
    while True:
        outcome = rx.receive(tx.receive(rx.request()))
        batches += 1
        if not outcome.more:
            return batches


@dataclass
class FaultyNetwork:
    """Messages in flight; delivery order, drops and duplicates come from a seed."""

    rng: random.Random
    drop: float = 0.15
    dup: float = 0.15
    in_flight: list[tuple[str, Replica, Replica, SyncReceiver, bytes]] = field(
        default_factory=list)

    def send(self, item: tuple[str, Replica, Replica, SyncReceiver, bytes]) -> None:
        if self.rng.random() < self.drop:
            return
        self.in_flight.append(item)
        if self.rng.random() < self.dup:
            self.in_flight.append(item)

    def step(self) -> None:
        kind, rx_node, tx_node, rx, data = self.in_flight.pop(
            self.rng.randrange(len(self.in_flight)))
        if kind == "req":
            self.send(("batch", rx_node, tx_node, rx, tx_node.sender_for(rx_node).receive(data)))
        else:
            outcome = rx.receive(data)
            if outcome.more:
                self.send(("req", rx_node, tx_node, rx, rx.request()))


def run_chaos(replicas: list[Replica], seed: int, steps: int = 400) -> None:
    rng = random.Random(seed)
    net = FaultyNetwork(rng)
    receivers = {(a.name, b.name): a.receiver_for(b, max_genes=3)
                 for a in replicas for b in replicas if a is not b}
    for _ in range(steps):
        roll = rng.random()
        node = rng.choice(replicas)
        if roll < 0.15:
            node.create(f"rule-{node.name}-{len(node.feed)}")
        elif roll < 0.35 and node.genes:
            node.edit(rng.choice(sorted(node.genes)), rng.uniform(40, 50))
        elif roll < 0.55:
            other = rng.choice([r for r in replicas if r is not node])
            rx = receivers[(node.name, other.name)]
            net.send(("req", node, other, rx, rx.request()))
        elif net.in_flight:
            net.step()
    # Heal: drain what is in flight, then sync every pair until nothing moves.
    while net.in_flight:
        net.step()
    for _ in range(len(replicas) + 1):
        for a in replicas:
            for b in replicas:
                if a is not b:
                    sync_clean(a, b)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_two_replicas_converge_under_drops_duplicates_reorders(seed: int) -> None:
    replicas = [Replica("a", LWW), Replica("b", LWW)]
    run_chaos(replicas, seed)
    assert replicas[0].contents() == replicas[1].contents()
    assert len(replicas[0].genes) > 5


@pytest.mark.parametrize("seed", [4, 5])
def test_three_replicas_converge_under_drops_duplicates_reorders(seed: int) -> None:
    replicas = [Replica("a", LWW), Replica("b", LWW), Replica("c", LWW)]
    run_chaos(replicas, seed, steps=500)
    first = replicas[0].contents()
    assert all(r.contents() == first for r in replicas[1:])


def test_genes_reach_a_third_replica_through_a_second() -> None:
    a, b, c = Replica("a"), Replica("b"), Replica("c")
    gene = a.create("relay")
    sync_clean(b, a)
    sync_clean(c, b)
    assert c.genes[gene.id].version_hash == gene.version_hash


def test_concurrent_edits_are_queued_not_lost() -> None:
    a, b = Replica("a"), Replica("b")  # default policy: queue every conflict
    gene = a.create("shared")
    sync_clean(b, a)
    mine, theirs = a.edit(gene.id, 41.0), b.edit(gene.id, 49.0)
    assert compare(mine.vv, theirs.vv) is Order.CONCURRENT
    sync_clean(a, b)
    sync_clean(b, a)
    assert a.genes[gene.id] == mine and b.genes[gene.id] == theirs
    assert [(x.version_hash, y.version_hash) for x, y in a.queue] == \
        [(mine.version_hash, theirs.version_hash)]
    assert [(x.version_hash, y.version_hash) for x, y in b.queue] == \
        [(theirs.version_hash, mine.version_hash)]


def test_interrupted_sync_resumes_without_resending_applied_batches() -> None:
    a, b = Replica("a"), Replica("b")
    for i in range(25):
        a.create(f"rule-{i}")
    rx, tx = b.receiver_for(a, max_genes=10), a.sender_for(b)
    rx.receive(tx.receive(rx.request()))  # batch 1 applied
    tx.receive(rx.request())  # batch 2 is sent, and the connection drops before it lands
    assert b.checkpoints[a.peer] == 10 and len(b.genes) == 10
    # A new connection: fresh cores, the checkpoint comes from b's store.
    rx2, tx2 = b.receiver_for(a, max_genes=10), a.sender_for(b)
    sent_before = tx2.genes_sent
    batches = 1
    while rx2.receive(tx2.receive(rx2.request())).more:
        batches += 1
    assert batches == 2
    assert tx2.genes_sent - sent_before == 15  # only what b had not applied
    assert b.contents() == a.contents()


def test_duplicate_and_replayed_batches_change_nothing() -> None:
    a, b = Replica("a"), Replica("b")
    for i in range(5):
        a.create(f"rule-{i}")
    rx, tx = b.receiver_for(a), a.sender_for(b)
    batch = tx.receive(rx.request())
    first = rx.receive(batch)
    feed_len = len(b.feed)
    again = rx.receive(batch)
    assert len(first.applied) == 5 and again.stale and not again.applied
    assert len(b.feed) == feed_len and rx.checkpoint == 5


def test_tampered_and_wrongly_signed_genes_are_rejected_while_the_rest_apply() -> None:
    a, b = Replica("a"), Replica("b")
    good = [a.create(f"rule-{i}") for i in range(3)]
    tampered = good[0].to_wire()
    tampered["body"] = dict(tampered["body"], purpose="something else")
    forged = good[1].to_wire()
    forged["sig"] = NodeKey.from_seed(b"m" * 32).sign(good[1].signing_bytes)
    garbage = {"body": {"id": "x" * 200}}
    data = ChangeBatch(0, 3, False, (tampered, forged, good[2].to_wire(), garbage)).encode()
    rx = b.receiver_for(a)
    outcome = rx.receive(data)
    assert [g.id for g in outcome.applied] == [good[2].id]
    assert [r.gene_id for r in outcome.rejected] == [good[0].id, good[1].id, "#3"]
    assert all("SignatureError" in r.reason for r in outcome.rejected[:2])
    assert rx.checkpoint == 3 and list(b.genes) == [good[2].id]


def test_an_author_without_a_vv_entry_is_rejected() -> None:
    a, b = Replica("a"), Replica("b")
    gene = a.create("odd")
    stranger = NodeKey.from_seed(b"s" * 32)
    claimed = gene.signed(stranger)  # signed by a node that never bumped its counter
    outcome = b.receiver_for(a).receive(ChangeBatch(0, 1, False, (claimed.to_wire(),))
                                        .encode())
    assert not outcome.applied and "version vector" in outcome.rejected[0].reason


def test_default_policy_shares_nothing_but_advances_the_feed() -> None:
    a, b = Replica("a"), Replica("b")
    for i in range(4):
        a.create(f"private-{i}")
    tx = SyncSender(b.peer, a.read_feed)  # no policy given
    rx = b.receiver_for(a)
    outcome = rx.receive(tx.receive(rx.request()))
    assert outcome.applied == () and rx.checkpoint == 4 and not b.genes


def test_sender_scan_is_bounded_when_the_policy_filters_everything() -> None:
    a = Replica("a")
    gene = Gene.create(a.key, domain="turbofan", name="one", action="inspect",
                       codons=[Codon.simple("s1", ">", 1.0)])
    feed = [(i + 1, gene) for i in range(MAX_SCAN_PER_BATCH + 50)]
    tx = SyncSender("peer", lambda since, limit: feed[since:since + limit])
    batch = tx.batch(ChangesRequest(0))
    assert batch.upto == MAX_SCAN_PER_BATCH and batch.more and not batch.genes
    rest = tx.batch(ChangesRequest(batch.upto))
    assert rest.upto == len(feed) and not rest.more


def test_failed_apply_keeps_the_checkpoint() -> None:
    a = Replica("a")
    a.create("x")

    def broken(sender: str, genes: Sequence[Gene], upto: int) -> None:
        raise OSError("disk full")

    rx = SyncReceiver(a.peer, broken)
    data = SyncSender("me", a.read_feed, allow_all).receive(rx.request())
    with pytest.raises(OSError):
        rx.receive(data)
    assert rx.checkpoint == 0


@pytest.mark.parametrize(("data", "reason"), [
    (b"\xc1", "malformed"),
    (ChangesRequest(0).encode(), "expected"),
    (b"\x95\xa7changes\x05\x01\xc2\x90", "backwards"),
    (b"\x95\xa7changes\x00\x00\xc2\x91\x80", "advance"),
    (b"\x95\xa7changes\x00\x01\x01\x90", "bool"),
    (b"\x95\xa7changes\x00\x01\xc2\x91\x01", "map"),
])
def test_malformed_batches_are_protocol_errors(data: bytes, reason: str) -> None:
    applied: list[int] = []
    rx = SyncReceiver("peer", lambda s, g, u: applied.append(u))
    with pytest.raises(SyncProtocolError, match=reason):
        rx.receive(data)
    assert rx.checkpoint == 0 and applied == []


def test_oversized_batches_and_requests_are_refused() -> None:
    rx = SyncReceiver("peer", lambda s, g, u: None, max_genes=2)
    a = Replica("a")
    wires = tuple(a.create(f"r{i}").to_wire() for i in range(3))
    with pytest.raises(SyncProtocolError, match="asked"):
        rx.receive(ChangeBatch(0, 3, False, wires).encode())
    with pytest.raises(SyncProtocolError):
        ChangesRequest(0, MAX_BATCH_GENES + 1)
    with pytest.raises(SyncProtocolError):
        ChangesRequest.decode(b"\x93\xa8changes?\xff\x01")


def test_a_feed_reader_that_goes_backwards_is_a_usage_error() -> None:
    a = Replica("a")
    gene = a.create("x")
    tx = SyncSender("p", lambda since, limit: [(1, gene), (1, gene)], allow_all)
    with pytest.raises(SyncUsageError):
        tx.batch(ChangesRequest(0))
