"""The receiver's own rules decide, whatever the sender believes.

A sender whose view of us is stale or wrong (it thinks we take `loan`, or that we are in
another region) sends genes our rules refuse. They are refused on arrival: counted,
never applied or stored, and the sync still moves past them, so they are not offered
again and again. The sender side here is honest about its own rules; only its belief
about the receiver is wrong, which is exactly what a receiver cannot rule out.
"""

from __future__ import annotations

from gd_testkit import key_from_int
from sov_sim import MemNode, sync

from gd.genome import Codon, Gene, NodeKey, ShareScope
from gd.protocol.policy_rules import Direction, PeerInfo, ShareRule, Subject
from gd.protocol.sovereignty import PolicySet
from gd.protocol.sync_messages import ChangeBatch

ACME, BOB = key_from_int(301), key_from_int(302)


def _gene(key: NodeKey, n: int, domain: str, scope: ShareScope | None = None) -> Gene:
    return Gene.create(key, domain=domain, name=f"g{n}", codons=[Codon.simple("s11", ">", n)],
                       action="inspect", hlc=(1_700_000_000_000 + n) << 16,
                       scope=scope or ShareScope())


def _pair(bob_seen_in: str = "eu-west") -> tuple[MemNode, MemNode]:
    """Acme and Bob; `bob_seen_in` is the region Acme believes Bob is in."""
    acme = PeerInfo(ACME.peer_id, "acme", "eu-west")
    bob = PeerInfo(BOB.peer_id, "bobco", "eu-west")
    # Acme shares everything with Bob and believes Bob takes everything from it.
    sender = MemNode(ACME, acme, PolicySet(acme, (ShareRule(Subject.parse(bob.peer_id), "*"),),
                                           (), {bob.peer_id: (ShareRule(
                                               Subject.parse(acme.peer_id), "*"),)}))
    # Bob only takes turbofan from Acme (and knows Acme offers everything).
    receiver = MemNode(BOB, bob, PolicySet(bob, (ShareRule(
        Subject.parse(acme.peer_id), "turbofan", Direction.RECEIVE),), (), {
            acme.peer_id: (ShareRule(Subject.parse(bob.peer_id), "*"),)}))
    receiver.info = PeerInfo(bob.peer_id, bob.org, bob_seen_in)  # what the sender sees
    return sender, receiver


def test_genes_the_receiver_does_not_accept_are_refused_not_stored() -> None:
    sender, receiver = _pair()
    turbofan = [_gene(ACME, n, "turbofan") for n in range(3)]
    loan = [_gene(ACME, 10 + n, "loan") for n in range(4)]
    for gene in (turbofan[0], *loan[:2], turbofan[1], *loan[2:], turbofan[2]):
        sender.add(gene)
    run = sync(sender, receiver, max_genes=3)
    wire = [g for data in run.batches for g in ChangeBatch.decode(data).genes]
    assert len(wire) == 7  # acme sent all seven, believing Bob takes them
    assert run.refused == 4
    assert sorted(g.id for g in run.refused_genes) == sorted(g.id for g in loan)
    assert sorted(g.id for g in run.applied) == sorted(g.id for g in turbofan)
    assert {g.id for _, g in receiver.received} == {g.id for g in turbofan}
    assert not any((g.id, g.version_hash) in receiver.held for g in loan)
    # The checkpoint moved past the refused genes: the next round offers nothing again.
    assert receiver.checkpoints[ACME.peer_id] == len(sender.feed)
    again = sync(sender, receiver)
    assert again.refused == 0 and again.applied == [] and again.sent == []


def test_a_gene_kept_in_another_region_is_refused_by_the_receiver() -> None:
    # Acme believes Bob is in us-east (a stale view); Bob is in eu-west and refuses a
    # gene whose scope keeps it in us-east, though Acme's filter let it go.
    sender, receiver = _pair("us-east")
    sender.policy = PolicySet(PeerInfo(ACME.peer_id, "acme", "us-east"),
                              sender.policy.rules, (), sender.policy.remote)
    sender.info = sender.policy.me
    kept = _gene(ACME, 1, "turbofan", ShareScope(residency="us-east"))
    free = _gene(ACME, 2, "turbofan")
    sender.add(kept)
    sender.add(free)
    run = sync(sender, receiver)
    assert [g.id for g in run.refused_genes] == [kept.id]
    assert [g.id for g in run.applied] == [free.id]
    assert (kept.id, kept.version_hash) not in receiver.held
