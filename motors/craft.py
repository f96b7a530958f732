"""Craft Performance (CP) and the verdict.

CP is non-compensatory, as the framework defines it: CP = Π_m score_m ^ w_m over the
motors M_P, M_N, M_C, M_M, with per-domain exponents w_m (default 1). A veto from any
motor makes CP 0; since every score is in [0, 1] and every w_m ≥ 1 by default, CP never
exceeds the weakest motor. The bands (domain config) turn CP into a band and verdict:
below 0.61 `vetoed` → verdict `adapt`; 0.61–0.80 `approved`; 0.81 and above `candidate`
for the genome (both `approve`). A motor veto gives band `vetoed`, verdict `veto`.

Order: M_P first, then M_N and M_C, then M_M's scale coherence; a veto stops the
evaluation (the remaining motors are not run and not listed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from gd.genome import MotorResult
from gd.motors.errors import MotorInputError

MOTOR_ORDER = ("M_P", "M_N", "M_C", "M_M")
VERDICT_VETO = "veto"
BAND_VETOED = "vetoed"


def check_bands(bands: Sequence[Sequence[object]]) -> None:
    lows = [b[0] for b in bands]
    if not bands or lows[0] != 0.0 or any(not isinstance(x, float | int) for x in lows) \
            or lows != sorted(lows) or len(set(lows)) != len(lows):
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
