"""Seeded whole-cluster simulation of the Raft core (see raftsim.py for the invariants).

`SEEDS=N` runs N seeds per layout (default below keeps the file well under a minute on
two cores); `SEED_START` picks the first. A failure's message names its seed and the
command that replays it exactly.
"""

from __future__ import annotations

import os

import pytest
import raftsim  # tests/sim is on pytest's pythonpath

from gd.ledger import raft_log

DEFAULT_SEEDS = 100
SEEDS = int(os.environ.get("SEEDS", DEFAULT_SEEDS))
SEED_START = int(os.environ.get("SEED_START", 0))

LAYOUTS = {
    "3-voters": raftsim.SimConfig(voters=3),
    "5-voters-1-learner": raftsim.SimConfig(voters=5, learners=1, conf_change_rate=0.01),
}


@pytest.mark.slow
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_no_committed_entry_is_lost_or_reordered_under_faults(layout):
    config = LAYOUTS[layout]
    for seed in range(SEED_START, SEED_START + SEEDS):
        sim = raftsim.run_seed(seed, config)
        assert sim.committed, f"seed {seed} committed nothing"


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
