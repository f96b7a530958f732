"""Sovereignty enforced by running daemons over real libp2p on 127.0.0.1: agreements
travel as signed proposals, genes follow them (and only them), everything is audited,
revocation and the right to deletion reach the peer."""

from __future__ import annotations

import pytest
import trio
from gd_testkit import key_from_int, make_gene

from gd.genome import GeneStatus
from gd.node.control import call
from gd.node.store.audit import AuditKind
from gd.node.store.ledger_store import Ledger
from gd.protocol.agreement_messages import ForgetDelivery, Tombstone, TombstoneError
from gd.protocol.policy_rules import Subject
from gd.protocol.sovereignty_agreements import AgreementState
from gd.protocol.sovereignty_anonymise import PSEUDONYM_PREFIX

K1, K2, K3 = (key_from_int(n) for n in (1, 2, 3))


def genes_of(key, domain, n, tag=""):
    return [make_gene(key, f"{domain}-{tag}{i}", domain, threshold=40.0 + i)
            for i in range(n)]


def ledger_kinds(d) -> list[str]:
    return [str(e.kind) for e in Ledger(d.cortex.env).entries()]


async def past_everything(a, b) -> None:
    """A sync round before any agreement: each checkpoint moves past the other's genes
    (filtered out), so only the backfill can bring them once an agreement is made."""
    [stats] = await a.sync.sync_now(b.peer_id)
    assert stats.genes_in == stats.genes_out == 0
    assert a.cortex.get_checkpoint(b.peer_id) == b.cortex.last_seq
    assert b.cortex.get_checkpoint(a.peer_id) == a.cortex.last_seq


def audit_ok(*daemons) -> bool:
    return all(d.sovereignty.audit.verify().ok for d in daemons)


async def test_nothing_flows_without_an_agreement_nor_with_a_one_sided_share(fed):
    async with trio.open_nursery() as nursery:
        a = await fed.start(nursery, 1)
        a.cortex.put_genes(genes_of(K1, "turbofan", 3))
        b = await fed.start(nursery, 2, boot=[a])
        await fed.connected(a, b)
        [stats] = await b.sync.sync_now(a.peer_id, repair=True)
        assert stats.errors == [] and stats.genes_in == 0 and stats.repaired == 0
        assert fed.from_peer(b, a) == {}

        await fed.share(a, b, "turbofan")  # a proposes; b never shares back
        await fed.until(lambda: b.sovereignty.store.agreement(
            a.peer_id, "turbofan").state is AgreementState.PROPOSED)
        # delivered and acknowledged (the ack follows b's write)
        await fed.until(lambda: a.sovereignty.store.outbox(b.peer_id) == [])
        [stats] = await b.sync.sync_now(a.peer_id, repair=True)
        assert stats.errors == [] and stats.genes_in == 0 and stats.repaired == 0
        assert fed.from_peer(b, a) == {}
        assert fed.audited(a, fed.SENT, b) == set()  # nothing was even serialised for b
        assert "agreement" not in ledger_kinds(a) + ledger_kinds(b)
        # A sender that ignores the policy still gets nothing in: the receiver checks again.
        a.sync.set_share_policy(lambda receiver, gene: True)
        b.cortex.set_checkpoint(a.peer_id, 0)
        stats = await b.sync.pull(a.peer_id)
        assert (stats.genes_in, stats.rejected) == (0, 3) and fed.from_peer(b, a) == {}
        assert {r.gene_id for r in b.sovereignty.audit.records(kind=AuditKind.GENE_REFUSED)} \
            == {g.id for g in a.cortex.genes()}
        # the control method the CLI calls after a change (it works without one, by polling)
        assert (await trio.to_thread.run_sync(lambda: call(a.home, "policy_changed")))["ok"]
        assert audit_ok(a, b)
        fed.stop_all(a, b)


