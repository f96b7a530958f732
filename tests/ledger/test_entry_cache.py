"""A placed statement's bytes are spliced from its own encoding (issue 15, apply path):
they must be exactly the full canonical encoding, or replicas would disagree on hashes;
and the lock-free cached attributes compute once and hand back the same values."""

from __future__ import annotations

import random

from gd_testkit import key_from_int

from gd.genome import canonical
from gd.genome.memo import memo
from gd.ledger import merkle
from gd.ledger.entry import GENESIS_PREV, LedgerEntry
from gd.ledger.entry_cache import placed_encoding

KIND_NAMES = ("experience", "decision", "agreement", "promotion", "revocation", "checkpoint")
KEY_CHARS = "abcXYZ019._:-"


def statements(seed: int, count: int) -> list[LedgerEntry]:
    """Statements whose fields cross every msgpack size boundary before `prev`."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        hlc = rng.choice([0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32,
                          rng.randrange(2**64), 2**64 - 1])
        size = rng.choice([1, 30, 31, 32, 33, 100, 128])
        key = rng.choice("abc") + "".join(rng.choice(KEY_CHARS) for _ in range(size - 1))
        summary = {"n": rng.randrange(-2**63, 2**63), "t": "é" * rng.randrange(40)}
        out.append(LedgerEntry.create(key_from_int(i % 5 + 1), rng.choice(KIND_NAMES), hlc,
                                      canonical.sha256(rng.randbytes(8)), summary, key))
    return out


def test_placed_bytes_equal_the_full_canonical_encoding() -> None:
    rng = random.Random(20261207)
    for statement in statements(4441, 400):
        index = rng.choice([0, 1, 127, 128, 65536, 2**32, rng.randrange(2**64), 2**64 - 1])
        prev = GENESIS_PREV if index == 0 else rng.randbytes(32)
        placed = statement.sequenced(index, prev)
        assert "encoded" in placed.__dict__  # spliced, not left to the full encoder
        assert placed.encoded == placed.encode() == canonical.encode(placed.to_plain())
        assert placed.entry_hash == canonical.sha256(placed.encode())
        assert placed.leaf_hash == merkle.leaf_hash(placed.encode())
        assert LedgerEntry.decode(placed.encoded) == placed


def test_decoded_statement_is_placed_the_same_way() -> None:
    for statement in statements(77, 50):
        decoded = LedgerEntry.decode(statement.encoded)
        placed = decoded.sequenced(9, bytes(range(32)))
        assert placed.encoded == placed.encode()


def test_bytes_not_laid_out_as_a_statement_fall_back_to_the_full_encoder() -> None:
    statement = statements(5, 1)[0]
    fields = (statement.author, statement.hlc, statement.idempotency_key,
              statement.kind.value)
    placed = statement.sequenced(3, bytes(32))
    # Already placed: no nil where the index goes.
    assert placed_encoding(placed.encoded, *fields, 4, bytes(32)) is None
    # The fields do not match the bytes (another author length shifts every offset).
    assert placed_encoding(statement.encoded, "x" + statement.author, *fields[1:], 4,
                           bytes(32)) is None
    # Out of range values are never spliced.
    assert placed_encoding(statement.encoded, *fields, 2**64, bytes(32)) is None
    assert placed_encoding(statement.encoded, *fields, 4, bytes(31)) is None
    # A placed entry placed again still encodes canonically (the full encoder).
    again = placed.sequenced(3, bytes(32))
    assert "encoded" not in again.__dict__
    assert again.encoded == placed.encoded


def test_once_computes_once_per_object() -> None:
    calls: list[int] = []

    class Thing:
        def __init__(self, n: int) -> None:
            self.n = n

        @memo
        def doubled(self) -> int:
            """Twice n."""
            calls.append(self.n)
            return 2 * self.n

    a, b = Thing(2), Thing(5)
    assert (a.doubled, a.doubled, b.doubled, b.doubled) == (4, 4, 10, 10)
    assert calls == [2, 5]
    assert isinstance(Thing.__dict__["doubled"], memo)
    assert Thing.doubled.__doc__ == "Twice n."
