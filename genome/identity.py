"""Node identity: one Ed25519 key, whose libp2p peer id names the node everywhere.

The peer id is computed here without importing libp2p (so the gene model stays light):
a libp2p Ed25519 peer id is the *identity multihash* of the protobuf-encoded public key,
written in base58btc (libp2p specs, peer-ids.md). Because the identity multihash embeds
the key, a verifier can recover the public key from the peer id alone; genes and ledger
entries therefore carry only the signer's peer id, never a separate key field.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from nacl.bindings import crypto_sign, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from gd.genome.errors import SignatureError

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
# protobuf PublicKey { KeyType Type = 1 [Ed25519 = 1]; bytes Data = 2 (32 bytes) }
_ED25519_PB_PREFIX = bytes([0x08, 0x01, 0x12, 0x20])
# multihash: code 0x00 (identity), length 0x24 (36 = 4 protobuf bytes + 32 key bytes)
_IDENTITY_MH_PREFIX = bytes([0x00, 0x24])
PEER_ID_PREFIX = _IDENTITY_MH_PREFIX + _ED25519_PB_PREFIX
SIGNATURE_BYTES = 64
KEY_FILE_HEADER = "# gd-node Ed25519 node key (hex seed). Keep secret: mode 0600.\n"


def b58encode(data: bytes) -> str:
    """Bitcoin-alphabet base58 (libp2p's peer id text form)."""
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, rem = divmod(n, 58)
        out.append(_B58_ALPHABET[rem])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    """Inverse of `b58encode`; raises ValueError on a character outside the alphabet."""
    n = 0
    for ch in text:
        try:
            n = n * 58 + _B58_INDEX[ch]
        except KeyError:
            raise ValueError(f"invalid base58 character {ch!r}") from None
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    pad = len(text) - len(text.lstrip("1"))
    return b"\0" * pad + body


def peer_id_from_public_key(public_key: bytes) -> str:
    """The libp2p peer id (`12D3KooW…`) of a raw 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return b58encode(PEER_ID_PREFIX + public_key)


def public_key_from_peer_id(peer_id: str) -> bytes:
    """Recover the Ed25519 public key embedded in a peer id; SignatureError if not one."""
    try:
        raw = b58decode(peer_id)
    except ValueError as exc:
        raise SignatureError(f"peer id {peer_id!r} is not base58: {exc}") from None
    if len(raw) != len(PEER_ID_PREFIX) + 32 or not raw.startswith(PEER_ID_PREFIX):
        raise SignatureError(f"peer id {peer_id!r} is not an Ed25519 identity peer id")
    return raw[len(PEER_ID_PREFIX):]


@functools.lru_cache(maxsize=4096)
def is_peer_id(text: str) -> bool:
    """True when `text` is a well-formed Ed25519 peer id (cached: a node sees few peers)."""
    try:
        public_key_from_peer_id(text)
    except SignatureError:
        return False
    return True


def verify(peer_id: str, message: bytes, signature: bytes) -> None:
    """Check `signature` over `message` by the key behind `peer_id`; raise SignatureError."""
    if len(signature) != SIGNATURE_BYTES:
        raise SignatureError(f"signature is {len(signature)} bytes, expected 64")
    try:
        _verify_key(peer_id).verify(message, signature)
    except BadSignatureError:
        raise SignatureError(f"bad signature for signer {peer_id}") from None


@functools.lru_cache(maxsize=4096)
def _verify_key(peer_id: str) -> VerifyKey:
    return VerifyKey(public_key_from_peer_id(peer_id))


@dataclass(frozen=True)
class NodeKey:
    """A node's Ed25519 signing key. `peer_id` is its public name."""

    signing_key: SigningKey

    @classmethod
    def generate(cls) -> NodeKey:
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeKey:
        """Deterministic key from a 32-byte seed (tests, simulations, testnets with --seed)."""
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        return cls(SigningKey(seed))

    @property
    def seed(self) -> bytes:
        return bytes(self.signing_key)

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @functools.cached_property
    def peer_id(self) -> str:
        return peer_id_from_public_key(self.public_key)

    @functools.cached_property
    def _secret(self) -> bytes:
        # libsodium's 64-byte secret key, derived once (what SigningKey holds inside).
        return bytes(crypto_sign_seed_keypair(self.seed)[1])

    def sign(self, message: bytes) -> bytes:
        """The Ed25519 signature of `message`. Straight through the binding: the same
        bytes as `signing_key.sign(message).signature` without building a SignedMessage
        (one per gene signed; issue 15)."""
        return bytes(crypto_sign(message, self._secret)[:SIGNATURE_BYTES])

    def save(self, path: Path) -> None:
        """Write the key with mode 0600. Refuses to overwrite: a lost key is a lost node."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(KEY_FILE_HEADER)
            handle.write(self.seed.hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    @classmethod
    def load(cls, path: Path) -> NodeKey:
        """Read a key written by `save`; ValueError with the reason if it is unusable."""
        lines = [ln.strip() for ln in path.read_text().splitlines()]
        body = [ln for ln in lines if ln and not ln.startswith("#")]
        if len(body) != 1:
            raise ValueError(f"{path}: expected one hex seed line")
        try:
            seed = bytes.fromhex(body[0])
        except ValueError:
            raise ValueError(f"{path}: the seed is not hex") from None
        if len(seed) != 32:
            raise ValueError(f"{path}: the seed is {len(seed)} bytes, expected 32")
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ValueError(f"{path}: key file mode {mode:o} is readable by others; chmod 600")
        return cls.from_seed(seed)
