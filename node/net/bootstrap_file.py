"""`bootstrap-peers.toml`: the first peers to dial and the org keys this node pins.

    [[peers]]
    peer_id = "12D3KooW..."
    addrs = ["/ip4/203.0.113.7/tcp/4001"]
    region = "eu-west"          # optional hint; the handshake's signed claim wins

    [orgs]                      # optional: org keys this node pins (ADR 0008)
    beta = "ed25519:<64 hex>"   # `org:beta` rules match peers beta's key certifies

Parsing, loading and writing the file, apart from the DHT that uses it
(`gd.node.net.discovery`): the CLI reads the pinned org keys (`gd-node trust`, the
credentials) without importing libp2p, which alone took ~0.5 s of every command's start.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gd.genome import checks
from gd.genome.certificate import NO_TRUST, TrustAnchors, org_key_text
from gd.genome.errors import ValidationError
from gd.genome.identity import is_peer_id
from gd.node.config import ConfigError, parse_trusted_orgs
from gd.node.errors import BootstrapError

MAX_BOOTSTRAP_PEERS = 256
MAX_ADDRS_PER_PEER = 16


@dataclass(frozen=True)
class BootstrapPeer:
    peer_id: str
    addrs: tuple[str, ...]
    region: str | None = None


def parse_bootstrap(data: dict[str, Any], where: str = "bootstrap-peers.toml"
                    ) -> list[BootstrapPeer]:
    unknown = set(data) - {"peers", "orgs"}
    if unknown:
        raise BootstrapError(f"{where}: unknown top-level keys {sorted(unknown)}; "
                             "expected [[peers]] tables and an [orgs] table")
    parse_bootstrap_orgs(data, where)
    entries = data.get("peers", [])
    if not isinstance(entries, list):
        raise BootstrapError(f"{where}: `peers` must be an array of [[peers]] tables")
    if len(entries) > MAX_BOOTSTRAP_PEERS:
        raise BootstrapError(f"{where}: {len(entries)} peers, the limit is {MAX_BOOTSTRAP_PEERS}")
    out: list[BootstrapPeer] = []
    for i, entry in enumerate(entries):
        at = f"{where}: peers[{i}]"
        if not isinstance(entry, dict):
            raise BootstrapError(f"{at}: not a table")
        extra = set(entry) - {"peer_id", "addrs", "region"}
        if extra:
            raise BootstrapError(f"{at}: unknown keys {sorted(extra)}")
        pid = entry.get("peer_id")
        if not isinstance(pid, str) or not is_peer_id(pid):
            raise BootstrapError(f"{at}: peer_id {pid!r} is not an Ed25519 peer id (12D3KooW...)")
        addrs = entry.get("addrs")
        if (not isinstance(addrs, list) or not addrs or len(addrs) > MAX_ADDRS_PER_PEER
                or not all(isinstance(a, str) and a.startswith("/") for a in addrs)):
            raise BootstrapError(f"{at}: addrs must be 1..{MAX_ADDRS_PER_PEER} multiaddrs "
                                 "such as \"/ip4/192.0.2.1/tcp/4001\"")
        for a in addrs:
            if "/p2p/" in a and not a.endswith("/p2p/" + pid):
                raise BootstrapError(f"{at}: address {a} names a different peer id")
        region = entry.get("region")
        if region is not None:
            try:
                checks.slug(f"{at}.region", region)
            except ValidationError as exc:
                raise BootstrapError(str(exc)) from None
        out.append(BootstrapPeer(pid, tuple(addrs), region))
    return out


def parse_bootstrap_orgs(data: dict[str, Any], where: str = "bootstrap-peers.toml"
                         ) -> TrustAnchors:
    """The file's [orgs] table: org keys pinned exactly as `[trust] orgs` in config.toml
    (the bootstrap file is one the operator chose and named in the config)."""
    if "orgs" not in data:
        return NO_TRUST
    try:
        return parse_trusted_orgs(data["orgs"], f"{where}: orgs")
    except ConfigError as exc:
        raise BootstrapError(str(exc)) from None


def load_bootstrap(path: Path) -> list[BootstrapPeer]:
    return parse_bootstrap(_read_bootstrap(path), str(path))


def load_bootstrap_orgs(path: Path) -> TrustAnchors:
    """The org keys a bootstrap file pins (none when it has no [orgs] table)."""
    return parse_bootstrap_orgs(_read_bootstrap(path), str(path))


def _read_bootstrap(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BootstrapError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BootstrapError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BootstrapError(f"{path}: not valid TOML: {exc}") from None


def render_bootstrap(peers: list[BootstrapPeer], orgs: TrustAnchors = NO_TRUST) -> str:
    """A bootstrap file for `peers`, pinning `orgs` (what testnets and docs write)."""
    lines = ["# gd-node bootstrap peers: one [[peers]] table per peer.", ""]
    if orgs:
        lines += ["# Org keys every node using this file trusts (docs/adr/0008).", "[orgs]"]
        for name, keys in sorted(orgs.orgs.items()):
            quoted = name.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'"{quoted}" = [' + ", ".join(f'"{org_key_text(k)}"' for k in sorted(keys))
                         + "]")
        lines.append("")
    for p in peers:
        lines += ["[[peers]]", f'peer_id = "{p.peer_id}"',
                  "addrs = [" + ", ".join(f'"{a}"' for a in p.addrs) + "]"]
        if p.region:
            lines.append(f'region = "{p.region}"')
        lines.append("")
    return "\n".join(lines)
