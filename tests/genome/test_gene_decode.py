"""Decoding genes cheaper must not change what is decoded (issue 15, ADR 0050).

`Gene.from_wire` (every gene a peer sends, in the verify workers) and `Gene.from_stored`
(every gene read back from the Cortex) got fast paths. Three guards:

* golden digests over what seeded wire and stored genes decode to (field values and
  their types, cached bytes, hashes), computed with the code before the change;
* a seeded fuzz of ~2,000 malformed (and odd but valid) wire genes: each decodes to the
  same gene, or raises the same error class with the same message and field, as the
  decoder before the change (`_old_from_wire`, kept here for the comparison only), and
  the outcomes hash to a golden digest computed with the old code;
* `from_stored` still turns a record of the wrong shape into a DecodeError.
"""

from __future__ import annotations

import copy
import hashlib
import math
import random
import re
import sys
from typing import Any

import pytest

from gd.genome import (
    Codon,
    DecodeError,
    Gene,
    GeneStatus,
    NodeKey,
    ValidationError,
    canonical,
    checks,
)
from gd.genome.gene import BODY_FIELDS, ShareScope
from gd.genome.gene_decode import wire_fields

# Computed with the code of commit 6a86e28 (before ADR 0050), by `_decode_digest` and
# `_fuzz_digest` below.
DECODE_GOLDEN = "7e3fe06e13042b1c5282874971e9e67da15205e6ea7a1edee9a7a208d78364c0"
STORED_GOLDEN = "9703dcdeccd67f5c75e1bef2c493589ace45dc1f571e362a8ba73077869c735d"
FUZZ_GOLDEN = "50e31878bb6e09a723570b1c27e8bdd9ff6b6101a3c30677639bbf17b4145cab"
FUZZ_CASES = 2000

FEATURES = [f"s{i}" for i in range(1, 22)] + ["temp.max", "_raw"]
KEYS = [NodeKey.from_seed(bytes([i]) * 32) for i in range(1, 4)]
PEER = KEYS[0].peer_id


def _old_from_wire(data: Any, **local: Any) -> Gene:
    """`Gene.from_wire` as it was before ADR 0050 (commit 6a86e28), verbatim."""
    data = checks.require_map("gene", data)
    body = checks.require_map("body", data.get("body"))
    checks.known_keys("body", body, set(BODY_FIELDS))
    missing = [f for f in BODY_FIELDS if f not in body]
    if missing:
        raise ValidationError(f"body.{missing[0]}", "is required")
    codons = checks.nonempty_tuple("codons", body["codons"], checks.MAX_CODONS)
    return Gene(
        id=body["id"], domain=body["domain"], name=body["name"],
        codons=tuple(Codon.from_plain(c, f"codons[{i}]") for i, c in enumerate(codons)),
        action=body["action"], purpose=body["purpose"], origin=body["origin"],
        params=checks.require_map("params", body["params"]), version=body["version"],
        vv=checks.require_map("vv", body["vv"]), hlc=body["hlc"], author=body["author"],
        parents=tuple(checks.nonempty_tuple("parents", body["parents"], checks.MAX_PARENTS))
        if body["parents"] else (),
        scope=ShareScope.from_plain(body["scope"]), signature=data.get("sig", b""),
        **local,
    )


def _codon(rng: random.Random) -> Codon:
    op = rng.choice(("<", "<=", ">", ">=", "==", "!="))
    if rng.random() < 0.5:
        return Codon.simple(rng.choice(FEATURES), op,
                            rng.choice([rng.uniform(-1e6, 1e6), rng.randint(-50, 50)]))
    names = rng.sample(FEATURES, rng.randint(1, 4))
    return Codon(op=op, threshold=rng.uniform(-100, 100), terms=tuple(
        (n, rng.choice([rng.uniform(-3, 3), float(rng.randint(1, 5)), 1])) for n in names))


