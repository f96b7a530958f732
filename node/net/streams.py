"""Framed messages over libp2p streams, with every read bounded in time.

py-libp2p never notices a frozen peer: a `read()` on a stream whose peer stopped
answering hangs forever (notes/py-libp2p.md). So every read here sits inside
`trio.fail_after`, and a timeout is the peer's fault (`PeerTimeout`, a
RemoteProtocolError) which the mesh scores and acts on.

`stream.read()` raises `StreamEOF` at the end instead of returning b"": frames are
length-prefixed (protocol/wire.py), so a reader always knows whether it stopped at a frame
boundary (the peer closed: `StreamGone`) or inside a frame (truncated: RemoteProtocolError).
A reset or a lost connection is `StreamGone` wherever it lands: it says the stream broke,
not that the peer wrote a bad frame. Our side keeps the same promise: a send cut off
part-way (cancelled, or its write failed) leaves the stream torn, and `close` then
resets it instead of ending it cleanly, so an honest peer never reads a clean end inside
one of our frames (the sovereign service simulation, seed 14759, saw a cancelled writer
close gracefully and the reader score it as a protocol error).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError

from gd.protocol.errors import RemoteProtocolError
from gd.protocol.handshake import MAX_HANDSHAKE_FRAME, Handshake
from gd.protocol.wire import MAX_FRAME_SIZE, FrameDecoder, Message, encode_frame, message

# How long one read may wait for the peer. A 4 MiB frame at the slowest stack measured
# here (~9 MB/s) takes under half a second; a request is answered in milliseconds. Ten
# seconds tolerates a busy 2-core box and still frees a task held by a frozen peer.
READ_TIMEOUT_S = 10.0
# How long the whole handshake may take: one round trip plus two signature checks.
HANDSHAKE_TIMEOUT_S = 5.0
# Bytes asked of the muxer per read: the write batch size that maximised throughput.
READ_CHUNK = 64 * 1024
# How long `close` may spend resetting a torn stream, shielded from cancellation.
RESET_WAIT_S = 1.0
# Stream errors that mean "the other end is gone", not "the other end misbehaved".
_GONE = (BaseLibp2pError, trio.BrokenResourceError, trio.ClosedResourceError, OSError,
         EOFError)


class StreamGone(Exception):
    """The stream or its connection ended (reset, closed, EOF at a frame boundary)."""


class PeerTimeout(RemoteProtocolError):
    """The peer did not send what it owed us in time."""


class ByteBudget(Protocol):
    """Per-peer rate limit (node/net/peers.py `PeerBudget`): returns seconds to wait before
    reading on, or raises RemoteProtocolError when the peer must be dropped."""

    def charge(self, nbytes: int, now: float) -> float: ...


ByteCounter = Callable[[str, int], None]  # (direction "in"/"out", nbytes)


class FramedStream:
    """Messages over one libp2p stream. Not safe for concurrent sends from two tasks
    unless they share the `send_lock` (one frame must not interleave with another)."""

    def __init__(self, stream: INetStream, *, max_frame_size: int = MAX_FRAME_SIZE,
                 read_timeout_s: float = READ_TIMEOUT_S, budget: ByteBudget | None = None,
                 count_bytes: ByteCounter | None = None,
                 now: Callable[[], float] | None = None) -> None:
        if budget is not None and now is None:
            raise ValueError("a FramedStream with a byte budget needs the clock (`now`)")
        self.stream = stream
        self.remote_peer_id: str = stream.muxed_conn.peer_id.to_base58()
        self._decoder = FrameDecoder(max_frame_size=max_frame_size)
        self._max_frame_size = max_frame_size
        self._timeout = read_timeout_s
        self._budget = budget
        self._now = now  # the gate's monotonic clock: the budget refills on it
        self._count = count_bytes
        self.send_lock = trio.Lock()
        self.torn = False  # a send stopped part-way: `close` must reset, not end cleanly

    async def send(self, *msgs: Message) -> None:
        """Write all `msgs` in one write (batching is what makes streams fast)."""
        data = b"".join(encode_frame(m, max_frame_size=self._max_frame_size) for m in msgs)
        async with self.send_lock:
            try:
                await self.stream.write(data)
            except _GONE as exc:
                self.torn = True
                raise StreamGone(f"write to {self.remote_peer_id} failed: {exc!r}") from None
            except BaseException:  # cancelled mid-write: part of a frame may be out
                self.torn = True
                raise
        if self._count:
            self._count("out", len(data))

    async def receive(self) -> Message:
        """The next message; StreamGone at a clean end, RemoteProtocolError otherwise."""
        while (msg := self._decoder.next_message()) is None:
            data = await self._read()
            if data is None:
                if self._connection_ended():  # the peer's process or link went
                    raise StreamGone(f"the connection to {self.remote_peer_id} ended")
                self._decoder.close()  # raises RemoteProtocolError if inside a frame
                raise StreamGone(f"{self.remote_peer_id} closed the stream")
            self._decoder.feed(data)
        return msg

    def _connection_ended(self) -> bool:
        """Whether the whole connection is shutting down (yamux then ends every stream
        with an EOF, "Connection shut down": a crashed peer, not a truncating one)."""
        conn = getattr(self.stream, "muxed_conn", None)
        return any(getattr(getattr(conn, name, None), "is_set", lambda: False)()
                   for name in ("event_shutting_down", "event_closed"))

    async def _read(self) -> bytes | None:
        try:
            with trio.fail_after(self._timeout):
                data = await self.stream.read(READ_CHUNK)
        except trio.TooSlowError:
            raise PeerTimeout(f"{self.remote_peer_id} sent nothing for {self._timeout} s") \
                from None
        except EOFError:  # the peer ended its side: mid-frame, that is its fault
            return None
        except _GONE as exc:  # reset or connection lost: broken, not malformed
            raise StreamGone(f"stream from {self.remote_peer_id} broke: {exc!r}") from None
        if not data:
            return None
        if self._count:
            self._count("in", len(data))
        if self._budget is not None and self._now is not None:
            delay = self._budget.charge(len(data), self._now())
            if delay > 0:
                await trio.sleep(delay)  # throttle: yamux's window then slows the sender
        return data

    async def request(self, msg: Message) -> Message:
        await self.send(msg)
        return await self.receive()

    async def close(self) -> None:
        """End the stream cleanly, or reset it if one of our sends was cut off or is
        still under way in another task (a clean end would cut its frame). The
        reset is shielded (briefly): the cut is usually a cancellation, which would
        otherwise cancel the reset too and leave the peer reading a clean end."""
        if self.torn or self.send_lock.locked():  # a send cut off, or still under way
            self.torn = True
            with trio.CancelScope(shield=True), trio.move_on_after(RESET_WAIT_S):
                await self.reset()
            return
        try:
            await self.stream.close()
        except _GONE:
            return

    async def reset(self) -> None:
        try:
            await self.stream.reset()
        except _GONE:
            return


async def drive_handshake(stream: INetStream, handshake: Handshake,
                          timeout_s: float = HANDSHAKE_TIMEOUT_S) -> None:
    """Run `handshake` over `stream` until it has an outcome (set on the handshake).

    A timeout or a vanished stream ends it as a rejection, never as an exception; the
    verdict we owe the peer is written best-effort before returning.
    """
    async def flush() -> None:
        data = handshake.data_to_send()
        if data:
            await stream.write(data)

    try:
        with trio.fail_after(timeout_s):
            await flush()
            while not handshake.done:
                try:
                    data = await stream.read(MAX_HANDSHAKE_FRAME)
                except _GONE:
                    data = b""
                if not data:
                    handshake.peer_closed()
                    break
                handshake.receive_data(data)
                await flush()
    except trio.TooSlowError:
        handshake.timed_out(timeout_s)
    except _GONE:
        handshake.peer_closed()


# ---- liveness ------------------------------------------------------------------------

PING_PROTOCOL_ID = TProtocol("/gd/ping/1.0.0")
PING_NONCE_BYTES = 8


def _check_ping_nonce(nonce: bytes) -> None:
    """A ping and its pong carry the same nonce: one size, checked the same way."""
    if len(nonce) != PING_NONCE_BYTES:
        raise ValueError(f"nonce: expected {PING_NONCE_BYTES} bytes")


@message
@dataclass(frozen=True)
class Ping(Message):
    """Our own liveness probe (libp2p cannot tell a frozen peer from a quiet one)."""

    TYPE = "gd.ping"
    nonce: bytes

    def __post_init__(self) -> None:
        _check_ping_nonce(self.nonce)


@message
@dataclass(frozen=True)
class Pong(Message):
    TYPE = "gd.pong"
    nonce: bytes

    def __post_init__(self) -> None:
        _check_ping_nonce(self.nonce)
