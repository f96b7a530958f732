from __future__ import annotations

import pytest

from gd.genome import MotorResult
from gd.motors.craft import band_for, craft_performance, verdict
from gd.motors.domains.pack import DEFAULT_BANDS
from gd.motors.errors import MotorInputError

W = {"M_P": 1.0, "M_N": 1.0, "M_C": 1.0, "M_M": 1.0}


def _results(scores: list[float], veto_at: int = -1) -> list[MotorResult]:
    names = ("M_P", "M_N", "M_C", "M_M")
    return [MotorResult(n, "1", s, i == veto_at, "") for i, (n, s) in
            enumerate(zip(names, scores, strict=False))]


def test_cp_is_the_weighted_product() -> None:
    assert craft_performance({"M_P": 0.9, "M_N": 0.8, "M_C": 0.5, "M_M": 1.0}, W) == \
        pytest.approx(0.36)
    assert craft_performance({"M_P": 0.81, "M_N": 1.0}, {"M_P": 0.5}) == pytest.approx(0.9)


def test_cp_never_exceeds_the_weakest_motor() -> None:
    cp, _, _ = verdict(_results([0.99, 0.7, 0.95, 0.9]), W, DEFAULT_BANDS)
    assert cp <= 0.7


@pytest.mark.parametrize(("cp", "band", "what"), [
    (0.0, "vetoed", "adapt"), (0.6099, "vetoed", "adapt"), (0.61, "approved", "approve"),
    (0.8, "approved", "approve"), (0.81, "candidate", "approve"), (0.97, "candidate", "approve")])
def test_bands(cp: float, band: str, what: str) -> None:
    assert band_for(cp, DEFAULT_BANDS) == (band, what)


def test_any_veto_makes_cp_zero() -> None:
    assert verdict(_results([0.9], veto_at=0), W, DEFAULT_BANDS) == (0.0, "vetoed", "veto")
    assert verdict(_results([1.0, 1.0, 1.0], veto_at=2), W, DEFAULT_BANDS)[0] == 0.0


def test_missing_motor_or_bad_bands_refused() -> None:
    with pytest.raises(MotorInputError):
        verdict(_results([0.9, 0.9]), W, DEFAULT_BANDS)
    with pytest.raises(MotorInputError):
        band_for(0.5, [(0.2, "a", "b")])
    with pytest.raises(MotorInputError):
        craft_performance({"M_P": 0.5}, {"M_P": -1.0})
