"""A maintenance policy simulation on C-MAPSS engines: what acting on alarms costs.

Used by the validation report (bench/validate_cmapss.py) to compare acting on CP
verdicts with a fixed-threshold rule and with perfect knowledge, on the same engines and
the same cost model.

Cost model (the turbofan pack's costs, in units where an unplanned failure costs 100):

* each engine is followed cycle by cycle over its observed window; an alarm on a cycle
  means an inspection (COST_INSPECT = 5);
* an inspection within LEAD cycles of failure (true RUL ≤ LEAD) finds the fault: a
  planned repair (COST_REPAIR = 20) and the engine leaves the simulation;
* an inspection earlier finds nothing: a *wasted* inspection; the engine runs on and
  the crew does not inspect it again for COOLDOWN cycles;
* an engine still unrepaired at the end of its window with true RUL ≤ LEAD there will
  fail before the next window can act: an *unplanned failure* (COST_FAILURE = 100);
  one with more life left is censored (nothing is owed yet by any policy).

Perfect knowledge inspects on the first cycle with RUL ≤ LEAD: it pays 25 for every
engine that reaches that zone in its window and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from gd.motors.domains.turbofan import COST_FAILURE, COST_INSPECT, COST_REPAIR, HORIZON
from gd.motors.errors import MotorInputError

LEAD: Final = HORIZON      # cycles before failure in which an inspection finds the fault
COOLDOWN: Final = 10       # cycles without re-inspecting after an inspection found nothing


@dataclass(frozen=True)
class PolicyCost:
    engines: int
    inspections: int
    wasted: int
    repairs: int
    failures: int

    @property
    def cost(self) -> float:
        return (COST_INSPECT * self.inspections + COST_REPAIR * self.repairs
                + COST_FAILURE * self.failures)

    def to_plain(self) -> dict[str, float | int]:
        return {"engines": self.engines, "inspections": self.inspections,
                "wasted_inspections": self.wasted, "repairs": self.repairs,
                "unplanned_failures": self.failures, "cost": self.cost,
                "cost_per_engine": self.cost / max(1, self.engines)}


def simulate(units: np.ndarray, cycles: np.ndarray, rul: np.ndarray,
             alarm: np.ndarray) -> PolicyCost:
    """Cost of acting on `alarm` (bool per row) for engines given row-wise by `units`
    and `cycles`, with each row's true remaining life `rul` (module docstring)."""
    n = len(units)
    if not (len(cycles) == len(rul) == len(alarm) == n) or n == 0:
        raise MotorInputError("units, cycles, rul and alarm must be non-empty and aligned")
    order = np.lexsort((cycles, units))
    u, r, a = units[order], rul[order], np.asarray(alarm, dtype=bool)[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    ends: np.ndarray = np.r_[starts[1:], n]
    hits = np.flatnonzero(a)
    first = np.searchsorted(hits, starts)
    last = np.searchsorted(hits, ends)
    inspections = wasted = repairs = failures = 0
    for e, lo, hi in zip(ends, first, last, strict=True):
        quiet_until = -1
        repaired = False
        for i in hits[lo:hi]:
            if i < quiet_until:
                continue
            inspections += 1
            if r[i] <= LEAD:
                repairs += 1
                repaired = True
                break
            wasted += 1
            quiet_until = i + COOLDOWN
        if not repaired and r[e - 1] <= LEAD:
            failures += 1
    return PolicyCost(len(starts), inspections, wasted, repairs, failures)


def perfect(units: np.ndarray, cycles: np.ndarray, rul: np.ndarray) -> PolicyCost:
    return simulate(units, cycles, rul, rul <= LEAD)


@dataclass(frozen=True)
class ThresholdRule:
    column: int
    above: bool
    threshold: float

    def alarm(self, X: np.ndarray) -> np.ndarray:
        v = X[:, self.column]
        return v > self.threshold if self.above else v < self.threshold


def truncations(units: np.ndarray, cycles: np.ndarray, rul: np.ndarray, seed: int,
                per_unit: int = 5) -> list[np.ndarray]:
    """Row selections of run-to-failure engines cut at random cycles, as the C-MAPSS test
    files are made: each unit, `per_unit` times, keeps its first k cycles, k uniform
    over its life. Lets a rule be tuned on training engines the way it is tested."""
    rng = np.random.default_rng(seed)
    out = []
    for unit in np.unique(units):
        rows = np.flatnonzero(units == unit)
        rows = rows[np.argsort(cycles[rows], kind="stable")]
        for _ in range(per_unit):
            out.append(rows[: int(rng.integers(1, len(rows) + 1))])
    return out


def tune_threshold(X: np.ndarray, units: np.ndarray, cycles: np.ndarray, rul: np.ndarray,
                   columns: list[int], seed: int, quantiles: int = 100
                   ) -> tuple[ThresholdRule, PolicyCost]:
    """The fixed-threshold rule (one column, one direction, one threshold from its
    quantiles) with the least simulated cost on truncated training engines."""
    cuts = truncations(units, cycles, rul, seed)
    sel = np.concatenate(cuts)
    # Each truncation is its own engine: give it a distinct id.
    ids = np.concatenate([np.full(len(c), k) for k, c in enumerate(cuts)])
    Xs, cy = X[sel], cycles[sel]

    rs = rul[sel]
    best: tuple[ThresholdRule, PolicyCost] | None = None
    for col in columns:
        qs = np.unique(np.quantile(X[:, col], np.linspace(0.5, 0.999, quantiles)))
        qs = np.unique(np.r_[qs, np.quantile(X[:, col], np.linspace(0.001, 0.5, quantiles))])
        for thr in qs:
            for above in (True, False):
                rule = ThresholdRule(col, above, float(thr))
                cost = simulate(ids, cy, rs, rule.alarm(Xs))
                if best is None or cost.cost < best[1].cost:
                    best = (rule, cost)
    assert best is not None
    return best


def tune_score_threshold(score: np.ndarray, units: np.ndarray, cycles: np.ndarray,
                         rul: np.ndarray, seed: int, grid: np.ndarray
                         ) -> tuple[float, PolicyCost]:
    """The lowest-cost alarm level `score ≥ t` over `grid`, simulated on truncated
    training engines exactly as `tune_threshold` tunes a sensor rule: what a domain's
    approve band is fitted with (on cross-fitted scores, never on test data)."""
    if len(score) != len(units) or len(grid) == 0:
        raise MotorInputError("score must align with units, and the grid be non-empty")
    cuts = truncations(units, cycles, rul, seed)
    sel = np.concatenate(cuts)
    ids = np.concatenate([np.full(len(c), k) for k, c in enumerate(cuts)])
    best: tuple[float, PolicyCost] | None = None
    for t in np.asarray(grid, dtype=np.float64):
        cost = simulate(ids, cycles[sel], rul[sel], score[sel] >= t)
        if best is None or cost.cost < best[1].cost:
            best = (float(t), cost)
    assert best is not None
    return best


@dataclass(frozen=True)
class NestedCost:
    """Out-of-fold policy cost of a score whose alarm level is fitted on the other
    folds: what choosing between scoring variants on training history may look at."""

    cost: PolicyCost
    levels: tuple[float, ...]


def _add(a: PolicyCost, b: PolicyCost) -> PolicyCost:
    return PolicyCost(a.engines + b.engines, a.inspections + b.inspections,
                      a.wasted + b.wasted, a.repairs + b.repairs, a.failures + b.failures)


def nested_cv_cost(score: np.ndarray, units: np.ndarray, cycles: np.ndarray, rul: np.ndarray,
                   grid: np.ndarray, folds: int = 5, seeds: tuple[int, ...] = (1, 2, 3)
                   ) -> NestedCost:
    """For each seed and each fold of engines (unit id mod `folds`): the alarm level is
    fitted with `tune_score_threshold` on the other folds' engines, and its cost is
    simulated on truncations of the held fold's engines. Costs add up over folds and
    seeds. The level is never scored on the engines it was fitted on, so variants that
    only fit the training engines better do not win (the score itself must already be
    cross-fitted, e.g. evidence from the other folds)."""
    if len(score) != len(units) or folds < 2 or not seeds:
        raise MotorInputError("score must align with units; need folds ≥ 2 and a seed")
    fold = units.astype(np.int64) % folds
    total = PolicyCost(0, 0, 0, 0, 0)
    levels = []
    for seed in seeds:
        for f in range(folds):
            held, rest = fold == f, fold != f
            if not held.any() or not rest.any():
                raise MotorInputError(f"fold {f} has no engines on one side")
            level, _ = tune_score_threshold(score[rest], units[rest], cycles[rest], rul[rest],
                                            seed=seed, grid=grid)
            cuts = truncations(units[held], cycles[held], rul[held], seed)
            sel = np.concatenate(cuts)
            ids = np.concatenate([np.full(len(c), k) for k, c in enumerate(cuts)])
            s, cy, r = score[held][sel], cycles[held][sel], rul[held][sel]
            total = _add(total, simulate(ids, cy, r, s >= level))
            levels.append(level)
    return NestedCost(total, tuple(levels))
