"""The validation report's rule for choosing how verdicts are acted on (ADR 0025): it
looks at training engines only and keeps the incumbent unless a challenger is clearly
cheaper out of fold."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from gd.motors.domains import maintenance as mt
from gd.motors.domains.turbofan import demo_cmapss, rul_for_train

_SPEC = importlib.util.spec_from_file_location(
    "bench_validation_policy", Path(__file__).parents[2] / "bench" / "validation_policy.py")
assert _SPEC is not None and _SPEC.loader is not None
vp = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = vp   # dataclasses look their module up there
_SPEC.loader.exec_module(vp)

GRID = np.array([0.3, 0.5, 0.7])


def _engines() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, _ = demo_cmapss(units=20, seed=4)
    return rows[:, 0], rows[:, 1], rul_for_train(rows)


def test_a_tie_keeps_the_incumbent() -> None:
    u, c, r = _engines()
    oracle = (r <= mt.LEAD).astype(float)
    # No needs-evidence rows: precautionary acts exactly like the incumbent.
    rows = vp.Rows(cp=0.6 * oracle, cp_hi=0.6 * oracle, needs=np.zeros(len(u), bool))
    choice = vp.choose(rows, u, c, r, GRID, folds=5)
    assert choice.name == vp.INCUMBENT
    assert set(choice.table) == set(vp.CANDIDATES)
    assert choice.table["mean"]["nested_train"] == choice.table["precautionary"]["nested_train"]


def test_a_clearly_cheaper_challenger_replaces_the_incumbent() -> None:
    u, c, r = _engines()
    oracle = (r <= mt.LEAD).astype(float)
    # Every verdict needs evidence and only the upper end of its range knows the truth:
    # the incumbent never acts (every engine that reaches the zone fails), the others do.
    rows = vp.Rows(cp=np.zeros(len(u)), cp_hi=0.6 * oracle, needs=np.ones(len(u), bool))
    choice = vp.choose(rows, u, c, r, GRID, folds=5)
    costs = {n: t["nested_train"]["cost"] for n, t in choice.table.items()}
    assert costs["precautionary"] < (1 - vp.MARGIN) * costs["mean"]
    # precautionary and upper cost the same; the earlier in CANDIDATES wins the tie.
    assert costs["precautionary"] == costs["upper"] and choice.name == "precautionary"
    assert vp.act("mean", rows, 0.5).sum() == 0
    assert np.array_equal(vp.act("upper", rows, 0.5), oracle > 0)


def test_history_strength_keeps_the_incumbent_unless_clearly_cheaper() -> None:
    inc = vp.HISTORY_INCUMBENT
    assert vp.choose_strength({inc: 1000.0, 2.0: 990.0, 8.0: 985.0}) == inc   # < 2 % saved
    assert vp.choose_strength({inc: 1000.0, 2.0: 970.0, 8.0: 960.0, 32.0: 960.0}) == 8.0
    assert vp.choose_strength({inc: 1000.0}) == inc
    with pytest.raises(ValueError, match="incumbent"):
        vp.choose_strength({2.0: 900.0})
