"""The Raft simulator's settings and records (`raftsim.py` runs them): what a run may do
(`SimConfig`, and the `LAYOUTS` that `make sim` sweeps), what it keeps per node
(`SimNode`), and how it fails (`SimFailure`, its message starting with the seed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gd.ledger.raft import RaftNode
from gd.ledger.raft_records import Entry
from gd.ledger.raft_storage import MemoryRaftStorage


class SimFailure(AssertionError):
    """An invariant broke; the message names the seed and the step."""


@dataclass
class SimNode:
    node_id: str
    storage: MemoryRaftStorage
    raft: RaftNode | None
    applied: dict[int, Entry] = field(default_factory=dict)  # the "state machine"
    applied_to: int = 0
    snapshot_index: int = 0
    # The log as `check_log_matching` last saw it: (snapshot index, snapshot term, a copy
    # of the entries). An unchanged log holds no new fact to check.
    matched: tuple[int, int, list[Entry]] | None = None
    # (its commit index, the cluster's top committed index) at the last committed-prefix
    # check of an unchanged log: the same pair on the same log is the same check.
    prefix_checked: tuple[int, int] | None = None


@dataclass(frozen=True)
class SimConfig:
    voters: int = 3
    learners: int = 0
    steps: int = 1500
    crash_rate: float = 0.004
    restart_rate: float = 0.05
    partition_rate: float = 0.006
    heal_rate: float = 0.03
    drop_rate: float = 0.05
    duplicate_rate: float = 0.03
    propose_rate: float = 0.15
    compact_every: int = 40  # compact a node's log once it applied this many entries
    conf_change_rate: float = 0.0  # chance per step the leader adds/removes a learner
    spares: int = 0  # nodes outside the founding configuration, started empty
    voter_change_rate: float = 0.0  # chance per step the leader changes the voter set
    min_voters: int = 1  # removals never go below this many voters
    crash_mid_ready_rate: float = 0.3  # share of crashes between persist and send
    crash_after_vote_rate: float = 0.15  # crash right after granting a vote (tests its fsync)
    leader_crash_rate: float = 0.004  # extra crashes aimed at the leader
    vary: bool = True  # draw timeouts and flow-control limits from the seed too


# The layouts `make sim` sweeps (tests/sim/test_raft_sim.py and sweep.py run each).
LAYOUTS: dict[str, SimConfig] = {
    "3-voters": SimConfig(voters=3),
    "5-voters-1-learner": SimConfig(voters=5, learners=1, conf_change_rate=0.01),
    # The voter set changes one node at a time under faults: quorums grow and shrink
    # between 1 and 6 voters, leaders remove themselves, spares join empty.
    "changing-voters": SimConfig(voters=3, learners=1, spares=2, voter_change_rate=0.02),
    # Four voters (quorum 3) that never drop below two: 2-of-4 partitions happen.
    "4-voters-changing": SimConfig(voters=4, spares=1, voter_change_rate=0.01,
                                   min_voters=2),
}
