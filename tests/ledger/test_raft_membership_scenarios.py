"""The Raft paper's membership scenarios, as transcripts on the sans-I/O core: learners,
promotion and removal one server at a time, forwarding, duplicate proposals, and how
the quorum follows the voter count (`raft_scenario_net.Net`, as in
test_raft_scenarios.py).
"""

from __future__ import annotations

import pytest
from raft_scenario_net import Net

from gd.ledger.raft_messages import (
    AppendEntries,
    Propose,
)
from gd.ledger.raft_records import (
    ConfChange,
    ConfChangeOp,
    Entry,
    ProposalDropped,
    RaftEntryKind,
    RaftRole,
)
from gd.ledger.raft_sessions import RequestState

# ---------------------------------------------------------------------------- membership


def test_membership_add_learner_promote_remove_one_at_a_time():
    net = Net(["a", "b", "c"], joiners=["d"])
    a = net.elect("a")
    assert net.node("d").conf.members == frozenset()
    a.propose_conf_change(ConfChange(ConfChangeOp.ADD_LEARNER, "d"))
    with pytest.raises(ProposalDropped):  # one change at a time
        a.propose_conf_change(ConfChange(ConfChangeOp.REMOVE_NODE, "c"))
    net.deliver()
    net.tick(times=3)
    d = net.node("d")
    assert d.conf.learners == {"d"} and d.log.committed == a.log.committed
    a.propose_conf_change(ConfChange(ConfChangeOp.ADD_VOTER, "d"))  # promote
    net.deliver()
    assert a.conf.voters == {"a", "b", "c", "d"} and d.conf.voters == a.conf.voters
    a.propose_conf_change(ConfChange(ConfChangeOp.REMOVE_NODE, "c"))
    net.deliver()
    assert a.conf.voters == {"a", "b", "d"}
    # With c gone and b down, a and d are a quorum of three.
    net.crash("c")
    net.crash("b")
    a.propose(b"x", "client", 1)
    net.deliver()
    assert net.data("d") == [b"x"]


def test_removed_leader_steps_down_and_the_rest_elect():
    net = Net(["a", "b", "c"])
    a = net.elect("a")
    a.propose_conf_change(ConfChange(ConfChangeOp.REMOVE_NODE, "a"))
    net.deliver()
    assert a.role is RaftRole.FOLLOWER and not a.promotable
    net.tick(times=40)
    (leader,) = net.leaders()
    assert leader in "bc" and net.node(leader).conf.voters == {"b", "c"}


# ------------------------------------------------------------------ forwarding, idempotency


def test_follower_forwards_proposals_to_the_leader():
    net = Net(["a", "b", "c"])
    net.elect("a")
    assert net.node("c").propose(b"via-c", "c-client", 1) is None
    net.process()
    assert isinstance(net.outbox[-1], Propose) and net.outbox[-1].to == "a"
    net.deliver()
    net.tick(times=1)
    assert all(net.data(n) == [b"via-c"] for n in "abc")
    status = net.node("c").lookup("c-client", 1)
    assert status.state is RequestState.COMMITTED and status.index == 5


def test_retry_after_a_lost_forward_commits_exactly_once():
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.node("b").propose(b"x", "cl", 1)
    net.deliver(drop=lambda m: isinstance(m, Propose))  # the forward is lost
    assert net.node("b").lookup("cl", 1).state is RequestState.UNKNOWN
    net.node("b").propose(b"x", "cl", 1)  # the client times out and retries
    net.deliver()
    net.tick(times=1)
    assert net.node("b").lookup("cl", 1).state is RequestState.COMMITTED
    # A second retry after the commit: the leader answers the first index, adds nothing.
    last = net.node("a").log.last_index()
    assert net.node("a").propose(b"x", "cl", 1) == net.node("b").lookup("cl", 1).index
    assert net.node("a").log.last_index() == last
    assert all(net.data(n) == [b"x"] for n in "abc")


def test_committed_duplicates_are_flagged_and_skipped_everywhere():
    # Two copies of one request can both commit when different leaders appended them;
    # here a leader message carries both, as that history would leave them.
    net = Net(["a", "b", "c"])
    net.elect("a")
    b = net.node("b")
    entries = (Entry(2, 5, RaftEntryKind.NORMAL, b"x", "cl", 9),
               Entry(2, 6, RaftEntryKind.NORMAL, b"x", "cl", 9))
    b.step(AppendEntries("a", "b", 2, prev_index=4, prev_term=2, entries=entries, commit=6))
    ready = b.ready()
    assert [e.index for e in ready.committed_entries] == [5, 6]
    assert ready.duplicates == frozenset({6})
    b.advance(ready)
    assert b.lookup("cl", 9).index == 5


