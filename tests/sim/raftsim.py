"""A deterministic simulator for `gd.ledger.raft`: N nodes, one seeded network and clock.

Every node is a `RaftNode` over a `MemoryRaftStorage`. The simulator drives the Ready
contract exactly as `node/` does (persist, then send, then apply, then advance) and
injects faults from one `random.Random(seed)`: crashes that lose everything not
persisted (including a crash between persisting and sending), restarts, partitions,
drops, duplicates and reordering. After every step it checks Raft's safety properties:

* election safety: at most one leader per term, ever;
* log matching: two logs holding an entry with the same index and term hold the same
  entry there and agree on the term just before it (so, by induction, on the prefix);
* state machine safety: every node applied the same entry at each index;
* no committed entry lost or reordered: a node's committed prefix only grows and always
  agrees with every other node's committed prefix;
* leader completeness: a leader's log holds every entry committed anywhere;
* membership: every node's configuration is the one the committed log defines at the
  index it applied, and every leader is a voter of its own configuration.

Membership changes are one at a time (thesis §4.1): with `voter_change_rate` the leader
adds voters (promoting learners or taking in `spares`, nodes outside the founding
configuration that start empty), removes voters (itself included) and adds learners,
so quorums grow and shrink (3 -> 4 -> 2 ...) while the faults go on.

Used by tests/sim/test_raft_sim.py and by `python tests/sim/raftsim.py SEEDS [FIRST]`.
A failure raises `SimFailure` whose message starts with the seed, so it replays exactly.
"""

from __future__ import annotations

import random
import sys
from bisect import bisect_right

from raftsim_config import LAYOUTS, SimConfig, SimFailure, SimNode

from gd.ledger.raft import RaftConfig, RaftNode, Ready
from gd.ledger.raft_messages import RaftMessage, VoteResponse
from gd.ledger.raft_records import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    ProposalDropped,
    RaftEntryKind,
    RaftLocalError,
    RaftRole,
)
from gd.ledger.raft_storage import MemoryRaftStorage, bootstrap_state

__all__ = ["LAYOUTS", "SimConfig", "SimFailure", "SimNode", "Simulation", "run_seed", "run_seeds"]



