"""Signed tree heads: a node's signed claim "the log `log_id` has `size` entries, root `root`".

A head commits its signer to the whole history below it: with a consistency proof
anybody can check that a later head extends it, and with an audit path that an entry is
in it. Two heads for one log that do not fit together are evidence of a fork, signed by
whoever published them (`gd.ledger.forks`).

The signature covers the canonical msgpack of every field but itself, behind a domain tag
(so an entry signature can never be passed off as a head signature, nor the reverse).
`timestamp` is supplied by the caller (an HLC stamp or epoch milliseconds): this module
reads no clock.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from gd.genome import canonical, checks
from gd.genome.errors import SignatureError, ValidationError
from gd.genome.identity import NodeKey, is_peer_id, verify
from gd.ledger.errors import RemoteLedgerError
from gd.ledger.strict_decode import decode_canonical

FORMAT_VERSION = 1
HEAD_TAG = b"gd-ledger-sth/1\x00"
HASH_SIZE = 32
# A head is ~200 bytes; anything far larger is not a head.
MAX_HEAD_BYTES = 1024
DEFAULT_LOG_ID = "local"

_FIELDS = {"log_id", "root", "sig", "signer", "size", "timestamp", "v"}


@dataclass(frozen=True)
class SignedTreeHead:
    """One signed tree head (see module docstring)."""

    log_id: str
    size: int
    root: bytes
    timestamp: int
    signer: str
    signature: bytes
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.version != FORMAT_VERSION:
            raise ValidationError("v", f"format version {self.version!r} is not supported")
        checks.ident("log_id", self.log_id)
        checks.uint("size", self.size)
        checks.digest("root", self.root, HASH_SIZE)
        checks.uint("timestamp", self.timestamp)
        if not isinstance(self.signer, str) or not is_peer_id(self.signer):
            raise ValidationError("signer", f"{self.signer!r} is not an Ed25519 peer id")
        checks.digest("sig", self.signature, 64)

    @classmethod
    def create(cls, key: NodeKey, size: int, root: bytes, timestamp: int,
               log_id: str = DEFAULT_LOG_ID) -> SignedTreeHead:
        unsigned = cls(log_id=log_id, size=size, root=root, timestamp=timestamp,
                       signer=key.peer_id, signature=bytes(64))
        return replace(unsigned, signature=key.sign(unsigned.signed_bytes()))

    def signed_bytes(self) -> bytes:
        return HEAD_TAG + canonical.encode({
            "log_id": self.log_id, "root": self.root, "signer": self.signer,
            "size": self.size, "timestamp": self.timestamp, "v": self.version,
        })

    def verify(self, trusted_signers: Collection[str] | None = None) -> None:
        """Raise RemoteLedgerError unless the signature holds (and, when `trusted_signers`
        is given, the signer is one of them: a head from a non-orderer proves nothing)."""
        if trusted_signers is not None and self.signer not in trusted_signers:
            raise RemoteLedgerError(f"tree head signer {self.signer} is not trusted")
        try:
            verify(self.signer, self.signed_bytes(), self.signature)
        except SignatureError as exc:
            raise RemoteLedgerError(f"tree head signature: {exc}") from None

    def to_plain(self) -> dict[str, Any]:
        return {"log_id": self.log_id, "root": self.root, "sig": self.signature,
                "signer": self.signer, "size": self.size, "timestamp": self.timestamp,
                "v": self.version}

    def encode(self) -> bytes:
        return canonical.encode(self.to_plain())

    @cached_property
    def head_hash(self) -> bytes:
        """SHA-256 of the encoding: names this exact head in alarms and logs."""
        return canonical.sha256(self.encode())

    @classmethod
    def from_plain(cls, data: Any) -> SignedTreeHead:
        data = checks.require_map("tree head", data)
        checks.exact_keys("tree head", data, _FIELDS)
        return cls(log_id=data["log_id"], size=data["size"], root=data["root"],
                   timestamp=data["timestamp"], signer=data["signer"], signature=data["sig"],
                   version=data["v"])

    @classmethod
    def decode(cls, raw: bytes) -> SignedTreeHead:
        """Strictly decode untrusted bytes (signature not checked: call `verify`)."""
        return decode_canonical(raw, limit=MAX_HEAD_BYTES, what="tree head",
                                parse=cls.from_plain)

    def to_json(self) -> dict[str, Any]:
        return {"log_id": self.log_id, "size": self.size, "root": self.root.hex(),
                "timestamp": self.timestamp, "signer": self.signer,
                "signature": self.signature.hex(), "version": self.version}

    @classmethod
    def from_json(cls, data: Any) -> SignedTreeHead:
        """Parse `to_json` output (e.g. a head pasted into a file); RemoteLedgerError."""
        if not isinstance(data, Mapping):
            raise RemoteLedgerError("tree head: expected a JSON object")
        try:
            return cls(log_id=data["log_id"], size=data["size"],
                       root=bytes.fromhex(data["root"]), timestamp=data["timestamp"],
                       signer=data["signer"], signature=bytes.fromhex(data["signature"]),
                       version=data.get("version", FORMAT_VERSION))
        except (KeyError, TypeError, ValueError) as exc:
            raise RemoteLedgerError(f"malformed tree head: {exc}") from None
