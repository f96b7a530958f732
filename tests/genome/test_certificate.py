"""Org certificates (issue 11 item 4): only an org key we pin can make a peer `org:beta`.

Every refusal a receiver must make is pinned here: forged, signed by an org key we do
not trust (or trust for another org), for another peer id, region or org, not yet valid,
expired, and garbage or non-canonical bytes."""

from __future__ import annotations

import random
from dataclasses import replace

import msgpack
import pytest

from gd.genome import canonical
from gd.genome.certificate import (
    MAX_CERT_BYTES,
    NO_TRUST,
    NOT_BEFORE_SKEW_MS,
    CertificateError,
    NodeCertificate,
    TrustAnchors,
    check_certificate,
    fingerprint,
    org_key_text,
    parse_org_key,
)
from gd.genome.errors import ValidationError
from gd.genome.identity import NodeKey

BETA_ORG = NodeKey.from_seed(b"B" * 32)   # beta's org key
EVIL_ORG = NodeKey.from_seed(b"E" * 32)   # a key someone made up, calling itself beta
NODE = NodeKey.from_seed(b"n" * 32)       # beta's node
OTHER = NodeKey.from_seed(b"o" * 32)      # any other node
NOW = 1_700_000_000_000
DAY = 24 * 3600 * 1000
TRUST = TrustAnchors.of([("beta", BETA_ORG.public_key)])


def issue(org_key: NodeKey = BETA_ORG, org: str = "beta", peer: str = NODE.peer_id,
          region: str = "eu-west", not_before: int = NOW - DAY, expires: int = NOW + DAY
          ) -> bytes:
    return NodeCertificate.issue(org_key, org, peer, region, not_before_ms=not_before,
                                 expires_ms=expires).encode()


def check(data: bytes, *, peer: str = NODE.peer_id, org: str = "beta",
          region: str = "eu-west", trust: TrustAnchors = TRUST, now: int = NOW
          ) -> NodeCertificate:
    return check_certificate(data, peer_id=peer, org=org, region=region, trust=trust,
                             now_ms=now)


def test_a_certificate_from_a_pinned_org_key_is_accepted_with_its_claims():
    cert = check(issue())
    assert (cert.org, cert.peer_id, cert.region) == ("beta", NODE.peer_id, "eu-west")
    assert cert.org_key == BETA_ORG.public_key
    assert NodeCertificate.decode(cert.encode()) == cert


@pytest.mark.parametrize("field", ["org", "peer", "region", "not_before_ms", "expires_ms"])
def test_a_certificate_edited_after_signing_is_refused(field):
    cert = NodeCertificate.decode(issue())
    edited = {"org": replace(cert, org="gamma"), "peer": replace(cert, peer_id=OTHER.peer_id),
              "region": replace(cert, region="us-east"),
              "not_before_ms": replace(cert, not_before_ms=cert.not_before_ms - 1),
              "expires_ms": replace(cert, expires_ms=cert.expires_ms + 365 * DAY)}[field]
    with pytest.raises(CertificateError, match="not signed by the org key"):
        NodeCertificate.decode(edited.encode())


def test_a_self_signed_certificate_naming_an_unpinned_key_is_refused():
    forged = issue(org_key=EVIL_ORG)  # validly signed, by a key nobody pinned for beta
    assert NodeCertificate.decode(forged).org == "beta"
    with pytest.raises(CertificateError, match="not one we trust for org 'beta'"):
        check(forged)


def test_a_key_pinned_for_another_org_does_not_certify_beta():
    trust = TrustAnchors.of([("gamma", EVIL_ORG.public_key), ("beta", BETA_ORG.public_key)])
    with pytest.raises(CertificateError, match="not one we trust"):
        check(issue(org_key=EVIL_ORG), trust=trust)
    # gamma's key certifying a gamma node is fine; it just cannot speak for beta.
    assert check(issue(org_key=EVIL_ORG, org="gamma"), org="gamma", trust=trust).org == "gamma"


def test_nothing_is_certified_when_no_org_key_is_pinned():
    with pytest.raises(CertificateError, match="pinned: none"):
        check(issue(), trust=NO_TRUST)


def test_a_certificate_lent_to_another_peer_is_refused():
    with pytest.raises(CertificateError, match=f"not for {OTHER.peer_id}"):
        check(issue(), peer=OTHER.peer_id)


def test_a_certificate_for_another_region_or_org_than_claimed_is_refused():
    with pytest.raises(CertificateError, match="region eu-west, the peer claims us-east"):
        check(issue(), region="us-east")
    with pytest.raises(CertificateError, match="org 'beta', the peer claims 'gamma'"):
        check(issue(), org="gamma")


