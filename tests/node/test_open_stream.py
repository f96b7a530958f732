"""`open_framed_stream`: one bounded way to open a peer's stream, every failure StreamGone."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import trio
from gd_testkit import key_from_int

from gd.node.net.open_stream import open_framed_stream
from gd.node.net.streams import PING_NONCE_BYTES, FramedStream, Ping, Pong, StreamGone

PEER = key_from_int(7).peer_id


class Host:
    """A host whose `new_stream` hangs, raises, or hands back a stream, as told."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.asked: list[tuple[str, list[str]]] = []

    async def new_stream(self, peer_id: Any, protocol_ids: Any) -> Any:
        self.asked.append((peer_id.to_base58(), [str(p) for p in protocol_ids]))
        if self.behaviour == "hang":
            await trio.sleep_forever()
        if self.behaviour == "refuse":
            raise ConnectionError("no connection to that peer")
        return Stream(peer_id)


class Stream:
    """A stream stand-in that keeps what is written."""

    def __init__(self, peer_id: Any) -> None:
        self.muxed_conn = SimpleNamespace(peer_id=peer_id)
        self.written = bytearray()

    async def write(self, data: bytes) -> None:
        self.written += data


async def test_a_stream_opened_in_time_is_framed_for_the_asked_protocol() -> None:
    host = Host("open")
    counted: list[tuple[str, int]] = []
    fs = await open_framed_stream(host, PEER, "/gd/test/1", timeout_s=1.0,
                                  count_bytes=lambda d, n: counted.append((d, n)))
    assert isinstance(fs, FramedStream) and fs.remote_peer_id == PEER
    assert host.asked == [(PEER, ["/gd/test/1"])]
    await fs.send(Ping(nonce=b"x" * 8))
    assert counted == [("out", len(fs.stream.written))] and counted[0][1] > 8


async def test_a_host_that_never_answers_is_a_gone_stream_after_the_timeout(
        autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    with pytest.raises(StreamGone, match="in time"):
        await open_framed_stream(Host("hang"), PEER, "/gd/test/1", timeout_s=7.0)
    assert trio.current_time() - start == pytest.approx(7.0)


async def test_any_libp2p_failure_to_open_is_a_gone_stream_not_a_crash() -> None:
    with pytest.raises(StreamGone, match="no connection to that peer"):
        await open_framed_stream(Host("refuse"), PEER, "/gd/test/1", timeout_s=1.0)


@pytest.mark.parametrize("frame", [Ping, Pong])
def test_ping_and_pong_refuse_a_nonce_of_the_wrong_size(frame: type) -> None:
    assert frame(nonce=b"n" * PING_NONCE_BYTES).nonce == b"n" * PING_NONCE_BYTES
    for size in (0, PING_NONCE_BYTES - 1, PING_NONCE_BYTES + 1):
        with pytest.raises(ValueError, match="nonce: expected"):
            frame(nonce=b"n" * size)