def test_leader_removing_itself_takes_no_proposals_so_the_rest_can_elect():
    # Regression (found by the membership simulation): a leader that kept appending
    # after proposing its own removal stepped down with a longer log than the remaining
    # voter, which never heard that the removal committed; still counting the old pair,
    # it needed the departed leader's vote and never got it (its log was shorter).
    net = Net(["a", "b"], learners=["l"])
    a = net.elect("a")
    removal = a.propose_conf_change(ConfChange(ConfChangeOp.REMOVE_NODE, "a"))
    with pytest.raises(ProposalDropped):
        a.propose(b"late", "client", 1)  # leaving: the log must end at the removal
    net.process()
    # b receives the removal and acks it; nothing after that reaches b.
    net.deliver_until(lambda: a.role is not RaftRole.LEADER,
                      drop=lambda m: m.to == "b" and not (
                          isinstance(m, AppendEntries) and m.entries
                          and m.entries[-1].index == removal))
    net.outbox.clear()
    b = net.node("b")
    assert b.log.last_index() == removal and b.log.committed < removal
    assert a.log.last_index() == removal and a.conf.voters == {"b"}
    net.tick(times=60)
    assert net.leaders() == ["b"]
    assert b.conf.voters == {"b"}
    b.propose(b"after", "client", 2)
    net.deliver()
    assert net.data("b") == [b"after"] and net.data("l") == [b"after"]


# ------------------------------------------------------------------ 2 of 4 voters


def test_two_of_four_voters_can_neither_elect_nor_commit():
    net = Net(["a", "b", "c", "d"])
    a = net.elect("a")
    committed = a.log.committed
    net.partition("a,b", "c,d")
    index = a.propose(b"x", "client", 1)
    net.deliver()
    net.tick(times=5)
    # a and b both hold x, but 2 of 4 is no quorum (3 is): it stays uncommitted.
    assert net.node("b").log.term(index) == a.term and a.log.committed == committed
    net.tick(times=40)
    assert net.leaders() == []  # a lost its lease; no side can elect
    assert all(net.data(n) == [] for n in "abcd")
    assert {net.node(n).log.committed for n in "abcd"} == {committed}
    net.partition()
    net.tick(times=60)
    (leader,) = net.leaders()
    assert leader in "ab"  # c and d lack x: the side holding it must win
    assert all(net.data(n) == [b"x"] for n in "abcd")


def test_adding_a_fourth_voter_raises_the_quorum_to_three():
    net = Net(["a", "b", "c"], joiners=["d"])
    a = net.elect("a")
    a.propose_conf_change(ConfChange(ConfChangeOp.ADD_VOTER, "d"))
    net.deliver()
    net.tick(times=2)
    assert all(net.node(n).conf.voters == {"a", "b", "c", "d"} for n in "abcd")
    net.crash("c")
    net.crash("d")
    a.propose(b"x", "client", 1)  # a and b: a majority of the old three, not of four
    net.deliver()
    assert net.data("a") == [] and net.node("b").log.last_index() == a.log.last_index()
    # Nor can a and b shrink back to three: the removal needs 3 of the 4 as well.
    removal = a.propose_conf_change(ConfChange(ConfChangeOp.REMOVE_NODE, "c"))
    net.deliver()
    net.tick(times=5)
    assert a.log.committed < removal and len(a.conf.voters) == 4
    net.restart("d")
    net.tick(times=3)
    assert all(net.data(n) == [b"x"] for n in "abd")
    assert all(net.node(n).conf.voters == {"a", "b", "d"} for n in "abd")


def test_shrinking_four_voters_to_two_one_at_a_time_keeps_every_write():
    net = Net(["a", "b", "c", "d"])
    a = net.elect("a")
    for node_id, request in (("d", 1), ("c", 2)):
        a.propose(f"before-{node_id}".encode(), "client", request)
        a.propose_conf_change(ConfChange(ConfChangeOp.REMOVE_NODE, node_id))
        net.deliver()
        net.tick(times=2)
    assert a.conf.voters == net.node("b").conf.voters == {"a", "b"}
    # 2 of 2 is the quorum now: both are needed, either alone can do nothing.
    net.crash("b")
    a.propose(b"alone", "client", 3)
    net.deliver()
    assert b"alone" not in net.data("a")
    net.restart("b")
    net.tick(times=3)
    assert net.data("a") == net.data("b") == [b"before-d", b"before-c", b"alone"]
