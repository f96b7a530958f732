"""Raft's wire messages: votes, appends, heartbeats, snapshots and forwarded proposals,
each a frozen data class with a strict plain-data codec (`RaftMessage.decode` checks
every field of untrusted bytes and raises `RaftRemoteError`; nothing is pickled).

The records they carry (entries, snapshots, membership) and the field checks live in
`gd.ledger.raft_records`. Layouts follow the Raft paper (Ongaro & Ousterhout 2014,
Figure 2) with etcd/raft's additions: pre-vote (thesis §9.6), heartbeats separate from
appends (so a heartbeat can carry a commit index bounded by what the follower is known
to hold), and a rejection hint for fast log backtracking (thesis §5.3 "optimisation").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from gd.genome import canonical
from gd.genome.errors import DecodeError
from gd.ledger.raft_records import (
    MAX_ENTRIES_PER_MESSAGE,
    Entry,
    RaftEntryKind,
    RaftRemoteError,
    Snapshot,
    plain_counter,
    plain_field,
    plain_flag,
    plain_mapping,
    plain_node_id,
    plain_seq,
)

# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class RaftMessage:
    """Base of every Raft message: sender, receiver and the sender's term.

    A term of 0 marks a message that is not part of the term protocol (a forwarded
    proposal), as in etcd/raft.
    """

    KIND: ClassVar[str] = ""
    # What `from_plain` raises on bad input: the frame registry (`gd.protocol.wire`)
    # decodes a `RaftFrame` once and builds its message with these checks.
    WIRE_ERRORS: ClassVar[tuple[type[Exception], ...]] = (RaftRemoteError,)
    frm: str
    to: str
    term: int

    def _body(self) -> dict[str, Any]:
        return {}

    def to_plain(self) -> dict[str, Any]:
        plain = {"f": self.frm, "k": self.KIND, "o": self.to, "t": self.term}
        plain["b"] = self._body()
        return plain

    def encode(self) -> bytes:
        return canonical.encode(self.to_plain())

    @property
    def size(self) -> int:
        """Approximate wire size (entries and snapshot data dominate), for the links'
        queue and write-batch bounds."""
        snapshot: Snapshot | None = getattr(self, "snapshot", None)
        entries: tuple[Entry, ...] = getattr(self, "entries", ())
        extra = len(snapshot.data) + 64 * len(snapshot.sessions) if snapshot else 0
        return 48 + len(self.frm) + len(self.to) + sum(e.size for e in entries) + extra

    @classmethod
    def _from_body(cls, frm: str, to: str, term: int, body: Mapping[str, Any]) -> RaftMessage:
        raise RaftRemoteError(f"message kind {cls.KIND!r} has no decoder")

    @staticmethod
    def from_plain(obj: Any) -> RaftMessage:
        """Decode a message from plain data; any defect raises `RaftRemoteError`."""
        obj = plain_mapping(obj, "message", "bfkot")
        kind = plain_field(obj, "k")
        cls = _MESSAGE_KINDS.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise RaftRemoteError(f"unknown message kind {kind!r}")
        body = plain_field(obj, "b")
        if not isinstance(body, Mapping):
            raise RaftRemoteError("message body: expected a map")
        return cls._from_body(plain_node_id(obj, "f"), plain_node_id(obj, "o"),
                              plain_counter(obj, "t"), body)

    @staticmethod
    def decode(data: bytes) -> RaftMessage:
        """Decode wire bytes; malformed or oversize input raises `RaftRemoteError`."""
        try:
            obj = canonical.decode(data)
        except DecodeError as exc:
            raise RaftRemoteError(f"raft message: {exc}") from exc
        return RaftMessage.from_plain(obj)


@dataclass(frozen=True, slots=True)
class VoteRequest(RaftMessage):
    """RequestVote (Raft §5.2), or a pre-vote probe when `prevote` (thesis §9.6).

    A pre-vote carries the term the sender *would* campaign in, without anyone
    (sender included) adopting it, so a node that cannot win never inflates terms.
    """

    KIND: ClassVar[str] = "vote"
    last_index: int = 0
    last_term: int = 0
    prevote: bool = False

    def _body(self) -> dict[str, Any]:
        return {"i": self.last_index, "p": self.prevote, "t": self.last_term}

    @classmethod
    def _from_body(cls, frm: str, to: str, term: int, body: Mapping[str, Any]) -> RaftMessage:
        body = plain_mapping(body, "vote", "ipt")
        return cls(frm, to, term, last_index=plain_counter(body, "i"),
                   last_term=plain_counter(body, "t"), prevote=plain_flag(body, "p"))


@dataclass(frozen=True, slots=True)
class VoteResponse(RaftMessage):
    """A (pre-)vote answer. A granted pre-vote echoes the probe's future term."""

    KIND: ClassVar[str] = "vote_resp"
    granted: bool = False
    prevote: bool = False

    def _body(self) -> dict[str, Any]:
        return {"g": self.granted, "p": self.prevote}

    @classmethod
    def _from_body(cls, frm: str, to: str, term: int, body: Mapping[str, Any]) -> RaftMessage:
        body = plain_mapping(body, "vote_resp", "gp")
        return cls(frm, to, term, granted=plain_flag(body, "g"), prevote=plain_flag(body, "p"))


