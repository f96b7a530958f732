"""The console's "Login with OIDC": Authorization Code flow with PKCE (RFC 7636, S256).

    console                      daemon (this module)              issuer
    GET /v1/auth/oidc   ───────► endpoints, client_id, scopes ◄── discovery document
    makes state, nonce, PKCE verifier (sessionStorage) and its S256 challenge
    navigates to authorization_endpoint ─────────────────────────► the person signs in
    /console/callback?code&state ◄──────────────────────────────── redirect
    checks state == the one it sent (else: refused, nothing sent anywhere)
    POST /v1/auth/oidc/token {code, code_verifier, redirect_uri, nonce}
                                 ───► token_endpoint (code + verifier; the issuer
                                      checks the verifier against the challenge)
                                 checks the ID token (signature, iss, aud = client_id,
                                 exp, nonce) and picks the bearer the API accepts
    {token, caller}     ◄───────
    then the token is a bearer like an API token (sessionStorage, never a cookie)

Why the daemon makes the token request (ADR 0022): the console's CSP allows
connections to its own origin only, and issuers differ in whether their token endpoint
answers browsers (CORS). The daemon only ever talks to the token endpoint of the
configured issuer's own discovery document, so a caller cannot point it anywhere else;
it keeps nothing (no session, no cookie) and hands back no refresh token.

These two routes need no credential (they are how one is obtained): they are outside
the authenticated pipeline and the OpenAPI document, rate limited by client address.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any, Final

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gd.node.api.oidc import FETCH_TIMEOUT_S, MAX_DOCUMENT_BYTES, OidcError, OidcVerifier
from gd.node.api.problems import Problem

CALLBACK_PATH: Final = "/console/callback"
# RFC 7636 §4.1: 43 to 128 characters of the unreserved set.
_VERIFIER: Final = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
_NONCE: Final = re.compile(r"^[A-Za-z0-9._~-]{16,128}$")
MAX_CODE: Final = 2048
MAX_BODY: Final = 8 * 1024
# What the issuer's error texts may add to ours (they are shown to the person).
MAX_ISSUER_TEXT: Final = 200
NO_STORE: Final = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status_code=status, media_type="application/json",
                    headers=NO_STORE)


def _problem(problem: Problem, request: Request) -> Response:
    response = problem.response(request.url.path)
    response.headers.update(NO_STORE)
    return response


def _endpoint(doc: dict[str, Any], name: str, issuer: str) -> str:
    """An endpoint the discovery document names: https, or plain http only when the
    issuer itself is plain http (the loopback case oidc_settings allows)."""
    url = doc.get(name)
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("https", "http") or not parts.hostname:
        raise OidcError(f"the issuer's discovery document has no {name}")
    if parts.scheme == "http" and not issuer.startswith("http://"):
        raise OidcError(f"the issuer's {name} is plain http")
    assert isinstance(url, str)
    return url


class OidcLogin:
    """The two routes, for one daemon's verifier (None: OIDC not configured)."""

    def __init__(self, verifier: OidcVerifier | None, limiter: Any) -> None:
        self.verifier = verifier
        self.limiter = limiter

    @property
    def enabled(self) -> bool:
        return self.verifier is not None and bool(self.verifier.settings.client_id)

    def _limit(self, request: Request) -> None:
        key = f"addr:{request.client.host if request.client else '?'}"
        wait = self.limiter.check(key)
        if wait:
            raise Problem(429, "too many sign-in attempts; retry later",
                          headers={"Retry-After": str(max(1, int(wait + 0.999)))})

    async def config(self, request: Request) -> Response:
        """What the console needs to send the person to the issuer (nothing secret)."""
        try:
            self._limit(request)
            if not self.enabled:
                return _json({"enabled": False})
            assert self.verifier is not None
            s = self.verifier.settings
            try:
                doc = await self.verifier.discovery()
                authorize = _endpoint(doc, "authorization_endpoint", s.issuer)
            except OidcError as exc:
                raise Problem(503, f"OIDC sign-in is unavailable: {exc}") from None
            return _json({"enabled": True, "issuer": s.issuer, "client_id": s.client_id,
                          "scopes": s.scopes, "authorization_endpoint": authorize,
                          "callback_path": CALLBACK_PATH})
        except Problem as problem:
            return _problem(problem, request)

    async def token(self, request: Request) -> Response:
        """Exchange the code for tokens at the issuer; answer the bearer the API takes."""
        try:
            self._limit(request)
            if not self.enabled:
                raise Problem(404, "OIDC sign-in is not configured on this node "
                                   "([api.oidc] client_id)")
            body = await self._body(request)
            return _json(await self._exchange(body))
        except Problem as problem:
            return _problem(problem, request)

    async def _body(self, request: Request) -> dict[str, str]:
        if "json" not in request.headers.get("content-type", ""):
            raise Problem(415, "send the body as application/json")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                raise Problem(413, f"the body is over the limit of {MAX_BODY} bytes")
        try:
            data = json.loads(bytes(raw))
        except ValueError:
            raise Problem(400, "the body is not JSON") from None
        if not isinstance(data, dict):
            raise Problem(422, "expected a JSON object")
        code, verifier = data.get("code"), data.get("code_verifier")
        redirect, nonce = data.get("redirect_uri"), data.get("nonce")
        if not isinstance(code, str) or not 0 < len(code) <= MAX_CODE:
            raise Problem(422, "code: the authorization code from the issuer's redirect")
        if not isinstance(verifier, str) or not _VERIFIER.match(verifier):
            raise Problem(422, "code_verifier: 43 to 128 characters [A-Za-z0-9._~-] "
                               "(RFC 7636)")
        if not isinstance(nonce, str) or not _NONCE.match(nonce):
            raise Problem(422, "nonce: 16 to 128 characters [A-Za-z0-9._~-]")
        parts = urllib.parse.urlsplit(redirect) if isinstance(redirect, str) else None
        if (parts is None or parts.scheme not in ("http", "https")
                or parts.path != CALLBACK_PATH or parts.query or parts.fragment):
            raise Problem(422, f"redirect_uri must be this console's {CALLBACK_PATH}")
        assert isinstance(redirect, str)
        return {"code": code, "code_verifier": verifier, "redirect_uri": redirect,
                "nonce": nonce}

    async def _exchange(self, body: dict[str, str]) -> dict[str, Any]:
        assert self.verifier is not None
        verifier, s = self.verifier, self.verifier.settings
        try:
            endpoint = _endpoint(await verifier.discovery(), "token_endpoint", s.issuer)
        except OidcError as exc:
            raise Problem(503, f"OIDC sign-in is unavailable: {exc}") from None
        form = {"grant_type": "authorization_code", "code": body["code"],
                "redirect_uri": body["redirect_uri"], "client_id": s.client_id,
                "code_verifier": body["code_verifier"]}
        tokens = await self._post(endpoint, form)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise Problem(502, "the issuer sent no ID token (is `openid` among the scopes?)")
        try:
            identity = await verifier.verify_id_token(id_token, body["nonce"])
        except OidcError as exc:
            raise Problem(401, f"the issuer's ID token was refused: {exc}") from None
        bearer, kind = await self._bearer(tokens, id_token)
        checked = await verifier.verify(bearer)
        if checked.subject != identity.subject:
            raise Problem(401, "the access token and the ID token name different subjects")
        if checked.grant is None:
            raise Problem(403, f"OIDC subject {checked.subject!r} has no role on this node "
                               f"(its {s.roles_claim!r} claim maps to none)")
        return {"token": bearer, "kind": kind, "expires_at": checked.expires_at,
                "caller": {"actor": f"oidc:{checked.subject}", "role": checked.grant.role.label,
                           "domains": list(checked.grant.domains),
                           "genes": list(checked.grant.genes)}}

    async def _bearer(self, tokens: dict[str, Any], id_token: str) -> tuple[str, str]:
        """The access token when it is a JWT for this node's audience; else the ID token
        when the node's audience is the console's client id; else a clear refusal."""
        assert self.verifier is not None
        s = self.verifier.settings
        access = tokens.get("access_token")
        why = "the issuer sent no access token"
        if isinstance(access, str) and access:
            try:
                await self.verifier.verify(access)
                return access, "access_token"
            except OidcError as exc:
                why = f"its access token is not one this node accepts ({exc})"
        if s.audience == s.client_id:
            return id_token, "id_token"
        raise Problem(401, f"signed in at the issuer, but {why}; set [api.oidc] audience "
                           "to the console's client_id to use ID tokens")

    async def _post(self, url: str, form: dict[str, str]) -> dict[str, Any]:
        raw = bytearray()
        try:
            async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_S,
                                         follow_redirects=False) as client, client.stream(
                    "POST", url, data=form, headers={"Accept": "application/json"}) as reply:
                status = reply.status_code
                async for chunk in reply.aiter_bytes():
                    raw += chunk
                    if len(raw) > MAX_DOCUMENT_BYTES:
                        raise Problem(502, "the issuer's token answer is too large")
        except (httpx.HTTPError, OSError) as exc:
            raise Problem(503, f"the issuer's token endpoint did not answer: {exc}") from None
        try:
            data = json.loads(bytes(raw))
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise Problem(502, f"the issuer's token endpoint answered {status} "
                               "without a JSON object")
        if status != 200:
            error = str(data.get("error", "error"))[:64]
            text = str(data.get("error_description", ""))[:MAX_ISSUER_TEXT]
            raise Problem(400, f"the issuer refused the sign-in: {error}"
                               + (f" ({text})" if text else ""))
        return data


def routes(login: OidcLogin) -> tuple[BaseRoute, ...]:
    """`GET /v1/auth/oidc` and `POST /v1/auth/oidc/token`."""
    return (Route("/v1/auth/oidc", login.config, methods=["GET"]),
            Route("/v1/auth/oidc/token", login.token, methods=["POST"]))
