"""Client sessions: which (client_id, request_id) pairs committed, and at which index.

A client whose proposal timed out cannot tell whether it was lost or committed; it
retries with the same ids (Ongaro's thesis §6.3, "implementing linearizable semantics").
The table is a function of the committed log alone, so every node derives the same one,
and it travels in snapshots. Applying a committed entry whose ids were already seen marks
it a duplicate: the application skips it and the client gets the first commit's index.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from gd.ledger.raft_records import Entry, RaftEntryKind

# Requests remembered per client. A client pipelines at most this many outstanding
# proposals; older ones are forgotten and a retry of one of those is refused as stale
# (counted as a duplicate) rather than committed twice.
MAX_REQUESTS_PER_CLIENT = 1024
# Clients remembered. Region members and their local writers are a few dozen clients; the
# bound keeps a flood of fresh client ids from growing every node's memory without limit.
# The client with the oldest last commit is forgotten first (deterministic on all nodes).
MAX_CLIENT_SESSIONS = 10_000


class RequestState(enum.Enum):
    COMMITTED = "committed"  # committed and applied at `index`
    PENDING = "pending"  # in this node's log at `index`, not yet known committed
    EXPIRED = "expired"  # older than the session's memory: it may or may not have committed
    UNKNOWN = "unknown"  # this node has not seen it: safe to retry with the same ids


@dataclass(frozen=True, slots=True)
class RequestStatus:
    """Answer to `lookup(client_id, request_id)`."""

    state: RequestState
    index: int = 0


class _Session:
    __slots__ = ("floor", "last_index", "requests")

    def __init__(self, floor: int = 0) -> None:
        self.floor = floor  # every request id <= floor is forgotten
        self.requests: dict[int, int] = {}
        self.last_index = 0


class ClientSessions:
    """The deduplication table, advanced entry by entry in log order."""

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}

    def lookup(self, client_id: str, request_id: int) -> RequestStatus:
        session = self._sessions.get(client_id)
        if session is None:
            return RequestStatus(RequestState.UNKNOWN)
        if request_id in session.requests:
            return RequestStatus(RequestState.COMMITTED, session.requests[request_id])
        if request_id <= session.floor:
            return RequestStatus(RequestState.EXPIRED)
        return RequestStatus(RequestState.UNKNOWN)

    def apply(self, entry: Entry) -> bool:
        """Record a committed entry; return True if it duplicates an earlier request."""
        if entry.kind is not RaftEntryKind.NORMAL or not entry.client_id:
            return False
        session = self._sessions.get(entry.client_id)
        if session is None:
            session = self._sessions[entry.client_id] = _Session()
        if entry.request_id in session.requests or entry.request_id <= session.floor:
            return True
        session.requests[entry.request_id] = entry.index
        session.last_index = entry.index
        if len(session.requests) > MAX_REQUESTS_PER_CLIENT:
            oldest = min(session.requests)
            del session.requests[oldest]
            session.floor = max(session.floor, oldest)
        self._evict_clients()
        return False

    def _evict_clients(self) -> None:
        while len(self._sessions) > MAX_CLIENT_SESSIONS:
            victim = min(self._sessions, key=lambda c: (self._sessions[c].last_index, c))
            del self._sessions[victim]

    def to_snapshot(self) -> tuple[tuple[str, int, tuple[tuple[int, int], ...]], ...]:
        return tuple(
            (cid, s.floor, tuple(sorted(s.requests.items())))
            for cid, s in sorted(self._sessions.items())
        )

    @classmethod
    def from_snapshot(
        cls, sessions: Iterable[tuple[str, int, Iterable[tuple[int, int]]]]
    ) -> ClientSessions:
        table = cls()
        for cid, floor, requests in sessions:
            session = table._sessions[cid] = _Session(floor)
            session.requests = dict(requests)
            session.last_index = max(session.requests.values(), default=0)
        return table
