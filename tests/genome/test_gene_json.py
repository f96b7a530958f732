"""`gene_json`: the one JSON form of a gene the CLI and the API both print."""

from __future__ import annotations

from gd_testkit import key_from_int, make_gene

from gd.genome.gene_json import gene_json


def test_gene_json_is_the_body_plus_the_derived_fields() -> None:
    gene = make_gene(key_from_int(7))
    plain = gene_json(gene)
    for field, value in gene.body().items():
        assert plain[field] == value
    assert plain["status"] == str(gene.status)
    assert plain["version_hash"] == gene.version_hash.hex()
    assert plain["signature"] == gene.signature.hex()
    assert plain["condition"] == gene.condition_text()
    assert (plain["successes"], plain["failures"]) == (gene.successes, gene.failures)
