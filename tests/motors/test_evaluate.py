from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gd.genome import Decision, Experience, StateVector
from gd.motors.backend import PARITY_ATOL, PARITY_RTOL
from gd.motors.domains import get_domain
from gd.motors.errors import MotorInputError, UnknownDomainError
from gd.motors.evaluate import (
    EvaluationRequest,
    Evidence,
    adapt,
    evaluate,
    replay,
    score_states,
)
from gd.motors.meristic import SearchConfig
from tests.motors.conftest import make_gene

TURBOFAN = get_domain("turbofan")
STATES = TURBOFAN.demo_states(16, 4)


def _healthy(key):
    return make_gene(key, "turbofan", [("s11", "<", 49.0)], "continue", "healthy")


def _experiences(gene, states, success: bool) -> Evidence:
    return Evidence(tuple(Experience(gene.id, gene.version_hash.hex(), s, success, 1 + i, "")
                          for i, s in enumerate(states)))


def test_full_evaluation_runs_every_motor_in_order(key) -> None:
    d = evaluate(_healthy(key), STATES, seed=5, decided_at=123)
    assert [r.motor for r in d.results] == ["M_P", "M_N", "M_C", "M_M"]
    assert 0.0 < d.cp <= min(r.score for r in d.results)
    assert d.request["evidence"]["experiences"] == 0
    assert Decision.decode(d.encode()) == d


def test_evidence_moves_the_score(key) -> None:
    gene = _healthy(key)
    none = evaluate(gene, STATES, seed=5)
    good = evaluate(gene, STATES, seed=5, evidence=_experiences(gene, STATES, True))
    # Strong evidence: each state's outcome seen three times (M_P compares engines on the
    # wear sensors only, where sensor noise alone keeps neighbours' weights near 0.5).
    bad = evaluate(gene, STATES, seed=5, evidence=_experiences(gene, STATES * 3, False))
    assert good.result("M_P").score > none.result("M_P").score > bad.result("M_P").score
    # Turbofan's floor is an inspection's break-even, 0.05 (ADR 0012): 32 neighbours can
    # never prove p < 0.05 at 95 %, so evidence against lowers CP but does not veto ...
    assert bad.verdict != "veto" and bad.cp < none.cp
    # ... while under a stricter floor the same evidence is a veto by M_P alone.
    strict = dataclasses.replace(TURBOFAN.config, floor=0.3)
    vetoed = evaluate(gene, STATES, seed=5, evidence=_experiences(gene, STATES * 3, False),
                      config=strict)
    assert vetoed.verdict == "veto" and len(vetoed.results) == 1


def test_early_termination_on_m_p_veto(key) -> None:
    gene = make_gene(key, "turbofan", [("s11", ">", 60.0)], "inspect", "never")
    d = evaluate(gene, STATES, seed=1)
    assert [r.motor for r in d.results] == ["M_P"]
    assert d.cp == 0.0 and d.verdict == "veto" and "does not apply" in d.results[0].explanation


def test_replay_is_bit_exact_and_detects_changes(key) -> None:
    gene = _healthy(key)
    ev = _experiences(gene, STATES[:5], True)
    d = evaluate(gene, STATES, seed=77, evidence=ev,
                 request=EvaluationRequest(monte_carlo_n=128, epsilon=0.1, cap=512))
    rep = replay(d, gene, ev)
    assert rep.exact and rep.differences == () and rep.replayed == d
    wrong_ev = replay(d, gene, _experiences(gene, STATES[:4], True))
    assert not wrong_ev.exact and "evidence" in wrong_ev.differences[0]
    other = make_gene(key, "turbofan", [("s11", "<", 48.0)], "continue", "healthy")
    assert not replay(d, other, ev).exact
    tampered = Decision.from_plain({**d.to_plain(), "cp": d.cp / 2})
    rep2 = replay(tampered, gene, ev)
    assert not rep2.exact and rep2.differences[0].startswith("$.cp")


def test_torch_replay_reports_any_drift_and_stays_within_parity_tolerance(key) -> None:
    pytest.importorskip("torch")
    gene = _healthy(key)
    d = evaluate(gene, STATES, seed=3)
    rep = replay(d, gene, backend="torch")
    assert rep.replayed is not None
    # "exact" is byte for byte (tests/motors/test_replay_exact.py): a torch re-run that
    # drifts by reduction order is reported as a difference, never rounded away...
    assert rep.exact == (rep.replayed.encode() == d.encode())
    assert rep.exact == (rep.differences == ())
    # ...and the drift itself stays within the documented numpy/torch parity.
    assert rep.replayed.cp == pytest.approx(d.cp, rel=PARITY_RTOL, abs=PARITY_ATOL)


def test_bad_inputs_are_refused_clearly(key) -> None:
    gene = _healthy(key)
    with pytest.raises(MotorInputError, match="features"):
        score_states(gene, np.zeros((3, 5)), seed=1)
    X = TURBOFAN.matrix(STATES)
    X[1, 15] = np.nan
    with pytest.raises(MotorInputError, match="not finite"):
        score_states(gene, X, seed=1)
    with pytest.raises(UnknownDomainError, match="known domains"):
        evaluate(make_gene(key, "nosuch", [("a", ">", 1.0)], "go"), [
            StateVector("nosuch", {"a": 1.0})], seed=1)
    with pytest.raises(MotorInputError, match="lacks feature"):
        evaluate(gene, [StateVector("turbofan", {"s11": 47.0})], seed=1)
    with pytest.raises(MotorInputError, match="feature 'nope'"):
        evaluate(make_gene(key, "turbofan", [("nope", ">", 1.0)], "inspect"), STATES, seed=1)
    with pytest.raises(MotorInputError, match="action"):
        evaluate(make_gene(key, "turbofan", [("s11", ">", 1.0)], "fly"), STATES, seed=1)
    with pytest.raises(MotorInputError, match="seed"):
        evaluate(gene, STATES, seed=-1)
    with pytest.raises(MotorInputError, match="unknown request"):
        EvaluationRequest.from_plain({"montecarlo": 5})
    with pytest.raises(MotorInputError, match="backend"):
        EvaluationRequest(backend="jax")


def test_scores_vary_with_state(key) -> None:
    gene = make_gene(key, "turbofan", [("s11", ">", 47.4)], "inspect", "hot")
    out = score_states(gene, TURBOFAN.matrix(TURBOFAN.demo_states(200, 8)), seed=2)
    for arr in (out.mp.score, out.mn.score, out.mc.score):
        assert np.std(arr) > 0.01
    assert out.cp.shape == (200,)


def test_adapt_returns_better_variants(key) -> None:
    gene = make_gene(key, "turbofan", [("s11", ">", 47.2)], "overhaul", "too-eager")
    res = adapt(gene, STATES, seed=4, search=SearchConfig(population=300, generations=6))
    assert res.variants and res.variants[0].fitness > res.seed_fitness
    assert res.generations_run == 6 and not res.cancelled