async def test_mutual_share_flows_the_shared_domain_only_and_is_audited_both_sides(fed):
    async with trio.open_nursery() as nursery:
        a = await fed.start(nursery, 1)
        a_turbo, a_loan = genes_of(K1, "turbofan", 3), genes_of(K1, "loan", 2)
        a.cortex.put_genes(a_turbo + a_loan)
        b = await fed.start(nursery, 2, boot=[a])
        b_turbo, b_loan = genes_of(K2, "turbofan", 1, "b"), genes_of(K2, "loan", 1, "b")
        b.cortex.put_genes(b_turbo + b_loan)
        await fed.connected(a, b)
        await past_everything(a, b)

        await fed.share(a, b, "turbofan")
        await fed.share(b, a, "turbofan")
        # Effective on both sides, each recorded on its own ledger.
        await fed.until(lambda: all(
            x.sovereignty.store.agreement(y.peer_id, "turbofan").state
            is AgreementState.EFFECTIVE for x, y in ((a, b), (b, a))))
        await fed.until(lambda: "agreement" in ledger_kinds(a)
                        and "agreement" in ledger_kinds(b))
        # Backfill: genes stored before the agreement reach the peer.
        await fed.until(lambda: set(fed.from_peer(b, a)) == {g.id for g in a_turbo}
                        and set(fed.from_peer(a, b)) == {g.id for g in b_turbo})
        assert {g.status for g in fed.from_peer(b, a).values()} == {
            GeneStatus.ADAPTATION_PENDING}
        # New genes follow the feed; the other domain never moves.
        late = genes_of(K1, "turbofan", 1, "late") + genes_of(K1, "loan", 1, "late")
        a.cortex.put_genes(late)
        a.sync.notify_local_change()  # as the daemon's writers do
        await fed.until(lambda: late[0].id in fed.from_peer(b, a))
        for _ in range(2):
            [stats] = await a.sync.sync_now(b.peer_id, repair=True)
            assert stats.errors == []
        assert fed.from_peer(b, a, "loan") == {} and fed.from_peer(a, b, "loan") == {}

        turbo_ids = {g.id for g in a_turbo} | {late[0].id}
        assert fed.audited(a, fed.SENT, b) == turbo_ids
        assert fed.audited(b, fed.RECEIVED, a) == turbo_ids
        assert fed.audited(b, fed.SENT, a) == {g.id for g in b_turbo}
        assert fed.audited(a, fed.RECEIVED, b) == {g.id for g in b_turbo}
        loan_ids = {g.id for g in a_loan + b_loan} | {late[1].id}
        for d in (a, b):
            assert not any(r.gene_id in loan_ids for r in d.sovereignty.audit.records())
        sent = [r for r in a.sovereignty.audit.records(kind=AuditKind.GENE_SENT)]
        assert all(r.rule == f"allow:both:turbofan:{b.peer_id}" for r in sent)
        assert audit_ok(a, b)
        fed.stop_all(a, b)


async def test_anonymised_share_sends_pseudonymised_derived_genes(fed):
    async with trio.open_nursery() as nursery:
        a = await fed.start(nursery, 1)
        originals = genes_of(K1, "turbofan", 2)
        a.cortex.put_genes(originals)
        b = await fed.start(nursery, 2, boot=[a])
        await fed.connected(a, b)
        await past_everything(a, b)
        await fed.share(a, b, "turbofan", anonymize=True)
        await fed.share(b, a, "turbofan")
        await fed.until(lambda: len(fed.from_peer(b, a)) == 2)
        received = list(fed.from_peer(b, a).values())
        for gene in received:
            assert gene.name.startswith(PSEUDONYM_PREFIX)
            assert gene.purpose.startswith(PSEUDONYM_PREFIX)
            assert gene.id not in {g.id for g in originals}  # a derived gene, signed by a
            gene.verify()
        assert {g.codons for g in received} == {g.codons for g in originals}  # the rule stays
        sent = list(a.sovereignty.audit.records(kind=AuditKind.GENE_SENT))
        assert {r.detail["source_id"] for r in sent} == {g.id for g in originals}
        assert all(r.detail["anonymized"] for r in sent)
        assert fed.audited(b, fed.RECEIVED, a) == {g.id for g in received}
        # Repair finds nothing missing: the derived forms match on both sides.
        [stats] = await b.sync.sync_now(a.peer_id, repair=True)
        assert stats.errors == [] and stats.repaired == 0
        assert audit_ok(a, b)
        fed.stop_all(a, b)


