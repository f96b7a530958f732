"""The apply path's byte-level shortcuts (issue 15, ADR 0044): the audit log's records
built from their body's bytes, and the sender's feed read one page per transaction.
Each shortcut must give exactly what the general path gives: the audit chain stays
verifiable by `AuditLog.verify` (and by homes written before), the feed the same
entries with the same bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
from gd_testkit import key_from_int, make_gene

from gd.crdt.clock import ManualClock
from gd.genome import canonical
from gd.genome.errors import ValidationError
from gd.node.store.audit import (
    AUDIT_DB,
    GENESIS,
    AuditLog,
    body_bytes,
    chain_hash,
    stored_bytes,
)
from gd.node.store.cortex import Cortex
from gd.node.store.sync_store import SyncStore
from gd.protocol.repair import pack_versions
from gd.protocol.sync_frames import decompress

AUTHOR = key_from_int(41)
DETAILS = [
    {},
    {"reason": "refused by the receiver's own policy"},
    {"source_id": "g" * 64, "source_version": 3, "anonymized": True},
    {"ratio": 0.25, "count": 2**63, "neg": -(2**63), "text": "é" * 600},  # text is cut
]


@pytest.fixture
def cortex(tmp_path: Path):
    with Cortex.open(tmp_path / "c", map_size=64 << 20) as c:
        yield c


def test_audit_records_are_stored_byte_for_byte_as_the_canonical_record(cortex) -> None:
    log = AuditLog(cortex, clock=ManualClock(wall=1_700_000_000.0))
    entries = [("gene_received", dict(peer="12D3KooWpeer", gene_id=f"g{i}",
                                      version_hash=bytes([i]) * 32, direction="in",
                                      rule=f"r{i}", detail=d))
               for i, d in enumerate(DETAILS)]
    records = cortex.write(lambda txn: log.append_many_in(txn, entries))
    prev = GENESIS
    with cortex.env.begin() as txn:
        db = cortex.open_db(AUDIT_DB)
        for record in records:
            body = record.body()
            # The general path: normalise and encode the whole record.
            assert record.hash == chain_hash(prev, body)
            assert txn.get(record.index.to_bytes(8, "big"), db=db) == canonical.encode(
                {"body": body, "hash": record.hash, "prev": prev})
            prev = record.hash
    assert records[3].detail["text"] == "é" * 512
    assert log.verify().ok
    assert log.head() == (len(DETAILS), prev)


@pytest.mark.parametrize(("field", "bad"), [
    ("gene_id", "g" * 300), ("peer", "p\x00"), ("rule", "r" * 257), ("kind", "Not A Slug")])
def test_a_bad_field_in_a_later_record_refuses_the_whole_append(cortex, field, bad) -> None:
    # A call checks a field value once (the peer and the rule repeat across a batch):
    # a value first seen in the third record is still checked, and nothing is stored.
    log = AuditLog(cortex)
    entries = [("gene_received", dict(peer="12D3KooWpeer", gene_id=f"g{i}", rule="r1"))
               for i in range(3)]
    kind, fields = entries[2]
    entries[2] = (bad, fields) if field == "kind" else (kind, {**fields, field: bad})
    with pytest.raises(ValidationError, match=field):
        cortex.write(lambda txn: log.append_many_in(txn, entries))
    assert len(log) == 0
    assert cortex.write(lambda txn: log.append_many_in(txn, entries[:2]))[1].index == 1


def test_a_detail_msgpack_cannot_hold_is_refused_as_before_and_nothing_is_stored(
        cortex) -> None:
    log = AuditLog(cortex)
    with pytest.raises(TypeError, match="does not fit"):
        log.append("gene_received", peer="p", detail={"count": 2**64})
    assert len(log) == 0
    with pytest.raises(TypeError):
        body_bytes({"count": -(2**63) - 1})


def test_stored_bytes_compose_the_canonical_map() -> None:
    body = {"detail": {}, "index": 7}
    assert stored_bytes(canonical.encode(body), b"h" * 32, b"p" * 32) == canonical.encode(
        {"prev": b"p" * 32, "body": body, "hash": b"h" * 32})


def test_the_feed_read_by_pages_gives_every_version_with_its_stored_bytes(cortex) -> None:
    genes = [make_gene(AUTHOR, name=f"gene-{i:03d}") for i in range(300)]
    cortex.put_genes(genes)
    forgotten = genes[5]
    cortex.delete_gene(forgotten.id)  # a tombstone, and a version no longer held
    edited = genes[7].edited(AUTHOR, hlc=2 << 16, purpose="a changed purpose")
    cortex.put_gene(edited)  # genes[7] v1 stays a stored version; its feed entry too
    feed = list(SyncStore(cortex).read_feed(0, 10_000))
    seqs = [seq for seq, _ in feed]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    got = {(g.id, g.version): g for _, g in feed}
    expected = [g for g in genes if g.id != forgotten.id] + [edited]
    assert len(feed) == len(expected)
    for gene in expected:
        mine = got[(gene.id, gene.version)]
        assert mine.wire_bytes == gene.wire_bytes
        assert mine.version_hash == gene.version_hash
        # As `get_gene_version` reads it: the gene's current status.
        assert mine == cortex.get_gene_version(gene.id, gene.version)
    # A limit that ends inside a page, and a resume from there.
    first = list(SyncStore(cortex).read_feed(0, 10))
    rest = list(SyncStore(cortex).read_feed(first[-1][0], 10_000))
    assert [s for s, _ in first + rest] == seqs


@pytest.mark.parametrize("zstd", [False, True])
def test_a_fetch_answer_carries_the_genes_stored_bytes_as_the_canonical_list(
        cortex, zstd: bool) -> None:
    fresh = [make_gene(AUTHOR, name=f"fetch-{i:02d}") for i in range(40)]
    cortex.put_genes(fresh)
    stored = [cortex.get_gene(g.id) for g in fresh[:20]]  # wire_bytes: the stored record
    genes = [g for g in stored if g is not None] + fresh[20:]
    frame = pack_versions(genes, zstd)
    assert frame.zstd is zstd
    raw = decompress(frame.genes, frame.zstd)
    assert raw == canonical.encode_plain([g.to_wire() for g in genes])
    assert pack_versions([], zstd).genes == canonical.encode_plain([])
