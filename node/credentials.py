"""A node's org credentials on disk: its certificate, and the org keys it trusts.

    HOME/node.cert          our org's certificate of this node (`gd-node org certify`)
    HOME/trusted-orgs.toml  org keys pinned with `gd-node org trust NAME KEY`
    ORGDIR/org.key          an org's secret key (`gd-node org init`; 0600, keep offline)
    ORGDIR/org.toml         the org's name and public key (safe to publish)

Together with `[trust] orgs` in config.toml and an `[orgs]` table in the bootstrap file,
these make the `TrustAnchors` the handshake checks peers' certificates against
(docs/adr/0008-org-certificates-and-trust-anchors.md). Everything is read once at start;
a problem that would make the node present a certificate peers must refuse (another
node's, another org's or region's) stops the start with a clear `ConfigError`; an
expired certificate does not (the node runs uncertified, and says so in its log).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gd.genome.certificate import (
    NO_TRUST,
    CertificateError,
    NodeCertificate,
    TrustAnchors,
    check_org_name,
    fingerprint,
    org_key_text,
    parse_org_key,
)
from gd.genome.errors import ValidationError
from gd.genome.identity import NodeKey
from gd.node.clock import SYSTEM_CLOCK
from gd.node.config import ConfigError, NodeConfig, parse_trusted_orgs
from gd.node.errors import BootstrapError
from gd.node.home import private_dir, write_private_text
from gd.node.net.bootstrap_file import load_bootstrap_orgs

CERT_FILE = "node.cert"
TRUSTED_ORGS_FILE = "trusted-orgs.toml"
ORG_KEY_FILE = "org.key"
ORG_INFO_FILE = "org.toml"
ORG_KEY_HEADER = "# gd-node Ed25519 ORG key (hex seed): certifies the org's nodes. Keep secret.\n"
_TRUSTED_HEADER = ("# Org keys this node trusts, written by `gd-node org trust`.\n"
                   "# `org:NAME` / `region:R` rules match peers certified by these keys.\n")


@dataclass(frozen=True)
class NodeCredentials:
    """What the handshake needs: our certificate (b"": none) and the keys we trust.
    `note` explains a certificate we hold but cannot use (expired), for the log."""

    certificate: bytes = b""
    trust: TrustAnchors = NO_TRUST
    note: str = ""


def load_trusted_orgs(home_root: Path) -> TrustAnchors:
    """HOME/trusted-orgs.toml (none when the file does not exist)."""
    path = home_root / TRUSTED_ORGS_FILE
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return NO_TRUST
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    if set(data) - {"orgs"}:
        raise ConfigError(f"{path}: expected only an [orgs] table")
    return parse_trusted_orgs(data.get("orgs", {}), str(path))


def save_trusted_orgs(home_root: Path, trust: TrustAnchors) -> Path:
    """Write HOME/trusted-orgs.toml (mode 0600, atomically: a crash keeps the old file)."""
    lines = [_TRUSTED_HEADER, "[orgs]"]
    for name, keys in sorted(trust.orgs.items()):
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'"{quoted}" = [' + ", ".join(f'"{org_key_text(k)}"' for k in sorted(keys))
                     + "]")
    path = home_root / TRUSTED_ORGS_FILE
    write_private_text(path, "\n".join(lines) + "\n")
    return path


def trust_org(home_root: Path, name: str, key: bytes) -> TrustAnchors:
    """Pin `key` for org `name` in HOME/trusted-orgs.toml; returns the file's pins."""
    try:
        check_org_name("org", name)
    except ValidationError as exc:
        raise ConfigError(str(exc)) from None
    trust = load_trusted_orgs(home_root).merged(TrustAnchors.of([(name, key)]))
    save_trusted_orgs(home_root, trust)
    return trust


def untrust_org(home_root: Path, name: str) -> bool:
    """Remove every key pinned for `name` in HOME/trusted-orgs.toml; True if any was."""
    trust = load_trusted_orgs(home_root)
    if name not in trust.orgs:
        return False
    save_trusted_orgs(home_root, TrustAnchors.of(p for p in trust.pairs() if p[0] != name))
    return True


