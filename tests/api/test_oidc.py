"""OIDC bearer JWTs against a real issuer: an HTTP server on 127.0.0.1 (in a thread of
this test, tests/api/oidc_issuer.py) serving the discovery document and the JWKS, a
real daemon checking tokens signed with the issuer's keys — and tokens forged every way
the module docstring of gd.node.api.oidc lists. Then the console's sign-in
(node/api/oidc_login.py): the code flow with PKCE through the daemon, and what a wrong
verifier, a wrong nonce or a spent code get."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from api_support import prepare, start
from cryptography.hazmat.primitives.asymmetric import rsa
from oidc_issuer import AUDIENCE, CLIENT_ID, Issuer, running_issuer

from gd.node.api.oidc_settings import OidcSettings, RoleMap, parse_oidc_settings
from gd.node.api.roles import Role
from gd.node.config import ConfigError, parse_config


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
    with running_issuer() as state:
        yield state


def oidc_settings(issuer: Issuer) -> OidcSettings:
    return OidcSettings(issuer=issuer.url, audience=AUDIENCE, client_id=CLIENT_ID, roles=(
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


async def _authorize(http: httpx.AsyncClient, endpoint: str, redirect: str, verifier: str,
                     nonce: str, state: str) -> str:
    """What the console does: send the person to the issuer; the code it comes back with
    (the test user consents at once)."""
    challenge = _b64(hashlib.sha256(verifier.encode()).digest())
    reply = await http.get(endpoint, params={
        "response_type": "code", "client_id": CLIENT_ID, "redirect_uri": redirect,
        "scope": "openid", "state": state, "nonce": nonce, "code_challenge": challenge,
        "code_challenge_method": "S256"})
    assert reply.status_code == 302, reply.text
    location = reply.headers["location"]
    assert location.startswith(redirect + "?")
    answer = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    assert answer["state"] == state
    return answer["code"]


async def test_console_sign_in_code_flow_with_pkce(nursery, tmp_root, issuer):
    node, cfg = prepare(tmp_root, oidc=oidc_settings(issuer))
    await start(nursery, node, cfg)
    redirect = node.url + "/console/callback"
    async with node.client() as daemon, httpx.AsyncClient(timeout=30) as browser:
        offer = (await daemon.get("/v1/auth/oidc")).json()  # no credential needed
        assert offer == {"enabled": True, "issuer": issuer.url, "client_id": CLIENT_ID,
                         "scopes": "openid", "authorization_endpoint": issuer.url + "/authorize",
                         "callback_path": "/console/callback"}
        verifier, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(16)

        async def exchange(code: str, **over: str) -> httpx.Response:
            body = {"code": code, "code_verifier": verifier, "redirect_uri": redirect,
                    "nonce": nonce, **over}
            return await daemon.post("/v1/auth/oidc/token", json=body)

        # A verifier that is not the one behind the challenge: the issuer refuses it.
        code = await _authorize(browser, offer["authorization_endpoint"], redirect,
                                verifier, nonce, "s1")
        wrong = await exchange(code, code_verifier=secrets.token_urlsafe(48))
        assert wrong.status_code == 400, wrong.text
        assert "PKCE" in wrong.json()["detail"]
        assert issuer.token_errors == ["PKCE verification failed"]
        # The right verifier, but the ID token carries another sign-in's nonce.
        code = await _authorize(browser, offer["authorization_endpoint"], redirect,
                                verifier, "n" * 16, "s2")
        replayed = await exchange(code)
        assert replayed.status_code == 401 and "nonce" in replayed.json()["detail"]
        # Everything right: the access token, for this node's audience, is the bearer.
        code = await _authorize(browser, offer["authorization_endpoint"], redirect,
                                verifier, nonce, "s3")
        good = await exchange(code)
        assert good.status_code == 200, good.text
        signed_in = good.json()
        assert signed_in["kind"] == "access_token"
        assert signed_in["caller"] == {"actor": "oidc:carol", "role": "approver",
                                       "domains": ["turbofan"], "genes": []}
        assert "refresh_token" not in signed_in and "set-cookie" not in good.headers
        # The code is spent: a second exchange gets nothing.
        again = await exchange(code)
        assert again.status_code == 400 and "spent" in again.json()["detail"]
        # Malformed requests never reach the issuer.
        before = issuer.hits.get("/token", 0)
        for over in ({"redirect_uri": node.url + "/elsewhere"}, {"code_verifier": "short"},
                     {"nonce": ""}):
            assert (await exchange("x", **over)).status_code == 422, over
        assert issuer.hits.get("/token", 0) == before
    async with node.client(signed_in["token"]) as http:
        pending = node.genes["pending"]
        approved = await http.post(f"/v1/pending/{pending.id}/approve", json={})
        assert approved.status_code == 200, approved.text
        assert (await http.get("/v1/status")).json()["api"]["caller"]["actor"] == "oidc:carol"


async def test_console_sign_in_is_off_without_a_client_id(api_node):
    async with api_node.client() as http:
        assert (await http.get("/v1/auth/oidc")).json() == {"enabled": False}
        reply = await http.post("/v1/auth/oidc/token", json={})
        assert reply.status_code == 404
        assert reply.headers["content-type"] == "application/problem+json"


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
        ({**good, "client_id": "two words"}, "client_id"),
        ({**good, "client_id": 7}, "client_id"),
        ({**good, "scopes": "profile email"}, "openid"),
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
