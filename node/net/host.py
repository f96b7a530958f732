"""The libp2p host: our Ed25519 node key, Noise only, yamux, one connection per peer.

Each choice fixes a measured py-libp2p 0.8.1 trap (notes/py-libp2p.md):

* **Noise only.** The default security options include `/plaintext/2.0.0`, which lets a
  dialer claim any peer id. The handshake trusts `stream.muxed_conn.peer_id`, so plaintext
  must be impossible: `sec_opt` names Noise and nothing else (tests/node: a plaintext dial
  is refused).
* **`max_connections_per_peer=1`.** Otherwise every dial waits a 250 ms happy-eyeballs
  delay; with the cap, a loopback connect takes ~15 ms. One connection per peer is also
  what the mesh wants: streams multiplex over it.
* **`await host.close()`** after `host.run()`: leaving `run()` alone leaks sockets.
* **Inbound slots end with their connection** (node/net/inbound.py): py-libp2p held each
  inbound connection's slot until the host stopped, so 128 closed connections locked
  every later inbound dial out (issue 11, item 5; docs/libp2p-notes.md).

The node key file holds the Ed25519 seed; pynacl derives the same key pair libp2p does,
so the libp2p peer id equals `NodeKey.peer_id` (checked at build time).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from gd.genome.identity import NodeKey
from gd.node.errors import HostError
from gd.node.net.inbound import install_inbound_slot_fix

# Dial and upgrade bounds: a loopback or LAN dial takes milliseconds; a WAN one rarely
# over a second. Ten seconds (libp2p's default) would stall the mesh's redial loop.
DIAL_TIMEOUT_S = 5.0
UPGRADE_TIMEOUT_S = 5.0
STREAM_NEGOTIATION_TIMEOUT_S = 5.0
# Closing the host: connections close in parallel, each within libp2p's 1 s
# connection_close_timeout; five seconds covers a full mesh with margin.
HOST_CLOSE_TIMEOUT_S = 5.0
# One connection per peer: avoids the 250 ms dial delay and matches the mesh's model.
MAX_CONNECTIONS_PER_PEER = 1
# Global cap on connections. The mesh targets ~10-20 peers; the rest is headroom for
# inbound dials, DHT queries and bridges before libp2p starts refusing.
MAX_CONNECTIONS = 128
# libp2p's AutoConnector dials known peers to keep a floor of connections: it would
# redial peers our mesh dropped for misbehaving. Our mesh owns dialing (the connector is
# switched off below); pruning starts only at the hard cap.
LIBP2P_MIN_CONNECTIONS = 0


def libp2p_key_pair(key: NodeKey) -> KeyPair:
    """The node key as a libp2p key pair; asserts the peer ids agree."""
    pair = create_new_key_pair(key.seed)
    if ID.from_pubkey(pair.public_key).to_base58() != key.peer_id:
        raise HostError("libp2p derived a different peer id from the node key")
    return pair


def connection_config() -> ConnectionConfig:
    return ConnectionConfig(
        max_connections=MAX_CONNECTIONS,
        min_connections=LIBP2P_MIN_CONNECTIONS,
        low_watermark=LIBP2P_MIN_CONNECTIONS,
        high_watermark=MAX_CONNECTIONS,
        max_connections_per_peer=MAX_CONNECTIONS_PER_PEER,
        dial_timeout=DIAL_TIMEOUT_S,
        inbound_upgrade_timeout=UPGRADE_TIMEOUT_S,
        outbound_upgrade_timeout=UPGRADE_TIMEOUT_S,
        outbound_stream_protocol_negotiation_timeout=STREAM_NEGOTIATION_TIMEOUT_S,
        inbound_stream_protocol_negotiation_timeout=STREAM_NEGOTIATION_TIMEOUT_S,
    )


def parse_multiaddrs(addrs: Sequence[str]) -> list[multiaddr.Multiaddr]:
    out = []
    for text in addrs:
        try:
            out.append(multiaddr.Multiaddr(text))
        except Exception as exc:  # multiaddr raises several unrelated types
            raise HostError(f"{text!r} is not a valid multiaddr: {exc}") from None
    return out


def build_host(key: NodeKey, listen: Sequence[str]) -> IHost:
    """A host with Noise as its only security transport and yamux as its only muxer."""
    pair = libp2p_key_pair(key)
    noise = NoiseTransport(pair, noise_privkey=create_x25519_key_pair().private_key)
    host = new_host(
        key_pair=pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},  # libp2p leaves this one a str
        listen_addrs=parse_multiaddrs(listen),
        connection_config=connection_config(),
    )
    _disable_autodial(host)
    install_inbound_slot_fix(host)
    return host


async def _no_autodial() -> None:
    return


def _disable_autodial(host: IHost) -> None:
    """Switch off libp2p's AutoConnector. It aims at the midpoint of its watermarks (64
    peers here, whatever the low watermark) and dials anything in the peerstore, including
    peers our mesh dropped and banned. The mesh (node/net/mesh.py) owns dialing; the pruner
    (above `high_watermark`) stays on as a last line of defence."""
    connector = getattr(host.get_network(), "auto_connector", None)
    if connector is not None:
        connector.maybe_connect = _no_autodial


@asynccontextmanager
async def running_host(key: NodeKey, listen: Sequence[str]) -> AsyncIterator[IHost]:
    """Build, listen, yield; always `host.close()` on the way out (no leaked sockets)."""
    host = build_host(key, listen)
    addrs = parse_multiaddrs(listen)
    try:
        async with host.run(listen_addrs=addrs):
            yield host
    except OSError as exc:
        raise HostError(f"cannot listen on {list(listen)}: {exc}") from exc
    finally:
        # Shielded so a cancelled caller still releases its sockets; bounded so a stuck
        # connection cannot hold shutdown hostage.
        # trio-typing's stubs (a libp2p dependency) predate `shield=`; trio 0.35 has it.
        with trio.move_on_after(HOST_CLOSE_TIMEOUT_S, shield=True):  # type: ignore[call-arg]
            await host.close()


def peer_id_of(peer: ID) -> str:
    return peer.to_base58()


def to_id(peer_id: str) -> ID:
    return ID.from_base58(peer_id)


def dialable_addrs(host: IHost) -> list[str]:
    """Our listen addresses with `/p2p/<id>` appended (what others put in bootstrap files)."""
    me = host.get_id().to_base58()
    return [f"{a}/p2p/{me}" if "/p2p/" not in str(a) else str(a) for a in host.get_addrs()]


def peer_info(peer_id: str, addrs: Sequence[str]) -> PeerInfo:
    """PeerInfo for dialing `peer_id` at `addrs` (with or without the /p2p suffix)."""
    parsed = []
    for text in addrs:
        ma = parse_multiaddrs([text if "/p2p/" in text else f"{text}/p2p/{peer_id}"])[0]
        info = info_from_p2p_addr(ma)
        if info.peer_id.to_base58() != peer_id:
            raise HostError(f"address {text} names another peer than {peer_id}")
        parsed.extend(info.addrs)
    return PeerInfo(to_id(peer_id), parsed)
