"""The LMDB Cortex: indexes, change feed, synapses, experiences, schema, backup."""

from __future__ import annotations

import struct
from pathlib import Path

import lmdb
import pytest
from gd_testkit import key_from_int, make_gene

from gd.genome import Decision, Experience, GeneStatus, MotorResult, StateVector, Synapse
from gd.node.store.cortex import Cortex, CortexError, restore
from gd.node.store.cortex_env import SCHEMA_VERSION, UnknownGene, VersionConflict

KEY = key_from_int(1)


@pytest.fixture
def cortex(tmp_path: Path) -> Cortex:
    c = Cortex.open(tmp_path / "cortex")
    yield c
    c.close()


def test_put_get_and_indexes(cortex: Cortex) -> None:
    a = make_gene(KEY, "a")
    b = make_gene(KEY, "b", domain="loan", action="offer")
    assert cortex.put_genes([a, b]) == [1, 2]
    assert cortex.get_gene(a.id) == a
    assert [g.id for g in cortex.genes(domain="loan")] == [b.id]
    assert {g.id for g in cortex.genes(status="native")} == {a.id, b.id}
    assert {g.id for g in cortex.genes(origin=KEY.peer_id, domain="turbofan")} == {a.id}
    assert cortex.check_indexes() == []


def test_same_version_twice_is_idempotent(cortex: Cortex) -> None:
    a = make_gene(KEY, "a")
    assert cortex.put_gene(a) == 1
    assert cortex.put_gene(a) is None
    assert cortex.last_seq == 1


def test_a_different_body_for_an_existing_version_is_a_conflict(cortex: Cortex) -> None:
    a = make_gene(KEY, "a")
    cortex.put_gene(a)
    other = make_gene(key_from_int(1), "a", threshold=99.0)
    assert other.id == a.id and other.version == a.version
    with pytest.raises(VersionConflict):
        cortex.put_gene(other)
    assert cortex.get_gene(a.id) == a


def test_a_superseded_body_under_the_same_version_is_in_the_feed(cortex: Cortex) -> None:
    # A decided last-writer-wins replaces the body stored under (id, version). The head
    # record names no body, so it stays byte-equal; the feed must still carry the change,
    # or peers following the feed (and the per-peer repair items) keep naming the loser
    # (fedsim seed 3151).
    a = make_gene(KEY, "a")
    other = make_gene(key_from_int(1), "a", threshold=99.0)
    cortex.put_gene(a)
    with cortex.env.begin(write=True) as txn:
        seq = cortex.put_gene_in(txn, other, supersede=True)
    assert seq == 2 and cortex.last_seq == 2
    assert [c.id for c in cortex.changes_since(1)] == [a.id]
    assert cortex.get_gene(a.id).version_hash == other.version_hash
    assert cortex.get_by_version_hash(a.version_hash) is None
    # The same body again changes nothing.
    with cortex.env.begin(write=True) as txn:
        assert cortex.put_gene_in(txn, other, supersede=True) is None
    assert cortex.last_seq == 2


def test_new_version_becomes_head_and_old_one_is_kept(cortex: Cortex) -> None:
    a = make_gene(KEY, "a")
    a2 = a.edited(KEY, hlc=9 << 16, action="overhaul")
    cortex.put_gene(a)
    cortex.put_gene(a2)
    assert cortex.get_gene(a.id).version == 2
    assert cortex.gene_versions(a.id) == [1, 2]
    assert cortex.get_gene_version(a.id, 1).version_hash == a.version_hash
    assert cortex.get_by_version_hash(a.version_hash).version == 1
    # A late-arriving older version never replaces the head.
    assert cortex.put_gene(a) is None
    assert cortex.get_gene(a.id).version == 2


def test_change_feed_is_monotonic_and_records_deletes(cortex: Cortex) -> None:
    genes = [make_gene(KEY, f"g{i}") for i in range(5)]
    cortex.put_genes(genes)
    cortex.delete_gene(genes[2].id)
    changes = cortex.changes_since(0)
    assert [c.seq for c in changes] == [1, 2, 3, 4, 5, 6]
    assert changes[-1].op == "delete" and changes[-1].id == genes[2].id
    assert [c.seq for c in cortex.changes_since(4, limit=1)] == [5]
    assert cortex.get_gene(genes[2].id) is None
    assert cortex.get_by_version_hash(genes[2].version_hash) is None
    assert cortex.check_indexes() == []


def test_status_change_moves_the_index_but_not_the_feed(cortex: Cortex) -> None:
    a = make_gene(KEY, "a")
    cortex.put_gene(a)
    cortex.set_status(a.id, GeneStatus.RETIRED)
    assert [g.id for g in cortex.genes(status="retired")] == [a.id]
    assert list(cortex.genes(status="native")) == []
    assert cortex.last_seq == 1
    with pytest.raises(UnknownGene):
        cortex.set_status("nope", "native")


