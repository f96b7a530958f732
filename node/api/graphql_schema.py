"""The read-only GraphQL schema of the Cortex and its resolvers (graphql-core).

Objects are plain dicts; a field whose value is a function is resolved by calling it
(graphql-core's default resolver does that), so nested fields (a gene's synapses, its
decisions) are computed only when a query asks for them. Every gene that reaches a
result passes the caller's scope first (`Reader.gene`): outside it a gene, its
decisions and its experiences do not exist, as on the REST side.

Size: every object a resolver returns is charged to the request's budget
(`Reader.charge`); past `max_objects` the whole query is refused, not truncated, so a
client never mistakes a cut answer for a complete one.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from graphql import GraphQLError, GraphQLSchema, build_schema

from gd.genome import Decision, Experience, Gene
from gd.node.api.auth import Principal
from gd.node.app import decisions as dec
from gd.node.store.cortex import Cortex

MAX_LIST: Final = 500
DEFAULT_LIST: Final = 50
MAX_HOPS: Final = 4

SDL: Final = '''
"Read-only view of this node's Cortex, limited to the caller's scope."
type Query {
  "Head versions of genes, filtered."
  genes(domain: String, status: String, origin: String, limit: Int = 50): [Gene!]!
  gene(id: String!): Gene
  "Decisions, oldest first; since/until are ISO 8601 times."
  decisions(gene: String, domain: String, since: String, until: String,
            limit: Int = 50): [Decision!]!
  experiences(gene: String, domain: String, since: String, until: String,
              limit: Int = 50): [Experience!]!
}

type Gene {
  id: String!
  domain: String!
  name: String!
  version: Int!
  status: String!
  origin: String!
  action: String!
  condition: String!
  purpose: String!
  successes: Int!
  failures: Int!
  versions: [GeneVersion!]!
  "Genes within `hops` synapse hops (1 to 4), nearest first."
  synapses(hops: Int = 1): [Neighbour!]!
  decisions(limit: Int = 50): [Decision!]!
  experiences(limit: Int = 50): [Experience!]!
}

type GeneVersion { version: Int!, versionHash: String!, condition: String!, action: String! }

type Neighbour { distance: Int!, gene: Gene! }

type MotorScore { motor: String!, score: Float!, veto: Boolean!, explanation: String! }

type Decision {
  id: String!
  geneId: String!
  geneVersion: String!
  domain: String!
  decidedAt: String!
  seed: String!
  states: Int!
  cp: Float!
  band: String!
  verdict: String!
  motors: [MotorScore!]!
  gene: Gene
}

type Experience {
  id: String!
  geneId: String!
  success: Boolean!
  reward: Float
  note: String!
  observedAt: String!
  gene: Gene
}
'''


class TooLarge(Exception):
    """The result would hold more objects than the budget allows."""


def _wall_ms(stamp: int) -> int:
    """Milliseconds of an HLC stamp (the top 48 bits)."""
    return stamp >> 16


def _iso(stamp: int) -> str:
    ms = _wall_ms(stamp)
    if not 10**12 <= ms < 10**14:
        return str(stamp)
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


def _ms(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise GraphQLError(f"{name} must be an ISO 8601 time, e.g. "
                           "2026-01-31T12:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp() * 1000)


def _limit(value: int) -> int:
    if not 1 <= value <= MAX_LIST:
        raise GraphQLError(f"limit must be in [1, {MAX_LIST}]")
    return value


@dataclass
class Reader:
    """One query's view: the Cortex, the caller, and the object budget."""

    cortex: Cortex
    principal: Principal
    max_objects: int
    used: int = 0
    _genes: dict[str, Gene | None] = field(default_factory=dict)

    def charge(self, n: int) -> None:
        self.used += n
        if self.used > self.max_objects:
            raise TooLarge(f"the result would hold more than {self.max_objects} objects; "
                           "ask for less (smaller limits, fewer nested lists)")

    def gene(self, gene_id: str) -> Gene | None:
        """The gene if it exists and the caller may see it (cached for this query)."""
        if gene_id not in self._genes:
            g = self.cortex.get_gene(gene_id)
            self._genes[gene_id] = (g if g is not None
                                    and self.principal.sees_gene(g.id, g.domain) else None)
        return self._genes[gene_id]

    def sees(self, gene_id: str, domain: str) -> bool:
        return self.principal.sees_gene(gene_id, domain)

    def take(self, items: Iterable[Any], limit: int, make: Callable[[Any], Any]
             ) -> list[Any]:
        out: list[Any] = []
        for item in items:
            if len(out) >= limit:
                break
            out.append(item)
        self.charge(len(out))
        return [make(i) for i in out]

    # -- objects -----------------------------------------------------------------------
    def gene_obj(self, g: Gene) -> dict[str, Any]:
        return {
            "id": g.id, "domain": g.domain, "name": g.name, "version": g.version,
            "status": str(g.status), "origin": g.origin, "action": g.action,
            "condition": g.condition_text(), "purpose": g.purpose,
            "successes": g.successes, "failures": g.failures,
            "versions": lambda _info: self._versions(g),
            "synapses": lambda _info, hops=1: self._synapses(g, hops),
            "decisions": lambda _info, limit=DEFAULT_LIST: self.decisions_of(
                g.id, None, None, None, limit),
            "experiences": lambda _info, limit=DEFAULT_LIST: self.experiences_of(
                [g.id], None, None, limit),
        }

    def _versions(self, g: Gene) -> list[dict[str, Any]]:
        numbers = self.cortex.gene_versions(g.id)
        self.charge(len(numbers))
        out = []
        for v in numbers:
            old = self.cortex.get_gene_version(g.id, v)
            if old is not None:
                out.append({"version": old.version, "versionHash": old.version_hash.hex(),
                            "condition": old.condition_text(), "action": old.action})
        return out

    def _synapses(self, g: Gene, hops: int) -> list[dict[str, Any]]:
        if not 1 <= hops <= MAX_HOPS:
            raise GraphQLError(f"hops must be in [1, {MAX_HOPS}]")
        near = self.cortex.neighbourhood(g.id, hops)
        rows = sorted((d, gid) for gid, d in near.items() if gid != g.id and d > 0)
        visible = [(d, self.gene(gid)) for d, gid in rows]
        found = [(d, n) for d, n in visible if n is not None]
        self.charge(len(found))
        return [{"distance": d, "gene": self.gene_obj(n)} for d, n in found]

    def decision_obj(self, d: Decision) -> dict[str, Any]:
        return {
            "id": d.id, "geneId": d.gene_id, "geneVersion": d.gene_version,
            "domain": d.domain, "decidedAt": _iso(d.decided_at), "seed": str(d.seed),
            "states": len(d.states), "cp": d.cp, "band": d.band, "verdict": d.verdict,
            "motors": [{"motor": r.motor, "score": r.score, "veto": r.veto,
                        "explanation": r.explanation} for r in d.results],
            "gene": lambda _info: self.gene_or_none(d.gene_id),
        }

    def experience_obj(self, e: Experience) -> dict[str, Any]:
        return {"id": e.id, "geneId": e.gene_id, "success": e.success, "reward": e.reward,
                "note": e.note, "observedAt": _iso(e.observed_at),
                "gene": lambda _info: self.gene_or_none(e.gene_id)}

    def gene_or_none(self, gene_id: str) -> dict[str, Any] | None:
        g = self.gene(gene_id)
        if g is None:
            return None
        self.charge(1)
        return self.gene_obj(g)

    # -- lists -------------------------------------------------------------------------
    def decisions_of(self, gene_id: str | None, domain: str | None, since: str | None,
                     until: str | None, limit: int) -> list[dict[str, Any]]:
        lo, hi = _ms("since", since), _ms("until", until)
        limit = _limit(limit)

        def wanted(d: Decision) -> bool:
            ms = _wall_ms(d.decided_at)
            return (self.sees(d.gene_id, d.domain) and (domain is None or d.domain == domain)
                    and (lo is None or ms >= lo) and (hi is None or ms < hi))

        if gene_id is not None and self.gene(gene_id) is None:
            return []
        found = (d for d in dec.list_decisions(self.cortex, gene_id) if wanted(d))
        return self.take(found, limit, self.decision_obj)

    def experiences_of(self, gene_ids: Iterable[str], since: str | None, until: str | None,
                       limit: int) -> list[dict[str, Any]]:
        lo, hi = _ms("since", since), _ms("until", until)
        limit = _limit(limit)
        rows: list[Experience] = []
        for gid in gene_ids:
            if self.gene(gid) is None:
                continue
            rows.extend(e for e in self.cortex.experiences_for(gid)
                        if (lo is None or _wall_ms(e.observed_at) >= lo)
                        and (hi is None or _wall_ms(e.observed_at) < hi))
            if len(rows) > limit * 4 + MAX_LIST:
                break  # enough to fill the page after sorting; bounded work
        rows.sort(key=lambda e: (e.observed_at, e.id))
        return self.take(rows, limit, self.experience_obj)


