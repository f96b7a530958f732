"""Craft Performance (CP) and the verdict.

CP is non-compensatory, as the framework defines it: CP = Π_m score_m ^ w_m over the
motors M_P, M_N, M_C, M_M, with per-domain exponents w_m (default 1). A veto from any
motor makes CP 0; since every score is in [0, 1] and every w_m ≥ 1 by default, CP never
exceeds the weakest motor. The bands (domain config) turn CP into a band and verdict:
below 0.61 `vetoed` → verdict `adapt`; 0.61–0.80 `approved`; 0.81 and above `candidate`
for the genome (both `approve`). A motor veto gives band `vetoed`, verdict `veto`.

Order: M_P first, then M_N and M_C, then M_M's scale coherence; a veto stops the
evaluation (the remaining motors are not run and not listed).

Honest verdicts (issue 14). M_P's success probability p is uncertain while evidence is
scarce; CP moves with it as CP ∝ p^w_P. When the evidence (pseudo-observations beyond
the flat prior: α + β − 2) is below the domain's `min_evidence` and CP at the lower and
at the upper credible bound of p (mean ∓ 1.645·sd) fall in different bands, the data
cannot decide: the verdict is `needs-evidence`, with the number of further experiences
(at the current success rate) after which it would be decided, never a veto. A veto
comes only from a motor (a hard limit, or M_P with enough evidence against the gene),
and the `vetoed` band only when CP is low whatever p turns out to be, or on evidence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gd.genome import MotorResult
from gd.motors.errors import MotorInputError

MOTOR_ORDER = ("M_P", "M_N", "M_C", "M_M")
VERDICT_VETO = "veto"
BAND_VETOED = "vetoed"
VERDICT_NEEDS_EVIDENCE = "needs-evidence"
BAND_NEEDS_EVIDENCE = "needs-evidence"
Z_BOUND = 1.6448536269514722   # one-sided 95 %, as M_P's veto bound
# Pseudo-observations of the flat prior Beta(1, 1): evidence is what α + β has beyond it.
FLAT_PRIOR = 2.0


def check_bands(bands: Sequence[Sequence[object]]) -> None:
    lows = [b[0] for b in bands]
    numeric = [x for x in lows if isinstance(x, float | int)]
    if not bands or len(numeric) != len(lows) or numeric[0] != 0.0 \
            or numeric != sorted(numeric) or len(set(numeric)) != len(numeric):
        raise MotorInputError(f"bands must start at 0 and increase strictly, got {lows}")


def band_for(cp: float, bands: Sequence[Sequence[object]]) -> tuple[str, str]:
    """(band, verdict) of the highest band whose lower bound is ≤ cp."""
    check_bands(bands)
    band, verdict = str(bands[0][1]), str(bands[0][2])
    for low, name, what in bands:
        if cp >= float(low):  # type: ignore[arg-type]
            band, verdict = str(name), str(what)
    return band, verdict


def craft_performance(scores: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """Π score^weight over the motors given (each in [0, 1])."""
    cp = 1.0
    for motor, score in scores.items():
        w = float(weights.get(motor, 1.0))
        if w < 0 or not math.isfinite(w):
            raise MotorInputError(f"weight of {motor} must be finite and ≥ 0, got {w}")
        if not 0.0 <= score <= 1.0:
            raise MotorInputError(f"{motor} score {score} is outside [0, 1]")
        cp *= score ** w
    return cp


def verdict(results: Sequence[MotorResult], weights: Mapping[str, float],
            bands: Sequence[Sequence[object]]) -> tuple[float, str, str]:
    """(CP, band, verdict) for the motors that ran, in order."""
    if any(r.veto for r in results):
        return 0.0, BAND_VETOED, VERDICT_VETO
    missing = [m for m in MOTOR_ORDER if m not in {r.motor for r in results}]
    if missing:
        raise MotorInputError(f"CP needs every motor; missing {', '.join(missing)}")
    cp = craft_performance({r.motor: r.score for r in results}, weights)
    band, what = band_for(cp, bands)
    return cp, band, what


def success_bounds(alpha: np.ndarray | float, beta: np.ndarray | float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper one-sided 95 % bounds of a Beta(α, β) success probability
    (normal approximation, clipped to [0, 1], as M_P's veto uses)."""
    a, b = np.asarray(alpha, dtype=np.float64), np.asarray(beta, dtype=np.float64)
    total = a + b
    mean = a / total
    sd = np.sqrt(a * b / (total * total * (total + 1.0)))
    return np.clip(mean - Z_BOUND * sd, 0.0, 1.0), np.clip(mean + Z_BOUND * sd, 0.0, 1.0)


