"""The ledger's protocol id typed for libp2p; the frames live in `gd.ledger.ledger_frames`.

The cores import no libp2p, so the id they name is a plain string; the drivers (links,
the inbound server, the tests speaking as a peer) use this `TProtocol` of it.
"""

from __future__ import annotations

from typing import Final

from libp2p.custom_types import TProtocol

from gd.ledger.ledger_frames import (
    RAFT_PROTOCOL,
    LedgerChunk,
    LedgerFetch,
    LedgerGossip,
    RaftFrame,
    region_log_id,
)

RAFT_PROTOCOL_ID: Final = TProtocol(RAFT_PROTOCOL)

__all__ = ["RAFT_PROTOCOL_ID", "LedgerChunk", "LedgerFetch", "LedgerGossip", "RaftFrame",
           "region_log_id"]
