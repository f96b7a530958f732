"""The forget scan (`sovereignty_forget._local_forgets`) decodes only records that can be
forgets (issue 15): after a cold sync it passes ~100k `received` records after each
batch, and decoding each one cost ~3 % of the receiving daemon's time. A record whose
bytes hold the kind field `forget` is decoded and judged on its body; a record that only
mentions the word elsewhere is neither decoded nor taken for one."""

from __future__ import annotations

from pathlib import Path

from gd.genome import canonical
from gd.node.services import sovereignty_forget
from gd.node.services.sovereignty_forget import _local_forgets
from gd.node.store.audit import AuditKind, AuditLog
from gd.node.store.cortex import Cortex


def test_only_local_forget_records_are_found_and_only_candidates_decoded(
        tmp_path: Path, monkeypatch) -> None:
    with Cortex.open(tmp_path / "c") as cortex:
        audit = AuditLog(cortex)
        for i in range(50):
            audit.append(AuditKind.GENE_RECEIVED, peer="12D3KooWpeer", gene_id=f"g{i}")
        audit.append(AuditKind.GENE_RECEIVED, peer="12D3KooWpeer", gene_id="forget-me-not",
                     rule="forget")  # mentions the word, is no forget
        audit.append(AuditKind.FORGET, gene_id="mine")  # ours: a tombstone to send
        audit.append(AuditKind.FORGET, peer="12D3KooWpeer", gene_id="theirs")  # honoured
        audit.append(AuditKind.GENE_RECEIVED, peer="12D3KooWpeer", gene_id="after")
        decoded: list[bytes] = []
        real = canonical.decode

        def counting(raw: bytes) -> object:
            decoded.append(raw)
            return real(raw)

        monkeypatch.setattr(sovereignty_forget.canonical, "decode", counting)
        with cortex.env.begin() as txn:
            assert _local_forgets(txn, audit, 0) == (["mine"], 54)
            assert _local_forgets(txn, audit, 52) == ([], 54)  # from an index on
            assert _local_forgets(txn, audit, 54) == ([], 54)  # nothing new
        # Both forgets, decoded in each of the two scans that passed them; no `received`
        # record was decoded, not even the one naming a rule "forget".
        assert len(decoded) == 3
