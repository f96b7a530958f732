"""Org keys of a testnet: one per org, derived from the testnet seed, certifying its nodes.

`make run` must show agreements flowing under the same rules as a real federation, where
`org:`/`region:` rules match only certified claims (docs/adr/0008). So each org gets an
org key (seeded: a testnet replays bit for bit), kept in DIR/orgs/ORG, each node a
certificate in its home, and every node pins every org of the plan.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from gd.genome.certificate import NodeCertificate, TrustAnchors
from gd.genome.identity import NodeKey
from gd.node.credentials import CERT_FILE, ORG_KEY_FILE, create_org_dir, write_certificate

ORGS_DIR = "orgs"
CERT_VALIDITY_MS = 365 * 24 * 3600 * 1000


def org_key(seed: int, org: str) -> NodeKey:
    """The testnet's key for `org`: a hash of (seed, org), never a real org's key."""
    return NodeKey.from_seed(hashlib.sha256(f"gd-testnet-org/{seed}/{org}".encode()).digest())


def testnet_trust(seed: int, orgs: list[str]) -> TrustAnchors:
    """Every org of the testnet, pinned."""
    return TrustAnchors.of((org, org_key(seed, org).public_key) for org in orgs)


def certify_node(directory: Path, seed: int, org: str, region: str, peer_id: str,
                 home_root: Path) -> None:
    """Write HOME/node.cert for this node, creating the org's key directory once."""
    key = org_key(seed, org)
    org_dir = directory / ORGS_DIR / org
    if not (org_dir / ORG_KEY_FILE).exists():
        create_org_dir(org_dir, org, key)
    now = int(time.time() * 1000)
    cert = NodeCertificate.issue(key, org, peer_id, region, not_before_ms=now,
                                 expires_ms=now + CERT_VALIDITY_MS)
    write_certificate(home_root / CERT_FILE, cert)
