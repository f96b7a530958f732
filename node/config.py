"""config.toml: reading, validating and writing the node's configuration.

The file is written once by `gd-node init` with a comment on every setting, and read at
every start. Unknown sections or keys are an error (a typo must not silently fall back to
a default), and every value is checked here so the daemon never starts half-configured.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gd.genome import checks
from gd.genome.certificate import NO_TRUST, TrustAnchors, org_key_text, parse_org_key
from gd.genome.errors import ValidationError
from gd.node.api.settings import ApiSettings, ApiSettingsError, parse_api_settings
from gd.node.app.auto_adapt_settings import (
    AdaptationSettings,
    AdaptationSettingsError,
    parse_adaptation_settings,
)
from gd.node.config_sections import ConfigError, MeshSettings, SyncSettings, parse_section

if TYPE_CHECKING:
    from gd.node.domain_settings import DomainSettings

__all__ = ["ConfigError", "MeshSettings", "NodeConfig", "SyncSettings", "load_config",
           "parse_config", "render_config"]

DEFAULT_LISTEN = "/ip4/127.0.0.1/tcp/0"
# "public": peers may dial our listen addresses. "private": they cannot (NAT, firewall):
# we advertise only relayed addresses through a relay of our region (node/net/relay.py).
REACHABILITY = ("public", "private")


@dataclass(frozen=True)
class NodeConfig:
    org: str
    region: str
    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    bootstrap: str = ""
    metrics_port: int = 0
    relay: bool = False
    mdns: bool = False
    reachability: str = "public"
    ledger_voters: tuple[str, ...] = ()
    motors_backend: str = "numpy"
    cortex_map_size_mb: int = 1024
    # [trust] orgs: org name -> pinned org key(s). `org:`/`region:` rules match a peer only
    # through a certificate signed by one of these (docs/adr/0008).
    trusted_orgs: TrustAnchors = NO_TRUST
    # [api]: the HTTP API (gd.node.api.settings; validated there, typed here).
    api: ApiSettings = field(default_factory=ApiSettings)
    # [adaptation]: auto-adaptation on a veto or a received gene (node/app/auto_adapt.py).
    adaptation: AdaptationSettings = field(default_factory=AdaptationSettings)
    # [mesh], [sync] (node/config_sections.py) and [domains.<name>] (node/domain_settings.py),
    # checked when the file is read: no section reaches a subsystem unchecked.
    mesh: MeshSettings = field(default_factory=MeshSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    domains: Mapping[str, DomainSettings] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks.text("node.org", self.org, 128, required=True)
        checks.slug("node.region", self.region)
        for i, addr in enumerate(self.listen):
            if not isinstance(addr, str) or not addr.startswith("/"):
                raise ValidationError(f"node.listen[{i}]", f"{addr!r} is not a multiaddr")
        if self.reachability not in REACHABILITY:
            raise ValidationError("node.reachability", f"must be one of {', '.join(REACHABILITY)}")
        if not 0 <= self.metrics_port <= 65535:
            raise ValidationError("metrics.port", f"{self.metrics_port} is not a port")
        if self.motors_backend not in ("numpy", "torch"):
            raise ValidationError("motors.backend", "must be 'numpy' or 'torch'")
        if self.cortex_map_size_mb < 16:
            raise ValidationError("cortex.map_size_mb", "must be at least 16")
        if not isinstance(self.trusted_orgs, TrustAnchors):
            raise ValidationError("trust.orgs", "expected TrustAnchors")

    def resolve_bootstrap(self, home: Path) -> Path | None:
        if not self.bootstrap:
            return None
        path = Path(self.bootstrap).expanduser()
        return path if path.is_absolute() else home / path


_SCHEMA: dict[str, dict[str, str]] = {
    "node": {"org": "org", "region": "region", "listen": "listen", "bootstrap": "bootstrap",
             "relay": "relay", "mdns": "mdns", "reachability": "reachability"},
    "metrics": {"port": "metrics_port"},
    "ledger": {"voters": "ledger_voters"},
    "motors": {"backend": "motors_backend"},
    "cortex": {"map_size_mb": "cortex_map_size_mb"},
    "trust": {"orgs": "trusted_orgs"},
}
# More org keys than this in one file is a mistake, not a federation (Fabric channels
# have tens of orgs); the bound keeps a bad file from costing much at every start.
MAX_TRUSTED_ORG_KEYS = 1024


def parse_trusted_orgs(value: Any, where: str) -> TrustAnchors:
    """A `{name = "ed25519:<hex>"}` table (a list of keys per name for a rotation) as
    TrustAnchors; ConfigError naming the bad entry."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table such as {{beta = \"ed25519:<hex>\"}}")
    pairs: list[tuple[str, bytes]] = []
    for name, keys in value.items():
        keys = [keys] if isinstance(keys, str) else keys
        if not isinstance(keys, list | tuple) or not keys:
            raise ConfigError(f"{where}.{name}: expected an org key or a list of them")
        for text in keys:
            try:
                checks.text(f"{where}.{name}", name, 128, required=True)
                pairs.append((name, parse_org_key(text)))
            except ValueError as exc:
                raise ConfigError(f"{where}.{name}: {exc}") from None
    if len(pairs) > MAX_TRUSTED_ORG_KEYS:
        raise ConfigError(f"{where}: {len(pairs)} org keys, the limit is "
                          f"{MAX_TRUSTED_ORG_KEYS}")
    return TrustAnchors.of(pairs)

