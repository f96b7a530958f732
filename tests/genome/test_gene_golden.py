"""Byte-identical genes across speed work (issue 15): the canonical bytes, signatures,
version hashes and stored records of a fixed, seeded set of genes hash to a golden value
computed from the code before `Gene.create` and canonical encoding were made cheaper.

Ed25519 signatures are deterministic, so any change to the signed bytes (a key order, a
float width, an int width, a field dropped or added) changes the hash. If this fails, the
encoding changed: every stored gene and every peer's signature check would disagree."""

from __future__ import annotations

import hashlib
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgpack
import pytest

from gd.genome import Codon, Gene, GeneStatus, NodeKey, ValidationError, canonical
from gd.genome.gene import ShareScope

# sha256 over the seeded genes' signing bytes, signatures, wire bytes, version hashes and
# `encode()` records, computed with the code of commit 57d5f8b (before issue 15's work).
GOLDEN = "c0d38ddb3b11c50b1d331be659aa63fc3238551566c0a57ec97b2a2ef7771382"
FEATURES = [f"s{i}" for i in range(1, 22)] + ["temp.max", "_raw"]
DOMAINS = ("turbofan", "loan", "supply-chain", "energy_grid")
ACTIONS = ("inspect", "deny", "re-route", "throttle")
OPS = ("<", "<=", ">", ">=", "==", "!=")
PEER = NodeKey.from_seed(bytes(32)).peer_id


def _codon(rng: random.Random) -> Codon:
    op = rng.choice(OPS)
    if rng.random() < 0.5:
        threshold: float = rng.choice([rng.uniform(-1e6, 1e6), rng.randint(-50, 50)])
        return Codon.simple(rng.choice(FEATURES), op, threshold)
    names = rng.sample(FEATURES, rng.randint(1, 4))
    terms = [(n, rng.choice([rng.uniform(-3, 3), float(rng.randint(1, 5)), 1])) for n in names]
    return Codon(op=op, threshold=rng.uniform(-100, 100), terms=tuple(terms))


def _params(rng: random.Random) -> dict[str, object]:
    out: dict[str, object] = {}
    for _ in range(rng.randint(0, 4)):
        kind = rng.randrange(5)
        value: object = (rng.random() < 0.5 if kind == 0 else rng.randint(0, 2**40)
                         if kind == 1 else -rng.randint(1, 2**62) if kind == 2
                         else rng.uniform(-10, 10) if kind == 3 else f"v{rng.randint(0, 99)}")
        out[rng.choice(FEATURES).replace(".", "_")] = value
    return out


def golden_genes(count: int = 300, seed: int = 20261207) -> list[Gene]:
    """Seeded genes covering every body field: created, then some edited by a partner."""
    rng = random.Random(seed)
    keys = [NodeKey.from_seed(bytes([i]) * 32) for i in range(1, 4)]
    genes: list[Gene] = []
    for i in range(count):
        key = keys[i % len(keys)]
        gene = Gene.create(
            key, domain=rng.choice(DOMAINS), name=f"rule {i} ü{rng.randint(0, 9)}",
            codons=[_codon(rng) for _ in range(rng.randint(1, 5))],
            action=rng.choice(ACTIONS), purpose=rng.choice(["", "maintenance", "x" * 300]),
            params=_params(rng), hlc=rng.randint(0, 2**48),
            parents=[f"p{rng.randint(0, 10**6)}" for _ in range(rng.randint(0, 2))],
            scope=rng.choice([None, ShareScope(forward=True),
                              ShareScope(forward=False, residency="eu-west")]),
            status=rng.choice([GeneStatus.NATIVE, GeneStatus.ADAPTATION_PENDING]),
        )
        genes.append(gene)
        if i % 5 == 0:
            other = keys[(i + 1) % len(keys)]
            genes.append(gene.edited(other, hlc=gene.hlc + 1,
                                     purpose=f"edited {rng.randint(0, 9)}",
                                     codons=(_codon(rng),)))
    return genes


def golden_digest(genes: list[Gene]) -> str:
    h = hashlib.sha256()
    for g in genes:
        for part in (g.signing_bytes, g.signature, g.wire_bytes, g.version_hash, g.encode(),
                     canonical.encode(g.to_wire())):
            h.update(len(part).to_bytes(4, "big") + part)
    return h.hexdigest()


def test_seeded_genes_are_byte_identical_to_the_golden_hash() -> None:
    genes = golden_genes()
    for g in genes:
        g.verify()
    assert golden_digest(genes) == GOLDEN


