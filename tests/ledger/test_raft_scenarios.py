"""The Raft paper's scenarios, as transcripts on the sans-I/O core: elections, crashes
around a commit, Figure 8, log repair, pre-vote, check-quorum and snapshots.

`Net` (tests/support/raft_scenario_net.py) holds a few `RaftNode`s over
`MemoryRaftStorage` and delivers messages only when a test says so. Bootstrap writes
the founding configuration as entries 1..n at term 1, so with three voters a first
leader's no-op lands at index 4, with five at index 6. Membership scenarios are in
test_raft_membership_scenarios.py.
"""

from __future__ import annotations

import pytest
from raft_scenario_net import Net

from gd.ledger.raft import RaftConfig
from gd.ledger.raft_messages import (
    AppendEntries,
    InstallSnapshot,
    RaftMessage,
)
from gd.ledger.raft_records import (
    ProposalDropped,
    RaftEntryKind,
    RaftRole,
)
from gd.ledger.raft_sessions import RequestState

# ---------------------------------------------------------------------------- election


def test_election_transcript_prevote_then_vote_then_noop_commit():
    net = Net(["a", "b", "c"])
    leader = net.elect("a")
    assert net.trace[:8] == [
        "a->b vote t2 pre", "a->c vote t2 pre",
        "b->a vote_resp t2 pre yes", "c->a vote_resp t2 pre yes",
        "a->b vote t2", "a->c vote t2",
        "b->a vote_resp t2 yes", "c->a vote_resp t2 yes",
    ]
    assert leader.role is RaftRole.LEADER and leader.term == 2
    assert "a->b append t2 prev=3 n=1 commit=3" in net.trace  # the no-op at index 4
    assert all(net.node(n).log.committed == 4 for n in "abc")
    assert [net.node(n).leader for n in "abc"] == ["a", "a", "a"]
    # The vote is durable before the grant was sent.
    assert net.storage["b"].load().hard_state.vote == "a"


def test_election_by_randomized_timeout_is_deterministic_per_seed():
    def run(seed: int) -> tuple[str, int]:
        net = Net(["a", "b", "c"], config=RaftConfig(seed=seed))
        for _ in range(40):
            net.tick()
            if net.leaders():
                break
        (leader,) = net.leaders()
        return leader, net.node(leader).term

    assert run(7) == run(7)
    assert len({run(seed)[0] for seed in range(8)}) > 1  # the seed really matters


def test_split_vote_then_a_later_term_elects_one_leader():
    net = Net(["a", "b", "c", "d"], config=RaftConfig(prevote=False, check_quorum=False))
    net.node("a").campaign()
    net.node("c").campaign()
    net.process()
    # b hears a first, d hears c first: each candidate gets 2 of 4 votes, quorum is 3.
    order = ["a->b", "c->d", "a->c", "a->d", "c->a", "c->b"]
    net.outbox.sort(key=lambda m: order.index(f"{m.frm}->{m.to}"))
    net.deliver()
    assert net.leaders() == []
    assert net.node("a").role is net.node("c").role is RaftRole.CANDIDATE
    assert net.node("a").term == net.node("c").term == 2
    net.tick(times=40)
    (leader,) = net.leaders()
    assert net.node(leader).term >= 3


# ---------------------------------------------------------------------------- crashes


def test_leader_crash_before_commit_loses_only_the_uncommitted_entry():
    net = Net(["a", "b", "c"])
    net.elect("a")
    index = net.node("a").propose(b"x", "client", 1)
    assert index == 5
    net.process()
    assert net.storage["a"].load().entries[-1].data == b"x"  # persisted on a only
    net.crash("a")  # before any append left
    net.tick(["b", "c"], times=30)
    (new,) = net.leaders()
    assert net.node(new).lookup("client", 1).state is RequestState.UNKNOWN
    net.restart("a")
    net.tick(times=3)
    # a's uncommitted x was overwritten by the new leader's no-op at index 5.
    assert all(net.node(n).log.entry(5).kind is RaftEntryKind.NOOP for n in "abc")
    assert all(net.data(n) == [] for n in "abc")
    # The client retries with the same ids and it commits exactly once.
    assert net.node(new).propose(b"x", "client", 1) == 6
    net.deliver()
    net.tick(times=2)
    assert all(net.data(n) == [b"x"] for n in "abc")


def test_leader_crash_after_commit_keeps_the_entry():
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.node("a").propose(b"x", "client", 1)
    net.deliver()
    assert net.data("a") == [b"x"]  # applied on the leader: the client was answered
    net.crash("a")
    net.tick(["b", "c"], times=30)
    (new,) = net.leaders()
    assert net.node(new).lookup("client", 1).state is RequestState.COMMITTED
    net.node(new).propose(b"y", "client", 2)
    net.deliver()
    net.restart("a")
    net.tick(times=3)
    assert all(net.data(n) == [b"x", b"y"] for n in "abc")


# ---------------------------------------------------------------------------- Figure 8


