"""Domain packs and their registry: `get_domain(name)`, `demo_genes(name)`."""

from __future__ import annotations

from typing import Any

from gd.motors.domains.loan import LoanPack
from gd.motors.domains.pack import DomainConfig, DomainPack
from gd.motors.domains.turbofan import TurbofanPack
from gd.motors.errors import UnknownDomainError

_REGISTRY: dict[str, DomainPack] = {}


def register(pack: DomainPack) -> None:
    """Add a pack under its `name` (a later registration under the same name wins)."""
    _REGISTRY[pack.name] = pack


def domain_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def get_domain(name: str) -> DomainPack:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownDomainError(
            f"unknown domain {name!r}; known domains: {', '.join(domain_names())}") from None


def demo_genes(domain: str) -> list[dict[str, Any]]:
    """Demo genes of `domain` in the JSONL import format."""
    return get_domain(domain).demo_genes()


register(TurbofanPack())
register(LoanPack())

__all__ = ["DomainConfig", "DomainPack", "demo_genes", "domain_names", "get_domain", "register"]