def test_created_gene_equals_its_wire_round_trip() -> None:
    """The fast construction path builds the same gene `from_wire` validates."""
    for g in golden_genes(60, seed=5):
        back = Gene.from_wire(canonical.decode(g.wire_bytes), status=g.status)
        assert back == g
        assert back.wire_bytes == g.wire_bytes and back.signing_bytes == g.signing_bytes


def test_node_key_signature_is_pynacl_signing_key_signature() -> None:
    key = NodeKey.from_seed(bytes(range(32)))
    for message in (b"", b"gene", bytes(range(256)) * 9):
        assert key.sign(message) == key.signing_key.sign(message).signature


def test_encode_texts_is_encode_and_keeps_its_errors() -> None:
    for parts in (["a", "b"], ["ü" * 40, "", "x"], ["12D3KooW", "loan", "rule 1", "p0"]):
        assert canonical.encode_texts(parts) == canonical.encode(parts)
    with pytest.raises(TypeError, match="no canonical encoding"):
        canonical.encode_texts(["a", object()])  # type: ignore[list-item]


def test_encode_plain_per_thread_packer_is_packb_under_threads() -> None:
    """One Packer per thread: threads encoding at once each get their own bytes, and a
    pack that raises leaves nothing behind for the next one."""
    values = [{"k": i, "s": "x" * (i % 50), "l": [i, float(i), b"b" * (i % 7)]}
              for i in range(400)]
    expected = [msgpack.packb(v, use_bin_type=True) for v in values]

    def work(_: int) -> list[bytes]:
        out = []
        for v in values:
            with pytest.raises(TypeError):
                canonical.encode_plain({"bad": object()})  # type: ignore[dict-item]
            out.append(canonical.encode_plain(v))
        return out

    with ThreadPoolExecutor(4) as pool:
        for result in pool.map(work, range(8)):
            assert result == expected


def test_created_gene_keeps_no_plain_body() -> None:
    """A created gene caches its bytes and hash, not the plain body they came from:
    an import holds many genes, and the collector walks every dict they keep."""
    gene = golden_genes(3, seed=1)[0]
    assert "_body" not in gene.__dict__
    assert gene.body()["author"] == gene.origin  # still available on demand


@pytest.mark.parametrize(("build", "field"), [
    (lambda: Codon.simple("bad name!", ">", 1.0), "terms[0].feature"),
    (lambda: Codon.simple(7, ">", 1.0), "terms[0].feature"),
    (lambda: Codon.simple("s1", ">", float("nan")), "threshold"),
    (lambda: Codon.simple("s1", ">", True), "threshold"),
    (lambda: Codon(op=">", threshold=1.0, terms=(("s1", float("inf")),)), "terms[0].weight"),
    (lambda: Codon(op=">", threshold=1.0, terms=(("s1", False),)), "terms[0].weight"),
    (lambda: Codon(op=">", threshold=1.0, terms=(("s1", 1.0), ("s2", "2"))), "terms[1].weight"),
    (lambda: _gene(vv={PEER: 0}), f"vv.{PEER}"),
    (lambda: _gene(vv={PEER: True}), f"vv.{PEER}"),
    (lambda: _gene(vv={PEER: 2**64}), f"vv.{PEER}"),
    (lambda: _gene(parents=("ok", "not ok")), "parents[1]"),
    (lambda: _gene(parents=(5,)), "parents[0]"),
])
def test_inline_checks_still_refuse_with_the_field_named(build: Any, field: str) -> None:
    """The per-gene checks made inline for speed refuse what `checks` refuses, naming
    the field as before."""
    with pytest.raises(ValidationError) as caught:
        build()
    assert caught.value.field == field


def test_inline_checks_still_normalise_accepted_values() -> None:
    codon = Codon(op=">", threshold=3, terms=(("s2", 2), ("s1", 1.5)))
    assert codon.threshold == 3.0 and type(codon.threshold) is float
    assert codon.terms == (("s1", 1.5), ("s2", 2.0)) and type(codon.terms[1][1]) is float
    assert dict(_gene(vv={"b": 1, "a": 2}).vv) == {"a": 2, "b": 1}



def _gene(**fields: Any) -> Gene:
    base: dict[str, Any] = {
        "id": "g1", "domain": "loan", "name": "n", "codons": (Codon.simple("s1", ">", 1.0),),
        "action": "deny", "purpose": "", "origin": PEER, "vv": {PEER: 1}}
    return Gene(**{**base, **fields})