async def test_forget_deletes_the_peer_copy_and_revoke_stops_the_flow(fed):
    async with trio.open_nursery() as nursery:
        a = await fed.start(nursery, 1)
        genes = genes_of(K1, "turbofan", 3)
        a.cortex.put_genes(genes)
        b = await fed.start(nursery, 2, boot=[a])
        await fed.connected(a, b)
        await past_everything(a, b)
        await fed.share(a, b, "turbofan")
        await fed.share(b, a, "turbofan")
        await fed.until(lambda: len(fed.from_peer(b, a)) == 3)

        # Right to deletion: a forgets one gene; b gets a signed tombstone and complies.
        peers = a.sovereignty.desk.forget(genes[0].id)
        assert peers == [b.peer_id]
        a.sovereignty.policy_changed()
        await fed.until(lambda: b.cortex.get_gene(genes[0].id) is None)
        [honoured] = [r for r in b.sovereignty.audit.records(kind=AuditKind.FORGET)]
        assert (honoured.peer, honoured.gene_id) == (a.peer_id, genes[0].id)
        assert len(fed.from_peer(b, a)) == 2

        # Revocation: a withdraws; b marks a's genes revoked and nothing more flows.
        await trio.to_thread.run_sync(lambda: a.sovereignty.store.revoke(
            Subject.parse(b.peer_id), "turbofan", ledger=a.sovereignty.ledger))
        a.sovereignty.policy_changed()
        await fed.until(lambda: {g.status for g in fed.from_peer(b, a).values()}
                        == {GeneStatus.REVOKED})
        assert b.sovereignty.store.agreement(a.peer_id, "turbofan").state \
            is AgreementState.REVOKED
        assert "revocation" in ledger_kinds(a)
        after = genes_of(K1, "turbofan", 1, "after")
        a.cortex.put_genes(after)
        for _ in range(2):
            [stats] = await b.sync.sync_now(a.peer_id, repair=True)
            assert stats.errors == [] and stats.genes_in == 0
        assert after[0].id not in fed.from_peer(b, a)
        assert after[0].id not in fed.audited(a, fed.SENT, b)
        assert audit_ok(a, b)
        fed.stop_all(a, b)


async def test_a_tombstone_deletes_only_the_signers_genes(fed):
    async with trio.open_nursery() as nursery:
        a = await fed.start(nursery, 1)
        b = await fed.start(nursery, 2, boot=[a])
        await fed.connected(a, b)
        gene = make_gene(K1, "theirs")
        b.cortex.put_gene(gene)  # b holds a gene of origin a
        forged = Tombstone.create(K3, b.peer_id, [gene.id], 1)  # a third party asks
        ack = b.sovereignty.take_tombstones(K3.peer_id, ForgetDelivery((forged.encode(),), 1))
        assert (ack.deleted, ack.refused) == (0, 0) and b.cortex.get_gene(gene.id) is not None
        relayed = b.sovereignty.take_tombstones(a.peer_id, ForgetDelivery(
            (forged.encode(),), 1))  # someone else's tombstone passed on by a: refused
        assert (relayed.deleted, relayed.refused) == (0, 1)
        genuine = Tombstone.create(K1, b.peer_id, [gene.id], 2)
        ack = b.sovereignty.take_tombstones(a.peer_id, ForgetDelivery((genuine.encode(),), 2))
        assert ack.deleted == 1 and b.cortex.get_gene(gene.id) is None
        assert audit_ok(b)
        fed.stop_all(a, b)


def test_tombstone_round_trips_and_refuses_tampering():
    stone = Tombstone.create(K1, K2.peer_id, ["a" * 32, "b" * 32], 7 << 16)
    assert Tombstone.decode(stone.encode()) == stone
    tampered = Tombstone(stone.origin, stone.peer, ("c" * 32,), stone.hlc, stone.signature)
    for bad in (tampered.encode(), stone.encode()[:-1], b"\x00" * 10):
        with pytest.raises(TombstoneError):
            Tombstone.decode(bad)
