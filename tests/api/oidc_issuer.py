"""A loopback OpenID provider for the API tests: a real HTTP server on 127.0.0.1 (a
thread of the test process) serving discovery, the JWKS, and the Authorization Code
flow with PKCE — /authorize signs in `Issuer.user` without asking (a test user who
always consents) and redirects back with code and state; /token redeems a code once,
only with the verifier whose S256 challenge /authorize was given, and only for the
client and redirect URI it was issued to."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

AUDIENCE = "gd-node-test"
CLIENT_ID = "gd-console-test"
# The most bytes /token reads from a request body.
MAX_FORM = 16 * 1024


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Grant:
    """What /authorize issued a code for."""

    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str


@dataclass
class Issuer:
    """The provider's keys, its signed-in user, and counts of what was asked of it."""

    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    url: str = ""
    hits: dict[str, int] = field(default_factory=dict)
    # The person /authorize signs in: their claims (sub, roles, ...).
    user: dict[str, Any] = field(default_factory=lambda: {"sub": "carol",
                                                           "roles": ["gd-approvers"]})
    codes: dict[str, Grant] = field(default_factory=dict)
    token_errors: list[str] = field(default_factory=list)

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa_key.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec_key.public_key()))
        rsa_jwk.update(kid="rsa-1", use="sig", alg="RS256")
        ec_jwk.update(kid="ec-1", use="sig")
        return {"keys": [rsa_jwk, ec_jwk]}

    def discovery(self) -> dict[str, Any]:
        return {"issuer": self.url, "jwks_uri": self.url + "/jwks",
                "authorization_endpoint": self.url + "/authorize",
                "token_endpoint": self.url + "/token",
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"]}

    def token(self, *, alg: str = "RS256", kid: str = "rsa-1", **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.url, "aud": AUDIENCE, "sub": "alice", "iat": now,
                "exp": now + 600, "roles": ["gd-approvers"], **claims}
        body = {k: v for k, v in body.items() if v is not None}
        key = self.rsa_key if alg.startswith(("RS", "PS")) else self.ec_key
        return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})

    def public_pem(self) -> bytes:
        return self.rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    # -- the Authorization Code flow --------------------------------------------------
    def authorize(self, query: dict[str, str]) -> str:
        """The redirect /authorize answers (the test user consents at once)."""
        redirect = query.get("redirect_uri", "")
        if (query.get("response_type") != "code" or query.get("client_id") != CLIENT_ID
                or query.get("code_challenge_method") != "S256"
                or not query.get("code_challenge") or not redirect.startswith("http://127.")):
            raise ValueError("bad authorization request")
        code = secrets.token_urlsafe(24)
        self.codes[code] = Grant(CLIENT_ID, redirect, query["code_challenge"],
                                 query.get("nonce", ""))
        back = {"code": code, "state": query.get("state", "")}
        return redirect + "?" + urllib.parse.urlencode(back)

    def redeem(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """/token: (status, body). The code is spent by any attempt, right or wrong."""
        grant = self.codes.pop(form.get("code", ""), None)
        if form.get("grant_type") != "authorization_code" or grant is None:
            return self._error("invalid_grant", "unknown or spent code")
        if form.get("client_id") != grant.client_id or form.get(
                "redirect_uri") != grant.redirect_uri:
            return self._error("invalid_grant", "client or redirect_uri differ")
        verifier = form.get("code_verifier", "")
        if b64url(hashlib.sha256(verifier.encode()).digest()) != grant.challenge:
            return self._error("invalid_grant", "PKCE verification failed")
        now = int(time.time())
        common = {"iss": self.url, "iat": now, "exp": now + 600, **self.user}
        access = jwt.encode({**common, "aud": AUDIENCE}, self.rsa_key, algorithm="RS256",
                            headers={"kid": "rsa-1"})
        id_token = jwt.encode({**common, "aud": CLIENT_ID, "nonce": grant.nonce},
                              self.rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
        return 200, {"access_token": access, "id_token": id_token, "token_type": "Bearer",
                     "expires_in": 600}

    def _error(self, error: str, description: str) -> tuple[int, dict[str, Any]]:
        self.token_errors.append(description)
        return 400, {"error": error, "error_description": description}


@contextmanager
def running_issuer() -> Iterator[Issuer]:
    """An Issuer served on 127.0.0.1 until the block ends (server shut down, joined)."""
    state = Issuer(rsa.generate_private_key(public_exponent=65537, key_size=2048),
                   ec.generate_private_key(ec.SECP256R1()))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            state.hits[parts.path] = state.hits.get(parts.path, 0) + 1
            if parts.path == "/.well-known/openid-configuration":
                self._json(200, state.discovery())
            elif parts.path == "/jwks":
                self._json(200, state.jwks())
            elif parts.path == "/authorize":
                query = dict(urllib.parse.parse_qsl(parts.query))
                try:
                    location = state.authorize(query)
                except ValueError as exc:
                    self._json(400, {"error": "invalid_request", "error_description": str(exc)})
                    return
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.send_error(404)

        def do_POST(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            state.hits[parts.path] = state.hits.get(parts.path, 0) + 1
            length = int(self.headers.get("Content-Length") or 0)
            if parts.path != "/token" or length > MAX_FORM:
                self.send_error(404)
                return
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            self._json(*state.redeem(form))

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
