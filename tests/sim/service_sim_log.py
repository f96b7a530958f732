"""The structured logger the simulated services write to (was `fedsim_services.SimLog`).

Why: the services log through `gate.log`; a simulation reads what they logged (a local
error or a refused honest stream fails the run) and keeps it in order, so it is part of
a seed's deterministic record.
"""

from __future__ import annotations

from typing import Any


class SimLog:
    """Events land in a list the simulation reads, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def bind(self, **_: Any) -> SimLog:
        return self

    def _add(self, level: str, event: str, **fields: Any) -> None:
        self.events.append((level, event, fields))

    def info(self, event: str, **fields: Any) -> None:
        self._add("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._add("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._add("error", event, **fields)
