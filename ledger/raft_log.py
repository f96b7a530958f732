"""The in-memory Raft log: a snapshot point, the entries after it, and what is unstable.

The node keeps every entry since its last snapshot in memory (compaction bounds that) and
remembers which suffix has not yet been handed to storage (`unstable_from`), as etcd/raft's
`unstable` does. Persisting is the caller's job (the Ready contract); the log only says
what to persist and learns, through `stable_to`, what has been.
"""

from __future__ import annotations

from collections.abc import Sequence

from gd.ledger.raft_records import Entry, RaftLocalError, RaftRemoteError, Snapshot


class RaftLog:
    """Entries `snapshot_index + 1 .. last_index`, plus commit and applied indices."""

    def __init__(self, snapshot: Snapshot, entries: Sequence[Entry], commit: int) -> None:
        self.snapshot_index = snapshot.index
        self.snapshot_term = snapshot.term
        self.entries: list[Entry] = list(entries)
        for offset, entry in enumerate(self.entries, start=snapshot.index + 1):
            if entry.index != offset:
                raise RaftLocalError(f"stored entries not contiguous at {entry.index}")
        if not snapshot.index <= commit <= self.last_index():
            raise RaftLocalError(f"stored commit {commit} outside the stored log")
        self.committed = commit
        # On restart the application resumes from the snapshot; entries after it are
        # handed out again (applying them is idempotent by index for the caller).
        self.applied = snapshot.index
        self.unstable_from = self.last_index() + 1
        # A snapshot received from the leader that storage has not yet persisted.
        self.pending_snapshot: Snapshot | None = None

    # ------------------------------------------------------------------ queries

    def first_index(self) -> int:
        return self.snapshot_index + 1

    def last_index(self) -> int:
        return self.snapshot_index + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot_term

    def term(self, index: int) -> int | None:
        """Term of the entry at `index`, or None if compacted away or beyond the end."""
        if index == self.snapshot_index:
            return self.snapshot_term
        if index < self.snapshot_index or index > self.last_index():
            return None
        return self.entries[index - self.snapshot_index - 1].term

    def entry(self, index: int) -> Entry:
        if not self.snapshot_index < index <= self.last_index():
            raise RaftLocalError(f"entry {index} not in log")
        return self.entries[index - self.snapshot_index - 1]

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries in [lo, hi); at least one if any, then up to `max_bytes` in total."""
        if lo <= self.snapshot_index:
            raise RaftLocalError(
                f"entries from {lo} are compacted (snapshot {self.snapshot_index})")
        hi = min(hi, self.last_index() + 1)
        chosen = self.entries[lo - self.snapshot_index - 1:hi - self.snapshot_index - 1]
        if max_bytes is None:
            return chosen
        total = 0
        for count, entry in enumerate(chosen):
            total += entry.size
            if count and total > max_bytes:
                return chosen[:count]
        return chosen

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: a candidate's log is at least as up to date as ours."""
        return (last_term, last_index) >= (self.last_term(), self.last_index())

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """Largest index <= `index` whose term is <= `term` (fast backtracking).

        No entry at or below that index can match a log whose entry at `index` has
        term `term`, so the leader can skip the whole run of mismatching terms.
        """
        index = min(index, self.last_index())
        while index > self.snapshot_index:
            entry_term = self.term(index)
            if entry_term is not None and entry_term <= term:
                break
            index -= 1
        return index

    def unstable_entries(self) -> list[Entry]:
        if self.unstable_from > self.last_index():
            return []
        return self.slice(self.unstable_from, self.last_index() + 1)

    def committed_unapplied(self) -> list[Entry]:
        """Entries committed but not yet handed to the application."""
        lo = max(self.applied, self.snapshot_index) + 1
        if self.pending_snapshot is not None or lo > self.committed:
            return []
        return self.slice(lo, self.committed + 1)

    # ------------------------------------------------------------------ changes

    def append(self, entries: Sequence[Entry]) -> None:
        """Append `entries`, truncating any existing suffix from the first one's index."""
        if not entries:
            return
        first = entries[0].index
        if first <= self.committed:
            raise RaftLocalError(f"append at {first} would overwrite committed {self.committed}")
        if first > self.last_index() + 1:
            raise RaftLocalError(f"append at {first} leaves a gap after {self.last_index()}")
        del self.entries[first - self.snapshot_index - 1:]
        self.entries.extend(entries)
        self.unstable_from = min(self.unstable_from, first)

    def maybe_append(self, prev_index: int, prev_term: int, commit: int,
                     entries: Sequence[Entry]) -> int | None:
        """Follower side of AppendEntries; returns the last index now matching, or None.

        Entries already present with the same term are kept (a duplicated or reordered
        append must never truncate a newer suffix); the first conflicting one and all
        after it are replaced (Raft §5.3). A conflict at or below the commit index means
        the leader contradicts a committed entry: that is refused as remote misbehaviour.
        """
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = 0
        for entry in entries:
            if entry.index <= self.snapshot_index:
                continue  # already covered by our snapshot, which holds committed state
            if not self.match_term(entry.index, entry.term):
                conflict = entry.index
                break
        if conflict:
            if conflict <= self.committed:
                raise RaftRemoteError(
                    f"append conflicts with committed entry {conflict} (commit {self.committed})")
            self.append(entries[conflict - prev_index - 1:])
        self.commit_to(min(commit, last_new))
        return last_new

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise RaftRemoteError(f"commit {index} beyond last index {self.last_index()}")
            self.committed = index

    def stable_to(self, index: int, term: int) -> None:
        """Storage persisted entries up to (`index`, `term`)."""
        if self.term(index) == term and index >= self.unstable_from:
            self.unstable_from = index + 1

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a snapshot received from the leader (Raft §7)."""
        self.snapshot_index = snapshot.index
        self.snapshot_term = snapshot.term
        self.entries = []
        self.committed = snapshot.index
        self.unstable_from = snapshot.index + 1
        self.pending_snapshot = snapshot

    def compact(self, index: int) -> int:
        """Drop entries up to `index` (already in a snapshot); returns its term."""
        term = self.term(index)
        if term is None or index > self.applied or index < self.snapshot_index:
            raise RaftLocalError(f"cannot compact to {index}: applied {self.applied}, "
                                 f"log {self.snapshot_index}..{self.last_index()}")
        del self.entries[:index - self.snapshot_index]
        self.snapshot_index = index
        self.snapshot_term = term
        return term
