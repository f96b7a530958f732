"""Node tests: keep libp2p's log flood out of test output."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def quiet_libp2p():
    for name in ("libp2p", "multiaddr", "async_service"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
