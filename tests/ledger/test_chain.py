"""The LMDB-backed ledger: appends, idempotency, proofs, and `verify` against tampering."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import lmdb
import pytest
from gd_testkit import key_from_int

from gd.genome import NodeKey
from gd.genome.canonical import sha256
from gd.ledger.chain import AppendStatus
from gd.ledger.entry import EntryKind, LedgerEntry
from gd.ledger.errors import LocalLedgerError, RemoteLedgerError
from gd.ledger.merkle import verify_consistency, verify_inclusion
from gd.ledger.sth import SignedTreeHead
from gd.node.store.ledger_store import (
    ENTRIES_DB,
    HEADS_DB,
    META_DB,
    META_SIZE,
    TREE_DB,
    Ledger,
    open_ledger,
)


def statement(key: NodeKey, n: int, kind: EntryKind = EntryKind.EXPERIENCE) -> LedgerEntry:
    return LedgerEntry.create(key, kind, hlc=(1 << 16) + n,
                              payload_hash=sha256(f"payload-{n}".encode()),
                              summary={"n": n, "domain": "turbofan"})


@pytest.fixture
def env(tmp_path: Path) -> Iterator[lmdb.Environment]:
    # sync=False keeps the byte-flip loops fast; Ledger fsyncs its own appends explicitly.
    environment = lmdb.open(str(tmp_path / "cortex"), max_dbs=64, map_size=1 << 26,
                            sync=False)
    yield environment
    environment.close()


@pytest.fixture
def ledger(env: lmdb.Environment) -> Ledger:
    return Ledger(env)


def fill(ledger: Ledger, key: NodeKey, n: int, *, batch: int = 3) -> None:
    for start in range(0, n, batch):
        ledger.append_batch([statement(key, i) for i in range(start, min(n, start + batch))],
                            head_key=key, timestamp=start)


def test_append_batch_assigns_indices_links_and_signs_a_head(ledger: Ledger,
                                                             key: NodeKey) -> None:
    result = ledger.append_batch([statement(key, i) for i in range(5)], head_key=key,
                                 timestamp=42, log_id="eu-west")
    assert [r.index for r in result.receipts] == [0, 1, 2, 3, 4]
    assert all(r.status is AppendStatus.APPENDED for r in result.receipts)
    assert result.size == ledger.size == 5
    assert result.head is not None and result.head.size == 5
    assert result.head.root == ledger.root()
    assert ledger.latest_head() == result.head
    entries = list(ledger.entries())
    assert [e.index for e in entries] == [0, 1, 2, 3, 4]
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.entry_hash
    assert ledger.head.last_hash == entries[-1].entry_hash
    assert [e.index for e in ledger.entries(2, 4)] == [2, 3]
    assert ledger.verify().ok


def test_idempotent_append_returns_the_original_receipt(ledger: Ledger, key: NodeKey) -> None:
    first = ledger.append(statement(key, 1))
    again = ledger.append(statement(key, 1))
    assert again.status is AppendStatus.DUPLICATE
    assert (again.index, again.entry_hash) == (first.index, first.entry_hash)
    in_batch = ledger.append_batch([statement(key, 2), statement(key, 2), statement(key, 1)])
    assert [r.status for r in in_batch.receipts] == [
        AppendStatus.APPENDED, AppendStatus.DUPLICATE, AppendStatus.DUPLICATE]
    assert in_batch.receipts[1].index == in_batch.receipts[0].index == 1
    assert ledger.size == 2
    found = ledger.find(key.peer_id, statement(key, 2).idempotency_key)
    assert found is not None and found.index == 1
    assert ledger.find(key.peer_id, "never-used") is None
    assert ledger.verify().ok


def test_reused_key_with_other_content_is_a_conflict_not_an_entry(ledger: Ledger,
                                                                  key: NodeKey) -> None:
    ledger.append(statement(key, 1))
    clash = LedgerEntry.create(key, EntryKind.DECISION, 5, sha256(b"other"),
                               idempotency_key=statement(key, 1).idempotency_key)
    receipt = ledger.append(clash)
    assert receipt.status is AppendStatus.CONFLICT and not receipt.ok
    assert receipt.index == 0 and ledger.size == 1
    # The same key under another author is that author's own key.
    other = LedgerEntry.create(key_from_int(9), EntryKind.DECISION, 5, sha256(b"other"),
                               idempotency_key=statement(key, 1).idempotency_key)
    assert ledger.append(other).status is AppendStatus.APPENDED


def test_bad_signature_in_a_batch_writes_nothing(ledger: Ledger, key: NodeKey) -> None:
    ledger.append(statement(key, 0))
    forged = replace(statement(key, 2), hlc=1)
    with pytest.raises(RemoteLedgerError, match="signature"):
        ledger.append_batch([statement(key, 1), forged])
    assert ledger.size == 1 and ledger.verify().ok


def test_misplaced_sequenced_entry_is_refused(ledger: Ledger, key: NodeKey) -> None:
    ledger.append(statement(key, 0))
    wrong = statement(key, 1).sequenced(5, sha256(b"x"))
    with pytest.raises(LocalLedgerError, match="index"):
        ledger.append(wrong)
    right = statement(key, 1).sequenced(1, ledger.head.last_hash)
    assert ledger.append(right).index == 1


def test_persisted_across_reopen_and_read_only(tmp_path: Path, key: NodeKey) -> None:
    with open_ledger(tmp_path, readonly=False) as writer:
        fill(writer, key, 7)
        root = writer.root()
    with open_ledger(tmp_path, readonly=True) as reader:
        assert reader.size == 7 and reader.root() == root and reader.verify().ok
        with pytest.raises(LocalLedgerError, match="read-only"):
            reader.append(statement(key, 99))
    with pytest.raises(LocalLedgerError, match="no Cortex"):
        open_ledger(tmp_path / "nowhere", readonly=True)


def test_proofs_from_the_store_verify_against_signed_heads(ledger: Ledger,
                                                           key: NodeKey) -> None:
    fill(ledger, key, 20, batch=4)
    heads = ledger.heads()
    assert [h.size for h in heads] == [4, 8, 12, 16, 20]
    latest = heads[-1]
    for index in range(20):
        proof = ledger.inclusion_proof(index)
        verify_inclusion(ledger.entry(index).leaf_hash, index, 20, proof.path, latest.root)
        old = ledger.inclusion_proof(index, 12) if index < 12 else None
        if old is not None:
            verify_inclusion(ledger.leaf_hash(index), index, 12, old.path, heads[2].root)
    for old_head in heads[:-1]:
        proof = ledger.consistency_proof(old_head.size)
        verify_consistency(old_head.size, 20, old_head.root, latest.root, proof.path)
    with pytest.raises(LocalLedgerError):
        ledger.inclusion_proof(20)
    with pytest.raises(LocalLedgerError):
        ledger.entry(20)


def test_add_head_checks_signature_and_root(ledger: Ledger, key: NodeKey) -> None:
    fill(ledger, key, 6)
    leader = key_from_int(5)
    ledger.add_head(SignedTreeHead.create(leader, 4, ledger.root(4), 7))
    with pytest.raises(RemoteLedgerError, match="disagrees"):
        ledger.add_head(SignedTreeHead.create(leader, 4, ledger.root(3), 7))
    with pytest.raises(LocalLedgerError, match="beyond"):
        ledger.add_head(SignedTreeHead.create(leader, 9, ledger.root(), 7))
    with pytest.raises(RemoteLedgerError, match="signature"):
        ledger.add_head(replace(SignedTreeHead.create(leader, 5, ledger.root(5), 7), size=6))
    assert ledger.verify().ok


# -- tampering with the stored bytes -----------------------------------------------------

def raw_put(env: lmdb.Environment, db_name: bytes, key: bytes, value: bytes) -> None:
    db = env.open_db(db_name)
    with env.begin(write=True) as txn:
        txn.put(key, value, db=db)


def raw_get(env: lmdb.Environment, db_name: bytes, key: bytes) -> bytes:
    db = env.open_db(db_name)
    with env.begin() as txn:
        return bytes(txn.get(key, db=db))


def test_flipping_any_byte_of_any_entry_is_caught_at_its_index(
        env: lmdb.Environment, ledger: Ledger, key: NodeKey) -> None:
    fill(ledger, key, 5, batch=2)
    assert ledger.verify().ok
    flips = 0
    for index in range(5):
        slot = index.to_bytes(8, "big")
        original = raw_get(env, ENTRIES_DB, slot)
        for position in range(len(original)):
            tampered = bytearray(original)
            tampered[position] ^= 0xFF
            raw_put(env, ENTRIES_DB, slot, bytes(tampered))
            report = ledger.verify()
            assert not report.ok, (index, position)
            assert report.first_bad_index == index, (index, position, report.reason)
            flips += 1
        raw_put(env, ENTRIES_DB, slot, original)
    assert flips > 5 * 300
    assert ledger.verify().ok


def test_flipping_any_byte_of_the_stored_tree_is_caught(
        env: lmdb.Environment, ledger: Ledger, key: NodeKey) -> None:
    fill(ledger, key, 6)
    db = env.open_db(TREE_DB)
    with env.begin() as txn:
        nodes = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=db)]
    assert len(nodes) == 6 + 3 + 1  # leaves, pairs, one node of four
    for node_key, value in nodes:
        level, position = node_key[0], int.from_bytes(node_key[1:], "big")
        for byte in range(0, 32, 7):
            tampered = bytearray(value)
            tampered[byte] ^= 0x01
            raw_put(env, TREE_DB, node_key, bytes(tampered))
            report = ledger.verify()
            assert not report.ok
            # Detected when the last leaf under that node is recomputed.
            assert report.first_bad_index == ((position + 1) << level) - 1
            assert "Merkle node" in report.reason
        raw_put(env, TREE_DB, node_key, value)
    assert ledger.verify().ok


def test_a_consistently_relinked_log_is_caught_by_the_signed_head(
        tmp_path: Path, ledger: Ledger, key: NodeKey) -> None:
    fill(ledger, key, 9)  # heads at 3, 6, 9
    entries = list(ledger.entries())
    # An attacker with the disk drops entry 4 and rebuilds everything derived (links,
    # keys, tree, metadata), so every link and author signature still holds, and keeps
    # the signed heads it cannot forge.
    forged_env = lmdb.open(str(tmp_path / "forged"), max_dbs=64, map_size=1 << 26)
    try:
        forged = Ledger(forged_env)
        forged.append_batch([e.unsequenced() for e in entries[:4] + entries[5:]])
        for head in ledger.heads():
            raw_put(forged_env, HEADS_DB, head.size.to_bytes(8, "big"), head.encode())
        report = forged.verify()
        assert not report.ok
        assert report.first_bad_index == 3  # first index after the last head that matched
        assert "root signed at size 6" in report.reason
    finally:
        forged_env.close()


def test_tampered_signed_head_is_caught(env: lmdb.Environment, ledger: Ledger,
                                        key: NodeKey) -> None:
    fill(ledger, key, 6)
    slot = (3).to_bytes(8, "big")
    good = SignedTreeHead.decode(raw_get(env, HEADS_DB, slot))
    raw_put(env, HEADS_DB, slot, replace(good, timestamp=good.timestamp + 1).encode())
    report = ledger.verify()
    assert not report.ok and report.first_bad_index == 2 and "signature" in report.reason
    forged = SignedTreeHead.create(key, 3, ledger.root(2), 1)  # validly signed, wrong root
    raw_put(env, HEADS_DB, slot, forged.encode())
    report = ledger.verify()
    assert not report.ok and report.first_bad_index == 0 and "root" in report.reason
    raw_put(env, HEADS_DB, slot, b"\x00garbage")
    assert not ledger.verify().ok
    raw_put(env, HEADS_DB, slot, good.encode())
    assert ledger.verify().ok


def test_missing_entry_and_lying_metadata_are_caught(env: lmdb.Environment, ledger: Ledger,
                                                     key: NodeKey) -> None:
    fill(ledger, key, 4)
    raw_put(env, META_DB, META_SIZE, (5).to_bytes(8, "big"))
    report = ledger.verify()
    assert not report.ok and report.first_bad_index == 4
    raw_put(env, META_DB, META_SIZE, (4).to_bytes(8, "big"))
    original = raw_get(env, ENTRIES_DB, (2).to_bytes(8, "big"))
    entries_db = env.open_db(ENTRIES_DB)
    with env.begin(write=True) as txn:
        txn.delete((2).to_bytes(8, "big"), db=entries_db)
    report = ledger.verify()
    assert not report.ok and report.first_bad_index == 2 and "missing" in report.reason
    raw_put(env, ENTRIES_DB, (2).to_bytes(8, "big"), original)
    assert ledger.verify().ok
