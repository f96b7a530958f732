"""API tokens: the secret is shown once, only its hash is kept (Cortex `api_tokens`).

A token reads `gdn_<id>_<secret>`: `id` (16 hex digits) finds the record without a scan
and names the credential in audit records and rate limits; `secret` (32 random bytes,
URL-safe base64) is checked against the stored SHA-256. A plain hash suffices because
the secret has 256 bits of entropy (nothing to brute-force, unlike a password: GitHub's
and Syncthing's API keys are stored the same way); the comparison is constant-time.

The records live in the Cortex so that `gd-node tokens revoke` (the CLI, in its own
process: LMDB allows it beside the daemon) takes effect on the very next request — the
daemon reads the record on every request, it caches nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, replace
from typing import Any, Final

from gd.crdt.clock import Clock
from gd.genome import canonical, checks
from gd.genome.errors import DecodeError, ValidationError
from gd.node.api.roles import ALL_DOMAINS, Role
from gd.node.clock import SYSTEM_CLOCK
from gd.node.store.cortex import Cortex

TOKENS_DB: Final = "api_tokens"
TOKEN_PREFIX: Final = "gdn_"
HASH_TAG: Final = b"gd-api-token/1\x00"
ID_HEX: Final = 16
SECRET_BYTES: Final = 32
# A credential scoped to more than this many domains or genes is a mistake, and the
# scope is checked on every request.
MAX_SCOPE_ITEMS: Final = 64
MAX_LABEL: Final = 128
# `30d`, `12h`, `90m`, `3600s`
_DURATION = re.compile(r"^\s*(\d{1,7})\s*([smhd])\s*$")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TOKEN = re.compile(r"^gdn_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


class TokenError(ValueError):
    """A token operation was refused (unknown id, bad scope, bad duration)."""


def parse_duration(text: str) -> int:
    """'30d' → seconds; TokenError for anything else."""
    match = _DURATION.match(text or "")
    if not match or int(match.group(1)) == 0:
        raise TokenError(f"duration {text!r}: expected a positive number with s, m, h "
                         "or d (e.g. 30d)")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def secret_hash(secret: str) -> bytes:
    return hashlib.sha256(HASH_TAG + secret.encode()).digest()


@dataclass(frozen=True)
class ApiToken:
    """One stored credential (never its secret)."""

    id: str
    role: Role
    domains: tuple[str, ...]
    hash: bytes
    created_ms: int
    expires_ms: int = 0   # 0: never
    revoked_ms: int = 0   # 0: in force
    genes: tuple[str, ...] = ()  # empty: every gene of the domains
    label: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.role, Role):
            raise ValidationError("role", "expected a Role")
        if not self.domains or len(self.domains) > MAX_SCOPE_ITEMS:
            raise ValidationError("domains", f"1 to {MAX_SCOPE_ITEMS} domains (or *)")
        for d in self.domains:
            if d != ALL_DOMAINS:
                checks.slug("domains", d)
        if len(self.genes) > MAX_SCOPE_ITEMS:
            raise ValidationError("genes", f"at most {MAX_SCOPE_ITEMS} genes")
        for g in self.genes:
            checks.text("genes", g, 128, required=True)
        checks.text("label", self.label, MAX_LABEL)

    @property
    def all_domains(self) -> bool:
        return ALL_DOMAINS in self.domains

    def state(self, now_ms: int) -> str:
        if self.revoked_ms:
            return "revoked"
        if self.expires_ms and now_ms >= self.expires_ms:
            return "expired"
        return "active"

    def to_plain(self) -> dict[str, Any]:
        return {"id": self.id, "role": self.role.label, "domains": list(self.domains),
                "genes": list(self.genes), "hash": self.hash, "created_ms": self.created_ms,
                "expires_ms": self.expires_ms, "revoked_ms": self.revoked_ms,
                "label": self.label}

    def to_json(self, now_ms: int) -> dict[str, Any]:
        """What `tokens list` shows: everything but the hash, and the state at `now_ms`."""
        data = self.to_plain()
        del data["hash"]
        data["state"] = self.state(now_ms)
        return data

    @classmethod
    def from_plain(cls, data: Any) -> ApiToken:
        try:
            return cls(id=data["id"], role=Role.parse(data["role"]),
                       domains=tuple(data["domains"]), genes=tuple(data.get("genes", ())),
                       hash=bytes(data["hash"]), created_ms=int(data["created_ms"]),
                       expires_ms=int(data.get("expires_ms", 0)),
                       revoked_ms=int(data.get("revoked_ms", 0)),
                       label=str(data.get("label", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"unreadable API token record: {exc}") from None


class TokenStore:
    """The `api_tokens` sub-database of one Cortex. Creation, revocation and expiry read
    `clock` (the daemon's injected clock; the system clock for a CLI without a daemon),
    so a test can expire a token by advancing a `ManualClock` instead of sleeping."""

    def __init__(self, cortex: Cortex, clock: Clock = SYSTEM_CLOCK) -> None:
        self.cortex = cortex
        self.clock = clock
        self.db = cortex.open_db(TOKENS_DB)

    def now_ms(self) -> int:
        return int(self.clock.wall() * 1000)

    def create(self, role: Role, domains: tuple[str, ...], *, genes: tuple[str, ...] = (),
               expires_in_s: int | None = None, label: str = "",
               now_ms: int | None = None) -> tuple[ApiToken, str]:
        """A new credential and its secret token text (shown once, never stored)."""
        now = self.now_ms() if now_ms is None else now_ms
        token_id = secrets.token_hex(ID_HEX // 2)
        secret = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).decode().rstrip("=")
        try:
            record = ApiToken(id=token_id, role=role, domains=tuple(dict.fromkeys(domains)),
                              genes=tuple(dict.fromkeys(genes)), hash=secret_hash(secret),
                              created_ms=now, label=label,
                              expires_ms=now + expires_in_s * 1000 if expires_in_s else 0)
        except ValidationError as exc:
            raise TokenError(str(exc)) from None
        self.cortex.write(lambda txn: txn.put(token_id.encode(),
                                              canonical.encode(record.to_plain()), db=self.db))
        return record, f"{TOKEN_PREFIX}{token_id}_{secret}"

    def get(self, token_id: str) -> ApiToken | None:
        with self.cortex.env.begin() as txn:
            raw = txn.get(token_id.encode(), db=self.db)
        return None if raw is None else ApiToken.from_plain(canonical.decode(raw))

    def list(self) -> list[ApiToken]:
        with self.cortex.env.begin() as txn:
            return [ApiToken.from_plain(canonical.decode(raw))
                    for _, raw in txn.cursor(db=self.db)]

    def revoke(self, token_id: str, *, now_ms: int | None = None) -> ApiToken:
        """Mark revoked (kept, so audit records naming it stay explainable)."""
        now = self.now_ms() if now_ms is None else now_ms

        def run(txn: Any) -> ApiToken:
            raw = txn.get(token_id.encode(), db=self.db)
            if raw is None:
                raise TokenError(f"no API token {token_id!r}")
            record = ApiToken.from_plain(canonical.decode(raw))
            if not record.revoked_ms:
                record = replace(record, revoked_ms=now)
                txn.put(token_id.encode(), canonical.encode(record.to_plain()), db=self.db)
            return record

        return self.cortex.write(run)

    def verify(self, text: str, *, now_ms: int | None = None) -> tuple[ApiToken | None, str]:
        """(the credential, "") for a token in force, else (None, why): malformed,
        unknown, wrong secret, revoked or expired."""
        match = _TOKEN.match(text)
        if match is None:
            return None, "malformed token"
        record = self.get(match.group(1))
        if record is None or not hmac.compare_digest(record.hash, secret_hash(match.group(2))):
            return None, "unknown token"
        state = record.state(self.now_ms() if now_ms is None else now_ms)
        if state != "active":
            return None, f"token {state}"
        return record, ""
