"""Ledger entries: what an author states, and where the chain put it.

An entry has two layers, because in a region the author is rarely the node that orders:

* the **statement** — format version, kind, author peer id, HLC timestamp, payload hash,
  public summary, idempotency key — is what the author signs (Ed25519, over the canonical
  msgpack of those fields behind a domain tag, so the signature can never be replayed as
  a gene's or a tree head's);
* the **position** — index and previous entry hash — is assigned when the region's
  ordered log is applied, identically on every replica. The chain links and the signed
  tree heads attest the order; the author's signature attests the content. Re-ordering a
  proposal after a leader change therefore never invalidates a signature.

The entry hash (the next entry's `prev_hash`) and the Merkle leaf cover the whole
encoding, signature included. Payloads (a decision, an experience, an approval) stay in
the Cortex; the ledger holds only their SHA-256 and a small summary of public scalars,
because the ledger is shared across organisations and a gene's content is not.

Decoding is strict (`LedgerEntry.decode`): exact field set, every field validated, and
the bytes must be the canonical encoding of the value they decode to, so one entry has
exactly one byte form and one hash.
"""

from __future__ import annotations

import enum
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gd.genome import canonical, checks
from gd.genome.errors import SignatureError, ValidationError
from gd.genome.identity import NodeKey, is_peer_id, verify
from gd.genome.memo import memo
from gd.ledger import merkle
from gd.ledger.entry_cache import placed_encoding
from gd.ledger.errors import RemoteLedgerError
from gd.ledger.strict_decode import decode_canonical

FORMAT_VERSION = 1
# Domain separation tag in front of every signed statement (see module docstring).
STATEMENT_TAG = b"gd-ledger-entry/1\x00"
HASH_SIZE = 32
GENESIS_PREV = bytes(HASH_SIZE)
# An entry is a few hundred bytes (peer id 52, three hashes, a signature, a summary);
# 8 KiB leaves room for a full summary and bounds what one hostile entry costs a replica
# that must store it forever.
MAX_ENTRY_BYTES = 8 * 1024
# The summary is for auditors skimming the log (a verdict, a CP, a domain), not a payload:
# 16 scalar fields of at most 256 characters each.
MAX_SUMMARY_FIELDS = 16
MAX_SUMMARY_TEXT = 256
SUMMARY_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_U64 = 2**64 - 1
MIN_I64 = -(2**63)

SummaryValue = str | int | float | bool
# Cached values that cover an entry's position (its whole encoding): `sequenced` drops
# them; everything else cached on a statement (its signed bytes and hash) carries over.
_POSITION_CACHED = frozenset({"encoded", "entry_hash", "leaf_hash"})

_STATEMENT_FIELDS = {"author", "hlc", "key", "kind", "payload_hash", "summary", "v"}
_ENTRY_FIELDS = _STATEMENT_FIELDS | {"index", "prev", "sig"}


class EntryKind(enum.StrEnum):
    """What an entry records. New kinds are added here (and the format version bumped if
    older nodes must refuse them: strict decoding rejects a kind it does not know)."""

    EXPERIENCE = "experience"
    DECISION = "decision"
    AGREEMENT = "agreement"
    PROMOTION = "promotion"
    REVOCATION = "revocation"
    CHECKPOINT = "checkpoint"


def entry_kind(value: Any) -> EntryKind:
    """`value` as an EntryKind; ValidationError (not ValueError) for a kind we don't know."""
    try:
        return EntryKind(value)
    except ValueError:
        raise ValidationError("kind", f"unknown entry kind {value!r}") from None


def _hex(value: Any) -> str:
    return value.hex() if isinstance(value, bytes) else ""


def _summary(value: Any) -> Mapping[str, SummaryValue]:
    if not isinstance(value, Mapping):
        raise ValidationError("summary", f"expected a map, got {type(value).__name__}")
    if len(value) > MAX_SUMMARY_FIELDS:
        raise ValidationError("summary", f"has {len(value)} fields, limit {MAX_SUMMARY_FIELDS}")
    out: dict[str, SummaryValue] = {}
    for key in sorted(value, key=str):
        if not isinstance(key, str) or not SUMMARY_KEY_RE.match(key):
            raise ValidationError("summary", f"key {key!r} must match {SUMMARY_KEY_RE.pattern}")
        item = value[key]
        where = f"summary.{key}"
        if isinstance(item, bool):
            out[key] = item
        elif isinstance(item, int):
            if not MIN_I64 <= item <= MAX_U64:
                raise ValidationError(where, "integer out of the 64-bit range")
            out[key] = item
        elif isinstance(item, float):
            out[key] = checks.finite(where, item)
        elif isinstance(item, str):
            out[key] = checks.text(where, item, MAX_SUMMARY_TEXT)
        else:
            raise ValidationError(where, f"only str, int, float and bool; got {item!r}")
    return types.MappingProxyType(out)


