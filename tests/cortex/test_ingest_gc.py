"""The per-gene loops of ingest and signing run with the young generation's collections
held off (`gd.node.gc_tuning.batch_gc`, issue 15) and give the thresholds back after,
also when a gene is refused mid-batch."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import pytest

from gd.genome.gene import Codon, Gene
from gd.genome.identity import NodeKey
from gd.node.app import sign_worker
from gd.node.gc_tuning import BATCH_GEN0_THRESHOLD
from gd.node.store.cortex import Cortex
from gd.node.store.cortex_genes import CortexGenes

KEY = NodeKey.from_seed(bytes(range(32)))


def gene(i: int) -> Gene:
    return Gene.create(KEY, domain="turbofan", name=f"rule-{i}",
                       codons=[Codon.simple("s11", ">", 40.0 + i)], action="inspect",
                       purpose="gc", hlc=1000 + i)


def test_ingest_loop_holds_young_collections_off_and_restores(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = gc.get_threshold()
    seen: list[int] = []
    real = CortexGenes._put_gene

    def spy(self: CortexGenes, *args: Any, **kwargs: Any) -> int | None:
        seen.append(gc.get_threshold()[0])  # the general path, inside the batch loop
        return real(self, *args, **kwargs)

    with Cortex.open(tmp_path / "c", map_size=1 << 26) as cortex:
        first = [gene(i) for i in range(10)]
        assert cortex.put_genes(first) == list(range(1, 11))
        monkeypatch.setattr(CortexGenes, "_put_gene", spy)
        again = [first[0].edited(KEY, hlc=5000, purpose="v2"), gene(10)]
        assert cortex.put_genes(again) == [11, 12]
    assert seen == [max(BATCH_GEN0_THRESHOLD, before[0])]
    assert gc.get_threshold() == before


def test_sign_lines_holds_young_collections_off_and_restores(
        monkeypatch: pytest.MonkeyPatch) -> None:
    before = gc.get_threshold()
    seen: list[int] = []
    real = Gene.create

    def spy(*args: Any, **kwargs: Any) -> Gene:
        seen.append(gc.get_threshold()[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(sign_worker.Gene, "create", spy)
    rows = [{"domain": "turbofan", "name": f"r{i}", "action": "inspect",
             "codons": [{"feature": "s11", "op": ">", "threshold": float(i)}]}
            for i in range(3)]
    rows[1]["action"] = "no such action"  # refused mid-chunk
    out = sign_worker.sign_lines(KEY, [(i + 1, json.dumps(r).encode(), 7 + i)
                                       for i, r in enumerate(rows)])
    assert [type(r).__name__ for r in out] == ["SignedLine", "tuple", "SignedLine"]
    assert seen and set(seen) == {max(BATCH_GEN0_THRESHOLD, before[0])}
    assert gc.get_threshold() == before
