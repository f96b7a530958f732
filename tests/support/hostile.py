"""A hostile peer for attack tests: a real py-libp2p host with its own key that speaks our
protocols through our own message classes, and claims whatever it likes.

It is deliberately built from the product's pieces (`running_host`, `Handshake`,
`FramedStream`, the wire messages), so an attack here is exactly what a modified
`gd-node` could send. Tests run it against real daemons (`tests/support/daemon_cluster`)
on 127.0.0.1.

    async with hostile_peer(nursery_key) as evil:
        await evil.dial(daemon)
        outcome = await evil.handshake(daemon, org="beta", region="eu-west")
        fs = await evil.open(daemon, SYNC_PROTOCOL_ID)
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from gd.genome.gene import Gene
from gd.genome.identity import NodeKey
from gd.node.daemon import Daemon
from gd.node.net.host import dialable_addrs, peer_info, running_host, to_id
from gd.node.net.streams import PING_PROTOCOL_ID, FramedStream, Ping, Pong, drive_handshake
from gd.node.services.sovereignty_service import AGREEMENTS_PROTOCOL_ID
from gd.protocol.agreement_messages import ProposalDelivery
from gd.protocol.handshake import PROTOCOL_ID as HANDSHAKE_PROTOCOL_ID
from gd.protocol.handshake import Handshake, HandshakeOffer, Outcome
from gd.protocol.policy_rules import ShareRule
from gd.protocol.sovereignty_agreements import Proposal, ProposalKind
from gd.protocol.sync import SyncSender
from gd.protocol.sync_frames import SYNC_PROTOCOL_ID, SyncBatch, SyncPull
from gd.protocol.wire import Message

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
HOSTILE_TIMEOUT_S = 10.0
# Protocols the daemon opens towards a peer once it is handshaken. py-libp2p closes a
# connection whose peer refuses them, so a hostile peer that wants to stay connected
# (to count against a limit, say) accepts them and reads whatever comes, boundedly.
SINK_PROTOCOLS = ("/ipfs/kad/1.0.0", SYNC_PROTOCOL_ID, "/gd/reconcile/2.0.0",
                  "/gd/agreements/1.0.0", "/gd/raft/2.0.0")
SINK_MAX_BYTES = 1 << 20


async def _sink(stream: Any) -> None:
    """Read (and drop) up to SINK_MAX_BYTES, then leave the stream hanging: a peer that
    never answers."""
    seen = 0
    with trio.move_on_after(HOSTILE_TIMEOUT_S):
        while seen < SINK_MAX_BYTES:
            try:
                data = await stream.read(65536)
            except Exception:
                return
            if not data:
                return
            seen += len(data)


def fresh_key(seed: int | None = None) -> NodeKey:
    """A throwaway key: seeded for replayable tests, random otherwise."""
    raw = seed.to_bytes(32, "big") if seed is not None else os.urandom(32)
    return NodeKey.from_seed(raw)


class HostilePeer:
    """One attacker identity: a libp2p host and the claims it makes in the handshake."""

    def __init__(self, key: NodeKey, host: Any) -> None:
        self.key = key
        self.host = host

    @property
    def peer_id(self) -> str:
        return self.key.peer_id

    async def dial(self, daemon: Daemon) -> None:
        """Open a libp2p connection (Noise + yamux) to `daemon`, and nothing more."""
        with trio.fail_after(HOSTILE_TIMEOUT_S):
            await self.host.connect(peer_info(daemon.peer_id, dialable_addrs(daemon.host)))

    async def handshake(self, daemon: Daemon, *, org: str = "evil", region: str | None = None,
                        domains: Sequence[str] = (), capabilities: Sequence[str] = (),
                        extra: dict[str, Any] | None = None) -> Outcome:
        """Dial if needed and run our handshake with the given claims.

        `extra` goes into `HandshakeOffer` as further fields (e.g. a certificate) when
        the offer knows them, so attacks keep working as the handshake grows."""
        if not self.host.get_network().get_connections(to_id(daemon.peer_id)):
            await self.dial(daemon)
        offer = HandshakeOffer(org=org, region=region or daemon.cfg.region,
                               capabilities=tuple(capabilities), domains=tuple(domains),
                               **(extra or {}))
        with trio.fail_after(HOSTILE_TIMEOUT_S):
            stream = await self.host.new_stream(to_id(daemon.peer_id), [HANDSHAKE_PROTOCOL_ID])
        hs = Handshake(self.key, offer, daemon.peer_id, now_ms=int(time.time() * 1000),
                       nonce=os.urandom(16))
        await drive_handshake(stream, hs, HOSTILE_TIMEOUT_S)
        assert hs.outcome is not None
        return hs.outcome

    async def open(self, daemon: Daemon, protocol_id: str, *,
                   read_timeout_s: float = HOSTILE_TIMEOUT_S) -> FramedStream:
        """A framed stream on `protocol_id` to `daemon` (after a handshake, normally)."""
        with trio.fail_after(HOSTILE_TIMEOUT_S):
            stream = await self.host.new_stream(to_id(daemon.peer_id), [protocol_id])
        return FramedStream(stream, read_timeout_s=read_timeout_s)

    async def request(self, daemon: Daemon, protocol_id: str, msg: Message) -> Message:
        """One request on a fresh stream, and the answer."""
        fs = await self.open(daemon, protocol_id)
        try:
            return await fs.request(msg)
        finally:
            await fs.close()

    async def propose(self, daemon: Daemon, rule: ShareRule, *, hlc: int = 1 << 16
                      ) -> Message:
        """Send `daemon` our signed share proposal (half of an agreement, as a real node's
        outbox delivers it) and return its acknowledgement."""
        proposal = Proposal.create(self.key, ProposalKind.SHARE, daemon.peer_id, rule, hlc)
        return await self.request(daemon, AGREEMENTS_PROTOCOL_ID,
                                  ProposalDelivery(proposals=(proposal.encode(),), upto=1))

    def serve_feed(self, genes: list[Gene]) -> None:
        """Answer `/gd/sync` pulls with `genes` as our change feed, whatever they claim:
        the sender core is ours, the content is the attacker's. Mutate the list to
        publish more."""

        def read_feed(since: int, limit: int) -> list[tuple[int, Gene]]:
            return [(i + 1, g) for i, g in enumerate(genes)][since:since + limit]

        async def serve(stream: Any) -> None:
            fs = FramedStream(stream, read_timeout_s=HOSTILE_TIMEOUT_S)
            sender = SyncSender(fs.remote_peer_id, read_feed, lambda peer, gene: True)
            with trio.move_on_after(HOSTILE_TIMEOUT_S):
                try:
                    while True:
                        pull = await fs.receive()
                        if not isinstance(pull, SyncPull):  # a hint: we never pull back
                            return
                        batch = sender.batch(pull.request())
                        await fs.send(SyncBatch.pack(batch, len(genes), False)[0])
                except Exception:
                    return

        self.host.set_stream_handler(SYNC_PROTOCOL_ID, serve)

    def connected_to(self, daemon: Daemon) -> bool:
        conns = self.host.get_network().get_connections(to_id(daemon.peer_id))
        return any(not c.is_closed for c in conns)


async def _pong(stream: Any) -> None:
    """Answer the daemon's liveness pings, so the attacker is not dropped as dead."""
    fs = FramedStream(stream, read_timeout_s=HOSTILE_TIMEOUT_S)
    with trio.move_on_after(HOSTILE_TIMEOUT_S * 6):
        try:
            while True:
                ping = await fs.receive()
                if isinstance(ping, Ping):
                    await fs.send(Pong(nonce=ping.nonce))
        except Exception:
            return


@asynccontextmanager
async def hostile_peer(key: NodeKey | None = None,
                       listen: Sequence[str] = LOOPBACK) -> AsyncIterator[HostilePeer]:
    """A hostile peer for the duration of the block; its host is closed on exit."""
    key = key or fresh_key()
    async with running_host(key, list(listen)) as host:
        for protocol_id in SINK_PROTOCOLS:
            host.set_stream_handler(protocol_id, _sink)
        host.set_stream_handler(PING_PROTOCOL_ID, _pong)
        yield HostilePeer(key, host)
