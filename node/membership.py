"""Who counts as a member of our region for the ledger (issue 11, item 6).

Only members get the region's ledger (`LedgerFetch`, gossiped heads, catch-up) and a
learner slot. This is THE one place that decides it, so that tightening it (say, once
every region's nodes carry org certificates) is a one-line change here.

* A configured voter is a member: its peer id is pinned in our config.
* A peer whose handshake carried a certificate from an org key we trust is a member when
  the certified region is ours (`PeerRecord.certified_region`), and never otherwise.
* An uncertified peer: its claimed region is only its own say-so. While this node pins
  no org key at all (`require_certificate=False`: nothing could be certified, as in
  older setups and the in-process test clusters) the claim is taken; once it trusts an
  org key and has voters, an uncertified peer is not a member.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any


def region_member(rec: Any, region: str, voters: Collection[str], *,
                  require_certificate: bool) -> bool:
    """Whether the peer behind `rec` (a `PeerRecord`) is a member of `region`."""
    if rec.peer_id in voters:
        return True
    certified = getattr(rec, "certified_region", None)
    if certified is not None:
        return bool(certified == region)
    if require_certificate and voters:
        return False
    return bool(rec.region == region)


def requires_certificate(daemon: Any) -> bool:
    """True when the daemon trusts at least one org key (node/credentials.py)."""
    trust = getattr(getattr(daemon, "credentials", None), "trust", None)
    return bool(getattr(trust, "orgs", None))