_TYPED_SECTIONS: dict[str, type[Any]] = {"mesh": MeshSettings, "sync": SyncSettings}


def _section_parser(section: str) -> Callable[[Any], Any] | None:
    """The parser of a section with its own settings type, None for the flat ones."""
    if section in _TYPED_SECTIONS:
        return lambda body: parse_section(_TYPED_SECTIONS[section], body, section)
    if section == "domains":
        # Imported here: the domain packs cost numpy (~0.1 s) that a read-only CLI
        # command reading config.toml does not need to pay otherwise.
        from gd.node.domain_settings import parse_domain_settings
        return parse_domain_settings
    return {"adaptation": parse_adaptation_settings, "api": parse_api_settings}.get(section)


def load_config(path: Path) -> NodeConfig:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: run `gd-node init` first") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, str(path))


def parse_config(data: dict[str, Any], where: str = "config") -> NodeConfig:
    """A parsed TOML document as NodeConfig; ConfigError names `where`, the section and
    the key of the first problem (unknown sections and keys are problems too)."""
    kwargs: dict[str, Any] = {}
    for section, body in data.items():
        parser = _section_parser(section)
        if parser is not None:
            try:
                kwargs[section] = parser(body)
            except (ConfigError, AdaptationSettingsError, ApiSettingsError) as exc:
                raise ConfigError(f"{where}: {exc}") from None
            continue
        if section not in _SCHEMA or not isinstance(body, dict):
            raise ConfigError(f"{where}: unknown section [{section}]")
        for key, value in body.items():
            if key not in _SCHEMA[section]:
                raise ConfigError(f"{where}: unknown key {section}.{key}")
            kwargs[_SCHEMA[section][key]] = tuple(value) if isinstance(value, list) else value
    if "trusted_orgs" in kwargs:
        kwargs["trusted_orgs"] = parse_trusted_orgs(kwargs["trusted_orgs"], f"{where}: trust.orgs")
    if "org" not in kwargs or "region" not in kwargs:
        raise ConfigError(f"{where}: [node] needs org and region")
    try:
        return NodeConfig(**kwargs)
    except (ValidationError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def render_config(cfg: NodeConfig) -> str:
    """The commented config.toml that `gd-node init` writes."""

    def q(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    listen = ", ".join(q(a) for a in cfg.listen)
    voters = ", ".join(q(v) for v in cfg.ledger_voters)
    trusted = ", ".join(
        f"{q(name)} = " + (q(org_key_text(next(iter(keys)))) if len(keys) == 1 else
                           "[" + ", ".join(q(org_key_text(k)) for k in sorted(keys)) + "]")
        for name, keys in sorted(cfg.trusted_orgs.orgs.items()))
    return f"""# gd-node configuration. Written by `gd-node init`; edit and restart the daemon.

[node]
# The organisation this node speaks for, and its region. Both are signed into the
# handshake so peers can check them against the peer id.
org = {q(cfg.org)}
region = {q(cfg.region)}
# Multiaddrs to listen on. tcp/0 picks a free port at start.
listen = [{listen}]
# Bootstrap peers file (relative paths are relative to this home). Empty: none.
bootstrap = {q(cfg.bootstrap)}
# Offer circuit relay v2 to peers of this region that cannot be dialled directly.
relay = {str(cfg.relay).lower()}
# Announce and discover peers on the local network with mDNS (dials the peers found).
mdns = {str(cfg.mdns).lower()}
# "public": peers dial our listen addresses. "private" (behind NAT or a firewall): we
# advertise no direct address; we reserve a slot on a relay = true peer of our region
# and advertise the relayed address instead.
reachability = {q(cfg.reachability)}

[metrics]
# Port for /healthz and /metrics on 127.0.0.1. 0 disables the HTTP endpoint.
port = {cfg.metrics_port}

[ledger]
# Peer ids of the region's ledger voters (3 or 5). Empty: this node alone orders its
# ledger (a region of one voter).
voters = [{voters}]

[motors]
# Array backend for the motors: "numpy" (default, bit-exact replay) or "torch".
backend = {q(cfg.motors_backend)}

[cortex]
# Upper bound of the LMDB map in MiB; it grows automatically when full.
map_size_mb = {cfg.cortex_map_size_mb}

[trust]
# Org keys we trust, by org name: `org:NAME` and `region:R` share rules match a peer only
# when a certificate signed by one of these keys vouches for its org and region
# (`gd-node org certify`). Uncertified peers still connect, and rules naming their peer
# id still apply. Also read: trusted-orgs.toml in this home (`gd-node org trust`) and
# the bootstrap file's orgs table. Example: orgs = {{ beta = "ed25519:<64 hex>" }}
orgs = {{ {trusted} }}

# Optional sections (uncomment to change the defaults):
#
# [api]                  # the HTTP API (docs/api.md); tokens: `gd-node tokens create`
# listen = "127.0.0.1:0" # HOST:PORT; 0 picks a free port (`gd-node status` shows it)
# tls_cert = ""          # PEM files; required (TLS 1.3) to listen beyond loopback
# tls_key = ""
# rate_per_s = 50.0      # requests per second per credential (429 beyond), burst:
# rate_burst = 100
# webhook_hosts = []     # hosts job webhooks may be POSTed to (none by default)
# OIDC bearer JWTs too: see docs/api.md for the [api.oidc] table (issuer, audience,
# roles_claim) and its roles table (claim value -> role, domains).
#
# [adaptation]           # docs/motors.md: a veto or a received gene queues an adapt job
# auto = true            # (a person still approves its winners); false: only by hand
# max_queued = 64        # auto jobs queued or running at once
# max_per_peer = 8       # auto jobs a day for the genes one peer sends us
# population = 512       # M_M search size of an auto job
# generations = 10
#
# [sync]                 # docs/protocol.md §6
# auto = true            # sync on connect, on local change and on a timer
# compress = true        # zstd per batch when the peer supports it
# interval_s = 30.0      # periodic pull from every peer
# debounce_s = 0.5       # wait this long after a local change before telling peers
# repair_interval_s = 600.0   # periodic anti-entropy (range reconciliation)
# batch_genes = 256      # genes per sync batch (at most 256)
#
# [mesh]                 # docs/node.md
# target_region_peers = 6     # peers kept inside our region
# target_bridges = 2          # links kept to other regions
# max_bytes_per_s = 10485760  # per-peer inbound rate before throttling
# ping_interval_s = 15.0      # liveness checks of every peer
# handshake_deadline_s = 15.0 # a connection that has not handshaken by then is closed
#
# [domains.turbofan]     # per domain: what to do with concurrent edits from peers
# conflict = "queue"     # queue (a person decides) | lww (later HLC wins) |
#                        # merge (later wins only if codons and action are the same)
"""
