"""The sovereign receiver view judges each pulled batch on the policy as it stands when
the batch arrives, though the puller's group commit audits only once per group: a
consent given, or a revocation made, between two batches of one group counts for the
second (tests/sim/fedsim.py seed 6 found the snapshot spanning the whole group)."""

from __future__ import annotations

from typing import Any

from gd_testkit import key_from_int, make_gene

from gd.node.services.sovereignty_views import SovereignReceiverView
from gd.protocol.policy_rules import PeerInfo, ShareRule, Subject
from gd.protocol.sovereignty import PolicySet

A, B = key_from_int(31), key_from_int(32)
ME = PeerInfo(A.peer_id, "acme", "eu-west")
BOB = PeerInfo(B.peer_id, "bobco", "eu-west")
OURS = (ShareRule(Subject.parse(f"peer:{B.peer_id}"), "turbofan"),)
AGREED = PolicySet(ME, OURS, (), {B.peer_id: (ShareRule(Subject.parse("org:acme"),
                                                        "turbofan"),)})
NOT_AGREED = PolicySet(ME, OURS)


class Service:
    """What the view reads from `SovereigntyService`: the store's current policy and the
    audit log it writes the batch's records to."""

    def __init__(self, policy: PolicySet) -> None:
        self.policy = policy
        self.store = self
        self.audit = self
        self.records: list[tuple[int, int]] = []

    def policies(self) -> PolicySet:
        return self.policy

    def record_received(self, sender: str, accepted: list[Any], refused: list[Any]) -> int:
        self.records.append((len(accepted), len(refused)))
        return len(accepted) + len(refused)


def test_a_consent_given_between_two_batches_of_a_group_counts_for_the_second() -> None:
    svc = Service(NOT_AGREED)
    view = SovereignReceiverView(svc, BOB)  # type: ignore[arg-type]
    view.begin_batch()
    assert not view.accept(make_gene(B, name="first"))
    svc.policy = AGREED  # Bob's share arrives while the group is staged
    view.begin_batch()
    assert view.accept(make_gene(B, name="second"))
    assert view.finish_batch() == 2 and svc.records == [(1, 1)]


def test_a_revocation_made_between_two_batches_of_a_group_stops_the_second() -> None:
    svc = Service(AGREED)
    view = SovereignReceiverView(svc, BOB)  # type: ignore[arg-type]
    view.begin_batch()
    assert view.accept(make_gene(B, name="first"))
    svc.policy = NOT_AGREED  # Bob revoked; we learnt it mid-group
    view.begin_batch()
    assert not view.accept(make_gene(B, name="second"))
    assert view.finish_batch() == 2
    assert svc.records == [(1, 1)]


def test_within_one_batch_the_policy_is_one_snapshot() -> None:
    svc = Service(AGREED)
    view = SovereignReceiverView(svc, BOB)  # type: ignore[arg-type]
    view.begin_batch()
    assert view.accept(make_gene(B, name="first"))
    svc.policy = NOT_AGREED  # a batch is verified as one: no change inside it
    assert view.accept(make_gene(B, name="second"))