@dataclass(frozen=True)
class LedgerEntry:
    """One signed ledger entry; `index`/`prev_hash` are None until it is sequenced."""

    kind: EntryKind
    author: str
    hlc: int
    payload_hash: bytes
    summary: Mapping[str, SummaryValue] = field(hash=False)
    idempotency_key: str
    signature: bytes
    index: int | None = None
    prev_hash: bytes | None = None
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.version != FORMAT_VERSION:
            raise ValidationError("v", f"format version {self.version!r} is not supported")
        object.__setattr__(self, "kind", entry_kind(self.kind))
        if not isinstance(self.author, str) or not is_peer_id(self.author):
            raise ValidationError("author", f"{self.author!r} is not an Ed25519 peer id")
        checks.uint("hlc", self.hlc)
        checks.digest("payload_hash", self.payload_hash, HASH_SIZE)
        object.__setattr__(self, "summary", _summary(self.summary))
        checks.ident("key", self.idempotency_key)
        checks.digest("sig", self.signature, 64)
        if (self.index is None) != (self.prev_hash is None):
            raise ValidationError("index", "index and prev are set together or not at all")
        if self.index is not None:
            checks.uint("index", self.index)
            checks.digest("prev", self.prev_hash, HASH_SIZE)
            if self.index == 0 and self.prev_hash != GENESIS_PREV:
                raise ValidationError("prev", "entry 0 must link to the all-zero genesis hash")

    # -- construction -------------------------------------------------------------------

    @classmethod
    def create(cls, key: NodeKey, kind: EntryKind | str, hlc: int, payload_hash: bytes,
               summary: Mapping[str, SummaryValue] | None = None,
               idempotency_key: str | None = None) -> LedgerEntry:
        """Sign a new, unsequenced entry as `key`'s node.

        `idempotency_key` defaults to the payload hash in hex: recording the same payload
        twice is then one entry. Keys are scoped to their author.
        """
        unsigned = cls(kind=EntryKind(kind), author=key.peer_id, hlc=hlc,
                       payload_hash=payload_hash, summary=dict(summary or {}),
                       idempotency_key=idempotency_key or _hex(payload_hash),
                       signature=bytes(64))
        return replace(unsigned, signature=key.sign(unsigned.statement_bytes()))

    def sequenced(self, index: int, prev_hash: bytes) -> LedgerEntry:
        """This statement placed at `index`, linked to the entry before it.

        The statement is unchanged and was validated when it was built, so only the
        position is checked here and the statement's fields, bytes and hash are copied
        instead of built and checked again (`dataclasses.replace` re-ran the whole
        validation: ~15 us of the ~60 us a replica spends per applied statement, issue 15).
        What covers the position (the encoding, entry hash, leaf) is computed anew; the
        encoding is spliced from the statement's own (`entry_cache.placed_encoding`)."""
        checks.uint("index", index)
        checks.digest("prev", prev_hash, HASH_SIZE)
        if index == 0 and prev_hash != GENESIS_PREV:
            raise ValidationError("prev", "entry 0 must link to the all-zero genesis hash")
        placed = object.__new__(LedgerEntry)
        state = placed.__dict__
        state.update(self.__dict__)
        for name in _POSITION_CACHED:
            state.pop(name, None)
        state["index"] = index
        state["prev_hash"] = prev_hash
        if self.index is None:
            encoded = placed_encoding(self.encoded, self.author, self.hlc,
                                      self.idempotency_key, self.kind.value, index, prev_hash)
            if encoded is not None:
                state["encoded"] = encoded
        return placed

    def unsequenced(self) -> LedgerEntry:
        """The statement alone, as a proposal travels before the log orders it."""
        return replace(self, index=None, prev_hash=None)

    # -- encoding -----------------------------------------------------------------------

    def statement_plain(self) -> dict[str, Any]:
        return {
            "author": self.author, "hlc": self.hlc, "key": self.idempotency_key,
            "kind": self.kind.value, "payload_hash": self.payload_hash,
            "summary": dict(self.summary), "v": self.version,
        }

    def statement_bytes(self) -> bytes:
        """The bytes the author signs: domain tag + canonical msgpack of the statement.
        Computed once (checking the signature and hashing the statement both need it)."""
        cached = self.__dict__.get("_statement_bytes")
        if cached is None:
            cached = STATEMENT_TAG + canonical.encode_plain(self._canonical_statement())
            self.__dict__["_statement_bytes"] = cached
        return cached

    def _canonical_statement(self) -> dict[str, Any]:
        """`statement_plain()` with its keys in canonical (sorted) order. Every value was
        checked at construction and the summary is stored sorted, so this is already the
        canonical form: `encode_plain` gives exactly `canonical.encode`'s bytes."""
        return {"author": self.author, "hlc": self.hlc, "key": self.idempotency_key,
                "kind": self.kind.value, "payload_hash": self.payload_hash,
                "summary": dict(self.summary), "v": self.version}

    def to_plain(self) -> dict[str, Any]:
        plain = self.statement_plain()
        plain.update(index=self.index, prev=self.prev_hash, sig=self.signature)
        return plain

    def encode(self) -> bytes:
        """Canonical bytes of `to_plain()`, keys written in sorted order directly (see
        `_canonical_statement`)."""
        return canonical.encode_plain({
            "author": self.author, "hlc": self.hlc, "index": self.index,
            "key": self.idempotency_key, "kind": self.kind.value,
            "payload_hash": self.payload_hash, "prev": self.prev_hash, "sig": self.signature,
            "summary": dict(self.summary), "v": self.version})

    @classmethod
    def from_plain(cls, data: Any) -> LedgerEntry:
        """Build from decoded data; ValidationError names the bad field."""
        data = checks.require_map("entry", data)
        checks.exact_keys("entry", data, _ENTRY_FIELDS)
        if isinstance(data["v"], bool) or not isinstance(data["v"], int):
            raise ValidationError("v", "expected an integer format version")
        if not isinstance(data["kind"], str):
            raise ValidationError("kind", "expected text")
        return cls(kind=entry_kind(data["kind"]), author=data["author"], hlc=data["hlc"],
                   payload_hash=data["payload_hash"], summary=data["summary"],
                   idempotency_key=data["key"], signature=data["sig"], index=data["index"],
                   prev_hash=data["prev"], version=data["v"])

    @classmethod
    def decode(cls, raw: bytes) -> LedgerEntry:
        """Strictly decode untrusted bytes; RemoteLedgerError says what is wrong.

        The signature is *not* checked here (a replica decodes many entries it then
        verifies in bulk); call `verify_signature`.
        """
        entry = decode_canonical(raw, limit=MAX_ENTRY_BYTES, what="entry",
                                 parse=cls.from_plain)
        entry.__dict__["encoded"] = bytes(raw)
        return entry

    @memo
    def encoded(self) -> bytes:
        """`encode()`, computed once (hashes and the store all need it)."""
        return self.encode()

    # -- hashes and checks --------------------------------------------------------------

    @memo
    def entry_hash(self) -> bytes:
        """SHA-256 of the whole encoding; the next entry's `prev_hash`."""
        return canonical.sha256(self.encoded)

    @memo
    def leaf_hash(self) -> bytes:
        """This entry's RFC 9162 leaf in the ledger's Merkle tree."""
        return merkle.leaf_hash(self.encoded)

    @memo
    def statement_hash(self) -> bytes:
        """Identifies the signed statement regardless of its position (idempotency)."""
        return canonical.sha256(self.statement_bytes() + self.signature)

    @property
    def is_sequenced(self) -> bool:
        return self.index is not None

    def verify_signature(self) -> None:
        """Raise RemoteLedgerError unless the author signed this statement."""
        try:
            verify(self.author, self.statement_bytes(), self.signature)
        except SignatureError as exc:
            raise RemoteLedgerError(f"entry signature: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly view (hashes in hex) for the CLI and exports."""
        return {
            "index": self.index, "kind": self.kind.value, "author": self.author,
            "hlc": self.hlc, "payload_hash": self.payload_hash.hex(),
            "summary": dict(self.summary), "idempotency_key": self.idempotency_key,
            "prev_hash": self.prev_hash.hex() if self.prev_hash is not None else None,
            "entry_hash": self.entry_hash.hex(), "signature": self.signature.hex(),
            "version": self.version,
        }
