"""Attack tests against real daemons on 127.0.0.1 (issue 11)."""

from __future__ import annotations

import pytest
from federation import Federation


@pytest.fixture
def fed_adv():
    with Federation.in_tmp("gda") as f:
        yield f
