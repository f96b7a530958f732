"""Gene ids people can type: the full id, a unique prefix, or `domain/name`.

Tables print short ids and people remember names, so every command that takes a gene
id resolves it here, once, before its own work (`gene_argument`, `gene_option`). A ref
that names no gene passes through unchanged, so the command reports "no gene ..." as it
always did; an ambiguous one stops with the candidates listed, because guessing which
gene a person meant is how the wrong gene gets approved.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import click

from gd.cli.output import Failure, resolve_home
from gd.genome.gene import gene_id_for
from gd.node.local import HomeError, open_local
from gd.node.store.cortex import Cortex, CortexError

F = TypeVar("F", bound=Callable[..., Any])

# Shorter prefixes match too much to be worth resolving (and read like typos).
MIN_PREFIX: Final = 4
# Candidates listed in an ambiguity error.
MAX_CANDIDATES: Final = 8
SHORT_GENE_ID: Final = 12


class AmbiguousGene(CortexError):
    """A prefix or domain/name that matches more than one gene."""


def _describe(cortex: Cortex, gene_ids: list[str]) -> str:
    shown = []
    for gid in gene_ids[:MAX_CANDIDATES]:
        gene = cortex.get_gene(gid)
        shown.append(f"{gid} ({gene.domain}/{gene.name})" if gene is not None else gid)
    more = f", and {len(gene_ids) - MAX_CANDIDATES} more" if len(gene_ids) > MAX_CANDIDATES \
        else ""
    return ", ".join(shown) + more


def resolve_gene_id(cortex: Cortex, text: str, own_peer: str | None = None) -> str | None:
    """The full id `text` names, or None when it names no gene. `text` is a full id, a
    unique prefix of at least MIN_PREFIX characters, or `domain/name` (this node's own
    gene of that name first, else the only gene of that name). Raises AmbiguousGene."""
    ref = text.strip()
    if not ref:
        return None
    if cortex.get_gene(ref) is not None:
        return ref
    if "/" in ref:
        domain, name = ref.split("/", 1)
        if own_peer is not None:
            own = gene_id_for(own_peer, domain, name)
            if cortex.get_gene(own) is not None:
                return own
        matches = [g.id for g in cortex.genes(domain=domain) if g.name == name]
        if len(matches) > 1:
            raise AmbiguousGene(f"{ref!r} names {len(matches)} genes (one per origin): "
                                f"{_describe(cortex, matches)}; give the id")
        return matches[0] if matches else None
    if len(ref) < MIN_PREFIX:
        return None
    db = cortex.open_db("genes")
    found: list[str] = []
    with cortex.env.begin() as txn:
        cursor = txn.cursor(db=db)
        if cursor.set_range(ref.encode()):
            for key in cursor.iternext(keys=True, values=False):
                if not key.startswith(ref.encode()) or len(found) > MAX_CANDIDATES:
                    break
                found.append(key.decode())
    if len(found) > 1:
        raise AmbiguousGene(f"gene id prefix {ref!r} is ambiguous: {_describe(cortex, found)}"
                            "; give more characters")
    return found[0] if found else None


def resolve_in_home(home: Path | None, text: str) -> str:
    """`text` resolved in the Cortex of `home`; unchanged when it names nothing (or the
    home cannot be opened: the command then says why)."""
    try:
        with open_local(resolve_home(home), readonly=True) as node:
            full = resolve_gene_id(node.cortex, text, node.key.peer_id)
    except AmbiguousGene as exc:
        raise Failure(str(exc)) from None
    except (HomeError, CortexError, OSError):
        return text
    return full if full is not None else text


def _resolving(names: tuple[str, ...], fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for name in names:
            value = kwargs.get(name)
            if isinstance(value, str):
                kwargs[name] = resolve_in_home(kwargs.get("home"), value)
        return fn(*args, **kwargs)

    # Which parameters are resolved (tests check every gene parameter is).
    wrapper.gene_refs = (*getattr(fn, "gene_refs", ()), *names)  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


REF_HELP = "a full id, a unique prefix of it, or domain/name"


def gene_argument(name: str = "gene_id", metavar: str | None = None) -> Callable[[F], F]:
    """A positional gene reference (see the module docstring), resolved to a full id
    before the command runs. The command must take `home`."""
    def decorate(fn: F) -> F:
        return click.argument(name, metavar=metavar or name.upper())(_resolving((name,), fn))

    return decorate


def gene_option(*decls: str, name: str = "gene_id", help: str = "The gene",
                **kwargs: Any) -> Callable[[F], F]:
    """A gene reference given as an option (`--gene`), resolved like `gene_argument`."""
    def decorate(fn: F) -> F:
        return click.option(*decls, name, help=f"{help} ({REF_HELP}).", **kwargs)(
            _resolving((name,), fn))

    return decorate
