"""Org certificates: an organisation's key vouches for one node's peer id and region.

Hyperledger Fabric's MSP without X.509 (DESIGN.md, "Federation → Identity"). A node's own
key proves only the node; that the node speaks for organisation `beta` in region
`eu-west` is a statement *beta's org key* makes, and only a receiver that pins beta's key
believes it:

    NodeCertificate(org, org_key, peer_id, region, not_before_ms, expires_ms, signature)

signed by `org_key` over ``CERT_TAG || canonical msgpack`` of the other fields. The
certificate names the org's public key (so the verifier knows which key to check against
its pins) and the peer id it is for (so it cannot be lent to another node: the handshake
compares it with the connection's authenticated peer id).

Sans-I/O and pure: bytes and the caller's clock reading (`now_ms`) go in; a checked
certificate or a `CertificateError` saying why comes out. Reading keys and files from disk
is `gd.node.credentials`; the CLI is `gd.cli.org_cmds`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from gd.genome import canonical, checks
from gd.genome.errors import DecodeError, ValidationError
from gd.genome.identity import NodeKey, is_peer_id

# Domain separation: a certificate signature can never be mistaken for a gene, ledger or
# handshake signature, even if an org reused a node key as its org key.
CERT_TAG: Final = b"gd-org-certificate/1\x00"
CERT_FORMAT: Final = 1
ORG_KEY_PREFIX: Final = "ed25519:"
ORG_KEY_BYTES: Final = 32
MAX_ORG_LEN: Final = 128
# An encoded certificate is ~250 bytes (two 32/64-byte binaries, a peer id, two short
# names, two integers). 1 KiB bounds what one hostile blob in a Hello makes us decode.
MAX_CERT_BYTES: Final = 1024
# The longest validity an org may grant: long-lived certificates are how revocation-free
# PKIs get hurt (the CA/Browser Forum caps TLS certificates at 398 days). Ten years is a
# hard upper bound on mistakes, not a recommendation; `org certify` defaults to 365 days.
MAX_VALIDITY_MS: Final = 10 * 366 * 24 * 3600 * 1000
# A certificate issued on a machine whose clock runs slightly ahead is accepted this early
# (the handshake's own clock-skew allowance, protocol/handshake.py).
NOT_BEFORE_SKEW_MS: Final = 5 * 60 * 1000
_FIELDS: Final = frozenset({"expires_ms", "format", "not_before_ms", "org", "org_key", "peer",
                            "region", "sig"})


class CertificateError(ValueError):
    """A certificate is malformed, forged, expired or not for this peer/region/org."""


def org_key_text(public_key: bytes) -> str:
    """The text form of an org public key, as pinned in config files: ``ed25519:<hex>``."""
    if len(public_key) != ORG_KEY_BYTES:
        raise ValueError(f"an org key is {ORG_KEY_BYTES} bytes")
    return ORG_KEY_PREFIX + public_key.hex()


def parse_org_key(text: Any) -> bytes:
    """Inverse of `org_key_text` (the prefix may be left out); ValueError says why."""
    if not isinstance(text, str):
        raise ValueError(f"an org key is text like {ORG_KEY_PREFIX}<64 hex digits>")
    body = text.strip().removeprefix(ORG_KEY_PREFIX)
    try:
        raw = bytes.fromhex(body)
    except ValueError:
        raise ValueError(f"org key {text[:80]!r} is not {ORG_KEY_PREFIX}<64 hex digits>") from None
    if len(raw) != ORG_KEY_BYTES:
        raise ValueError(f"org key {text[:80]!r} is {len(raw)} bytes, expected {ORG_KEY_BYTES}")
    return raw


def fingerprint(public_key: bytes) -> str:
    """A short form for people to compare over the phone: the first 16 bytes of
    SHA-256(key) in groups of four hex digits (SSH shows its host keys the same way)."""
    digest = hashlib.sha256(public_key).hexdigest()[:32]
    return ":".join(digest[i:i + 4] for i in range(0, 32, 4))


def check_org_name(field_name: str, value: Any) -> str:
    """Org names follow the handshake's rule: short printable text, not blank."""
    return checks.text(field_name, value, MAX_ORG_LEN, required=True)


