"""A deterministic, sans-I/O Raft core in the etcd/raft mould.

`RaftNode` never touches a socket, a clock or a disk. The caller feeds it messages
(`step`), clock ticks (`tick`) and proposals (`propose`), and drains a `Ready`: the hard
state, snapshot and entries to persist, the messages to send, and the committed entries
to apply. The caller persists, then sends, then applies, then calls `advance(ready)`.
Every random draw (election timeouts) comes from a generator seeded by the config, so a
whole cluster replays exactly from a seed.

What it implements, with the source of each rule:

* leader election with randomized timeouts (Raft §5.2), pre-vote (Ongaro's thesis §9.6)
  and check-quorum with leader leases (thesis §6.2, §4.2.3);
* log replication with conflict truncation (§5.3), fast backtracking on rejection,
  flow control (probe / replicate / snapshot progress states, as etcd/raft);
* commit only of entries of the leader's own term (§5.4.2, Figure 8);
* snapshots and compaction, snapshots sent to members behind the log start (§7);
* learners and single-server membership changes, one at a time (thesis §4.1, §4.2.1),
  effective when applied, with the new leader's no-op applied first (the fix to the
  single-server bug Ongaro described on raft-dev in 2015);
* follower-to-leader forwarding of proposals, and idempotent client requests: every
  proposal carries (client_id, request_id), committed duplicates are flagged, and any
  node answers whether a request committed and where (thesis §6.3).
"""

from __future__ import annotations

import enum
import random
from collections import deque
from dataclasses import dataclass

from gd.ledger.raft_log import RaftLog
from gd.ledger.raft_messages import (
    MAX_CLIENT_ID_LEN,
    MAX_ENTRIES_PER_MESSAGE,
    MAX_ENTRY_BYTES,
    AppendEntries,
    AppendResponse,
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ProposalDropped,
    Propose,
    RaftLocalError,
    RaftRemoteError,
    Role,
    Snapshot,
    VoteRequest,
    VoteResponse,
    check_node_id,
)
from gd.ledger.raft_sessions import ClientSessions, RequestState, RequestStatus
from gd.ledger.raft_storage import PersistedState

# Ticks are the caller's clock unit (node/ ticks every 100 ms). etcd recommends an
# election timeout of 10 heartbeats; with 100 ms ticks that is a 1-2 s election after a
# leader dies (randomized in [10, 20) ticks), inside the 2 s failover target.
DEFAULT_ELECTION_TICKS = 10
DEFAULT_HEARTBEAT_TICKS = 1
# Bytes of entries per append message: etcd's default MaxSizePerMsg is 1 MiB.
DEFAULT_MAX_APPEND_BYTES = 1024 * 1024
# Append messages in flight per follower before the leader waits for acks (etcd's
# MaxInflightMsgs is 256 in its examples); it bounds memory in a slow link's queue.
DEFAULT_MAX_INFLIGHT = 256
# Proposed-but-uncommitted bytes a leader accepts before refusing proposals: without a
# quorum, clients would otherwise grow the leader's log without bound (etcd's
# MaxUncommittedEntriesSize serves the same purpose).
DEFAULT_MAX_UNCOMMITTED_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Tunables. `seed` drives election-timeout randomization (mixed with the node id)."""

    seed: int = 0
    election_ticks: int = DEFAULT_ELECTION_TICKS
    heartbeat_ticks: int = DEFAULT_HEARTBEAT_TICKS
    prevote: bool = True
    check_quorum: bool = True
    max_append_bytes: int = DEFAULT_MAX_APPEND_BYTES
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    max_uncommitted_bytes: int = DEFAULT_MAX_UNCOMMITTED_BYTES

    def __post_init__(self) -> None:
        if self.heartbeat_ticks < 1 or self.election_ticks <= self.heartbeat_ticks:
            raise RaftLocalError("need 1 <= heartbeat_ticks < election_ticks")
        if self.max_inflight < 1 or self.max_append_bytes < 1 or self.max_uncommitted_bytes < 1:
            raise RaftLocalError("flow-control limits must be positive")


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work for the caller, handled in this order:

    1. persist `snapshot` (if any), `entries` and `hard_state` (if any), durably;
    2. send `messages`;
    3. restore from `snapshot` (if any), then apply `committed_entries` in order,
       skipping indices in `duplicates` (repeats of an already committed request);
    4. call `RaftNode.advance(ready)`.
    """

    hard_state: HardState | None
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None
    messages: tuple[Message, ...]
    committed_entries: tuple[Entry, ...]
    duplicates: frozenset[int]
    role: Role
    leader: str | None


