"""Codon and ShareScope: the condition terms and the sharing scope of a gene's body
(re-exported by `gd.genome.gene`, where they lived before issue 15 split the module)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gd.genome import checks
from gd.genome.errors import ValidationError

OPERATORS = ("<", "<=", ">", ">=", "==", "!=")
_FEATURE_MATCH = checks.FEATURE_RE.match
_LIST_OR_TUPLE = (list, tuple)  # built once (`checks._LIST_OR_TUPLE`)


@dataclass(frozen=True, slots=True)
class Codon:
    """One term of a condition: `sum(weight * state[feature]) <op> threshold`.

    A plain codon (`s11 > 47.6`) is the one-term case with weight 1; a weighted linear
    term (`0.5*s11 - s12 > 3`) has several. Terms are kept sorted by feature so that the
    same condition has one encoding.
    """

    op: str
    threshold: float
    terms: tuple[tuple[str, float], ...]

    def __post_init__(self) -> None:
        if self.op not in OPERATORS:
            raise ValidationError("op", f"unknown operator {self.op!r}; use one of {OPERATORS}")
        threshold = self.threshold
        if type(threshold) is not float or not math.isfinite(threshold):
            object.__setattr__(self, "threshold", checks.finite("threshold", threshold))
        raw = checks.nonempty_tuple("terms", self.terms, checks.MAX_TERMS)
        terms: dict[str, float] = {}
        for i, term in enumerate(raw):
            if not isinstance(term, _LIST_OR_TUPLE) or len(term) != 2:
                raise ValidationError(f"terms[{i}]", "expected [feature, weight]")
            # `checks.feature`/`finite` inline for the common case (issue 15); they
            # raise, with the field's name, on anything else.
            name, weight = term
            if type(name) is not str or not _FEATURE_MATCH(name):
                name = checks.feature(f"terms[{i}].feature", name)
            if type(weight) is not float or not math.isfinite(weight):
                weight = checks.finite(f"terms[{i}].weight", weight)
            if weight == 0.0:
                raise ValidationError(f"terms[{i}].weight", "a zero weight is not a term")
            if name in terms:
                raise ValidationError(f"terms[{i}].feature", f"{name!r} appears twice")
            terms[name] = weight
        object.__setattr__(self, "terms", tuple(sorted(terms.items())))

    @classmethod
    def simple(cls, feature: str, op: str, threshold: float) -> Codon:
        return cls(op=op, threshold=threshold, terms=((feature, 1.0),))

    @property
    def feature(self) -> str | None:
        """The feature of a plain one-term codon, else None."""
        if len(self.terms) == 1 and self.terms[0][1] == 1.0:
            return self.terms[0][0]
        return None

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.terms)

    def holds(self, state: Mapping[str, float]) -> bool:
        """Boolean test on one state (motors use the graded, vectorised form)."""
        lhs = sum(weight * state[name] for name, weight in self.terms)
        return _compare(lhs, self.op, self.threshold)

    def to_plain(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "terms": [[name, weight] for name, weight in self.terms],
            "threshold": self.threshold,
        }

    @classmethod
    def from_plain(cls, data: Any, where: str = "codon") -> Codon:
        """Accept the canonical form or the import shorthand `{feature, op, threshold}`."""
        data = checks.require_map(where, data)
        simple = "feature" in data
        checks.known_keys(where, data, {"feature", "op", "threshold"} if simple
                          else {"op", "terms", "threshold"})
        try:
            if simple:
                return cls.simple(data["feature"], data["op"], data["threshold"])
            terms = data["terms"]
            if isinstance(terms, Mapping):
                terms = list(terms.items())
            return cls(op=data["op"], threshold=data["threshold"], terms=terms)
        except KeyError as exc:
            raise ValidationError(f"{where}.{exc.args[0]}", "is required") from None
        except ValidationError as exc:
            raise ValidationError(f"{where}.{exc.field}", exc.message) from None

    def __str__(self) -> str:
        if self.feature is not None:
            return f"{self.feature} {self.op} {self.threshold:g}"
        lhs = " + ".join(f"{w:g}*{n}" for n, w in self.terms)
        return f"{lhs} {self.op} {self.threshold:g}"


def _compare(lhs: float, op: str, rhs: float) -> bool:
    if op == "<":
        return lhs < rhs
    if op == "<=":
        return lhs <= rhs
    if op == ">":
        return lhs > rhs
    if op == ">=":
        return lhs >= rhs
    if op == "==":
        return lhs == rhs
    return lhs != rhs


@dataclass(frozen=True, slots=True)
class ShareScope:
    """What the origin allows receivers to do with this gene (enforced by honest nodes).

    `forward`: may a receiver pass it on to a third organisation.
    `residency`: if set, the gene must never leave that region.
    """

    forward: bool = False
    residency: str = ""

    def __post_init__(self) -> None:
        checks.boolean("scope.forward", self.forward)
        if self.residency:
            checks.slug("scope.residency", self.residency)

    def to_plain(self) -> dict[str, Any]:
        return {"forward": self.forward, "residency": self.residency}

    @classmethod
    def from_plain(cls, data: Any) -> ShareScope:
        data = checks.require_map("scope", data)
        checks.known_keys("scope", data, {"forward", "residency"})
        return cls(forward=data.get("forward", False), residency=data.get("residency", ""))
