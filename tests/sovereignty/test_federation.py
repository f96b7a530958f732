"""Two organisations on real Cortexes: agree, share one domain and not another, revoke,
and find it all in the audit log; plus the audit chain's tamper detection."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from gd_testkit import key_from_int

from gd.genome import Codon, Gene, GeneStatus, NodeKey, canonical
from gd.node.app.adaptation import AdaptationDesk
from gd.node.store.audit import AUDIT_DB, AuditKind, AuditLog, MemoryLedgerSink
from gd.node.store.cortex import Cortex
from gd.node.store.policy_store import PolicyStore, rule_from_options
from gd.protocol.policy_rules import PeerInfo, Subject
from gd.protocol.sovereignty import InboundFilter, OutboundFilter
from gd.protocol.sovereignty_agreements import AgreementState, ProposalError
from gd.protocol.sovereignty_anonymise import anonymisation_secret
from gd.protocol.sync import SyncReceiver, SyncSender

ACME, BOBCO = key_from_int(201), key_from_int(202)
T0 = 1_700_000_000_000


class Org:
    def __init__(self, root: Path, key: NodeKey, org: str, region: str) -> None:
        self.key = key
        self.cortex = Cortex.open(root / org)
        self.audit = AuditLog(self.cortex)
        self.store = PolicyStore(self.cortex, key, org=org, region=region, audit=self.audit)
        self.ledger = MemoryLedgerSink()
        self.desk = AdaptationDesk(self.cortex, key, self.ledger, self.audit)

    @property
    def info(self) -> PeerInfo:
        return self.store.me

    def feed(self, since: int, limit: int) -> Sequence[tuple[int, Gene]]:
        out = []
        for change in self.cortex.changes_since(since, limit):
            if change.op == "put":
                out.append((change.seq, self.cortex.get_gene_version(change.id,
                                                                     change.version)))
        return out

    def apply(self, sender: str, genes: Sequence[Gene], checkpoint: int) -> None:
        self.cortex.put_genes([g.with_local(status=GeneStatus.ADAPTATION_PENDING)
                               for g in genes])
        self.cortex.set_checkpoint(sender, checkpoint)

    def deliver_to(self, other: Org) -> list:
        outcomes = []
        for seq, data in self.store.outbox(other.key.peer_id):
            outcomes.append(other.store.receive_proposal(data, self.key.peer_id,
                                                         ledger=other.ledger, hlc=seq))
            self.store.delivered(other.key.peer_id, seq)
        return outcomes


def sync(src: Org, dst: Org) -> list[Gene]:
    view = OutboundFilter(src.store.policies, dst.info, src.key,
                          anonymisation_secret(src.key), src.feed)
    sender = SyncSender(dst.key.peer_id, view.read_feed, view.policy)
    inbound = InboundFilter(dst.store.policies, src.info)
    receiver = SyncReceiver(src.key.peer_id, dst.apply, dst.cortex.get_checkpoint(
        src.key.peer_id), accept=inbound.accept)
    got: list[Gene] = []
    while True:
        outcome = receiver.receive(sender.receive(receiver.request()))
        got += outcome.applied
        if not outcome.more:
            break
    src.audit.record_sent(dst.key.peer_id, view.take_sent(), time_ms=T0)
    dst.audit.record_received(src.key.peer_id, inbound.accepted, inbound.refused, time_ms=T0)
    return got


def gene(key: NodeKey, name: str, domain: str) -> Gene:
    return Gene.create(key, domain=domain, name=name, codons=[Codon.simple("s11", ">", 1.0)],
                       action="inspect", purpose="p", hlc=T0 << 16)


@pytest.fixture
def orgs(tmp_path: Path) -> Iterator[tuple[Org, Org]]:
    acme = Org(tmp_path, ACME, "acme", "eu-west")
    bob = Org(tmp_path, BOBCO, "bobco", "eu-west")
    acme.store.set_peer(bob.info)
    bob.store.set_peer(acme.info)
    yield acme, bob
    acme.cortex.close()
    bob.cortex.close()


def test_two_orgs_agree_share_one_domain_revoke_and_audit(orgs: tuple[Org, Org]) -> None:
    acme, bob = orgs
    acme.cortex.put_genes([gene(ACME, "hot", "turbofan"), gene(ACME, "credit", "loan")])
    # Acme proposes; nothing flows until Bob accepts.
    acme.store.share(rule_from_options("org:bobco", "turbofan"), ledger=acme.ledger, hlc=1)
    assert [a.state for a in acme.store.agreements()] == [AgreementState.PROPOSED]
    acme.deliver_to(bob)
    assert sync(acme, bob) == []
    # Bob's matching share is the acceptance: effective on both sides, on both ledgers.
    bob.store.share(rule_from_options("org:acme", "turbofan"), ledger=bob.ledger, hlc=2)
    bob.deliver_to(acme)
    for side in (acme, bob):
        (agreement,) = side.store.agreements()
        assert agreement.state is AgreementState.EFFECTIVE and agreement.flows == ("out", "in")
        assert [r[0] for r in side.ledger.records] == ["agreement"]
    # A newly effective agreement is a backfill: the receiver pulls the feed from the start
    # again (the node does this, or range reconciliation for the domain).
    bob.cortex.set_checkpoint(ACME.peer_id, 0)
    got = sync(acme, bob)
    assert [g.domain for g in got] == ["turbofan"]
    assert bob.cortex.require_gene(got[0].id).status is GeneStatus.ADAPTATION_PENDING
    # Revoke: stops at once, tells Bob, recorded on the ledger; Bob marks the genes revoked.
    acme.store.revoke(Subject.parse("org:bobco"), "turbofan", ledger=acme.ledger, hlc=3)
    assert acme.ledger.records[-1][0] == "revocation"
    (outcome,) = acme.deliver_to(bob)
    assert outcome.revoked_domain == "turbofan"
    assert bob.desk.mark_revoked(ACME.peer_id, "turbofan") == [got[0].id]
    assert bob.store.agreements()[0].state is AgreementState.REVOKED
    acme.cortex.put_gene(gene(ACME, "cold", "turbofan"))
    assert sync(acme, bob) == []
    # The audit export tells the story on both sides, and both chains verify.
    sent = json.loads(acme.audit.export("json"))
    kinds = [r["kind"] for r in sent]
    assert kinds.count(AuditKind.GENE_SENT) == 1 and AuditKind.AGREEMENT in kinds
    (out,) = [r for r in sent if r["kind"] == AuditKind.GENE_SENT]
    assert out["peer"] == BOBCO.peer_id and out["rule"] == "allow:both:turbofan:org:bobco"
    received = bob.audit.export("csv").splitlines()
    assert received[0].startswith("index,time_ms,kind")
    assert sum(AuditKind.GENE_RECEIVED in line for line in received) == 1
    assert acme.audit.verify().ok and bob.audit.verify().ok
    assert acme.audit.peers_sent(got[0].id) == [BOBCO.peer_id]


def test_proposals_from_the_wrong_sender_or_to_someone_else_are_refused(
        orgs: tuple[Org, Org]) -> None:
    acme, bob = orgs
    acme.store.share(rule_from_options("org:bobco", "turbofan"), hlc=1)
    ((_, data),) = acme.store.outbox(BOBCO.peer_id)
    with pytest.raises(ProposalError):
        bob.store.receive_proposal(data, key_from_int(9).peer_id)
    with pytest.raises(ProposalError):
        acme.store.receive_proposal(data, ACME.peer_id)  # addressed to Bob, not Acme
    assert bob.store.agreements() == [] and bob.store.remote_rules() == {}


def test_anonymised_share_is_audited_with_its_source(orgs: tuple[Org, Org]) -> None:
    acme, bob = orgs
    original = gene(ACME, "named-by-tenant-7", "turbofan")
    acme.cortex.put_gene(original)
    acme.store.share(rule_from_options("org:bobco", "turbofan", anonymize=True), hlc=1)
    bob.store.share(rule_from_options("org:acme", "turbofan"), hlc=1)
    acme.deliver_to(bob)
    bob.deliver_to(acme)
    (got,) = sync(acme, bob)
    assert got.id != original.id and got.name.startswith("anon-")
    (record,) = acme.audit.records(kind=AuditKind.GENE_SENT)
    assert record.detail["source_id"] == original.id and record.detail["anonymized"] is True
    assert acme.audit.peers_sent(original.id) == [BOBCO.peer_id]


def test_failed_write_leaves_policy_and_audit_unchanged(orgs: tuple[Org, Org]) -> None:
    acme, _ = orgs
    before = (acme.store.rules(), len(acme.audit))
    assert acme.store.revoke(Subject.parse("org:nobody"), "turbofan") == []
    assert (acme.store.rules(), len(acme.audit)) == before


# -- audit chain ------------------------------------------------------------------------


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    cortex = Cortex.open(tmp_path / "c")
    log = AuditLog(cortex)
    for i in range(6):
        log.append(AuditKind.POLICY, rule=f"r{i}", detail={"n": i}, time_ms=T0 + i)
    yield log
    cortex.close()


def _raw(log: AuditLog, index: int) -> bytes:
    with log.cortex.env.begin() as txn:
        return txn.get(struct.pack(">Q", index), db=log.db)


def _put_raw(log: AuditLog, index: int, value: bytes | None) -> None:
    db = log.cortex.open_db(AUDIT_DB)
    with log.cortex.env.begin(write=True) as txn:
        if value is None:
            txn.delete(struct.pack(">Q", index), db=db)
        else:
            txn.put(struct.pack(">Q", index), value, db=db)


def test_untouched_chain_verifies_and_exports_since(audit: AuditLog) -> None:
    report = audit.verify()
    assert report.ok and report.size == 6 and report.head == audit.head()[1]
    assert [r["index"] for r in json.loads(audit.export("json", since_ms=T0 + 4))] == [4, 5]


@pytest.mark.parametrize("offset", [5, 20, -40, -3])
def test_a_flipped_byte_is_found_at_its_index(audit: AuditLog, offset: int) -> None:
    raw = bytearray(_raw(audit, 2))
    raw[offset] ^= 0x01
    _put_raw(audit, 2, bytes(raw))
    report = audit.verify()
    assert not report.ok and report.bad_index == 2, report


def test_a_removed_record_is_found(audit: AuditLog) -> None:
    _put_raw(audit, 3, None)
    report = audit.verify()
    assert report.bad_index == 3 and "missing" in report.reason


def test_a_rewritten_record_with_a_fresh_hash_breaks_the_next_link(audit: AuditLog) -> None:
    stored = canonical.decode(_raw(audit, 1))
    stored["body"]["rule"] = "forged"
    from gd.node.store.audit import chain_hash

    stored["hash"] = chain_hash(stored["prev"], stored["body"])
    _put_raw(audit, 1, canonical.encode(stored))
    report = audit.verify()
    assert report.bad_index == 2 and "link" in report.reason


def test_bad_export_format_is_refused(audit: AuditLog) -> None:
    from gd.genome import ValidationError

    with pytest.raises(ValidationError):
        audit.export("xml")


def test_a_peer_met_later_gets_the_rules_that_match_it(tmp_path: Path) -> None:
    acme = Org(tmp_path, ACME, "acme", "eu-west")
    try:
        assert acme.store.share(rule_from_options("org:bobco", "turbofan"), hlc=1) == []
        bob = PeerInfo(BOBCO.peer_id, "bobco", "eu-west")
        assert acme.store.set_peer(bob, hlc=2) == 1
        assert acme.store.set_peer(bob, hlc=3) == 0  # a second handshake re-proposes nothing
        assert acme.store.set_peer(PeerInfo(key_from_int(9).peer_id, "other", "eu-west")) == 0
        assert len(acme.store.outbox(BOBCO.peer_id)) == 1
        assert acme.store.peer(BOBCO.peer_id) == bob
    finally:
        acme.cortex.close()
