"""The ledger's messages on `/gd/raft/1.0.0`: Raft frames, head gossip and catch-up.

Declared apart from the service so the links, the gossip and the catch-up code (and the
tests that speak the protocol as a hostile peer) share one definition without importing
the service itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from libp2p.custom_types import TProtocol

from gd.protocol.wire import Message, message

RAFT_PROTOCOL_ID: Final = TProtocol("/gd/raft/1.0.0")


def region_log_id(region: str) -> str:
    """The log id signed into a region's tree heads: heads of two regions never mix."""
    return f"region:{region}"


@message
@dataclass(frozen=True)
class RaftFrame(Message):
    """One Raft message (`gd.ledger.raft_messages`, canonical msgpack)."""

    TYPE = "gd.raft.msg"
    data: bytes


@message
@dataclass(frozen=True)
class LedgerGossip(Message):
    """Our latest signed tree head (empty: none yet) and the voters our config names: a
    region member that is not a voter asks to be a learner by sending this."""

    TYPE = "gd.raft.gossip"
    head: bytes
    voters: tuple[str, ...]


@message
@dataclass(frozen=True)
class LedgerFetch(Message):
    """Send me ledger entries [start, stop) (snapshot catch-up)."""

    TYPE = "gd.raft.fetch"
    start: int
    stop: int


@message
@dataclass(frozen=True)
class LedgerChunk(Message):
    """Sequenced entries from `start` on (possibly fewer than asked), and the sender's size."""

    TYPE = "gd.raft.chunk"
    start: int
    entries: tuple[bytes, ...]
    size: int


__all__ = ["RAFT_PROTOCOL_ID", "LedgerChunk", "LedgerFetch", "LedgerGossip", "RaftFrame",
           "region_log_id"]
