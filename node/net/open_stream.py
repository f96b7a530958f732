"""Opening a framed stream to a peer, bounded in time, with one meaning for every failure.

Why one function: the sync, ledger and sovereignty services each opened their streams
the same way (a bounded `new_stream`, every libp2p failure turned into `StreamGone`,
bytes counted per protocol), three copies that could drift apart in what they call "the
peer is gone". A failure to open is never the peer's protocol error: the peer may just
have left, so nobody scores it for that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import trio
from libp2p.custom_types import TProtocol

from gd.node.net.host import to_id
from gd.node.net.streams import READ_TIMEOUT_S, ByteCounter, FramedStream, StreamGone


class StreamOpener(Protocol):
    """What opening needs of a host: libp2p's `IHost.new_stream` (or a simulated one)."""

    async def new_stream(self, peer_id: Any, protocol_ids: Sequence[TProtocol]) -> Any: ...


async def open_framed_stream(host: StreamOpener, peer: str, protocol_id: str, *,
                             timeout_s: float, count_bytes: ByteCounter | None = None,
                             read_timeout_s: float = READ_TIMEOUT_S) -> FramedStream:
    """A `FramedStream` of `protocol_id` to `peer`, opened within `timeout_s`;
    `StreamGone` when it cannot be had (too slow, no connection, protocol refused)."""
    try:
        with trio.fail_after(timeout_s):
            stream = await host.new_stream(to_id(peer), [TProtocol(protocol_id)])
    except trio.TooSlowError:
        raise StreamGone(f"could not open {protocol_id} to {peer} in time") from None
    except Exception as exc:  # libp2p raises many kinds for "no connection"
        raise StreamGone(f"could not open {protocol_id} to {peer}: {exc!r}") from None
    return FramedStream(stream, read_timeout_s=read_timeout_s, count_bytes=count_bytes)