def read_certificate(path: Path) -> NodeCertificate:
    """A certificate file, decoded and its signature checked; ConfigError says why not."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return NodeCertificate.decode(data)
    except CertificateError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def own_certificate(home_root: Path, cfg: NodeConfig, key: NodeKey, now_ms: int
                    ) -> tuple[bytes, str]:
    """(certificate bytes to offer, note). No file: (b"", ""). A certificate of another
    node, org or region is a ConfigError (peers would refuse it; better to say so now)."""
    path = home_root / CERT_FILE
    if not path.exists():
        return b"", ""
    cert = read_certificate(path)
    if cert.peer_id != key.peer_id:
        raise ConfigError(f"{path} certifies {cert.peer_id}, not this node ({key.peer_id}): "
                          f"ask org {cert.org} for a certificate of this node")
    if cert.org != cfg.org or cert.region != cfg.region:
        raise ConfigError(f"{path} certifies org {cert.org!r} in {cert.region}, but "
                          f"config.toml says org {cfg.org!r} in {cfg.region}")
    if now_ms >= cert.expires_ms:
        return b"", (f"{path} expired at {cert.expires_ms} ms: peers will treat this node as "
                     "uncertified until `gd-node org certify` issues a new one")
    return cert.encode(), ""


def load_credentials(home_root: Path, cfg: NodeConfig, key: NodeKey,
                     bootstrap: Path | None, now_ms: int | None = None) -> NodeCredentials:
    """Our certificate and every pinned org key (config, trusted-orgs.toml, bootstrap).
    `now_ms` (the daemon's clock) decides whether our certificate has expired."""
    now_ms = int(SYSTEM_CLOCK.wall() * 1000) if now_ms is None else now_ms
    certificate, note = own_certificate(home_root, cfg, key, now_ms)
    trust = cfg.trusted_orgs.merged(load_trusted_orgs(home_root))
    if bootstrap is not None:
        try:
            trust = trust.merged(load_bootstrap_orgs(bootstrap))
        except BootstrapError as exc:
            raise ConfigError(str(exc)) from None
    return NodeCredentials(certificate, trust, note)


def describe_trust(trust: TrustAnchors) -> list[dict[str, Any]]:
    """Plain rows for `gd-node org list`."""
    return [{"org": name, "key": org_key_text(k), "fingerprint": fingerprint(k)}
            for name, k in trust.pairs()]


def create_org_dir(directory: Path, name: str, key: NodeKey) -> Path:
    """A new org: DIR (0700) with org.key (0600) and org.toml. Refuses to overwrite an
    existing org key: a lost org key means re-certifying every node and re-pinning."""
    try:
        check_org_name("org", name)
    except ValidationError as exc:
        raise ConfigError(str(exc)) from None
    private_dir(directory)
    key_path = directory / ORG_KEY_FILE
    try:
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{key_path} already exists: an org key is never replaced") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(ORG_KEY_HEADER + key.seed.hex() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    write_private_text(directory / ORG_INFO_FILE,
                       f'# gd-node org: its name and public key (pin this key on peers).\n'
                       f'name = "{quoted}"\npublic_key = "{org_key_text(key.public_key)}"\n')
    return key_path


def load_org_dir(directory: Path) -> tuple[str, NodeKey]:
    """(org name, org key) from a directory `create_org_dir` made; ConfigError says why
    it is unusable (missing, world-readable, or the two files disagree)."""
    info_path = directory / ORG_INFO_FILE
    try:
        info = tomllib.loads(info_path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{directory} is not an org directory (no {ORG_INFO_FILE}): "
                          "create one with `gd-node org init`") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{info_path}: cannot read: {exc}") from None
    try:
        key = NodeKey.load(directory / ORG_KEY_FILE)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the org key: {exc}") from None
    try:
        name = check_org_name(f"{info_path}: name", info.get("name"))
        pinned = parse_org_key(info.get("public_key"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if pinned != key.public_key:
        raise ConfigError(f"{info_path} names key {fingerprint(pinned)}, but {ORG_KEY_FILE} "
                          f"holds {fingerprint(key.public_key)}")
    return name, key


def write_certificate(path: Path, cert: NodeCertificate) -> Path:
    """Write an encoded certificate atomically (0600 like everything in a home)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(cert.encode())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path
