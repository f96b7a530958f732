from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from gd.motors.backend import get_backend
from gd.motors.condition import applicability, compile_gene, fires
from gd.motors.praxeological import (
    Z_UPPER,
    RelatedGene,
    posterior,
    praxeological,
    prior_from_related,
)
from tests.motors.conftest import ToyPack, make_gene

bk = get_backend()


def test_posterior_without_evidence_equals_prior() -> None:
    pack = ToyPack()
    X = np.array([[0.0], [3.0]])
    a, b, w = posterior(bk, pack, X, np.zeros((0, 1)), np.zeros(0), (2.5, 4.0))
    assert a.tolist() == [2.5, 2.5] and b.tolist() == [4.0, 4.0] and w.tolist() == [0.0, 0.0]


def test_posterior_weights_experiences_by_distance(key) -> None:
    pack = ToyPack()
    X = np.array([[0.0]])
    ev_X = np.array([[0.0], [1.0]])     # distance 0 → weight 1; distance 1 → exp(-1/2)
    ev_y = np.array([1.0, 0.0])
    a, b, w = posterior(bk, pack, X, ev_X, ev_y, (1.0, 1.0))
    assert a[0] == pytest.approx(2.0)
    assert b[0] == pytest.approx(1.0 + np.exp(-0.5))
    assert w[0] == pytest.approx(1.0 + np.exp(-0.5))


def test_k_nearest_only(key) -> None:
    pack = ToyPack()
    ev_X = np.array([[0.0], [0.1], [5.0]])
    a, b, _ = posterior(bk, pack, np.array([[0.0]]), ev_X, np.array([1.0, 1.0, 0.0]),
                        (1.0, 1.0), k=2)
    assert b[0] == 1.0 and a[0] > 2.9


def test_prior_from_related_hand_computed() -> None:
    assert prior_from_related([]) == (1.0, 1.0)
    # One neighbour, weight 1, 8 successes 0 failures: rate 9/10, extra 0.8 → strength 2.8,
    # mean (0.9·0.8 + 0.5·2)/2.8.
    a0, b0 = prior_from_related([RelatedGene(1.0, 8, 0)])
    m = (0.9 * 0.8 + 1.0) / 2.8
    assert a0 == pytest.approx(m * 2.8) and b0 == pytest.approx((1 - m) * 2.8)
    inh_a, inh_b = prior_from_related([RelatedGene(1.0, 8, 0, inhibits=True)])
    assert inh_a == pytest.approx(b0) and inh_b == pytest.approx(a0)


def test_graded_applicability_is_half_on_threshold(key) -> None:
    pack = ToyPack()
    cg = compile_gene(make_gene(key, "toy", [("x", ">", 1.0)], "act"), pack)
    a = applicability(bk, cg, np.array([[1.0], [1.25], [0.75], [5.0]]))
    # τ = 0.25 · scale 1: one τ above → σ(1), one below → σ(−1).
    assert a.tolist() == pytest.approx([0.5, 1 / (1 + np.exp(-1)), 1 / (1 + np.exp(1)), 1.0],
                                       abs=1e-6)
    assert fires(bk, cg, np.array([[1.0], [1.1]])).tolist() == [False, True]


def test_not_applying_gene_is_vetoed(key) -> None:
    pack = ToyPack()
    cg = compile_gene(make_gene(key, "toy", [("x", ">", 1.0)], "act"), pack)
    out = praxeological(bk, pack, cg, np.array([[0.0], [2.0]]), np.zeros((0, 1)), np.zeros(0),
                        (1.0, 1.0))
    assert out.veto.tolist() == [True, False]
    assert out.score[1] == pytest.approx(out.applicability[1] * 0.5)


def test_strong_failure_evidence_vetoes_below_floor(key) -> None:
    pack = ToyPack()
    cg = compile_gene(make_gene(key, "toy", [("x", ">", -10.0)], "act"), pack)
    X = np.array([[0.0]])
    ev_X = np.zeros((20, 1))
    few = praxeological(bk, pack, cg, X, ev_X[:2], np.zeros(2), (1.0, 1.0))
    many = praxeological(bk, pack, cg, X, ev_X, np.zeros(20), (1.0, 1.0))
    good = praxeological(bk, pack, cg, X, ev_X, np.ones(20), (1.0, 1.0))
    assert not few.veto[0]          # not enough evidence (2 < min_evidence 4)
    assert many.veto[0] and many.upper[0] < pack.config.floor
    assert not good.veto[0] and good.score[0] == pytest.approx(21 / 22, abs=1e-3)


@pytest.mark.parametrize(("a", "b"), [(5, 5), (10, 5), (5, 20), (30, 12)])
def test_upper_bound_close_to_exact_beta_quantile(a: float, b: float) -> None:
    m = a / (a + b)
    sd = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    assert m + Z_UPPER * sd == pytest.approx(stats.beta.ppf(0.95, a, b), abs=0.02)
