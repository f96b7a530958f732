"""POST /v1/graphql: read-only GraphQL over the Cortex (schema in graphql_schema.py).

Limits, checked before anything is read:
* the query text (`MAX_QUERY_CHARS`) and its nesting depth (`MAX_DEPTH` selection
  levels, fragments followed; introspection fields exempt, the schema being finite);
* only queries: a mutation or subscription operation is refused (the schema has none,
  and the API's mutations go through REST, where they are audited).
Then, while resolving, the result's size (`MAX_OBJECTS` objects): past it the answer is
413, never a silently truncated result.

Validation errors (syntax, unknown fields, depth) answer 400 with GraphQL's `errors`
list; execution errors 200 with `data` and `errors`, as GraphQL-over-HTTP says.

The route itself is in graphql_route.py, which imports this module (graphql-core, the
schema, the decisions it resolves) on the first query, not at the daemon's start.
"""

from __future__ import annotations

from typing import Any, Final

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    execute,
    parse,
    validate,
)
from starlette.responses import Response

from gd.node.api.graphql_schema import SCHEMA, Reader, TooLarge, root_value
from gd.node.api.problems import Problem
from gd.node.api.routing import Ctx

MAX_QUERY_CHARS: Final = 20_000
MAX_DEPTH: Final = 6
MAX_OBJECTS: Final = 2_000


def depth(doc: DocumentNode) -> int:
    """The deepest selection nesting of any operation, fragments followed."""
    fragments = {d.name.value: d for d in doc.definitions
                 if isinstance(d, FragmentDefinitionNode)}

    def walk(sel: SelectionSetNode | None, seen: frozenset[str]) -> int:
        if sel is None:
            return 0
        deepest = 0
        for node in sel.selections:
            if isinstance(node, FieldNode):
                if node.name.value.startswith("__"):
                    continue
                deepest = max(deepest, 1 + walk(node.selection_set, seen))
            elif isinstance(node, InlineFragmentNode):
                deepest = max(deepest, walk(node.selection_set, seen))
            elif isinstance(node, FragmentSpreadNode):
                name = node.name.value
                if name in seen or name not in fragments:
                    continue  # cycles and unknown fragments: standard validation's job
                deepest = max(deepest, walk(fragments[name].selection_set, seen | {name}))
        return deepest

    return max((walk(d.selection_set, frozenset()) for d in doc.definitions
                if isinstance(d, OperationDefinitionNode)), default=0)


def _errors(errors: list[GraphQLError], status: int) -> Response:
    from gd.node.api.app import json_response

    return json_response({"errors": [e.formatted for e in errors]}, status)


async def h_graphql(ctx: Ctx) -> Any:
    body = ctx.json()
    query, variables = body.get("query"), body.get("variables") or {}
    operation = body.get("operationName")
    if not isinstance(query, str) or not query.strip():
        raise Problem(422, 'send {"query": "...", "variables"?: {...}}')
    if len(query) > MAX_QUERY_CHARS:
        raise Problem(413, f"the query is over {MAX_QUERY_CHARS} characters")
    if not isinstance(variables, dict) or not (operation is None
                                               or isinstance(operation, str)):
        raise Problem(422, "variables must be an object, operationName a string")
    try:
        doc = parse(query)
    except GraphQLError as exc:
        return _errors([exc], 400)
    errors = validate(SCHEMA, doc)
    if errors:
        return _errors(errors, 400)
    if any(isinstance(d, OperationDefinitionNode) and d.operation is not OperationType.QUERY
           for d in doc.definitions):
        return _errors([GraphQLError("only queries: this GraphQL endpoint is read-only")],
                       400)
    found = depth(doc)
    if found > MAX_DEPTH:
        return _errors([GraphQLError(f"the query nests {found} levels; at most {MAX_DEPTH}")],
                       400)
    reader = Reader(ctx.api.cortex, ctx.principal, MAX_OBJECTS)

    def run() -> Any:
        return execute(SCHEMA, doc, root_value=root_value(reader),
                       variable_values=variables, operation_name=operation)

    result = await ctx.thread(run)
    if reader.used > reader.max_objects or any(
            isinstance(e.original_error, TooLarge) for e in result.errors or ()):
        raise Problem(413, f"the result would hold more than {MAX_OBJECTS} objects; ask "
                           "for less (smaller limits, fewer nested lists)")
    out: dict[str, Any] = {"data": result.data}
    if result.errors:
        out["errors"] = [e.formatted for e in result.errors]
    return out

