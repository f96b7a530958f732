"""A damaged Cortex (an index or meta entry whose record is gone) says so clearly.

Found by typing the lmdb edge: these reads assumed the record existed and, when it did
not, failed with a TypeError inside a decoder instead of a CortexError the CLI can show.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from gd_testkit import key_from_int, make_gene

from gd.node.store.cortex import Cortex, CortexError

KEY = key_from_int(1)


def test_index_entry_without_its_gene_is_reported_as_damage(tmp_path: Path) -> None:
    with Cortex.open(tmp_path / "cortex") as cortex:
        gene = make_gene(KEY, "a", domain="loan", action="offer")
        cortex.put_gene(gene)
        with cortex.env.begin(write=True) as txn:  # lose the head, keep the indexes
            assert txn.delete(gene.id.encode(), db=cortex.open_db("genes"))
        with pytest.raises(CortexError, match=r"damaged: gene .* referenced but missing"):
            list(cortex.genes(domain="loan"))


def test_missing_schema_record_is_reported_as_damage(tmp_path: Path) -> None:
    with Cortex.open(tmp_path / "cortex") as cortex:
        with cortex.env.begin(write=True) as txn:
            assert txn.delete(b"schema", db=cortex.open_db("meta"))
        with pytest.raises(CortexError, match=r"damaged: meta b'schema'"):
            _ = cortex.schema_version
