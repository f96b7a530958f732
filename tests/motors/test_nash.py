from __future__ import annotations

import warnings

import nashpy
import numpy as np
import pytest

from gd.motors.backend import get_backend
from gd.motors.errors import MotorInputError
from gd.motors.nash import (
    action_scores,
    dominated,
    equilibrium,
    nash,
    regret_matching,
    support_enumeration,
)

bk = get_backend()


def _is_equilibrium(A: np.ndarray, B: np.ndarray, x: np.ndarray, y: np.ndarray) -> bool:
    return ((A @ y).max() - x @ A @ y <= 1e-9 and (x @ B).max() - x @ B @ y <= 1e-9
            and abs(x.sum() - 1) < 1e-9 and abs(y.sum() - 1) < 1e-9)


def test_support_enumeration_matches_nashpy_on_random_games() -> None:
    rng = np.random.default_rng(11)
    A = rng.standard_normal((150, 3, 4))
    B = rng.standard_normal((150, 3, 4))
    eq = support_enumeration(bk, A, B)
    assert eq.exact.all()
    compared = 0
    for i in range(len(A)):
        assert _is_equilibrium(A[i], B[i], eq.x[i], eq.y[i])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = list(nashpy.Game(A[i], B[i]).support_enumeration())
        # nashpy misses equilibria near its tolerance (it then warns of an even count);
        # where it reports an odd number, ours must be one of them.
        if len(theirs) % 2 == 1:
            compared += 1
            assert any(np.allclose(eq.x[i], x, atol=1e-7) and np.allclose(eq.y[i], y, atol=1e-7)
                       for x, y in theirs)
    assert compared > 100


def test_matching_pennies_is_uniform_and_every_action_scores_one() -> None:
    A = np.array([[[1.0, -1.0], [-1.0, 1.0]]])
    out = nash(bk, A, -A, action=0)
    assert out.x[0] == pytest.approx([0.5, 0.5]) and out.y[0] == pytest.approx([0.5, 0.5])
    assert out.scores_all[0] == pytest.approx([1.0, 1.0])
    assert not out.veto[0]


def test_dominated_action_is_vetoed_and_scored_by_regret() -> None:
    # Row 1 is strictly dominated by row 0. Column player's best reply to row 0 is col 1
    # (B: 3 > 1). u = A·y = [2, 1]; range of A = 4 - 0 = 4; score of row 1 = 1 - 1/4.
    A = np.array([[[4.0, 2.0], [3.0, 1.0], [0.0, 2.0]]])
    B = np.array([[[1.0, 3.0], [0.0, 0.0], [0.0, 0.0]]])
    out = nash(bk, A, B, action=1)
    assert out.veto[0]
    assert out.y[0] == pytest.approx([0.0, 1.0])
    assert out.score[0] == pytest.approx(0.75)
    assert out.scores_all[0, 0] == pytest.approx(1.0)
    assert dominated(bk, A)[0].tolist() == [False, True, False]


def test_regret_matching_approaches_rock_paper_scissors_equilibrium() -> None:
    A = np.array([[[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]])
    eq = regret_matching(bk, A, -A, iterations=3000)
    assert eq.x[0] == pytest.approx([1 / 3] * 3, abs=0.02)
    assert eq.y[0] == pytest.approx([1 / 3] * 3, abs=0.02)


def test_large_games_use_regret_matching() -> None:
    rng = np.random.default_rng(2)
    A = rng.standard_normal((4, 7, 6))
    eq = equilibrium(bk, A, -A)
    assert not eq.exact.any()
    # ε-equilibrium of a zero-sum game: the exploitability is small.
    for i in range(4):
        gap = (A[i] @ eq.y[i]).max() - (eq.x[i] @ A[i]).min()
        assert gap < 0.1


def test_constant_game_scores_one() -> None:
    A = np.zeros((1, 2, 2))
    assert action_scores(bk, A, np.array([[0.5, 0.5]])).tolist() == [[1.0, 1.0]]


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(MotorInputError):
        support_enumeration(bk, np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(MotorInputError):
        equilibrium(bk, np.zeros((1, 2, 2)), np.zeros((1, 2, 3)))
