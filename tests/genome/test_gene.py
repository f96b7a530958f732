"""Gene validation, versioning and Ed25519 signatures."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import pytest
from gd_testkit import key_from_int, make_gene
from hypothesis import given
from hypothesis import strategies as st

from gd.genome import (
    Codon,
    Gene,
    GeneStatus,
    NodeKey,
    SignatureError,
    Synapse,
    ValidationError,
    canonical,
)
from gd.genome.identity import (
    b58decode,
    b58encode,
    peer_id_from_public_key,
    public_key_from_peer_id,
)

KEY = key_from_int(1)


def test_peer_id_is_libp2p_ed25519_form_and_embeds_the_key() -> None:
    peer = KEY.peer_id
    assert peer.startswith("12D3KooW") and len(peer) == 52
    assert public_key_from_peer_id(peer) == KEY.public_key
    assert peer_id_from_public_key(KEY.public_key) == peer


@given(st.binary(max_size=40))
def test_base58_round_trips(data: bytes) -> None:
    assert b58decode(b58encode(data)) == data


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"codons": []}, "codons"),
        ({"codons": [Codon.simple("s11", ">", 1.0)] * 65}, "codons"),
        ({"name": "x" * 201}, "name"),
        ({"name": "  "}, "name"),
        ({"domain": "Turbo Fan"}, "domain"),
        ({"action": ""}, "action"),
        ({"purpose": "p" * 5000}, "purpose"),
        ({"params": {"bad key": 1}}, "params.bad key"),
        ({"params": {"x": math.nan}}, "params.x"),
        ({"origin": "not-a-peer"}, "origin"),
    ],
)
def test_invalid_fields_are_named(kwargs: dict, field: str) -> None:
    base = {"domain": "turbofan", "name": "n", "codons": [Codon.simple("s11", ">", 1.0)],
            "action": "inspect", "purpose": "", "origin": KEY.peer_id, "id": "a" * 32}
    base.update(kwargs)
    with pytest.raises(ValidationError) as info:
        Gene(**base)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("codon", "field"),
    [
        ({"feature": "s11", "op": "=>", "threshold": 1}, "codon.op"),
        ({"feature": "s11", "op": ">", "threshold": math.nan}, "codon.threshold"),
        ({"feature": "s11", "op": ">", "threshold": "hot"}, "codon.threshold"),
        ({"feature": "1abc", "op": ">", "threshold": 1}, "codon.terms[0].feature"),
        ({"op": ">", "threshold": 1, "terms": {}}, "codon.terms"),
        ({"op": ">", "threshold": 1}, "codon.terms"),
        ({"feature": "s11", "op": ">", "threshold": 1, "colour": "red"}, "codon"),
    ],
)
def test_invalid_codons_are_named(codon: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Codon.from_plain(codon)
    assert info.value.field == field


def test_linear_codon_sorts_terms_and_evaluates() -> None:
    codon = Codon.from_plain({"op": ">", "threshold": 0.45,
                              "terms": {"monthly_cost": 1.0, "income": -0.45}})
    assert codon.features == ("income", "monthly_cost")
    assert codon.holds({"income": 1.0, "monthly_cost": 1.0})
    assert not codon.holds({"income": 2.0, "monthly_cost": 1.0})


@given(st.data())
def test_flipping_any_byte_of_a_signed_gene_is_detected(data: st.DataObject) -> None:
    gene = make_gene(KEY)
    wire = bytearray(canonical.encode(gene.to_wire()))
    index = data.draw(st.integers(0, len(wire) - 1))
    wire[index] ^= data.draw(st.integers(1, 255))
    try:
        tampered = Gene.from_wire(canonical.decode(bytes(wire)))
    except (ValueError, KeyError, TypeError):
        return  # no longer decodes as a gene: rejected
    with pytest.raises(SignatureError):
        tampered.verify()


def test_signature_by_another_key_is_rejected() -> None:
    gene = make_gene(KEY)
    other = key_from_int(2)
    forged = Gene.from_wire({"body": gene.body(), "sig": other.sign(gene.signing_bytes)})
    with pytest.raises(SignatureError):
        forged.verify()
    unsigned = Gene.from_wire({"body": gene.body(), "sig": b""})
    with pytest.raises(SignatureError, match="not signed"):
        unsigned.verify()


def test_edit_bumps_version_and_vector_and_resigns() -> None:
    gene = make_gene(KEY)
    other = key_from_int(2)
    edited = gene.edited(other, hlc=2 << 16, action="overhaul")
    assert edited.version == 2
    assert dict(edited.vv) == {KEY.peer_id: 1, other.peer_id: 1}
    assert edited.author == other.peer_id and edited.origin == KEY.peer_id
    assert edited.version_hash != gene.version_hash
    edited.verify()
    with pytest.raises(ValidationError):
        gene.edited(KEY, hlc=3, version=1)
    with pytest.raises(ValidationError):
        gene.edited(KEY, hlc=3, vv={})
    assert gene.edited(KEY, hlc=3, version=9).version == 9


def test_local_status_does_not_touch_the_signature() -> None:
    gene = make_gene(KEY)
    pending = gene.with_local(status=GeneStatus.ADAPTATION_PENDING)
    assert pending.version_hash == gene.version_hash
    pending.verify()
    assert Gene.decode(pending.encode()).status == GeneStatus.ADAPTATION_PENDING
    with pytest.raises(ValidationError):
        gene.with_local(action="overhaul")


def test_synapse_validation() -> None:
    with pytest.raises(ValidationError) as info:
        Synapse("a", "a", "follows")
    assert info.value.field == "target"
    with pytest.raises(ValidationError) as info:
        Synapse("a", "b", "likes")
    assert info.value.field == "kind"
    with pytest.raises(ValidationError) as info:
        Synapse("a", "b", "follows", 1.5)
    assert info.value.field == "weight"


def test_key_file_is_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    KEY.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert NodeKey.load(path).peer_id == KEY.peer_id
    with pytest.raises(FileExistsError):
        key_from_int(9).save(path)
    os.chmod(path, 0o644)
    with pytest.raises(ValueError, match="readable by others"):
        NodeKey.load(path)
    os.chmod(path, 0o600)
    path.write_text("zz\n")
    with pytest.raises(ValueError, match="not hex"):
        NodeKey.load(path)
