"""`/gd/handshake/2.0.0`: who are you, what do you speak, and can you prove it.

Runs once on a fresh stream right after libp2p has authenticated the connection (Noise).
Both sides speak at once, so the exchange costs one round trip plus one verdict:

    each side:  send Hello  ->  receive peer's Hello, verify  ->  send Verdict
                receive peer's Verdict  ->  Accepted (both said yes) or Rejected

A Hello carries the protocol versions the sender speaks (in preference order), its
capabilities, org, region, the domains it is willing to talk about, its ledger head (size
and Merkle root), its org certificate (empty if it has none), a fresh nonce, a timestamp
and an Ed25519 signature.

The signature binds (org, region, certificate, versions, capabilities, domains, ledger
head, nonce, timestamp) to the *signer's* peer id and to the *intended receiver's* peer
id. The signer
is never read from the message: the verifier fills in the peer id that the authenticated
connection reported (`stream.muxed_conn.peer_id`, trustworthy because plaintext security
is disabled, node/net/host.py). A Hello therefore cannot be replayed by another peer, nor
forwarded to a third node.

**Org and region are claims until certified.** The node key proves only the node: any
fresh key can claim `org = beta`. A claim becomes a fact only through the certificate
(`gd.genome.certificate`): beta's org key vouching for this peer id and region, checked
against the org keys the receiver pins (`TrustAnchors`), for this connection's peer, for
the org and region claimed, and valid at `now_ms`. `PeerHello.certified_org` and
`certified_region` hold the result, None when there is no valid certificate under a
trusted key (the peer still connects: mesh, DHT and peer-id rules work; `org:` and
`region:` rules never match it). A bad certificate is not a handshake failure, since an org
key the receiver does not pin looks exactly like a forged one; `certificate_problem` says
what was wrong, for the log.

Version 2 (this one) added the certificate; version-1 nodes speak `/gd/handshake/1.0.0`
and so never meet version-2 nodes: a mixed federation upgrades all at once.

Sans-I/O: the caller passes the clock reading (`now_ms`) and the nonce, moves bytes in
with `receive_data` and out with `data_to_send`, and reads the outcome from `outcome`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from gd.genome import canonical, checks
from gd.genome.certificate import (
    MAX_CERT_BYTES,
    NO_TRUST,
    CertificateError,
    TrustAnchors,
    check_certificate,
)
from gd.genome.errors import SignatureError
from gd.genome.identity import NodeKey, is_peer_id, verify
from gd.protocol.errors import LocalProtocolError, RemoteProtocolError
from gd.protocol.wire import FrameDecoder, Message, encode_frame, message

PROTOCOL_ID = "/gd/handshake/2.0.0"
# Application protocol versions this build speaks, most preferred first. A peer with none
# in common is rejected with both lists in the reason.
SUPPORTED_VERSIONS: tuple[str, ...] = ("gd/1",)
# Domain-separation tag inside every signed Hello, so a handshake signature can never be
# mistaken for a gene or ledger signature made with the same node key.
SIGNING_CONTEXT = "gd/handshake/2 hello"
NONCE_BYTES = 16
LEDGER_ROOT_BYTES = 32
# How far the peer's clock may be from ours. Kerberos allows 5 minutes by default; NTP-run
# servers sit within milliseconds, so this only catches broken clocks and stale replays.
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000
# Bounds on what a Hello may carry: far above real use, low enough that verifying a Hello
# costs microseconds and a few KB whatever the peer sends.
MAX_VERSIONS = 16
MAX_CAPABILITIES = 32
MAX_DOMAINS = 64
MAX_TOKEN_LEN = 64
MAX_ORG_LEN = 128
MAX_REASON_LEN = 512
# The whole handshake fits easily in this; node/ uses it as the per-stream frame limit.
MAX_HANDSHAKE_FRAME = 16 * 1024


class RejectReason(enum.StrEnum):
    """Why a handshake failed, as logged and as sent to the peer."""

    VERSION = "version-mismatch"
    SIGNATURE = "bad-signature"
    CLOCK = "clock-skew"
    MALFORMED = "malformed"
    POLICY = "policy"
    UNKNOWN = "unknown"


def _tokens(field: str, values: tuple[str, ...], limit: int) -> None:
    if len(values) > limit:
        raise ValueError(f"{field}: {len(values)} entries, the limit is {limit}")
    for value in values:
        if not 0 < len(value) <= MAX_TOKEN_LEN or not value.isprintable():
            raise ValueError(f"{field}: {value[:MAX_TOKEN_LEN]!r} is not a short printable token")
    if len(set(values)) != len(values):
        raise ValueError(f"{field}: duplicate entries")


@message
@dataclass(frozen=True)
class Hello(Message):
    TYPE = "gd.handshake.hello"
    VERSION = 2
    versions: tuple[str, ...]
    capabilities: tuple[str, ...]
    org: str
    region: str
    domains: tuple[str, ...]
    ledger_size: int
    ledger_root: bytes
    nonce: bytes
    timestamp_ms: int
    signature: bytes
    certificate: bytes = b""

    def __post_init__(self) -> None:
        _tokens("versions", self.versions, MAX_VERSIONS)
        if not self.versions:
            raise ValueError("versions: empty")
        _tokens("capabilities", self.capabilities, MAX_CAPABILITIES)
        _tokens("domains", self.domains, MAX_DOMAINS)
        checks.text("org", self.org, MAX_ORG_LEN, required=True)
        checks.slug("region", self.region)
        if not 0 <= self.ledger_size <= checks.MAX_U64:
            raise ValueError("ledger_size: out of range")
        if len(self.ledger_root) != LEDGER_ROOT_BYTES:
            raise ValueError(f"ledger_root: expected {LEDGER_ROOT_BYTES} bytes")
        if len(self.nonce) != NONCE_BYTES:
            raise ValueError(f"nonce: expected {NONCE_BYTES} bytes")
        if not 0 <= self.timestamp_ms <= checks.MAX_U64:
            raise ValueError("timestamp_ms: out of range")
        if len(self.signature) != 64:
            raise ValueError("signature: expected 64 bytes")
        if len(self.certificate) > MAX_CERT_BYTES:
            raise ValueError(f"certificate: over {MAX_CERT_BYTES} bytes")

    def signed_bytes(self, signer: str, audience: str) -> bytes:
        """What the signature covers; `signer` comes from the connection, not from here."""
        return canonical.encode({
            "ctx": SIGNING_CONTEXT, "signer": signer, "audience": audience,
            "versions": list(self.versions), "capabilities": list(self.capabilities),
            "org": self.org, "region": self.region, "domains": list(self.domains),
            "ledger_size": self.ledger_size, "ledger_root": self.ledger_root,
            "nonce": self.nonce, "timestamp_ms": self.timestamp_ms,
            "certificate": self.certificate,
        })


@message
@dataclass(frozen=True)
class Verdict(Message):
    TYPE = "gd.handshake.verdict"
    ok: bool
    reason: str = ""
    detail: str = ""

    def __post_init__(self) -> None:
        if len(self.reason) > MAX_TOKEN_LEN or len(self.detail) > MAX_REASON_LEN:
            raise ValueError("verdict reason too long")


@dataclass(frozen=True)
class HandshakeOffer:
    """What we tell peers about ourselves."""

    org: str
    region: str
    capabilities: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    ledger_size: int = 0
    ledger_root: bytes = b"\x00" * LEDGER_ROOT_BYTES
    versions: tuple[str, ...] = SUPPORTED_VERSIONS
    # Our org's certificate of this node (`gd-node org certify`), encoded; b"": none.
    certificate: bytes = b""


@dataclass(frozen=True)
class PeerHello:
    """A verified Hello: every field here is signed by `peer_id`'s key.

    `org` and `region` are what the peer *claims* (for logs, display and mesh topology);
    `certified_org` and `certified_region` are set only when a certificate from an org
    key we trust vouches for them, and are the only ones an authorisation may read."""

    peer_id: str
    version: str
    org: str
    region: str
    capabilities: tuple[str, ...]
    domains: tuple[str, ...]
    ledger_size: int
    ledger_root: bytes
    timestamp_ms: int
    certified_org: str | None = None
    certified_region: str | None = None
    certificate_problem: str = ""  # why a certificate sent was not accepted ("" if none)

    @property
    def certified(self) -> bool:
        return self.certified_org is not None


@dataclass(frozen=True)
class Accepted:
    peer: PeerHello


@dataclass(frozen=True)
class Rejected:
    reason: RejectReason
    detail: str
    by_peer: bool  # True: the peer refused us; False: we refused the peer

    def __str__(self) -> str:
        who = "peer rejected us" if self.by_peer else "we rejected the peer"
        return f"{who}: {self.reason.value}: {self.detail}"


Outcome = Accepted | Rejected
# A policy hook: return a reason string to refuse a verified peer (e.g. wrong region).
Admit = Callable[[PeerHello], str | None]


class _State(enum.Enum):
    AWAIT_HELLO = "await-hello"
    AWAIT_VERDICT = "await-verdict"
    DONE = "done"


def choose_version(ours: tuple[str, ...], theirs: tuple[str, ...]) -> str | None:
    """Our most preferred version that the peer also speaks."""
    return next((v for v in ours if v in theirs), None)


def make_hello(key: NodeKey, offer: HandshakeOffer, audience: str, *, nonce: bytes,
               now_ms: int) -> Hello:
    """A Hello for `audience`, signed with the node key."""
    unsigned = Hello(
        versions=offer.versions, capabilities=offer.capabilities, org=offer.org,
        region=offer.region, domains=offer.domains, ledger_size=offer.ledger_size,
        ledger_root=offer.ledger_root, nonce=nonce, timestamp_ms=now_ms, signature=b"\0" * 64,
        certificate=offer.certificate,
    )
    sig = key.sign(unsigned.signed_bytes(key.peer_id, audience))
    return Hello(**{**unsigned.fields(), "signature": sig})


def _certified(hello: Hello, signer: str, trust: TrustAnchors, now_ms: int
               ) -> tuple[str | None, str | None, str]:
    """(certified org, certified region, problem) for a Hello whose signature holds."""
    if not hello.certificate:
        return None, None, ""
    try:
        cert = check_certificate(hello.certificate, peer_id=signer, org=hello.org,
                                 region=hello.region, trust=trust, now_ms=now_ms)
    except CertificateError as exc:
        return None, None, str(exc)[:MAX_REASON_LEN]
    return cert.org, cert.region, ""


def check_hello(hello: Hello, *, signer: str, audience: str, now_ms: int,
                versions: tuple[str, ...] = SUPPORTED_VERSIONS,
                trust: TrustAnchors = NO_TRUST) -> PeerHello:
    """Verify a Hello from the connection-authenticated `signer`; raise HelloRefused.
    Its org and region come back certified only under an org key in `trust`."""
    version = choose_version(versions, hello.versions)
    if version is None:
        raise HelloRefused(RejectReason.VERSION,
                           f"we speak {list(versions)}, peer speaks {list(hello.versions)}")
    try:
        verify(signer, hello.signed_bytes(signer, audience), hello.signature)
    except SignatureError as exc:
        raise HelloRefused(RejectReason.SIGNATURE,
                           f"Hello not signed by the connection's peer {signer}: {exc}") from None
    skew = abs(now_ms - hello.timestamp_ms)
    if skew > MAX_CLOCK_SKEW_MS:
        raise HelloRefused(RejectReason.CLOCK,
                           f"peer clock is {skew / 1000:.0f} s off (limit "
                           f"{MAX_CLOCK_SKEW_MS // 1000} s)")
    certified_org, certified_region, problem = _certified(hello, signer, trust, now_ms)
    return PeerHello(
        peer_id=signer, version=version, org=hello.org, region=hello.region,
        capabilities=hello.capabilities, domains=hello.domains, ledger_size=hello.ledger_size,
        ledger_root=hello.ledger_root, timestamp_ms=hello.timestamp_ms,
        certified_org=certified_org, certified_region=certified_region,
        certificate_problem=problem,
    )


class HelloRefused(Exception):
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class Handshake:
    """One side of one handshake, as a state machine.

    `remote_peer_id` must come from the authenticated connection. Feed received bytes to
    `receive_data`, send whatever `data_to_send()` returns, stop when `outcome` is set.
    `trust` holds the org keys whose certificates we believe (none: every peer is
    uncertified).
    """

    def __init__(self, key: NodeKey, offer: HandshakeOffer, remote_peer_id: str, *,
                 now_ms: int, nonce: bytes, admit: Admit | None = None,
                 trust: TrustAnchors = NO_TRUST) -> None:
        if not is_peer_id(remote_peer_id):
            raise LocalProtocolError(f"{remote_peer_id!r} is not a peer id")
        if remote_peer_id == key.peer_id:
            raise LocalProtocolError("a node does not handshake with itself")
        self.local_peer_id = key.peer_id
        self.remote_peer_id = remote_peer_id
        self._offer = offer
        self._now_ms = now_ms
        self._admit = admit
        self._trust = trust
        self._decoder = FrameDecoder(max_frame_size=MAX_HANDSHAKE_FRAME)
        self._out = bytearray(encode_frame(
            make_hello(key, offer, remote_peer_id, nonce=nonce, now_ms=now_ms)))
        self._state = _State.AWAIT_HELLO
        self._peer: PeerHello | None = None
        self.outcome: Outcome | None = None

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def _finish(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self._state = _State.DONE

    def _refuse(self, reason: RejectReason, detail: str) -> None:
        detail = detail[:MAX_REASON_LEN]
        self._out += encode_frame(Verdict(ok=False, reason=reason.value, detail=detail))
        self._finish(Rejected(reason, detail, by_peer=False))

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer. Garbage becomes a `Rejected(MALFORMED)` outcome (and a
        Verdict telling the peer why), never an exception."""
        if self._state is _State.DONE:
            if data:
                raise LocalProtocolError("receive_data() after the handshake finished")
            return
        try:
            self._decoder.feed(data)
            # `done`, not `_state`: mypy would keep `_state` narrowed across `_handle`.
            while not self.done and (msg := self._decoder.next_message()):
                self._handle(msg)
            if self.done and self._decoder.buffered and self.accepted:
                raise RemoteProtocolError("bytes after the final verdict")
        except RemoteProtocolError as exc:
            self._refuse(RejectReason.MALFORMED, exc.message)

    def peer_closed(self) -> None:
        """The stream ended before the handshake did."""
        if self._state is not _State.DONE:
            self._finish(Rejected(RejectReason.MALFORMED, "stream closed mid-handshake",
                                  by_peer=True))

    def timed_out(self, seconds: float) -> None:
        """The caller's clock ran out before the peer finished its part."""
        if self._state is not _State.DONE:
            self._finish(Rejected(RejectReason.MALFORMED,
                                  f"handshake not finished within {seconds} s", by_peer=True))

    @property
    def accepted(self) -> bool:
        return isinstance(self.outcome, Accepted)

    def _handle(self, msg: Message) -> None:
        if isinstance(msg, Verdict) and not msg.ok:
            reason = RejectReason(msg.reason) if msg.reason in RejectReason._value2member_map_ \
                else RejectReason.UNKNOWN
            self._finish(Rejected(reason, msg.detail, by_peer=True))
        elif self._state is _State.AWAIT_HELLO and isinstance(msg, Hello):
            self._on_hello(msg)
        elif self._state is _State.AWAIT_VERDICT and isinstance(msg, Verdict):
            assert self._peer is not None
            self._finish(Accepted(self._peer))
        else:
            raise RemoteProtocolError(f"unexpected {msg.TYPE} in state {self._state.value}")

    def _on_hello(self, hello: Hello) -> None:
        try:
            peer = check_hello(hello, signer=self.remote_peer_id, audience=self.local_peer_id,
                               now_ms=self._now_ms, versions=self._offer.versions,
                               trust=self._trust)
        except HelloRefused as exc:
            self._refuse(exc.reason, exc.detail)
            return
        refusal = self._admit(peer) if self._admit else None
        if refusal:
            self._refuse(RejectReason.POLICY, refusal)
            return
        self._peer = peer
        self._out += encode_frame(Verdict(ok=True))
        self._state = _State.AWAIT_VERDICT
