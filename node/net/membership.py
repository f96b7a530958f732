"""Who counts as a member of our region for the ledger (issue 11, item 6).

Only members get the region's ledger (`LedgerFetch`, gossiped heads, catch-up) and a
learner slot. This is THE one place that decides it.

* A configured voter is a member: its peer id is pinned in our config.
* A peer whose handshake carried a certificate from an org key we trust is a member when
  the certified region is ours (`PeerRecord.certified_region`), and never otherwise.
* An uncertified peer is never a member: its claimed region is only its own say-so, and
  a fresh key claiming our region must get neither our ledger nor a learner slot
  (issue 11, item 6). A region's nodes therefore carry org certificates (`gd-node org
  certify`; the testnet and the test clusters issue them); voters need none.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any


def region_member(rec: Any, region: str, voters: Collection[str]) -> bool:
    """Whether the peer behind `rec` (a `PeerRecord`) is a member of `region`."""
    if rec.peer_id in voters:
        return True
    return getattr(rec, "certified_region", None) == region
