"""Raft's records and wire messages: frozen data classes with strict plain-data codecs.

Everything a Raft node persists (entries, hard state, snapshots) or sends (votes, appends,
heartbeats, snapshots, forwarded proposals) is defined here, with `to_plain()` producing
canonical data for `gd.genome.canonical.encode` and `from_plain()` checking every field of
untrusted data. The messages cross organisational boundaries, so decoding is strict and
bounded: any malformed input raises `RaftRemoteError` and never reaches the state machine.
Nothing here is pickled; a peer can only ever make us build these plain records.

Entry and message layouts follow the Raft paper (Ongaro & Ousterhout 2014, Figure 2) with
etcd/raft's additions: pre-vote (thesis §9.6), heartbeats separate from appends (so a
heartbeat can carry a commit index bounded by what the follower is known to hold), and a
rejection hint for fast log backtracking (thesis §5.3 "optimisation").
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from gd.genome import canonical
from gd.genome.errors import DecodeError
from gd.ledger.errors import LocalLedgerError, RemoteLedgerError

# Terms and indices are unsigned 64-bit counters in every Raft we interoperate with in
# spirit (etcd, hashicorp); anything larger is garbage, not a long-lived cluster.
MAX_COUNTER = 2**63 - 1
# Node ids are libp2p peer ids (52 chars for Ed25519 `12D3KooW...`); test ids are short.
# 128 leaves room for other multihash forms without letting a peer send megabyte "names".
MAX_NODE_ID_LEN = 128
# Client ids identify a proposer's session (usually its peer id plus a suffix).
MAX_CLIENT_ID_LEN = 128
# One entry holds one ledger batch; 1 MiB bounds what one hostile append can allocate
# per entry while leaving room for a batch of a few thousand signed ledger entries.
MAX_ENTRY_BYTES = 1024 * 1024
# Entries per append message: etcd defaults MaxSizePerMsg to 1 MiB and our batches are
# coarse, so a few thousand entries per message is already more than a sender uses.
MAX_ENTRIES_PER_MESSAGE = 4096
# A region has 3 or 5 voters and some learners; 1024 members is far beyond any region
# and bounds the size of a configuration a snapshot can make us build.
MAX_MEMBERS = 1024
# Client sessions carried in a snapshot (see raft_sessions.MAX_CLIENT_SESSIONS).
MAX_SNAPSHOT_SESSIONS = 100_000


class RaftLocalError(LocalLedgerError):
    """The caller misused the Raft core (bad proposal, ready/advance out of order)."""


class RaftRemoteError(RemoteLedgerError):
    """A peer's bytes or message do not hold up (malformed, out of range, contradictory).

    The node's state is unchanged when this is raised; drop the message and score the peer.
    """


class ProposalDropped(RaftLocalError):
    """A proposal could not be accepted now (no known leader, backpressure, change pending).

    Not a bug: the client retries later with the same (client_id, request_id), which is
    safe because committed requests are deduplicated.
    """


class EntryKind(enum.IntEnum):
    """What a log entry carries."""

    NORMAL = 0  # application data (a ledger batch)
    NOOP = 1  # the empty entry a new leader appends to commit its term (Raft §5.4.2)
    CONF_CHANGE = 2  # a single-server membership change (thesis §4.1)


class ConfChangeOp(enum.IntEnum):
    """Single-server membership changes; each moves at most one voter (thesis §4.1)."""

    ADD_VOTER = 0  # add a new voter, or promote a learner to voter
    ADD_LEARNER = 1  # add a non-voting member that receives committed entries
    REMOVE_NODE = 2  # remove a voter or a learner


class Role(enum.Enum):
    """A node's role; only followers, pre-candidates and candidates can become leaders."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


# --------------------------------------------------------------------------- field checks


def _field(obj: Mapping[str, Any], name: str) -> Any:
    if name not in obj:
        raise RaftRemoteError(f"missing field {name!r}")
    return obj[name]


