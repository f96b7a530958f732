"""Experience: an observed outcome of applying a gene in a state; M_P's evidence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gd.genome import checks
from gd.genome.content_record import ContentRecord
from gd.genome.state import StateVector


@dataclass(frozen=True)
class Experience(ContentRecord):
    """`success` is the binary outcome; `reward` an optional graded one. `observed_at`
    is an HLC stamp (or epoch ms) of the observation; `recorder` the observing node."""

    gene_id: str
    gene_version: str
    state: StateVector
    success: bool
    observed_at: int
    recorder: str
    reward: float | None = None
    note: str = ""

    def __post_init__(self) -> None:
        checks.ident("gene_id", self.gene_id)
        checks.text("gene_version", self.gene_version, 64)
        if not isinstance(self.state, StateVector):
            from gd.genome.errors import ValidationError

            raise ValidationError("state", "expected a StateVector")
        checks.boolean("success", self.success)
        checks.uint("observed_at", self.observed_at)
        checks.text("recorder", self.recorder, checks.MAX_ID_LEN)
        if self.reward is not None:
            object.__setattr__(self, "reward", checks.finite("reward", self.reward))
        checks.text("note", self.note)

    def to_plain(self) -> dict[str, Any]:
        return {
            "gene_id": self.gene_id, "gene_version": self.gene_version, "note": self.note,
            "observed_at": self.observed_at, "recorder": self.recorder, "reward": self.reward,
            "state": self.state.to_plain(), "success": self.success,
        }

    @classmethod
    def from_plain(cls, data: Any) -> Experience:
        data = checks.require_map("experience", data)
        checks.known_keys("experience", data, {
            "gene_id", "gene_version", "note", "observed_at", "recorder", "reward", "state",
            "success"})
        return cls(
            gene_id=data["gene_id"], gene_version=data.get("gene_version", ""),
            state=StateVector.from_plain(data["state"]), success=data["success"],
            observed_at=data["observed_at"], recorder=data.get("recorder", ""),
            reward=data.get("reward"), note=data.get("note", ""),
        )
