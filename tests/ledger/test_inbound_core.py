"""The inbound `/gd/raft` conversation core (gd.ledger.inbound_core): frame checks,
membership, fetch scope, the queue bound and learner slots — fed by hand, no I/O."""

from __future__ import annotations

import pytest
from gd_testkit import key_from_int

from gd.ledger.inbound_core import (
    LEARNER_IDLE_S,
    Dropped,
    HeardHead,
    InboundCore,
    Misbehaved,
    Note,
    ServeFetch,
    Wake,
    link_targets,
)
from gd.ledger.ledger_frames import LedgerChunk, LedgerFetch, LedgerGossip, RaftFrame
from gd.ledger.raft import RaftConfig, RaftNode
from gd.ledger.raft_messages import Heartbeat
from gd.ledger.raft_storage import bootstrap_state

ME, VOTER, OTHER, L1, L2, L3 = (key_from_int(i).peer_id for i in range(1, 7))


def leader(voters: tuple[str, ...] = (ME,)) -> RaftNode:
    """A single-voter region's node, elected and with its first entries committed."""
    node = RaftNode(ME, bootstrap_state(voters), RaftConfig(seed=7))
    for _ in range(100):
        node.tick()
        while node.has_ready():
            node.advance(node.ready())
        if node.is_leader and node.log.committed == node.log.last_index():
            return node
    raise AssertionError("no leader after 100 ticks")


def commit_all(node: RaftNode) -> None:
    while node.has_ready():
        node.advance(node.ready())


def core(**kw: object) -> InboundCore:
    return InboundCore(ME, region="eu", voters=frozenset({ME, VOTER}), started=0.0,
                       **kw)  # type: ignore[arg-type]


def frame(frm: str, to: str = ME, term: int = 1) -> RaftFrame:
    return RaftFrame(Heartbeat(frm, to, term))


def test_a_members_raft_frame_is_queued_and_wakes_the_loop() -> None:
    node, c = leader(), core()
    assert c.receive(node, VOTER, True, frame(VOTER), 0.0) == [Wake()]
    assert len(c.queue) == 1 and c.queue[0].frm == VOTER


@pytest.mark.parametrize(("msg", "why"), [
    (Heartbeat(OTHER, ME, 1), "on " + VOTER[:8]),
    (Heartbeat(VOTER, OTHER, 1), "sent to us"),
])
def test_a_frame_that_lies_is_the_peers_fault(msg: Heartbeat, why: str) -> None:
    # (A frame that does not decode never reaches the core: tests/ledger/test_raft_frames.)
    node, c = leader(), core()
    [action] = c.receive(node, VOTER, True, RaftFrame(msg), 0.0)
    assert isinstance(action, Misbehaved) and why in action.error.message
    assert not c.queue


def test_frames_from_non_members_and_past_the_queue_bound_are_dropped() -> None:
    node, c = leader(), core(max_queue=2)
    # Certified for another region, or in the region but not in the Raft config.
    assert c.receive(node, VOTER, False, frame(VOTER), 0.0) == [Dropped("not_member")]
    assert c.receive(node, OTHER, True, frame(OTHER), 0.0) == [Dropped("not_member")]
    assert c.receive(node, VOTER, True, frame(VOTER), 0.0) == [Wake()]
    assert c.receive(node, VOTER, True, frame(VOTER), 0.0) == [Wake()]
    assert c.receive(node, VOTER, True, frame(VOTER), 0.0) == [Dropped("inbound_full")]
    assert len(c.queue) == 2


def test_fetches_are_served_to_members_only_and_must_be_ranges() -> None:
    node, c = leader(), core()
    assert c.receive(node, OTHER, True, LedgerFetch(start=2, stop=9), 0.0) == \
        [ServeFetch(2, 9)]
    dropped, refused = c.receive(node, OTHER, False, LedgerFetch(start=0, stop=9), 0.0)
    assert dropped == Dropped("not_member")
    assert isinstance(refused, Misbehaved) and "non-member of eu" in refused.error.message
    for start, stop in ((-1, 3), (5, 4)):
        [bad] = c.receive(node, OTHER, True, LedgerFetch(start=start, stop=stop), 0.0)
        assert isinstance(bad, Misbehaved) and "range" in bad.error.message


def test_a_frame_of_the_wrong_kind_is_the_peers_fault() -> None:
    node, c = leader(), core()
    [bad] = c.receive(node, OTHER, True, LedgerChunk(start=0, entries=(), size=0), 0.0)
    assert isinstance(bad, Misbehaved) and "unexpected gd.raft.chunk" in bad.error.message


def test_gossip_hands_members_heads_on_and_asks_for_a_learner_slot() -> None:
    node, c = leader(), core()
    voters = (ME, VOTER)
    actions = c.receive(node, L1, True, LedgerGossip(head=b"h", voters=voters), 0.0)
    assert actions == [Wake(), HeardHead(b"h", L1)]
    assert list(c.queue) == [L1]
    # A non-member's head is not looked at; other voters configured: no slot asked.
    assert c.receive(node, L2, False, LedgerGossip(head=b"h", voters=voters), 0.0) == []
    assert c.receive(node, L2, True, LedgerGossip(head=b"", voters=(ME,)), 0.0) == []
    assert list(c.queue) == [L1]
    notes = c.step_all(node, 1.0)
    assert notes == [Note("raft.add_learner", {"peer": L1})]
    commit_all(node)
    assert node.conf.learners == {L1}


def test_full_learner_slots_evict_only_a_learner_idle_long_enough() -> None:
    node, c = leader(), core(max_learners=2)
    voters = (ME, VOTER)
    for peer in (L1, L2):
        c.receive(node, peer, True, LedgerGossip(head=b"", voters=voters), 0.0)
        c.step_all(node, 0.0)
        commit_all(node)
    assert node.conf.learners == {L1, L2}
    # L2 keeps gossiping, L1 falls silent.
    c.receive(node, L2, True, LedgerGossip(head=b"", voters=voters), LEARNER_IDLE_S - 1)
    c.receive(node, L3, True, LedgerGossip(head=b"", voters=voters), LEARNER_IDLE_S - 1)
    assert c.step_all(node, LEARNER_IDLE_S - 1) == [Dropped("learners_full")]
    c.receive(node, L3, True, LedgerGossip(head=b"", voters=voters), LEARNER_IDLE_S)
    assert c.step_all(node, LEARNER_IDLE_S) == [Note("raft.evict_learner", {"peer": L1})]
    commit_all(node)
    assert node.conf.learners == {L2}
    c.receive(node, L3, True, LedgerGossip(head=b"", voters=voters), LEARNER_IDLE_S + 1)
    c.step_all(node, LEARNER_IDLE_S + 1)
    commit_all(node)
    assert node.conf.learners == {L2, L3}


def test_a_follower_does_not_add_learners() -> None:
    node = RaftNode(ME, bootstrap_state((ME, VOTER)), RaftConfig(seed=1))
    c = core()
    assert c.receive(node, L1, True, LedgerGossip(head=b"", voters=(ME, VOTER)), 0.0) == []
    assert not c.queue
    c.queue.append(L1)  # queued while leading, stepped after losing it
    assert c.step_all(node, 0.0) == []
    commit_all(node)
    assert node.conf.learners == frozenset()


def test_link_targets_are_members_voters_and_connected_region_peers() -> None:
    assert link_targets(ME, {ME, VOTER}, {VOTER, OTHER}, [L1, ME]) == {VOTER, OTHER, L1}
