"""Which process holds a home's lock at the moment a write runs: the one-writer tests
wrap the write function with this and assert it was the CLI's own pid."""

from __future__ import annotations

from typing import Any

import pytest

from gd.node.home import Home
from gd.node.lock import holder_pid


def lock_holders_during(monkeypatch: pytest.MonkeyPatch, module: Any, name: str,
                        home: Home) -> list[int | None]:
    """Replace `module.name` by a wrapper that records the pid holding `home`'s lock at
    each call, then runs the real function; returns the (growing) list of pids."""
    holders: list[int | None] = []
    real = getattr(module, name)

    def watched(*args: object, **kwargs: object) -> object:
        holders.append(holder_pid(home.pid_path))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, watched)
    return holders
