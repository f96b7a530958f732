"""`ContentRecord`: decisions and experiences share one encode / decode / content id."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from record_strategies import decisions, experiences

from gd.genome import Decision, Experience, canonical
from gd.genome.content_record import ID_BYTES, ContentRecord


@settings(max_examples=50)
@given(decisions(), experiences())
def test_the_id_is_the_sha256_of_the_canonical_bytes_and_survives_a_round_trip(
        dec: Decision, exp: Experience) -> None:
    for record in (dec, exp):
        raw = canonical.encode(record.to_plain())
        assert record.encode() == raw
        assert record.id == hashlib.sha256(raw).digest()[:ID_BYTES].hex()
        again = type(record).decode(raw)
        assert again == record and again.id == record.id


@given(experiences())
def test_a_different_record_has_a_different_id(exp: Experience) -> None:
    other = dataclasses.replace(exp, success=not exp.success)
    assert other.id != exp.id


def test_a_record_must_say_what_its_canonical_form_is() -> None:
    class NoForm(ContentRecord):
        pass

    with pytest.raises(TypeError, match="abstract"):
        NoForm()  # type: ignore[abstract]

    class Pair(ContentRecord):
        def __init__(self, a: int) -> None:
            self.a = a

        def to_plain(self) -> dict[str, Any]:
            return {"a": self.a}

        @classmethod
        def from_plain(cls, data: Any) -> Pair:
            return cls(data["a"])

    assert Pair.decode(Pair(3).encode()).a == 3
    assert Pair(3).id == Pair(3).id != Pair(4).id
