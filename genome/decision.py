"""Decision: one evaluation of a gene by the motors, stored with enough to replay it.

A Decision keeps the gene version hash, the full input states, the RNG seed, the motor
versions and the request parameters (Monte Carlo N, epsilon, ...), plus each motor's
output. `gd-node decisions replay` re-runs the motors from exactly these inputs and
compares the outputs field by field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gd.genome import canonical, checks
from gd.genome.content_record import ContentRecord
from gd.genome.errors import ValidationError
from gd.genome.state import StateVector

DetailValue = str | int | float | bool | None


@dataclass(frozen=True)
class MotorResult:
    """One motor's output: score in [0, 1], veto flag, short explanation, numeric details."""

    motor: str
    version: str
    score: float
    veto: bool
    explanation: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks.text("motor", self.motor, 32, required=True)
        checks.text("version", self.version, 32)
        score = checks.finite("score", self.score)
        if not 0.0 <= score <= 1.0:
            raise ValidationError("score", f"{score} is outside [0, 1]")
        object.__setattr__(self, "score", score)
        checks.boolean("veto", self.veto)
        checks.text("explanation", self.explanation, 4 * checks.MAX_TEXT_LEN)
        object.__setattr__(self, "details", MappingProxyType(dict(
            canonical.normalize(checks.require_map("details", self.details)))))

    def to_plain(self) -> dict[str, Any]:
        return {"details": dict(self.details), "explanation": self.explanation,
                "motor": self.motor, "score": self.score, "version": self.version,
                "veto": self.veto}

    @classmethod
    def from_plain(cls, data: Any) -> MotorResult:
        data = checks.require_map("motor_result", data)
        return cls(motor=data["motor"], version=data["version"], score=data["score"],
                   veto=data["veto"], explanation=data["explanation"],
                   details=data.get("details", {}))


@dataclass(frozen=True)
class Decision(ContentRecord):
    gene_id: str
    gene_version: str
    domain: str
    states: tuple[StateVector, ...]
    seed: int
    request: Mapping[str, Any]
    results: tuple[MotorResult, ...]
    cp: float
    band: str
    verdict: str
    decided_at: int
    node: str = ""

    def __post_init__(self) -> None:
        checks.ident("gene_id", self.gene_id)
        checks.text("gene_version", self.gene_version, 64)
        checks.slug("domain", self.domain)
        states = checks.nonempty_tuple("states", self.states, 1_000_000)
        for i, state in enumerate(states):
            if not isinstance(state, StateVector):
                raise ValidationError(f"states[{i}]", "expected a StateVector")
        object.__setattr__(self, "states", states)
        checks.uint("seed", self.seed)
        object.__setattr__(self, "request", MappingProxyType(dict(
            canonical.normalize(checks.require_map("request", self.request)))))
        object.__setattr__(self, "results", tuple(self.results))
        cp = checks.finite("cp", self.cp)
        if not 0.0 <= cp <= 1.0:
            raise ValidationError("cp", f"{cp} is outside [0, 1]")
        object.__setattr__(self, "cp", cp)
        checks.text("band", self.band, 32)
        checks.text("verdict", self.verdict, 32, required=True)
        checks.uint("decided_at", self.decided_at)
        checks.text("node", self.node, checks.MAX_ID_LEN)

    def to_plain(self) -> dict[str, Any]:
        return {
            "band": self.band, "cp": self.cp, "decided_at": self.decided_at,
            "domain": self.domain, "gene_id": self.gene_id, "gene_version": self.gene_version,
            "node": self.node, "request": dict(self.request),
            "results": [r.to_plain() for r in self.results], "seed": self.seed,
            "states": [s.to_plain() for s in self.states], "verdict": self.verdict,
        }

    @classmethod
    def from_plain(cls, data: Any) -> Decision:
        data = checks.require_map("decision", data)
        return cls(
            gene_id=data["gene_id"], gene_version=data["gene_version"], domain=data["domain"],
            states=tuple(StateVector.from_plain(s) for s in data["states"]),
            seed=data["seed"], request=data["request"],
            results=tuple(MotorResult.from_plain(r) for r in data["results"]),
            cp=data["cp"], band=data["band"], verdict=data["verdict"],
            decided_at=data["decided_at"], node=data.get("node", ""),
        )

    def result(self, motor: str) -> MotorResult | None:
        return next((r for r in self.results if r.motor == motor), None)
