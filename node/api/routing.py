"""The one route table: each `Route` says its method, path, the least role it needs,
what it reads from the query and body, and its handler. The server (node/api/app.py)
and the OpenAPI document (node/api/openapi.py) are both built from it, so a route cannot
be served without being documented, or documented without being served.

Handlers take a `Ctx` (the request, the authenticated caller, the node's services) and
return JSON-able data, or a Starlette `Response` for other media types.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import trio
from starlette.requests import Request

from gd.node.api.auth import Principal
from gd.node.api.problems import Problem
from gd.node.api.roles import Role

if TYPE_CHECKING:
    from gd.node.api.services import ApiServices

Handler = Callable[["Ctx"], Awaitable[Any]]
# Query paging: a page of more than this many rows is refused rather than truncated.
MAX_PAGE: Final = 1000
DEFAULT_PAGE: Final = 100


@dataclass(frozen=True)
class Param:
    """A query parameter: name, JSON-schema type ("string", "integer", "boolean")."""

    name: str
    type: str = "string"
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    role: Role
    summary: str
    tag: str
    query: tuple[Param, ...] = ()
    # None: no body; "json": a JSON object (limit api.max_body_bytes); "upload": a raw
    # stream the handler reads itself (limit api.max_upload_bytes).
    body: str | None = None
    body_schema: dict[str, Any] | None = None
    # Media type of a success answer; statuses a client should expect besides 2xx/401.
    media: str = "application/json"
    status: int = 200
    errors: tuple[int, ...] = ()
    # Audited as a change (actor, time, payload hash); every POST/PUT/DELETE is.
    mutating: bool = False
    streaming: bool = False

    @property
    def operation_id(self) -> str:
        return self.handler.__name__.removeprefix("h_")


@dataclass
class Ctx:
    """One request as a handler sees it."""

    request: Request
    principal: Principal
    api: ApiServices
    route: Route
    body_bytes: bytes = b""
    # SHA-256 of the request body: set before the handler for JSON bodies, by the
    # handler for uploads it streams (the audit record names it).
    payload_hash: str = field(default="")
    # Set by a handler whose change and its audit record committed together
    # (`audit_in`): the pipeline then writes no second record.
    recorded: bool = False

    @property
    def path_params(self) -> dict[str, Any]:
        return dict(self.request.path_params)

    def path(self, name: str) -> str:
        return str(self.request.path_params[name])

    def query(self, name: str, default: str | None = None) -> str | None:
        return self.request.query_params.get(name, default)

    def query_int(self, name: str, default: int, *, lo: int = 0, hi: int = 2**63 - 1) -> int:
        text = self.request.query_params.get(name)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            raise Problem(400, f"query parameter {name!r} must be an integer") from None
        if not lo <= value <= hi:
            raise Problem(400, f"query parameter {name!r} must be in [{lo}, {hi}]")
        return value

    def query_bool(self, name: str, default: bool = False) -> bool:
        text = self.request.query_params.get(name)
        if text is None:
            return default
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise Problem(400, f"query parameter {name!r} must be true or false")

    def page(self) -> tuple[int, int]:
        """(offset, limit) from `offset` and `limit`."""
        return (self.query_int("offset", 0),
                self.query_int("limit", DEFAULT_PAGE, lo=1, hi=MAX_PAGE))

    def json(self) -> dict[str, Any]:
        """The JSON object body (already read within the limit)."""
        if not self.body_bytes:
            return {}
        try:
            data = json.loads(self.body_bytes)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Problem(400, f"the body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise Problem(422, "the body must be a JSON object")
        return data

    async def thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Blocking work (LMDB, motors) off the event loop."""
        return await trio.to_thread.run_sync(fn, *args)

    def audit_in(self, status: int) -> Callable[[Any], object]:
        """The audit record of this call as a step of the handler's own write
        transaction (LMDB): the change and who made it commit together, in one fsync,
        instead of a second transaction after the answer is known. The handler sets
        `recorded` once that transaction has committed."""
        request, gene = self.request, str(self.request.path_params.get("gene_id", ""))

        def record(txn: Any) -> object:
            return self.api.record_call_in(
                txn, self.principal.actor, request.method, request.url.path, status,
                self.payload_hash or body_sha256(b""), gene)
        return record

    async def write(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A mutation: one at a time (the daemon is the node's one writer), off the loop."""
        async with self.api.write_lock:
            return await trio.to_thread.run_sync(fn, *args)


def body_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def paged(rows: Sequence[Any], offset: int, limit: int) -> dict[str, Any]:
    """A page of `rows` with the total, so a client knows when to stop."""
    return {"total": len(rows), "offset": offset, "limit": limit,
            "items": list(rows[offset:offset + limit])}
