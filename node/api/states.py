"""States in API bodies: `{"values": {feature: number}, "entity": "...", "t": 0}`.

Checked here against the gene's domain pack (every feature present, each finite), so a
bad state is a 422 naming it before any motor runs or any job is queued.
"""

from __future__ import annotations

from typing import Any, Final

from gd.genome import StateVector
from gd.genome.errors import ValidationError
from gd.node.api.problems import Problem

MAX_STATES_PER_REQUEST: Final = 10_000


def parse_states(raw: Any, domain: str, *, limit: int = MAX_STATES_PER_REQUEST
                 ) -> list[StateVector]:
    from gd.motors.domains import get_domain  # numpy loads on first use (ADR 0063)
    if not isinstance(raw, list) or not raw:
        raise Problem(422, "`states` must be a non-empty list of "
                           "{values: {feature: number}, entity?, t?}")
    if len(raw) > limit:
        raise Problem(413, f"{len(raw)} states; at most {limit} here")
    features = get_domain(domain).features
    out: list[StateVector] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("values"), dict):
            raise Problem(422, f"states[{i}]: expected {{values: {{feature: number}}}}")
        values = item["values"]
        missing = [f for f in features if f not in values]
        unknown = [k for k in values if k not in features]
        if missing or unknown:
            raise Problem(422, f"states[{i}]: " + "; ".join(
                part for part in (f"missing {', '.join(missing)}" if missing else "",
                                  f"not features of {domain}: {', '.join(map(str, unknown))}"
                                  if unknown else "") if part))
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in values.values()):
            raise Problem(422, f"states[{i}]: every value must be a number")
        try:
            out.append(StateVector(domain=domain, values={k: float(v) for k, v in values.items()},
                                   entity=str(item.get("entity", "")), t=item.get("t", 0)))
        except ValidationError as exc:
            raise Problem(422, f"states[{i}]: {exc}") from None
    return out


def states_to_plain(states: list[StateVector]) -> list[dict[str, Any]]:
    return [{"values": dict(s.values), "entity": s.entity, "t": s.t} for s in states]