def band_index(cp: np.ndarray | float, bands: Sequence[Sequence[object]]) -> np.ndarray:
    """Index of the band each CP falls in (vectorised `band_for`)."""
    check_bands(bands)
    lows = np.array([float(b[0]) for b in bands])  # type: ignore[arg-type]
    return np.searchsorted(lows, np.asarray(cp, dtype=np.float64), side="right") - 1


def cp_bounds(cp: np.ndarray | float, alpha: np.ndarray | float, beta: np.ndarray | float,
              w_p: float) -> tuple[np.ndarray, np.ndarray]:
    """CP per state at the lower and upper 95 % bounds of M_P's success probability p
    (CP ∝ p^w_P, the other motors fixed; 0 stays 0). The range the evidence allows:
    `undecided` compares their bands, and a precautionary policy may act on the upper
    one where the evidence cannot rule out that acting is warranted (ADR 0025)."""
    a, b = np.asarray(alpha, dtype=np.float64), np.asarray(beta, dtype=np.float64)
    mean = a / (a + b)
    lo, hi = success_bounds(a, b)
    ratio_lo = np.where(mean > 0, lo / np.where(mean > 0, mean, 1.0), 0.0)
    ratio_hi = np.where(mean > 0, hi / np.where(mean > 0, mean, 1.0), 1.0)
    c = np.asarray(cp, dtype=np.float64)
    return c * ratio_lo ** w_p, np.minimum(c * ratio_hi ** w_p, 1.0)


def undecided(cp: np.ndarray, alpha: np.ndarray, beta: np.ndarray, w_p: float,
              bands: Sequence[Sequence[object]], min_evidence: float,
              prior_n: float = FLAT_PRIOR) -> np.ndarray:
    """Per state: True where the evidence is below `min_evidence` and CP at the two
    bounds of p falls in different bands (module docstring). `cp` must be the CP at the
    posterior mean (0 where a motor vetoed: those are never undecided). `prior_n`: the
    pseudo-observations in α + β that are prior, not evidence (M_P's `prior_n`: the flat
    prior's 2 plus the history fallback's), so a prior never passes for evidence."""
    a, b = np.asarray(alpha, dtype=np.float64), np.asarray(beta, dtype=np.float64)
    cp = np.asarray(cp, dtype=np.float64)
    cp_lo, cp_hi = cp_bounds(cp, a, b, w_p)
    scarce = (a + b - prior_n) < min_evidence
    out: np.ndarray = scarce & (cp > 0) & (band_index(cp_lo, bands) != band_index(cp_hi, bands))
    return out


@dataclass(frozen=True)
class EvidenceNeed:
    """A `needs-evidence` verdict's numbers: how much evidence there is, how much more
    would decide it, and the CP range the current evidence allows."""

    evidence: float
    more: int
    cp_low: float
    cp_high: float


def evidence_need(cp: float, alpha: float, beta: float, w_p: float,
                  bands: Sequence[Sequence[object]], min_evidence: float,
                  prior_n: float = FLAT_PRIOR) -> EvidenceNeed | None:
    """None when the evidence decides the verdict; otherwise the fewest further
    experiences, succeeding at the current posterior rate, after which either the
    bounds agree on a band or the evidence reaches `min_evidence` (at most that many)."""
    if not bool(undecided(np.array([cp]), np.array([alpha]), np.array([beta]), w_p, bands,
                          min_evidence, prior_n)[0]):
        return None
    mean = alpha / (alpha + beta)
    lo, hi = success_bounds(alpha, beta)
    cp_lo, cp_hi = cp * (float(lo) / mean) ** w_p, min(1.0, cp * (float(hi) / mean) ** w_p)
    have = alpha + beta - prior_n
    cap = max(1, math.ceil(min_evidence - have))
    more = cap
    for n in range(1, cap):
        # The motors other than M_P are fixed; CP at the mean stays cp.
        if not bool(undecided(np.array([cp]), np.array([alpha + n * mean]),
                              np.array([beta + n * (1.0 - mean)]), w_p, bands,
                              min_evidence, prior_n)[0]):
            more = n
            break
    return EvidenceNeed(evidence=max(0.0, have), more=more, cp_low=float(cp_lo),
                        cp_high=float(cp_hi))
