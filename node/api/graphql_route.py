"""The POST /v1/graphql route; graphql_view.py answers it.

Why apart: graphql-core, the schema it builds and the decisions module its resolvers
read cost ~0.25 s to import, and the route table is imported before the daemon answers
/healthz. The handler imports the view on the first query instead (issue 15, ADR 0063).
"""

from __future__ import annotations

from typing import Any, Final

from gd.node.api.roles import Role
from gd.node.api.routing import Ctx, Route


async def h_graphql(ctx: Ctx) -> Any:
    """`graphql_view.h_graphql`, imported on first use."""
    from gd.node.api import graphql_view

    return await graphql_view.h_graphql(ctx)


ROUTES: Final = (
    Route("POST", "/v1/graphql", h_graphql, Role.VIEWER,
          "Read-only GraphQL over genes (k-hop synapses, versions), decisions and "
          "experiences, in the caller's scope.", "graphql", body="json",
          body_schema={"type": "object", "required": ["query"], "properties": {
              "query": {"type": "string"}, "variables": {"type": "object"},
              "operationName": {"type": "string"}}},
          errors=(400, 413, 422)),
)
