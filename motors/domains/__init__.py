"""Domain packs and their registry: `get_domain(name)`, `demo_genes(name)`.

The built-in packs (turbofan, loan) are imported on the first lookup, not with this
package: they and their base class need numpy (~0.1-0.2 s), and the daemon imports the
registry's users (the received-gene check, the API's state parser) at start, before it
answers /healthz, while a pack is first needed when a gene arrives or is evaluated
(issue 15, ADR 0063).
"""

from __future__ import annotations

import threading
from importlib import import_module
from typing import TYPE_CHECKING, Any, Final

from gd.motors.errors import UnknownDomainError

if TYPE_CHECKING:
    from gd.motors.domains.pack import DomainConfig, DomainPack

# (module, class) of the packs every node knows; each registers under its own `name`.
_BUILT_IN: Final = (("gd.motors.domains.turbofan", "TurbofanPack"),
                    ("gd.motors.domains.loan", "LoanPack"))
_REGISTRY: dict[str, DomainPack] = {}
_loaded = False
_load_lock = threading.Lock()


def _load_built_in() -> None:
    """Import and register the built-in packs, once (`register` calls this first, so a
    pack registered under a built-in's name still replaces it, as when the built-ins
    were registered at import)."""
    global _loaded
    with _load_lock:
        if _loaded:
            return
        for module, cls in _BUILT_IN:
            pack = getattr(import_module(module), cls)()
            _REGISTRY[pack.name] = pack
        _loaded = True


def register(pack: DomainPack) -> None:
    """Add a pack under its `name` (a later registration under the same name wins)."""
    _load_built_in()
    _REGISTRY[pack.name] = pack


def domain_names() -> tuple[str, ...]:
    _load_built_in()
    return tuple(sorted(_REGISTRY))


def get_domain(name: str) -> DomainPack:
    pack = _REGISTRY.get(name) if isinstance(name, str) else None
    if pack is not None:
        return pack
    _load_built_in()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownDomainError(
            f"unknown domain {name!r}; known domains: {', '.join(domain_names())}") from None


def demo_genes(domain: str) -> list[dict[str, Any]]:
    """Demo genes of `domain` in the JSONL import format."""
    return get_domain(domain).demo_genes()


def __getattr__(name: str) -> Any:
    """`DomainConfig` and `DomainPack`, re-exported on first use (they import numpy)."""
    if name in ("DomainConfig", "DomainPack"):
        from gd.motors.domains import pack

        return getattr(pack, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DomainConfig", "DomainPack", "demo_genes", "domain_names", "get_domain", "register"]
