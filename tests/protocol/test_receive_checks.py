"""What every received gene must satisfy before it can touch the Cortex (issue 11,
items 2 and 3): ids bound to origin, domain and name; versions that keep their gene's
origin and domain; our origin only for genes we authored."""

from __future__ import annotations

import dataclasses

import pytest
from gd_testkit import key_from_int, make_gene

from gd.genome import ValidationError
from gd.genome.gene import gene_id_for, id_is_bound
from gd.protocol.sync import check_received, refusal_against, verify_genes

A, B = key_from_int(1), key_from_int(2)


def resigned(gene, key, **changes):
    return dataclasses.replace(gene, author="", signature=b"", **changes).signed(key)


def test_an_authored_gene_has_a_bound_id_and_passes():
    gene = make_gene(A)
    assert id_is_bound(gene) and check_received(gene) == ""


@pytest.mark.parametrize("field,value", [("domain", "loan"), ("name", "other"),
                                         ("origin", None)])
def test_changing_what_the_id_commits_to_unbinds_it(field, value):
    value = B.peer_id if value is None else value
    gene = resigned(make_gene(A), B, **{field: value}, vv={B.peer_id: 1})
    assert not id_is_bound(gene)
    assert "is not the id of origin" in check_received(gene)
    good, rejected = verify_genes([gene.to_wire()], lambda g: True)
    assert good == () and "is not the id" in rejected[0].reason


def test_a_derived_id_is_bound_through_its_first_parent():
    tag = "ab" * 16
    gene = resigned(make_gene(A), A, id=gene_id_for(A.peer_id, "turbofan",
                                                    "inspect-when-hot", tag), parents=(tag,))
    assert id_is_bound(gene)
    assert not id_is_bound(dataclasses.replace(gene, parents=("cd" * 16,)))


def test_a_local_edit_cannot_rename_or_move_a_gene():
    gene = make_gene(A)
    with pytest.raises(ValidationError, match="part of the gene's id"):
        gene.edited(A, hlc=2, domain="loan")
    with pytest.raises(ValidationError, match="part of the gene's id"):
        gene.edited(A, hlc=2, name="renamed")
    assert gene.edited(A, hlc=2, name=gene.name, purpose="p").purpose == "p"


def test_create_refuses_an_explicit_id_that_is_not_bound():
    with pytest.raises(ValidationError, match="not the id of this origin"):
        make_gene_with_id("00" * 16)


def make_gene_with_id(gene_id):
    from gd.genome import Codon, Gene
    return Gene.create(A, domain="turbofan", name="x", codons=[Codon.simple("s1", ">", 1)],
                       action="inspect", gene_id=gene_id)


def test_store_side_refusals():
    ours = make_gene(A)
    # A version whose origin or domain differs from what we hold (a store that predates
    # bound ids could hold one): refused.
    moved = dataclasses.replace(ours, domain="loan")
    assert "changes origin/domain" in refusal_against(ours, moved, A.peer_id)
    # A gene claiming our origin, that we never stored, signed by someone else.
    claimed = resigned(make_gene(A, "planted"), B, vv={B.peer_id: 1})
    assert "never authored" in refusal_against(None, claimed, A.peer_id)
    # ...but a partner's version of a gene we hold is a normal (pending) edit,
    assert refusal_against(ours, resigned(ours, B, vv={A.peer_id: 1, B.peer_id: 1},
                                          version=2), A.peer_id) == ""
    # and our own gene coming back is fine.
    assert refusal_against(None, ours, A.peer_id) == ""
