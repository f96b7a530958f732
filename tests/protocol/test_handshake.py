"""The handshake state machine, driven in memory: both sides, bytes passed by hand."""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gd.genome.identity import NodeKey
from gd.protocol.errors import LocalProtocolError
from gd.protocol.handshake import (
    MAX_CLOCK_SKEW_MS,
    Accepted,
    Handshake,
    HandshakeOffer,
    Hello,
    Rejected,
    RejectReason,
    make_hello,
)
from gd.protocol.wire import decode_frame, encode_frame

A = NodeKey.from_seed(b"a" * 32)
B = NodeKey.from_seed(b"b" * 32)
M = NodeKey.from_seed(b"m" * 32)  # a third node, the would-be impostor
NOW = 1_700_000_000_000
OFFER_A = HandshakeOffer(org="Acme", region="eu-west", capabilities=("sync",),
                         domains=("turbofan",), ledger_size=3, ledger_root=b"\x01" * 32)
OFFER_B = HandshakeOffer(org="Beta", region="eu-west", domains=("loan",))


def pair(offer_a=OFFER_A, offer_b=OFFER_B, now_b=NOW, **kw_b):
    a = Handshake(A, offer_a, B.peer_id, now_ms=NOW, nonce=b"1" * 16)
    b = Handshake(B, offer_b, A.peer_id, now_ms=now_b, nonce=b"2" * 16, **kw_b)
    return a, b


def run(a: Handshake, b: Handshake, rounds: int = 4) -> None:
    """Shuttle bytes both ways until both finish (the network, in two lines)."""
    for _ in range(rounds):
        to_b, to_a = a.data_to_send(), b.data_to_send()
        if not a.done:
            a.receive_data(to_a)
        if not b.done:
            b.receive_data(to_b)


def test_two_honest_nodes_accept_each_other_with_signed_claims():
    a, b = pair()
    run(a, b)
    assert isinstance(a.outcome, Accepted) and isinstance(b.outcome, Accepted)
    assert a.outcome.peer.peer_id == B.peer_id and a.outcome.peer.org == "Beta"
    assert b.outcome.peer.region == "eu-west" and b.outcome.peer.ledger_size == 3
    assert b.outcome.peer.domains == ("turbofan",) and b.outcome.peer.version == "gd/1"


def test_version_mismatch_is_rejected_on_both_sides_with_both_lists():
    a, b = pair(offer_b=replace(OFFER_B, versions=("gd/9",)))
    run(a, b)
    assert isinstance(a.outcome, Rejected) and a.outcome.reason is RejectReason.VERSION
    assert "gd/9" in a.outcome.detail and "gd/1" in a.outcome.detail
    assert isinstance(b.outcome, Rejected) and b.outcome.reason is RejectReason.VERSION


def test_newest_common_version_wins():
    a, b = pair(offer_a=replace(OFFER_A, versions=("gd/2", "gd/1")),
                offer_b=replace(OFFER_B, versions=("gd/2", "gd/1")))
    run(a, b)
    assert isinstance(a.outcome, Accepted) and a.outcome.peer.version == "gd/2"


def test_hello_signed_by_another_key_is_rejected_even_if_fields_match():
    """M signs a Hello for A; it arrives on a connection authenticated as B."""
    a = Handshake(A, OFFER_A, B.peer_id, now_ms=NOW, nonce=b"1" * 16)
    forged = make_hello(M, OFFER_B, A.peer_id, nonce=b"3" * 16, now_ms=NOW)
    a.receive_data(encode_frame(forged))
    assert isinstance(a.outcome, Rejected) and a.outcome.reason is RejectReason.SIGNATURE
    assert not a.outcome.by_peer
    reply = a.data_to_send()
    assert b"bad-signature" in reply  # the peer is told why


def test_hello_meant_for_another_node_is_rejected():
    """B's Hello addressed to M cannot be forwarded to A."""
    a = Handshake(A, OFFER_A, B.peer_id, now_ms=NOW, nonce=b"1" * 16)
    a.receive_data(encode_frame(make_hello(B, OFFER_B, M.peer_id, nonce=b"3" * 16, now_ms=NOW)))
    assert isinstance(a.outcome, Rejected) and a.outcome.reason is RejectReason.SIGNATURE


def test_tampered_region_breaks_the_signature():
    a = Handshake(A, OFFER_A, B.peer_id, now_ms=NOW, nonce=b"1" * 16)
    hello = make_hello(B, OFFER_B, A.peer_id, nonce=b"3" * 16, now_ms=NOW)
    a.receive_data(encode_frame(replace(hello, region="us-east")))
    assert isinstance(a.outcome, Rejected) and a.outcome.reason is RejectReason.SIGNATURE


def test_clock_skew_beyond_limit_is_rejected_within_limit_accepted():
    a, b = pair(now_b=NOW + MAX_CLOCK_SKEW_MS + 1)
    run(a, b)
    assert isinstance(b.outcome, Rejected) and b.outcome.reason is RejectReason.CLOCK
    assert isinstance(a.outcome, Rejected) and a.outcome.reason is RejectReason.CLOCK
    a, b = pair(now_b=NOW + MAX_CLOCK_SKEW_MS)
    run(a, b)
    assert isinstance(b.outcome, Accepted)


def test_policy_hook_can_refuse_a_verified_peer():
    a, b = pair(admit=lambda peer: None if peer.region == "us" else f"region {peer.region}")
    run(a, b)
    assert isinstance(b.outcome, Rejected) and b.outcome.reason is RejectReason.POLICY
    assert isinstance(a.outcome, Rejected) and a.outcome.by_peer
    assert "region eu-west" in a.outcome.detail


def test_garbage_is_a_malformed_rejection_not_an_exception():
    a = Handshake(A, OFFER_A, B.peer_id, now_ms=NOW, nonce=b"1" * 16)
    a.receive_data(struct.pack(">I", 10) + b"\xc1" * 10)
    assert isinstance(a.outcome, Rejected) and a.outcome.reason is RejectReason.MALFORMED


def test_verdict_before_hello_is_malformed():
    a, b = pair()
    b.data_to_send()
    from gd.protocol.handshake import Verdict
    a.receive_data(encode_frame(Verdict(ok=True)))
    assert isinstance(a.outcome, Rejected) and a.outcome.reason is RejectReason.MALFORMED


def test_stream_closing_early_is_a_rejection_by_peer():
    a, _ = pair()
    a.peer_closed()
    assert isinstance(a.outcome, Rejected) and a.outcome.by_peer


def test_local_misuse_raises_local_errors():
    with pytest.raises(LocalProtocolError):
        Handshake(A, OFFER_A, A.peer_id, now_ms=NOW, nonce=b"1" * 16)
    with pytest.raises(LocalProtocolError):
        Handshake(A, OFFER_A, "not-a-peer", now_ms=NOW, nonce=b"1" * 16)
    a, b = pair()
    run(a, b)
    with pytest.raises(LocalProtocolError):
        a.receive_data(b"x")


def test_hello_frame_round_trips_through_the_wire_registry():
    hello = make_hello(A, OFFER_A, B.peer_id, nonce=b"1" * 16, now_ms=NOW)
    assert decode_frame(encode_frame(hello)) == hello
    assert isinstance(hello, Hello)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 50))
def test_fuzzed_bytes_always_end_in_an_outcome_or_wait(data, chunk):
    a = Handshake(A, OFFER_A, B.peer_id, now_ms=NOW, nonce=b"1" * 16)
    for i in range(0, len(data), chunk):
        if a.done:
            break
        a.receive_data(data[i:i + chunk])
    a.peer_closed()
    assert isinstance(a.outcome, Rejected)
