"""Issue 14: a gene without evidence is never vetoed for the lack of it; it gets
`needs-evidence` with how much more would decide it, and evidence then decides."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gd.genome import Experience
from gd.motors.craft import band_for, cp_bounds, evidence_need, success_bounds, undecided
from gd.motors.domains import get_domain
from gd.motors.domains.pack import DEFAULT_BANDS
from gd.motors.evaluate import Evidence, evaluate, score_states
from tests.motors.conftest import make_gene

TURBOFAN = get_domain("turbofan")
STATES = TURBOFAN.demo_states(16, 4)
LENIENT = ((0.0, "vetoed", "adapt"), (0.5, "approved", "approve"), (0.8, "candidate", "approve"))


def _healthy(key, name: str = "healthy"):
    return make_gene(key, "turbofan", [("s11", "<", 49.0)], "continue", name)


def _evidence(gene, states, success: bool, *, domain: bool = False) -> Evidence:
    exps = tuple(Experience(gene.id, gene.version_hash.hex(), s, success, 1 + i, "")
                 for i, s in enumerate(states))
    return Evidence(domain=exps) if domain else Evidence(exps)


def test_a_new_gene_needs_evidence_instead_of_a_veto(key) -> None:
    d = evaluate(_healthy(key), STATES, seed=5)
    assert not any(r.veto for r in d.results)
    assert (d.verdict, d.band) == ("needs-evidence", "needs-evidence")
    mp = d.result("M_P")
    assert mp.details["evidence"] == 0.0 and 1 <= mp.details["more"] <= 8
    assert mp.details["cp_low"] < 0.61 <= mp.details["cp_high"]
    assert "needs evidence" in mp.explanation


def test_evidence_decides_both_ways(key) -> None:
    gene = _healthy(key)
    good = evaluate(gene, STATES, seed=5, evidence=_evidence(gene, STATES * 3, True))
    # Turbofan's floor is 0.05 (an inspection's break-even), which 32 neighbours cannot
    # prove a rule falls below at 95 %: the veto mechanism is checked at a floor of 0.3.
    strict = dataclasses.replace(TURBOFAN.config, floor=0.3)
    bad = evaluate(gene, STATES, seed=5, evidence=_evidence(gene, STATES * 3, False),
                   config=strict)
    # M_N · M_C · M_M ≈ 0.64 here: a sure success puts CP at the approve edge (0.61);
    # whichever side, the band is CP's own, decided by the evidence, not needs-evidence.
    assert good.result("M_P").score > 0.85
    assert (good.band, good.verdict) == band_for(good.cp, DEFAULT_BANDS)
    assert good.verdict != "needs-evidence" and 0.55 < good.cp < 0.7
    lenient = dataclasses.replace(TURBOFAN.config, bands=LENIENT)
    ok = evaluate(gene, STATES, seed=5, evidence=_evidence(gene, STATES * 3, True),
                  config=lenient)
    assert (ok.band, ok.verdict) == ("approved", "approve")
    assert ok.request["config"]["bands"] == [list(b) for b in LENIENT]
    assert bad.verdict == "veto" and "evidence puts success below the floor" in \
        bad.results[0].explanation


def test_domain_history_informs_a_gene_without_its_own(key) -> None:
    gene = _healthy(key)
    other = _healthy(key, "healthy-sibling")
    none = evaluate(gene, STATES, seed=5)
    history = STATES + TURBOFAN.demo_states(48, 9)
    helped = evaluate(gene, STATES, seed=5, evidence=_evidence(other, history, True, domain=True))
    assert helped.result("M_P").score > none.result("M_P").score
    assert none.verdict == "needs-evidence" and helped.verdict == "adapt"
    assert helped.request["evidence"]["digest"] != none.request["evidence"]["digest"]


def test_evidence_need_counts_down_to_a_decision() -> None:
    # Other motors give 0.9; with p at 0.5 CP is 0.45, the bounds straddle 0.61 until
    # min_evidence (8) is reached: CP·hi/0.5 < 0.61 would need 19 more.
    need = evidence_need(0.45, 1.0, 1.0, 1.0, DEFAULT_BANDS, 8.0)
    assert need is not None and need.more == 8 and need.evidence == 0.0
    assert evidence_need(0.45, 5.0, 5.0, 1.0, DEFAULT_BANDS, 8.0) is None
    # Other motors give 0.7: after 2 more the upper bound 0.5 + 1.645·√(¼/5) keeps CP
    # under 0.61 (after 1, 0.5 + 1.645·√(¼/4) does not).
    near = evidence_need(0.35, 1.0, 1.0, 1.0, DEFAULT_BANDS, 8.0)
    assert near is not None and near.more == 2
    # Low whatever p is: the band is decided (vetoed by the other motors' evidence).
    assert evidence_need(0.05, 1.0, 1.0, 1.0, DEFAULT_BANDS, 8.0) is None


def test_undecided_is_vectorised_and_never_for_vetoes() -> None:
    cp = np.array([0.45, 0.0, 0.45, 0.05])
    alpha = np.array([1.0, 1.0, 30.0, 1.0])
    beta = np.array([1.0, 1.0, 30.0, 1.0])
    assert undecided(cp, alpha, beta, 1.0, DEFAULT_BANDS, 8.0).tolist() == [
        True, False, False, False]
    lo, hi = success_bounds(np.array([1.0]), np.array([1.0]))
    assert lo[0] == pytest.approx(0.5 - 1.6448536 * np.sqrt(1 / 12))
    assert hi[0] == pytest.approx(0.5 + 1.6448536 * np.sqrt(1 / 12))


def test_score_states_reports_needs_evidence_per_state(key) -> None:
    gene = _healthy(key)
    bare = score_states(gene, STATES, seed=5)
    known = score_states(gene, STATES, seed=5, evidence=_evidence(gene, STATES * 3, True))
    assert bare.needs_evidence.any() and not known.needs_evidence.any()


def test_cp_bounds_span_the_credible_range_of_p() -> None:
    alpha, beta = np.array([1.0, 30.0, 2.0]), np.array([1.0, 3.0, 5.0])
    cp = np.array([0.3, 0.6, 0.0])
    lo, hi = cp_bounds(cp, alpha, beta, 1.0)
    p_lo, p_hi = success_bounds(alpha, beta)
    mean = alpha / (alpha + beta)
    assert np.allclose(lo[:2], cp[:2] * p_lo[:2] / mean[:2])
    assert np.allclose(hi[:2], np.minimum(cp[:2] * p_hi[:2] / mean[:2], 1.0))
    assert lo[0] < 0.3 < hi[0] and hi[0] - lo[0] > hi[1] - lo[1]   # less evidence, wider
    assert lo[2] == hi[2] == 0.0    # a vetoed state stays at 0
    assert cp_bounds(0.9, 1.0, 1.0, 1.0)[1] == 1.0   # CP never exceeds 1
