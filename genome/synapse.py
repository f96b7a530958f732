"""Synapse: a weighted, typed edge between two genes (the Cortex's neural graph)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from gd.genome import canonical, checks
from gd.genome.errors import ValidationError


class SynapseKind(enum.StrEnum):
    FOLLOWS = "follows"        # target is usually applied after source
    INHIBITS = "inhibits"      # source firing argues against target
    SPECIALISES = "specialises"  # target is a narrower form of source (shares evidence)


@dataclass(frozen=True, slots=True)
class Synapse:
    source: str
    target: str
    kind: SynapseKind
    weight: float = 1.0

    def __post_init__(self) -> None:
        checks.ident("source", self.source)
        checks.ident("target", self.target)
        if self.source == self.target:
            raise ValidationError("target", "a synapse cannot connect a gene to itself")
        try:
            object.__setattr__(self, "kind", SynapseKind(self.kind))
        except ValueError:
            kinds = ", ".join(k.value for k in SynapseKind)
            raise ValidationError("kind", f"{self.kind!r} is not one of {kinds}") from None
        weight = checks.finite("weight", self.weight)
        if not 0.0 <= weight <= 1.0:
            raise ValidationError("weight", f"{weight} is outside [0, 1]")
        object.__setattr__(self, "weight", weight)

    def to_plain(self) -> dict[str, Any]:
        return {"kind": str(self.kind), "source": self.source, "target": self.target,
                "weight": self.weight}

    @classmethod
    def from_plain(cls, data: Any) -> Synapse:
        data = checks.require_map("synapse", data)
        checks.known_keys("synapse", data, {"kind", "source", "target", "weight"})
        try:
            return cls(data["source"], data["target"], data["kind"], data.get("weight", 1.0))
        except KeyError as exc:
            raise ValidationError(f"synapse.{exc.args[0]}", "is required") from None

    def encode(self) -> bytes:
        return canonical.encode(self.to_plain())
