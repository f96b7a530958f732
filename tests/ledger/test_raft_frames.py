"""`/gd/raft/2.0.0` frames: a Raft message is the frame's own field, decoded once by the
frame registry with the Raft core's strict checks and every bound it enforced when it
travelled as nested bytes (entry count, entry bytes, membership sizes)."""

from __future__ import annotations

import msgpack
import pytest

from gd.ledger.ledger_frames import RAFT_PROTOCOL, RaftFrame
from gd.ledger.raft_messages import AppendEntries, Heartbeat, InstallSnapshot, Propose
from gd.ledger.raft_records import (
    MAX_ENTRIES_PER_MESSAGE,
    MAX_ENTRY_BYTES,
    MAX_MEMBERS,
    ConfState,
    Entry,
    RaftEntryKind,
    Snapshot,
)
from gd.protocol.errors import LocalProtocolError, RemoteProtocolError
from gd.protocol.wire import LENGTH_PREFIX, decode_frame, encode_frame

from .test_raft_messages import EXAMPLES


def raw_frame(fields: dict[str, object], version: int = 2) -> bytes:
    """A frame as a hostile peer may write it: any fields, no checks on our side."""
    body = msgpack.packb(["gd.raft.msg", version, fields], use_bin_type=True)
    return LENGTH_PREFIX.pack(len(body)) + body


def test_the_protocol_id_says_version_2() -> None:
    assert RAFT_PROTOCOL == "/gd/raft/2.0.0"


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: m.KIND)
def test_every_raft_message_is_one_frame_decoded_once(msg) -> None:  # type: ignore[no-untyped-def]
    data = encode_frame(RaftFrame(msg))
    assert decode_frame(data) == RaftFrame(msg)
    # One encoding: the message's fields sit in the frame's map, not in a bytes field.
    [_tag, version, fields] = msgpack.unpackb(data[LENGTH_PREFIX.size:], raw=False)
    assert version == 2 and isinstance(fields["msg"], dict) and fields["msg"]["k"] == msg.KIND


def test_a_version_1_frame_with_nested_bytes_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="unknown message type"):
        decode_frame(raw_frame({"data": Heartbeat("a", "b", 1).encode()}, version=1))


def _plain(msg: object) -> dict[str, object]:
    return msg.to_plain()  # type: ignore[attr-defined, no-any-return]


def _entries(n: int, size: int = 1) -> tuple[Entry, ...]:
    return tuple(Entry(1, i, RaftEntryKind.NORMAL, b"x" * size, "c", i) for i in range(1, n + 1))


@pytest.mark.parametrize(("plain", "why"), [
    ({"f": "a", "k": "nope", "o": "b", "t": 1, "b": {}}, "unknown message kind"),
    ({**_plain(Heartbeat("a", "b", 1)), "x": 1}, "unknown fields"),
    ({**_plain(Heartbeat("a", "b", 1)), "t": -1}, "out of range"),
    ({**_plain(Heartbeat("a", "b", 1)), "f": "a" * 129}, "length 129"),
    (_plain(AppendEntries("a", "b", 1, entries=_entries(MAX_ENTRIES_PER_MESSAGE + 1))),
     f"items exceeds {MAX_ENTRIES_PER_MESSAGE}"),
    (_plain(AppendEntries("a", "b", 1, entries=_entries(1, MAX_ENTRY_BYTES + 1))),
     f"exceeds {MAX_ENTRY_BYTES}"),
    (_plain(InstallSnapshot("a", "b", 1, snapshot=Snapshot(conf=ConfState(
        frozenset(f"n{i}" for i in range(MAX_MEMBERS + 1)))))), f"items exceeds {MAX_MEMBERS}"),
    (_plain(AppendEntries("a", "b", 1, entries=_entries(2)[1:])), "not contiguous"),
    (_plain(Propose("a", "b", 0, entries=(Entry(0, 0, RaftEntryKind.NOOP),))), "only client"),
    ("not a map", "expected a map"),
])
def test_every_check_and_bound_of_the_raft_decoder_holds_in_the_frame(plain: object,
                                                                      why: str) -> None:
    with pytest.raises(RemoteProtocolError, match=why):
        decode_frame(raw_frame({"msg": plain}))


def test_a_message_we_build_wrong_is_our_error_not_the_peers() -> None:
    bad = AppendEntries("a", "b", 1, entries=_entries(2)[1:])  # index 2 after prev 0
    with pytest.raises(LocalProtocolError, match="not contiguous"):
        encode_frame(RaftFrame(bad))


def test_the_size_estimate_tracks_the_encoded_frame() -> None:
    """The links bound their queues by `size`: it must not undercount big messages."""
    for msg in (AppendEntries("a", "b", 1, entries=_entries(64, 4096)),
                InstallSnapshot("a", "b", 1, snapshot=Snapshot(data=b"s" * 100_000))):
        encoded = len(encode_frame(RaftFrame(msg)))
        assert encoded * 0.9 <= msg.size <= encoded * 1.5
