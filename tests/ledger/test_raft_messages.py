"""Raft wire messages: exact round trips, and strict decoding of hostile input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gd.genome import canonical
from gd.ledger.raft_messages import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Propose,
    RaftMessage,
    VoteRequest,
    VoteResponse,
)
from gd.ledger.raft_records import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    RaftEntryKind,
    RaftRemoteError,
    Snapshot,
)

SNAP = Snapshot(index=40, term=3, conf=ConfState(frozenset({"a", "b", "c"}), frozenset({"l"})),
                sessions=(("cl", 2, ((3, 17), (4, 18))),), data=b"state")
EXAMPLES = [
    VoteRequest("a", "b", 5, last_index=9, last_term=4, prevote=True),
    VoteResponse("b", "a", 5, granted=True, prevote=True),
    AppendEntries("a", "b", 5, prev_index=9, prev_term=4, commit=8, entries=(
        Entry(5, 10, RaftEntryKind.NORMAL, b"x", "cl", 1),
        Entry(5, 11, RaftEntryKind.CONF_CHANGE, ConfChange(ConfChangeOp.ADD_LEARNER, "l").encode()),
    )),
    AppendResponse("b", "a", 5, index=9, reject=True, hint_index=7, hint_term=3),
    Heartbeat("a", "b", 5, commit=8),
    HeartbeatResponse("b", "a", 5),
    InstallSnapshot("a", "b", 5, snapshot=SNAP),
    Propose("b", "a", 0, entries=(Entry(0, 0, RaftEntryKind.NORMAL, b"y", "cl", 2),)),
]


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: m.KIND)
def test_every_message_round_trips_through_canonical_bytes(msg):
    data = msg.encode()
    assert RaftMessage.decode(data) == msg
    assert canonical.encode(canonical.decode(data)) == data  # canonical form


def mutate(plain, path, value):
    if not path:
        return value
    head, *rest = path
    copy = dict(plain) if isinstance(plain, dict) else list(plain)
    copy[head] = mutate(copy[head], rest, value)
    return copy


@pytest.mark.parametrize(("path", "value"), [
    (["k"], "nope"),
    (["t"], -1),
    (["t"], True),
    (["t"], 2**64),
    (["f"], ""),
    (["f"], "x" * 500),
    (["b", "i"], "9"),
    (["b", "e", 1, "i"], 13),  # entries not contiguous
    (["b", "e", 0, "t"], 6),  # entry term beyond the message term
    (["b", "e", 0, "k"], 9),  # unknown entry kind
    (["b", "e", 1, "d"], b"\x81"),  # conf change that does not decode
    (["b", "e", 0, "d"], "text"),
    (["b", "zzz"], 1),  # unknown field
])
def test_malformed_append_is_refused_with_a_remote_error(path, value):
    plain = EXAMPLES[2].to_plain()
    if path[-1] == "zzz":
        plain = mutate(plain, ["b"], {**plain["b"], "zzz": 1})
    else:
        plain = mutate(plain, path, value)
    with pytest.raises(RaftRemoteError):
        RaftMessage.from_plain(plain)


def test_forwarded_proposals_must_be_client_entries():
    bad = Propose("b", "a", 0, entries=(Entry(0, 0, RaftEntryKind.NOOP),)).to_plain()
    with pytest.raises(RaftRemoteError, match="client entries"):
        RaftMessage.from_plain(bad)


def test_snapshot_with_a_node_both_voter_and_learner_is_refused():
    plain = InstallSnapshot("a", "b", 5, snapshot=SNAP).to_plain()
    plain["b"]["s"]["c"]["l"] = ["a"]
    with pytest.raises(RaftRemoteError, match="both voter and learner"):
        RaftMessage.from_plain(plain)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash_the_decoder(data):
    with contextlib.suppress(RaftRemoteError):
        RaftMessage.decode(data)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(EXAMPLES), st.integers(min_value=0, max_value=10_000), st.integers(0, 255))
def test_flipped_bytes_decode_or_raise_a_remote_error(msg, position, byte):
    data = bytearray(msg.encode())
    data[position % len(data)] = byte
    try:
        decoded = RaftMessage.decode(bytes(data))
    except RaftRemoteError:
        return
    assert isinstance(decoded, RaftMessage)
    assert RaftMessage.decode(decoded.encode()) == decoded  # whatever decodes is well-formed


def test_conf_state_applies_single_server_changes():
    conf = ConfState(frozenset({"a"}))
    conf = conf.applied(ConfChange(ConfChangeOp.ADD_LEARNER, "l"))
    assert conf.learners == {"l"}
    conf = conf.applied(ConfChange(ConfChangeOp.ADD_VOTER, "l"))  # promotion
    assert conf.voters == {"a", "l"} and conf.learners == frozenset()
    conf = conf.applied(ConfChange(ConfChangeOp.REMOVE_NODE, "a"))
    assert conf.voters == {"l"}
    # The last voter cannot be removed; a stranger's removal is a no-op.
    assert conf.applied(ConfChange(ConfChangeOp.REMOVE_NODE, "l")) == conf
    assert conf.applied(ConfChange(ConfChangeOp.REMOVE_NODE, "zz")) == conf