def _params(rng: random.Random) -> dict[str, object]:
    out: dict[str, object] = {}
    for _ in range(rng.randint(0, 4)):
        kind = rng.randrange(5)
        out[rng.choice(FEATURES).replace(".", "_")] = (
            rng.random() < 0.5 if kind == 0 else rng.randint(0, 2**40) if kind == 1
            else -rng.randint(1, 2**62) if kind == 2 else rng.uniform(-10, 10) if kind == 3
            else f"v{rng.randint(0, 99)} ü")
    return out


def seeded_genes(count: int = 240, seed: int = 47) -> list[Gene]:
    """Genes covering every body field: small and sync-sized (12 codons, long purpose),
    some edited by a second key, some with parents, residency and forwarding."""
    rng = random.Random(seed)
    genes: list[Gene] = []
    for i in range(count):
        key = KEYS[i % len(KEYS)]
        big = i % 4 == 0
        gene = Gene.create(
            key, domain=rng.choice(("turbofan", "loan", "supply-chain", "energy_grid")),
            name=f"rule {i} ü{rng.randint(0, 9)}",
            codons=[_codon(rng) for _ in range(12 if big else rng.randint(1, 5))],
            action=rng.choice(("inspect", "deny", "re-route")),
            purpose=("avoid unplanned failure " * 6) if big else rng.choice(["", "x" * 300]),
            params=_params(rng), hlc=rng.randint(0, 2**48),
            parents=[f"p{rng.randint(0, 10**6)}" for _ in range(rng.randint(0, 3))],
            scope=rng.choice([None, ShareScope(forward=True),
                              ShareScope(forward=False, residency="eu-west")]),
            status=rng.choice([GeneStatus.NATIVE, GeneStatus.ADAPTATION_PENDING]))
        genes.append(gene)
        if i % 5 == 0:
            genes.append(gene.edited(KEYS[(i + 1) % len(KEYS)], hlc=gene.hlc + 1,
                                     purpose=f"edited {i}", codons=(_codon(rng),)))
    return genes


def _typed(value: Any) -> str:
    """`repr` with the type of every leaf: 3 and 3.0 and True must not look alike."""
    if isinstance(value, Gene | Codon | ShareScope):
        names = value.__dataclass_fields__
        return f"{type(value).__name__}({', '.join(_typed(getattr(value, n)) for n in names)})"
    if isinstance(value, tuple | list):
        return f"{type(value).__name__}[{', '.join(_typed(v) for v in value)}]"
    if hasattr(value, "items"):
        return (f"{type(value).__name__}{{"
                f"{', '.join(f'{_typed(k)}: {_typed(v)}' for k, v in value.items())}}}")
    return f"{type(value).__name__}:{value!r}"


def _gene_digest_parts(gene: Gene) -> list[bytes]:
    return [_typed(gene).encode(), gene.signing_bytes, gene.wire_bytes, gene.version_hash,
            gene.encode()]