def root_value(reader: Reader) -> dict[str, Any]:
    """The Query type's fields."""
    def genes(_info: Any, domain: str | None = None, status: str | None = None,
              origin: str | None = None, limit: int = DEFAULT_LIST) -> list[dict[str, Any]]:
        try:
            found = (g for g in reader.cortex.genes(domain=domain, status=status,
                                                    origin=origin)
                     if reader.sees(g.id, g.domain))
            return reader.take(found, _limit(limit), reader.gene_obj)
        except ValueError as exc:
            raise GraphQLError(str(exc)) from None

    def gene(_info: Any, id: str) -> dict[str, Any] | None:
        return reader.gene_or_none(id)

    def decisions(_info: Any, gene: str | None = None, domain: str | None = None,
                  since: str | None = None, until: str | None = None,
                  limit: int = DEFAULT_LIST) -> list[dict[str, Any]]:
        return reader.decisions_of(gene, domain, since, until, limit)

    def experiences(_info: Any, gene: str | None = None, domain: str | None = None,
                    since: str | None = None, until: str | None = None,
                    limit: int = DEFAULT_LIST) -> list[dict[str, Any]]:
        if gene is not None:
            ids: Iterable[str] = [gene]
        else:
            ids = (g.id for g in reader.cortex.genes(domain=domain)
                   if reader.sees(g.id, g.domain))
        return reader.experiences_of(ids, since, until, limit)

    return {"genes": genes, "gene": gene, "decisions": decisions,
            "experiences": experiences}


SCHEMA: Final[GraphQLSchema] = build_schema(SDL)
