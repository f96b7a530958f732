"""Which way to act on CP verdicts, chosen on FD001 training engines only (ADR 0025).

The validation report acts on the policy gene's verdicts. How an operator treats a
`needs-evidence` verdict is a choice, so the candidates and the rule that picks one
are fixed here, before any test file is scored:

* `mean` (the incumbent, the report's policy before ADR 0025): inspect where the verdict
  is approve (CP at M_P's posterior mean reaches the approve band); a needs-evidence
  verdict does nothing;
* `precautionary`: as `mean`, and a needs-evidence verdict inspects when the upper end of
  the CP range it reports (`cp_bounds`, p at its upper 95 % bound) reaches the band: the
  evidence cannot rule out that the inspection is warranted;
* `upper`: inspect wherever CP at p's upper bound reaches the band.

Each candidate's approve level is fitted like the band (`tune_score_threshold`). The
choice: `nested_cv_cost` on the cross-fitted training scores (5 folds of engines, the
level fitted on the other folds, truncation seeds 1–3). A challenger replaces the
incumbent only if it costs at least MARGIN less; between challengers that do, the
cheaper (then the earlier in CANDIDATES). Every candidate's numbers are reported.

M_P's history fallback (ADR 0035) has one tunable, its strength in pseudo-observations.
It is chosen the same way, before any test file is scored: for each of
HISTORY_CANDIDATES the cross-fitted training CP is recomputed and the acting rule chosen
as above; `choose_strength` keeps the incumbent (HISTORY_INCUMBENT, 0: no fallback, the
flat prior as before) unless a strength's nested cost is at least MARGIN lower, and then
takes the cheapest (the smaller strength on a tie).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gd.motors.domains import maintenance as mt

INCUMBENT = "mean"
MARGIN = 0.02          # a challenger must save this share of the incumbent's nested cost
SEEDS = (1, 2, 3)
HISTORY_CANDIDATES = (0.0, 2.0, 8.0, 32.0)
HISTORY_INCUMBENT = 0.0


@dataclass(frozen=True)
class Rows:
    """Per row: CP at the posterior mean (0 where vetoed), CP at p's upper bound, and
    whether the verdict is needs-evidence."""

    cp: np.ndarray
    cp_hi: np.ndarray
    needs: np.ndarray


CANDIDATES: dict[str, Callable[[Rows], np.ndarray]] = {
    "mean": lambda r: np.where(r.needs, 0.0, r.cp),
    "precautionary": lambda r: np.where(r.needs, r.cp_hi, r.cp),
    "upper": lambda r: r.cp_hi,
}


ACTS_ON = {
    "mean": "CP at M_P's posterior mean (approve verdicts; needs-evidence does nothing)",
    "precautionary": "CP at the posterior mean, or for a needs-evidence verdict the upper "
                     "end of its CP range",
    "upper": "CP at the upper 95 % bound of M_P's success probability",
}


@dataclass(frozen=True)
class Choice:
    name: str
    levels: dict[str, float]
    table: dict[str, dict]


def choose(train: Rows, units: np.ndarray, cycles: np.ndarray, rul: np.ndarray,
           grid: np.ndarray, folds: int) -> Choice:
    """Each candidate's nested cost and its level fitted on all training engines; the
    pick by the rule in the module docstring (training data only)."""
    table: dict[str, dict] = {}
    levels: dict[str, float] = {}
    for name, rule in CANDIDATES.items():
        score = rule(train)
        nested = mt.nested_cv_cost(score, units, cycles, rul, grid, folds, SEEDS)
        level, fitted = mt.tune_score_threshold(score, units, cycles, rul, seed=1, grid=grid)
        levels[name] = level
        table[name] = {"level": level, "nested_train": nested.cost.to_plain(),
                       "nested_levels": list(nested.levels), "train": fitted.to_plain()}
    base = table[INCUMBENT]["nested_train"]["cost"]
    best = INCUMBENT
    for name in CANDIDATES:
        cost = table[name]["nested_train"]["cost"]
        if name != INCUMBENT and cost <= (1.0 - MARGIN) * base and (
                best == INCUMBENT or cost < table[best]["nested_train"]["cost"]):
            best = name
    return Choice(best, levels, table)


def act(name: str, rows: Rows, level: float) -> np.ndarray:
    """Where candidate `name` inspects at `level`."""
    out: np.ndarray = CANDIDATES[name](rows) >= level
    return out


def choose_strength(nested: dict[float, float]) -> float:
    """The history strength by the rule in the module docstring, from each candidate
    strength's nested cross-validated training cost (its chosen acting rule's)."""
    if HISTORY_INCUMBENT not in nested:
        raise ValueError(f"the incumbent strength {HISTORY_INCUMBENT} was not scored")
    base = nested[HISTORY_INCUMBENT]
    cheaper = [(cost, s) for s, cost in nested.items()
               if s != HISTORY_INCUMBENT and cost <= (1.0 - MARGIN) * base]
    return min(cheaper)[1] if cheaper else HISTORY_INCUMBENT
