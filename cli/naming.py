"""Names and times people read in tables: `org (region) …short-id`, ISO 8601, widths.

A 52-character peer id tells a person nothing and breaks every 80-column table. Tables
show the peer as its org and region (what this node recorded for it: the policy store's
peer records, kept from handshakes, or the daemon's live peer list) with the id's last
eight characters, which stay whole (columns holding ids never fold them). --json keeps
the full ids. Times are ISO 8601 UTC.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from rich.console import Console

# Characters of a peer id kept in tables, after an ellipsis.
SHORT_PEER: Final = 8
# Gene ids in tables: 12 characters (any unique prefix is accepted back, see gene_ref).
SHORT_GENE: Final = 12
# From this many columns a table can afford its long free-text columns (conditions).
WIDE: Final = 110
# An Ed25519 libp2p peer id as printed (base58btc of the identity multihash).
PEER_ID_RE: Final = re.compile(r"12D3KooW[1-9A-HJ-NP-Za-km-z]{44}")


def short_peer(peer_id: str) -> str:
    return "…" + peer_id[-SHORT_PEER:] if len(peer_id) > SHORT_PEER + 1 else peer_id


class PeerNames:
    """peer id -> (org, region) as this node knows them, and labels built from them."""

    def __init__(self, known: Mapping[str, tuple[str, str]] | None = None) -> None:
        self.known: dict[str, tuple[str, str]] = dict(known or {})

    @classmethod
    def from_records(cls, records: Iterable[Any]) -> PeerNames:
        """From objects or dicts with peer_id, org and region (PeerInfo, `peers` rows)."""
        known: dict[str, tuple[str, str]] = {}
        for r in records:
            get = r.get if isinstance(r, Mapping) else (lambda k, r=r: getattr(r, k, None))
            peer, org, region = get("peer_id"), get("org"), get("region")
            if isinstance(peer, str) and (org or region):
                known[peer] = (str(org or "?"), str(region or "?"))
        return cls(known)

    def add(self, peer_id: str, org: str, region: str) -> None:
        self.known[peer_id] = (org, region)

    def label(self, peer_id: str) -> str:
        """`globex (us-east) …Kq3xTzvW`, or just the short id for a peer never met."""
        org_region = self.known.get(peer_id)
        short = short_peer(peer_id)
        return f"{org_region[0]} ({org_region[1]}) {short}" if org_region else short

    def text(self, text: str) -> str:
        """`text` with every full peer id in it replaced by its label (rule texts)."""
        return PEER_ID_RE.sub(lambda m: self.label(m.group(0)), text)


def iso_ms(ms: int | float | None) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC to the second; '-' for none."""
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_s(seconds: int | float | None) -> str:
    return iso_ms(seconds * 1000) if seconds else "-"


def is_wide(console: Console) -> bool:
    return console.width >= WIDE
