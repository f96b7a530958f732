"""M_M's search space and evolutionary loop: gene variants as arrays.

A population of gene variants lives as arrays: for each variant and codon slot a column
(a domain feature, or the weighted sum of a multi-term codon), an operator, a threshold
and an active flag, plus one action. Firing on every state is one gather and compare per
slot, so 100k variants × 64 states is a handful of array operations.

Each generation: evaluate fitness → keep the elite → pick parents by tournament →
mutate: thresholds at several scales (the level window slides from coarse to fine over
the generations: the fractal synthesis), operator flips, codon insertion and deletion,
action changes, uniform crossover with donors (the retreat pool and related genes).

A variant's fitness is the mean over states of a value table V (states × actions, from
`gd.motors.meristic`'s fitness registry) at the action its policy takes (its action
where it fires, the domain's default elsewhere), minus COMPLEXITY per active codon.

The retreat pool holds the best distinct variants seen so far, ranked by fitness (ties
by content), never sampled at random; the search's output is its head. With a
`CheckpointStore` (`gd.motors.checkpoints`) every generation is saved (population, pool,
RNG state), so a search that crashes or is cancelled resumes where it stopped and ends
exactly as an uninterrupted one would. Split from meristic.py (scale coherence and the
fitness registry stay there): the search is its own idea, and the store behind its
checkpoints is the node's business, not the motors'.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gd.genome import Codon, Gene, GeneStatus, NodeKey, canonical
from gd.motors.backend import Array, Backend
from gd.motors.checkpoints import CheckpointStore, encode_checkpoint, load_state
from gd.motors.condition import OP_CODES, OP_NAMES, OP_TABLE
from gd.motors.domains.pack import DomainPack
from gd.motors.errors import CheckpointError, MotorInputError

SCALES = (1.0, 0.3, 0.1, 0.03)     # perturbation / mutation scales, coarse → fine
COMPLEXITY = 1e-3                  # fitness cost per active codon (prefer simple genes)
P_OP_FLIP = 0.05
P_INSERT = 0.05
P_DELETE = 0.05
P_ACTION = 0.05
P_CROSSOVER = 0.2
MAX_POPULATION = 2_000_000
MAX_GENERATIONS = 10_000


# -- population --------------------------------------------------------------------
@dataclass
class Population:
    col: np.ndarray      # (P, C) int64
    op: np.ndarray       # (P, C) int64
    thr: np.ndarray      # (P, C) float64
    active: np.ndarray   # (P, C) bool
    action: np.ndarray   # (P,) int64

    def __len__(self) -> int:
        return len(self.action)

    def take(self, idx: np.ndarray) -> Population:
        return Population(self.col[idx], self.op[idx], self.thr[idx], self.active[idx],
                          self.action[idx])

    @staticmethod
    def concat(parts: Sequence[Population]) -> Population:
        return Population(*(np.concatenate([getattr(p, f) for p in parts])
                            for f in ("col", "op", "thr", "active", "action")))

    def keys(self) -> list[bytes]:
        """Content key per variant (inactive slots blanked) for dedup and tie-breaks."""
        a = self.active
        parts = np.concatenate([np.where(a, self.col, -1), np.where(a, self.op, -1),
                                self.action[:, None]], axis=1).astype(np.int64)
        thr = np.where(a, self.thr, 0.0)
        return [parts[i].tobytes() + thr[i].tobytes() for i in range(len(self))]

    def to_plain(self) -> dict[str, Any]:
        return {"shape": list(self.col.shape), "col": self.col.astype(np.int32).tobytes(),
                "op": self.op.astype(np.int8).tobytes(), "thr": self.thr.tobytes(),
                "active": self.active.astype(np.uint8).tobytes(),
                "action": self.action.astype(np.int16).tobytes()}

    @classmethod
    def from_plain(cls, d: dict[str, Any]) -> Population:
        p, c = d["shape"]
        return cls(np.frombuffer(d["col"], np.int32).reshape(p, c).astype(np.int64),
                   np.frombuffer(d["op"], np.int8).reshape(p, c).astype(np.int64),
                   np.frombuffer(d["thr"], np.float64).reshape(p, c).copy(),
                   np.frombuffer(d["active"], np.uint8).reshape(p, c).astype(bool),
                   np.frombuffer(d["action"], np.int16).astype(np.int64))


@dataclass(frozen=True)
class ColumnSpace:
    """The columns codons can test: every domain feature, then each distinct weighted sum
    used by a multi-term codon of the seed or related genes."""

    weights: np.ndarray     # (Q, F)
    scale: np.ndarray       # (Q,)
    terms: tuple[tuple[tuple[str, float], ...], ...]

    @classmethod
    def build(cls, pack: DomainPack, genes: Sequence[Gene]) -> ColumnSpace:
        f = len(pack.features)
        rows = [np.eye(f)[i] for i in range(f)]
        terms: list[tuple[tuple[str, float], ...]] = [((name, 1.0),) for name in pack.features]
        for gene in genes:
            for codon in gene.codons:
                if codon.feature is None and codon.terms not in terms:
                    w = np.zeros(f)
                    for name, weight in codon.terms:
                        w[pack.feature_index(name)] = weight
                    rows.append(w)
                    terms.append(codon.terms)
        W = np.stack(rows)
        return cls(W, np.maximum(np.sqrt(((W * pack.scale) ** 2).sum(axis=1)), 1e-12),
                   tuple(terms))

    def column_of(self, codon: Codon) -> int:
        return self.terms.index(codon.terms)


def encode_genes(genes: Sequence[Gene], space: ColumnSpace, pack: DomainPack,
                 slots: int) -> Population:
    p = len(genes)
    pop = Population(np.zeros((p, slots), np.int64), np.zeros((p, slots), np.int64),
                     np.zeros((p, slots)), np.zeros((p, slots), bool), np.zeros(p, np.int64))
    for i, gene in enumerate(genes):
        if len(gene.codons) > slots:
            raise MotorInputError(f"gene {gene.id} has {len(gene.codons)} codons, the search "
                                  f"has {slots} slots")
        for c, codon in enumerate(gene.codons):
            pop.col[i, c] = space.column_of(codon)
            pop.op[i, c] = OP_CODES[codon.op]
            pop.thr[i, c] = codon.threshold
            pop.active[i, c] = True
        pop.action[i] = pack.action_index(gene.action)
    return pop


def population_fitness(bk: Backend, pop: Population, Zt: Array, value: Array,
                       default_action: int) -> np.ndarray:
    """Mean value of each variant's policy over the states, less its complexity.
    `Zt` is (columns, states); `value` (states, actions) flattened row-major."""
    p, c = pop.col.shape
    s = Zt.shape[1]
    m = value.shape[0] // s
    fire = bk.bool_full((p, s), True)
    table = bk.asbool(OP_TABLE)
    for j in range(c):
        v = bk.take(Zt, bk.asint(pop.col[:, j]), axis=0)                 # (P, S)
        d = v - bk.expand(bk.asarray(pop.thr[:, j]), 1)
        tab = bk.take(table, bk.asint(pop.op[:, j]), axis=0)             # (P, 3)
        ok = (((d > 0) & tab[:, 0:1]) | ((d == 0) & tab[:, 1:2])
              | ((d < 0) & tab[:, 2:3]))
        fire = fire & (ok | ~bk.expand(bk.asbool(pop.active[:, j]), 1))
    act = default_action + bk.toint(fire) * bk.expand(
        bk.asint(pop.action - default_action), 1)
    idx = bk.expand(bk.arange(s) * m, 0) + act
    vals = bk.take(value, idx, axis=0)
    fit = bk.mean(vals, axis=1) - COMPLEXITY * bk.asarray(pop.active.sum(axis=1))
    return bk.to_numpy(fit)


# -- search ------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchConfig:
    population: int = 4096
    generations: int = 20
    elite_fraction: float = 0.1
    retreat_size: int = 16
    slots: int = 4
    fitness: str = ""          # empty: the domain's configured fitness
    top: int = 5

    def __post_init__(self) -> None:
        if not 2 <= self.population <= MAX_POPULATION:
            raise MotorInputError(f"population must be in [2, {MAX_POPULATION}]")
        if not 1 <= self.generations <= MAX_GENERATIONS:
            raise MotorInputError(f"generations must be in [1, {MAX_GENERATIONS}]")
        if not 0.0 < self.elite_fraction < 1.0:
            raise MotorInputError("elite_fraction must be in (0, 1)")
        if not 1 <= self.top <= self.retreat_size:
            raise MotorInputError("top must be in [1, retreat_size]")
        if not 1 <= self.slots <= 64:
            raise MotorInputError("slots must be in [1, 64]")

    def to_plain(self) -> dict[str, Any]:
        return {"elite_fraction": self.elite_fraction, "fitness": self.fitness,
                "generations": self.generations, "population": self.population,
                "retreat_size": self.retreat_size, "slots": self.slots, "top": self.top}


@dataclass(frozen=True)
class EvolveResult:
    pool: Population               # retreat pool, best first
    pool_fitness: np.ndarray
    history: tuple[float, ...]     # best fitness after each generation
    seed_fitness: float
    generations_run: int           # generations completed in total
    resumed_from: int              # generation a checkpoint resumed at (0: fresh)
    cancelled: bool



def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    st = rng.bit_generator.state
    return {"inc": str(st["state"]["inc"]), "state": str(st["state"]["state"]),
            "has_uint32": st["has_uint32"], "uinteger": st["uinteger"]}


def _rng_from(d: dict[str, Any]) -> np.random.Generator:
    bitgen = np.random.PCG64()
    bitgen.state = {"bit_generator": "PCG64",
                    "state": {"state": int(d["state"]), "inc": int(d["inc"])},
                    "has_uint32": d["has_uint32"], "uinteger": d["uinteger"]}
    return np.random.Generator(bitgen)


def evolve(bk: Backend, Z: np.ndarray, col_scale: np.ndarray, value: np.ndarray,
           seeds: Population, donors: Population, default_action: int, config: SearchConfig,
           seed: int, *, checkpoints: CheckpointStore | None = None, search_id: str = "",
           fingerprint: str = "", cancel: Callable[[], bool] | None = None,
           progress: Callable[[int, float], None] | None = None) -> EvolveResult:
    """The evolutionary loop on plain arrays. `Z` (states × columns) holds column values,
    `value` (states × actions) the fitness table, `seeds` the starting variants (row 0
    is the gene being adapted), `donors` the crossover partners (related genes)."""
    m = value.shape[1]
    if len(seeds) == 0 or seeds.col.shape[1] != config.slots:
        raise MotorInputError("seed population must be non-empty with `slots` columns")
    Zt = bk.asarray(Z.T)
    flat_value = bk.asarray(value.reshape(-1))

    def fitness(pop: Population) -> np.ndarray:
        return population_fitness(bk, pop, Zt, flat_value, default_action)

    seed_fitness = float(fitness(seeds.take(np.array([0])))[0])
    state = load_state(checkpoints, search_id) if checkpoints is not None and search_id else None
    if state is not None:
        if state.get("fingerprint") != fingerprint:
            raise CheckpointError(f"checkpoint {search_id} belongs to a different search")
        pop = Population.from_plain(state["pop"])
        pool = Population.from_plain(state["pool"])
        pool_fit = np.frombuffer(state["pool_fit"], np.float64).copy()
        rng = _rng_from(state["rng"])
        start = int(state["generation"])
        history = list(state["history"])
    else:
        rng = np.random.default_rng(np.random.SeedSequence(seed))
        reps = -(-config.population // len(seeds))
        pop = seeds.take(np.tile(np.arange(len(seeds)), reps)[: config.population])
        _mutate(pop, rng, Z, col_scale, m, donors, level=0, keep=len(seeds))
        pool, pool_fit = seeds.take(np.array([0])), np.array([seed_fitness])
        start, history = 0, []
    resumed_from = start
    elite_n = max(1, int(config.population * config.elite_fraction))
    g = start
    cancelled = False
    while g < config.generations:
        if cancel is not None and cancel():
            cancelled = True
            break
        fit = fitness(pop)
        order = np.argsort(-fit, kind="stable")
        pool, pool_fit = _merge_pool(pool, pool_fit, pop.take(order[: 4 * config.retreat_size]),
                                     fit[order[: 4 * config.retreat_size]], config.retreat_size)
        history.append(float(pool_fit[0]))
        elite = pop.take(order[:elite_n])
        a, b = rng.integers(len(pop), size=(2, config.population - elite_n))
        parents = np.where(fit[a] >= fit[b], a, b)
        children = pop.take(parents)
        level = min(len(SCALES) - 1, (g * len(SCALES)) // config.generations)
        _mutate(children, rng, Z, col_scale, m, Population.concat([pool, donors]),
                level=level, keep=0)
        pop = Population.concat([elite, children])
        g += 1
        if checkpoints is not None and search_id:
            checkpoints.save(search_id, encode_checkpoint({
                "fingerprint": fingerprint, "generation": g,
                "history": history, "pool": pool.to_plain(), "pool_fit": pool_fit.tobytes(),
                "pop": pop.to_plain(), "rng": _rng_state(rng)}))
        if progress is not None:
            progress(g, history[-1])
    return EvolveResult(pool, pool_fit, tuple(history), seed_fitness, g, resumed_from,
                        cancelled)


def _merge_pool(pool: Population, pool_fit: np.ndarray, cand: Population,
                cand_fit: np.ndarray, size: int) -> tuple[Population, np.ndarray]:
    allp = Population.concat([pool, cand])
    fit = np.concatenate([pool_fit, cand_fit])
    keys = allp.keys()
    order = sorted(range(len(keys)), key=lambda i: (-fit[i], keys[i]))
    seen: set[bytes] = set()
    keep = []
    for i in order:
        if keys[i] not in seen:
            seen.add(keys[i])
            keep.append(i)
        if len(keep) == size:
            break
    idx = np.array(keep)
    return allp.take(idx), fit[idx]


def _mutate(pop: Population, rng: np.random.Generator, Z: np.ndarray, col_scale: np.ndarray,
            n_actions: int, donors: Population, level: int, keep: int) -> None:
    """Mutate rows `keep:` in place (multi-scale thresholds, structure, crossover)."""
    p, c = pop.col.shape
    rows = np.arange(keep, p)
    k = len(rows)
    if k == 0:
        return
    # Threshold at one of two adjacent scales around the current level.
    lv = np.minimum(level + rng.integers(0, 2, size=k), len(SCALES) - 1)
    sigma = np.asarray(SCALES)[lv]
    slot = np.argmax(np.where(pop.active[rows], rng.random((k, c)), -1.0), axis=1)
    step = rng.standard_normal(k) * sigma * col_scale[pop.col[rows, slot]]
    pop.thr[rows, slot] += step
    flip = (rng.random(k) < P_OP_FLIP) & (pop.op[rows, slot] < 4)
    pop.op[rows[flip], slot[flip]] ^= 2
    ins = rng.random(k) < P_INSERT
    free = np.argmax(~pop.active[rows], axis=1)
    has_free = ~pop.active[rows, free]
    new_col = rng.integers(Z.shape[1], size=k)
    new_op = rng.integers(4, size=k)
    new_thr = Z[rng.integers(Z.shape[0], size=k), new_col]
    do = ins & has_free
    r, f = rows[do], free[do]
    pop.active[r, f] = True
    pop.col[r, f], pop.op[r, f], pop.thr[r, f] = new_col[do], new_op[do], new_thr[do]
    dele = (rng.random(k) < P_DELETE) & (pop.active[rows].sum(axis=1) > 1)
    victim = np.argmax(np.where(pop.active[rows], rng.random((k, c)), -1.0), axis=1)
    pop.active[rows[dele], victim[dele]] = False
    act = rng.random(k) < P_ACTION
    new_action = rng.integers(n_actions, size=k)
    pop.action[rows[act]] = new_action[act]
    cross = rng.random(k) < P_CROSSOVER
    partner = rng.integers(max(1, len(donors)), size=k)
    mask = rng.random((k, c)) < 0.5
    if len(donors):
        sel = cross[:, None] & mask
        rr = np.repeat(rows[:, None], c, axis=1)[sel]
        cc = np.tile(np.arange(c), (k, 1))[sel]
        pp = np.repeat(partner[:, None], c, axis=1)[sel]
        pop.col[rr, cc] = donors.col[pp, cc]
        pop.op[rr, cc] = donors.op[pp, cc]
        pop.thr[rr, cc] = donors.thr[pp, cc]
        pop.active[rr, cc] = donors.active[pp, cc]
    empty = ~pop.active.any(axis=1)
    pop.active[empty, 0] = True


# -- from and to genes ---------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    codons: tuple[Codon, ...]
    action: str
    fitness: float


@dataclass(frozen=True)
class SearchResult:
    variants: tuple[Variant, ...]
    history: tuple[float, ...]
    seed_fitness: float
    generations_run: int
    resumed_from: int
    cancelled: bool
    details: dict[str, Any] = field(default_factory=dict)


def variants_from(pool: Population, fit: np.ndarray, space: ColumnSpace, pack: DomainPack,
                  top: int) -> tuple[Variant, ...]:
    out = []
    for i in range(min(top, len(pool))):
        codons = []
        for j in np.flatnonzero(pool.active[i]):
            col = int(pool.col[i, j])
            codons.append(Codon(op=OP_NAMES[int(pool.op[i, j])],
                                threshold=float(pool.thr[i, j]), terms=space.terms[col]))
        out.append(Variant(tuple(codons), pack.actions[int(pool.action[i])], float(fit[i])))
    return tuple(out)


def variants_to_genes(key: NodeKey, gene: Gene, variants: Sequence[Variant], *,
                      hlc: int = 0) -> list[Gene]:
    """New genes, `adaptation_pending`, with the adapted gene as parent. The same variant
    always gets the same name (and so the same id)."""
    out = []
    for v in variants:
        body = canonical.encode([[c.to_plain() for c in v.codons], v.action])
        tag = canonical.sha256(body)[:4].hex()
        out.append(Gene.create(
            key, domain=gene.domain, name=f"{gene.name[:180]}~m{tag}", codons=v.codons,
            action=v.action, purpose=gene.purpose, params=dict(gene.params), hlc=hlc,
            parents=(gene.id,), scope=gene.scope, status=GeneStatus.ADAPTATION_PENDING))
    return out
