"""Repair fetches (`gd.node.services.repair_fetch`): several requests in flight, waiting
answers applied together, every gene verified and judged by the receiver's view, and a
bad answer the peer's fault with nothing of it applied."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest
import trio
from gd_testkit import key_from_int, make_gene

from gd.genome.gene import Gene
from gd.node.services.repair_fetch import FETCH_WINDOW, fetch_all
from gd.node.services.sync_state import RoundStats
from gd.node.store.sync_store import ApplyStats
from gd.protocol.errors import RemoteProtocolError
from gd.protocol.repair import pack_versions
from gd.protocol.sync import POLICY_REFUSAL, RejectedGene
from gd.protocol.sync_frames import MAX_FETCH_HASHES, FetchVersions

ALICE = key_from_int(41)


class Stream:
    """The responder's end, in memory: answers fetches in order, after a delay."""

    def __init__(self, held: dict[bytes, Gene], *, forge: int = -1) -> None:
        self.held = held
        self.pending: list[FetchVersions] = []
        self.max_in_flight = 0
        self.answered = 0
        self.forge = forge  # the answer with this index carries a version not asked for

    async def send(self, msg: Any) -> None:
        self.pending.append(msg)
        self.max_in_flight = max(self.max_in_flight, len(self.pending))

    async def receive(self) -> Any:
        await trio.sleep(0.002)
        fetch = self.pending.pop(0)
        genes = [self.held[h] for h in fetch.hashes]
        if self.answered == self.forge:
            genes[0] = make_gene(ALICE, name="never-asked")
        self.answered += 1
        return pack_versions(genes, zstd=False)


class View:
    def __init__(self) -> None:
        self.judged: list[str] = []
        self.finished: list[int] = []

    def accept(self, gene: Gene) -> bool:
        self.judged.append(gene.id)
        return not gene.name.startswith("refused")

    def finish_batch(self, refused: Sequence[RejectedGene] = ()) -> int:
        self.finished.append(len(self.judged))
        return len(self.judged)


class Store:
    def __init__(self) -> None:
        self.batches: list[int] = []
        self.genes: list[str] = []

    def apply_batch(self, sender: str, genes: Sequence[Gene], upto: int | None) -> ApplyStats:
        time.sleep(0.03)  # a commit: answers arrive meanwhile and wait for the next one
        self.batches.append(len(genes))
        self.genes += [g.id for g in genes]
        return ApplyStats(applied=len(genes))


class Counter:
    def labels(self, **kw: str) -> Counter:
        return self

    def inc(self, n: int = 1) -> None:
        pass


class Service:
    def __init__(self) -> None:
        self.view = View()
        self.store = Store()
        self.verify_pool = None
        self.on_received = None
        self.changed_by: list[str | None] = []
        self.log = self
        self.warnings: list[str] = []
        self.metrics = type("M", (), {"sync_genes": Counter(), "sync_conflicts": Counter(),
                                      "sync_rejected": Counter()})()

    def receiver_view(self, peer: str) -> View:
        return self.view

    def notify_local_change(self, source: str | None = None) -> None:
        self.changed_by.append(source)

    def warning(self, event: str, **kw: Any) -> None:
        self.warnings.append(kw["reason"])


def fetches_for(genes: list[Gene]) -> list[FetchVersions]:
    hashes = [g.version_hash for g in genes]
    return [FetchVersions(tuple(hashes[i:i + MAX_FETCH_HASHES]))
            for i in range(0, len(hashes), MAX_FETCH_HASHES)]


async def test_fetches_overlap_and_waiting_answers_are_applied_together():
    genes = [make_gene(ALICE, name=f"g-{i:04d}") for i in range(96)]
    genes += [make_gene(ALICE, name="refused-by-us")]
    small = [FetchVersions((g.version_hash,)) for g in genes]  # 97 one-gene answers
    svc, stream, stats = Service(), Stream({g.version_hash: g for g in genes}), RoundStats("p")
    trips = await fetch_all(svc, stream, "p", small, stats)  # type: ignore[arg-type]
    assert trips == len(small)
    assert stream.max_in_flight == FETCH_WINDOW
    assert sorted(svc.store.genes) == sorted(g.id for g in genes[:-1])
    assert len(svc.store.batches) < len(small) / 2  # answers waiting were grouped
    assert max(svc.store.batches) > 1
    # The view judged every verified gene, in order, and audited once per group.
    assert svc.view.judged == [g.id for g in genes]
    assert len(svc.view.finished) == len(svc.store.batches)
    assert stats.repaired == stats.genes_in == len(genes) - 1
    # Genes fetched from "p" are p's: the hint after them skips p (ADR 0061).
    assert svc.changed_by and set(svc.changed_by) == {"p"}
    assert stats.rejected == 1 and svc.warnings == [POLICY_REFUSAL]


async def test_an_answer_with_a_version_not_asked_for_ends_the_round():
    genes = [make_gene(ALICE, name=f"g-{i:04d}") for i in range(MAX_FETCH_HASHES * 6)]
    svc, stats = Service(), RoundStats("p")
    stream = Stream({g.version_hash: g for g in genes}, forge=2)
    with pytest.raises(RemoteProtocolError, match="not asked for"):
        await fetch_all(svc, stream, "p", fetches_for(genes), stats)  # type: ignore[arg-type]
    forged = {g.id for g in genes[2 * MAX_FETCH_HASHES:3 * MAX_FETCH_HASHES]}
    assert not forged & set(svc.store.genes)  # nothing of the bad answer was applied
    assert len(svc.store.genes) <= 2 * MAX_FETCH_HASHES
