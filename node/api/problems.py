"""RFC 9457 problem details: every API error is `application/problem+json`.

    {"type": "https://gd-node.dev/problems/forbidden", "title": "Forbidden",
     "status": 403, "detail": "approving needs the approver role", "instance": "/v1/..."}

Handlers raise `Problem`; the app turns it (and every exception a handler did not
expect: a 500 with no traceback, logged on the daemon's side) into the response. The
`type` URIs are stable identifiers for clients to switch on; they need not resolve
(RFC 9457 §3.1.1), and docs/api.md lists them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from starlette.responses import Response

MEDIA_TYPE: Final = "application/problem+json"
TYPE_BASE: Final = "https://gd-node.dev/problems/"
TITLES: Final = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large",
    415: "Unsupported Media Type", 422: "Unprocessable Content", 429: "Too Many Requests",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
}
# status -> the short name in the type URI
SLUGS: Final = {
    400: "bad-request", 401: "unauthenticated", 403: "forbidden", 404: "not-found",
    405: "method-not-allowed", 409: "conflict", 413: "too-large",
    415: "unsupported-media-type", 422: "invalid", 429: "rate-limited",
    500: "internal", 502: "bad-gateway", 503: "unavailable",
}


class Problem(Exception):
    """An error the client caused or must know about; `headers` go on the response
    (`WWW-Authenticate` on 401, `Retry-After` on 429)."""

    def __init__(self, status: int, detail: str, *, slug: str | None = None,
                 headers: Mapping[str, str] | None = None,
                 extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug or SLUGS.get(status, "error")
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self, instance: str = "") -> dict[str, Any]:
        data: dict[str, Any] = {"type": TYPE_BASE + self.slug,
                                "title": TITLES.get(self.status, "Error"),
                                "status": self.status, "detail": self.detail}
        if instance:
            data["instance"] = instance
        data.update(self.extra)
        return data

    def response(self, instance: str = "") -> Response:
        return Response(json.dumps(self.body(instance)), status_code=self.status,
                        media_type=MEDIA_TYPE, headers=self.headers)


def not_found(what: str) -> Problem:
    return Problem(404, f"no {what}")


def invalid(detail: str) -> Problem:
    return Problem(422, detail)
