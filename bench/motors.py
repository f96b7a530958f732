"""Motors benchmark: numpy and torch side by side. Prints a table, writes
bench/results/motors.json.

* single gene, full evaluation (`evaluate`, one state, default request): p50 / p99 ms;
* gene·state evaluations per minute, 64 states, all four motors: the old path
  (`score_states` gene after gene) and the batched path (`gd.motors.batch.score_genes`,
  shared game, futures and perturbations; bit-identical per gene), same genes, same run;
* one M_M generation of 100k hypotheses × 64 states (fitness + selection + mutation).

Usage: python bench/motors.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from gd.genome import Codon, Gene, NodeKey
from gd.motors.backend import get_backend
from gd.motors.batch import score_genes
from gd.motors.condition import OP_CODES
from gd.motors.domains import get_domain
from gd.motors.evaluate import EvaluationRequest, evaluate, score_states
from gd.motors.meristic import Population, SearchConfig, evolve

OUT = Path(__file__).parent / "results" / "motors.json"


def _gene(key: NodeKey, thr: float, i: int = 0) -> Gene:
    return Gene.create(key, domain="turbofan", name=f"bench-{i}",
                       codons=[Codon.simple("s11", ">", thr)], action="inspect")


def single_latency(backend: str, reps: int) -> dict[str, float]:
    key = NodeKey.from_seed(b"b" * 32)
    pack = get_domain("turbofan")
    states = pack.demo_states(reps, 1)
    gene = _gene(key, 47.2)
    req = EvaluationRequest(backend=backend)
    evaluate(gene, states[:1], seed=0, request=req)
    times = []
    for i in range(reps):
        t = time.perf_counter()
        evaluate(gene, states[i:i + 1], seed=i, request=req)
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def batched(backend: str, genes: int, states: int) -> dict[str, float]:
    key = NodeKey.from_seed(b"b" * 32)
    pack = get_domain("turbofan")
    X = pack.matrix(pack.demo_states(states, 2))
    gs = [_gene(key, 47.0 + 0.01 * i, i) for i in range(genes)]
    req = EvaluationRequest(backend=backend, monte_carlo_n=256, epsilon=0.05, cap=1024)
    score_states(gs[0], X, seed=0, request=req)
    t = time.perf_counter()
    for i, g in enumerate(gs):
        score_states(g, X, seed=i, request=req)
    dt = time.perf_counter() - t
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        score_genes(gs, X, seed=0, request=req)
        runs.append(time.perf_counter() - t)
    db = float(np.median(runs))
    return {"gene_state_evals_per_min": genes * states / dt * 60, "seconds": dt,
            "batched_gene_state_evals_per_min": genes * states / db * 60,
            "batched_seconds": db, "batched_speedup": dt / db}


def generation(backend: str, population: int, states: int) -> dict[str, float]:
    bk = get_backend(backend)
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((states, 26))
    value = rng.random((states, 3))
    seeds = Population(np.array([[15, 0, 0, 0]]), np.array([[OP_CODES[">"], 0, 0, 0]]),
                       np.array([[0.3, 0, 0, 0]]), np.array([[True, False, False, False]]),
                       np.array([1]))
    empty = seeds.take(np.array([], dtype=int))
    cfg = SearchConfig(population=population, generations=1, slots=4)
    evolve(bk, Z, np.ones(26), value, seeds, empty, 0,
           SearchConfig(population=1000, generations=1, slots=4), seed=0)
    times = []
    for rep in range(3):
        t = time.perf_counter()
        evolve(bk, Z, np.ones(26), value, seeds, empty, 0, cfg, seed=rep)
        times.append(time.perf_counter() - t)
    return {"generation_s": float(np.median(times))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args()
    reps, genes = (30, 10) if args.quick else (200, 60)
    results: dict[str, dict[str, float]] = {}
    for backend in ("numpy", "torch"):
        try:
            get_backend(backend)
        except ValueError:
            continue
        r = {}
        r.update(single_latency(backend, reps))
        r.update(batched(backend, genes, 64))
        r.update(generation(backend, 100_000, 64))
        results[backend] = r
    base = results["numpy"]
    print(f"{'metric':<34}" + "".join(f"{b:>14}" for b in results) + f"{'torch/numpy':>14}")
    for metric in ("p50_ms", "p99_ms", "gene_state_evals_per_min",
                   "batched_gene_state_evals_per_min", "batched_speedup", "generation_s"):
        row = f"{metric:<34}" + "".join(f"{results[b][metric]:>14.2f}" for b in results)
        if "torch" in results:
            row += f"{results['torch'][metric] / base[metric]:>14.2f}"
        print(row)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "machine": platform.platform(), "processor": platform.processor(),
        "goals": {"p50_ms": 10, "p99_ms": 500, "batched_gene_state_evals_per_min": 1_000_000,
                  "generation_s": 1.0},
        "results": results,
        "ratios_vs_numpy": {b: {k: results[b][k] / base[k] for k in base} for b in results},
    }, indent=2, sort_keys=True) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