@dataclass(frozen=True, slots=True)
class NodeCertificate:
    """`org` (whose key is `org_key`) vouches that `peer_id` is its node in `region`
    from `not_before_ms` until `expires_ms` (Unix milliseconds, end exclusive)."""

    org: str
    org_key: bytes
    peer_id: str
    region: str
    not_before_ms: int
    expires_ms: int
    signature: bytes = b""

    def __post_init__(self) -> None:
        check_org_name("org", self.org)
        if not isinstance(self.org_key, bytes) or len(self.org_key) != ORG_KEY_BYTES:
            raise ValidationError("org_key", f"expected {ORG_KEY_BYTES} bytes")
        if not isinstance(self.peer_id, str) or not is_peer_id(self.peer_id):
            raise ValidationError("peer", f"{self.peer_id!r} is not an Ed25519 peer id")
        checks.slug("region", self.region)
        checks.uint("not_before_ms", self.not_before_ms)
        checks.uint("expires_ms", self.expires_ms)
        if not 0 < self.expires_ms - self.not_before_ms <= MAX_VALIDITY_MS:
            raise ValidationError("expires_ms", "must be after not_before_ms, by at most "
                                  f"{MAX_VALIDITY_MS // (24 * 3600 * 1000)} days")
        if not isinstance(self.signature, bytes) or len(self.signature) not in (0, 64):
            raise ValidationError("sig", "expected 64 bytes")

    def _plain(self) -> dict[str, Any]:
        return {"expires_ms": self.expires_ms, "format": CERT_FORMAT,
                "not_before_ms": self.not_before_ms, "org": self.org, "org_key": self.org_key,
                "peer": self.peer_id, "region": self.region}

    @property
    def signing_bytes(self) -> bytes:
        return CERT_TAG + canonical.encode(self._plain())

    @classmethod
    def issue(cls, org_key: NodeKey, org: str, peer_id: str, region: str, *,
              not_before_ms: int, expires_ms: int) -> NodeCertificate:
        """A certificate signed with the org's key (the org key is an Ed25519 key like a
        node key; `NodeKey` only holds it)."""
        unsigned = cls(org, org_key.public_key, peer_id, region, not_before_ms, expires_ms)
        return replace(unsigned, signature=org_key.sign(unsigned.signing_bytes))

    def verify_signature(self) -> None:
        """The signature is the named org key's; CertificateError otherwise."""
        try:
            VerifyKey(self.org_key).verify(self.signing_bytes, self.signature)
        except (BadSignatureError, ValueError):
            raise CertificateError(
                f"certificate for {self.peer_id} is not signed by the org key it names "
                f"({fingerprint(self.org_key)})") from None

    def encode(self) -> bytes:
        if not self.signature:
            raise ValueError("an unsigned certificate has no encoding")
        return canonical.encode({**self._plain(), "sig": self.signature})

    @classmethod
    def decode(cls, data: Any) -> NodeCertificate:
        """Strictly decode *and* verify the signature (against the key it names, not yet
        against our pins: see `check_certificate`). CertificateError on anything off."""
        if not isinstance(data, bytes) or not 0 < len(data) <= MAX_CERT_BYTES:
            raise CertificateError(f"a certificate is 1..{MAX_CERT_BYTES} bytes")
        try:
            plain = checks.require_map("certificate", canonical.decode(data))
            if set(plain) != _FIELDS:
                raise ValidationError("certificate", f"fields {sorted(plain)[:10]} are not "
                                      f"{sorted(_FIELDS)}")
            if type(plain["format"]) is not int or plain["format"] != CERT_FORMAT:
                raise ValidationError("format", f"unknown certificate format {plain['format']!r}")
            cert = cls(plain["org"], plain["org_key"], plain["peer"], plain["region"],
                       plain["not_before_ms"], plain["expires_ms"], plain["sig"])
        except (DecodeError, ValidationError, TypeError) as exc:
            raise CertificateError(f"malformed certificate: {exc}") from None
        if len(cert.signature) != 64:
            raise CertificateError("malformed certificate: unsigned")
        if cert.encode() != data:
            raise CertificateError("certificate bytes are not canonical")
        cert.verify_signature()
        return cert

    def describe(self) -> str:
        return (f"org {self.org} (key {fingerprint(self.org_key)}) certifies {self.peer_id} "
                f"in {self.region}")


