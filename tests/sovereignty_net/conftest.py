"""In-process daemons with a Cortex each, on 127.0.0.1, enforcing sovereignty (no
share-all test switch): what moves between them is what their agreements allow."""

from __future__ import annotations

import pytest
from daemon_cluster import quiet_libp2p
from federation import FAST_SYNC, Federation

__all__ = ["FAST_SYNC", "Federation"]


@pytest.fixture(autouse=True)
def _quiet_libp2p():
    quiet_libp2p()


@pytest.fixture
def fed():
    with Federation.in_tmp("gdv") as f:
        yield f
