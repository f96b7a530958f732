"""`[api]` in config.toml: where the HTTP API listens and the limits it enforces.

Validated when the config is read (an unknown key or a bad value stops `gd-node run`
before anything starts, like every other section), and once more where it matters most:
binding beyond loopback without TLS is refused, because bearer tokens would cross the
network in clear text (Syncthing and Kubo both default to loopback for the same reason).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final

from gd.node.api.oidc_settings import OidcSettings, OidcSettingsError, parse_oidc_settings

DEFAULT_LISTEN: Final = "127.0.0.1:0"
# Per credential: a client looping on GETs gets 429 before it can crowd out the others;
# 50/s sustained with bursts of 100 is far above what a person or a planner needs.
DEFAULT_RATE_PER_S: Final = 50.0
DEFAULT_RATE_BURST: Final = 100
# JSON bodies (an evaluation request, a share rule) are small; 1 MiB is 16× the largest
# inline evaluation (64 turbofan states). Gene files stream up to the upload limit.
DEFAULT_MAX_BODY: Final = 1 << 20
DEFAULT_MAX_UPLOAD: Final = 64 << 20
# States evaluated inline (in the request); more become a durable job (POST /v1/jobs).
DEFAULT_INLINE_STATES: Final = 64
MAX_PORT: Final = 65535


class ApiSettingsError(ValueError):
    """An [api] value is invalid (config.py turns it into a ConfigError)."""


@dataclass(frozen=True)
class ApiSettings:
    """The [api] section. `enabled = false` starts no HTTP server at all."""

    enabled: bool = True
    listen: str = DEFAULT_LISTEN
    tls_cert: str = ""
    tls_key: str = ""
    rate_per_s: float = DEFAULT_RATE_PER_S
    rate_burst: int = DEFAULT_RATE_BURST
    max_body_bytes: int = DEFAULT_MAX_BODY
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    inline_max_states: int = DEFAULT_INLINE_STATES
    # Browser origins allowed to call the API; empty: no CORS headers at all.
    cors_origins: tuple[str, ...] = ()
    # Hosts a job's webhook may be POSTed to; empty: webhooks refused. A webhook makes
    # the daemon send a request where the caller says, so it is allow-listed (SSRF).
    webhook_hosts: tuple[str, ...] = ()
    # [api.oidc]: bearer JWTs from an OpenID Connect issuer (None: API tokens only).
    oidc: OidcSettings | None = None

    def __post_init__(self) -> None:
        if self.oidc is not None and not isinstance(self.oidc, OidcSettings):
            raise ApiSettingsError("[api.oidc] must be a table")
        if not isinstance(self.enabled, bool):
            raise ApiSettingsError("api.enabled must be true or false")
        self.host_port()  # raises on a bad listen value
        for name in ("tls_cert", "tls_key"):
            if not isinstance(getattr(self, name), str):
                raise ApiSettingsError(f"api.{name} must be a path")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ApiSettingsError("api.tls_cert and api.tls_key go together")
        if (not isinstance(self.rate_per_s, int | float) or isinstance(self.rate_per_s, bool)
                or self.rate_per_s <= 0):
            raise ApiSettingsError("api.rate_per_s must be a positive number")
        for name in ("rate_burst", "max_body_bytes", "max_upload_bytes",
                     "inline_max_states"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ApiSettingsError(f"api.{name} must be a positive integer")
        for name in ("cors_origins", "webhook_hosts"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(v, str) and v
                                                       for v in value):
                raise ApiSettingsError(f"api.{name} must be a list of strings")

    def host_port(self) -> tuple[str, int]:
        """`listen` split as ("127.0.0.1", 8080); "[::1]:8080" for IPv6."""
        text = self.listen
        if not isinstance(text, str) or ":" not in text:
            raise ApiSettingsError(f"api.listen {text!r}: expected HOST:PORT")
        host, _, port_text = text.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            port = int(port_text)
            ipaddress.ip_address(host)
        except ValueError:
            raise ApiSettingsError(f"api.listen {text!r}: expected an IP address and a "
                                   "port, e.g. 127.0.0.1:8443") from None
        if not 0 <= port <= MAX_PORT:
            raise ApiSettingsError(f"api.listen {text!r}: {port} is not a port")
        return host, port

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.host_port()[0]).is_loopback

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    def tls_paths(self, home: Path) -> tuple[Path, Path]:
        """Certificate and key paths (relative ones are relative to the home)."""
        def resolve(text: str) -> Path:
            path = Path(text).expanduser()
            return path if path.is_absolute() else home / path
        return resolve(self.tls_cert), resolve(self.tls_key)

    def check_exposure(self, home: Path) -> None:
        """Refuse a listen address beyond loopback without TLS, and TLS files that are not
        there: raised before the daemon starts anything."""
        if not self.enabled:
            return
        if not self.loopback and not self.tls:
            raise ApiSettingsError(
                f"api.listen {self.listen} is not a loopback address: set api.tls_cert and "
                "api.tls_key (TLS 1.3 is required off loopback), or listen on 127.0.0.1")
        if self.tls:
            for path in self.tls_paths(home):
                if not path.is_file():
                    raise ApiSettingsError(f"api TLS file {path} does not exist")


_KEYS: Final = frozenset(f.name for f in fields(ApiSettings))


def parse_api_settings(body: Any) -> ApiSettings:
    """The [api] table (with its [api.oidc] sub-table) as ApiSettings; ApiSettingsError
    naming an unknown key or bad value."""
    if not isinstance(body, dict):
        raise ApiSettingsError("[api] must be a table")
    unknown = sorted(set(body) - _KEYS)
    if unknown:
        raise ApiSettingsError(f"unknown key(s) in [api]: {', '.join(unknown)}")
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                              for k, v in body.items() if k != "oidc"}
    if "oidc" in body:
        try:
            values["oidc"] = parse_oidc_settings(body["oidc"])
        except OidcSettingsError as exc:
            raise ApiSettingsError(str(exc)) from None
    try:
        return ApiSettings(**values)
    except TypeError as exc:
        raise ApiSettingsError(f"[api]: {exc}") from None