def test_synapses_and_k_hop_neighbourhood(cortex: Cortex) -> None:
    g = [make_gene(KEY, f"g{i}") for i in range(5)]
    cortex.put_genes(g)
    cortex.add_synapse(Synapse(g[0].id, g[1].id, "follows", 0.5))
    cortex.add_synapse(Synapse(g[1].id, g[2].id, "specialises", 0.7))
    cortex.add_synapse(Synapse(g[3].id, g[0].id, "inhibits", 0.2))
    assert cortex.neighbourhood(g[0].id, 1) == {g[1].id: 1, g[3].id: 1}
    assert cortex.neighbourhood(g[0].id, 2) == {g[1].id: 1, g[3].id: 1, g[2].id: 2}
    assert cortex.neighbourhood(g[0].id, 2, direction="out") == {g[1].id: 1, g[2].id: 2}
    assert cortex.neighbourhood(g[0].id, 3, kinds=["follows"]) == {g[1].id: 1}
    assert cortex.neighbourhood(g[4].id, 3) == {}
    assert [s.weight for s in cortex.synapses_of(g[1].id, incoming=True)] == [0.5]
    with pytest.raises(UnknownGene):
        cortex.add_synapse(Synapse(g[0].id, "f" * 32, "follows"))
    cortex.delete_gene(g[1].id)
    assert cortex.neighbourhood(g[0].id, 3) == {g[3].id: 1}


def test_experiences_update_counters_once(cortex: Cortex) -> None:
    a = make_gene(KEY, "a")
    cortex.put_gene(a)
    state = StateVector("turbofan", {"s11": 48.0})
    ok = Experience(a.id, a.version_hash.hex(), state, True, 1, KEY.peer_id)
    bad = Experience(a.id, a.version_hash.hex(), state, False, 2, KEY.peer_id)
    cortex.add_experience(ok)
    cortex.add_experience(ok)
    cortex.add_experience(bad)
    gene = cortex.get_gene(a.id)
    assert (gene.successes, gene.failures) == (1, 1)
    assert {e.id for e in cortex.experiences_for(a.id)} == {ok.id, bad.id}
    with pytest.raises(UnknownGene):
        cortex.add_experience(Experience("f" * 32, "", state, True, 1, ""))


def test_decisions_by_id_and_gene(cortex: Cortex) -> None:
    a = make_gene(KEY, "a")
    cortex.put_gene(a)
    dec = Decision(a.id, a.version_hash.hex(), "turbofan",
                   (StateVector("turbofan", {"s11": 48.0}),), 7, {"n": 100},
                   (MotorResult("M_P", "1", 0.9, False, "applies"),), 0.9, "candidate",
                   "approve", 5)
    cortex.put_decision(dec)
    assert cortex.get_decision(dec.id) == dec
    assert [d.id for d in cortex.decisions(a.id)] == [dec.id]
    assert [d.id for d in cortex.decisions()] == [dec.id]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Cortex.open(tmp_path / "c").close()
    env = lmdb.open(str(tmp_path / "c"), max_dbs=64)
    meta = env.open_db(b"meta")
    with env.begin(write=True) as txn:
        txn.put(b"schema", struct.pack(">Q", SCHEMA_VERSION + 1), db=meta)
    env.close()
    with pytest.raises(CortexError, match="newer than this gd-node"):
        Cortex.open(tmp_path / "c")


def test_missing_cortex_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CortexError, match="gd-node init"):
        Cortex.open(tmp_path / "nothing", readonly=True)


def test_read_only_cortex_refuses_writes(tmp_path: Path) -> None:
    Cortex.open(tmp_path / "c").close()
    with Cortex.open(tmp_path / "c", readonly=True) as ro, pytest.raises(CortexError):
        ro.put_gene(make_gene(KEY))


def test_map_grows_when_full(tmp_path: Path) -> None:
    with Cortex.open(tmp_path / "c", map_size=256 * 1024) as small:
        genes = [make_gene(KEY, f"g{i}") for i in range(3000)]
        small.put_genes(genes)
        assert small.stats().genes == 3000
        assert small.env.info()["map_size"] > 256 * 1024


def test_backup_and_restore_round_trip(tmp_path: Path) -> None:
    live = Cortex.open(tmp_path / "live")
    genes = [make_gene(KEY, f"g{i}") for i in range(50)]
    live.put_genes(genes)
    live.add_synapse(Synapse(genes[0].id, genes[1].id, "follows", 0.5))
    live.backup(tmp_path / "bk")
    with pytest.raises(CortexError, match="not empty"):
        live.backup(tmp_path / "bk")
    live.put_gene(make_gene(KEY, "after-backup"))
    live.close()
    aside = restore(tmp_path / "bk", tmp_path / "live")
    assert aside.name == "live.pre-restore-1"
    with Cortex.open(tmp_path / "live") as restored, Cortex.open(aside) as previous:
        assert [g.id for g in restored.genes()] == sorted(g.id for g in genes)
        assert restored.synapses_of(genes[0].id)[0].target == genes[1].id
        assert previous.stats().genes == 51
        assert restored.changes_since(0, 100) == previous.changes_since(0, 50)
