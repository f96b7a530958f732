"""Adaptation that improves: M_M's winners judged on states the search never saw.

A search tuned on some states can always find a variant that fits them better than its
parent; whether it is better is only known on others. `adapt_held_out` splits the
states (by entity when they have one, so one engine's or one applicant's rows never sit
on both sides; seeded), runs M_M's search on the search part, then scores the parent and
every variant in the retreat pool on the held-out part with the same seed (common random
numbers: the same futures for all):

* held-out CP: the mean per-state CP (`score_states`, 0 where vetoed or not applying);
* held-out cost: the mean loss of the policy (the rule's action where it fires, the
  domain's default elsewhere) over the sampled futures, in the domain's loss units.

A variant is proposed only if it beats its parent on both (higher CP and lower cost);
each comparison records by how much. The pool is visited by search fitness (the retreat
pool's order), the winners are ranked by held-out CP gain. No winner is a valid outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gd.genome import Codon, Gene, NodeKey, StateVector
from gd.motors import meristic
from gd.motors.backend import get_backend
from gd.motors.condition import compile_gene, fires
from gd.motors.domains import get_domain
from gd.motors.domains.pack import DomainConfig
from gd.motors.errors import MotorInputError
from gd.motors.evaluate import EvaluationRequest, Evidence, adapt, score_states, with_config

HELD_OUT_SHARE = 0.3     # of the entities (or rows) kept away from the search
MIN_HELD_OUT = 4         # states; fewer and no comparison is meaningful
POOL_FACTOR = 4          # the pool's head consulted: POOL_FACTOR × the winners wanted


def split_held_out(states: Sequence[StateVector], seed: int,
                   share: float = HELD_OUT_SHARE) -> tuple[list[int], list[int]]:
    """(search rows, held-out rows): whole entities to one side when the states name
    entities (at least two), single rows otherwise; a seeded shuffle, so it replays."""
    if not 0.0 < share < 1.0:
        raise MotorInputError(f"held-out share must be in (0, 1), got {share}")
    n = len(states)
    if n < 2 * MIN_HELD_OUT:
        raise MotorInputError(f"{n} states: adaptation needs at least {2 * MIN_HELD_OUT} "
                              "(half of them are never searched on)")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x40D]))
    groups = sorted({s.entity for s in states})
    if len(groups) >= 2 and all(s.entity for s in states):
        order = [groups[i] for i in rng.permutation(len(groups))]
        keep = max(1, round(share * len(groups)))
        held_groups = set(order[:keep])
        held = [i for i, s in enumerate(states) if s.entity in held_groups]
        if MIN_HELD_OUT <= len(held) <= n - MIN_HELD_OUT:
            return [i for i in range(n) if i not in set(held)], held
    perm = rng.permutation(n)
    k = max(MIN_HELD_OUT, round(share * n))
    held = sorted(int(i) for i in perm[:k])
    held_set = set(held)
    return [i for i in range(n) if i not in held_set], held


@dataclass(frozen=True)
class HeldOutScore:
    """A rule on the held-out states: mean CP, mean policy loss (loss units), and the
    share of them where it fires."""

    cp: float
    cost: float
    fires: float

    def to_plain(self) -> dict[str, float]:
        return {"cp": self.cp, "cost": self.cost, "fires": self.fires}


@dataclass(frozen=True)
class Comparison:
    """A pool variant against its parent on the held-out states."""

    variant: meristic.Variant
    parent: HeldOutScore
    child: HeldOutScore

    @property
    def cp_gain(self) -> float:
        return self.child.cp - self.parent.cp

    @property
    def cost_saving(self) -> float:
        return self.parent.cost - self.child.cost

    @property
    def improves(self) -> bool:
        return self.cp_gain > 0.0 and self.cost_saving > 0.0

    def to_plain(self) -> dict[str, Any]:
        return {"codons": [c.to_plain() for c in self.variant.codons],
                "action": self.variant.action, "search_fitness": self.variant.fitness,
                "parent": self.parent.to_plain(), "variant": self.child.to_plain(),
                "cp_gain": self.cp_gain, "cost_saving": self.cost_saving,
                "improves": self.improves}


@dataclass(frozen=True)
class HeldOutResult:
    """The search (on the search states), every pool variant's comparison, and the
    winners: the improving ones, best held-out CP gain first, at most `top`."""

    search: meristic.SearchResult
    search_rows: tuple[int, ...]
    held_rows: tuple[int, ...]
    compared: tuple[Comparison, ...]
    winners: tuple[Comparison, ...]

    @property
    def cancelled(self) -> bool:
        return self.search.cancelled


def held_out_score(gene: Gene, X: np.ndarray, *, seed: int, evidence: Evidence | None,
                   request: EvaluationRequest | None, config: DomainConfig | None
                   ) -> HeldOutScore:
    """Mean CP and mean policy loss of `gene` over the rows of `X` (module docstring)."""
    sc = score_states(gene, X, seed=seed, evidence=evidence, request=request, config=config)
    pack = with_config(get_domain(gene.domain), config)
    cg = compile_gene(gene, pack)
    on = np.asarray(fires(get_backend("numpy"), cg, X), dtype=bool)
    act = np.where(on, cg.action, cg.default_action)
    loss = sc.mc.multiverse.loss_mean[np.arange(len(X)), act]
    return HeldOutScore(cp=float(np.mean(sc.cp)), cost=float(np.mean(loss)),
                        fires=float(np.mean(on)))


def _variant_gene(key: NodeKey, parent: Gene, codons: tuple[Codon, ...], action: str) -> Gene:
    return Gene.create(key, domain=parent.domain, name=f"{parent.name}~held-out",
                       codons=list(codons), action=action)


def adapt_held_out(gene: Gene, states: Sequence[StateVector], *, seed: int,
                   search: meristic.SearchConfig | None = None,
                   related: Sequence[Gene] = (), evidence: Evidence | None = None,
                   request: EvaluationRequest | None = None,
                   config: DomainConfig | None = None,
                   checkpoints: meristic.CheckpointStore | None = None,
                   cancel: Callable[[], bool] | None = None,
                   progress: Callable[[int, float], None] | None = None,
                   share: float = HELD_OUT_SHARE) -> HeldOutResult:
    """M_M's search on part of `states`, winners only where they beat `gene` on the rest
    (module docstring). Seeded throughout: the same inputs give the same result."""
    sc = search or meristic.SearchConfig()
    search_rows, held_rows = split_held_out(states, seed, share)
    wide = meristic.SearchConfig(**{**sc.to_plain(), "top": sc.top * POOL_FACTOR,
                                    "retreat_size": max(sc.retreat_size,
                                                        sc.top * POOL_FACTOR)})
    result = adapt(gene, [states[i] for i in search_rows], seed=seed, search=wide,
                   related=related, request=request, config=config,
                   checkpoints=checkpoints, cancel=cancel, progress=progress)
    if result.cancelled:
        return HeldOutResult(result, tuple(search_rows), tuple(held_rows), (), ())
    pack = get_domain(gene.domain)
    H = pack.matrix([states[i] for i in held_rows])
    parent = held_out_score(gene, H, seed=seed, evidence=evidence, request=request,
                            config=config)
    key = NodeKey.from_seed(b"\x00" * 32)     # a scoring stand-in, never stored
    compared = []
    for v in result.variants:
        if not v.codons:
            continue
        # The parent's experiences say how its action fared in each state: evidence for
        # a variant with the same action, not for one that does something else.
        ev = evidence if v.action == gene.action or evidence is None else Evidence(
            related=evidence.related)
        child = held_out_score(_variant_gene(key, gene, v.codons, v.action), H, seed=seed,
                               evidence=ev, request=request, config=config)
        compared.append(Comparison(v, parent, child))
    winners = sorted((c for c in compared if c.improves),
                     key=lambda c: (-c.cp_gain, -c.cost_saving))[: sc.top]
    return HeldOutResult(result, tuple(search_rows), tuple(held_rows), tuple(compared),
                         tuple(winners))