def test_validity_window_is_enforced_at_the_callers_clock():
    cert = issue(not_before=NOW, expires=NOW + DAY)
    assert check(cert, now=NOW).org == "beta"
    assert check(cert, now=NOW + DAY - 1).org == "beta"
    with pytest.raises(CertificateError, match="expired"):
        check(cert, now=NOW + DAY)
    assert check(cert, now=NOW - NOT_BEFORE_SKEW_MS).org == "beta"  # a fast issuer clock
    with pytest.raises(CertificateError, match="not valid before"):
        check(cert, now=NOW - NOT_BEFORE_SKEW_MS - 1)


def test_garbage_bytes_are_refused_with_certificate_error_only():
    rng = random.Random(11)
    good = issue()
    samples = [b"", b"\x00", b"\xc1", canonical.encode([1, 2, 3]), canonical.encode({"a": 1}),
               b"x" * (MAX_CERT_BYTES + 1)]
    samples += [bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 300)))
                for _ in range(300)]
    for i in range(200):  # single-byte corruptions of a good certificate
        pos = rng.randrange(len(good))
        samples.append(good[:pos] + bytes([good[pos] ^ (1 + i % 255)]) + good[pos + 1:])
    refused = 0
    for data in samples:
        try:
            NodeCertificate.decode(data)
        except CertificateError:
            refused += 1
    assert refused == len(samples)


def test_missing_extra_non_canonical_and_unknown_format_fields_are_refused():
    plain = canonical.decode(issue())
    with pytest.raises(CertificateError, match="malformed"):
        NodeCertificate.decode(canonical.encode({k: v for k, v in plain.items() if k != "region"}))
    with pytest.raises(CertificateError, match="malformed"):
        NodeCertificate.decode(canonical.encode({**plain, "admin": True}))
    with pytest.raises(CertificateError, match="unknown certificate format"):
        NodeCertificate.decode(canonical.encode({**plain, "format": 2}))
    with pytest.raises(CertificateError, match="malformed"):
        NodeCertificate.decode(canonical.encode({**plain, "org_key": "not bytes"}))
    # Unsorted keys: valid msgpack, not our canonical form.
    unsorted = msgpack.packb(dict(sorted(plain.items(), reverse=True)), use_bin_type=True)
    with pytest.raises(CertificateError, match="not canonical"):
        NodeCertificate.decode(unsorted)


def test_records_refuse_bad_fields_at_construction():
    with pytest.raises(ValidationError):
        NodeCertificate("beta", BETA_ORG.public_key, "not-a-peer", "eu-west", NOW, NOW + DAY)
    with pytest.raises(ValidationError):
        NodeCertificate("beta", BETA_ORG.public_key, NODE.peer_id, "EU West", NOW, NOW + DAY)
    with pytest.raises(ValidationError, match="after not_before"):
        NodeCertificate("beta", BETA_ORG.public_key, NODE.peer_id, "eu-west", NOW, NOW)
    with pytest.raises(ValidationError, match="at most"):
        NodeCertificate("beta", BETA_ORG.public_key, NODE.peer_id, "eu-west", NOW,
                        NOW + 20 * 366 * DAY)


def test_org_key_text_round_trips_and_bad_text_says_why():
    text = org_key_text(BETA_ORG.public_key)
    assert text.startswith("ed25519:") and parse_org_key(text) == BETA_ORG.public_key
    assert parse_org_key(BETA_ORG.public_key.hex()) == BETA_ORG.public_key
    for bad, why in [("ed25519:zz", "not ed25519"), ("ed25519:abcd", "2 bytes"), (7, "text")]:
        with pytest.raises(ValueError, match=why):
            parse_org_key(bad)
    assert fingerprint(BETA_ORG.public_key) != fingerprint(EVIL_ORG.public_key)
    assert len(fingerprint(BETA_ORG.public_key).split(":")) == 8


def test_trust_anchors_collect_keys_per_name_and_refuse_bad_keys():
    both = TRUST.merged(TrustAnchors.of([("beta", EVIL_ORG.public_key)]))
    assert both.trusts("beta", EVIL_ORG.public_key) and both.trusts("beta", BETA_ORG.public_key)
    assert not both.trusts("gamma", BETA_ORG.public_key)
    assert not NO_TRUST and both
    with pytest.raises(ValidationError):
        TrustAnchors({"beta": frozenset({b"short"})})
