"""The agreements conversation (`/gd/agreements/1.0.0`): its frames, the signed
tombstone of the right to deletion, and the delivery rules, sans-I/O (issue 12, item 4).

A sender delivers a peer's outbox oldest first: signed proposals (`ProposalDelivery`,
at most `MAX_PROPOSALS_PER_FRAME` a frame), then signed tombstones (`ForgetDelivery`);
the peer applies each frame and acknowledges it (`DeliveryAck` naming the same `upto`),
and only then does the sender drop those items from its outbox, so a cut connection
re-delivers (harmless: applying a proposal or a tombstone twice changes nothing).
Proposals and tombstones travel as their signed bytes: the receiver needs exactly those
bytes to check the signature. `delivery_frames` cuts an outbox into frames and
`check_ack` holds the peer to the acknowledgement it owes; the daemon's driver is
`gd.node.services.sovereignty_delivery`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from gd.genome import canonical, checks
from gd.genome.errors import DecodeError, SignatureError, ValidationError
from gd.genome.identity import NodeKey, is_peer_id, verify
from gd.protocol.errors import RemoteProtocolError
from gd.protocol.wire import Message, message

AGREEMENTS_PROTOCOL_ID: Final = "/gd/agreements/1.0.0"
# Proposals per frame: each is at most MAX_PROPOSAL_BYTES (4 KiB), so 64 stay far below
# the 4 MiB frame limit; a longer outbox goes in several frames.
MAX_PROPOSALS_PER_FRAME: Final = 64
# Gene ids per tombstone: 1024 ids of at most 128 characters stay under 140 KiB signed;
# forgetting more genes at once makes several tombstones.
MAX_TOMBSTONE_IDS: Final = 1024
MAX_TOMBSTONE_BYTES: Final = 160 * 1024
MAX_TOMBSTONES_PER_FRAME: Final = 16
TOMBSTONE_TAG: Final = b"gd-forget-tombstone/1\x00"
_TOMBSTONE_FIELDS: Final = {"hlc", "ids", "origin", "peer", "sig"}


class TombstoneError(RemoteProtocolError):
    """A peer's tombstone is malformed, mis-addressed or not signed by the gene's origin."""


@dataclass(frozen=True, slots=True)
class Tombstone:
    """"Delete these genes of mine": signed by `origin`, addressed to `peer`.

    `gene_ids` are the ids as the peer holds them (for an anonymised share, the derived
    ids). A receiver deletes only genes whose origin is the signer: no one can make a
    peer forget genes that are not theirs."""

    origin: str
    peer: str
    gene_ids: tuple[str, ...]
    hlc: int
    signature: bytes = b""

    def __post_init__(self) -> None:
        for name in ("origin", "peer"):
            if not is_peer_id(getattr(self, name)):
                raise ValidationError(name, f"{getattr(self, name)!r} is not a peer id")
        if not isinstance(self.gene_ids, tuple) or not 1 <= len(self.gene_ids) \
                <= MAX_TOMBSTONE_IDS:
            raise ValidationError("ids", f"1..{MAX_TOMBSTONE_IDS} gene ids")
        for gene_id in self.gene_ids:
            checks.ident("ids", gene_id)
        checks.uint("hlc", self.hlc)
        if not isinstance(self.signature, bytes) or len(self.signature) not in (0, 64):
            raise ValidationError("sig", "expected 64 bytes")

    def _plain(self) -> dict[str, Any]:
        return {"hlc": self.hlc, "ids": list(self.gene_ids), "origin": self.origin,
                "peer": self.peer}

    @property
    def signing_bytes(self) -> bytes:
        return TOMBSTONE_TAG + canonical.encode(self._plain())

    @classmethod
    def create(cls, key: NodeKey, peer: str, gene_ids: Sequence[str], hlc: int) -> Tombstone:
        unsigned = cls(key.peer_id, peer, tuple(gene_ids), hlc)
        return replace(unsigned, signature=key.sign(unsigned.signing_bytes))

    def encode(self) -> bytes:
        plain = self._plain()
        plain["sig"] = self.signature
        return canonical.encode(plain)

    @classmethod
    def decode(cls, data: bytes) -> Tombstone:
        """Strictly decode and verify; `TombstoneError` if anything is off."""
        if not isinstance(data, bytes) or len(data) > MAX_TOMBSTONE_BYTES:
            raise TombstoneError(f"a tombstone is bytes of at most {MAX_TOMBSTONE_BYTES}")
        try:
            plain = checks.require_map("tombstone", canonical.decode(data))
            if set(plain) != _TOMBSTONE_FIELDS:
                raise ValidationError("tombstone", f"fields must be {sorted(_TOMBSTONE_FIELDS)}")
            ids = plain["ids"]
            if not isinstance(ids, list):
                raise ValidationError("ids", "expected a list")
            stone = cls(plain["origin"], plain["peer"], tuple(ids), plain["hlc"], plain["sig"])
        except (DecodeError, ValidationError, TypeError, ValueError) as exc:
            raise TombstoneError(f"malformed tombstone: {exc}") from None
        if stone.encode() != data:
            raise TombstoneError("tombstone bytes are not canonical")
        try:
            verify(stone.origin, stone.signing_bytes, stone.signature)
        except SignatureError as exc:
            raise TombstoneError(f"tombstone not signed by {stone.origin}: {exc}") from None
        return stone


# ---- frames --------------------------------------------------------------------------


@message
@dataclass(frozen=True)
class ProposalDelivery(Message):
    """Sender -> peer: signed `Proposal` bytes from our outbox for it, oldest first;
    `upto` is the outbox sequence of the last one (what the ack confirms)."""

    TYPE = "gd.agreements.proposals"
    proposals: tuple[bytes, ...]
    upto: int

    def __post_init__(self) -> None:
        if not 1 <= len(self.proposals) <= MAX_PROPOSALS_PER_FRAME:
            raise ValueError(f"1..{MAX_PROPOSALS_PER_FRAME} proposals per frame")


@message
@dataclass(frozen=True)
class ForgetDelivery(Message):
    """Origin -> peer: signed tombstones (the `forget` kind of this protocol)."""

    TYPE = "gd.agreements.forget"
    tombstones: tuple[bytes, ...]
    upto: int

    def __post_init__(self) -> None:
        if not 1 <= len(self.tombstones) <= MAX_TOMBSTONES_PER_FRAME:
            raise ValueError(f"1..{MAX_TOMBSTONES_PER_FRAME} tombstones per frame")


@message
@dataclass(frozen=True)
class DeliveryAck(Message):
    """Peer -> sender: everything up to `upto` is applied (or refused, counted in
    `refused`: refused items are never re-sent). `effective`: a proposal made (or kept)
    an agreement in force, so the sender backfills too. `deleted`: genes a tombstone
    removed."""

    TYPE = "gd.agreements.ack"
    upto: int
    effective: bool = False
    refused: int = 0
    deleted: int = 0


# An outbox item: (its sequence in the outbox, its signed bytes).
OutboxItem = tuple[int, bytes]


def delivery_frames(proposals: Sequence[OutboxItem], tombstones: Sequence[OutboxItem]
                    ) -> list[ProposalDelivery | ForgetDelivery]:
    """An outbox as frames, oldest first: proposals before tombstones, each frame's
    `upto` the outbox sequence of its last item (what the ack must confirm)."""
    frames: list[ProposalDelivery | ForgetDelivery] = []
    for i in range(0, len(proposals), MAX_PROPOSALS_PER_FRAME):
        chunk = proposals[i:i + MAX_PROPOSALS_PER_FRAME]
        frames.append(ProposalDelivery(tuple(data for _, data in chunk), chunk[-1][0]))
    for i in range(0, len(tombstones), MAX_TOMBSTONES_PER_FRAME):
        chunk = tombstones[i:i + MAX_TOMBSTONES_PER_FRAME]
        frames.append(ForgetDelivery(tuple(data for _, data in chunk), chunk[-1][0]))
    return frames


def check_ack(reply: Message, sent: ProposalDelivery | ForgetDelivery) -> DeliveryAck:
    """The peer's answer to `sent`, which must acknowledge exactly its `upto`."""
    if not isinstance(reply, DeliveryAck) or reply.upto != sent.upto:
        raise RemoteProtocolError(f"expected gd.agreements.ack up to {sent.upto}")
    return reply


def unexpected(msg: Message) -> RemoteProtocolError:
    """The error for a frame that has no place on this protocol."""
    return RemoteProtocolError(f"unexpected {msg.TYPE} on {AGREEMENTS_PROTOCOL_ID}")
