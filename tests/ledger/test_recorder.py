"""The node's local ledger recorder (region of one voter)."""

from __future__ import annotations

from pathlib import Path

from gd_testkit import key_from_int

from gd.genome import canonical
from gd.ledger.merkle import verify_inclusion
from gd.node.services.recorder import LedgerRecorder
from gd.node.store.cortex import Cortex


def test_recorder_appends_signed_entries_with_heads_and_dedups(tmp_path: Path) -> None:
    key = key_from_int(5)
    clock = iter(range(1_000, 10_000, 7))
    with Cortex.open(tmp_path / "c") as cortex:
        rec = LedgerRecorder(cortex.env, key, wall_ms=lambda: next(clock))
        payloads = [canonical.sha256(bytes([i])) for i in range(5)]
        receipts = [rec.append("decision", p, {"verdict": "approve"}) for p in payloads]
        assert [r.status for r in receipts] == ["appended"] * 5
        again = rec.append("decision", payloads[0], {"verdict": "approve"})
        assert (again.status, again.index) == ("duplicate", 0)
        other = rec.append("promotion", payloads[1], idempotency_key=payloads[0].hex())
        assert other.status == "conflict"
        size, root = rec.head()
        assert size == 5
        head = rec.ledger.latest_head()
        assert (head.size, head.root) == (5, root)
        head.verify()
        stamps = [e.hlc for e in rec.ledger.entries()]
        assert stamps == sorted(stamps) and len(set(stamps)) == 5
        proof = rec.ledger.inclusion_proof(3)
        verify_inclusion(rec.ledger.leaf_hash(3), 3, 5, proof.path, root)
        assert rec.ledger.verify().ok
