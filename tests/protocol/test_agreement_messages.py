"""The agreements conversation's frames and rules, sans-I/O: an outbox cut into
frames, the ack each frame is owed, and signed tombstones."""

from __future__ import annotations

import pytest
from gd_testkit import key_from_int

from gd.protocol.agreement_messages import (
    MAX_PROPOSALS_PER_FRAME,
    MAX_TOMBSTONES_PER_FRAME,
    DeliveryAck,
    ForgetDelivery,
    ProposalDelivery,
    Tombstone,
    TombstoneError,
    check_ack,
    delivery_frames,
    unexpected,
)
from gd.protocol.errors import RemoteProtocolError
from gd.protocol.wire import decode_frame, encode_frame

ORIGIN = key_from_int(21)
PEER = key_from_int(22)


def test_an_outbox_goes_oldest_first_proposals_before_tombstones_in_bounded_frames():
    proposals = [(i, b"p%d" % i) for i in range(1, MAX_PROPOSALS_PER_FRAME + 3)]
    stones = [(i, b"t%d" % i) for i in range(1, MAX_TOMBSTONES_PER_FRAME + 2)]
    frames = delivery_frames(proposals, stones)
    assert [type(f) for f in frames] == [ProposalDelivery, ProposalDelivery,
                                         ForgetDelivery, ForgetDelivery]
    assert [f.upto for f in frames] == [MAX_PROPOSALS_PER_FRAME, len(proposals),
                                        MAX_TOMBSTONES_PER_FRAME, len(stones)]
    assert frames[1].proposals == (b"p%d" % (len(proposals) - 1), b"p%d" % len(proposals))
    assert delivery_frames([], []) == []


def test_the_ack_must_name_the_frames_upto():
    frame = ProposalDelivery((b"x",), upto=7)
    assert check_ack(DeliveryAck(upto=7, effective=True), frame).effective
    with pytest.raises(RemoteProtocolError, match="up to 7"):
        check_ack(DeliveryAck(upto=6), frame)
    with pytest.raises(RemoteProtocolError, match="up to 7"):
        check_ack(ForgetDelivery((b"x",), upto=7), frame)
    assert "unexpected gd.agreements.ack" in unexpected(DeliveryAck(upto=1)).message


def test_frames_out_of_bounds_are_refused_on_decode():
    too_many = encode_frame(ProposalDelivery((b"x",), 1)).replace(b"\x91\xc4\x01x", b"\x90")
    with pytest.raises(RemoteProtocolError, match="proposals per frame"):
        decode_frame(too_many[:0] + len(too_many[4:]).to_bytes(4, "big") + too_many[4:])


def test_a_tombstone_round_trips_signed_and_a_tampered_one_is_refused():
    stone = Tombstone.create(ORIGIN, PEER.peer_id, ["gene-a", "gene-b"], hlc=5)
    back = Tombstone.decode(stone.encode())
    assert back == stone
    tampered = stone.encode().replace(b"gene-a", b"gene-z")
    with pytest.raises(TombstoneError, match="not signed"):
        Tombstone.decode(tampered)
    with pytest.raises(TombstoneError, match="malformed"):
        Tombstone.decode(b"\x80")
    assert issubclass(TombstoneError, RemoteProtocolError)
