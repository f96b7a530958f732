"""The adaptation workflow: pending, show, approve (original or variant), reject, rollback,
forget, each with its audit record and ledger record."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gd_testkit import key_from_int

from gd.crdt.vclock import Order, compare
from gd.genome import Codon, Decision, Gene, GeneStatus, StateVector
from gd.node.app.adaptation import AdaptationDesk, AdaptationError
from gd.node.store.audit import AuditKind, AuditLog, MemoryLedgerSink
from gd.node.store.cortex import Cortex

ME, PEER, OTHER = key_from_int(301), key_from_int(302), key_from_int(303)


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[AdaptationDesk]:
    cortex = Cortex.open(tmp_path / "c")
    yield AdaptationDesk(cortex, ME, MemoryLedgerSink(), AuditLog(cortex))
    cortex.close()


def received(name: str = "hot", threshold: float = 47.6) -> Gene:
    return Gene.create(PEER, domain="turbofan", name=name,
                       codons=[Codon.simple("s11", ">", threshold)], action="inspect",
                       hlc=1 << 16, status=GeneStatus.ADAPTATION_PENDING)


def variant(of: Gene, threshold: float) -> Gene:
    return Gene.create(ME, domain=of.domain, name=f"{of.name}-{threshold}",
                       codons=[Codon.simple("s11", ">", threshold)], action=of.action,
                       parents=[of.id], hlc=2 << 16, status=GeneStatus.ADAPTATION_PENDING)


def decision(gene: Gene, cp: float, at: int) -> Decision:
    return Decision(gene.id, gene.version_hash.hex(), gene.domain,
                    (StateVector("turbofan", {"s11": 50.0}),), 1, {}, (), cp, "", "accept", at)


def test_pending_list_and_show_with_variants_and_cp(desk: AdaptationDesk) -> None:
    original = received()
    v1, v2 = variant(original, 48.0), variant(original, 49.0)
    desk.cortex.put_genes([original, v1, v2, received("native").with_local(
        status=GeneStatus.NATIVE)])
    desk.cortex.put_decision(decision(v1, 0.4, 10))
    desk.cortex.put_decision(decision(v1, 0.8, 20))
    assert {g.id for g in desk.pending()} == {original.id, v1.id, v2.id}
    view = desk.show(original.id)
    assert view.original.id == original.id and view.original_cp is None
    assert dict((g.id, cp) for g, cp in view.variants) == {v1.id: 0.8, v2.id: None}


def test_approve_original_makes_it_native_and_records_it(desk: AdaptationDesk) -> None:
    original = received()
    v1 = variant(original, 48.0)
    desk.cortex.put_genes([original, v1])
    (approved,) = desk.approve(original.id)
    assert approved.status is GeneStatus.NATIVE
    assert desk.cortex.require_gene(original.id).status is GeneStatus.NATIVE
    assert desk.cortex.require_gene(v1.id).status is GeneStatus.ADAPTATION_PENDING
    ((kind, payload, summary, key),) = desk.ledger.records  # type: ignore[attr-defined]
    assert kind == "promotion" and summary["outcome"] == "native" and len(payload) == 32
    assert summary["gene"] == original.id and key.startswith("approve:")
    (record,) = desk.audit.records(kind=AuditKind.ADAPTATION)
    assert record.gene_id == original.id and record.detail["action"] == "approve"
    with pytest.raises(AdaptationError):
        desk.approve(original.id)  # no longer pending: nothing changes
    assert len(desk.ledger.records) == 1  # type: ignore[attr-defined]


def test_approve_variant_retires_original_and_rejects_siblings(desk: AdaptationDesk) -> None:
    original = received()
    v1, v2 = variant(original, 48.0), variant(original, 49.0)
    desk.cortex.put_genes([original, v1, v2])
    changed = desk.approve(original.id, variant=v2.id)
    assert [(g.id, g.status) for g in changed] == [
        (v2.id, GeneStatus.NATIVE), (original.id, GeneStatus.RETIRED),
        (v1.id, GeneStatus.REJECTED)]
    status = {g.id: g.status for g in desk.cortex.genes()}
    assert status == {v2.id: "native", original.id: "retired", v1.id: "rejected"}
    assert desk.ledger.records[0][2]["gene"] == v2.id  # type: ignore[attr-defined]
    assert desk.cortex.check_indexes() == []


def test_approving_something_that_is_not_a_variant_changes_nothing(
        desk: AdaptationDesk) -> None:
    original, unrelated = received(), received("other")
    desk.cortex.put_genes([original, unrelated])
    with pytest.raises(AdaptationError, match="not a variant"):
        desk.approve(original.id, variant=unrelated.id)
    assert all(g.status is GeneStatus.ADAPTATION_PENDING for g in desk.cortex.genes())
    assert desk.ledger.records == [] and len(desk.audit) == 0  # type: ignore[attr-defined]


def test_reject_needs_a_reason_and_records_it(desk: AdaptationDesk) -> None:
    original = received()
    desk.cortex.put_gene(original)
    with pytest.raises(AdaptationError):
        desk.reject(original.id, "  ")
    rejected = desk.reject(original.id, "threshold too low for our fleet")
    assert rejected.status is GeneStatus.REJECTED
    assert desk.ledger.records[0][2]["reason"] == "threshold too low for our fleet"  # type: ignore[attr-defined]
    assert desk.pending() == []


def test_rollback_writes_a_new_version_that_descends_the_current(
        desk: AdaptationDesk) -> None:
    v1 = Gene.create(ME, domain="turbofan", name="hot", codons=[Codon.simple("s11", ">", 47.6)],
                     action="inspect", purpose="first", hlc=1 << 16)
    v2 = v1.edited(OTHER, hlc=2 << 16, codons=(Codon.simple("s11", ">", 60.0),),
                   purpose="second")
    desk.cortex.put_genes([v1, v2])
    v3 = desk.rollback(v1.id, 1, hlc=3 << 16)
    assert v3.version == 3 and v3.codons == v1.codons and v3.purpose == "first"
    assert compare(v3.vv, v2.vv) is Order.DESCENDS
    v3.verify()
    assert desk.cortex.require_gene(v1.id).version_hash == v3.version_hash
    (kind, _, summary, _), = desk.ledger.records  # type: ignore[attr-defined]
    assert kind == "revocation" and summary["to_version"] == 1
    for bad in (0, 3, 7):
        with pytest.raises(AdaptationError):
            desk.rollback(v1.id, bad)


def test_forget_deletes_content_and_lists_receivers(desk: AdaptationDesk) -> None:
    gene = Gene.create(ME, domain="turbofan", name="personal", codons=[
        Codon.simple("s11", ">", 1.0)], action="inspect", hlc=1 << 16)
    desk.cortex.put_gene(gene)
    desk.audit.append(AuditKind.GENE_SENT, peer=PEER.peer_id, gene_id=gene.id,
                      version_hash=gene.version_hash, direction="out")
    desk.audit.append(AuditKind.GENE_SENT, peer=OTHER.peer_id, gene_id="derivedid",
                      detail={"source_id": gene.id})
    assert desk.forget(gene.id) == sorted([PEER.peer_id, OTHER.peer_id])
    assert desk.cortex.get_gene(gene.id) is None and desk.cortex.gene_versions(gene.id) == []
    assert b"personal" not in desk.audit.export("json").encode()
    assert desk.audit.verify().ok


def test_mark_revoked_only_touches_that_origin_and_domain(desk: AdaptationDesk) -> None:
    mine = received()
    loan = Gene.create(PEER, domain="loan", name="x", codons=[Codon.simple("a", ">", 1.0)],
                       action="approve")
    theirs = Gene.create(OTHER, domain="turbofan", name="y",
                         codons=[Codon.simple("s11", ">", 1.0)], action="inspect")
    desk.cortex.put_genes([mine, loan, theirs])
    assert desk.mark_revoked(PEER.peer_id, "turbofan") == [mine.id]
    status = {g.id: g.status for g in desk.cortex.genes()}
    assert status == {mine.id: "revoked", loan.id: "native", theirs.id: "native"}
