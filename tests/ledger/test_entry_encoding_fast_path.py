"""Entries encode their known-canonical fields directly (issue 15, apply path): the bytes
must be exactly `canonical.encode`'s, or replicas would disagree on hashes."""

from __future__ import annotations

import random

from gd_testkit import key_from_int

from gd.genome import canonical
from gd.ledger.entry import GENESIS_PREV, STATEMENT_TAG, LedgerEntry

ALPHABET = "az AZ09-_.é中ø\u00a0\u2028𝄞"


def summaries(rng: random.Random, count: int) -> list[dict]:
    out = []
    for _ in range(count):
        summary = {}
        for _ in range(rng.randrange(0, 16)):
            name = rng.choice("abcdefghijklmnopqrstuvwxyz") + str(rng.randrange(1000))
            summary[name] = rng.choice([
                rng.random() * rng.choice([-1e9, 1, 1e-9]), rng.randrange(-2**63, 2**63),
                rng.randrange(2**64), rng.random() < 0.5, "".join(
                    rng.choice(ALPHABET) for _ in range(rng.randrange(0, 40)))])
        out.append(summary)
    return out


def test_encoded_bytes_equal_the_canonical_encoding_before_and_after_sequencing():
    rng = random.Random(1501)
    key = key_from_int(7)
    prev = GENESIS_PREV
    for i, summary in enumerate(summaries(rng, 300)):
        statement = LedgerEntry.create(key, rng.choice(["decision", "experience"]),
                                       rng.randrange(2**64), canonical.sha256(bytes([i % 256])),
                                       summary, f"k-{i}")
        assert statement.encode() == canonical.encode(statement.to_plain())
        assert statement.statement_bytes() == (
            STATEMENT_TAG + canonical.encode(statement.statement_plain()))
        placed = statement.sequenced(i, prev)
        assert placed.encode() == canonical.encode(placed.to_plain())
        assert placed.statement_hash == canonical.sha256(
            STATEMENT_TAG + canonical.encode(placed.statement_plain()) + placed.signature)
        statement.entry_hash  # noqa: B018 (computed before sequencing: must not carry over)
        placed = statement.sequenced(i, prev)
        assert placed.entry_hash == canonical.sha256(canonical.encode(placed.to_plain()))
        placed.verify_signature()
        assert LedgerEntry.decode(placed.encoded) == placed
        prev = placed.entry_hash
