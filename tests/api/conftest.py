"""Fixtures of the API tests (helpers in api_support.py, importable from the tests)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio
from daemon_cluster import quiet_libp2p

sys.path.insert(0, str(Path(__file__).parent))  # `from api_support import ...` (importlib mode)

from api_support import ApiNode, prepare, start


@pytest.fixture(autouse=True)
def _quiet() -> None:
    quiet_libp2p()


@pytest.fixture
def tmp_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="gdapi", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def api_node(nursery: trio.Nursery, tmp_root: Path) -> AsyncIterator[ApiNode]:
    node, cfg = prepare(tmp_root)
    await start(nursery, node, cfg)
    try:
        yield node
    finally:
        assert node.daemon is not None
        node.daemon.stop()
        with trio.move_on_after(15):
            while node.home.pid_path.exists() and node.daemon.stop_event.is_set():
                await trio.sleep(0.05)
                break
