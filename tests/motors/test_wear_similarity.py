"""Turbofan wear reads a fault whichever way it moves the sensors; M_P compares engines
on the wear sensors only (not on unit ids or cycle counts)."""

from __future__ import annotations

import numpy as np
import pytest

from gd.motors.backend import get_backend
from gd.motors.domains import get_domain
from gd.motors.domains.turbofan import _BASE, _SPAN, FEATURES
from gd.motors.praxeological import kernel_sums

PACK = get_domain("turbofan")
BK = get_backend("numpy")


def test_wear_is_the_same_for_a_fault_moving_sensors_either_way() -> None:
    new = _BASE[None, :].copy()
    hpc = new + _SPAN            # every wear sensor at its FD001 failure value
    mirrored = new - _SPAN       # the same distance, the other way (a different fault)
    w = PACK.wear(BK, np.vstack([new, hpc, mirrored]))
    assert w[0] == pytest.approx(0.0, abs=1e-9)
    assert w[1] == pytest.approx(w[2]) and w[1] > 0.95


def test_unit_id_and_cycle_do_not_move_the_neighbours() -> None:
    x = _BASE.copy()
    far_id = x.copy()
    far_id[FEATURES.index("unit")] += 500.0
    far_id[FEATURES.index("cycle")] += 300.0
    near = kernel_sums(BK, PACK, x[None, :], far_id[None, :], np.ones(1))
    assert near[2][0] == pytest.approx(1.0)    # weight exp(0): the same engine state
    sensor = x.copy()
    sensor[FEATURES.index("s11")] += 5 * PACK.scale[FEATURES.index("s11")]
    moved = kernel_sums(BK, PACK, x[None, :], sensor[None, :], np.ones(1))
    assert moved[2][0] < 0.7
