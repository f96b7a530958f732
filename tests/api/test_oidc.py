"""OIDC bearer JWTs against a real issuer: an HTTP server on 127.0.0.1 (in a thread of
this test) serving the discovery document and the JWKS, a real daemon checking tokens
signed with the issuer's keys — and tokens forged every way the module docstring of
gd.node.api.oidc lists."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from api_support import prepare, start
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gd.node.api.oidc_settings import OidcSettings, RoleMap, parse_oidc_settings
from gd.node.api.roles import Role
from gd.node.config import ConfigError, parse_config

AUDIENCE = "gd-node-test"


@dataclass
class Issuer:
    """A minimal OpenID provider: discovery + JWKS, and counts of what was fetched."""

    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    url: str = ""
    hits: dict[str, int] = field(default_factory=dict)

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa_key.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec_key.public_key()))
        rsa_jwk.update(kid="rsa-1", use="sig", alg="RS256")
        ec_jwk.update(kid="ec-1", use="sig")
        return {"keys": [rsa_jwk, ec_jwk]}

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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(issuer: Issuer, header: dict[str, Any], key: bytes | None) -> str:
    """A JWT built by hand (PyJWT refuses to make these): `alg: none` with an empty
    signature, or HMAC with `key` — the issuer's public key, for the confusion attack."""
    now = int(time.time())
    claims = {"iss": issuer.url, "aud": AUDIENCE, "sub": "mallory", "iat": now,
              "exp": now + 600, "roles": ["gd-admins"]}
    signing_input = (_b64(json.dumps(header).encode()) + "."
                     + _b64(json.dumps(claims).encode()))
    mac = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(mac)


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    state = Issuer(rsa.generate_private_key(public_exponent=65537, key_size=2048),
                   ec.generate_private_key(ec.SECP256R1()))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits[self.path] = state.hits.get(self.path, 0) + 1
            if self.path == "/.well-known/openid-configuration":
                body = {"issuer": state.url, "jwks_uri": state.url + "/jwks"}
            elif self.path == "/jwks":
                body = state.jwks()
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
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


def oidc_settings(issuer: Issuer) -> OidcSettings:
    return OidcSettings(issuer=issuer.url, audience=AUDIENCE, roles=(
        RoleMap("gd-approvers", Role.APPROVER, ("turbofan",)),
        RoleMap("gd-viewers", Role.VIEWER, ("loan",)),
        RoleMap("gd-admins", Role.ADMIN, ("*",))))


async def test_oidc_tokens_valid_and_forged(nursery, tmp_root, issuer):
    node, cfg = prepare(tmp_root, oidc=oidc_settings(issuer))
    await start(nursery, node, cfg)
    tf, loan = node.genes["tf"], node.genes["loan"]

    # A valid RS256 token: the roles claim maps to approver on turbofan.
    async with node.client(issuer.token()) as http:
        status = await http.get("/v1/status")
        assert status.status_code == 200, status.text
        assert status.json()["api"]["caller"] == {
            "actor": "oidc:alice", "role": "approver", "domains": ["turbofan"], "genes": []}
        assert (await http.get(f"/v1/genes/{tf.id}")).status_code == 200
        assert (await http.get(f"/v1/genes/{loan.id}")).status_code == 404  # out of scope
    # ES256 with the EC key; a viewer mapping cannot approve.
    viewer = issuer.token(alg="ES256", kid="ec-1", sub="bob", roles="gd-viewers")
    async with node.client(viewer) as http:
        assert (await http.get(f"/v1/genes/{loan.id}")).status_code == 200
        reply = await http.post(f"/v1/pending/{node.genes['pending-loan'].id}/approve",
                                json={})
        assert reply.status_code == 403
    # Valid signature, but no claim value maps to a role: 403 (known, no rights).
    async with node.client(issuer.token(roles=["somebody-else"])) as http:
        assert (await http.get("/v1/status")).status_code == 403

    now = int(time.time())
    refused = {
        "expired": issuer.token(iat=now - 7200, exp=now - 3600),
        "not yet valid": issuer.token(nbf=now + 3600),
        "wrong audience": issuer.token(aud="someone-else"),
        "wrong issuer": issuer.token(iss="http://127.0.0.1:1"),
        "no exp": issuer.token(exp=None),
        "alg none": unsigned(issuer, {"alg": "none", "typ": "JWT", "kid": "rsa-1"}, None),
        "HS256 with the public key": unsigned(
            issuer, {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, issuer.public_pem()),
        "unknown kid": issuer.token(kid="rsa-404"),
        "ES256 naming the RSA key": issuer.token(alg="ES256", kid="rsa-1"),
        "signed by another key": jwt.encode(
            {"iss": issuer.url, "aud": AUDIENCE, "sub": "eve", "exp": now + 600,
             "roles": ["gd-admins"]},
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            algorithm="RS256", headers={"kid": "rsa-1"}),
    }
    for why, token in refused.items():
        async with node.client(token) as http:
            reply = await http.get("/v1/status")
        assert reply.status_code == 401, (why, reply.text)
        assert reply.headers["www-authenticate"].startswith("Bearer error=")
    # The unknown kid made the node look again once, not once per request: the JWKS is
    # cached, its refresh bounded (jwks_min_refresh_s).
    for _ in range(5):
        async with node.client(issuer.token(kid="rsa-405")) as http:
            assert (await http.get("/v1/status")).status_code == 401
    assert issuer.hits["/.well-known/openid-configuration"] == 1
    assert 1 <= issuer.hits["/jwks"] <= 2


def test_oidc_config_is_typed_and_closed():
    base = {"node": {"org": "a", "region": "eu"}}
    good = {"issuer": "https://id.example.com", "audience": "gd",
            "roles": {"ops": {"role": "operator", "domains": ["turbofan"]}}}
    cfg = parse_config({**base, "api": {"oidc": good}})
    assert cfg.api.oidc is not None
    assert cfg.api.oidc.grant({"ops"}) == RoleMap("ops", Role.OPERATOR, ("turbofan",))
    bad = [
        ({**good, "isuer": "x"}, "unknown key"),
        ({**good, "issuer": "http://id.example.com"}, "https"),
        ({**good, "roles": {"ops": {"role": "god", "domains": ["*"]}}}, "unknown role"),
        ({**good, "roles": {"ops": {"role": "viewer", "domains": ["*"], "x": 1}}},
         "unknown key"),
        ({"issuer": "https://id.example.com"}, "audience"),
    ]
    for body, match in bad:
        with pytest.raises(ConfigError, match=match):
            parse_config({**base, "api": {"oidc": body}})


def test_grant_takes_the_highest_role_without_lifting_lower_scopes():
    settings = parse_oidc_settings({"issuer": "https://id.example.com", "audience": "gd",
                                    "roles": {"v": {"role": "viewer", "domains": ["*"]},
                                              "a": {"role": "approver",
                                                    "domains": ["loan"]}}})
    grant = settings.grant({"v", "a"})
    assert grant is not None
    assert (grant.role, grant.domains) == (Role.APPROVER, ("loan",))
    assert settings.grant({"nobody"}) is None