class Simulation:
    """One seeded run."""

    def __init__(self, seed: int, config: SimConfig | None = None) -> None:
        self.seed = seed
        self.cfg = config or SimConfig()
        self.rng = random.Random(seed)
        self.step_no = 0
        if self.cfg.vary:
            # Small append limits split batches so that a leader can commit an old-term
            # entry's replicas without its own no-op (the Figure 8 situation); small
            # inflight windows exercise flow control and probing.
            self.raft_config = RaftConfig(
                seed=seed,
                election_ticks=self.rng.choice((5, 10)),
                heartbeat_ticks=self.rng.choice((1, 2)),
                max_append_bytes=self.rng.choice((1, 64, 1 << 20)),
                max_inflight=self.rng.choice((1, 4, 256)),
            )
        else:
            self.raft_config = RaftConfig(seed=seed, election_ticks=10, heartbeat_ticks=2)
        voters = [f"v{i}" for i in range(1, self.cfg.voters + 1)]
        learners = [f"l{i}" for i in range(1, self.cfg.learners + 1)]
        spares = [f"s{i}" for i in range(1, self.cfg.spares + 1)]
        self.ids = voters + learners + spares
        boot = bootstrap_state(voters, learners)
        self.nodes: dict[str, SimNode] = {}
        for node_id in self.ids:
            storage = MemoryRaftStorage()
            if node_id not in spares:
                storage.save(boot.hard_state, boot.entries)
            self.nodes[node_id] = SimNode(node_id, storage, RaftNode(node_id, storage.load(),
                                                                      self.raft_config))
        self.network: list[RaftMessage] = []
        # Each distinct message value goes through bytes once per seed; a repeat (the
        # same heartbeat, a retried append) reuses that round trip's result (messages
        # are frozen values, and the codec is a pure function of them).
        self.wire: dict[RaftMessage, RaftMessage] = {}
        self.blocked: set[frozenset[str]] = set()
        self.leaders: dict[int, str] = {}  # term -> the one leader of that term
        self.committed: dict[int, Entry] = {}  # the cluster-wide committed log
        self.top_committed = 0  # its highest index (indices are applied in order)
        # For each committed index, the highest term any node had when it was first
        # applied: the entry was committed in a term no higher, so every leader of a
        # later term must hold it (leader completeness).
        self.commit_term_bound: dict[int, int] = {}
        self.duplicate_flags: dict[int, bool] = {}
        # (index, term) -> (entry, term of the entry before it): log matching.
        self.seen_entries: dict[tuple[int, int], tuple[Entry, int | None]] = {}
        # The configuration the committed log defines, from each change's index on.
        self.conf_indices: list[int] = [0]
        self.confs: list[ConfState] = [ConfState()]
        self.voter_changes = 0  # committed changes of the voter set after founding
        self.founding_entries = len(boot.entries)
        self.next_request = 1
        self.client_requests: dict[int, bytes] = {}
        self.log: list[str] = []

    # ------------------------------------------------------------------ faults

    def fail(self, what: str) -> None:
        tail = "\n".join(self.log[-25:])
        raise SimFailure(f"seed {self.seed} step {self.step_no}: {what}\nlast events:\n{tail}\n"
                         f"replay: python tests/sim/raftsim.py 1 {self.seed}")

    def crash(self, node_id: str) -> None:
        node = self.nodes[node_id]
        node.raft = None
        node.storage.crash()
        self.network = [m for m in self.network if m.to != node_id]
        self.log.append(f"crash {node_id}")

    def restart(self, node_id: str) -> None:
        node = self.nodes[node_id]
        state = node.storage.load()
        node.raft = RaftNode(node_id, state, self.raft_config)
        # The state machine restarts from the snapshot; entries after it are re-applied.
        node.applied = {i: e for i, e in node.applied.items() if i <= state.snapshot.index}
        node.applied_to = state.snapshot.index
        node.snapshot_index = state.snapshot.index
        self.log.append(f"restart {node_id} term={state.hard_state.term} "
                        f"commit={state.hard_state.commit} snap={state.snapshot.index}")

    def partition(self) -> None:
        live = list(self.ids)
        self.rng.shuffle(live)
        cut = self.rng.randrange(1, len(live))
        side_a, side_b = set(live[:cut]), set(live[cut:])
        self.blocked = {frozenset((a, b)) for a in side_a for b in side_b}
        self.log.append(f"partition {sorted(side_a)} | {sorted(side_b)}")

    # ------------------------------------------------------------------ driving

    def process_ready(self, node: SimNode) -> None:
        raft = node.raft
        if raft is None or not raft.has_ready():
            return
        ready = raft.ready()
        node.storage.save(ready.hard_state, ready.entries, ready.snapshot)
        if self.rng.random() < self.cfg.crash_rate * self.cfg.crash_mid_ready_rate:
            self.crash(node.node_id)  # persisted, but nothing sent or applied
            return
        for msg in ready.messages:
            self.send(msg)
        self.apply(node, ready)
        raft.advance(ready)
        voted = any(isinstance(m, VoteResponse) and m.granted and not m.prevote
                    for m in ready.messages)
        if voted and self.rng.random() < self.cfg.crash_after_vote_rate:
            self.crash(node.node_id)  # the vote is out; it must survive the restart
            return
        if node.applied_to - node.snapshot_index >= self.cfg.compact_every:
            snap = raft.compact(f"state@{node.applied_to}".encode())
            node.storage.compact(snap)
            node.snapshot_index = snap.index

    def apply(self, node: SimNode, ready: Ready) -> None:
        if ready.snapshot is not None:
            snap = ready.snapshot
            # Restoring a snapshot: the state machine now holds the committed prefix
            # up to its index, which must be what the cluster committed.
            node.applied = {i: e for i, e in self.committed.items() if i <= snap.index}
            if len(node.applied) != snap.index:
                self.fail(f"{node.node_id} restored snapshot {snap.index} beyond the committed log")
            if snap.index and snap.data != f"state@{snap.index}".encode():
                self.fail(f"{node.node_id} got snapshot {snap.index} holding {snap.data!r}")
            node.applied_to = snap.index
            node.snapshot_index = snap.index
        for entry in ready.committed_entries:
            if entry.index != node.applied_to + 1:
                self.fail(f"{node.node_id} applied {entry.index} after {node.applied_to}")
            known = self.committed.get(entry.index)
            if known is None:
                self.committed[entry.index] = entry
                self.top_committed = max(self.top_committed, entry.index)
                self.commit_term_bound[entry.index] = self.max_term()
                if entry.kind is RaftEntryKind.CONF_CHANGE:
                    self.record_conf(entry)
            elif known != entry:
                self.fail(f"state machine safety: {node.node_id} applied {entry} at "
                          f"{entry.index}, another node applied {known}")
            node.applied[entry.index] = entry
            node.applied_to = entry.index
            duplicate = entry.index in ready.duplicates
            if self.duplicate_flags.setdefault(entry.index, duplicate) != duplicate:
                self.fail(f"{node.node_id} disagrees whether {entry.index} is a duplicate")

    def send(self, msg: RaftMessage) -> None:
        if frozenset((msg.frm, msg.to)) in self.blocked or self.rng.random() < self.cfg.drop_rate:
            return
        copies = 2 if self.rng.random() < self.cfg.duplicate_rate else 1
        received = self.wire.get(msg)
        if received is None:
            # Messages go through bytes, as on the wire, and come back the same.
            received = RaftMessage.decode(msg.encode())
            if received != msg:
                self.fail(f"{msg} came off the wire as {received}")
            self.wire[msg] = received
        for _ in range(copies):
            self.network.append(received)

    def deliver_some(self) -> None:
        if not self.network:
            return
        # Reordering: pick any in-flight message, biased towards older ones.
        count = min(len(self.network), 1 + self.rng.randrange(4))
        for _ in range(count):
            if not self.network:
                return
            pick = min(self.rng.randrange(len(self.network)) for _ in range(2))
            msg = self.network.pop(pick)
            target = self.nodes[msg.to]
            if target.raft is None or frozenset((msg.frm, msg.to)) in self.blocked:
                continue
            target.raft.step(msg)

    def propose(self) -> None:
        live = [n for n in self.nodes.values() if n.raft is not None]
        if not live:
            return
        node = self.rng.choice(live)
        # Clients retry: sometimes re-propose an earlier request id (idempotency).
        if self.client_requests and self.rng.random() < 0.2:
            request_id = self.rng.choice(sorted(self.client_requests))
        else:
            request_id = self.next_request
            self.next_request += 1
            self.client_requests[request_id] = f"req{request_id}".encode()
        data = self.client_requests[request_id]
        try:
            node.raft.propose(data, "client", request_id)
        except ProposalDropped:
            return

    def change_membership(self) -> None:
        leaders = [n for n in self.nodes.values() if n.raft is not None and n.raft.is_leader]
        if not leaders:
            return
        raft = leaders[0].raft
        learners = sorted(i for i in self.ids if i.startswith("l"))
        if not learners:
            return
        target = self.rng.choice(learners)
        op = (ConfChangeOp.REMOVE_NODE if target in raft.conf.members
              else ConfChangeOp.ADD_LEARNER)
        try:
            raft.propose_conf_change(ConfChange(op, target))
            self.log.append(f"conf {op.name} {target} by {raft.id}")
        except (ProposalDropped, RaftLocalError):
            return

    def change_voters(self) -> None:
        """The leader proposes one change of the voter set (or adds a learner)."""
        leaders = [n for n in self.nodes.values() if n.raft is not None and n.raft.is_leader]
        if not leaders:
            return
        raft = leaders[0].raft
        conf = raft.conf
        outsiders = sorted(set(self.ids) - conf.voters)
        choices = [ConfChange(ConfChangeOp.ADD_VOTER, n) for n in outsiders]
        choices += [ConfChange(ConfChangeOp.ADD_LEARNER, n) for n in outsiders
                    if n not in conf.learners]
        if len(conf.voters) > self.cfg.min_voters:
            choices += [ConfChange(ConfChangeOp.REMOVE_NODE, n) for n in sorted(conf.voters)]
        if not choices:
            return
        change = self.rng.choice(choices)
        try:
            raft.propose_conf_change(change)
            self.log.append(f"conf {change.op.name} {change.node_id} by {raft.id} "
                            f"(voters {sorted(conf.voters)})")
        except (ProposalDropped, RaftLocalError):
            return

    def record_conf(self, entry: Entry) -> None:
        """Track the configuration the committed log defines (entries arrive in order)."""
        before = self.confs[-1]
        after = before.applied(ConfChange.decode(entry.data))
        if after != before:
            self.conf_indices.append(entry.index)
            self.confs.append(after)
            if after.voters != before.voters and entry.index > self.founding_entries:
                self.voter_changes += 1

    def conf_at(self, index: int) -> ConfState:
        return self.confs[bisect_right(self.conf_indices, index) - 1]

    def step(self) -> None:
        self.step_no += 1
        rng = self.rng
        for node_id in self.ids:
            node = self.nodes[node_id]
            if node.raft is None:
                if rng.random() < self.cfg.restart_rate:
                    self.restart(node_id)
                continue
            rate = self.cfg.crash_rate
            if node.raft.is_leader:
                rate += self.cfg.leader_crash_rate
            if rng.random() < rate:
                self.crash(node_id)
                continue
            if rng.random() < 0.5:
                node.raft.tick()
        if rng.random() < self.cfg.partition_rate:
            self.partition()
        elif self.blocked and rng.random() < self.cfg.heal_rate:
            self.blocked = set()
            self.log.append("heal")
        if rng.random() < self.cfg.propose_rate:
            self.propose()
        if rng.random() < self.cfg.conf_change_rate:
            self.change_membership()
        if rng.random() < self.cfg.voter_change_rate:
            self.change_voters()
        self.deliver_some()
        for node_id in self.ids:
            self.process_ready(self.nodes[node_id])
        self.check()

    # ------------------------------------------------------------------ invariants

    def check(self) -> None:
        for node in self.nodes.values():
            raft = node.raft
            if raft is None:
                continue
            if raft.role is RaftRole.LEADER:
                seen = self.leaders.setdefault(raft.term, node.node_id)
                if seen != node.node_id:
                    self.fail(f"election safety: {seen} and {node.node_id} lead term {raft.term}")
                self.check_leader_completeness(node.node_id, raft)
                if node.node_id not in raft.conf.voters:
                    self.fail(f"{node.node_id} leads term {raft.term} but is no voter of "
                              f"{sorted(raft.conf.voters)}")
            expected = self.conf_at(node.applied_to)
            if raft.conf != expected:
                self.fail(f"membership: {node.node_id} applied to {node.applied_to} uses "
                          f"{raft.conf}, the committed log defines {expected}")
            log = raft.log
            key = (log.committed, self.top_committed)
            if not self.check_log_matching(node.node_id, raft) and node.prefix_checked == key:
                continue
            node.prefix_checked = key
            # Committed prefixes agree: whatever this node holds as committed matches.
            upper = min(log.committed, log.last_index())
            for index in range(max(log.snapshot_index + 1, upper - 8), upper + 1):
                known = self.committed.get(index)
                if known is not None and log.entry(index) != known:
                    self.fail(f"{node.node_id} holds {log.entry(index)} as committed at {index}, "
                              f"cluster committed {known}")

    def check_log_matching(self, node_id: str, raft: RaftNode) -> bool:
        """Only what changed since this node's last check is checked: every entry when
        the snapshot point moved or an entry was replaced, only the new tail after an
        append, nothing when the log is equal (by value) to the one last checked. Returns
        whether the log changed."""
        log = raft.log
        node = self.nodes[node_id]
        entries = log.entries
        prev_term: int | None = log.snapshot_term
        start = 0
        if node.matched is not None and node.matched[:2] == (log.snapshot_index,
                                                             log.snapshot_term):
            seen_log = node.matched[2]
            if len(seen_log) <= len(entries) and entries[:len(seen_log)] == seen_log:
                if len(seen_log) == len(entries):
                    return False
                start = len(seen_log)
                if start:
                    prev_term = seen_log[-1].term
        for entry in entries[start:]:
            seen = self.seen_entries.setdefault((entry.index, entry.term), (entry, prev_term))
            if seen != (entry, prev_term):
                self.fail(f"log matching: {node_id} holds {entry} after term {prev_term}, "
                          f"another log held {seen[0]} after term {seen[1]}")
            prev_term = entry.term
        node.matched = (log.snapshot_index, log.snapshot_term, list(entries))
        return True

    def check_leader_completeness(self, node_id: str, raft: RaftNode) -> None:
        log = raft.log
        top = self.top_committed
        for index in range(max(1, top - 16), top + 1):
            if self.commit_term_bound[index] >= raft.term:
                continue  # possibly committed in this leader's term or later
            if index <= log.snapshot_index:
                continue  # under its snapshot, which only ever holds committed state
            if index > log.last_index() or log.entry(index) != self.committed[index]:
                self.fail(f"leader completeness: {node_id} (term {raft.term}) lacks committed "
                          f"{self.committed[index]}")

    def max_term(self) -> int:
        terms = [n.raft.term if n.raft is not None else n.storage.load().hard_state.term
                 for n in self.nodes.values()]
        return max(terms)

    # ------------------------------------------------------------------ run

    def settle(self, rounds: int = 400) -> None:
        """Heal, restart everyone, stop faults and run until the cluster converges."""
        self.blocked = set()
        for node_id in self.ids:
            if self.nodes[node_id].raft is None:
                self.restart(node_id)
        for _ in range(rounds):
            self.step_no += 1
            for node in self.nodes.values():
                node.raft.tick()
            while self.network:
                msg = self.network.pop(0)
                self.nodes[msg.to].raft.step(msg)
                self.process_ready(self.nodes[msg.to])
            for node in self.nodes.values():
                self.process_ready(node)
            self.check()

    def run(self) -> Simulation:
        quiet = SimConfig(**{**self.cfg.__dict__, "crash_rate": 0.0, "drop_rate": 0.0,
                             "duplicate_rate": 0.0, "partition_rate": 0.0,
                             "crash_after_vote_rate": 0.0, "leader_crash_rate": 0.0})
        for _ in range(self.cfg.steps):
            self.step()
        noisy, self.cfg = self.cfg, quiet
        try:
            self.settle()
            self.check_liveness()
        finally:
            self.cfg = noisy
        return self

    def check_liveness(self) -> None:
        """After faults stop, one leader exists and every member applied the same log."""
        leaders = [n for n in self.nodes.values() if n.raft.is_leader]
        if len(leaders) != 1:
            self.fail(f"no single leader after settling: {[n.node_id for n in leaders]}")
        leader = leaders[0].raft
        members = leader.conf.members
        for node_id in members:
            node = self.nodes[node_id]
            if node.applied_to != leader.log.committed:
                self.fail(f"{node_id} applied {node.applied_to}, leader committed "
                          f"{leader.log.committed}")
        for index, entry in self.committed.items():
            if entry.index != index:
                self.fail(f"committed entry {entry} recorded at {index}")
        # Idempotency: each client request takes effect (is not a duplicate) once.
        firsts: dict[int, int] = {}
        for index in sorted(self.committed):
            entry = self.committed[index]
            if entry.kind is not RaftEntryKind.NORMAL or self.duplicate_flags[index]:
                continue
            if entry.request_id in firsts:
                self.fail(f"request {entry.request_id} took effect twice: "
                          f"{firsts[entry.request_id]} and {index}")
            firsts[entry.request_id] = index
            if leader.lookup("client", entry.request_id).index != index:
                self.fail(f"lookup of request {entry.request_id} does not answer {index}")


def run_seed(seed: int, config: SimConfig | None = None) -> Simulation:
    return Simulation(seed, config).run()


def run_seeds(count: int, first: int = 0, config: SimConfig | None = None) -> int:
    """Run `count` seeds from `first`; returns the number run. Raises on the first failure."""
    for seed in range(first, first + count):
        run_seed(seed, config)
    return count


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    start = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    for layout in (SimConfig(voters=3), SimConfig(voters=5, learners=1, conf_change_rate=0.01)):
        run_seeds(n, start, layout)
        print(f"{n} seeds from {start} passed: {layout.voters} voters, {layout.learners} learners")
