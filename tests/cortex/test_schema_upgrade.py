"""Schema 2: gene indexes keyed by index number (ADR 0060), and the upgrade from schema 1.

A schema-1 Cortex is made here from a schema-2 one by rewriting what differs (heads
without their index number, indexes keyed `value SEP id`, schema 1): the records
gd-node wrote before ADR 0060, byte for byte.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest
from gd_testkit import key_from_int, make_gene

from gd.genome import GeneStatus, canonical
from gd.node.store import schema_upgrade
from gd.node.store.cortex import Cortex, CortexError, restore
from gd.node.store.cortex_env import SCHEMA_VERSION

KEY, OTHER = key_from_int(1), key_from_int(2)
U64 = struct.Struct(">Q")
INDEXES = ("idx_domain", "idx_status", "idx_origin")


def _store(path: Path) -> list[str]:
    """A Cortex with genes of two domains, two origins and two statuses; their ids."""
    genes = [make_gene(KEY, f"t{i}") for i in range(6)]
    genes += [make_gene(OTHER, f"l{i}", domain="loan", action="offer").with_local(
        status=GeneStatus.ADAPTATION_PENDING) for i in range(5)]
    with Cortex.open(path) as cortex:
        cortex.put_genes(genes[:4])
        for gene in genes[4:]:
            cortex.put_gene(gene)
        cortex.set_status(genes[-1].id, GeneStatus.NATIVE)
        assert cortex.check_indexes() == []
    return [g.id for g in genes]


def _as_schema_1(path: Path) -> None:
    env = lmdb.open(str(path), max_dbs=64)
    dbs = {name: env.open_db(name.encode()) for name in ("meta", "genes", *INDEXES)}
    with env.begin(write=True) as txn:
        for name in INDEXES:
            txn.drop(dbs[name], delete=False)
        for gid, raw in list(txn.cursor(db=dbs["genes"])):
            version, status, successes, failures, domain, origin, _ = canonical.decode(raw)
            txn.put(gid, canonical.encode_plain(
                [version, status, successes, failures, domain, origin]), db=dbs["genes"])
            for name, value in zip(INDEXES, (domain, status, origin), strict=True):
                txn.put(value.encode() + b"\x00" + gid, b"", db=dbs[name])
        txn.delete(b"index_seq", db=dbs["meta"])
        txn.put(b"schema", U64.pack(1), db=dbs["meta"])
    env.close()


def _views(cortex: Cortex) -> dict[str, object]:
    stats = cortex.stats()
    return {
        "turbofan": [g.id for g in cortex.genes(domain="turbofan")],
        "loan_ids": cortex.gene_ids(domain="loan"),
        "pending": [g.id for g in cortex.genes(status="adaptation_pending")],
        "native_other": [g.id for g in cortex.genes(origin=OTHER.peer_id, status="native")],
        "by_status": stats.by_status, "by_domain": stats.by_domain,
    }


def test_reads_are_in_id_order_whatever_order_genes_were_indexed(tmp_path: Path) -> None:
    # Index numbers follow arrival, ids are hashes: a filtered read sorts what it found,
    # so callers see the order they always saw (decisions compare candidates in it).
    ids = _store(tmp_path / "c")
    with Cortex.open(tmp_path / "c") as cortex:
        views = _views(cortex)
    assert views["turbofan"] == sorted(ids[:6])
    assert views["loan_ids"] == sorted(ids[6:])
    assert views["pending"] == sorted(ids[6:10])
    assert views["native_other"] == [ids[10]]
    assert views["by_status"] == {"native": 7, "adaptation_pending": 4}


def test_new_genes_take_growing_numbers_and_their_keys_sort_by_them(tmp_path: Path) -> None:
    # The point of the layout: a batch of new genes appends to each value's range.
    ids = _store(tmp_path / "c")
    with Cortex.open(tmp_path / "c") as cortex:
        heads = cortex.heads(ids)
        numbers = [h.iseq for h in heads if h is not None]
        assert numbers == list(range(1, len(ids) + 1))
        with cortex.env.begin() as txn:
            keys = [k for k, _ in txn.cursor(db=cortex.open_db("idx_domain"))
                    if k.startswith(b"turbofan\x00")]
            named = [v for k, v in txn.cursor(db=cortex.open_db("idx_domain"))
                     if k.startswith(b"turbofan\x00")]
        assert keys == [b"turbofan\x00" + U64.pack(n) for n in range(1, 7)]
        assert [g.decode() for g in named] == ids[:6]
        # A status change keeps the number; a delete frees the keys, not the number.
        cortex.set_status(ids[0], GeneStatus.RETIRED)
        assert cortex.heads([ids[0]])[0].iseq == 1
        cortex.delete_gene(ids[1])
        cortex.put_gene(make_gene(KEY, "late"))
        assert cortex.heads([make_gene(KEY, "late").id])[0].iseq == len(ids) + 1
        assert cortex.check_indexes() == []


@pytest.mark.parametrize("chunk", [3, 5_000])
def test_upgrade_from_schema_1_keeps_every_read_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    # chunk 3: the heads are read a few at a time (a big Cortex), 11 in four chunks.
    monkeypatch.setattr(schema_upgrade, "UPGRADE_CHUNK", chunk)
    _store(tmp_path / "c")
    with Cortex.open(tmp_path / "c", readonly=True) as cortex:
        before = _views(cortex)
    _as_schema_1(tmp_path / "c")
    # A read-only open reads schema 1 as it is (and leaves it so).
    with Cortex.open(tmp_path / "c", readonly=True) as old:
        assert old.schema_version == 1
        assert _views(old) == before
        assert old.check_indexes() == []
    with Cortex.open(tmp_path / "c") as cortex:
        assert cortex.schema_version == SCHEMA_VERSION == 2
        assert _views(cortex) == before
        assert cortex.check_indexes() == []
        # Writes after the upgrade take numbers past the ones it gave.
        late = make_gene(KEY, "late")
        cortex.put_gene(late)
        assert cortex.heads([late.id])[0].iseq == 12
        assert cortex.check_indexes() == []


def test_a_damaged_head_stops_the_upgrade_and_changes_nothing(tmp_path: Path) -> None:
    ids = _store(tmp_path / "c")
    _as_schema_1(tmp_path / "c")
    env = lmdb.open(str(tmp_path / "c"), max_dbs=64)
    heads = env.open_db(b"genes")
    with env.begin(write=True) as txn:
        txn.put(ids[3].encode(), canonical.encode_plain([1, "native"]), db=heads)
    env.close()
    with pytest.raises(CortexError, match="cannot be upgraded from schema 1"):
        Cortex.open(tmp_path / "c")
    with Cortex.open(tmp_path / "c", readonly=True) as cortex:
        assert cortex.schema_version == 1
        assert cortex.gene_ids(domain="loan") == sorted(ids[6:])


def test_restoring_a_schema_1_backup_upgrades_it(tmp_path: Path) -> None:
    ids = _store(tmp_path / "old")
    _as_schema_1(tmp_path / "old")
    restore(tmp_path / "old", tmp_path / "c")
    with Cortex.open(tmp_path / "c") as cortex:
        assert cortex.schema_version == 2
        assert [g.id for g in cortex.genes(domain="turbofan")] == sorted(ids[:6])
        assert cortex.check_indexes() == []


def test_check_indexes_names_a_shared_number_and_an_entry_naming_another_gene(
        tmp_path: Path) -> None:
    ids = _store(tmp_path / "c")
    env = lmdb.open(str(tmp_path / "c"), max_dbs=64)
    heads, domains, meta = (env.open_db(b"genes"), env.open_db(b"idx_domain"),
                            env.open_db(b"meta"))
    with env.begin(write=True) as txn:
        txn.put(b"turbofan\x00" + U64.pack(2), ids[0].encode(), db=domains)
        txn.put(b"index_seq", U64.pack(3), db=meta)
    env.close()
    with Cortex.open(tmp_path / "c", readonly=True) as cortex:
        problems = cortex.check_indexes()
    assert any(f"names {ids[0].encode()!r}, not {ids[1].encode()!r}" in p for p in problems)
    assert "meta: index_seq is below index number 11" in problems
    env = lmdb.open(str(tmp_path / "c"), max_dbs=64)
    heads = env.open_db(b"genes")
    with env.begin(write=True) as txn:
        raw = txn.get(ids[4].encode(), db=heads)
        fields = canonical.decode(raw)
        txn.put(ids[4].encode(), canonical.encode_plain([*fields[:6], 1]), db=heads)
    env.close()
    with Cortex.open(tmp_path / "c", readonly=True) as cortex:
        problems = cortex.check_indexes()
    assert any("index number 1 is also" in p for p in problems)


# Upgrades with chunks of 2 heads and, once the third chunk was read (four heads already
# rewritten inside the open transaction), says so and waits to be killed.
KILLED_UPGRADER = r"""
import sys, time
from gd.node.store import schema_upgrade
from gd.node.store.cortex import Cortex
schema_upgrade.UPGRADE_CHUNK = 2
real, calls = schema_upgrade._next_heads, []
def slow(cursor, after):
    calls.append(after)
    if len(calls) == 3:
        print("inside", flush=True)
        time.sleep(60)
    return real(cursor, after)
schema_upgrade._next_heads = slow
Cortex.open(sys.argv[1])
"""


def test_a_kill_during_the_upgrade_leaves_schema_1_and_the_next_open_upgrades(
        tmp_path: Path) -> None:
    ids = _store(tmp_path / "c")
    _as_schema_1(tmp_path / "c")
    with Cortex.open(tmp_path / "c", readonly=True) as cortex:
        before = _views(cortex)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_UPGRADER, str(tmp_path / "c")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "inside"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    with Cortex.open(tmp_path / "c", readonly=True) as cortex:
        assert cortex.schema_version == 1
        assert _views(cortex) == before
        assert cortex.check_indexes() == []
    with Cortex.open(tmp_path / "c") as cortex:
        assert cortex.schema_version == 2
        assert _views(cortex) == before
        assert sorted(h.iseq for h in cortex.heads(ids) if h is not None) == list(
            range(1, len(ids) + 1))
        assert cortex.check_indexes() == []
