"""The maintenance policy simulation behind the validation report: its cost model."""

from __future__ import annotations

import numpy as np
import pytest

from gd.motors.domains import maintenance as mt
from gd.motors.domains.turbofan import FEATURES, demo_cmapss, rul_for_train
from gd.motors.errors import MotorInputError


def _engine(unit: int, rul_end: int, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cycles = np.arange(1, length + 1)
    return np.full(length, unit), cycles, rul_end + length - cycles


def _join(*engines):
    return tuple(np.concatenate(parts) for parts in zip(*engines, strict=True))


def test_cost_model_counts_repairs_waste_and_failures() -> None:
    u, c, r = _join(_engine(1, 5, 100), _engine(2, 80, 50), _engine(3, 10, 40))
    never = mt.simulate(u, c, r, np.zeros(len(u), bool))
    assert never.to_plain()["unplanned_failures"] == 2 and never.cost == 200   # engine 2 censored
    perfect = mt.perfect(u, c, r)
    assert (perfect.repairs, perfect.wasted, perfect.failures) == (2, 0, 0)
    assert perfect.cost == 2 * (5 + 20)
    always = mt.simulate(u, c, r, np.ones(len(u), bool))
    # Engine 1: alarms from cycle 1, RUL reaches 30 at cycle 75: inspections at 1, 11, …,
    # 71 waste 8, the one at 81 (RUL 24) repairs. Engine 2 wastes 5. Engine 3: 2 + repair.
    assert (always.wasted, always.repairs, always.failures) == (8 + 5 + 2, 2, 0)
    assert always.cost == 5 * always.inspections + 20 * 2


def test_rows_may_come_in_any_order() -> None:
    u, c, r = _join(_engine(1, 5, 60), _engine(2, 40, 60))
    alarm = r <= 33
    perm = np.random.default_rng(3).permutation(len(u))
    assert mt.simulate(u, c, r, alarm) == mt.simulate(u[perm], c[perm], r[perm], alarm[perm])


def test_tuned_threshold_is_no_worse_than_any_rule_it_tried() -> None:
    rows, _ = demo_cmapss(units=20, seed=4)
    rul = rul_for_train(rows)
    col = FEATURES.index("s11")
    rule, cost = mt.tune_threshold(rows, rows[:, 0], rows[:, 1], rul, [col], seed=1,
                                   quantiles=10)
    cuts = mt.truncations(rows[:, 0], rows[:, 1], rul, seed=1)
    sel = np.concatenate(cuts)
    ids = np.concatenate([np.full(len(x), k) for k, x in enumerate(cuts)])
    for thr in np.quantile(rows[:, col], [0.6, 0.8, 0.95]):
        other = mt.ThresholdRule(col, True, float(thr))
        assert cost.cost <= mt.simulate(ids, rows[sel, 1], rul[sel], other.alarm(rows[sel])).cost
    assert rule.above   # s11 rises with wear


def test_misaligned_inputs_are_refused() -> None:
    with pytest.raises(MotorInputError):
        mt.simulate(np.zeros(3), np.zeros(3), np.zeros(2), np.zeros(3, bool))


def _oracle_engines() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, _ = demo_cmapss(units=20, seed=4)
    return rows[:, 0], rows[:, 1], rul_for_train(rows)


def test_nested_cost_of_a_perfect_score_is_perfect_knowledge_on_every_held_fold() -> None:
    u, c, r = _oracle_engines()
    oracle = (r <= mt.LEAD).astype(float)
    out = mt.nested_cv_cost(oracle, u, c, r, grid=np.array([0.5]), seeds=(1, 2))
    assert out.cost.failures == 0 and out.cost.wasted == 0
    assert len(out.levels) == 5 * 2
    # Every held fold's truncations are scored once per seed: 20 units × 5 cuts × 2.
    assert out.cost.engines == 20 * 5 * 2
    noise = np.random.default_rng(0).random(len(u))
    assert mt.nested_cv_cost(noise, u, c, r, grid=np.array([0.5, 0.9])).cost.cost \
        > mt.nested_cv_cost(oracle, u, c, r, grid=np.array([0.5, 0.9])).cost.cost


def test_nested_level_never_sees_the_engines_it_is_scored_on() -> None:
    # Fold 0's engines score on a smaller scale. Fitted on all engines, the level drops
    # to 0.2 and catches them; fitted on the other folds (where 0.5 and 0.2 tie and the
    # first wins), it stays at 0.5 and fold 0's failures count.
    u, c, r = _oracle_engines()
    oracle = (r <= mt.LEAD).astype(float)
    score = np.where(u.astype(int) % 5 == 0, 0.3 * oracle, oracle)
    grid = np.array([0.5, 0.2])
    level, in_sample = mt.tune_score_threshold(score, u, c, r, seed=1, grid=grid)
    assert level == 0.2 and in_sample.failures == 0
    nested = mt.nested_cv_cost(score, u, c, r, grid=grid, seeds=(1,))
    assert nested.levels[0] == 0.5 and nested.cost.failures > 0


def test_nested_cost_refuses_bad_folds() -> None:
    u, c, r = _oracle_engines()
    with pytest.raises(MotorInputError):
        mt.nested_cv_cost(np.zeros(len(u)), u, c, r, grid=np.array([0.5]), folds=1)
    with pytest.raises(MotorInputError):
        mt.nested_cv_cost(np.zeros(len(u)), u[:5], c[:5], r[:5], grid=np.array([0.5]),
                          folds=50)
