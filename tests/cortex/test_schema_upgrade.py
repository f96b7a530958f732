"""Schemas 2 and 3: gene indexes (ADR 0060), then gene bodies (ADR 0062), keyed by index
number, and the upgrades from schemas 1 and 2.

Older Cortexes are made here from a current one by rewriting what differs: schema 2's
bodies keyed `id SEP u64(version)` (and the version-hash lookup naming those keys), and
on top of that schema 1's heads without their index number and indexes keyed
`value SEP id`: the records gd-node wrote before ADRs 0062 and 0060, byte for byte.
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
U64, BODY = struct.Struct(">Q"), struct.Struct(">QQ")
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
        # A gene with two versions: both bodies are kept, the second is the head.
        cortex.put_gene(genes[0].edited(KEY, hlc=2, action="hold"))
        assert cortex.check_indexes() == []
    return [g.id for g in genes]


def _as_schema_2(path: Path) -> None:
    env = lmdb.open(str(path), max_dbs=64)
    dbs = {name: env.open_db(name.encode())
           for name in ("meta", "genes", "gene_versions", "by_vhash")}
    with env.begin(write=True) as txn:
        ids = {canonical.decode(raw)[6]: gid for gid, raw in txn.cursor(db=dbs["genes"])}

        def old_key(new: bytes) -> bytes:
            number, version = BODY.unpack(new)
            return ids[number] + b"\x00" + U64.pack(version)

        for key, body in list(txn.cursor(db=dbs["gene_versions"])):
            txn.delete(key, db=dbs["gene_versions"])
            txn.put(old_key(key), body, db=dbs["gene_versions"])
        for vhash, key in list(txn.cursor(db=dbs["by_vhash"])):
            txn.put(vhash, old_key(key), db=dbs["by_vhash"])
        txn.put(b"schema", U64.pack(2), db=dbs["meta"])
    env.close()


def _as_schema_1(path: Path) -> None:
    _as_schema_2(path)
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
    ids = sorted(cortex.gene_ids())
    heads = [cortex.get_gene(i) for i in ids]
    return {
        "bodies": [g.wire_bytes for g in heads if g is not None],
        "versions": [cortex.gene_versions(i) for i in ids],
        "first_versions": [g.wire_bytes for g in (cortex.get_gene_version(i, 1) for i in ids)
                           if g is not None],
        "by_hash": [getattr(cortex.get_by_version_hash(g.version_hash), "wire_bytes", None)
                    for g in heads if g is not None],
        "head_statuses": cortex.head_statuses(
            [(g.id, g.version_hash) for g in heads if g is not None]),
        "feed": [(c.id, c.version, body) for c, body, _ in cortex.feed_page(0, 100)],
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


OLDER = {1: _as_schema_1, 2: _as_schema_2}


@pytest.mark.parametrize("chunk", [3, 5_000])
@pytest.mark.parametrize("schema", [1, 2])
def test_upgrade_from_an_older_schema_keeps_every_read_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, schema: int) -> None:
    # chunk 3: the records are read a few at a time (a big Cortex): 11 heads in four
    # chunks, 12 bodies in four.
    monkeypatch.setattr(schema_upgrade, "UPGRADE_CHUNK", chunk)
    _store(tmp_path / "c")
    with Cortex.open(tmp_path / "c", readonly=True) as cortex:
        before = _views(cortex)
    OLDER[schema](tmp_path / "c")
    # A read-only open reads the older schema as it is (and leaves it so).
    with Cortex.open(tmp_path / "c", readonly=True) as old:
        assert old.schema_version == schema
        assert _views(old) == before
        assert old.check_indexes() == []
    with Cortex.open(tmp_path / "c") as cortex:
        assert cortex.schema_version == SCHEMA_VERSION == 3
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
        assert cortex.schema_version == 3
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


# Upgrades with chunks of 2 records and, once chunk number argv[2] is about to be read
# (with argv[2] = 3, four heads or four bodies already rewritten inside the open
# transaction), says so and waits to be killed.
KILLED_UPGRADER = r"""
import sys, time
from gd.node.store import schema_upgrade
from gd.node.store.cortex import Cortex
schema_upgrade.UPGRADE_CHUNK = 2
real, calls = schema_upgrade._next_records, []
def slow(cursor, after, **kw):
    calls.append(after)
    if len(calls) == int(sys.argv[2]):
        print("inside", flush=True)
        time.sleep(60)
    return real(cursor, after, **kw)