def figure8_setup() -> tuple[Net, int]:
    """Raft paper Figure 8 (a)-(c): S1 of term 4 has replicated its term-2 entry to a
    majority, *and knows it* (acks from s3 and s4 in term 4), but not yet an entry of
    term 4. Only the current-term commit rule keeps that entry uncommitted: counting
    replicas alone would commit it, and (d) shows s5 then overwriting it."""
    names = ["s1", "s2", "s3", "s4", "s5"]
    # One entry per append, so replication can stop between two entries; plain Raft
    # (no pre-vote, no leases) as in the paper.
    net = Net(names, config=RaftConfig(prevote=False, check_quorum=False, max_append_bytes=1))
    net.elect("s1")  # term 2, no-op at 6
    x = net.node("s1").propose(b"x", "client", 1)  # (a) index 7, term 2, to s2 only
    net.deliver(drop=lambda m: isinstance(m, AppendEntries) and m.to != "s2")
    assert x == 7 and net.node("s2").log.term(7) == 2 and net.node("s1").log.committed == 6
    net.crash("s1")
    # (b) s5 wins term 3 with s3, s4 (s2's log is longer, it refuses); its no-op at 7
    # stays on s5 alone.
    net.elect("s5", drop=lambda m: isinstance(m, AppendEntries) and m.frm == "s5")
    assert net.node("s5").is_leader and net.node("s5").term == 3
    assert net.node("s5").log.term(7) == 3
    assert [net.node(n).log.last_index() for n in ("s3", "s4")] == [6, 6]
    net.crash("s5")
    # (c) s1 restarts and wins term 4; it replicates index 7 (term 2) to s3 and s4 and
    # hears both acknowledge it, then stops before its own no-op at 8 (term 4) gets
    # anywhere: s1, s2, s3, s4 hold x, and the leader counts s1, s3, s4 (a majority).
    net.restart("s1")
    net.node("s1").campaign()
    net.deliver(drop=lambda m: isinstance(m, AppendEntries))
    net.node("s1").campaign()
    net.deliver_until(lambda: net.node("s1").is_leader, drop=lambda m: isinstance(m, AppendEntries))
    assert net.node("s1").term == 4
    s1 = net.node("s1")
    catching_up = {"s3": net.node("s3"), "s4": net.node("s4")}

    def hold_back(m: RaftMessage) -> bool:
        # Appends go to s3 and s4 only, each only until it holds index 7 from s1.
        if not isinstance(m, AppendEntries):
            return False
        return m.to not in catching_up or catching_up[m.to].log.term(7) == 2

    net.deliver_until(lambda: all(s1.progress[n].match >= 7 for n in catching_up),
                      drop=hold_back)
    net.deliver(drop=hold_back)  # whatever the acks set off goes no further
    assert all(node.log.last_index() == 7 for node in catching_up.values())
    assert sorted(pr.match for pr in s1.progress.values()) == [0, 0, 7, 7, 8]
    return net, x


def test_figure8_old_term_entry_on_a_majority_is_not_committed():
    net, x = figure8_setup()
    s1 = net.node("s1")
    assert [net.node(n).log.term(x) for n in ("s1", "s2", "s3", "s4")] == [2, 2, 2, 2]
    # On a majority, and the leader knows it, yet not committed: its term is 2, not 4.
    assert s1.log.committed == 6
    assert net.data("s1") == [] and s1.lookup("client", 1).state is RequestState.PENDING
    # (d) s1 crashes; s5 can win (its last term 3 beats 2) and overwrite index 7: that
    # is safe precisely because x was never committed.
    net.crash("s1")
    net.outbox.clear()
    net.restart("s5")
    net.node("s5").campaign()
    net.deliver()
    net.node("s5").campaign()
    net.deliver()
    assert net.node("s5").is_leader
    assert [net.node(n).log.term(7) for n in ("s2", "s3", "s4", "s5")] == [3, 3, 3, 3]
    assert all(b"x" not in net.data(n) for n in ("s2", "s3", "s4", "s5"))


def test_figure8_current_term_entry_commits_the_old_one_beneath_it():
    net, x = figure8_setup()
    # (e) s1 gets its term-4 no-op to the majority: both commit together.
    net.tick(["s1", "s2", "s3", "s4"], times=2)
    assert net.node("s1").log.committed >= 8
    assert net.data("s1") == [b"x"]
    net.crash("s1")
    net.restart("s5")
    net.tick(["s2", "s3", "s4", "s5"], times=60)
    (leader,) = net.leaders()
    assert leader != "s5"  # s5 lacks the committed entries and can never win now
    assert net.node(leader).log.entry(x).data == b"x"


# ---------------------------------------------------------------------------- repair


