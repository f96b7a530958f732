"""The head-gossip core (gd.ledger.gossip_core): which heads are kept, held for later or
refused, and which alarms are raised — driven by hand against an in-memory Merkle tree
standing in for our log. No I/O, no clock."""

from __future__ import annotations

import dataclasses

import pytest
from gd_testkit import key_from_int

from gd.ledger.gossip_core import (
    MAX_FUTURE_HEADS,
    MAX_PROOF_CHECKS,
    CheckHead,
    GossipAction,
    GossipCore,
    NeedSize,
    ProveConsistency,
    RaiseAlarm,
    StoreHead,
)
from gd.ledger.merkle import MemoryNodeStore, MerkleTree
from gd.ledger.sth import SignedTreeHead
from gd.protocol.errors import RemoteProtocolError

LOG = "region:eu"
ME, LEADER, OUTSIDER = key_from_int(1), key_from_int(2), key_from_int(3)
VOTERS = frozenset({ME.peer_id, LEADER.peer_id})


def tree(n: int, tag: bytes = b"x") -> MerkleTree:
    t = MerkleTree(MemoryNodeStore())
    for i in range(n):
        t.append_data(tag + bytes([i]))
    return t


def head(t: MerkleTree, size: int, key=LEADER, log_id: str = LOG) -> SignedTreeHead:
    return SignedTreeHead.create(key, size, t.root(size), 1000 + size, log_id)


class Driver:
    """The I/O the driver does, against `log` (a Merkle tree of our entries)."""

    def __init__(self, core: GossipCore, log: MerkleTree, size: int) -> None:
        self.core, self.log, self.size = core, log, size
        self.stored: list[int] = []
        self.alarms: list[RaiseAlarm] = []
        self.proofs = 0

    def run(self, actions: list[GossipAction]) -> None:
        todo = list(actions)
        for _ in range(1000):
            if not todo:
                return
            a = todo.pop(0)
            if isinstance(a, CheckHead):
                root = self.log.root(a.head.size) if a.head.size <= self.size else None
                todo += self.core.head_checked(a.head, a.source, size=self.size, root=root,
                                               now_ms=5)
            elif isinstance(a, StoreHead):
                self.stored.append(a.head.size)
            elif isinstance(a, NeedSize):
                todo += self.core.proofs_due(self.size)
            elif isinstance(a, ProveConsistency):
                self.proofs += 1
                todo += self.core.proved(a.request, self.log.consistency_proof(
                    a.request.old.size, a.request.new.size))
            elif isinstance(a, RaiseAlarm):
                self.alarms.append(a)
        raise AssertionError("actions did not settle")


def test_a_head_our_log_agrees_with_is_stored_and_gossiped_on() -> None:
    log = tree(8)
    core = GossipCore(ME, log_id=LOG, voters=VOTERS)
    d = Driver(core, log, 8)
    d.run(core.heard(head(log, 5).encode(), LEADER.peer_id))
    assert d.stored == [5] and not d.alarms
    assert SignedTreeHead.decode(core.gossip().head).size == 5
    assert core.gossip().voters == tuple(sorted(VOTERS))
    d.run(core.heard(head(log, 3).encode(), LEADER.peer_id))
    assert d.stored == [5, 3]
    assert SignedTreeHead.decode(core.gossip().head).size == 5  # never goes back


def test_a_head_beyond_our_log_is_held_until_we_reach_it() -> None:
    log = tree(8)
    core = GossipCore(ME, log_id=LOG, voters=VOTERS)
    d = Driver(core, log, 4)
    d.run(core.heard(head(log, 7).encode(), LEADER.peer_id))
    assert d.stored == []
    d.size = 6
    d.run(core.signed(None, 6))
    assert d.stored == []
    d.size = 8
    d.run(core.signed(None, 8))
    assert d.stored == [7]


def test_held_heads_are_bounded() -> None:
    log = tree(MAX_FUTURE_HEADS + 10)
    core = GossipCore(ME, log_id=LOG, voters=VOTERS)
    d = Driver(core, log, 0)
    for size in range(1, MAX_FUTURE_HEADS + 10):
        d.run(core.heard(head(log, size).encode(), LEADER.peer_id))
    d.size = MAX_FUTURE_HEADS + 10
    d.run(core.signed(None, d.size))
    assert len(d.stored) == MAX_FUTURE_HEADS


def test_a_root_that_disagrees_with_our_log_raises_one_alarm() -> None:
    ours, theirs = tree(6), tree(6, b"y")
    core = GossipCore(ME, log_id=LOG, voters=VOTERS)
    d = Driver(core, ours, 6)
    forked = head(theirs, 4)
    d.run(core.heard(forked.encode(), LEADER.peer_id))
    d.run(core.heard(forked.encode(), LEADER.peer_id))  # the same pair: no new alarm
    assert d.stored == [] and len(d.alarms) == 1 and core.alarms_raised == 1
    alarm = d.alarms[0].alarm
    assert alarm.kind.value == "same_size_different_root"
    assert alarm.first.signer == ME.peer_id and alarm.first.root == ours.root(4)
    assert alarm.first.timestamp == 5  # the time passed in


def test_heads_that_do_not_extend_each_other_raise_an_alarm() -> None:
    a, b = tree(10), tree(10, b"y")
    core = GossipCore(ME, log_id=LOG, voters=VOTERS)
    d = Driver(core, a, 10)
    d.run(core.signed(head(a, 3, ME), 10))
    # A leader's head for size 8 of another history: it fits neither our log (root
    # differs) nor our head for size 3 (not an extension): both are alarms.
    d.run(core.heard(head(b, 8).encode(), LEADER.peer_id))
    kinds = sorted(x.alarm.kind.value for x in d.alarms)
    assert kinds == ["not_an_extension", "same_size_different_root"]


def test_consistency_checks_are_bounded_per_call() -> None:
    log = tree(40)
    core = GossipCore(ME, log_id=LOG, voters=VOTERS)
    d = Driver(core, log, 0)  # every head is beyond our log: proofs wait
    for size in range(1, 3 * MAX_PROOF_CHECKS):
        d.run(core.heard(head(log, size).encode(), LEADER.peer_id))
    assert d.proofs == 0
    d.size = 40
    d.run(core.signed(None, 40))
    assert d.proofs == MAX_PROOF_CHECKS and not d.alarms


def test_bad_heads_are_the_peers_fault_and_other_logs_are_ignored() -> None:
    log = tree(4)
    core = GossipCore(ME, log_id=LOG, voters=VOTERS)
    with pytest.raises(RemoteProtocolError, match="bad gossiped head"):
        core.heard(b"\x93junk", LEADER.peer_id)
    with pytest.raises(RemoteProtocolError, match="gossiped head"):
        core.heard(head(log, 2, OUTSIDER).encode(), OUTSIDER.peer_id)  # not a voter
    forged = dataclasses.replace(head(log, 2), root=bytes(32))
    with pytest.raises(RemoteProtocolError):
        core.heard(forged.encode(), LEADER.peer_id)
    assert core.heard(head(log, 2, log_id="region:us").encode(), LEADER.peer_id) == []
