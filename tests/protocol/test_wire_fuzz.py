"""Fuzz: random and mutated frames never make a decoder raise anything but
RemoteProtocolError (the h11 promise: a peer's garbage closes one conversation)."""

from __future__ import annotations

import struct

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gd.protocol.handshake  # noqa: F401  (registers the handshake messages)
from gd.protocol.errors import RemoteProtocolError
from gd.protocol.handshake import Hello, Verdict
from gd.protocol.wire import REGISTRY, FrameDecoder, encode_frame

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SEEDS = [
    encode_frame(Verdict(ok=False, reason="version", detail="no common version")),
    encode_frame(Hello(
        versions=("gd/1",), capabilities=("sync",), org="Acme", region="eu-west",
        nonce=b"n" * 16, timestamp_ms=1,
        ledger_size=0, ledger_root=b"\x00" * 32, domains=("turbofan",), signature=b"s" * 64,
    )),
]

json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=True)
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20,
)


def drain(data: bytes, chunk: int) -> None:
    dec = FrameDecoder(max_frame_size=64 * 1024)
    try:
        for i in range(0, len(data), max(chunk, 1)):
            dec.feed(data[i:i + chunk])
            list(dec)
        dec.close()
    except RemoteProtocolError:
        return


@FUZZ
@given(st.binary(max_size=400), st.integers(1, 64))
def test_random_bytes_only_raise_remote_errors(data, chunk):
    drain(data, chunk)


@FUZZ
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                         min_size=1, max_size=8), st.integers(1, 64))
def test_mutated_valid_frames_only_raise_remote_errors(seed, flips, chunk):
    data = bytearray(seed)
    for pos, byte in flips:
        data[pos % len(data)] = byte
    drain(bytes(data), chunk)


@FUZZ
@given(st.sampled_from(sorted(REGISTRY.types())), st.dictionaries(st.text(max_size=16),
                                                                 json_like, max_size=12))
def test_wellformed_msgpack_with_wrong_fields_only_raise_remote_errors(tv, fields):
    body = msgpack.packb([tv[0], tv[1], fields], use_bin_type=True)
    drain(struct.pack(">I", len(body)) + body, 1000)


@FUZZ
@given(st.sampled_from(SEEDS), st.integers(0, 200))
def test_truncated_frames_are_reported_not_crashed(seed, cut):
    dec = FrameDecoder()
    dec.feed(seed[: min(cut, len(seed) - 1)])
    assert dec.next_message() is None
    try:
        dec.close()
    except RemoteProtocolError:
        assert dec.buffered == 0
    else:
        assert cut == 0
