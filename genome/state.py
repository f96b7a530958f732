"""StateVector: a domain's named numeric features at one instant."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from gd.genome import checks
from gd.genome.errors import ValidationError


@dataclass(frozen=True)
class StateVector:
    """`values` maps feature name → finite float; `entity` and `t` locate the instant
    (a turbofan unit and its cycle, a loan case and its elapsed hours)."""

    domain: str
    values: Mapping[str, float]
    entity: str = ""
    t: int = 0

    def __post_init__(self) -> None:
        checks.slug("domain", self.domain)
        values = checks.require_map("values", self.values)
        if not values:
            raise ValidationError("values", "a state needs at least one feature")
        if len(values) > checks.MAX_FEATURES:
            raise ValidationError("values", f"more than {checks.MAX_FEATURES} features")
        clean = {checks.feature(f"values.{k}", k): checks.finite(f"values.{k}", values[k])
                 for k in sorted(values)}
        object.__setattr__(self, "values", MappingProxyType(clean))
        checks.text("entity", self.entity, checks.MAX_ID_LEN)
        if isinstance(self.t, bool) or not isinstance(self.t, int):
            raise ValidationError("t", f"expected an integer, got {self.t!r}")

    def vector(self, features: Sequence[str]) -> list[float]:
        """Values in the order `features` names them; ValidationError if one is missing."""
        try:
            return [self.values[name] for name in features]
        except KeyError as exc:
            raise ValidationError(f"values.{exc.args[0]}", "is missing from the state") from None

    def to_plain(self) -> dict[str, Any]:
        return {"domain": self.domain, "entity": self.entity, "t": self.t,
                "values": dict(self.values)}

    @classmethod
    def from_plain(cls, data: Any) -> StateVector:
        data = checks.require_map("state", data)
        checks.known_keys("state", data, {"domain", "entity", "t", "values"})
        try:
            return cls(domain=data["domain"], values=data["values"],
                       entity=data.get("entity", ""), t=data.get("t", 0))
        except KeyError as exc:
            raise ValidationError(f"state.{exc.args[0]}", "is required") from None