def test_log_divergence_repair_truncates_a_stale_suffix_with_fast_backtracking():
    names = ["a", "b", "c", "d", "e"]
    net = Net(names, config=RaftConfig(max_append_bytes=1))
    net.elect("a")  # term 2, no-op at 6
    net.isolated = {"a"}
    for i in range(1, 6):
        net.node("a").propose(f"lost{i}".encode(), "old", i)  # 7..11, term 2, never sent
    net.deliver()
    net.isolated = set()
    net.crash("a")
    net.tick(["b", "c", "d", "e"], times=40)
    (first,) = net.leaders()
    for i in range(1, 11):
        net.node(first).propose(f"kept{i}".encode(), "new", i)
    net.deliver()
    # A second new leader starts with every follower's next index at its log's end.
    net.crash(first)
    net.tick([n for n in names if net.nodes[n] is not None], times=40)
    assert len(net.leaders()) == 1
    stale = net.restart("a")
    assert stale.log.last_index() == 11 and stale.log.term(11) == 2
    net.trace.clear()
    net.tick(times=4)
    rejections = [t for t in net.trace if t.startswith("a->") and "reject" in t]
    # The leader's probe at its log's end is refused once; the hint skips the whole
    # stale term-2 run at once instead of walking back one index per round trip.
    assert len(rejections) == 1
    logs = [[(e.term, e.data) for e in net.node(n).log.entries]
            for n in names if net.nodes[n] is not None]
    assert all(log == logs[0] for log in logs)
    assert net.data("a") == [f"kept{i}".encode() for i in range(1, 11)]


def test_reordered_old_append_never_truncates_newer_entries():
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.node("a").propose(b"x", "client", 1)
    net.process()
    first = [m for m in net.outbox if isinstance(m, AppendEntries) and m.to == "b"]
    net.deliver()
    net.node("a").propose(b"y", "client", 2)
    net.deliver()
    b = net.node("b")
    before = list(b.log.entries)
    b.step(first[0])  # a duplicate of an old append arrives late
    assert b.log.entries == before


# ------------------------------------------------------------------ prevote / check-quorum


def test_prevote_keeps_a_partitioned_node_from_disrupting_the_leader():
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.isolated = {"c"}
    net.tick(["c"], times=100)
    assert net.node("c").term == 2  # pre-votes failed, the term never moved
    net.isolated = set()
    net.trace.clear()
    net.tick(times=3)
    assert net.node("a").is_leader and net.node("a").term == 2
    assert not any(" vote t" in t and "pre" not in t for t in net.trace)


def test_without_prevote_a_partitioned_node_forces_an_election():
    net = Net(["a", "b", "c"], config=RaftConfig(prevote=False, check_quorum=False))
    net.elect("a")
    net.isolated = {"c"}
    net.tick(["c"], times=100)
    assert net.node("c").term > 5
    net.isolated = set()
    net.tick(times=40)
    (leader,) = net.leaders()
    assert net.node(leader).term > 5  # the healthy leader was deposed


def test_check_quorum_steps_down_an_isolated_leader():
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.isolated = {"a"}
    net.tick(["a"], times=9)
    assert net.node("a").is_leader  # acks from the last timeout still count
    net.tick(["a"], times=11)
    assert net.node("a").role is RaftRole.FOLLOWER and net.node("a").term == 2
    with pytest.raises(ProposalDropped):
        net.node("a").propose(b"x", "client", 1)  # it no longer knows a leader
    net.tick(["b", "c"], times=40)
    (leader,) = net.leaders()
    assert leader in "bc" and net.node(leader).term == 3
    net.isolated = set()
    net.tick(times=3)
    assert net.node("a").leader == leader


# ---------------------------------------------------------------------------- learners, snapshots


def test_learner_catches_up_via_snapshot_and_never_campaigns():
    net = Net(["a", "b", "c"], learners=["l"])
    net.elect("a")
    net.isolated = {"l"}
    for i in range(1, 31):
        net.node("a").propose(f"e{i}".encode(), "client", i)
        net.deliver()
    a = net.node("a")
    snap = a.compact(b"state-after-30")
    net.storage["a"].compact(snap)
    assert a.log.snapshot_index == snap.index == 35
    assert net.node("l").role is RaftRole.FOLLOWER and net.node("l").term == 2
    net.isolated = set()
    net.trace.clear()
    net.tick(times=3)
    assert "a->l snapshot t2" in net.trace
    learner = net.node("l")
    assert learner.log.snapshot_index == 35
    assert net.applied["l"][0].data == b"state-after-30"
    assert learner.lookup("client", 30).state is RequestState.COMMITTED  # sessions travel
    net.node("a").propose(b"after", "client", 31)
    net.deliver()
    assert net.data("l")[-1] == b"after"
    # Learners never campaign and are not counted in the quorum.
    net.isolated = {"l"}
    net.tick(["l"], times=100)
    assert learner.role is RaftRole.FOLLOWER and learner.term == 2


def test_duplicated_or_stale_snapshot_is_harmless():
    net = Net(["a", "b", "c"])
    net.elect("a")
    for i in range(1, 6):
        net.node("a").propose(b"v", "client", i)
    net.deliver()
    snap = net.node("a").compact(b"s")
    b = net.node("b")
    before = (b.log.committed, list(b.log.entries))
    b.step(InstallSnapshot("a", "b", 2, snapshot=snap))
    net.process()
    assert (b.log.committed, b.log.entries) == before
