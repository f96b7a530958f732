"""The web console: three static files the daemon serves at `/console/`.

The console is a client of the public API and nothing more: the page itself holds no
data and needs no credential (a browser cannot attach a bearer token to a navigation),
so these routes sit outside the authenticated pipeline and outside the OpenAPI
document. Everything the page shows it fetches from `/v1` with the token the person
typed in, kept in sessionStorage and sent as `Authorization: Bearer` — never a cookie,
so a page on another origin cannot make the browser act for the person (no CSRF).

The assets ship inside the package (pyproject package-data) and are read once: no CDN,
no build step, works offline. Every answer carries a strict Content-Security-Policy:
scripts, styles and connections only from this origin, no inline script, no framing.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Final

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gd.node.api.problems import Problem

CONSOLE_DIR: Final = Path(__file__).with_name("console")
# The only files served, with their media types: a fixed list, so no path a client
# sends can name anything else on disk (no traversal to guard against).
ASSETS: Final = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'")
CONSOLE_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # Small files, and a new daemon may ship new ones: always asked again.
    "Cache-Control": "no-cache",
}


@functools.cache
def asset(name: str) -> bytes:
    """One shipped file's bytes (read once per process)."""
    if name not in ASSETS:
        raise KeyError(name)
    return (CONSOLE_DIR / name).read_bytes()


def _answer(name: str) -> Response:
    try:
        body = asset(name)
    except (KeyError, OSError):
        response = Problem(404, f"the console has no file {name!r}").response(
            f"/console/{name}")
        response.headers.update(CONSOLE_HEADERS)
        return response
    return Response(body, media_type=ASSETS[name], headers=CONSOLE_HEADERS)


async def console_index(request: Request) -> Response:
    return _answer("index.html")


async def console_asset(request: Request) -> Response:
    return _answer(str(request.path_params["name"]))


async def console_root(request: Request) -> Response:
    """`/` and `/console` lead to the console: what a person typing the URL expects."""
    return RedirectResponse("/console/", status_code=307, headers=CONSOLE_HEADERS)


ROUTES: Final[tuple[BaseRoute, ...]] = (
    Route("/", console_root, methods=["GET"]),
    Route("/console", console_root, methods=["GET"]),
    Route("/console/", console_index, methods=["GET"]),
    # Where the OIDC issuer sends the person back (node/api/oidc_login.py): the same
    # page, which finishes the sign-in from the query string.
    Route("/console/callback", console_index, methods=["GET"]),
    Route("/console/{name}", console_asset, methods=["GET"]),
)
