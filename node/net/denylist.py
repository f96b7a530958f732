"""The node's deny list: peers it refuses to talk to, whatever the mesh would like.

Operators use it to cut a misbehaving organisation off at once; the testnet uses it to
inject partitions (`gd-node testnet partition A,B | C`). It lives in `HOME/deny-peers.json`
so a partition survives a node restart, like a firewall rule would; the daemon reads it at
start and the `deny` control method replaces it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gd.genome.identity import is_peer_id

DENY_FILE = "deny-peers.json"


class DenyListError(ValueError):
    """The deny list file is unreadable or names something that is not a peer id."""


def deny_path(home_root: Path) -> Path:
    return home_root / DENY_FILE


def load_deny_list(home_root: Path) -> frozenset[str]:
    path = deny_path(home_root)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return frozenset()
    except (OSError, ValueError) as exc:
        raise DenyListError(f"{path}: unreadable deny list: {exc}") from None
    return _validated(data, str(path))


def save_deny_list(home_root: Path, peers: frozenset[str] | set[str]) -> frozenset[str]:
    """Replace the deny list (atomically); an empty list removes the file."""
    clean = _validated(sorted(peers), "deny list")
    path = deny_path(home_root)
    if not clean:
        path.unlink(missing_ok=True)
        return clean
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(sorted(clean), indent=1))
    os.replace(tmp, path)
    return clean


def _validated(data: object, where: str) -> frozenset[str]:
    if not isinstance(data, list):
        raise DenyListError(f"{where}: expected a JSON list of peer ids")
    bad = [p for p in data if not isinstance(p, str) or not is_peer_id(p)]
    if bad:
        raise DenyListError(f"{where}: not peer ids: {bad[:3]}")
    return frozenset(data)
