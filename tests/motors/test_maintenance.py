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
