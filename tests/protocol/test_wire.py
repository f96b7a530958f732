"""Frames: round trips, strict decoding, and the limits that bound a hostile peer."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import msgpack
import pytest

from gd.protocol.errors import LocalProtocolError, RemoteProtocolError
from gd.protocol.wire import (
    MAX_FRAME_SIZE,
    FrameDecoder,
    Message,
    MessageRegistry,
    decode_frame,
    encode_frame,
)

REG = MessageRegistry()


@REG.register
@dataclass(frozen=True)
class Ping(Message):
    TYPE = "test.ping"
    seq: int
    note: str = ""


@REG.register
@dataclass(frozen=True)
class Batch(Message):
    TYPE = "test.batch"
    VERSION = 2
    items: tuple[bytes, ...]
    meta: dict[str, float]
    parent: str | None = None
    ok: bool = True

    def __post_init__(self) -> None:
        if len(self.items) > 10:
            raise ValueError("items: at most 10")


def frame(body_obj: object) -> bytes:
    body = msgpack.packb(body_obj, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def test_round_trip_preserves_every_field_type():
    msg = Batch(items=(b"a", b"\x00" * 3), meta={"x": 1.5}, parent=None, ok=False)
    assert decode_frame(encode_frame(msg, registry=REG), registry=REG) == msg


def test_decoder_reassembles_frames_fed_one_byte_at_a_time():
    msgs = [Ping(seq=i, note="n" * i) for i in range(5)]
    data = b"".join(encode_frame(m, registry=REG) for m in msgs)
    dec = FrameDecoder(registry=REG)
    out = []
    for i in range(len(data)):
        dec.feed(data[i:i + 1])
        out.extend(dec)
    dec.close()
    assert out == msgs
    assert dec.frames_decoded == 5


def test_default_fields_may_be_omitted_by_the_sender():
    assert decode_frame(frame(["test.ping", 1, {"seq": 7}]), registry=REG) == Ping(seq=7)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (["test.nope", 1, {}], "unknown message type"),
        (["test.ping", 2, {"seq": 1}], "unknown message type"),
        (["test.ping", 1, {"seq": "1"}], "expected int"),
        (["test.ping", 1, {"seq": True}], "expected int"),
        (["test.ping", 1, {"seq": 1, "extra": 0}], "unknown fields"),
        (["test.ping", 1, {}], "missing fields"),
        (["test.batch", 2, {"items": [b"x"] * 11, "meta": {}}], "at most 10"),
        (["test.batch", 2, {"items": ["x"], "meta": {}}], "expected bytes"),
        (["test.batch", 2, {"items": [], "meta": {"x": 1}}], "expected float"),
        (["test.ping", 1], "array"),
        ({"t": 1}, "array"),
        ([1, 1, {}], "wrong type"),
    ],
)
def test_invalid_frames_are_remote_errors_that_name_the_problem(body, why):
    with pytest.raises(RemoteProtocolError, match=why):
        decode_frame(frame(body), registry=REG)


def test_oversize_length_prefix_is_refused_before_the_body_arrives():
    dec = FrameDecoder(registry=REG, max_frame_size=1024)
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        dec.feed(struct.pack(">I", 1025))
    assert dec.buffered == 0
    with pytest.raises(RemoteProtocolError):  # stays failed
        dec.next_message()


def test_default_limit_is_max_frame_size():
    dec = FrameDecoder(registry=REG)
    with pytest.raises(RemoteProtocolError):
        dec.feed(struct.pack(">I", MAX_FRAME_SIZE + 1))


def test_truncated_frame_at_end_of_stream_is_a_remote_error():
    data = encode_frame(Ping(seq=1), registry=REG)
    dec = FrameDecoder(registry=REG)
    dec.feed(data[:-1])
    assert dec.next_message() is None
    with pytest.raises(RemoteProtocolError, match="inside a frame"):
        dec.close()


def test_trailing_bytes_after_single_frame_are_refused():
    with pytest.raises(RemoteProtocolError, match="after the frame"):
        decode_frame(encode_frame(Ping(seq=1), registry=REG) + b"\x00", registry=REG)


def test_sending_an_unregistered_or_ill_typed_message_is_our_fault():
    @dataclass(frozen=True)
    class Stray(Message):
        TYPE = "test.stray"
        x: int

    with pytest.raises(LocalProtocolError, match="not a registered"):
        encode_frame(Stray(x=1), registry=REG)
    with pytest.raises(LocalProtocolError, match="expected int"):
        encode_frame(Ping(seq="1"), registry=REG)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="over the"):
        encode_frame(Ping(seq=1, note="x" * 100), registry=REG, max_frame_size=50)


def test_registry_refuses_unsupported_field_types_and_clashes():
    reg = MessageRegistry()

    @dataclass(frozen=True)
    class Bad(Message):
        TYPE = "test.bad"
        x: list[int]

    with pytest.raises(LocalProtocolError, match="cannot go on the wire"):
        reg.register(Bad)

    @dataclass(frozen=True)
    class A(Message):
        TYPE = "test.a"

    @dataclass(frozen=True)
    class B(Message):
        TYPE = "test.a"

    reg.register(A)
    with pytest.raises(LocalProtocolError, match="already"):
        reg.register(B)
