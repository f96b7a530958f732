"""A few `RaftNode`s on `MemoryRaftStorage`, driven message by message: the harness
of the Raft scenario transcripts (tests/ledger/test_raft_scenarios.py,
test_raft_membership_scenarios.py).

`Net` runs the Ready contract (persist, send, apply, advance) and delivers messages only
when a test says so, so each test reads as a transcript: who campaigns, which messages
cross, what each node holds. Bootstrap writes the founding configuration as entries
1..n at term 1, so with three voters a first leader's no-op lands at index 4, with five
at index 6.
"""


from collections.abc import Callable

from gd.ledger.raft import RaftConfig, RaftNode
from gd.ledger.raft_messages import (
    AppendEntries,
    AppendResponse,
    RaftMessage,
    VoteRequest,
    VoteResponse,
)
from gd.ledger.raft_records import (
    Entry,
    RaftEntryKind,
)
from gd.ledger.raft_storage import MemoryRaftStorage, bootstrap_state

Filter = Callable[[RaftMessage], bool]



def describe(msg: RaftMessage) -> str:
    """A short transcript line for a message."""
    head = f"{msg.frm}->{msg.to} {msg.KIND} t{msg.term}"
    if isinstance(msg, VoteRequest):
        return head + (" pre" if msg.prevote else "")
    if isinstance(msg, VoteResponse):
        return head + (" pre" if msg.prevote else "") + (" yes" if msg.granted else " no")
    if isinstance(msg, AppendEntries):
        return head + f" prev={msg.prev_index} n={len(msg.entries)} commit={msg.commit}"
    if isinstance(msg, AppendResponse):
        return head + (f" reject={msg.index}" if msg.reject else f" match={msg.index}")
    return head


class Net:
    def __init__(self, voters: list[str], learners: list[str] = (),
                 config: RaftConfig | None = None, joiners: list[str] = ()) -> None:
        self.config = config or RaftConfig(election_ticks=10, heartbeat_ticks=1)
        boot = bootstrap_state(voters, learners)
        self.storage: dict[str, MemoryRaftStorage] = {}
        self.nodes: dict[str, RaftNode | None] = {}
        self.applied: dict[str, list[Entry]] = {}
        for node_id in [*voters, *learners, *joiners]:
            storage = self.storage[node_id] = MemoryRaftStorage()
            if node_id not in joiners:
                storage.save(boot.hard_state, boot.entries)
            self.nodes[node_id] = RaftNode(node_id, storage.load(), self.config)
            self.applied[node_id] = []
        self.outbox: list[RaftMessage] = []
        self.trace: list[str] = []
        self.isolated: set[str] = set()
        self.cut: set[frozenset[str]] = set()  # pairs that cannot talk (partitions)
        self.process()

    def node(self, node_id: str) -> RaftNode:
        raft = self.nodes[node_id]
        assert raft is not None, f"{node_id} is down"
        return raft

    def process(self) -> None:
        """Drain every live node's Ready: persist, send, apply, advance."""
        busy = True
        while busy:
            busy = False
            for node_id, raft in self.nodes.items():
                if raft is None or not raft.has_ready():
                    continue
                busy = True
                ready = raft.ready()
                self.storage[node_id].save(ready.hard_state, ready.entries, ready.snapshot)
                self.outbox.extend(ready.messages)
                if ready.snapshot is not None:
                    self.applied[node_id] = [Entry(ready.snapshot.term, ready.snapshot.index,
                                                   RaftEntryKind.NOOP, ready.snapshot.data)]
                self.applied[node_id].extend(
                    e for e in ready.committed_entries if e.index not in ready.duplicates)
                raft.advance(ready)

    def deliver(self, drop: Filter | None = None, limit: int = 10_000) -> None:
        """Deliver messages (FIFO) until none is left; `drop` discards matching ones."""
        for _ in range(limit):
            self.process()
            if not self.outbox:
                return
            self.deliver_one(drop)
        raise AssertionError("messages kept flowing")

    def deliver_until(self, done: Callable[[], bool], drop: Filter | None = None) -> None:
        for _ in range(10_000):
            self.process()
            if done():
                return
            assert self.outbox, "ran out of messages before the condition held"
            self.deliver_one(drop)
        raise AssertionError("condition never held")

    def deliver_one(self, drop: Filter | None) -> None:
        """The oldest message to its node, unless the node is gone, the link is cut or
        `drop` discards it (then it is lost, as on a real network)."""
        msg = self.outbox.pop(0)
        target = self.nodes.get(msg.to)
        if target is None or self.blocked(msg) or (drop is not None and drop(msg)):
            return
        self.trace.append(describe(msg))
        target.step(msg)

    def blocked(self, msg: RaftMessage) -> bool:
        return (msg.frm in self.isolated or msg.to in self.isolated
                or frozenset((msg.frm, msg.to)) in self.cut)

    def partition(self, *sides: str) -> None:
        """Cut every link between nodes of different sides (each side a string of ids)."""
        groups = [side.split(",") for side in sides]
        self.cut = {frozenset((x, y)) for i, g in enumerate(groups) for h in groups[i + 1:]
                    for x in g for y in h}

    def tick(self, node_ids: list[str] | None = None, times: int = 1) -> None:
        for _ in range(times):
            for node_id in node_ids or list(self.nodes):
                if self.nodes[node_id] is not None:
                    self.nodes[node_id].tick()
            self.deliver()

    def elect(self, node_id: str, drop: Filter | None = None) -> RaftNode:
        self.node(node_id).campaign()
        self.deliver(drop)
        return self.node(node_id)

    def crash(self, node_id: str) -> None:
        self.nodes[node_id] = None
        self.outbox = [m for m in self.outbox if m.frm != node_id and m.to != node_id]

    def restart(self, node_id: str) -> RaftNode:
        state = self.storage[node_id].crash()
        self.nodes[node_id] = RaftNode(node_id, state, self.config)
        self.applied[node_id] = [e for e in self.applied[node_id]
                                 if e.index <= state.snapshot.index]
        self.process()
        return self.node(node_id)

    def leaders(self) -> list[str]:
        return [i for i, n in self.nodes.items() if n is not None and n.is_leader]

    def data(self, node_id: str) -> list[bytes]:
        return [e.data for e in self.applied[node_id] if e.kind is RaftEntryKind.NORMAL]
