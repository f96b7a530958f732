"""The real async sync service between two in-process nodes, on trio's mock clock, a
simulated gate and faulty in-memory streams, with crashes (cancel + reopen the Cortex);
one seed gives one run, bit for bit (see service_sim.py and docs/simulation.md).

`SERVICE_SEEDS=N` runs N seeds (default 20: a few seconds).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import service_sim  # tests/sim is on pytest's pythonpath

from gd.genome.gene import Gene

SEEDS = int(os.environ.get("SERVICE_SEEDS", 20))


@pytest.mark.parametrize("seed", range(SEEDS))
def test_the_sync_service_keeps_its_invariants_under_faults(seed: int, tmp_path: Path
                                                            ) -> None:
    try:
        service_sim.run(seed, tmp_path)
    except service_sim.ServiceSimFailure as exc:
        pytest.fail(str(exc), pytrace=False)


def test_a_seed_replays_bit_for_bit(tmp_path: Path) -> None:
    first = service_sim.run(5, tmp_path / "a")
    again = service_sim.run(5, tmp_path / "b")
    other = service_sim.run(6, tmp_path / "c")
    assert first.trace == again.trace and first.trace_hash == again.trace_hash
    assert other.trace_hash != first.trace_hash


def test_the_runs_cut_streams_delay_and_crash(tmp_path: Path) -> None:
    kinds: Counter[str] = Counter()
    for seed in range(8):
        result = service_sim.run(seed, tmp_path / str(seed))
        kinds.update(result.kinds)
        kinds.update(line.split()[1] + " " + line.split()[2] for line in result.trace
                     if " fault " in line)
    for kind in ("fault reset", "fault delay", "crash", "crash-mid-round", "restart",
                 "round", "write", "settled"):
        assert kinds[kind] > 0, kind


class LosingNet(service_sim.Net):
    """A receiver whose store drops the last gene of every batch yet keeps the
    checkpoint (and never reconciles, which would hide the loss)."""

    def open(self, node: Any) -> None:
        super().open(node)
        store = node.svc.store
        apply = store.apply_batches  # apply_batch and the puller's group commit

        def lossy(batches: Sequence[tuple[str, Sequence[Gene], int | None]]) -> Any:
            return apply([(sender, list(genes)[:-1], upto)
                          for sender, genes, upto in batches])

        store.apply_batches = lossy
        self.reconcile_rate = 0.0


class CorruptingNet(service_sim.Net):
    """A network that flips a byte of a frame now and then (the peers stay honest)."""

    def __init__(self, seed: int, root: Path) -> None:
        super().__init__(seed, root)
        self.corrupt_rate = 0.2


def test_a_receiver_that_loses_genes_is_caught(tmp_path: Path) -> None:
    with pytest.raises(service_sim.ServiceSimFailure, match="not converged"):
        for seed in range(5):
            service_sim.run(seed, tmp_path / str(seed), net_class=LosingNet)


def test_a_peer_scored_for_the_network_s_damage_is_reported(tmp_path: Path) -> None:
    """The honest-peer check has teeth: garbage on the wire is scored, and that fails."""
    with pytest.raises(service_sim.ServiceSimFailure, match="honest"):
        for seed in range(5):
            service_sim.run(seed, tmp_path / str(seed), net_class=CorruptingNet)
