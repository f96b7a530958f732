"""Log replication, both sides: the leader's heartbeats, appends, flow control and
commit rule, and the follower's handling of appends, heartbeats and snapshots.

`Replication` is the base of `gd.ledger.raft.RaftNode`, which adds elections, membership
and the Ready/advance cycle; the attributes declared below are the node's state, set by
`RaftNode.__init__`. Rules and their sources are in `gd.ledger.raft`'s docstring.
"""

from __future__ import annotations

from gd.ledger.raft_log import RaftLog
from gd.ledger.raft_messages import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Propose,
    RaftMessage,
)
from gd.ledger.raft_progress import Progress, ProgressState, RaftConfig
from gd.ledger.raft_records import (
    MAX_ENTRIES_PER_MESSAGE,
    ConfState,
    Entry,
    RaftRemoteError,
    RaftRole,
    Snapshot,
)
from gd.ledger.raft_sessions import ClientSessions, RequestState


class Replication:
    """The replication half of a Raft node (see the module docstring)."""

    id: str
    config: RaftConfig
    log: RaftLog
    term: int
    role: RaftRole
    leader: str | None
    conf: ConfState
    snapshot: Snapshot
    sessions: ClientSessions
    progress: dict[str, Progress]
    election_elapsed: int
    _heartbeat_elapsed: int
    _msgs: list[RaftMessage]
    _pending_keys: dict[tuple[str, int], int]
    _uncommitted_bytes: int
    _leaving: bool

    def _quorum(self) -> int:
        return len(self.conf.voters) // 2 + 1

    def _send(self, msg: RaftMessage) -> None:
        self._msgs.append(msg)

    # ------------------------------------------------------------------ leader

    def _tick_leader(self) -> bool:
        """One tick as leader; False when check-quorum says we must step down."""
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
                    return False
                for member, pr in self.progress.items():
                    pr.recent_active = member == self.id
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            for member in sorted(self.progress):
                if member != self.id:
                    pr = self.progress[member]
                    self._send(Heartbeat(self.id, member, self.term,
                                         commit=min(pr.match, self.log.committed)))
        return True

    def _step_leader(self, msg: RaftMessage) -> None:
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
        if self.role is not RaftRole.LEADER or self._leaving:
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

    # ------------------------------------------------------------------ followers

    def _step_follower(self, msg: RaftMessage) -> None:
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


__all__ = ["Replication"]
