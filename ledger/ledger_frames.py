"""The ledger's frames on `/gd/raft/1.0.0`: Raft messages, head gossip and catch-up.

Declared in the core room so the sans-I/O conversations (`gd.ledger.link_core`,
`inbound_core`, `gossip_core`, `catchup_core`), the node's drivers and the tests that
speak the protocol as a hostile peer share one definition. The protocol id is a plain
string here (cores import no libp2p); `gd.node.services.ledger_wire` types it for libp2p.

`RaftFrame.data` is the one nested encoding left: the Raft core's own canonical codec
(`RaftMessage.encode`), whose decoder checks every field of the entries and snapshots it
carries; the frame registry cannot describe those nested records (docs/ledger.md, "Wire").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gd.protocol.wire import Message, message

RAFT_PROTOCOL: Final = "/gd/raft/1.0.0"


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


__all__ = ["RAFT_PROTOCOL", "LedgerChunk", "LedgerFetch", "LedgerGossip", "RaftFrame",
           "region_log_id"]
