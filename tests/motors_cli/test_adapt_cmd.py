"""`gd-node adapt`: winners stored as pending variants with lineage and scores; a
cancelled search (cancel callback or Ctrl-C) resumes from its checkpoint and ends as an
uninterrupted one would."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gd.genome import Codon
from gd.motors import holdout, meristic
from gd.motors.evaluate import EvaluationRequest
from gd.node.app import decisions as dec
from gd.node.home import Home
from gd.node.local import open_local
from tests.motors_cli.conftest import run, run_json

GENE = "inspect-hot-hpc"
SMALL = ("--population", "64", "--generations", "6")


def _holds(codons: list[dict], values: dict[str, float]) -> bool:
    return all(Codon.from_plain(c).holds(values) for c in codons)


@pytest.fixture
def evaluated(home: Path, gene_id: Callable[[str], str], turbofan_csv: Path) -> str:
    gid = gene_id(GENE)
    run("evaluate", gid, "--states", turbofan_csv, "--seed", "4", "--home", home)
    return gid


def test_adapt_stores_pending_variants_with_lineage_and_scores(home: Path,
                                                               evaluated: str) -> None:
    out = run_json("adapt", evaluated, *SMALL, "--home", home)
    assert out["generations_run"] == 6 and out["resumed_from"] == 0 and out["states"] == 12
    assert out["history"] == sorted(out["history"])  # the retreat pool never loses its best
    assert out["history"][-1] >= out["seed_fitness"]
    assert len(out["variants"]) <= 5 and out["compared_on_held_out"]
    for v in out["variants"]:   # proposed only if better on states the search never saw
        assert v["held_out"]["cp_gain"] > 0 and v["held_out"]["cost_saving"] > 0
    assert {c["improves"] for c in out["compared_on_held_out"]} >= {
        True} if out["variants"] else True
    pending = {g["id"]: g for g in run_json("genes", "list", "--status", "adaptation_pending",
                                            "--home", home)}
    for v in out["variants"]:
        gene = pending[v["id"]]
        assert gene["parents"] == [evaluated] and gene["name"].startswith(f"{GENE}~m")
        if v["decision"] is None:
            assert v["cp"] is None and v["scored_on"] == 0
            continue
        assert 0.0 <= v["cp"] <= 1.0 and 1 <= v["scored_on"] <= 12
        decision = run_json("decisions", "show", v["decision"], "--home", home)
        assert decision["gene_id"] == v["id"] and len(decision["states"]) == v["scored_on"]
        codons = gene["codons"]
        assert all(_holds(codons, s["values"]) for s in decision["states"])
    fitness = [v["fitness"] for v in out["variants"]]
    assert fitness == sorted(fitness, reverse=True)


def test_running_again_finds_the_winners_already_stored(home: Path, evaluated: str) -> None:
    first = run_json("adapt", evaluated, *SMALL, "--home", home)
    again = run_json("adapt", evaluated, *SMALL, "--home", home)
    assert again["variants"] == [] and again["resumed_from"] == 0
    assert sorted(again["existing"]) == sorted(v["id"] for v in first["variants"])


def test_cancelled_search_resumes_and_ends_as_an_uninterrupted_one(home: Path,
                                                                   evaluated: str) -> None:
    done: list[int] = []
    with open_local(Home.resolve(home)) as node:
        gene = node.cortex.require_gene(evaluated)
        states = dec.history_states(node.cortex, gene)
        related = [g for g, _ in dec.related_genes(node.cortex, gene)]
        assert related, "the demo gives inspect-hot-hpc synapses"
        first = dec.adapt_gene(node, evaluated, population=64, generations=6,
                               progress=lambda g, best: done.append(g),
                               cancel=lambda: len(done) >= 2)
        assert first.cancelled and first.genes == () and first.result.generations_run == 2
        assert not list(node.cortex.genes(status="adaptation_pending"))
        second = dec.adapt_gene(node, evaluated, population=64, generations=6)
        assert second.result.resumed_from == 2 and not second.cancelled
        reference = holdout.adapt_held_out(
            gene, states, seed=dec.default_seed(gene),
            search=meristic.SearchConfig(population=64, generations=6),
            related=related, evidence=dec.evidence_for(node.cortex, gene),
            request=EvaluationRequest())
    assert second.result.history == reference.search.history
    assert [c.to_plain() for c in reference.compared] == list(second.compared)
    assert [(c.variant.codons, c.variant.action, c.variant.fitness)
            for c in reference.winners if not dec._same_rule(gene, c.variant)] == [
        (g.codons, g.action, second.fitness[g.id]) for g in second.genes]


def test_ctrl_c_cancels_cleanly_and_the_rerun_resumes(home: Path, evaluated: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    real = dec.adapt_gene

    def interrupted(*args: Any, **kwargs: Any) -> dec.AdaptOutcome:
        inner = kwargs["progress"]

        def progress(generation: int, best: float) -> None:
            inner(generation, best)
            if generation == 3:
                os.kill(os.getpid(), signal.SIGINT)

        return real(*args, **{**kwargs, "progress": progress})

    monkeypatch.setattr(dec, "adapt_gene", interrupted)
    result = run("adapt", evaluated, *SMALL, "--home", home, ok=False)
    assert result.exit_code == 130 and "run the same command again to resume" in result.output
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.setattr(dec, "adapt_gene", real)
    out = run_json("adapt", evaluated, *SMALL, "--home", home)
    assert out["resumed_from"] == 3 and out["generations_run"] == 6 and out["compared_on_held_out"]


def test_adapt_needs_history_or_states(home: Path, gene_id: Callable[[str], str],
                                       turbofan_csv: Path) -> None:
    gid = gene_id(GENE)
    result = run("adapt", gid, *SMALL, "--home", home, ok=False)
    assert result.exit_code == 1 and "no history to adapt on" in result.output
    out = run_json("adapt", gid, *SMALL, "--states", turbofan_csv, "--seed", "1",
                   "--home", home)
    assert out["seed"] == 1 and out["states"] == 12


def test_adapt_refuses_rejected_genes_and_bad_options(home: Path, evaluated: str) -> None:
    for args in (["--population", "1"], ["--generations", "0"], ["--top", "99"]):
        result = run("adapt", evaluated, *args, "--home", home, ok=False)
        assert result.exit_code == 2, args
    unknown = run("adapt", "0" * 32, "--home", home, ok=False)
    assert unknown.exit_code == 1 and "no gene" in unknown.output
    with open_local(Home.resolve(home)) as node:
        node.cortex.set_status(evaluated, "rejected")
    refused = run("adapt", evaluated, *SMALL, "--home", home, ok=False)
    assert refused.exit_code == 1 and "is rejected" in refused.output
