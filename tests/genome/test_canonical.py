"""The canonical encoding: one byte string per value, strict and bounded decoding."""

from __future__ import annotations

import contextlib
import math

import msgpack
import pytest
from gd_testkit import key_from_int
from hypothesis import given
from hypothesis import strategies as st
from record_strategies import decisions, experiences, genes, states, synapses

from gd.genome import Decision, DecodeError, Experience, Gene, StateVector, Synapse, canonical

KEYS = [key_from_int(i) for i in range(1, 4)]


@given(genes(KEYS))
def test_gene_round_trips_and_keeps_its_hash(gene: Gene) -> None:
    again = Gene.decode(gene.encode())
    assert again == gene
    assert again.version_hash == gene.version_hash
    assert again.encode() == gene.encode()
    again.verify()


@given(states())
def test_state_round_trips(state: StateVector) -> None:
    assert StateVector.from_plain(canonical.decode(canonical.encode(state.to_plain()))) == state


@given(synapses)
def test_synapse_round_trips(syn: Synapse) -> None:
    assert Synapse.from_plain(canonical.decode(syn.encode())) == syn


@given(experiences())
def test_experience_round_trips(exp: Experience) -> None:
    again = Experience.decode(exp.encode())
    assert again == exp and again.id == exp.id


@given(decisions())
def test_decision_round_trips(dec: Decision) -> None:
    again = Decision.decode(dec.encode())
    assert again == dec and again.id == dec.id


@given(st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**64 - 1), max_size=8))
def test_map_key_order_does_not_change_bytes(data: dict[str, int]) -> None:
    reordered = dict(reversed(list(data.items())))
    assert canonical.encode(data) == canonical.encode(reordered)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_have_no_encoding(bad: float) -> None:
    with pytest.raises(TypeError, match="non-finite"):
        canonical.encode({"x": bad})


def test_non_string_keys_and_unknown_types_are_refused() -> None:
    with pytest.raises(TypeError, match="not a str"):
        canonical.encode({1: "a"})
    with pytest.raises(TypeError, match="no canonical encoding"):
        canonical.encode({"a": object()})


@given(st.binary(max_size=64))
def test_decoding_garbage_raises_decode_error_only(blob: bytes) -> None:
    with contextlib.suppress(DecodeError):
        canonical.decode(blob)


def test_oversize_and_truncated_records_are_refused() -> None:
    with pytest.raises(DecodeError, match="exceeds"):
        canonical.decode(b"\x00" * (canonical.MAX_RECORD_BYTES + 1))
    whole = canonical.encode({"a": "b" * 100})
    with pytest.raises(DecodeError):
        canonical.decode(whole[:-10])
    with pytest.raises(DecodeError):
        canonical.decode(whole + b"\x01")
    with pytest.raises(DecodeError):
        canonical.decode(msgpack.packb({1: 2}))  # int map keys are not canonical


def test_integers_beyond_64_bits_are_refused() -> None:
    with pytest.raises(TypeError, match="64 bits"):
        canonical.encode({"x": 2**64})
    with pytest.raises(TypeError, match="64 bits"):
        canonical.encode([-(2**63) - 1])


@given(genes(KEYS))
def test_a_stored_gene_rebuilds_equal_to_the_validated_one(gene: Gene) -> None:
    raw = gene.wire_bytes
    stored = Gene.from_stored(canonical.decode(raw), raw=raw, status=gene.status)
    assert stored == Gene.from_wire(canonical.decode(raw), status=gene.status)
    assert stored.version_hash == gene.version_hash and stored.wire_bytes == raw
    assert stored.encode() == gene.encode()
    stored.verify()


def test_a_stored_record_of_the_wrong_shape_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="wrong shape"):
        Gene.from_stored({"body": {"codons": [{"op": ">"}]}, "sig": b""})
