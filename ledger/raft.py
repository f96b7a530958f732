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

import random

from gd.ledger.raft_log import RaftLog
from gd.ledger.raft_messages import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    InstallSnapshot,
    Propose,
    RaftMessage,
    VoteRequest,
    VoteResponse,
)
from gd.ledger.raft_progress import Progress, ProgressState, RaftConfig, Ready
from gd.ledger.raft_records import (
    MAX_CLIENT_ID_LEN,
    MAX_ENTRY_BYTES,
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    HardState,
    ProposalDropped,
    RaftEntryKind,
    RaftLocalError,
    RaftRemoteError,
    RaftRole,
    Snapshot,
    check_node_id,
)
from gd.ledger.raft_replication import Replication
from gd.ledger.raft_sessions import ClientSessions, RequestState, RequestStatus
from gd.ledger.raft_storage import PersistedState


class RaftNode(Replication):
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
        self.role = RaftRole.FOLLOWER
        self.leader: str | None = None
        self.progress: dict[str, Progress] = {}
        self._votes: dict[str, bool] = {}
        self._msgs: list[RaftMessage] = []
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
        return self.role is RaftRole.LEADER

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
                        and entry.request_id == request_id and entry.kind is RaftEntryKind.NORMAL:
                    index = entry.index
                    break
        if index is not None:
            return RequestStatus(RequestState.PENDING, index)
        return status

    # ------------------------------------------------------------------ inputs

    def tick(self) -> None:
        """Advance the logical clock by one tick."""
        if self.role is RaftRole.LEADER:
            if not self._tick_leader():
                self._become_follower(self.term, None)
            return
        self.election_elapsed += 1
        if self.promotable and self.election_elapsed >= self._randomized_timeout:
            self.election_elapsed = 0
            self.campaign()

    def campaign(self) -> None:
        """Start an election now (pre-vote first when enabled); a no-op for a leader."""
        if self.role is RaftRole.LEADER or not self.promotable:
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
        entry = Entry(0, 0, RaftEntryKind.NORMAL, data, client_id, request_id)
        if self.role is RaftRole.LEADER:
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
        if self.role is not RaftRole.LEADER:
            raise ProposalDropped("membership changes are proposed on the leader")
        check_node_id(change.node_id)
        if self._pending_conf_index > self.log.applied:
            raise ProposalDropped("a membership change is still pending")
        if self.conf.applied(change) == self.conf:
            raise RaftLocalError(f"{change.op.name} {change.node_id} changes nothing")
        index = self.log.last_index() + 1
        entry = Entry(self.term, index, RaftEntryKind.CONF_CHANGE, change.encode())
        self.log.append([entry])
        self._uncommitted_bytes += entry.size
        self._pending_conf_index = index
        self._leaving = self._removes_self(entry)
        self._broadcast_append()
        return index

    def step(self, msg: RaftMessage) -> None:
        """Process one message from a peer. Malformed or impossible input raises
        `RaftRemoteError` (drop the message; the node stays consistent)."""
        if not isinstance(msg, RaftMessage) or type(msg) is RaftMessage:
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
        elif self.role is RaftRole.LEADER:
            self._step_leader(msg)
        elif self.role in (RaftRole.CANDIDATE, RaftRole.PRE_CANDIDATE):
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
            if entry.kind is RaftEntryKind.CONF_CHANGE:
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
        if self.role is RaftRole.LEADER:
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
        return (entry.kind is RaftEntryKind.CONF_CHANGE
                and ConfChange.decode(entry.data) == ConfChange(ConfChangeOp.REMOVE_NODE, self.id))

    def _become_follower(self, term: int, leader: str | None) -> None:
        self._reset(term)
        self.role = RaftRole.FOLLOWER
        self.leader = leader

    def _become_pre_candidate(self) -> None:
        # Term and vote stay as they are: a pre-vote round changes nothing durable.
        self._votes = {}
        self.leader = None
        self._randomized_timeout = self._draw_timeout()
        self.role = RaftRole.PRE_CANDIDATE
        self._request_votes(prevote=True)

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = RaftRole.CANDIDATE
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
        self.role = RaftRole.LEADER
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
        noop = Entry(self.term, last + 1, RaftEntryKind.NOOP)
        self.log.append([noop])
        self._broadcast_append()

    def _in_lease(self) -> bool:
        return (self.config.check_quorum and self.leader is not None
                and self.election_elapsed < self.config.election_ticks)

    def _has_unapplied_conf_change(self) -> bool:
        lo = max(self.log.applied, self.log.snapshot_index) + 1
        if lo > self.log.committed:
            return False
        return any(e.kind is RaftEntryKind.CONF_CHANGE
                   for e in self.log.slice(lo, self.log.committed + 1))

    # ------------------------------------------------------------------ membership

    def _apply_conf_change(self, change: ConfChange) -> None:
        new = self.conf.applied(change)
        if new == self.conf:
            return
        self.conf = new
        if self.role is RaftRole.LEADER:
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
        elif self.role in (RaftRole.CANDIDATE, RaftRole.PRE_CANDIDATE) and not self.promotable:
            self._become_follower(self.term, None)

    # ------------------------------------------------------------------ candidates

    def _step_candidate(self, msg: RaftMessage) -> None:
        if isinstance(msg, AppendEntries | Heartbeat | InstallSnapshot):
            self._become_follower(msg.term, msg.frm)
            self._step_follower(msg)
            return
        if not isinstance(msg, VoteResponse):
            return
        prevoting = self.role is RaftRole.PRE_CANDIDATE
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


__all__ = [
    "ConfState",
    "PersistedState",
    "Progress",
    "ProgressState",
    "RaftConfig",
    "RaftNode",
    "Ready",
]
