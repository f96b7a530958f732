"""The OpenAPI 3.1 document, built from the route table (node/api/routes.py).

Served at /v1/openapi.json and committed as docs/openapi.json; a test fails when they
differ, so a route change comes with its documentation in the same commit. Regenerate
with `python -m gd.node.api.openapi > docs/openapi.json`. Deterministic: no version
string, time or host in it, so it only changes when the routes do.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from typing import Any, Final

from gd.node.api.problems import MEDIA_TYPE, TITLES
from gd.node.api.roles import Role
from gd.node.api.routing import Route

API_VERSION: Final = "1.0.0"
_PATH_PARAM = re.compile(r"{([a-z_]+)}")

_SCHEMAS: Final = {
    "Problem": {
        "type": "object", "description": "RFC 9457 problem details",
        "required": ["type", "title", "status", "detail"],
        "properties": {"type": {"type": "string", "format": "uri"},
                       "title": {"type": "string"}, "status": {"type": "integer"},
                       "detail": {"type": "string"}, "instance": {"type": "string"}}},
    "State": {
        "type": "object", "required": ["values"],
        "properties": {"values": {"type": "object",
                                  "additionalProperties": {"type": "number"}},
                       "entity": {"type": "string"}, "t": {"type": "integer"}}},
}


def _problem(status: int) -> dict[str, Any]:
    return {"description": TITLES.get(status, "Error"),
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def _operation(route: Route) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(route.path)]
    params += [{"name": p.name, "in": "query", "required": p.required,
                "schema": {"type": p.type}, **({"description": p.description}
                                               if p.description else {})}
               for p in route.query]
    ok: dict[str, Any] = {"description": "OK" if route.status == 200 else "Accepted",
                          "content": {m.strip(): {} for m in route.media.split(",")}}
    responses: dict[str, Any] = {str(route.status): ok, "401": _problem(401),
                                 "429": _problem(429)}
    if route.role > Role.VIEWER:
        responses["403"] = _problem(403)
    for status in route.errors:
        responses[str(status)] = _problem(status)
    op: dict[str, Any] = {
        "operationId": route.operation_id, "summary": route.summary, "tags": [route.tag],
        "x-gd-role": route.role.label, "responses": dict(sorted(responses.items()))}
    if params:
        op["parameters"] = params
    if route.body == "json":
        op["requestBody"] = {"required": False, "content": {"application/json": {
            "schema": route.body_schema or {"type": "object"}}}}
    elif route.body == "upload":
        op["requestBody"] = {"required": True, "content": {
            "application/x-ndjson": {"schema": {"type": "string"}},
            "text/csv": {"schema": {"type": "string"}}}}
    return op


def build_openapi(routes: Sequence[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    paths["/v1/openapi.json"] = {"get": {
        "operationId": "openapi", "summary": "This document.", "tags": ["meta"],
        "security": [], "responses": {"200": {"description": "OK", "content": {
            "application/json": {}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "gd-node API", "version": API_VERSION,
                 "description": "The node's front door: see docs/api.md. Every error is "
                                "application/problem+json (RFC 9457). x-gd-role names "
                                "the least role a route needs."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "gd-node tokens create"}},
            "schemas": _SCHEMAS},
    }


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def main() -> None:
    from gd.node.api.routes import ALL_ROUTES

    sys.stdout.write(render(build_openapi(ALL_ROUTES)))


if __name__ == "__main__":
    main()
