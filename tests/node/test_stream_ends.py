"""How a FramedStream's end is read and written: a clean end inside a frame is the
peer's fault, a broken stream is not, and our own cut-off send never looks like a clean
end to the peer (the sovereign service simulation's seed 14759)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import trio
from gd_testkit import key_from_int
from libp2p.peer.id import ID
from libp2p.stream_muxer.exceptions import MuxedStreamEOF, MuxedStreamReset

from gd.node.net.streams import FramedStream, Ping, StreamGone
from gd.protocol.errors import RemoteProtocolError
from gd.protocol.wire import encode_frame

PEER = key_from_int(7).peer_id


class FakeStream:
    """The INetStream surface FramedStream uses: scripted reads, recorded writes."""

    def __init__(self, reads: list[bytes | BaseException] = (), *,  # type: ignore[assignment]
                 block_write: bool = False) -> None:
        self.muxed_conn = SimpleNamespace(peer_id=ID.from_base58(PEER))
        self.reads = list(reads)
        self.block_write = block_write
        self.written: list[bytes] = []
        self.ended: list[str] = []

    async def read(self, n: int) -> bytes:
        await trio.lowlevel.checkpoint()
        item = self.reads.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    async def write(self, data: bytes) -> None:
        self.written.append(data[:3])  # part of the frame is out...
        if self.block_write:
            await trio.sleep_forever()  # ...and the rest waits on the peer's window
        self.written[-1] = data

    async def close(self) -> None:
        self.ended.append("close")

    async def reset(self) -> None:
        self.ended.append("reset")


def frame() -> bytes:
    return encode_frame(Ping(nonce=b"n" * 8))


async def test_a_clean_end_inside_a_frame_is_the_peers_protocol_error() -> None:
    fs = FramedStream(FakeStream([frame()[:5], MuxedStreamEOF("eof")]))  # type: ignore[arg-type]
    with pytest.raises(RemoteProtocolError, match="inside a frame"):
        await fs.receive()


async def test_a_reset_inside_a_frame_is_a_gone_stream_not_a_protocol_error() -> None:
    fs = FramedStream(FakeStream([frame()[:5], MuxedStreamReset("reset")]))  # type: ignore[arg-type]
    with pytest.raises(StreamGone):
        await fs.receive()


async def test_a_clean_end_at_a_frame_boundary_is_a_gone_stream() -> None:
    fs = FramedStream(FakeStream([frame(), MuxedStreamEOF("eof")]))  # type: ignore[arg-type]
    assert isinstance(await fs.receive(), Ping)
    with pytest.raises(StreamGone):
        await fs.receive()


async def test_a_send_cut_off_part_way_resets_the_stream_on_close() -> None:
    stream = FakeStream(block_write=True)
    fs = FramedStream(stream)  # type: ignore[arg-type]
    with trio.move_on_after(0.05):
        await fs.send(Ping(nonce=b"n" * 8))
    assert fs.torn
    await fs.close()
    assert stream.ended == ["reset"]


async def test_a_whole_send_ends_the_stream_cleanly() -> None:
    stream = FakeStream()
    fs = FramedStream(stream)  # type: ignore[arg-type]
    await fs.send(Ping(nonce=b"n" * 8))
    await fs.close()
    assert stream.ended == ["close"] and not fs.torn


async def test_a_connection_shutting_down_inside_a_frame_is_a_gone_stream() -> None:
    # yamux ends every stream of a dying connection with an EOF ("Connection shut
    # down"): a crashed peer, not one that truncated a frame on purpose.
    stream = FakeStream([frame()[:5], MuxedStreamEOF("Connection shut down")])
    stream.muxed_conn.event_shutting_down = trio.Event()
    stream.muxed_conn.event_shutting_down.set()
    fs = FramedStream(stream)  # type: ignore[arg-type]
    with pytest.raises(StreamGone):
        await fs.receive()


async def test_closing_while_another_task_sends_resets_the_stream() -> None:
    stream = FakeStream(block_write=True)
    fs = FramedStream(stream)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.send, Ping(nonce=b"n" * 8))
        await trio.sleep(0.01)
        await fs.close()
        nursery.cancel_scope.cancel()
    assert stream.ended == ["reset"]
