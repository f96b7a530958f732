"""OIDC bearer JWTs: verify a token against the issuer's published keys (JWKS).

What is checked, and why each check is here:

* **alg** from the token header must be an asymmetric algorithm this module lists
  (RS*, PS*, ES*, EdDSA): `none` would need no key at all, and an HS* token "signed"
  with the issuer's *public* key (which anyone can fetch) would pass a verifier that
  hands that key to HMAC — the classic RS/HS confusion. PyJWT is also told the one
  algorithm allowed, so a token cannot pick another.
* **kid** must name a key in the JWKS, and the key's type (and curve) must be the one
  the algorithm needs; a key that declares its own `alg` or `use` must agree.
* **signature, exp, nbf, iat, iss, aud** by PyJWT with the configured issuer and
  audience; `exp`, `iss`, `aud` and `sub` are required.

The JWKS comes from `jwks_uri`, or the issuer's discovery document, fetched on first use
and cached. It is fetched again after `jwks_max_age_s`, or when a token names a kid not
in the cache — but not more often than every `jwks_min_refresh_s`, so tokens with made-up
kids cannot turn the node into a fetch loop against the issuer. A failed fetch keeps the
keys already known.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Final

import httpx
import jwt
import trio

from gd.crdt.clock import Clock
from gd.node.api.oidc_settings import OidcSettings, RoleMap
from gd.node.clock import SYSTEM_CLOCK

# alg -> (JWK kty, curve or None)
ALGORITHMS: Final = {
    "RS256": ("RSA", None), "RS384": ("RSA", None), "RS512": ("RSA", None),
    "PS256": ("RSA", None), "PS384": ("RSA", None), "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"), "ES384": ("EC", "P-384"), "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
}
FETCH_TIMEOUT_S: Final = 5.0
# A JWKS or discovery document larger than this is not one.
MAX_DOCUMENT_BYTES: Final = 256 * 1024
MAX_TOKEN_CHARS: Final = 16 * 1024
MAX_KEYS: Final = 100
MAX_SUBJECT: Final = 200
# A verified JWT is trusted again without a new signature check for at most this long
# (and never past its own exp): JWTs cannot be revoked before exp anyway, and keys
# removed from the JWKS are dropped within jwks_max_age_s.
CACHE_S: Final = 60.0
MAX_CACHED: Final = 4096


class OidcError(Exception):
    """A bearer JWT refused; the message says why (shown to the client in the 401)."""


@dataclass(frozen=True)
class OidcIdentity:
    subject: str
    grant: RoleMap | None
    expires_at: float


class OidcVerifier:
    """Verifies bearer JWTs of one issuer. One per daemon, used on its trio loop."""

    def __init__(self, settings: OidcSettings, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        # exp/nbf/iat, the verified-token cache (wall) and key/discovery ages (monotonic):
        # the daemon's injected clock, so a test expires a token without sleeping.
        self.clock = clock
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched_at: float | None = None   # monotonic time of the last good fetch
        self._attempted_at: float | None = None  # of the last attempt, good or not
        self._lock = trio.Lock()
        self.fetches = 0  # successful JWKS fetches (tests and status read it)
        # SHA-256 of a verified token -> (cached until, identity): a client sending the
        # same JWT on every request pays one signature check per CACHE_S, not one each.
        self._verified: dict[bytes, tuple[float, OidcIdentity]] = {}
        # (monotonic time fetched, document): the console's sign-in reads the endpoints.
        self._discovery: tuple[float, dict[str, Any]] | None = None

    # -- keys --------------------------------------------------------------------------
    async def _get_json(self, client: httpx.AsyncClient, url: str) -> dict[str, Any]:
        async with client.stream("GET", url, headers={"Accept": "application/json"}) as r:
            if r.status_code != 200:
                raise OidcError(f"{url} answered {r.status_code}")
            buf = bytearray()
            async for chunk in r.aiter_bytes():
                buf += chunk
                if len(buf) > MAX_DOCUMENT_BYTES:
                    raise OidcError(f"{url} sent more than {MAX_DOCUMENT_BYTES} bytes")
        try:
            data = json.loads(bytes(buf))
        except ValueError:
            raise OidcError(f"{url} did not send JSON") from None
        if not isinstance(data, dict):
            raise OidcError(f"{url} did not send a JSON object")
        return data

    async def _fetch(self) -> dict[str, dict[str, Any]]:
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, follow_redirects=False) as c:
            uri = self.settings.jwks_uri
            if not uri:
                discovery = await self._get_json(c, self.settings.discovery_url)
                if discovery.get("issuer") != self.settings.issuer:
                    raise OidcError("the discovery document names another issuer")
                named = discovery.get("jwks_uri")
                if not isinstance(named, str) or not named.startswith(("https://", "http://")):
                    raise OidcError("the discovery document has no jwks_uri")
                uri = named
                if uri.startswith("http://") and not self.settings.issuer.startswith(
                        "http://"):
                    raise OidcError("the discovery document's jwks_uri is plain http")
            jwks = await self._get_json(c, uri)
        raw = jwks.get("keys")
        if not isinstance(raw, list):
            raise OidcError("the JWKS has no keys list")
        keys = {str(k["kid"]): k for k in raw[:MAX_KEYS]
                if isinstance(k, dict) and isinstance(k.get("kid"), str)}
        return keys

    async def _refresh(self, *, because_unknown_kid: bool) -> None:
        async with self._lock:
            now = self.clock.monotonic()
            s = self.settings
            stale = self._fetched_at is None or now - self._fetched_at >= s.jwks_max_age_s
            if not stale and not because_unknown_kid:
                return
            if (self._attempted_at is not None
                    and now - self._attempted_at < s.jwks_min_refresh_s
                    and self._fetched_at is not None):
                return  # bounded: at most one fetch per jwks_min_refresh_s
            self._attempted_at = now
            try:
                keys = await self._fetch()
            except (OidcError, httpx.HTTPError, OSError) as exc:
                if self._fetched_at is None:
                    raise OidcError(f"the issuer's keys could not be fetched: {exc}") from None
                return  # keep the keys already known
            self._keys, self._fetched_at = keys, self.clock.monotonic()
            self.fetches += 1

    async def key_for(self, kid: str) -> dict[str, Any]:
        """The JWK named `kid` (fetching or refreshing the JWKS within its bounds)."""
        await self._refresh(because_unknown_kid=False)
        if kid not in self._keys:
            await self._refresh(because_unknown_kid=True)
        key = self._keys.get(kid)
        if key is None:
            raise OidcError(f"no key {kid[:64]!r} in the issuer's JWKS")
        return key

    # -- tokens ------------------------------------------------------------------------
    async def verify(self, token: str) -> OidcIdentity:
        """The token's subject and the role its claims map to; OidcError if refused."""
        if len(token) > MAX_TOKEN_CHARS:
            raise OidcError("the token is too long")
        digest = hashlib.sha256(token.encode()).digest()
        hit = self._verified.get(digest)
        if hit is not None and self.clock.wall() < min(hit[0], hit[1].expires_at):
            return hit[1]
        identity = await self._verify(token)
        if len(self._verified) >= MAX_CACHED:
            self._verified.clear()
        self._verified[digest] = (self.clock.wall() + CACHE_S, identity)
        return identity

    async def verify_id_token(self, token: str, nonce: str) -> OidcIdentity:
        """An ID token from the console's sign-in: every check of `verify`, but for the
        audience `client_id` (ID tokens are issued to the client, OIDC Core 3.1.3.7),
        and its `nonce` must be the one this sign-in sent (a replayed ID token fails).
        Never cached: it is checked once per sign-in."""
        if len(token) > MAX_TOKEN_CHARS:
            raise OidcError("the ID token is too long")
        identity = await self._verify(token, audience=self.settings.client_id,
                                      nonce=nonce)
        return identity

    async def discovery(self) -> dict[str, Any]:
        """The issuer's discovery document, fetched once per jwks_max_age_s, its
        `issuer` checked; OidcError when it cannot be had."""
        now = self.clock.monotonic()
        if (self._discovery is not None
                and now - self._discovery[0] < self.settings.jwks_max_age_s):
            return self._discovery[1]
        try:
            async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_S,
                                         follow_redirects=False) as client:
                doc = await self._get_json(client, self.settings.discovery_url)
        except (httpx.HTTPError, OSError) as exc:
            raise OidcError(f"the issuer's discovery document could not be fetched: "
                            f"{exc}") from None
        if doc.get("issuer") != self.settings.issuer:
            raise OidcError("the discovery document names another issuer")
        self._discovery = (now, doc)
        return doc

    async def _verify(self, token: str, *, audience: str | None = None,
                      nonce: str | None = None) -> OidcIdentity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise OidcError("malformed JWT") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise OidcError(f"JWT algorithm {str(alg)[:16]!r} is not accepted (only "
                            "asymmetric algorithms of the issuer's keys)")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise OidcError("the JWT names no key (kid)")
        jwk = await self.key_for(kid)
        kty, crv = ALGORITHMS[alg]
        if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
            raise OidcError(f"key {kid[:64]!r} is not a {kty} key for {alg}")
        if jwk.get("alg") not in (None, alg) or jwk.get("use") not in (None, "sig"):
            raise OidcError(f"key {kid[:64]!r} is not for {alg} signatures")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg).key
            claims = jwt.decode(
                token, key=key, algorithms=[alg],
                audience=audience if audience is not None else self.settings.audience,
                issuer=self.settings.issuer,
                options={"require": ["exp", "iss", "aud", "sub"], "verify_exp": False,
                         "verify_nbf": False, "verify_iat": False})
        except jwt.InvalidAudienceError:
            raise OidcError("the JWT is for another audience") from None
        except jwt.InvalidIssuerError:
            raise OidcError("the JWT is from another issuer") from None
        except jwt.PyJWTError as exc:
            raise OidcError(f"the JWT is invalid: {str(exc)[:120]}") from None
        check_times(claims, self.clock.wall(), self.settings.leeway_s)
        if nonce is not None and not hmac.compare_digest(
                str(claims.get("nonce", "")).encode(), nonce.encode()):
            raise OidcError("the ID token's nonce is not this sign-in's (a replayed token?)")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise OidcError("the JWT has no subject")
        return OidcIdentity(subject[:MAX_SUBJECT], self.settings.grant(self.claim_values(
            claims)), float(claims["exp"]))

    def claim_values(self, claims: dict[str, Any]) -> set[str]:
        """The strings in the roles claim (a string, or a list of them; 'a.b' nests)."""
        value: Any = claims
        for part in self.settings.roles_claim.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str):
            return {value}
        if isinstance(value, list):
            return {v for v in value if isinstance(v, str)}
        return set()


def looks_like_jwt(token: str) -> bool:
    """Three base64url parts: worth handing to the OIDC verifier."""
    return token.count(".") == 2


def check_times(claims: dict[str, Any], now: float, leeway: float) -> None:
    """exp, nbf and iat against `now` (RFC 7519 §4.1.4-4.1.6, with `leeway` seconds of
    skew), as PyJWT checks them, but on the injected clock instead of PyJWT's own read of
    the system time."""
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if name in claims and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise OidcError(f"the JWT is invalid: its {name} claim is not a number")
    if claims["exp"] <= now - leeway:
        raise OidcError("the JWT has expired")
    if any(name in claims and claims[name] > now + leeway for name in ("nbf", "iat")):
        raise OidcError("the JWT is not valid yet (nbf/iat)")
