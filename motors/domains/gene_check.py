"""Does a gene make sense in its domain? Checked at the door, not at evaluate.

The gene format (`gd.genome.checks`) only knows shapes: a slug, a number, a known
operator. Whether `turbofann` is a domain, `s99` a feature of it, `explode` one of its
actions, or `lead_cycles: "soon"` a usable parameter, only the domain pack knows. A gene
that fails here would be stored as native and fail at its first evaluation, on this node
or on every peer it reached; so `gd.node.app.importer` checks each line with `check_gene`, and
the sync receive path checks each received gene with the same function.

`check_gene` is pure (no I/O, no clock) and cheap: set lookups on sets built once per
pack, so it can run on every gene a peer sends. Each problem is a `PackMismatch`, a
`ValidationError` naming the field (`domain`, `codons[1].feature`, `action`,
`params.lead_cycles`) so the importer reports "line N: field: reason" as it does for the
format.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from gd.genome.errors import ValidationError
from gd.genome.gene import OPERATORS
from gd.motors.domains import domain_names, get_domain
from gd.motors.errors import UnknownDomainError

if TYPE_CHECKING:
    from gd.motors.domains.pack import DomainPack

# Parameter value types a pack may declare, by the name a person reads in the error.
_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "text"}


class PackMismatch(ValidationError):
    """A gene's value that its domain pack does not know (domain, feature, operator,
    action or parameter type); `field` names it, as for format errors."""


class CodonLike(Protocol):
    @property
    def op(self) -> str: ...
    @property
    def terms(self) -> tuple[tuple[str, float], ...]: ...


class GeneLike(Protocol):
    """What is checked: a stored `Gene` or an import line's spec both fit (read-only,
    as both are frozen dataclasses)."""

    @property
    def domain(self) -> str: ...
    @property
    def codons(self) -> Sequence[CodonLike]: ...
    @property
    def action(self) -> str: ...
    @property
    def params(self) -> Mapping[str, Any]: ...


class _PackFacts:
    """A pack's names as sets, built once per pack object (packs are immutable)."""

    def __init__(self, pack: DomainPack) -> None:
        self.pack = pack
        self.features = frozenset(pack.features)
        self.actions = frozenset(pack.actions)
        self.operators = frozenset(pack.operators)
        self.param_types: Mapping[str, tuple[type, ...]] = dict(pack.param_types)


_FACTS: dict[int, _PackFacts] = {}


def _facts(pack: DomainPack) -> _PackFacts:
    facts = _FACTS.get(id(pack))
    if facts is None or facts.pack is not pack:
        facts = _FACTS[id(pack)] = _PackFacts(pack)
    return facts


def _hint(value: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _listing(names: Iterable[str], limit: int = 8) -> str:
    ordered = sorted(names)
    more = f", … ({len(ordered)} in all)" if len(ordered) > limit else ""
    return ", ".join(ordered[:limit]) + more


def _type_ok(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # bool is an int to Python, not to a person
        return bool in allowed
    if isinstance(value, int) and float in allowed:
        return True
    return isinstance(value, allowed)


def check_gene(gene: GeneLike) -> None:
    """Raise `PackMismatch` for the first value of `gene` its domain pack does not
    know: an unknown domain, a codon feature or operator outside the pack, an action the
    pack cannot take, or a parameter the pack declares with another type. Parameters a
    pack does not declare are the organisation's own notes and pass unchecked."""
    try:
        pack = get_domain(gene.domain)
    except UnknownDomainError:
        known = domain_names()
        raise PackMismatch("domain", f"unknown domain {gene.domain!r}"
                           f"{_hint(gene.domain, known)}; known domains: "
                           f"{_listing(known)}") from None
    facts = _facts(pack)
    for i, codon in enumerate(gene.codons):
        if codon.op not in facts.operators:
            raise PackMismatch(f"codons[{i}].op", f"operator {codon.op!r} is not used in "
                               f"domain {pack.name!r} (use one of "
                               f"{', '.join(o for o in OPERATORS if o in facts.operators)})")
        for j, (feature, _weight) in enumerate(codon.terms):
            if feature not in facts.features:
                where = f"codons[{i}].feature" if len(codon.terms) == 1 else \
                    f"codons[{i}].terms[{j}].feature"
                raise PackMismatch(where, f"{feature!r} is not a feature of domain "
                                   f"{pack.name!r}{_hint(feature, facts.features)}; "
                                   f"features: {_listing(pack.features)}")
    if gene.action not in facts.actions:
        raise PackMismatch("action", f"{gene.action!r} is not an action of domain "
                           f"{pack.name!r}{_hint(gene.action, facts.actions)}; actions: "
                           f"{', '.join(pack.actions)}")
    for name, value in gene.params.items():
        allowed = facts.param_types.get(name)
        if allowed is not None and not _type_ok(value, allowed):
            wanted = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in allowed)
            raise PackMismatch(f"params.{name}", f"{value!r} is not {wanted} (domain "
                               f"{pack.name!r} reads this parameter)")