class ProgressState(enum.Enum):
    """How the leader replicates to one member (etcd/raft's progress states)."""

    PROBE = "probe"  # one append at a time until we find where the logs agree
    REPLICATE = "replicate"  # stream appends, up to max_inflight unacknowledged
    SNAPSHOT = "snapshot"  # a snapshot is on its way; wait for its acknowledgement


class Progress:
    """The leader's view of one member's log."""

    __slots__ = ("inflight", "match", "next", "pending_snapshot", "probe_sent",
                 "recent_active", "sent_commit", "snapshot_elapsed", "state")

    def __init__(self, next_index: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_elapsed = 0
        self.recent_active = False
        self.sent_commit = 0  # highest commit index told to this member
        self.inflight: deque[int] = deque()

    def paused(self, max_inflight: int) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return len(self.inflight) >= max_inflight
        return True

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.inflight.clear()

    def become_snapshot(self, index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_elapsed = 0
        self.inflight.clear()

    def maybe_update(self, index: int) -> bool:
        """A success ack for `index`; False if stale (an old or duplicated response)."""
        self.probe_sent = False
        if index <= self.match:
            self.next = max(self.next, index + 1)
            return False
        self.match = index
        self.next = max(self.next, index + 1)
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        return True

    def maybe_decrease(self, rejected: int, hint: int) -> bool:
        """A rejection of the append at `rejected`; False if it is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, hint + 1), self.match + 1, 1)
        self.probe_sent = False
        return True


class RaftNode:
    """One member's Raft state machine. See the module docstring and docs/raft.md."""

    def __init__(self, node_id: str, state: PersistedState, config: RaftConfig | None = None
                 ) -> None:
        self.id = check_node_id(node_id)
        self.config = config or RaftConfig()
        self._rng = random.Random(f"{self.config.seed}/{node_id}")
        hard = state.hard_state
        self.log = RaftLog(state.snapshot, state.entries, hard.commit)
        self.term = hard.term
        self.vote = hard.vote
        self.snapshot = state.snapshot
        self.conf = state.snapshot.conf
        self.sessions = ClientSessions.from_snapshot(state.snapshot.sessions)
        self.role = Role.FOLLOWER
        self.leader: str | None = None
        self.progress: dict[str, Progress] = {}
        self._votes: dict[str, bool] = {}
        self._msgs: list[Message] = []
        self._prev_hard = hard
        self._outstanding: Ready | None = None
        self._pending_conf_index = 0
        self._pending_keys: dict[tuple[str, int], int] = {}
        self._uncommitted_bytes = 0
        self._leaving = False  # leader with its own removal in its log: no new entries
        self.election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = self._draw_timeout()

    # ------------------------------------------------------------------ public queries

    @property
    def promotable(self) -> bool:
        """Can this node campaign? Only voters, and not while installing a snapshot."""
        return self.id in self.conf.voters and self.log.pending_snapshot is None

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def lookup(self, client_id: str, request_id: int) -> RequestStatus:
        """Did (client_id, request_id) commit, and at which index, as far as we know?

        UNKNOWN on a lagging node means "not yet seen here": retrying with the same ids
        is always safe, since a committed duplicate is flagged and never applied twice.
        """
        status = self.sessions.lookup(client_id, request_id)
        if status.state is not RequestState.UNKNOWN:
            return status
        index = self._pending_keys.get((client_id, request_id))
        if index is None:
            for entry in self.log.entries:
                if entry.index > self.log.applied and entry.client_id == client_id \
                        and entry.request_id == request_id and entry.kind is EntryKind.NORMAL:
                    index = entry.index
                    break
        if index is not None:
            return RequestStatus(RequestState.PENDING, index)
        return status

    # ------------------------------------------------------------------ inputs

    def tick(self) -> None:
        """Advance the logical clock by one tick."""
        if self.role is Role.LEADER:
            self._tick_leader()
            return
        self.election_elapsed += 1
        if self.promotable and self.election_elapsed >= self._randomized_timeout:
            self.election_elapsed = 0
            self.campaign()

    def campaign(self) -> None:
        """Start an election now (pre-vote first when enabled); a no-op for a leader."""
        if self.role is Role.LEADER or not self.promotable:
            return
        if self._has_unapplied_conf_change():
            # Campaigning on a configuration we are about to replace could count votes
            # of a membership that no longer exists; apply first (as etcd/raft does).
            return
        if self.config.prevote:
            self._become_pre_candidate()
        else:
            self._become_candidate()

    def propose(self, data: bytes, client_id: str, request_id: int) -> int | None:
        """Propose application data. Returns its log index on the leader, None when
        forwarded to the known leader; raises `ProposalDropped` when nobody can take it.

        Retrying with the same (client_id, request_id) is safe: the leader returns the
        index of the copy already in its log, and a committed duplicate is flagged.
        """
        if not isinstance(data, bytes) or len(data) > MAX_ENTRY_BYTES:
            raise RaftLocalError(f"proposal data must be bytes of at most {MAX_ENTRY_BYTES}")
        if not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_CLIENT_ID_LEN:
            raise RaftLocalError(f"client_id must be a str of 1..{MAX_CLIENT_ID_LEN} chars")
        if isinstance(request_id, bool) or not isinstance(request_id, int) or request_id < 1:
            raise RaftLocalError("request_id must be a positive int")
        entry = Entry(0, 0, EntryKind.NORMAL, data, client_id, request_id)
        if self.role is Role.LEADER:
            status = self.sessions.lookup(client_id, request_id)
            if status.state is RequestState.EXPIRED:
                raise ProposalDropped(f"request {client_id}/{request_id} is older than its session")
            if self._leaving:
                raise ProposalDropped("this leader is leaving the configuration; retry later")
            index = self._append_proposal(entry)
            if index is None:
                raise ProposalDropped("too many uncommitted bytes; retry later")
            self._broadcast_append()
            return index
        if self.leader is None or self.leader == self.id:
            raise ProposalDropped("no leader known")
        self._send(Propose(self.id, self.leader, 0, entries=(entry,)))
        return None

    def propose_conf_change(self, change: ConfChange) -> int:
        """Propose one membership change on the leader; returns its log index.

        One change at a time: refused while an earlier one is not yet applied, including
        the new leader's own no-op (which must commit before any change, see module doc).
        """
        if self.role is not Role.LEADER:
            raise ProposalDropped("membership changes are proposed on the leader")
        check_node_id(change.node_id)
        if self._pending_conf_index > self.log.applied:
            raise ProposalDropped("a membership change is still pending")
        if self.conf.applied(change) == self.conf:
            raise RaftLocalError(f"{change.op.name} {change.node_id} changes nothing")
        index = self.log.last_index() + 1
        entry = Entry(self.term, index, EntryKind.CONF_CHANGE, change.encode())
        self.log.append([entry])
        self._uncommitted_bytes += entry.size
        self._pending_conf_index = index
        self._leaving = self._removes_self(entry)
        self._broadcast_append()
        return index

    def step(self, msg: Message) -> None:
        """Process one message from a peer. Malformed or impossible input raises
        `RaftRemoteError` (drop the message; the node stays consistent)."""
        if not isinstance(msg, Message) or type(msg) is Message:
            raise RaftLocalError(f"not a raft message: {type(msg).__name__}")
        if msg.to != self.id:
            raise RaftRemoteError(f"message for {msg.to!r} delivered to {self.id!r}")
        if msg.frm == self.id:
            raise RaftRemoteError("message claims to come from ourselves")
        if isinstance(msg, Propose):
            if msg.term != 0:
                raise RaftRemoteError("forwarded proposals carry term 0")
            self._step_propose(msg)
            return
        if msg.term == 0:
            raise RaftRemoteError(f"{msg.KIND} with term 0")
        if msg.term > self.term:
            if isinstance(msg, VoteRequest) and self._in_lease():
                # Leader stickiness (thesis §4.2.3): we heard from a live leader within
                # an election timeout, so this candidate cannot be legitimate now.
                return
            if isinstance(msg, VoteRequest) and msg.prevote:
                pass  # a pre-vote never changes anyone's term
            elif isinstance(msg, VoteResponse) and msg.prevote and msg.granted:
                pass  # a granted pre-vote echoes the term we would campaign in
            else:
                from_leader = isinstance(msg, AppendEntries | Heartbeat | InstallSnapshot)
                self._become_follower(msg.term, msg.frm if from_leader else None)
        elif msg.term < self.term:
            if isinstance(msg, AppendEntries | Heartbeat) and (
                    self.config.check_quorum or self.config.prevote):
                # A stale leader (e.g. back from a partition) must learn our term so it
                # steps down; with pre-vote it could otherwise never be told.
                self._send(AppendResponse(self.id, msg.frm, self.term))
            elif isinstance(msg, VoteRequest) and msg.prevote:
                self._send(VoteResponse(self.id, msg.frm, self.term, granted=False, prevote=True))
            return
        if isinstance(msg, VoteRequest):
            self._handle_vote_request(msg)
        elif self.role is Role.LEADER:
            self._step_leader(msg)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(msg)
        else:
            self._step_follower(msg)

    # ------------------------------------------------------------------ ready / advance

    def has_ready(self) -> bool:
        if self._outstanding is not None:
            return False
        return bool(self._msgs or self.hard_state() != self._prev_hard
                    or self.log.pending_snapshot is not None
                    or self.log.unstable_from <= self.log.last_index()
                    or self.log.committed > max(self.log.applied, self.log.snapshot_index))

    def ready(self) -> Ready:
        """Take the next batch of work. Call `advance` with it before the next `ready`."""
        if self._outstanding is not None:
            raise RaftLocalError("ready() called again before advance()")
        committed = self.log.committed_unapplied()
        duplicates = set()
        for entry in committed:
            if self.sessions.apply(entry):
                duplicates.add(entry.index)
            key = (entry.client_id, entry.request_id)
            if self._pending_keys.get(key) == entry.index:
                del self._pending_keys[key]
            if entry.kind is EntryKind.CONF_CHANGE:
                self._apply_conf_change(ConfChange.decode(entry.data))
        hard = self.hard_state()
        ready = Ready(
            hard_state=hard if hard != self._prev_hard else None,
            entries=tuple(self.log.unstable_entries()),
            snapshot=self.log.pending_snapshot,
            messages=tuple(self._msgs),
            committed_entries=tuple(committed),
            duplicates=frozenset(duplicates),
            role=self.role,
            leader=self.leader,
        )
        self._msgs = []
        self._outstanding = ready
        return ready

    def advance(self, ready: Ready) -> None:
        """The caller persisted, sent and applied `ready`."""
        if ready is not self._outstanding:
            raise RaftLocalError("advance() with a Ready that is not the outstanding one")
        self._outstanding = None
        if ready.hard_state is not None:
            self._prev_hard = ready.hard_state
        if ready.snapshot is not None and self.log.pending_snapshot is ready.snapshot:
            self.log.pending_snapshot = None
            self.log.applied = max(self.log.applied, ready.snapshot.index)
        if ready.entries:
            last = ready.entries[-1]
            self.log.stable_to(last.index, last.term)
        if ready.committed_entries:
            self.log.applied = max(self.log.applied, ready.committed_entries[-1].index)
        if self.role is Role.LEADER:
            own = self.progress.get(self.id)
            if own is not None:
                own.maybe_update(self.log.unstable_from - 1)
                if self._maybe_commit():
                    self._broadcast_append()

    def compact(self, data: bytes) -> Snapshot:
        """Snapshot the application state `data` at the applied index and drop the log
        up to it. Persist the result with `RaftStorage.compact` right after."""
        if self._outstanding is not None:
            raise RaftLocalError("compact() between ready() and advance()")
        if not isinstance(data, bytes):
            raise RaftLocalError("snapshot data must be bytes")
        index = self.log.applied
        if index <= self.log.snapshot_index:
            return self.snapshot
        term = self.log.compact(index)
        self.snapshot = Snapshot(index, term, self.conf, self.sessions.to_snapshot(), data)
        return self.snapshot

    # ------------------------------------------------------------------ role changes

    def _draw_timeout(self) -> int:
        ticks = self.config.election_ticks
        return ticks + self._rng.randrange(ticks)

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.leader = None
        self.election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = self._draw_timeout()
        self._votes = {}
        self.progress = {}
        self._pending_keys = {}
        self._uncommitted_bytes = 0
        self._leaving = False

    def _removes_self(self, entry: Entry) -> bool:
        return (entry.kind is EntryKind.CONF_CHANGE
                and ConfChange.decode(entry.data) == ConfChange(ConfChangeOp.REMOVE_NODE, self.id))

    def _become_follower(self, term: int, leader: str | None) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader = leader

    def _become_pre_candidate(self) -> None:
        # Term and vote stay as they are: a pre-vote round changes nothing durable.
        self._votes = {}
        self.leader = None
        self._randomized_timeout = self._draw_timeout()
        self.role = Role.PRE_CANDIDATE
        self._request_votes(prevote=True)

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self._request_votes(prevote=False)

    def _request_votes(self, *, prevote: bool) -> None:
        term = self.term + 1 if prevote else self.term
        self._votes[self.id] = True
        if self._tally_won():
            self._on_election_won(prevote)
            return
        for voter in sorted(self.conf.voters - {self.id}):
            self._send(VoteRequest(self.id, voter, term, last_index=self.log.last_index(),
                                   last_term=self.log.last_term(), prevote=prevote))

    def _tally_won(self) -> bool:
        granted = sum(1 for v, ok in self._votes.items() if ok and v in self.conf.voters)
        return granted >= self._quorum()

    def _tally_lost(self) -> bool:
        rejected = sum(1 for v, ok in self._votes.items() if not ok and v in self.conf.voters)
        return rejected >= self._quorum()

    def _on_election_won(self, prevote: bool) -> None:
        if prevote:
            self._become_candidate()
        else:
            self._become_leader()

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader = self.id
        last = self.log.last_index()
        for member in self.conf.members | {self.id}:
            self.progress[member] = Progress(last + 1)
        own = self.progress[self.id]
        own.match = self.log.unstable_from - 1
        own.recent_active = True
        own.become_replicate()
        for entry in self.log.entries:
            if entry.index > self.log.applied and entry.client_id:
                self._pending_keys[(entry.client_id, entry.request_id)] = entry.index
        # No membership change until this term's no-op is applied: a change proposed
        # before the leader committed anything in its term could overlap an unfinished
        # change of a previous leader and break the one-at-a-time guarantee.
        self._pending_conf_index = last + 1
        # A leader whose own removal is in its log takes no proposals until that applies
        # and it steps down: its log then ends where the remaining voters' can, so they
        # can elect one of themselves even if none heard that the removal committed
        # (under the old configuration they need our vote, given only to logs as long).
        self._leaving = any(self._removes_self(e) for e in self.log.entries
                            if e.index > self.log.applied)
        noop = Entry(self.term, last + 1, EntryKind.NOOP)
        self.log.append([noop])
        self._broadcast_append()

    def _quorum(self) -> int:
        return len(self.conf.voters) // 2 + 1

    def _in_lease(self) -> bool:
        return (self.config.check_quorum and self.leader is not None
                and self.election_elapsed < self.config.election_ticks)

    def _has_unapplied_conf_change(self) -> bool:
        lo = max(self.log.applied, self.log.snapshot_index) + 1
        if lo > self.log.committed:
            return False
        return any(e.kind is EntryKind.CONF_CHANGE
                   for e in self.log.slice(lo, self.log.committed + 1))

    # ------------------------------------------------------------------ membership

    def _apply_conf_change(self, change: ConfChange) -> None:
        new = self.conf.applied(change)
        if new == self.conf:
            return
        self.conf = new
        if self.role is Role.LEADER:
            for member in new.members - set(self.progress):
                pr = self.progress[member] = Progress(self.log.last_index() + 1)
                pr.recent_active = True  # give a new member one timeout to answer
            for member in set(self.progress) - new.members - {self.id}:
                del self.progress[member]
            if self.id not in new.voters:
                # Thesis §4.2.2: a leader removed from the configuration steps down once
                # the change is committed (here: applied), leaving the others to elect.
                self._become_follower(self.term, None)
                return
            self._maybe_commit()  # a smaller quorum may commit more at once
            self._broadcast_append()
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE) and not self.promotable:
            self._become_follower(self.term, None)

    # ------------------------------------------------------------------ leader

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self.election_elapsed += 1
        for pr in self.progress.values():
            if pr.state is ProgressState.SNAPSHOT:
                pr.snapshot_elapsed += 1
        if self.election_elapsed >= self.config.election_ticks:
            self.election_elapsed = 0
            if self.config.check_quorum:
                active = sum(1 for v in self.conf.voters if v == self.id
                             or (v in self.progress and self.progress[v].recent_active))
                if active < self._quorum():
                    # Check-quorum (thesis §6.2): a leader cut off from a majority steps
                    # down, so clients stop talking to a leader that cannot commit.
                    self._become_follower(self.term, None)
                    return
                for member, pr in self.progress.items():
                    pr.recent_active = member == self.id
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            for member in sorted(self.progress):
                if member != self.id:
                    pr = self.progress[member]
                    self._send(Heartbeat(self.id, member, self.term,
                                         commit=min(pr.match, self.log.committed)))

    def _step_leader(self, msg: Message) -> None:
        pr = self.progress.get(msg.frm)
        if isinstance(msg, AppendEntries | Heartbeat | InstallSnapshot):
            raise RaftRemoteError(f"{msg.frm} claims leadership of our term {self.term}")
        if pr is None:
            return  # a response from a node no longer in the configuration
        if isinstance(msg, AppendResponse):
            if not msg.reject and msg.index > self.log.last_index():
                raise RaftRemoteError(
                    f"ack for {msg.index} beyond our last index {self.log.last_index()}")
            pr.recent_active = True
            self._handle_append_response(msg, pr)
        elif isinstance(msg, HeartbeatResponse):
            pr.recent_active = True
            pr.probe_sent = False
            if (pr.state is ProgressState.SNAPSHOT
                    and pr.snapshot_elapsed >= self.config.election_ticks):
                pr.become_probe()  # the snapshot was probably lost: try again
            if pr.state is ProgressState.REPLICATE and pr.paused(self.config.max_inflight):
                # Every append in the window may have been lost; free one slot per
                # heartbeat so replication resumes (a rejection then re-probes).
                pr.inflight.popleft()
            if pr.match < self.log.last_index():
                self._send_append(msg.frm, pr)

    def _handle_append_response(self, msg: AppendResponse, pr: Progress) -> None:
        if msg.reject:
            hint = msg.hint_index
            if msg.hint_term > 0:
                hint = self.log.find_conflict_by_term(msg.hint_index, msg.hint_term)
            if pr.maybe_decrease(msg.index, hint):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(msg.frm, pr)
            return
        if not pr.maybe_update(msg.index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        if self._maybe_commit():
            self._broadcast_append()
        else:
            more = True
            while more:  # fill the window; the first append may carry only the commit
                more = self._send_append(msg.frm, pr,
                                         send_empty=pr.sent_commit < self.log.committed)

    def _send_append(self, to: str, pr: Progress, *, send_empty: bool = True) -> bool:
        """Send what `to` needs next; True if entries were sent (more may follow).

        An empty append still carries the commit index, which is why broadcasts send
        them; topping up after an ack does not.
        """
        if pr.paused(self.config.max_inflight):
            return False
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        if prev_term is None:
            if not pr.recent_active:
                return False  # do not ship a snapshot to a member that may be down
            self._send(InstallSnapshot(self.id, to, self.term, snapshot=self.snapshot))
            pr.become_snapshot(self.snapshot.index)
            return False
        entries = self.log.slice(pr.next, self.log.last_index() + 1, self.config.max_append_bytes)
        entries = entries[:MAX_ENTRIES_PER_MESSAGE]
        if not entries and not send_empty:
            return False
        self._send(AppendEntries(self.id, to, self.term, prev_index=prev, prev_term=prev_term,
                                 entries=tuple(entries), commit=self.log.committed))
        pr.sent_commit = max(pr.sent_commit, min(self.log.committed, prev + len(entries)))
        if pr.state is ProgressState.PROBE:
            pr.probe_sent = True
            return False
        if entries:
            pr.next = entries[-1].index + 1
            pr.inflight.append(entries[-1].index)
            return True
        return False

    def _broadcast_append(self) -> None:
        for member in sorted(self.progress):
            if member != self.id:
                self._send_append(member, self.progress[member])

    def _maybe_commit(self) -> bool:
        """Advance the commit index to the quorum's match, if in the current term."""
        if not self.conf.voters:
            return False
        matches = sorted((self.progress[v].match if v in self.progress else 0
                          for v in self.conf.voters), reverse=True)
        candidate = matches[len(matches) // 2]
        # Figure 8: an entry from an earlier term is never committed by counting
        # replicas; it commits only beneath an entry of the leader's own term.
        if candidate > self.log.committed and self.log.term(candidate) == self.term:
            for entry in self.log.slice(self.log.committed + 1, candidate + 1):
                self._uncommitted_bytes -= entry.size
            self._uncommitted_bytes = max(self._uncommitted_bytes, 0)
            self.log.commit_to(candidate)
            return True
        return False

    def _append_proposal(self, entry: Entry) -> int | None:
        key = (entry.client_id, entry.request_id)
        status = self.sessions.lookup(*key)
        if status.state is RequestState.COMMITTED:
            return status.index
        if key in self._pending_keys:
            return self._pending_keys[key]
        if self._uncommitted_bytes + entry.size > self.config.max_uncommitted_bytes:
            return None
        index = self.log.last_index() + 1
        self.log.append([Entry(self.term, index, entry.kind, entry.data, entry.client_id,
                               entry.request_id)])
        self._uncommitted_bytes += entry.size
        self._pending_keys[key] = index
        return index

    def _step_propose(self, msg: Propose) -> None:
        if self.role is not Role.LEADER or self._leaving:
            return  # forwarded once only; the client retries on timeout
        appended = False
        for entry in msg.entries:
            status = self.sessions.lookup(entry.client_id, entry.request_id)
            if status.state is RequestState.EXPIRED:
                continue
            if self._append_proposal(entry) is not None:
                appended = True
        if appended:
            self._broadcast_append()

    # ------------------------------------------------------------------ candidates

    def _step_candidate(self, msg: Message) -> None:
        if isinstance(msg, AppendEntries | Heartbeat | InstallSnapshot):
            self._become_follower(msg.term, msg.frm)
            self._step_follower(msg)
            return
        if not isinstance(msg, VoteResponse):
            return
        prevoting = self.role is Role.PRE_CANDIDATE
        if msg.prevote != prevoting:
            return  # a late answer from another round
        self._votes.setdefault(msg.frm, msg.granted)
        if self._tally_won():
            self._on_election_won(prevoting)
        elif self._tally_lost():
            self._become_follower(self.term, None)

    def _handle_vote_request(self, msg: VoteRequest) -> None:
        can_vote = (self.vote == msg.frm
                    or (self.vote is None and self.leader is None)
                    or (msg.prevote and msg.term > self.term))
        if can_vote and self.log.is_up_to_date(msg.last_index, msg.last_term):
            self._send(VoteResponse(self.id, msg.frm, msg.term, granted=True, prevote=msg.prevote))
            if not msg.prevote:
                self.election_elapsed = 0
                self.vote = msg.frm
        else:
            self._send(VoteResponse(self.id, msg.frm, self.term, granted=False,
                                    prevote=msg.prevote))

    # ------------------------------------------------------------------ followers

    def _step_follower(self, msg: Message) -> None:
        if isinstance(msg, AppendEntries):
            self.election_elapsed = 0
            self.leader = msg.frm
            self._handle_append(msg)
        elif isinstance(msg, Heartbeat):
            if msg.commit > self.log.last_index():
                raise RaftRemoteError(f"heartbeat commit {msg.commit} beyond our log")
            self.election_elapsed = 0
            self.leader = msg.frm
            self.log.commit_to(msg.commit)
            self._send(HeartbeatResponse(self.id, msg.frm, self.term))
        elif isinstance(msg, InstallSnapshot):
            self.election_elapsed = 0
            self.leader = msg.frm
            self._handle_snapshot(msg)

    def _handle_append(self, msg: AppendEntries) -> None:
        if msg.prev_index < self.log.committed:
            self._send(AppendResponse(self.id, msg.frm, self.term, index=self.log.committed))
            return
        last_new = self.log.maybe_append(msg.prev_index, msg.prev_term, msg.commit, msg.entries)
        if last_new is not None:
            self._send(AppendResponse(self.id, msg.frm, self.term, index=last_new))
            return
        hint = self.log.find_conflict_by_term(min(msg.prev_index, self.log.last_index()),
                                              msg.prev_term)
        self._send(AppendResponse(self.id, msg.frm, self.term, index=msg.prev_index, reject=True,
                                  hint_index=hint, hint_term=self.log.term(hint) or 0))

    def _handle_snapshot(self, msg: InstallSnapshot) -> None:
        snap = msg.snapshot
        if snap.index <= self.log.committed:
            self._send(AppendResponse(self.id, msg.frm, self.term, index=self.log.committed))
            return
        if self.log.match_term(snap.index, snap.term):
            # We hold the snapshot's last entry: everything up to it is committed.
            self.log.commit_to(snap.index)
            self._send(AppendResponse(self.id, msg.frm, self.term, index=self.log.committed))
            return
        # Entries handed out in an outstanding Ready stay valid: the caller applies
        # them, then restores this snapshot from the next Ready (its index is higher).
        self.log.restore(snap)
        self.snapshot = snap
        self.conf = snap.conf
        self.sessions = ClientSessions.from_snapshot(snap.sessions)
        self._send(AppendResponse(self.id, msg.frm, self.term, index=snap.index))

    def _send(self, msg: Message) -> None:
        self._msgs.append(msg)


__all__ = [
    "ConfState",
    "PersistedState",
    "Progress",
    "ProgressState",
    "RaftConfig",
    "RaftNode",
    "Ready",
]
