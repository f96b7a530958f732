"""Ledger entries and signed tree heads: signing, canonical bytes, strict decoding."""

from __future__ import annotations

from dataclasses import replace

import msgpack
import pytest
from gd_testkit import key_from_int

from gd.genome import NodeKey
from gd.genome.canonical import sha256
from gd.genome.errors import ValidationError
from gd.ledger.entry import (
    GENESIS_PREV,
    MAX_ENTRY_BYTES,
    MAX_SUMMARY_FIELDS,
    EntryKind,
    LedgerEntry,
)
from gd.ledger.errors import RemoteLedgerError
from gd.ledger.merkle import leaf_hash
from gd.ledger.sth import MAX_HEAD_BYTES, SignedTreeHead


def make(key: NodeKey, n: int = 1, **summary: object) -> LedgerEntry:
    return LedgerEntry.create(key, EntryKind.DECISION, hlc=1000 + n,
                              payload_hash=sha256(f"payload-{n}".encode()),
                              summary=summary or {"verdict": "accept", "cp": 0.75})


def test_create_signs_the_statement_and_sequencing_keeps_the_signature(key: NodeKey) -> None:
    entry = make(key)
    assert not entry.is_sequenced
    entry.verify_signature()
    placed = entry.sequenced(0, GENESIS_PREV)
    placed.verify_signature()  # position is not part of the signed statement
    assert placed.statement_hash == entry.statement_hash
    assert placed.entry_hash != entry.entry_hash  # but it is part of the entry hash
    assert placed.leaf_hash == leaf_hash(placed.encode())
    assert placed.unsequenced() == entry


def test_sequencing_checks_the_position_it_is_given(key: NodeKey) -> None:
    """`sequenced` copies the validated statement instead of rebuilding it, so the
    position is the one thing it must still check."""
    entry = make(key)
    entry.entry_hash  # noqa: B018 (cached before sequencing: must not carry over)
    for index, prev, field in ((-1, sha256(b"p"), "index"), (True, sha256(b"p"), "index"),
                               (2**64, sha256(b"p"), "index"), (3, b"short", "prev"),
                               (3, None, "prev"), (0, sha256(b"not genesis"), "prev")):
        with pytest.raises(ValidationError, match=field):
            entry.sequenced(index, prev)
    placed = entry.sequenced(3, sha256(b"p"))
    assert (placed.index, placed.prev_hash) == (3, sha256(b"p"))
    assert placed.entry_hash == sha256(placed.encode()) != entry.entry_hash
    assert LedgerEntry.decode(placed.encoded) == placed
    assert entry.index is None and entry.prev_hash is None  # the statement is untouched


def test_encode_decode_round_trip_is_byte_exact(key: NodeKey) -> None:
    for entry in (make(key), make(key, 2).sequenced(7, sha256(b"prev"))):
        raw = entry.encode()
        back = LedgerEntry.decode(raw)
        assert back == entry
        assert back.encode() == raw
        assert back.entry_hash == sha256(raw)


def test_every_kind_is_accepted_and_unknown_kinds_are_refused(key: NodeKey) -> None:
    for kind in EntryKind:
        entry = LedgerEntry.create(key, kind, 1, sha256(b"x"))
        assert LedgerEntry.decode(entry.encode()).kind is kind
    plain = make(key).to_plain()
    plain["kind"] = "gossip"
    with pytest.raises(RemoteLedgerError, match="kind"):
        LedgerEntry.decode(msgpack.packb(dict(sorted(plain.items())), use_bin_type=True))


def test_tampered_statement_fails_signature(key: NodeKey, other_key: NodeKey) -> None:
    entry = make(key)
    for change in ({"hlc": entry.hlc + 1}, {"payload_hash": sha256(b"other")},
                   {"summary": {"verdict": "reject"}}, {"idempotency_key": "other"},
                   {"kind": EntryKind.REVOCATION}, {"author": other_key.peer_id}):
        with pytest.raises(RemoteLedgerError, match="signature"):
            replace(entry, **change).verify_signature()


