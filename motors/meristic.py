"""M_M, Meristic: when a gene is vetoed, grow better ones; and score scale coherence.

**Search** (`gd.motors.variants`): an evolutionary search over gene variants held as
arrays, checkpointed every generation through a `gd.motors.checkpoints.CheckpointStore`
so that a crash or a Ctrl-C resumes exactly. Its names are re-exported here, so
`meristic.SearchConfig`, `meristic.evolve` and friends keep working.

**Fitness** is pluggable (`register_fitness`): a function of the multiverse that returns
a value table V (states × actions); the search scores a variant by the mean of V at the
action its policy takes. The multiverse is the one M_C sampled, so every variant is
judged on the same futures (common random numbers).

**Scale coherence** (M_M's score in CP): the gene's policy is replayed on observations
perturbed at each scale of SCALES; perf_k is the share of acceptable futures at scale k;
coherence = min_k perf_k / max_k perf_k (1: it holds equally from coarse to fine).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gd.motors.backend import Array, Backend
from gd.motors.chaotic import Multiverse
from gd.motors.checkpoints import (
    CHECKPOINT_DB,
    CHECKPOINT_FORMAT,
    MAX_CHECKPOINT_BYTES,
    CheckpointStore,
    MemoryCheckpoints,
)
from gd.motors.condition import CompiledGene, fires
from gd.motors.domains.pack import DomainPack
from gd.motors.errors import MotorInputError
from gd.motors.variants import (
    COMPLEXITY,
    MAX_GENERATIONS,
    MAX_POPULATION,
    SCALES,
    ColumnSpace,
    EvolveResult,
    Population,
    SearchConfig,
    SearchResult,
    Variant,
    encode_genes,
    evolve,
    population_fitness,
    variants_from,
    variants_to_genes,
)

__all__ = [
    "CHECKPOINT_DB", "CHECKPOINT_FORMAT", "COHERENCE_SAMPLES", "COMPLEXITY", "COST_WEIGHT",
    "MAX_CHECKPOINT_BYTES", "MAX_GENERATIONS", "MAX_POPULATION", "SCALES", "VERSION",
    "CheckpointStore", "ColumnSpace", "EvolveResult", "MemoryCheckpoints", "MeristicOutput",
    "Population", "SearchConfig", "SearchResult", "Variant", "coherence_from",
    "coherence_noise", "encode_genes", "evolve", "fitness_fn", "population_fitness",
    "register_fitness", "scale_coherence", "variants_from", "variants_to_genes",
]

VERSION = "1"
COHERENCE_SAMPLES = 16             # perturbed observations per scale and state
COST_WEIGHT = 0.5                  # weight of expected loss in the motor_blend fitness


# -- fitness registry --------------------------------------------------------------
FitnessFn = Callable[[Multiverse, np.ndarray, DomainPack], np.ndarray]
_FITNESS: dict[str, FitnessFn] = {}


def register_fitness(name: str) -> Callable[[FitnessFn], FitnessFn]:
    def wrap(fn: FitnessFn) -> FitnessFn:
        _FITNESS[name] = fn
        return fn
    return wrap


def fitness_fn(name: str) -> FitnessFn:
    try:
        return _FITNESS[name]
    except KeyError:
        raise MotorInputError(f"unknown fitness {name!r}; known: {', '.join(sorted(_FITNESS))}"
                              ) from None


@register_fitness("motor_blend")
def _motor_blend(mv: Multiverse, nash_scores: np.ndarray, pack: DomainPack) -> np.ndarray:
    """Acceptable share × Nash score, less the normalised expected loss."""
    blend: np.ndarray = (mv.acceptable * nash_scores
                         - COST_WEIGHT * mv.loss_mean / pack.config.loss_scale)
    return blend


@register_fitness("expected_cost")
def _expected_cost(mv: Multiverse, nash_scores: np.ndarray, pack: DomainPack) -> np.ndarray:
    return -mv.loss_mean / pack.config.loss_scale


# -- scale coherence ---------------------------------------------------------------
@dataclass(frozen=True)
class MeristicOutput:
    score: np.ndarray          # (states,)
    veto: np.ndarray
    perf: np.ndarray           # (scales, states)


def scale_coherence(bk: Backend, pack: DomainPack, cg: CompiledGene, X: Array,
                    mv: Multiverse, rng: np.random.Generator) -> MeristicOutput:
    return coherence_from(bk, pack, cg, X, mv, coherence_noise(bk, pack, X, rng))


def coherence_noise(bk: Backend, pack: DomainPack, X: Array,
                    rng: np.random.Generator) -> list[Array]:
    """One perturbation block per scale (gene-independent: shared by a batch)."""
    n, f = X.shape
    return [bk.normal(rng, (COHERENCE_SAMPLES, n, f)) * bk.asarray(pack.scale * s)
            for s in SCALES]


def coherence_from(bk: Backend, pack: DomainPack, cg: CompiledGene, X: Array,
                   mv: Multiverse, noises: list[Array]) -> MeristicOutput:
    n = X.shape[0]
    m = len(pack.actions)
    acc = bk.asarray(mv.acceptable.reshape(-1))
    rows = bk.arange(n) * m
    perf = []
    for noise in noises:
        total = bk.zeros((n,))
        for i in range(COHERENCE_SAMPLES):
            on = bk.toint(fires(bk, cg, X + noise[i]))
            act = cg.default_action + on * (cg.action - cg.default_action)
            total = total + bk.take(acc, rows + act, axis=0)
        perf.append(bk.to_numpy(total / COHERENCE_SAMPLES))
    p = np.stack(perf)
    hi, lo = p.max(axis=0), p.min(axis=0)
    score = np.where(hi > 0, lo / np.where(hi > 0, hi, 1.0), 0.0)
    return MeristicOutput(score=score, veto=np.zeros(n, dtype=bool), perf=p)


