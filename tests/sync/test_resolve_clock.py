"""A conflict resolved inside the daemon is stamped by the daemon's injected clock
(issue 12 item 5: one clock), not the system's: on a simulated clock the resolution's
HLC follows the simulation."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import trio

from gd.crdt.clock import ManualClock
from gd.node.services import sync_control
from gd.node.services.sync_control import SyncControl


def test_control_resolve_passes_the_gate_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_resolve(store: object, key: object, conflict: str, keep: str,
                     content: object, physical_ms: int | None = None, *,
                     clock: object = None) -> Any:
        seen.update(conflict=conflict, keep=keep, clock=clock)
        return SimpleNamespace(id="g1", version=2, version_hash=b"\x01", vv={"a": 2})

    monkeypatch.setattr(sync_control, "resolve_conflict", fake_resolve)
    clock = ManualClock()
    notified: list[bool] = []
    svc = SimpleNamespace(store=object(), gate=SimpleNamespace(key=object(), clock=clock),
                          notify_local_change=lambda: notified.append(True))
    result = trio.run(SyncControl(svc).control_resolve, "c1", "local")  # type: ignore[arg-type]
    assert seen == {"conflict": "c1", "keep": "local", "clock": clock}
    assert result["gene_id"] == "g1" and notified == [True]