def _mapping(value: Any, what: str, keys: Iterable[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RaftRemoteError(f"{what}: expected a map, got {type(value).__name__}")
    extra = set(value) - set(keys)
    if extra:
        raise RaftRemoteError(f"{what}: unknown fields {sorted(extra)}")
    return value


def _counter(obj: Mapping[str, Any], name: str) -> int:
    value = _field(obj, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RaftRemoteError(f"{name}: expected an int, got {type(value).__name__}")
    if not 0 <= value <= MAX_COUNTER:
        raise RaftRemoteError(f"{name}: {value} out of range")
    return value


def _flag(obj: Mapping[str, Any], name: str) -> bool:
    value = _field(obj, name)
    if not isinstance(value, bool):
        raise RaftRemoteError(f"{name}: expected a bool, got {type(value).__name__}")
    return value


def _text(value: Any, name: str, limit: int, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise RaftRemoteError(f"{name}: expected a str, got {type(value).__name__}")
    if len(value) > limit or (not value and not allow_empty):
        raise RaftRemoteError(f"{name}: length {len(value)} outside 1..{limit}")
    return value


def _node_id(obj: Mapping[str, Any], name: str) -> str:
    return _text(_field(obj, name), name, MAX_NODE_ID_LEN)


def _opt_node_id(obj: Mapping[str, Any], name: str) -> str | None:
    value = _field(obj, name)
    return None if value is None else _text(value, name, MAX_NODE_ID_LEN)


def _blob(obj: Mapping[str, Any], name: str, limit: int) -> bytes:
    value = _field(obj, name)
    if not isinstance(value, bytes):
        raise RaftRemoteError(f"{name}: expected bytes, got {type(value).__name__}")
    if len(value) > limit:
        raise RaftRemoteError(f"{name}: {len(value)} bytes exceeds {limit}")
    return value


def _seq(obj: Mapping[str, Any], name: str, limit: int) -> list[Any]:
    value = _field(obj, name)
    if not isinstance(value, list | tuple):
        raise RaftRemoteError(f"{name}: expected a list, got {type(value).__name__}")
    if len(value) > limit:
        raise RaftRemoteError(f"{name}: {len(value)} items exceeds {limit}")
    return list(value)


def check_node_id(node_id: str) -> str:
    """Validate a node id supplied by local code; raise `RaftLocalError` if unusable."""
    if not isinstance(node_id, str) or not 0 < len(node_id) <= MAX_NODE_ID_LEN:
        raise RaftLocalError(f"node id must be a str of 1..{MAX_NODE_ID_LEN} chars")
    return node_id


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. `client_id`/`request_id` make proposals idempotent (thesis §6.3).

    Internal entries (no-ops, bootstrap configuration) have an empty `client_id` and are
    never deduplicated.
    """

    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""
    client_id: str = ""
    request_id: int = 0

    def to_plain(self) -> dict[str, Any]:
        return {"c": self.client_id, "d": self.data, "i": self.index, "k": int(self.kind),
                "r": self.request_id, "t": self.term}

    @classmethod
    def from_plain(cls, obj: Any) -> Entry:
        obj = _mapping(obj, "entry", "cdikrt")
        kind_value = _counter(obj, "k")
        if kind_value not in EntryKind._value2member_map_:
            raise RaftRemoteError(f"entry kind {kind_value} unknown")
        kind = EntryKind(kind_value)
        data = _blob(obj, "d", MAX_ENTRY_BYTES)
        if kind is EntryKind.CONF_CHANGE:
            ConfChange.decode(data)  # a malformed change must not get into anyone's log
        return cls(term=_counter(obj, "t"), index=_counter(obj, "i"), kind=kind, data=data,
                   client_id=_text(_field(obj, "c"), "c", MAX_CLIENT_ID_LEN, allow_empty=True),
                   request_id=_counter(obj, "r"))

    @property
    def size(self) -> int:
        """Approximate wire size, used for batching and backpressure."""
        return len(self.data) + len(self.client_id) + 24


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A single-server membership change, carried in a CONF_CHANGE entry's data."""

    op: ConfChangeOp
    node_id: str

    def to_plain(self) -> dict[str, Any]:
        return {"n": self.node_id, "o": int(self.op)}

    def encode(self) -> bytes:
        return canonical.encode(self.to_plain())

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        try:
            obj = canonical.decode(data)
        except DecodeError as exc:
            raise RaftRemoteError(f"conf change: {exc}") from exc
        obj = _mapping(obj, "conf change", "no")
        op = _counter(obj, "o")
        if op not in ConfChangeOp._value2member_map_:
            raise RaftRemoteError(f"conf change op {op} unknown")
        return cls(op=ConfChangeOp(op), node_id=_node_id(obj, "n"))


@dataclass(frozen=True, slots=True)
class ConfState:
    """The membership in force: voters decide, learners only receive committed entries."""

    voters: frozenset[str] = frozenset()
    learners: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.voters & self.learners:
            both = sorted(self.voters & self.learners)
            raise RaftLocalError(f"nodes both voter and learner: {both}")

    @property
    def members(self) -> frozenset[str]:
        return self.voters | self.learners

    def to_plain(self) -> dict[str, Any]:
        return {"l": sorted(self.learners), "v": sorted(self.voters)}

    @classmethod
    def from_plain(cls, obj: Any) -> ConfState:
        obj = _mapping(obj, "conf state", "lv")
        voters = [_text(v, "v[]", MAX_NODE_ID_LEN) for v in _seq(obj, "v", MAX_MEMBERS)]
        learners = [_text(v, "l[]", MAX_NODE_ID_LEN) for v in _seq(obj, "l", MAX_MEMBERS)]
        if set(voters) & set(learners):
            raise RaftRemoteError("conf state: a node is both voter and learner")
        return cls(voters=frozenset(voters), learners=frozenset(learners))

    def applied(self, change: ConfChange) -> ConfState:
        """The configuration after `change`, or `self` if the change does not apply.

        Committed changes that no longer make sense (adding a voter that already is one,
        removing a stranger) are skipped identically on every node, keeping them in step.
        """
        node = change.node_id
        voters, learners = set(self.voters), set(self.learners)
        if change.op is ConfChangeOp.ADD_VOTER:
            if node in voters:
                return self
            learners.discard(node)
            voters.add(node)
        elif change.op is ConfChangeOp.ADD_LEARNER:
            if node in self.members:
                return self
            learners.add(node)
        else:
            if node not in self.members or (node in voters and len(voters) == 1):
                return self
            voters.discard(node)
            learners.discard(node)
        return ConfState(frozenset(voters), frozenset(learners))


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before a node answers anyone (Raft Figure 2 + commit)."""

    term: int = 0
    vote: str | None = None
    commit: int = 0

    def to_plain(self) -> dict[str, Any]:
        return {"c": self.commit, "t": self.term, "v": self.vote}

    @classmethod
    def from_plain(cls, obj: Any) -> HardState:
        obj = _mapping(obj, "hard state", "ctv")
        return cls(term=_counter(obj, "t"), vote=_opt_node_id(obj, "v"), commit=_counter(obj, "c"))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine at `index` plus what Raft needs to resume after it.

    `sessions` is the idempotency table at `index` (client id → [(request id, index)],
    plus the floor below which requests are forgotten); `data` is the application's own
    snapshot, opaque to Raft.
    """

    index: int = 0
    term: int = 0
    conf: ConfState = field(default_factory=ConfState)
    sessions: tuple[tuple[str, int, tuple[tuple[int, int], ...]], ...] = ()
    data: bytes = b""

    def to_plain(self) -> dict[str, Any]:
        return {
            "c": self.conf.to_plain(),
            "d": self.data,
            "i": self.index,
            "s": [[cid, floor, [list(p) for p in reqs]] for cid, floor, reqs in self.sessions],
            "t": self.term,
        }

    @classmethod
    def from_plain(cls, obj: Any) -> Snapshot:
        obj = _mapping(obj, "snapshot", "cdist")
        sessions = []
        for item in _seq(obj, "s", MAX_SNAPSHOT_SESSIONS):
            if not isinstance(item, list | tuple) or len(item) != 3:
                raise RaftRemoteError("snapshot session: expected [client, floor, requests]")
            cid = _text(item[0], "s[].client", MAX_CLIENT_ID_LEN)
            floor = _counter({"f": item[1]}, "f")
            reqs = []
            for pair in _seq({"r": item[2]}, "r", MAX_SNAPSHOT_SESSIONS):
                if not isinstance(pair, list | tuple) or len(pair) != 2:
                    raise RaftRemoteError("snapshot session request: expected [request, index]")
                reqs.append((_counter({"r": pair[0]}, "r"), _counter({"i": pair[1]}, "i")))
            sessions.append((cid, floor, tuple(reqs)))
        return cls(index=_counter(obj, "i"), term=_counter(obj, "t"),
                   conf=ConfState.from_plain(_field(obj, "c")), sessions=tuple(sessions),
                   data=_blob(obj, "d", canonical.MAX_RECORD_BYTES))


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Message:
    """Base of every Raft message: sender, receiver and the sender's term.

    A term of 0 marks a message that is not part of the term protocol (a forwarded
    proposal), as in etcd/raft.
    """

    KIND: ClassVar[str] = ""
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

    @classmethod
    def _from_body(cls, frm: str, to: str, term: int, body: Mapping[str, Any]) -> Message:
        raise RaftRemoteError(f"message kind {cls.KIND!r} has no decoder")

    @staticmethod
    def from_plain(obj: Any) -> Message:
        """Decode a message from plain data; any defect raises `RaftRemoteError`."""
        obj = _mapping(obj, "message", "bfkot")
        kind = _field(obj, "k")
        cls = _MESSAGE_KINDS.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise RaftRemoteError(f"unknown message kind {kind!r}")
        body = _field(obj, "b")
        if not isinstance(body, Mapping):
            raise RaftRemoteError("message body: expected a map")
        return cls._from_body(_node_id(obj, "f"), _node_id(obj, "o"), _counter(obj, "t"), body)

    @staticmethod
    def decode(data: bytes) -> Message:
        """Decode wire bytes; malformed or oversize input raises `RaftRemoteError`."""
        try:
            obj = canonical.decode(data)
        except DecodeError as exc:
            raise RaftRemoteError(f"raft message: {exc}") from exc
        return Message.from_plain(obj)


@dataclass(frozen=True, slots=True)
class VoteRequest(Message):
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
    def _from_body(cls, frm: str, to: str, term: int, body: Mapping[str, Any]) -> Message:
        body = _mapping(body, "vote", "ipt")
        return cls(frm, to, term, last_index=_counter(body, "i"), last_term=_counter(body, "t"),
                   prevote=_flag(body, "p"))


@dataclass(frozen=True, slots=True)
class VoteResponse(Message):
    """A (pre-)vote answer. A granted pre-vote echoes the probe's future term."""

    KIND: ClassVar[str] = "vote_resp"
    granted: bool = False
    prevote: bool = False

    def _body(self) -> dict[str, Any]:
        return {"g": self.granted, "p": self.prevote}

    @classmethod
    def _from_body(cls, frm: str, to: str, term: int, body: Mapping[str, Any]) -> Message:
        body = _mapping(body, "vote_resp", "gp")
        return cls(frm, to, term, granted=_flag(body, "g"), prevote=_flag(body, "p"))


@dataclass(frozen=True, slots=True)
class AppendEntries(Message):
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
    def _from_body(cls, frm: str, to: str, term: int, body: Mapping[str, Any]) -> Message:
        body = _mapping(body, "append", "ceit")
        prev_index = _counter(body, "i")
        entries = tuple(Entry.from_plain(e) for e in _seq(body, "e", MAX_ENTRIES_PER_MESSAGE))
        prev_term = _counter(body, "t")
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
                   commit=_counter(body, "c"))


@dataclass(frozen=True, slots=True)
class AppendResponse(Message):
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
    def _from_body(cls, frm: str, to: str, term: int, body: Mapping[str, Any]) -> Message:
        body = _mapping(body, "append_resp", "hirt")
        return cls(frm, to, term, index=_counter(body, "i"), reject=_flag(body, "r"),
                   hint_index=_counter(body, "h"), hint_term=_counter(body, "t"))


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """Leader liveness; `commit` is capped at what the follower is known to hold."""

    KIND: ClassVar[str] = "heartbeat"
    commit: int = 0

    def _body(self) -> dict[str, Any]:
        return {"c": self.commit}

    @classmethod
    def _from_body(cls, frm: str, to: str, term: int, body: Mapping[str, Any]) -> Message:
        body = _mapping(body, "heartbeat", "c")
        return cls(frm, to, term, commit=_counter(body, "c"))


@dataclass(frozen=True, slots=True)
class HeartbeatResponse(Message):
    """Proof of life for check-quorum, and a nudge to resume replication."""

    KIND: ClassVar[str] = "heartbeat_resp"

    @classmethod
    def _from_body(cls, frm: str, to: str, term: int, body: Mapping[str, Any]) -> Message:
        _mapping(body, "heartbeat_resp", "")
        return cls(frm, to, term)


@dataclass(frozen=True, slots=True)
class InstallSnapshot(Message):
    """InstallSnapshot (Raft §7): for a follower or learner behind the leader's log start."""

    KIND: ClassVar[str] = "snapshot"
    snapshot: Snapshot = field(default_factory=Snapshot)

    def _body(self) -> dict[str, Any]:
        return {"s": self.snapshot.to_plain()}

    @classmethod
    def _from_body(cls, frm: str, to: str, term: int, body: Mapping[str, Any]) -> Message:
        body = _mapping(body, "snapshot", "s")
        snapshot = Snapshot.from_plain(_field(body, "s"))
        if snapshot.term > term:
            raise RaftRemoteError("snapshot: term beyond the message term")
        return cls(frm, to, term, snapshot=snapshot)


@dataclass(frozen=True, slots=True)
class Propose(Message):
    """Proposals forwarded by a follower or learner to the leader it knows (term 0).

    Entries carry index and term 0: the leader assigns both when it appends them.
    """

    KIND: ClassVar[str] = "propose"
    entries: tuple[Entry, ...] = ()

    def _body(self) -> dict[str, Any]:
        return {"e": [e.to_plain() for e in self.entries]}

    @classmethod
    def _from_body(cls, frm: str, to: str, term: int, body: Mapping[str, Any]) -> Message:
        body = _mapping(body, "propose", "e")
        entries = tuple(Entry.from_plain(e) for e in _seq(body, "e", MAX_ENTRIES_PER_MESSAGE))
        for entry in entries:
            if entry.kind is not EntryKind.NORMAL or not entry.client_id or entry.request_id < 1:
                raise RaftRemoteError("propose: only client entries with ids can be forwarded")
        return cls(frm, to, term, entries=entries)


_MESSAGE_KINDS: dict[str, type[Message]] = {
    cls.KIND: cls
    for cls in (VoteRequest, VoteResponse, AppendEntries, AppendResponse, Heartbeat,
                HeartbeatResponse, InstallSnapshot, Propose)
}
