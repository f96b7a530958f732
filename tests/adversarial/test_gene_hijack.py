"""Issue 11, items 2 and 3: a partner cannot hijack, move or delete our genes, nor get
our key to sign its genes, and nothing unapproved is forwarded.

The attacker is a hostile peer (tests/support/hostile.py) with a real turbofan
agreement with the node: it serves a change feed of forged genes through our own sync
sender core and sends signed tombstones, exactly as a modified gd-node could."""

from __future__ import annotations

import dataclasses

import trio
from daemon_cluster import quiet_libp2p
from federation import Federation
from gd_testkit import key_from_int, make_gene
from hostile import hostile_peer

from gd.genome import Codon, Gene, GeneStatus, ShareScope
from gd.genome.gene import gene_id_for
from gd.node.services.sovereignty_service import AGREEMENTS_PROTOCOL_ID
from gd.node.store.policy_store import rule_from_options
from gd.protocol.agreement_messages import ForgetDelivery, Tombstone
from gd.protocol.sovereignty_agreements import AgreementState

K1 = key_from_int(1)


def forged(template: Gene, **body: object) -> Gene:
    """`template` with body fields replaced, signed by whoever `author_key` is."""
    key = body.pop("author_key")
    return dataclasses.replace(template, author="", signature=b"", **body).signed(key)


async def agreed_with(fed: Federation, node, evil, domain: str) -> None:
    """Both halves of a `domain` agreement between `node` and the hostile peer."""
    sov = node.sovereignty
    rule = rule_from_options(evil.peer_id, domain)
    await trio.to_thread.run_sync(lambda: sov.store.share(rule, ledger=sov.ledger))
    await evil.propose(node, rule_from_options(node.peer_id, domain))
    await fed.until(lambda: sov.store.agreement(evil.peer_id, domain).state
                    is AgreementState.EFFECTIVE)


def rejected_count(node) -> float:
    """Incoming genes the node rejected, over every sync round (its own metrics)."""
    return node.metrics.registry.get_sample_value("gd_sync_rejected_total") or 0.0


def refused_from(node, evil) -> set[str]:
    """The genes of `evil` the node refused, from its audit log."""
    return {r.gene_id for r in node.sovereignty.audit.records(kind="gene_refused")
            if r.peer == evil.peer_id}


async def test_a_partner_cannot_move_our_gene_to_its_domain_nor_delete_it(fed_adv):
    quiet_libp2p()
    fed = fed_adv
    async with trio.open_nursery() as nursery:
        node = await fed.start(nursery, 1)
        ours = make_gene(K1, "offer-small-loans", "loan", action="standard_offer")
        node.cortex.put_gene(ours)
        async with hostile_peer() as evil:
            await evil.handshake(node, org="partner")
            await agreed_with(fed, node, evil, "turbofan")
            # Our loan gene's id, re-labelled turbofan (which the agreement lets in),
            # origin the attacker, a vector that dominates ours.
            takeover = forged(ours, domain="turbofan", origin=evil.peer_id,
                              version=ours.version + 1,
                              vv={K1.peer_id: 9, evil.peer_id: 1}, author_key=evil.key)
            # A gene claiming OUR origin, that we never authored, forwardable.
            planted_id = gene_id_for(K1.peer_id, "turbofan", "planted")
            planted = forged(make_gene(K1, "planted"), id=planted_id,
                             vv={evil.peer_id: 1}, scope=ShareScope(forward=True),
                             author_key=evil.key)
            evil.serve_feed([takeover, planted])
            # Whichever round takes them (this one, or the one the agreement's hint
            # started on its own: rounds of a peer run one at a time), both are refused.
            await node.sync.pull(evil.peer_id)
            assert rejected_count(node) == 2
            assert refused_from(node, evil) == {planted_id}  # audited with its reason
            head = node.cortex.get_gene(ours.id)
            assert (head.origin, head.domain, head.version_hash) == (
                K1.peer_id, "loan", ours.version_hash)
            assert node.cortex.get_gene(planted_id) is None
            # Its signed tombstone for our gene deletes nothing.
            stone = Tombstone.create(evil.key, node.peer_id, [ours.id], 5 << 16)
            ack = await evil.request(node, AGREEMENTS_PROTOCOL_ID,
                                     ForgetDelivery(tombstones=(stone.encode(),), upto=1))
            assert ack.deleted == 0
            assert node.cortex.get_gene(ours.id).version_hash == ours.version_hash
            assert node.cortex.gene_versions(ours.id) == [ours.version]
        fed.stop_all(node)


async def test_genes_that_make_no_sense_in_their_domain_are_refused_and_audited(fed_adv):
    """Issue 13, item 2: a received gene gets the import's domain-pack check."""
    quiet_libp2p()
    fed = fed_adv
    async with trio.open_nursery() as nursery:
        node = await fed.start(nursery, 1)
        async with hostile_peer() as evil:
            await evil.handshake(node, org="partner")
            await agreed_with(fed, node, evil, "turbofan")
            bad = [Gene.create(evil.key, domain="turbofan", name=name,
                               codons=[Codon.simple(feature, ">", 1.0)], action=action)
                   for name, feature, action in (("unknown-sensor", "s99", "inspect"),
                                                 ("unknown-action", "s11", "explode"))]
            good = make_gene(evil.key, "fine")
            evil.serve_feed([*bad, good])
            await node.sync.pull(evil.peer_id)  # or the hint's own round: see above
            assert node.cortex.get_gene(good.id) is not None
            assert [node.cortex.get_gene(g.id) for g in bad] == [None, None]
            refused = {r.gene_id: r.detail for r in node.sovereignty.audit.records(
                kind="gene_refused") if r.peer == evil.peer_id}
            assert set(refused) == {g.id for g in bad}
            assert "s99" in str(refused[bad[0].id]) and "explode" in str(refused[bad[1].id])
        fed.stop_all(node)


async def test_a_received_gene_is_not_forwarded_before_a_person_approves_it(fed_adv):
    quiet_libp2p()
    fed = fed_adv
    async with trio.open_nursery() as nursery:
        a = await fed.start(nursery, 1)
        b = await fed.start(nursery, 2, boot=[a])
        c = await fed.start(nursery, 3, boot=[a])
        await fed.connected(a, b, c)
        # b -> a: turbofan, forwardable; a -> c: turbofan, forwarding allowed.
        await fed.share(b, a, "turbofan", allow_forward=True)
        await fed.share(a, b, "turbofan")
        await fed.share(a, c, "turbofan", allow_forward=True)
        await fed.share(c, a, "turbofan")
        gene = dataclasses.replace(make_gene(key_from_int(2), "from-b"), author="",
                                   signature=b"", scope=ShareScope(forward=True)
                                   ).signed(key_from_int(2))
        b.cortex.put_gene(gene)
        b.sync.notify_local_change()
        await fed.until(lambda: a.cortex.get_gene(gene.id) is not None, timeout=30)
        assert a.cortex.get_gene(gene.id).status is GeneStatus.ADAPTATION_PENDING
        await c.sync.sync_now(a.peer_id, repair=True)
        assert c.cortex.get_gene(gene.id) is None  # pending: never forwarded
        await trio.to_thread.run_sync(lambda: a.sovereignty.desk.approve(gene.id))
        a.sync.notify_local_change()
        await fed.until(lambda: c.cortex.get_gene(gene.id) is not None, timeout=30)
        assert c.cortex.get_gene(gene.id).version_hash == gene.version_hash
        fed.stop_all(a, b, c)
