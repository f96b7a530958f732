"""Seeded whole-cluster simulation of the Raft core (see raftsim.py for the invariants).

`SEEDS=N` runs N seeds per layout (default below keeps the file well under a minute on
two cores); `SEED_START` picks the first. A failure's message names its seed and the
command that replays it exactly.
"""

from __future__ import annotations

import os

import pytest
import raftsim  # tests/sim is on pytest's pythonpath

from gd.ledger import raft, raft_log

DEFAULT_SEEDS = 100
SEEDS = int(os.environ.get("SEEDS", DEFAULT_SEEDS))
SEED_START = int(os.environ.get("SEED_START", 0))

LAYOUTS = raftsim.LAYOUTS
MEMBERSHIP = raftsim.SimConfig(voters=3, learners=1, spares=2, voter_change_rate=0.02)


@pytest.mark.slow
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_no_committed_entry_is_lost_or_reordered_under_faults(layout):
    config = LAYOUTS[layout]
    voter_changes = 0
    for seed in range(SEED_START, SEED_START + SEEDS):
        sim = raftsim.run_seed(seed, config)
        assert sim.committed, f"seed {seed} committed nothing"
        voter_changes += sim.voter_changes
    if config.voter_change_rate:
        assert voter_changes >= SEEDS, "the voter set hardly ever changed"


def test_the_simulation_catches_a_broken_election_rule_and_replays_it(monkeypatch):
    # Granting votes to candidates with stale logs breaks leader completeness; the
    # simulator must notice, and the same seed must fail the same way again.
    monkeypatch.setattr(raft_log.RaftLog, "is_up_to_date", lambda self, index, term: True)
    config = raftsim.SimConfig(voters=3, steps=800)
    failures = []
    for seed in range(10):
        try:
            raftsim.run_seed(seed, config)
        except (raftsim.SimFailure, raft_log.RaftRemoteError) as exc:
            failures.append((seed, str(exc)))
            break
    assert failures, "a broken vote rule went unnoticed"
    seed, message = failures[0]
    with pytest.raises((raftsim.SimFailure, raft_log.RaftRemoteError)) as again:
        raftsim.run_seed(seed, config)
    assert str(again.value) == message


def test_same_seed_same_history():
    config = raftsim.SimConfig(voters=3, steps=400)
    first, second = raftsim.run_seed(11, config), raftsim.run_seed(11, config)
    assert first.log == second.log and first.committed == second.committed


def test_membership_changes_really_change_quorums():
    # A few seeds of the membership layout go through voter sets of several sizes
    # (quorums of 1 and 2 were in force), with leaders proposing their own removal.
    sizes: set[int] = set()
    leader_removals = 0
    for seed in range(5):
        sim = raftsim.run_seed(seed, MEMBERSHIP)
        sizes |= {len(conf.voters) for conf in sim.confs[1:]}
        leader_removals += sum(1 for line in sim.log if line.startswith("conf REMOVE_NODE")
                               and line.split()[2] == line.split()[4])
    assert {1, 2, 3} <= sizes
    assert leader_removals > 0


def test_the_simulation_catches_a_leader_leaving_with_a_longer_log(monkeypatch):
    # The bug the membership layout found (see test_raft_scenarios): a leader that kept
    # taking proposals after proposing its own removal could leave the rest unable to
    # elect. With the fix undone, some early seed must fail the liveness check.
    monkeypatch.setattr(raft.RaftNode, "_removes_self", lambda self, entry: False)
    for seed in range(20):
        try:
            raftsim.run_seed(seed, MEMBERSHIP)
        except raftsim.SimFailure as exc:
            assert "no single leader" in str(exc) or "applied" in str(exc)
            return
    pytest.fail("a leader leaving with a longer log went unnoticed")


def test_the_simulation_catches_a_two_of_four_commit(monkeypatch):
    # Counting 2 of 4 voters as a quorum lets both sides of a 2|2 partition commit:
    # the 4-voter layout must see state machine safety (or leader completeness) break.
    def bad_commit(self) -> bool:
        if not self.conf.voters:
            return False
        matches = sorted((self.progress[v].match if v in self.progress else 0
                          for v in self.conf.voters), reverse=True)
        candidate = matches[(len(matches) - 1) // 2]
        if candidate > self.log.committed and self.log.term(candidate) == self.term:
            self.log.commit_to(candidate)
            return True
        return False

    monkeypatch.setattr(raft.RaftNode, "_maybe_commit", bad_commit)
    monkeypatch.setattr(raft.RaftNode, "_quorum", lambda self: max(1, len(self.conf.voters) // 2))
    config = LAYOUTS["4-voters-changing"]
    for seed in range(30):
        try:
            raftsim.run_seed(seed, config)
        except (raftsim.SimFailure, raft_log.RaftRemoteError):
            return
    pytest.fail("a 2-of-4 quorum went unnoticed")
