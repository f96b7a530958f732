"""The handshake carries org certificates: claims become certified only under a pinned org
key, for the connection's own peer id, and the certificate is bound into the signed Hello."""

from __future__ import annotations

from dataclasses import replace

from gd.genome.certificate import NodeCertificate, TrustAnchors
from gd.genome.identity import NodeKey
from gd.protocol.handshake import (
    PROTOCOL_ID,
    Accepted,
    Handshake,
    HandshakeOffer,
    Hello,
    Rejected,
    RejectReason,
    check_hello,
    make_hello,
)
from gd.protocol.wire import encode_frame

A = NodeKey.from_seed(b"a" * 32)
B = NodeKey.from_seed(b"b" * 32)
M = NodeKey.from_seed(b"m" * 32)
BETA_ORG = NodeKey.from_seed(b"B" * 32)
FAKE_ORG = NodeKey.from_seed(b"F" * 32)
NOW = 1_700_000_000_000
DAY = 24 * 3600 * 1000
TRUST = TrustAnchors.of([("beta", BETA_ORG.public_key)])


def cert(node: NodeKey = B, org_key: NodeKey = BETA_ORG, org: str = "beta",
         region: str = "eu-west", expires: int = NOW + DAY) -> bytes:
    return NodeCertificate.issue(org_key, org, node.peer_id, region, not_before_ms=NOW - DAY,
                                 expires_ms=expires).encode()


def meet(offer_b: HandshakeOffer, *, signer: NodeKey = B, trust: TrustAnchors = TRUST,
         now: int = NOW):
    """A's view of B after a full in-memory handshake."""
    a = Handshake(A, HandshakeOffer(org="acme", region="eu-west"), signer.peer_id, now_ms=now,
                  nonce=b"1" * 16, trust=trust)
    b = Handshake(signer, offer_b, A.peer_id, now_ms=now, nonce=b"2" * 16)
    for _ in range(4):
        to_b, to_a = a.data_to_send(), b.data_to_send()
        if not a.done:
            a.receive_data(to_a)
        if not b.done:
            b.receive_data(to_b)
    assert isinstance(a.outcome, Accepted), a.outcome
    return a.outcome.peer


def test_protocol_id_was_bumped_for_the_new_hello():
    assert PROTOCOL_ID == "/gd/handshake/2.0.0" and Hello.VERSION == 2


def test_a_certified_peer_is_certified_for_its_org_and_region():
    peer = meet(HandshakeOffer(org="beta", region="eu-west", certificate=cert()))
    assert peer.certified and (peer.certified_org, peer.certified_region) == ("beta", "eu-west")
    assert peer.certificate_problem == ""


def test_a_claim_without_certificate_connects_uncertified():
    peer = meet(HandshakeOffer(org="beta", region="eu-west"))
    assert peer.org == "beta"  # the claim is kept for display...
    assert not peer.certified and peer.certified_region is None  # ...and proves nothing
    assert peer.certificate_problem == ""


def test_self_signed_lent_mismatched_or_expired_certificates_leave_the_peer_uncertified():
    cases = {
        "not one we trust": HandshakeOffer(org="beta", region="eu-west",
                                           certificate=cert(org_key=FAKE_ORG)),
        f"not for {B.peer_id}": HandshakeOffer(org="beta", region="eu-west",
                                               certificate=cert(node=M)),
        "the peer claims us-east": HandshakeOffer(org="beta", region="us-east",
                                                  certificate=cert()),
        "the peer claims 'gamma'": HandshakeOffer(org="gamma", region="eu-west",
                                                  certificate=cert()),
        "expired": HandshakeOffer(org="beta", region="eu-west",
                                  certificate=cert(expires=NOW - 1)),
        "malformed": HandshakeOffer(org="beta", region="eu-west", certificate=b"\x93junk"),
    }
    for problem, offer in cases.items():
        peer = meet(offer)
        assert peer.certified_org is None and peer.certified_region is None, problem
        assert problem in peer.certificate_problem, (problem, peer.certificate_problem)


def test_nothing_is_certified_for_a_receiver_that_pins_no_org_key():
    peer = meet(HandshakeOffer(org="beta", region="eu-west", certificate=cert()),
                trust=TrustAnchors())
    assert not peer.certified and "not one we trust" in peer.certificate_problem


def test_the_certificate_is_covered_by_the_hello_signature():
    """Swapping the certificate of a signed Hello breaks its signature: a relay or a
    man in the middle cannot attach or strip one."""
    offer = HandshakeOffer(org="beta", region="eu-west", certificate=cert())
    hello = make_hello(B, offer, A.peer_id, nonce=b"2" * 16, now_ms=NOW)
    assert check_hello(hello, signer=B.peer_id, audience=A.peer_id, now_ms=NOW,
                       trust=TRUST).certified
    a = Handshake(A, HandshakeOffer(org="acme", region="eu-west"), B.peer_id, now_ms=NOW,
                  nonce=b"1" * 16, trust=TRUST)
    a.receive_data(encode_frame(replace(hello, certificate=b"")))
    assert isinstance(a.outcome, Rejected) and a.outcome.reason is RejectReason.SIGNATURE
