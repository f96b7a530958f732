"""The gathered batch write (`put_genes` of distinct ids: writes put table by table, in key
order) stores exactly what the gene-by-gene path stores: every table, byte for byte."""

from __future__ import annotations

from pathlib import Path

import lmdb
import pytest

from gd.genome.gene import Codon, Gene, GeneStatus
from gd.genome.identity import NodeKey
from gd.node.store.cortex import Cortex
from gd.node.store.cortex_env import _CORE_DBS
from gd.node.store.lmdb_tables import GatheredWrites, TableWrites

KEY = NodeKey.from_seed(bytes(range(32)))
OTHER = NodeKey.from_seed(bytes(range(1, 33)))


def gene(i: int, key: NodeKey = KEY, domain: str = "turbofan") -> Gene:
    return Gene.create(key, domain=domain, name=f"rule-{i}",
                       codons=[Codon.simple("s11", ">", 40.0 + i)], action="inspect",
                       purpose="batch", hlc=1000 + i)


def first_batch() -> list[Gene]:
    genes = [gene(i) for i in range(40)] + [gene(i, OTHER, "loan") for i in range(40, 60)]
    # Received genes wait for approval; one is stored at version 2 already.
    genes[45] = genes[45].with_local(status=GeneStatus.ADAPTATION_PENDING)
    genes[46] = genes[46].edited(OTHER, hlc=5000, purpose="v2").with_local(
        status=GeneStatus.ADAPTATION_PENDING)
    return genes


def second_batch(first: list[Gene]) -> list[Gene]:
    """Every case `_put_gene` tells apart, one gene id each."""
    return [
        *(gene(i) for i in range(60, 90)),                      # new genes
        first[0].edited(KEY, hlc=2000, purpose="edited"),       # next version
        first[1].edited(KEY, hlc=2001, action="overhaul"),      # next version
        first[2],                                               # unchanged: no write
        first[3].with_local(status=GeneStatus.RETIRED),         # local state only
        first[4].with_local(successes=3, failures=1),           # counters only
        first[45].with_local(status=GeneStatus.NATIVE),         # approved: feed again
        gene(46, OTHER, "loan").with_local(                     # older version, late
            status=GeneStatus.ADAPTATION_PENDING),
    ]


def tables(cortex: Cortex) -> dict[str, list[tuple[bytes, bytes]]]:
    with cortex.env.begin() as txn:
        return {name: list(txn.cursor(db=cortex.open_db(name))) for name in _CORE_DBS}


def store_one_by_one(cortex: Cortex, batch: list[Gene]) -> list[int | None]:
    """The gene-by-gene path: each gene's puts straight into the transaction."""
    return cortex.write(lambda txn: [cortex.put_gene_in(txn, g) for g in batch])


def store_batched(cortex: Cortex, batch: list[Gene]) -> list[int | None]:
    return cortex.put_genes(batch)


def test_batched_put_genes_stores_the_same_records_as_gene_by_gene(tmp_path: Path) -> None:
    first = first_batch()
    second = second_batch(first)
    assert len({g.id for g in second}) == len(second)  # the gathered path is taken
    results = {}
    contents = {}
    for how in ("direct", "batched"):
        with Cortex.open(tmp_path / how) as cortex:
            put = store_one_by_one if how == "direct" else store_batched
            seqs = [put(cortex, first), put(cortex, second)]
            results[how] = seqs
            contents[how] = tables(cortex)
            assert cortex.check_indexes() == []
    assert results["batched"] == results["direct"]
    # The cases did what they should: unchanged and counters-only wrote no feed entry,
    # the approval and the late older version did.
    seqs = results["direct"][1]
    assert seqs[32] is None and seqs[34] is None
    assert seqs[35] is not None and seqs[36] is not None
    for name in _CORE_DBS:
        assert contents["batched"][name] == contents["direct"][name], name
    assert len(contents["direct"]["changes"]) == 60 + 30 + 2 + 2


def test_a_batch_naming_one_gene_twice_stores_both_versions_in_order(tmp_path: Path) -> None:
    g1 = gene(1)
    g2 = g1.edited(KEY, hlc=3000, purpose="second")
    with Cortex.open(tmp_path / "c") as cortex:
        assert cortex.put_genes([g1, g2]) == [1, 2]
        assert cortex.require_gene(g1.id).version == 2
        assert cortex.gene_versions(g1.id) == [1, 2]
        assert cortex.check_indexes() == []


def test_an_append_below_the_tables_last_key_is_an_error_not_a_lost_write(
        tmp_path: Path) -> None:
    # lmdb's putmulti(append=True) skips such a key without raising: a body gathered
    # as appended under an old gene's number would vanish at commit.
    env = lmdb.open(str(tmp_path / "t"), max_dbs=4)
    db = env.open_db(b"t")
    with env.begin(write=True) as txn:
        txn.put(b"\x05", b"old", db=db)
        w = GatheredWrites(txn, {"t": db})
        w.put("t", b"\x06", b"new", append=True)
        w.put("t", b"\x01", b"sorted in place")
        w.flush()  # the append above the last key, then the sorted put
        assert txn.get(b"\x01", db=db) == b"sorted in place"
        w.put("t", b"\x02", b"below", append=True)
        with pytest.raises(ValueError, match="1 appended keys were not above"):
            w.flush()
    env.close()


def test_a_direct_append_below_the_last_key_is_an_error_too(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path / "t"), max_dbs=4)
    db = env.open_db(b"t")
    with env.begin(write=True) as txn:
        w = TableWrites(txn, {"t": db})
        w.put("t", b"\x05", b"a", append=True)
        w.put("t", b"\x05", b"overwritten")  # a plain put overwrites, as always
        with pytest.raises(ValueError, match="is not above the last key"):
            w.put("t", b"\x01", b"below", append=True)
        assert txn.get(b"\x05", db=db) == b"overwritten"
    env.close()