@dataclass(frozen=True)
class TrustAnchors:
    """The org keys we trust, by org name: an `org:NAME` or `region:R` rule matches a peer
    only through a certificate signed by a key pinned here for that very name. Several
    keys per name allow a rotation; the same key under two names trusts neither more."""

    orgs: Mapping[str, frozenset[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clean: dict[str, frozenset[bytes]] = {}
        for name, keys in self.orgs.items():
            check_org_name("trust.orgs", name)
            keys = frozenset(keys)
            if not keys or any(not isinstance(k, bytes) or len(k) != ORG_KEY_BYTES
                               for k in keys):
                raise ValidationError(f"trust.orgs.{name}", "expects 32-byte org keys")
            clean[name] = keys
        object.__setattr__(self, "orgs", MappingProxyType(clean))

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, bytes]]) -> TrustAnchors:
        """From (org name, org key) pairs; repeated names collect their keys."""
        out: dict[str, set[bytes]] = {}
        for name, key in pairs:
            out.setdefault(name, set()).add(key)
        return cls({name: frozenset(keys) for name, keys in out.items()})

    def merged(self, other: TrustAnchors) -> TrustAnchors:
        """Both sets of pins (each is an explicit local decision; see ADR 0008)."""
        return TrustAnchors.of([*self.pairs(), *other.pairs()])

    def pairs(self) -> list[tuple[str, bytes]]:
        return [(name, key) for name in sorted(self.orgs) for key in sorted(self.orgs[name])]

    def trusts(self, org: str, key: bytes) -> bool:
        return key in self.orgs.get(org, frozenset())

    def __bool__(self) -> bool:
        return bool(self.orgs)


NO_TRUST: Final = TrustAnchors()


def check_certificate(data: bytes, *, peer_id: str, org: str, region: str,
                      trust: TrustAnchors, now_ms: int) -> NodeCertificate:
    """The whole check a receiver makes, cheapest refusals first: well-formed and signed
    by the key it names, that key pinned for the org it names, for this authenticated
    peer, for the org and region the peer claims, and valid at `now_ms`."""
    cert = NodeCertificate.decode(data)
    if not trust.trusts(cert.org, cert.org_key):
        pinned = ", ".join(fingerprint(k) for k in sorted(trust.orgs.get(cert.org, ()))) or \
            "none"
        raise CertificateError(f"org key {fingerprint(cert.org_key)} is not one we trust for "
                               f"org {cert.org!r} (pinned: {pinned})")
    if cert.peer_id != peer_id:
        raise CertificateError(f"certificate is for {cert.peer_id}, not for {peer_id}")
    if cert.org != org:
        raise CertificateError(f"certificate is for org {cert.org!r}, the peer claims {org!r}")
    if cert.region != region:
        raise CertificateError(f"certificate is for region {cert.region}, the peer claims "
                               f"{region}")
    if now_ms + NOT_BEFORE_SKEW_MS < cert.not_before_ms:
        raise CertificateError(f"certificate is not valid before {cert.not_before_ms} "
                               f"(now {now_ms})")
    if now_ms >= cert.expires_ms:
        raise CertificateError(f"certificate expired at {cert.expires_ms} (now {now_ms})")
    return cert