@pytest.mark.parametrize("mutate", [
    lambda p: p.pop("sig"),
    lambda p: p.update(extra=1),
    lambda p: p.update(v=2),
    lambda p: p.update(hlc=-1),
    lambda p: p.update(payload_hash=b"short"),
    lambda p: p.update(author="not-a-peer"),
    lambda p: p.update(index=3),                       # index without prev
    lambda p: p.update(index=0, prev=b"\x01" * 32),    # entry 0 must link to genesis
    lambda p: p.update(summary={"Bad Key": 1}),
    lambda p: p.update(summary={"nested": {"a": 1}}),
    lambda p: p.update(summary={f"k{i}": i for i in range(MAX_SUMMARY_FIELDS + 1)}),
    lambda p: p.update(summary={"text": "x" * 300}),
    lambda p: p.update(key="has space"),
])
def test_strict_decode_refuses_malformed_entries(key: NodeKey, mutate: object) -> None:
    plain = make(key).to_plain()
    mutate(plain)  # type: ignore[operator]
    raw = msgpack.packb(dict(sorted(plain.items())), use_bin_type=True)
    with pytest.raises(RemoteLedgerError):
        LedgerEntry.decode(raw)


def test_strict_decode_refuses_non_canonical_oversize_and_garbage(key: NodeKey) -> None:
    plain = make(key).to_plain()
    unsorted = msgpack.packb(dict(reversed(sorted(plain.items()))), use_bin_type=True)
    with pytest.raises(RemoteLedgerError, match="canonical"):
        LedgerEntry.decode(unsorted)
    with pytest.raises(RemoteLedgerError, match="exceeds"):
        LedgerEntry.decode(b"\x80" * (MAX_ENTRY_BYTES + 1))
    for garbage in (b"", b"\xc1", b"\x93\x01\x02\x03", make(key).encode()[:-3]):
        with pytest.raises(RemoteLedgerError):
            LedgerEntry.decode(garbage)


def test_construction_validates_fields(key: NodeKey) -> None:
    with pytest.raises(ValidationError):
        LedgerEntry.create(key, "decision", -5, sha256(b"x"))
    with pytest.raises(ValidationError):
        LedgerEntry.create(key, "decision", 1, b"not 32 bytes")
    with pytest.raises(ValueError):
        LedgerEntry.create(key, "unknown-kind", 1, sha256(b"x"))
    with pytest.raises(ValidationError, match="summary"):
        LedgerEntry.create(key, "decision", 1, sha256(b"x"), summary={"x": float("nan")})


def test_default_idempotency_key_is_the_payload_hash(key: NodeKey) -> None:
    entry = make(key)
    assert entry.idempotency_key == entry.payload_hash.hex()


# -- signed tree heads -------------------------------------------------------------------

def test_tree_head_round_trip_and_verify(key: NodeKey) -> None:
    head = SignedTreeHead.create(key, 12, sha256(b"root"), 99, "eu-west")
    head.verify()
    head.verify(trusted_signers={key.peer_id})
    assert SignedTreeHead.decode(head.encode()) == head
    assert SignedTreeHead.from_json(head.to_json()) == head


def test_tree_head_tamper_is_detected(key: NodeKey) -> None:
    head = SignedTreeHead.create(key, 12, sha256(b"root"), 99, "eu-west")
    other = key_from_int(77)
    for change in ({"size": 13}, {"root": sha256(b"other")}, {"timestamp": 100},
                   {"log_id": "eu-east"}, {"signer": other.peer_id},
                   {"signature": bytes(64)}):
        with pytest.raises(RemoteLedgerError):
            replace(head, **change).verify()
    with pytest.raises(RemoteLedgerError, match="not trusted"):
        head.verify(trusted_signers={other.peer_id})


def test_tree_head_strict_decode(key: NodeKey) -> None:
    plain = SignedTreeHead.create(key, 1, sha256(b"r"), 1).to_plain()
    for mutate in (lambda p: p.pop("root"), lambda p: p.update(x=1),
                   lambda p: p.update(size=-1), lambda p: p.update(root=b"x")):
        bad = dict(plain)
        mutate(bad)
        with pytest.raises(RemoteLedgerError):
            SignedTreeHead.decode(msgpack.packb(dict(sorted(bad.items())), use_bin_type=True))
    unsorted = msgpack.packb(dict(reversed(sorted(plain.items()))), use_bin_type=True)
    with pytest.raises(RemoteLedgerError, match="canonical"):
        SignedTreeHead.decode(unsorted)
    # The size bound comes before any parsing: an outsider's blob is not decoded at all.
    with pytest.raises(RemoteLedgerError, match=f"exceeds {MAX_HEAD_BYTES}"):
        SignedTreeHead.decode(b"\xc0" * (MAX_HEAD_BYTES + 1))
    with pytest.raises(RemoteLedgerError):
        SignedTreeHead.from_json({"size": 1})