def _digest(parts: list[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(4, "big") + part)
    return h.hexdigest()


def _decode_digest(decode: Any) -> str:
    parts: list[bytes] = []
    for gene in seeded_genes():
        back = decode(canonical.decode(gene.wire_bytes), status=gene.status)
        parts += _gene_digest_parts(back)
    return _digest(parts)


def _stored_digest() -> str:
    parts: list[bytes] = []
    for gene in seeded_genes():
        raw = gene.wire_bytes
        back = Gene.from_stored(canonical.decode(gene.encode()), raw=raw, status=gene.status,
                                successes=3, failures=1)
        assert back.__dict__.get("signing_bytes") == gene.signing_bytes  # a slice of raw
        assert back.__dict__["wire_bytes"] == raw
        parts += _gene_digest_parts(back)
    return _digest(parts)


# -- the fuzz -------------------------------------------------------------------------
_HOSTILE: list[Any] = [
    None, True, False, 0, 1, -1, 2, 2**63, 2**64, -(2**63) - 1, 1.5, -0.0, 0.0,
    math.nan, math.inf, "", " ", "x" * 2100, "bad name!", "a\x00b", "ok\n", "s1", "loan",
    "12D3KooWnot", PEER, [], [1], ["s1", 1.0], {}, {"a": 1}, b"", b"\x00" * 64, (1, 2),
    "A" * 130, ">", "<=", "=<",
]


def _paths(wire: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(container, key) pairs for every value in a wire gene, nested ones included."""
    out: list[tuple[Any, Any]] = [(wire, "body"), (wire, "sig")]
    body = wire["body"]
    out += [(body, k) for k in body]
    for codon in body["codons"]:
        out += [(codon, k) for k in codon]
        for term in codon["terms"]:
            out += [(codon["terms"], codon["terms"].index(term)), (term, 0), (term, 1)]
    out += [(body["params"], k) for k in body["params"]]
    out += [(body["vv"], k) for k in body["vv"]]
    out += [(body["scope"], k) for k in body["scope"]]
    out += [(body["parents"], i) for i in range(len(body["parents"]))]
    return out


def _mutate(wire: dict[str, Any], rng: random.Random) -> None:
    """One (sometimes two) hostile or odd-but-valid changes to `wire`, in place."""
    paths = _paths(wire)  # of the valid gene: a second change may hit a detached part
    for _ in range(1 if rng.random() < 0.8 else 2):
        container, key = rng.choice(paths)
        if isinstance(container, dict) and key not in container:
            continue
        how = rng.randrange(10)
        if how < 5:
            container[key] = copy.deepcopy(rng.choice(_HOSTILE))
        elif how == 5 and isinstance(container, dict):
            del container[key]
        elif how == 6 and isinstance(container, dict):
            container[rng.choice(["extra", "feature", 3, "op", "s9"])] = rng.choice(_HOSTILE)
        elif how == 7 and isinstance(container[key], list | dict) and container[key]:
            value = container[key]  # reorder, duplicate, or grow past a limit
            if isinstance(value, dict):
                container[key] = dict(reversed(list(value.items())))
            elif rng.random() < 0.5:
                container[key] = value[::-1] + value[:1]
            else:
                container[key] = value * rng.choice([2, 17, 65])
        elif how == 8:
            value = container[key]  # the same value in another accepted form
            container[key] = (int(value) if isinstance(value, float) and value.is_integer()
                              else tuple(value) if isinstance(value, list)
                              else dict(value) if isinstance(value, dict) else value)
        else:
            body = wire["body"]
            if isinstance(body, dict) and isinstance(body.get("codons"), list) \
                    and body["codons"] and isinstance(body["codons"][0], dict):
                body["codons"][0] = rng.choice([
                    {"feature": "s3", "op": ">", "threshold": 2},
                    {"op": "<", "terms": {"s2": 1.0, "s1": 2}, "threshold": 1.0},
                    {"op": "<", "terms": [["s2", 1.0], ["s1", -0.0]], "threshold": 1.0},
                    {"op": "<", "terms": [["s1", 1.0], ["s1", 2.0]], "threshold": 1.0},
                    {"op": "<", "terms": [["s1", 1.0, 3]], "threshold": 1.0}])


def _outcome(decode: Any, wire: Any, local: dict[str, Any]) -> str:
    try:
        gene = decode(wire, **local)
    except Exception as exc:  # every error class counts: it must not change
        return f"{type(exc).__name__}|{getattr(exc, 'field', '')}|{exc}"
    return "ok|" + _typed(gene) + "|" + gene.wire_bytes.hex()


_MIXED_SORT = re.compile(r"'<' not supported between instances of '\w+' and '\w+'")


def _fuzz_outcomes(decode: Any) -> list[str]:
    rng = random.Random(2026)
    genes = seeded_genes(60, seed=9)
    out = []
    for _ in range(FUZZ_CASES):
        wire = canonical.decode(rng.choice(genes).wire_bytes)
        _mutate(wire, rng)
        local = rng.choice([{}, {}, {"status": GeneStatus.ADAPTATION_PENDING},
                            {"status": "rejected", "successes": 2, "failures": 0},
                            {"successes": -1}, {"status": "nope"}])
        out.append(_outcome(decode, wire, local))
    return out


def _fuzz_digest(outcomes: list[str]) -> str:
    """Sorting a map whose keys mix int and str fails with the two types in the set's
    order, which follows PYTHONHASHSEED: the digest names no order."""
    return _digest([_MIXED_SORT.sub("mixed key types", o).encode() for o in outcomes])


def test_seeded_wire_genes_decode_as_before() -> None:
    assert _decode_digest(Gene.from_wire) == DECODE_GOLDEN


def test_seeded_stored_genes_decode_as_before() -> None:
    assert _stored_digest() == STORED_GOLDEN


def test_fuzzed_wire_genes_decode_or_fail_as_the_old_decoder() -> None:
    """Same gene or same error (class, field, message) for every mutation; both the
    old decoder kept above and the golden outcomes of the old code agree."""
    new, old = _fuzz_outcomes(Gene.from_wire), _fuzz_outcomes(_old_from_wire)
    for i, (a, b) in enumerate(zip(new, old, strict=True)):
        assert a == b, f"case {i}: new {a[:300]!r} != old {b[:300]!r}"
    assert _fuzz_digest(new) == FUZZ_GOLDEN
    accepted = sum(o.startswith("ok|") for o in new)
    assert 100 < accepted < FUZZ_CASES - 1000  # both sides of every check were reached


def _bad(path: str, value: Any) -> dict[str, Any]:
    """A valid wire gene with the value at dotted `path` set to `value`."""
    wire = canonical.decode(seeded_genes(1)[0].wire_bytes)
    *parents, last = path.split(".")
    node: Any = wire
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[int(last) if isinstance(node, list) else last] = value
    return wire


_TERM = "body.codons.0.terms"
_MANY = {f"k{i}": 1 for i in range(65)}


@pytest.mark.parametrize(("path", "value", "field"), [
    ("body.id", "bad id!", "id"), ("body.domain", "Loan", "domain"),
    ("body.name", " ", "name"), ("body.name", "a\x01", "name"), ("body.name", "x" * 201, "name"),
    ("body.action", "", "action"), ("body.purpose", "p\x00", "purpose"),
    ("body.purpose", "x" * 2001, "purpose"), ("body.origin", "12D3KooWnot", "origin"),
    ("body.version", 0, "version"), ("body.version", True, "version"),
    ("body.hlc", -1, "hlc"), ("body.hlc", 2**64, "hlc"), ("body.author", "nope", "author"),
    ("body.parents", ["ok", "bad id!"], "parents[1]"), ("body.parents", ["p"] * 17, "parents"),
    ("body.params", {"bad key!": 1}, "params.bad key!"), ("body.params", {"k": 2**64}, "params.k"),
    ("body.params", {"k": -(2**63) - 1}, "params.k"), ("body.params", {"k": math.nan}, "params.k"),
    ("body.params", {"k": "a\x00"}, "params.k"), ("body.params", {"k": "x" * 1025}, "params.k"),
    ("body.params", {"k": None}, "params.k"), ("body.params", _MANY, "params"),
    ("body.vv", {PEER: 0}, f"vv.{PEER}"), ("body.vv", {" ": 1}, "vv.key"),
    ("body.vv", {"a\x00": 1}, "vv.key"), ("body.vv", {"x" * 129: 1}, "vv.key"),
    ("body.vv", {f"k{i}": 1 for i in range(257)}, "vv"),
    ("body.scope", {"forward": 1}, "scope.forward"),
    ("body.scope", {"residency": "EU"}, "scope.residency"), ("body.scope", {"x": 1}, "scope"),
    ("sig", b"\x00" * 63, "signature"), ("body.codons", [], "codons"),
    ("body.codons", [{"feature": "s1", "op": ">", "threshold": 1.0}] * 65, "codons"),
    ("body.codons.0.op", "=<", "codons[0].op"),
    ("body.codons.0.threshold", math.inf, "codons[0].threshold"),
    (_TERM, [], "codons[0].terms"), (_TERM, [["s1", 0.0]], "codons[0].terms[0].weight"),
    (_TERM, [["s1", -0.0]], "codons[0].terms[0].weight"),
    (_TERM, [["1s", 1.0]], "codons[0].terms[0].feature"),
    (_TERM, [["s1", 1.0], ["s1", 2.0]], "codons[0].terms[1].feature"),
    (_TERM, [["s1", 1.0, 2.0]], "codons[0].terms[0]"),
    (_TERM, [[f"f{i:02d}", 1.0] for i in range(17)], "codons[0].terms"),
    ("body.hlcx", 1, "body"),
])
def test_each_malformed_field_is_refused_as_before_naming_it(path: str, value: Any,
                                                             field: str) -> None:
    """Every body field, one bad value at a time: the same ValidationError (field and
    message) from the new decoder as from the old one."""
    errors = []
    for decode in (Gene.from_wire, _old_from_wire):
        with pytest.raises(ValidationError) as caught:
            decode(_bad(path, value))
        errors.append((caught.value.field, caught.value.message))
    assert errors[0] == errors[1]
    assert errors[0][0] == field


def test_a_missing_body_field_and_a_bad_local_field_are_named() -> None:
    wire = canonical.decode(seeded_genes(1)[0].wire_bytes)
    del wire["body"]["hlc"]
    with pytest.raises(ValidationError, match=r"body\.hlc: is required"):
        Gene.from_wire(wire)
    wire = canonical.decode(seeded_genes(1)[0].wire_bytes)
    with pytest.raises(ValidationError, match="successes"):
        Gene.from_wire(wire, successes=-1)
    with pytest.raises(ValueError, match="not a valid GeneStatus"):
        Gene.from_wire(wire, status="nope")


def test_every_canonical_gene_takes_the_cheap_path() -> None:
    """What peers send (canonical wire genes) never falls back to the slow decoder."""
    for gene in seeded_genes():
        wire = canonical.decode(gene.wire_bytes)
        assert wire_fields(wire) is not None, gene.id
        assert wire_fields(gene.to_wire()) is not None, gene.id


@pytest.mark.parametrize("mangle", [
    lambda r: r.pop("body"),
    lambda r: r["body"].pop("codons"),
    lambda r: r["body"]["codons"][0].pop("terms"),
    lambda r: r["body"]["codons"][0].__setitem__("terms", [["s1"]]),
    lambda r: r["body"]["codons"][0].__setitem__("terms", [["s1", "x"]]),
    lambda r: r["body"]["codons"][0].__setitem__("threshold", None),
    lambda r: r["body"].__setitem__("scope", None),
    lambda r: r["body"].__setitem__("params", [1]),
    lambda r: r.__setitem__("sig", None),
])
def test_stored_record_of_the_wrong_shape_is_a_decode_error(mangle: Any) -> None:
    gene = seeded_genes(1)[0]
    record = canonical.decode(gene.encode())
    mangle(record)
    with pytest.raises(DecodeError, match="wrong shape"):
        Gene.from_stored(record)


def test_decoded_genes_share_their_dict_keys_as_constructed_ones_do() -> None:
    """The cheap paths fill a gene's dict as `__init__` does (one field at a time, in
    field order), so it stays a key-sharing dict: ~200 bytes less per gene held."""
    gene = seeded_genes(1)[0]
    built = Gene(**{name: getattr(gene, name) for name in Gene.__dataclass_fields__})
    size = sys.getsizeof(built.__dict__)
    assert sys.getsizeof(Gene.from_wire(canonical.decode(gene.wire_bytes)).__dict__) == size
    assert sys.getsizeof(Gene.from_stored(canonical.decode(gene.encode())).__dict__) == size
    assert list(Gene.from_wire(gene.to_wire()).__dict__) == list(built.__dict__)
