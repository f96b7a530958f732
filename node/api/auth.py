"""Who is calling, and may they do this: authentication and authorisation in one place.

Credentials: `Authorization: Bearer gdn_...` (an API token, node/api/tokens.py), or an
OIDC bearer JWT when [api.oidc] is configured (node/api/oidc.py). Deny by
default: a route names the least role it needs, and a request without a credential in
force never reaches a handler (401 with `WWW-Authenticate: Bearer`, RFC 6750 §3).

Scope: a token covers some domains (or `*`) and optionally only some genes. Outside its
scope a gene does not exist for the caller: 404, never 403, so a token cannot probe
which genes another domain holds (the same rule GitHub applies to private
repositories). A role too low for a route is 403: the route's existence is no secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gd.node.api.oidc import OidcError, OidcVerifier, looks_like_jwt
from gd.node.api.oidc_settings import RoleMap
from gd.node.api.problems import Problem
from gd.node.api.roles import ALL_DOMAINS, Role
from gd.node.api.tokens import TOKEN_PREFIX, ApiToken, TokenStore


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: `actor` is what audit records name."""

    actor: str
    role: Role
    domains: tuple[str, ...]
    genes: tuple[str, ...] = ()

    @classmethod
    def of_token(cls, token: ApiToken) -> Principal:
        return cls(f"token:{token.id}", token.role, token.domains, token.genes)

    @classmethod
    def of_oidc(cls, subject: str, grant: RoleMap) -> Principal:
        return cls(f"oidc:{subject}", grant.role, grant.domains, grant.genes)

    @property
    def all_domains(self) -> bool:
        return ALL_DOMAINS in self.domains

    def sees_domain(self, domain: str) -> bool:
        return self.all_domains or domain in self.domains

    def sees_gene(self, gene_id: str, domain: str) -> bool:
        return self.sees_domain(domain) and (not self.genes or gene_id in self.genes)

    def require(self, role: Role, what: str) -> None:
        if self.role < role:
            raise Problem(403, f"{what} needs the {role.label} role; this credential is "
                               f"{self.role.label}")

    def require_domain(self, domain: str, what: str) -> None:
        """For actions on a whole domain (share, revoke): outside the scope is 403,
        the domain's name being the caller's own input, not something revealed."""
        if not self.sees_domain(domain):
            raise Problem(403, f"{what}: domain {domain!r} is outside this credential's "
                               "scope")

    def to_json(self) -> dict[str, Any]:
        return {"actor": self.actor, "role": self.role.label, "domains": list(self.domains),
                "genes": list(self.genes)}


def bearer(headers: Any) -> str | None:
    """The token in `Authorization: Bearer ...`, or None when there is no such header."""
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(401, "Authorization must be `Bearer <token>`",
                      headers={"WWW-Authenticate": 'Bearer error="invalid_request"'})
    return token.strip()


def _refused(why: str) -> Problem:
    return Problem(401, f"credential refused: {why}",
                   headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


async def authenticate(store: TokenStore, headers: Any,
                       oidc: OidcVerifier | None = None) -> Principal:
    """The caller, or Problem(401). An API token's record is read now (revocation is at
    once); anything else shaped like a JWT goes to the OIDC verifier when [api.oidc] is
    configured. A valid JWT whose claims map to no role is 403: the caller is known,
    and has no rights here (deny by default)."""
    token = bearer(headers)
    if token is None:
        raise Problem(401, "this API needs a credential: Authorization: Bearer <token> "
                           "(gd-node tokens create)",
                      headers={"WWW-Authenticate": 'Bearer realm="gd-node"'})
    if oidc is not None and not token.startswith(TOKEN_PREFIX) and looks_like_jwt(token):
        try:
            identity = await oidc.verify(token)
        except OidcError as exc:
            raise _refused(str(exc)) from None
        if identity.grant is None:
            raise Problem(403, f"OIDC subject {identity.subject!r} has no role on this "
                               f"node (its {oidc.settings.roles_claim!r} claim maps to none)")
        return Principal.of_oidc(identity.subject, identity.grant)
    record, why = store.verify(token)
    if record is None:
        raise _refused(why)
    return Principal.of_token(record)
