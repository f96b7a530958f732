"""M_P's hierarchical fallback (ADR 0035): far from every experience the posterior falls
back to the gene's (and the domain's) overall success rate, not to the flat 0.5; the
prior's pseudo-observations never count as the gene's evidence."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gd.genome import Experience
from gd.motors.backend import get_backend
from gd.motors.condition import compile_gene
from gd.motors.craft import FLAT_PRIOR, undecided
from gd.motors.domains import get_domain
from gd.motors.errors import MotorInputError
from gd.motors.evaluate import Evidence, evaluate, score_states
from gd.motors.praxeological import (
    DOMAIN_WEIGHT,
    HISTORY_STRENGTH,
    RelatedGene,
    praxeological,
    prior_from_history,
    prior_from_related,
)
from tests.motors.conftest import ToyPack, make_gene

bk = get_backend()
TURBOFAN = get_domain("turbofan")


def test_far_state_gets_the_genes_overall_rate_not_a_coin_flip(key) -> None:
    pack = ToyPack()
    cg = compile_gene(make_gene(key, "toy", [("x", ">", -100.0)], "act"), pack)
    ev_X = np.zeros((40, 1))
    ev_y = np.r_[np.ones(8), np.zeros(32)]          # overall rate 0.2
    a0, b0, pseudo = prior_from_history((1.0, 1.0), ev_y, None, 8.0)
    rate = (8.0 + 1.0) / (40.0 + 2.0)
    assert pseudo == 8.0
    assert (a0, b0) == pytest.approx((1.0 + 8.0 * rate, 1.0 + 8.0 * (1.0 - rate)))
    far = np.array([[50.0]])                        # every kernel weight underflows to 0
    out = praxeological(bk, pack, cg, far, ev_X, ev_y, (a0, b0), prior_n=FLAT_PRIOR + pseudo)
    flat = praxeological(bk, pack, cg, far, ev_X, ev_y, (1.0, 1.0))
    assert out.n_eff[0] == 0.0
    assert flat.alpha[0] / (flat.alpha[0] + flat.beta[0]) == 0.5
    p = out.alpha[0] / (out.alpha[0] + out.beta[0])
    assert p == pytest.approx((1.0 + 8.0 * rate) / 10.0) and p < 0.3
    # Near the evidence the local outcomes still decide.
    near = praxeological(bk, pack, cg, np.array([[0.0]]), ev_X, ev_y, (a0, b0))
    assert near.n_eff[0] == pytest.approx(32.0)


def test_domain_history_enters_at_its_weight_and_related_prior_is_the_base() -> None:
    base = prior_from_related([RelatedGene(1.0, 8, 0)])
    own, dom = np.array([1.0, 0.0]), np.array([1.0, 1.0, 1.0, 1.0])
    a0, b0, pseudo = prior_from_history(base, own, dom, 4.0)
    rate = (1.0 + DOMAIN_WEIGHT * 4.0 + base[0]) / (2.0 + DOMAIN_WEIGHT * 4.0 + sum(base))
    assert pseudo == 4.0
    assert (a0, b0) == pytest.approx((base[0] + 4.0 * rate, base[1] + 4.0 * (1.0 - rate)))


def test_no_history_keeps_the_base_prior_and_bad_strength_is_refused() -> None:
    assert prior_from_history((1.0, 1.0), np.zeros(0), None) == (1.0, 1.0, 0.0)
    assert prior_from_history((2.0, 3.0), np.ones(5), None, 0.0) == (2.0, 3.0, 0.0)
    with pytest.raises(MotorInputError, match="history strength"):
        prior_from_history((1.0, 1.0), np.ones(2), None, -1.0)
    with pytest.raises(MotorInputError, match="prior"):
        prior_from_history((0.0, 1.0), np.ones(2), None)


def test_prior_pseudo_observations_are_not_evidence() -> None:
    # α + β − 2 = 8 reaches min_evidence 8, but all 8 are the history prior's: undecided.
    cp, alpha, beta = np.array([0.45]), np.array([5.0]), np.array([5.0])
    bands = TURBOFAN.config.bands
    assert not undecided(cp, alpha, beta, 1.0, bands, 8.0)[0]
    assert undecided(cp, alpha, beta, 1.0, bands, 8.0, prior_n=FLAT_PRIOR + 8.0)[0]


def _exps(gene, states, success: bool) -> tuple[Experience, ...]:
    return tuple(Experience(gene.id, gene.version_hash.hex(), s, success, 1 + i, "")
                 for i, s in enumerate(states))


def test_history_far_away_informs_p_but_leaves_the_verdict_to_evidence(key) -> None:
    gene = make_gene(key, "turbofan", [("s11", "<", 49.0)], "continue", "healthy")
    states = TURBOFAN.demo_states(16, 4)
    X = TURBOFAN.matrix(list(states))
    far = TURBOFAN.states(X + 40.0 * TURBOFAN.scale)     # far from every state scored
    ev = Evidence(_exps(gene, far, True))
    flat = dataclasses.replace(ev, history_strength=0.0)
    with_history = score_states(gene, states, seed=5, evidence=ev)
    without = score_states(gene, states, seed=5, evidence=flat)
    assert np.all(with_history.mp.n_eff < 1e-6)
    p = with_history.mp.alpha / (with_history.mp.alpha + with_history.mp.beta)
    p0 = without.mp.alpha / (without.mp.alpha + without.mp.beta)
    rate = 17.0 / 18.0                              # 16 successes of 16, shrunk to Beta(1, 1)
    assert np.allclose(p0, 0.5) and HISTORY_STRENGTH > 0 and np.all(p > 0.75)
    assert np.allclose(p, (1.0 + HISTORY_STRENGTH * rate) / (2.0 + HISTORY_STRENGTH))
    assert with_history.mp.prior_n == FLAT_PRIOR + HISTORY_STRENGTH
    d = evaluate(gene, states, seed=5, evidence=ev)
    mp = d.result("M_P")
    assert not mp.veto
    # Nothing near: the prior's 8 pseudo-observations must not pass for evidence (α + β − 2
    # would be 8 = min_evidence and decide the band).
    assert d.verdict == "needs-evidence" and mp.details["evidence"] == 0.0
    assert mp.details["cp_low"] < 0.61 <= mp.details["cp_high"]
    assert d.request["evidence"]["prior"] == pytest.approx(list(ev.prior()))


def test_a_gene_with_no_evidence_still_needs_evidence_not_a_veto(key) -> None:
    gene = make_gene(key, "turbofan", [("s11", "<", 49.0)], "continue", "healthy")
    d = evaluate(gene, TURBOFAN.demo_states(16, 4), seed=5, evidence=Evidence())
    assert (d.verdict, d.band) == ("needs-evidence", "needs-evidence")
    assert not any(r.veto for r in d.results)
    assert d.result("M_P").details["evidence"] == 0.0
    assert d.request["evidence"]["prior"] == [1.0, 1.0]


def test_history_strength_is_in_the_digest_only_when_not_default(key) -> None:
    gene = make_gene(key, "turbofan", [("s11", "<", 49.0)], "continue", "healthy")
    ev = Evidence(_exps(gene, TURBOFAN.demo_states(4, 1), True))
    assert "history_strength" not in ev.plain()
    other = dataclasses.replace(ev, history_strength=2.0)
    assert other.plain()["history_strength"] == 2.0 and other.digest() != ev.digest()