schema_upgrade._next_records = slow
Cortex.open(sys.argv[1])
"""


# Schema 1's upgrade reads its 11 heads in 6 chunks, then its 12 bodies: the 3rd chunk
# is inside the re-index, the 9th inside the bodies' rekeying.
@pytest.mark.parametrize(("schema", "chunk"), [(1, 3), (1, 9), (2, 3)])
def test_a_kill_during_the_upgrade_leaves_the_old_schema_and_the_next_open_upgrades(
        tmp_path: Path, schema: int, chunk: int) -> None:
    ids = _store(tmp_path / "c")
    OLDER[schema](tmp_path / "c")
    with Cortex.open(tmp_path / "c", readonly=True) as cortex:
        before = _views(cortex)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_UPGRADER, str(tmp_path / "c"),
                             str(chunk)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "inside"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    with Cortex.open(tmp_path / "c", readonly=True) as cortex:
        assert cortex.schema_version == schema
        assert _views(cortex) == before
        assert cortex.check_indexes() == []
    with Cortex.open(tmp_path / "c") as cortex:
        assert cortex.schema_version == 3
        assert _views(cortex) == before
        assert sorted(h.iseq for h in cortex.heads(ids) if h is not None) == list(
            range(1, len(ids) + 1))
        assert cortex.check_indexes() == []


def test_bodies_are_keyed_by_number_and_version_and_a_batch_appends_them(
        tmp_path: Path) -> None:
    ids = _store(tmp_path / "c")
    with Cortex.open(tmp_path / "c") as cortex:
        numbers = {i: h.iseq for i, h in zip(ids, cortex.heads(ids), strict=True) if h}
        with cortex.env.begin() as txn:
            keys = [k for k, _ in txn.cursor(db=cortex.open_db("gene_versions"))]
            hashes = dict(txn.cursor(db=cortex.open_db("by_vhash")))
        # 11 first versions and the second version of gene 0 (number 1).
        expected = sorted([BODY.pack(n, 1) for n in numbers.values()] + [BODY.pack(1, 2)])
        assert keys == expected
        assert sorted(hashes.values()) == expected
        # A new batch's bodies land after every stored one, even next to a new version
        # of an old gene in the same batch (which is put in its place).
        old = cortex.get_gene(ids[2])
        assert old is not None
        batch = [make_gene(KEY, f"n{i}") for i in range(3)]
        cortex.put_genes([batch[0], old.edited(KEY, hlc=3, action="wait"), *batch[1:]])
        with cortex.env.begin() as txn:
            keys = [k for k, _ in txn.cursor(db=cortex.open_db("gene_versions"))]
        assert keys[-3:] == [BODY.pack(n, 1) for n in (12, 13, 14)]
        assert BODY.pack(numbers[ids[2]], 2) in keys
        assert cortex.gene_versions(ids[2]) == [1, 2]
        assert cortex.check_indexes() == []


def test_check_indexes_names_a_body_of_no_gene_and_a_hash_naming_another_body(
        tmp_path: Path) -> None:
    ids = _store(tmp_path / "c")
    with Cortex.open(tmp_path / "c", readonly=True) as cortex:
        first = cortex.get_gene(ids[5])
    assert first is not None
    env = lmdb.open(str(tmp_path / "c"), max_dbs=64)
    bodies, hashes = env.open_db(b"gene_versions"), env.open_db(b"by_vhash")
    with env.begin(write=True) as txn:
        txn.put(BODY.pack(99, 1), b"stray", db=bodies)
        txn.put(first.version_hash, BODY.pack(4, 1), db=hashes)
    env.close()
    with Cortex.open(tmp_path / "c", readonly=True) as cortex:
        problems = cortex.check_indexes()
    assert f"gene_versions: body {BODY.pack(99, 1)!r} belongs to no gene" in problems
    assert f"gene {ids[5]}: version hash does not name its body" in problems


def test_a_body_without_a_head_stops_the_upgrade_and_changes_nothing(tmp_path: Path) -> None:
    ids = _store(tmp_path / "c")
    _as_schema_2(tmp_path / "c")
    env = lmdb.open(str(tmp_path / "c"), max_dbs=64)
    bodies = env.open_db(b"gene_versions")
    with env.begin(write=True) as txn:
        txn.put(b"ghost\x00" + U64.pack(1), b"body", db=bodies)
    env.close()
    with pytest.raises(CortexError, match=r"cannot be upgraded from schema 2.*ghost"):
        Cortex.open(tmp_path / "c")
    with Cortex.open(tmp_path / "c", readonly=True) as cortex:
        assert cortex.schema_version == 2
        assert cortex.gene_versions(ids[0]) == [1, 2]
