"""Raft's records (entries, membership, hard state, snapshots), limits, errors and the
strict plain-data field checks every Raft codec uses (`gd.ledger.raft_messages` for the
wire messages built on them).

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
from typing import Any

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


class RaftEntryKind(enum.IntEnum):
    """What a log entry carries."""

    NORMAL = 0  # application data (a ledger batch)
    NOOP = 1  # the empty entry a new leader appends to commit its term (Raft §5.4.2)
    CONF_CHANGE = 2  # a single-server membership change (thesis §4.1)


class ConfChangeOp(enum.IntEnum):
    """Single-server membership changes; each moves at most one voter (thesis §4.1)."""

    ADD_VOTER = 0  # add a new voter, or promote a learner to voter
    ADD_LEARNER = 1  # add a non-voting member that receives committed entries
    REMOVE_NODE = 2  # remove a voter or a learner


class RaftRole(enum.Enum):
    """A node's role; only followers, pre-candidates and candidates can become leaders."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


# --------------------------------------------------------------------------- field checks


def plain_field(obj: Mapping[str, Any], name: str) -> Any:
    if name not in obj:
        raise RaftRemoteError(f"missing field {name!r}")
    return obj[name]


def plain_mapping(value: Any, what: str, keys: Iterable[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RaftRemoteError(f"{what}: expected a map, got {type(value).__name__}")
    extra = set(value) - set(keys)
    if extra:
        raise RaftRemoteError(f"{what}: unknown fields {sorted(extra)}")
    return value


def plain_counter(obj: Mapping[str, Any], name: str) -> int:
    value = plain_field(obj, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RaftRemoteError(f"{name}: expected an int, got {type(value).__name__}")
    if not 0 <= value <= MAX_COUNTER:
        raise RaftRemoteError(f"{name}: {value} out of range")
    return value


def plain_flag(obj: Mapping[str, Any], name: str) -> bool:
    value = plain_field(obj, name)
    if not isinstance(value, bool):
        raise RaftRemoteError(f"{name}: expected a bool, got {type(value).__name__}")
    return value


def plain_text(value: Any, name: str, limit: int, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise RaftRemoteError(f"{name}: expected a str, got {type(value).__name__}")
    if len(value) > limit or (not value and not allow_empty):
        raise RaftRemoteError(f"{name}: length {len(value)} outside 1..{limit}")
    return value


def plain_node_id(obj: Mapping[str, Any], name: str) -> str:
    return plain_text(plain_field(obj, name), name, MAX_NODE_ID_LEN)


def plain_opt_node_id(obj: Mapping[str, Any], name: str) -> str | None:
    value = plain_field(obj, name)
    return None if value is None else plain_text(value, name, MAX_NODE_ID_LEN)


def plain_blob(obj: Mapping[str, Any], name: str, limit: int) -> bytes:
    value = plain_field(obj, name)
    if not isinstance(value, bytes):
        raise RaftRemoteError(f"{name}: expected bytes, got {type(value).__name__}")
    if len(value) > limit:
        raise RaftRemoteError(f"{name}: {len(value)} bytes exceeds {limit}")
    return value


def plain_seq(obj: Mapping[str, Any], name: str, limit: int) -> list[Any]:
    value = plain_field(obj, name)
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
    kind: RaftEntryKind = RaftEntryKind.NORMAL
    data: bytes = b""
    client_id: str = ""
    request_id: int = 0

    def to_plain(self) -> dict[str, Any]:
        return {"c": self.client_id, "d": self.data, "i": self.index, "k": int(self.kind),
                "r": self.request_id, "t": self.term}

    @classmethod
    def from_plain(cls, obj: Any) -> Entry:
        obj = plain_mapping(obj, "entry", "cdikrt")
        kind_value = plain_counter(obj, "k")
        if kind_value not in RaftEntryKind._value2member_map_:
            raise RaftRemoteError(f"entry kind {kind_value} unknown")
        kind = RaftEntryKind(kind_value)
        data = plain_blob(obj, "d", MAX_ENTRY_BYTES)
        if kind is RaftEntryKind.CONF_CHANGE:
            ConfChange.decode(data)  # a malformed change must not get into anyone's log
        return cls(term=plain_counter(obj, "t"), index=plain_counter(obj, "i"), kind=kind,
                   data=data, client_id=plain_text(plain_field(obj, "c"), "c",
                                                   MAX_CLIENT_ID_LEN, allow_empty=True),
                   request_id=plain_counter(obj, "r"))

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
        obj = plain_mapping(obj, "conf change", "no")
        op = plain_counter(obj, "o")
        if op not in ConfChangeOp._value2member_map_:
            raise RaftRemoteError(f"conf change op {op} unknown")
        return cls(op=ConfChangeOp(op), node_id=plain_node_id(obj, "n"))


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
        obj = plain_mapping(obj, "conf state", "lv")
        voters = [plain_text(v, "v[]", MAX_NODE_ID_LEN) for v in plain_seq(obj, "v", MAX_MEMBERS)]
        learners = [plain_text(v, "l[]", MAX_NODE_ID_LEN) for v in plain_seq(obj, "l", MAX_MEMBERS)]
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
        obj = plain_mapping(obj, "hard state", "ctv")
        return cls(term=plain_counter(obj, "t"), vote=plain_opt_node_id(obj, "v"),
                   commit=plain_counter(obj, "c"))


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
        obj = plain_mapping(obj, "snapshot", "cdist")
        sessions = []
        for item in plain_seq(obj, "s", MAX_SNAPSHOT_SESSIONS):
            if not isinstance(item, list | tuple) or len(item) != 3:
                raise RaftRemoteError("snapshot session: expected [client, floor, requests]")
            cid = plain_text(item[0], "s[].client", MAX_CLIENT_ID_LEN)
            floor = plain_counter({"f": item[1]}, "f")
            reqs = []
            for pair in plain_seq({"r": item[2]}, "r", MAX_SNAPSHOT_SESSIONS):
                if not isinstance(pair, list | tuple) or len(pair) != 2:
                    raise RaftRemoteError("snapshot session request: expected [request, index]")
                reqs.append((plain_counter({"r": pair[0]}, "r"),
                             plain_counter({"i": pair[1]}, "i")))
            sessions.append((cid, floor, tuple(reqs)))
        return cls(index=plain_counter(obj, "i"), term=plain_counter(obj, "t"),
                   conf=ConfState.from_plain(plain_field(obj, "c")), sessions=tuple(sessions),
                   data=plain_blob(obj, "d", canonical.MAX_RECORD_BYTES))
