from __future__ import annotations

import math

import numpy as np
import pytest

from gd.motors.backend import get_backend
from gd.motors.chaotic import MonteCarloPlan, chaotic, wilson
from gd.motors.condition import compile_gene
from gd.motors.errors import MotorInputError
from tests.motors.conftest import ToyPack, make_gene

bk = get_backend()


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_wilson_interval_hand_computed() -> None:
    lo, hi = wilson(np.array([5.0]), 10)
    # p = .5, n = 10, z = 1.96: centre .5, half = 1.96·sqrt(.025 + .0096)/1.384
    assert lo[0] == pytest.approx(0.2366, abs=1e-4) and hi[0] == pytest.approx(0.7634, abs=1e-4)


@pytest.mark.parametrize("x", [-0.5, 0.0, 0.8])
def test_interval_contains_the_analytic_probability(key, x: float) -> None:
    pack = ToyPack()
    cg = compile_gene(make_gene(key, "toy", [("x", ">", -9.0)], "act"), pack)
    out = chaotic(bk, pack, cg, np.array([[x]]), np.random.default_rng(5),
                  MonteCarloPlan(monte_carlo_n=500, epsilon=0.02, cap=20000))
    assert out.lower[0] <= _phi(x) <= out.upper[0]
    assert (out.upper[0] - out.lower[0]) / 2 <= 0.02


def test_sequential_sampling_stops_early_or_at_cap(key) -> None:
    pack = ToyPack()
    cg = compile_gene(make_gene(key, "toy", [("x", ">", -9.0)], "act"), pack)
    X = np.array([[0.0]])
    loose = chaotic(bk, pack, cg, X, np.random.default_rng(1), MonteCarloPlan(100, 0.2, 5000))
    tight = chaotic(bk, pack, cg, X, np.random.default_rng(1), MonteCarloPlan(100, 0.001, 700))
    assert loose.futures == 100
    assert tight.futures == 700


def test_cvar_of_standard_normal_tail(key) -> None:
    # Loss of "act" is 1{z > x}; at x = -9 the loss is ~always 1, so CVaR = 1; at x = 9, 0.
    pack = ToyPack()
    cg = compile_gene(make_gene(key, "toy", [("x", ">", -99.0)], "act"), pack)
    out = chaotic(bk, pack, cg, np.array([[-9.0], [9.0], [1.0]]), np.random.default_rng(2),
                  MonteCarloPlan(4000, 0.5, 4000))
    assert out.cvar[0] == 1.0 and out.cvar[1] == 0.0
    # At x = 1, P(loss 1) = 0.159 > 5 %: the worst 5 % are all losses.
    assert out.cvar[2] == 1.0
    assert out.veto.tolist() == [True, False, True]


def test_flip_rate_near_and_far_from_threshold(key) -> None:
    pack = ToyPack()
    cg = compile_gene(make_gene(key, "toy", [("x", ">", 0.0)], "act"), pack)
    out = chaotic(bk, pack, cg, np.array([[0.0001], [5.0]]), np.random.default_rng(3),
                  MonteCarloPlan(64, 0.5, 64))
    assert 0.2 < out.flip[0] < 0.8
    assert out.flip[1] == 0.0
    assert out.score[1] == pytest.approx(out.p_hat[1])


def test_divergence_matches_the_trajectory_growth_rate(key) -> None:
    # ToyPack's trajectory is x·e^{0.1 t}: nearby starts separate at rate 0.1 per step.
    pack = ToyPack()
    cg = compile_gene(make_gene(key, "toy", [("x", ">", 0.0)], "act"), pack)
    out = chaotic(bk, pack, cg, np.array([[1.0]]), np.random.default_rng(4),
                  MonteCarloPlan(16, 0.5, 16))
    assert out.divergence[0] == pytest.approx(0.1, abs=1e-6)


def test_multiverse_covers_every_action(key) -> None:
    pack = ToyPack()
    cg = compile_gene(make_gene(key, "toy", [("x", ">", 0.0)], "act"), pack)
    out = chaotic(bk, pack, cg, np.array([[0.0]]), np.random.default_rng(4),
                  MonteCarloPlan(2000, 0.5, 2000))
    assert out.multiverse.loss_mean[0, 0] == 0.5
    assert out.multiverse.loss_mean[0, 1] == pytest.approx(0.5, abs=0.05)
    assert out.multiverse.acceptable[0, 1] == pytest.approx(out.p_hat[0])


def test_bad_plans_are_refused() -> None:
    with pytest.raises(MotorInputError):
        MonteCarloPlan(0, 0.1, 10)
    with pytest.raises(MotorInputError):
        MonteCarloPlan(10, 1.5, 10)
    with pytest.raises(MotorInputError):
        MonteCarloPlan(100, 0.1, 10)
