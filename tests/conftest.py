"""Shared fixtures and the hypothesis profile (derandomized under CI)."""

from __future__ import annotations

import os

import pytest
from gd_testkit import key_from_int
from hypothesis import HealthCheck, settings

from gd.genome import NodeKey

settings.register_profile("default", max_examples=100, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=100, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE",
                                     "ci" if os.environ.get("CI") else "default"))


@pytest.fixture
def key() -> NodeKey:
    return key_from_int(1)


@pytest.fixture
def other_key() -> NodeKey:
    return key_from_int(2)
