"""[adaptation] in config.toml: whether and how much the daemon adapts on its own
(gd.node.app.auto_adapt). Imports nothing heavy: node/config.py reads it at every start,
also for read-only CLI commands."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

# Upper bounds of the settings: a search of 4096 × 20 over 512 states takes minutes on
# two cores; more queued jobs than this would hold the (single) job runner for hours.
MAX_QUEUED_LIMIT: Final = 1024
MAX_POPULATION: Final = 4096
MAX_GENERATIONS: Final = 40


class AdaptationSettingsError(ValueError):
    """An [adaptation] value is invalid (config.py turns it into a ConfigError)."""


@dataclass(frozen=True)
class AdaptationSettings:
    """[adaptation] in config.toml. Defaults: on, small searches (an auto job is a
    background chore; a person asks for a bigger one with `gd-node adapt`)."""

    auto: bool = True
    max_queued: int = 64
    max_per_peer: int = 8
    population: int = 512
    generations: int = 10

    def __post_init__(self) -> None:
        if type(self.auto) is not bool:
            raise AdaptationSettingsError(
                f"[adaptation] auto: expected true or false, got {self.auto!r}")
        for name, hi in (("max_queued", MAX_QUEUED_LIMIT), ("max_per_peer", MAX_QUEUED_LIMIT),
                         ("population", MAX_POPULATION), ("generations", MAX_GENERATIONS)):
            value = getattr(self, name)
            lo = 2 if name == "population" else 1
            if type(value) is not int or not lo <= value <= hi:
                raise AdaptationSettingsError(
                    f"[adaptation] {name}: expected an integer in {lo}..{hi}, got {value!r}")


def parse_adaptation_settings(body: Any) -> AdaptationSettings:
    """The [adaptation] table; AdaptationSettingsError naming an unknown key or a bad value."""
    if not isinstance(body, Mapping):
        raise AdaptationSettingsError("[adaptation] must be a table")
    known = [f.name for f in fields(AdaptationSettings)]
    for key in body:
        if key not in known:
            raise AdaptationSettingsError(
                f"[adaptation] {key}: unknown key (known: {', '.join(known)})")
    return AdaptationSettings(**body)
