"""The libp2p host: node key = libp2p identity, Noise only, handshake over a real stream."""

from __future__ import annotations

import pytest
import trio
from gd_testkit import key_from_int as key
from libp2p import new_host
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from gd.node.net.host import dialable_addrs, libp2p_key_pair, peer_info, running_host
from gd.node.net.streams import FramedStream, StreamGone, drive_handshake
from gd.protocol.handshake import PROTOCOL_ID, Accepted, Handshake, HandshakeOffer
from gd.protocol.wire import MAX_FRAME_SIZE

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]


def test_libp2p_peer_id_is_the_node_key_peer_id():
    k = key(1)
    assert libp2p_key_pair(k).public_key.to_bytes() == k.public_key


async def test_two_hosts_connect_and_handshake_over_noise():
    a_key, b_key = key(1), key(2)
    outcomes: dict[str, object] = {}
    async with running_host(a_key, LOOPBACK) as a, running_host(b_key, LOOPBACK) as b:
        async def handler(stream):
            remote = stream.muxed_conn.peer_id.to_base58()
            hs = Handshake(b_key, HandshakeOffer(org="B", region="eu"), remote,
                           now_ms=1, nonce=b"b" * 16)
            await drive_handshake(stream, hs)
            outcomes["b"] = hs.outcome
            await stream.close()

        b.set_stream_handler(PROTOCOL_ID, handler)
        with trio.fail_after(10):
            await a.connect(peer_info(b_key.peer_id, dialable_addrs(b)))
            stream = await a.new_stream(b.get_id(), [PROTOCOL_ID])
            hs = Handshake(a_key, HandshakeOffer(org="A", region="eu"), b_key.peer_id,
                           now_ms=1, nonce=b"a" * 16)
            await drive_handshake(stream, hs)
            await stream.close()
            while "b" not in outcomes:
                await trio.sleep(0.01)
    assert isinstance(hs.outcome, Accepted) and hs.outcome.peer.org == "B"
    assert isinstance(outcomes["b"], Accepted) and outcomes["b"].peer.peer_id == a_key.peer_id


async def test_plaintext_dial_is_refused():
    """A dialer offering only /plaintext (which would let it claim any id) gets nowhere."""
    victim_key, liar_key = key(3), key(4)
    liar_pair = libp2p_key_pair(liar_key)
    liar = new_host(key_pair=liar_pair,
                    sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(liar_pair)},
                    muxer_opt={YAMUX_PROTOCOL_ID: Yamux})
    async with running_host(victim_key, LOOPBACK) as victim:
        try:
            async with liar.run(listen_addrs=[]):
                with trio.fail_after(15), pytest.raises(Exception) as info:
                    await liar.connect(peer_info(victim_key.peer_id, dialable_addrs(victim)))
                assert not isinstance(info.value, trio.TooSlowError)
        finally:
            await liar.close()
        assert victim.get_connected_peers() == []


async def test_framed_stream_detects_a_silent_peer_and_a_clean_close():
    a_key, b_key = key(5), key(6)
    got: list[object] = []
    async with running_host(a_key, LOOPBACK) as a, running_host(b_key, LOOPBACK) as b:
        async def silent(stream):
            fs = FramedStream(stream, read_timeout_s=0.2)
            try:
                await fs.receive()
            except Exception as exc:
                got.append(exc)
            await fs.close()

        b.set_stream_handler("/gd/test/1", silent)
        with trio.fail_after(10):
            await a.connect(peer_info(b_key.peer_id, dialable_addrs(b)))
            stream = await a.new_stream(b.get_id(), ["/gd/test/1"])
            fs = FramedStream(stream, max_frame_size=MAX_FRAME_SIZE)
            with pytest.raises(StreamGone):
                await fs.receive()  # b times out, closes; we see a clean end
            while not got:
                await trio.sleep(0.01)
    assert type(got[0]).__name__ == "PeerTimeout"
