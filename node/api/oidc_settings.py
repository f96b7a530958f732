"""`[api.oidc]`: which OpenID Connect issuer's bearer JWTs the API accepts, and what
roles their claims grant.

    [api.oidc]
    issuer = "https://login.example.com/realms/acme"   # the `iss` tokens must carry
    audience = "gd-node"                                # the `aud` they must be for
    roles_claim = "roles"           # a claim holding a string or a list ("a.b" nests)
    # jwks_uri = "..."              # default: from the issuer's discovery document
    client_id = "gd-console"        # the console's "Login with OIDC" (public client,
                                    # PKCE); absent: the console offers token login only
    # scopes = "openid"             # asked for at the issuer's authorization endpoint

    [api.oidc.roles]                # claim value -> role and scope (deny by default)
    "gd-approvers" = { role = "approver", domains = ["turbofan"] }
    "gd-viewers" = { role = "viewer", domains = ["*"] }

Typed and closed like every other section: an unknown key, a role that does not exist
or a plain-http issuer off loopback stops the daemon before it starts. Plain http is
allowed for a loopback issuer only (tests, a local identity provider): anywhere else a
JWKS fetched in clear could be swapped, and with it every key the node trusts.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass, fields
from typing import Any, Final

from gd.genome import checks
from gd.genome.errors import ValidationError
from gd.node.api.roles import ALL_DOMAINS, Role

# An unknown `kid` makes the node fetch the JWKS again, but not more often than this:
# a flood of tokens naming made-up kids must not become a flood of fetches.
DEFAULT_JWKS_MIN_REFRESH_S: Final = 30.0
# Keys are fetched again after this long even when every kid is known (key rotation
# that removes a compromised key takes effect within it).
DEFAULT_JWKS_MAX_AGE_S: Final = 3600.0
# Clock skew allowed between the issuer and this node for exp / nbf / iat.
DEFAULT_LEEWAY_S: Final = 30
MAX_ROLE_MAPS: Final = 64
MAX_SCOPE: Final = 64
DEFAULT_SCOPES: Final = "openid"
MAX_CLIENT_ID: Final = 256
_CLIENT_ID: Final = re.compile(r"^[\x21-\x7e]+$")
_PRINTABLE: Final = re.compile(r"^[\x21-\x7e]+(?: [\x21-\x7e]+)*$")


class OidcSettingsError(ValueError):
    """An [api.oidc] value is invalid (settings.py makes it an ApiSettingsError)."""


@dataclass(frozen=True)
class RoleMap:
    """What a token whose roles claim holds `value` may do."""

    value: str
    role: Role
    domains: tuple[str, ...]
    genes: tuple[str, ...] = ()


@dataclass(frozen=True)
class OidcSettings:
    issuer: str
    audience: str
    roles_claim: str = "roles"
    jwks_uri: str = ""
    roles: tuple[RoleMap, ...] = ()
    jwks_min_refresh_s: float = DEFAULT_JWKS_MIN_REFRESH_S
    jwks_max_age_s: float = DEFAULT_JWKS_MAX_AGE_S
    leeway_s: int = DEFAULT_LEEWAY_S
    # The console's OIDC sign-in (node/api/oidc_login.py): the client id registered at
    # the issuer for the console (a public client: PKCE, no secret), and the scopes it
    # asks for. An empty client_id leaves the console with API-token sign-in only.
    client_id: str = ""
    scopes: str = DEFAULT_SCOPES

    def __post_init__(self) -> None:
        _url("issuer", self.issuer)
        if not isinstance(self.client_id, str) or len(self.client_id) > MAX_CLIENT_ID or (
                self.client_id and not _CLIENT_ID.match(self.client_id)):
            raise OidcSettingsError(f"api.oidc.client_id must be printable text without "
                                    f"spaces, at most {MAX_CLIENT_ID} characters")
        if (not isinstance(self.scopes, str) or "openid" not in self.scopes.split(" ")
                or not _PRINTABLE.match(self.scopes)):
            raise OidcSettingsError("api.oidc.scopes must be space-separated scopes that "
                                    "include openid")
        if self.jwks_uri:
            _url("jwks_uri", self.jwks_uri)
        if not isinstance(self.audience, str) or not self.audience:
            raise OidcSettingsError("api.oidc.audience must be a non-empty string")
        if not isinstance(self.roles_claim, str) or not all(self.roles_claim.split(".")):
            raise OidcSettingsError("api.oidc.roles_claim must be a claim name ('a.b' "
                                    "for a nested one)")
        for name in ("jwks_min_refresh_s", "jwks_max_age_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise OidcSettingsError(f"api.oidc.{name} must be a positive number")
        if (isinstance(self.leeway_s, bool) or not isinstance(self.leeway_s, int)
                or not 0 <= self.leeway_s <= 300):
            raise OidcSettingsError("api.oidc.leeway_s must be an integer in [0, 300]")

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    def grant(self, values: set[str]) -> RoleMap | None:
        """The grant of a token whose roles claim holds `values`: the highest role any
        value maps to, scoped to the union of the domains (and genes) of the values
        mapping to that very role. Lower roles' domains are not lifted to the higher
        role; None when no value maps (the caller has no rights here)."""
        matched = [m for m in self.roles if m.value in values]
        if not matched:
            return None
        top = max(m.role for m in matched)
        best = [m for m in matched if m.role == top]
        domains = tuple(dict.fromkeys(d for m in best for d in m.domains))
        # A gene restriction holds only if every granting value restricts.
        genes: tuple[str, ...] = ()
        if all(m.genes for m in best):
            genes = tuple(dict.fromkeys(g for m in best for g in m.genes))
        return RoleMap(",".join(sorted(m.value for m in best)), top, domains, genes)


def _url(name: str, text: Any) -> None:
    if not isinstance(text, str) or not text:
        raise OidcSettingsError(f"api.oidc.{name} must be a URL")
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise OidcSettingsError(f"api.oidc.{name} {text!r}: expected an https:// URL")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise OidcSettingsError(f"api.oidc.{name} {text!r}: plain http only for a "
                                "loopback issuer; use https")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_KEYS: Final = frozenset(f.name for f in fields(OidcSettings))
_MAP_KEYS: Final = frozenset({"role", "domains", "genes"})


def _role_map(value: str, body: Any) -> RoleMap:
    where = f"api.oidc.roles.{value}"
    if not isinstance(body, dict):
        raise OidcSettingsError(f"{where} must be a table: {{ role = \"viewer\", "
                                "domains = [\"*\"] }")
    unknown = sorted(set(body) - _MAP_KEYS)
    if unknown:
        raise OidcSettingsError(f"unknown key(s) in {where}: {', '.join(unknown)}")
    try:
        role = Role.parse(body["role"]) if isinstance(body.get("role"), str) else None
    except ValueError as exc:
        raise OidcSettingsError(f"{where}: {exc}") from None
    if role is None:
        raise OidcSettingsError(f"{where}.role must name a role")
    domains, genes = body.get("domains"), body.get("genes", [])
    for key, items in (("domains", domains), ("genes", genes)):
        if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
            raise OidcSettingsError(f"{where}.{key} must be a list of strings")
        if len(items) > MAX_SCOPE:
            raise OidcSettingsError(f"{where}.{key}: at most {MAX_SCOPE}")
    assert isinstance(domains, list) and isinstance(genes, list)
    if not domains:
        raise OidcSettingsError(f"{where}.domains must name at least one domain (or \"*\")")
    try:
        for d in domains:
            if d != ALL_DOMAINS:
                checks.slug(f"{where}.domains", d)
    except ValidationError as exc:
        raise OidcSettingsError(str(exc)) from None
    return RoleMap(value, role, tuple(domains), tuple(genes))


def parse_oidc_settings(body: Any) -> OidcSettings:
    """The [api.oidc] table; OidcSettingsError naming an unknown key or bad value."""
    if not isinstance(body, dict):
        raise OidcSettingsError("[api.oidc] must be a table")
    unknown = sorted(set(body) - _KEYS)
    if unknown:
        raise OidcSettingsError(f"unknown key(s) in [api.oidc]: {', '.join(unknown)}")
    for required in ("issuer", "audience"):
        if required not in body:
            raise OidcSettingsError(f"[api.oidc] needs {required}")
    roles = body.get("roles", {})
    if not isinstance(roles, dict) or len(roles) > MAX_ROLE_MAPS:
        raise OidcSettingsError(f"api.oidc.roles must be a table of at most {MAX_ROLE_MAPS} "
                                "claim values")
    values = {k: v for k, v in body.items() if k != "roles"}
    values["roles"] = tuple(_role_map(str(k), v) for k, v in roles.items())
    try:
        return OidcSettings(**values)
    except TypeError as exc:
        raise OidcSettingsError(f"[api.oidc]: {exc}") from None
