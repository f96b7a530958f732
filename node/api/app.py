"""The ASGI app: every request goes through one pipeline, built from the route table.

    authenticate (401) → rate limit per credential (429) → role (403) → body within its
    limit (413, 415) → handler (problem+json on any error) → audit record when mutating

Nothing reaches a handler unauthenticated, and every handler's error leaves as RFC 9457
problem+json: a `Problem` as itself, anything unexpected as a 500 that says to look at
the node's log (the traceback goes there, never to the client).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.routing import Route as StarletteRoute

from gd.node.api import oidc_login, views_console
from gd.node.api.auth import Principal, authenticate
from gd.node.api.problems import Problem
from gd.node.api.ratelimit import retry_after_header
from gd.node.api.routing import Ctx, Route, body_sha256
from gd.node.api.services import ApiServices
from gd.node.jsonable import json_default

# Every answer: not cached by anything in between (it is per-credential), not sniffed.
SECURITY_HEADERS: Final = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
EMPTY_SHA256: Final = body_sha256(b"")




def json_response(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, default=json_default, allow_nan=False),
                    status_code=status, media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise Problem(413, f"the body is {declared} bytes; the limit is {limit}")
        except ValueError:
            raise Problem(400, "Content-Length is not a number") from None
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise Problem(413, f"the body is over the limit of {limit} bytes")
    return bytes(buf)


def _client(request: Request) -> str:
    return f"addr:{request.client.host if request.client else '?'}"


class Pipeline:
    """One route's endpoint: the steps in the module docstring around its handler."""

    def __init__(self, api: ApiServices, route: Route) -> None:
        self.api = api
        self.route = route

    async def __call__(self, request: Request) -> Response:
        api, route = self.api, self.route
        principal: Principal | None = None
        ctx: Ctx | None = None
        try:
            try:
                principal = await authenticate(api.tokens, request.headers, api.oidc)
            except Problem:
                self._limit(_client(request))  # a flood of bad credentials is limited too
                raise
            self._limit(principal.actor)
            principal.require(route.role, f"{route.method} {route.path}")
            ctx = Ctx(request, principal, api, route)
            if route.body == "json":
                ctx.body_bytes = await read_body(request, api.settings.max_body_bytes)
                if ctx.body_bytes and "json" not in request.headers.get("content-type", ""):
                    raise Problem(415, "send the body as application/json")
                ctx.payload_hash = body_sha256(ctx.body_bytes)
            elif route.body is None:
                ctx.payload_hash = EMPTY_SHA256
            result = await route.handler(ctx)
            response = (result if isinstance(result, Response)
                        else json_response(result, route.status))
        except Problem as problem:
            response = problem.response(request.url.path)
        except Exception as exc:  # a bug: logged here, a plain 500 for the client
            api.log.error("api.handler_failed", path=request.url.path, method=request.method,
                          error=f"{type(exc).__name__}: {exc}"[:300], exc_info=True)
            response = Problem(500, "the node failed to answer; its log says why"
                               ).response(request.url.path)
        if route.mutating and principal is not None and not (ctx is not None
                                                             and ctx.recorded):
            await self._record(principal, request, response.status_code,
                               ctx.payload_hash if ctx is not None else "")
        response.headers.update(SECURITY_HEADERS)
        return response

    def _limit(self, key: str) -> None:
        wait = self.api.limiter.check(key)
        if wait:
            raise Problem(429, f"rate limit of {self.api.settings.rate_per_s:g} requests/s "
                               "reached; retry later",
                          headers={"Retry-After": retry_after_header(wait)})

    async def _record(self, principal: Principal, request: Request, status: int,
                      payload_hash: str) -> None:
        gene = str(request.path_params.get("gene_id", ""))
        try:
            await trio.to_thread.run_sync(
                self.api.record_call, principal.actor, request.method, request.url.path,
                status, payload_hash or EMPTY_SHA256, gene)
        except Exception as exc:  # the call happened; a failed record is loud in the log
            self.api.log.error("api.audit_failed", path=request.url.path,
                               error=f"{type(exc).__name__}: {exc}"[:300])


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    detail = "no such endpoint (see /v1/openapi.json)" if status == 404 else (
        f"{request.method} is not allowed here")
    response = Problem(status, detail).response(request.url.path)
    response.headers.update(SECURITY_HEADERS)
    return response


def build_app(api: ApiServices, routes: Sequence[Route], openapi: dict[str, Any]) -> Starlette:
    """The app for one daemon: the route table, the public OpenAPI document, and CORS
    only when [api] cors_origins names origins."""
    doc = json.dumps(openapi, sort_keys=True)

    async def openapi_json(request: Request) -> Response:
        return Response(doc, media_type="application/json", headers=SECURITY_HEADERS)

    def endpoint(pipeline: Pipeline) -> Any:
        async def run(request: Request) -> Response:  # a function: Starlette's handler shape
            return await pipeline(request)
        run.__name__ = pipeline.route.operation_id
        return run

    star: list[BaseRoute] = [StarletteRoute(r.path, endpoint(Pipeline(api, r)), methods=[r.method])
            for r in routes]
    star.append(StarletteRoute("/v1/openapi.json", openapi_json, methods=["GET"]))
    # The web console's static files: no credential (the page holds no data), not in
    # the OpenAPI document; it reads everything through the routes above.
    star.extend(views_console.ROUTES)
    # The console's OIDC sign-in: how a credential is obtained, so none is needed.
    star.extend(oidc_login.routes(oidc_login.OidcLogin(api.oidc, api.limiter)))
    middleware = []
    if api.settings.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(
            api.settings.cors_origins), allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"]))
    return Starlette(routes=star, middleware=middleware,
                     exception_handlers={404: _not_found, 405: _not_found})
