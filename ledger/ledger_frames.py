"""The ledger's frames on `/gd/raft/2.0.0`: Raft messages, head gossip and catch-up.

Declared in the core room so the sans-I/O conversations (`gd.ledger.link_core`,
`inbound_core`, `gossip_core`, `catchup_core`), the node's drivers and the tests that
speak the protocol as a hostile peer share one definition. The protocol id is a plain
string here (cores import no libp2p); `gd.node.services.ledger_wire` types it for libp2p.

One encoding per frame (issue 12, item 4): `RaftFrame.msg` is the Raft message itself, a
nested record the frame registry builds with the Raft core's own strict checks
(`RaftMessage.from_plain`: every field, entry count, entry bytes, membership sizes), so
a frame is decoded once. Version 1 carried the message's canonical bytes in a bytes
field (msgpack inside msgpack); 2.0.0 makes an older build a stranger at negotiation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gd.ledger.raft_messages import RaftMessage
from gd.protocol.wire import Message, message

# 2.0.0: the Raft message is the frame's field, no longer its encoded bytes.
RAFT_PROTOCOL: Final = "/gd/raft/2.0.0"


def region_log_id(region: str) -> str:
    """The log id signed into a region's tree heads: heads of two regions never mix."""
    return f"region:{region}"


@message
@dataclass(frozen=True)
class RaftFrame(Message):
    """One Raft message (`gd.ledger.raft_messages`), decoded and checked with the frame."""

    TYPE = "gd.raft.msg"
    VERSION = 2
    msg: RaftMessage


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