@dataclass(frozen=True, slots=True)
class AppendEntries(RaftMessage):
    """AppendEntries (Raft §5.3): entries after (prev_index, prev_term), plus commit."""

    KIND: ClassVar[str] = "append"
    prev_index: int = 0
    prev_term: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0

    def _body(self) -> dict[str, Any]:
        return {"c": self.commit, "e": [e.to_plain() for e in self.entries],
                "i": self.prev_index, "t": self.prev_term}

    @classmethod
    def _from_body(cls, frm: str, to: str, term: int, body: Mapping[str, Any]) -> RaftMessage:
        body = plain_mapping(body, "append", "ceit")
        prev_index = plain_counter(body, "i")
        entries = tuple(Entry.from_plain(e) for e in plain_seq(body, "e", MAX_ENTRIES_PER_MESSAGE))
        prev_term = plain_counter(body, "t")
        last_term = prev_term
        for offset, entry in enumerate(entries, start=1):
            # A leader's log is contiguous and its terms never decrease nor pass its own.
            if entry.index != prev_index + offset:
                raise RaftRemoteError("append: entry indices are not contiguous")
            if not last_term <= entry.term <= term:
                raise RaftRemoteError("append: entry terms out of order")
            last_term = entry.term
        if prev_term > term:
            raise RaftRemoteError("append: prev_term beyond the message term")
        return cls(frm, to, term, prev_index=prev_index, prev_term=prev_term, entries=entries,
                   commit=plain_counter(body, "c"))


@dataclass(frozen=True, slots=True)
class AppendResponse(RaftMessage):
    """Answer to an append, heartbeat or snapshot.

    Success: `index` is the highest index now known to match the leader. Rejection:
    `index` is the rejected prev_index, and (`hint_index`, `hint_term`) the follower's
    best guess of where the logs might agree (etcd's fast backtracking).
    """

    KIND: ClassVar[str] = "append_resp"
    index: int = 0
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0

    def _body(self) -> dict[str, Any]:
        return {"h": self.hint_index, "i": self.index, "r": self.reject, "t": self.hint_term}

    @classmethod
    def _from_body(cls, frm: str, to: str, term: int, body: Mapping[str, Any]) -> RaftMessage:
        body = plain_mapping(body, "append_resp", "hirt")
        return cls(frm, to, term, index=plain_counter(body, "i"), reject=plain_flag(body, "r"),
                   hint_index=plain_counter(body, "h"), hint_term=plain_counter(body, "t"))


@dataclass(frozen=True, slots=True)
class Heartbeat(RaftMessage):
    """Leader liveness; `commit` is capped at what the follower is known to hold."""

    KIND: ClassVar[str] = "heartbeat"
    commit: int = 0

    def _body(self) -> dict[str, Any]:
        return {"c": self.commit}

    @classmethod
    def _from_body(cls, frm: str, to: str, term: int, body: Mapping[str, Any]) -> RaftMessage:
        body = plain_mapping(body, "heartbeat", "c")
        return cls(frm, to, term, commit=plain_counter(body, "c"))


@dataclass(frozen=True, slots=True)
class HeartbeatResponse(RaftMessage):
    """Proof of life for check-quorum, and a nudge to resume replication."""

    KIND: ClassVar[str] = "heartbeat_resp"

    @classmethod
    def _from_body(cls, frm: str, to: str, term: int, body: Mapping[str, Any]) -> RaftMessage:
        plain_mapping(body, "heartbeat_resp", "")
        return cls(frm, to, term)


@dataclass(frozen=True, slots=True)
class InstallSnapshot(RaftMessage):
    """InstallSnapshot (Raft §7): for a follower or learner behind the leader's log start."""

    KIND: ClassVar[str] = "snapshot"
    snapshot: Snapshot = field(default_factory=Snapshot)

    def _body(self) -> dict[str, Any]:
        return {"s": self.snapshot.to_plain()}

    @classmethod
    def _from_body(cls, frm: str, to: str, term: int, body: Mapping[str, Any]) -> RaftMessage:
        body = plain_mapping(body, "snapshot", "s")
        snapshot = Snapshot.from_plain(plain_field(body, "s"))
        if snapshot.term > term:
            raise RaftRemoteError("snapshot: term beyond the message term")
        return cls(frm, to, term, snapshot=snapshot)


@dataclass(frozen=True, slots=True)
class Propose(RaftMessage):
    """Proposals forwarded by a follower or learner to the leader it knows (term 0).

    Entries carry index and term 0: the leader assigns both when it appends them.
    """

    KIND: ClassVar[str] = "propose"
    entries: tuple[Entry, ...] = ()

    def _body(self) -> dict[str, Any]:
        return {"e": [e.to_plain() for e in self.entries]}

    @classmethod
    def _from_body(cls, frm: str, to: str, term: int, body: Mapping[str, Any]) -> RaftMessage:
        body = plain_mapping(body, "propose", "e")
        entries = tuple(Entry.from_plain(e) for e in plain_seq(body, "e", MAX_ENTRIES_PER_MESSAGE))
        for entry in entries:
            if entry.kind is not RaftEntryKind.NORMAL or not entry.client_id \
                    or entry.request_id < 1:
                raise RaftRemoteError("propose: only client entries with ids can be forwarded")
        return cls(frm, to, term, entries=entries)


_MESSAGE_KINDS: dict[str, type[RaftMessage]] = {
    cls.KIND: cls
    for cls in (VoteRequest, VoteResponse, AppendEntries, AppendResponse, Heartbeat,
                HeartbeatResponse, InstallSnapshot, Propose)
}
