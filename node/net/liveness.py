"""Is a connected peer still there? A round trip says; on a timer and on suspicion.

Why the gate keeps its own liveness: py-libp2p never notices a frozen peer (its reads
hang, `../shared/notes/py-libp2p.md` item 5), and it can keep a connection that
delivers nothing one way: our writes succeed, nothing arrives, no error is raised
(the ledger's failover tail, docs/ledger.md). Only an answered round trip on the
connection tells it is alive. An unanswered one drops the peer without a ban (it may be
slow, not hostile); the mesh then dials it again on a fresh connection.

* `serve`: the `/gd/ping` handler (one Pong per Ping, nonce echoed). A ping that
  arrives on a connection we do not list for its peer shows a *split*: the peer writes
  to us on one connection while our streams to it go on another, which it may no longer
  read (py-libp2p trims a peer's surplus connections on each side independently; the
  failover tail in docs/ledger.md). Every connection to that peer is closed, and both
  sides dial afresh. The peer's suspicion probe is such a ping, so a split heals 2.5 s
  after the silence it causes begins.
* `ping`: one round trip on a fresh stream of the peer's connection.
* `suspect`: a service heard nothing from a peer that should be talking (the ledger's
  links gossip every second): probe it now, with a shorter timeout than the timer's, at
  most one probe per peer at a time. Without it a black-holed connection lasted until
  the next timed ping failed (up to `ping_interval_s` + 5 s).
* `run`: every `[mesh] ping_interval_s`, a ping to every connected peer; its RTT feeds
  the peer's score.

Every probe runs in the peer's lifetime (`Gate.spawn`): a peer that goes takes its
probe with it. Time comes from the gate's injected clock.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import TYPE_CHECKING, Any, Final

import trio
from libp2p.network.swarm import Swarm

from gd.node.net.host import to_id
from gd.node.net.open_stream import open_framed_stream
from gd.node.net.peers import PeerRecord
from gd.node.net.streams import (
    PING_NONCE_BYTES,
    PING_PROTOCOL_ID,
    FramedStream,
    Ping,
    Pong,
)
from gd.protocol.errors import RemoteProtocolError

if TYPE_CHECKING:  # the gate builds us; we only call it back
    from gd.node.net.gate import Gate

# A timed ping's wait for its Pong.
PING_TIMEOUT_S: Final = 5.0
# A suspected peer's: short, because a service already waited for it (the ledger's
# links: 2.5 s of silence), and loopback or a regional link answers in milliseconds.
SUSPECT_TIMEOUT_S: Final = 2.0


class Liveness:
    """Pings connected peers; drops the ones that do not answer."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self._probing: set[str] = set()
        self.suspected: Counter[str] = Counter()  # per peer: probes a suspicion started
        self.dropped = 0  # peers dropped for an unanswered probe
        self.splits = 0  # peers whose pings came on a connection we do not list
        gate.register_protocol(PING_PROTOCOL_ID, self.serve)

    async def serve(self, fs: FramedStream, rec: PeerRecord) -> None:
        """Answer each Ping with its nonce until the peer closes the stream."""
        if self._split(fs.stream, rec.peer_id):
            await self._heal_split(fs.stream, rec.peer_id)
            return
        while True:
            msg = await fs.receive()
            if not isinstance(msg, Ping):
                raise RemoteProtocolError(f"expected gd.ping, got {msg.TYPE}")
            await fs.send(Pong(nonce=msg.nonce))

    def _split(self, stream: Any, peer_id: str) -> bool:
        """Did `stream` come on a connection we do not list for `peer_id` (while we
        list others)?"""
        swarm = self.gate.host.get_network()
        conn = getattr(stream, "muxed_conn", None)
        if not isinstance(swarm, Swarm) or conn is None:  # py-libp2p's only network
            return False
        listed = swarm.get_connections(to_id(peer_id))
        return bool(listed) and all(c.muxed_conn is not conn for c in listed)

    async def _heal_split(self, stream: Any, peer_id: str) -> None:
        """Close the connection the ping came on and every one we list for the peer."""
        self.splits += 1
        self.gate.log.warning("peer.split_connection", peer=peer_id,
                              note="closing every connection to it; both sides redial")
        with trio.CancelScope(shield=True), trio.move_on_after(SUSPECT_TIMEOUT_S), \
                contextlib.suppress(Exception):
            await stream.muxed_conn.close()
        await self.gate.drop(peer_id, "split connection", ban=False)

    async def ping(self, peer_id: str, timeout_s: float = PING_TIMEOUT_S) -> float:
        """Round trip in ms over a fresh stream; PeerTimeout / StreamGone on failure."""
        gate = self.gate
        fs = await open_framed_stream(gate.host, peer_id, PING_PROTOCOL_ID,
                                      timeout_s=timeout_s, read_timeout_s=timeout_s,
                                      count_bytes=gate.count_bytes(PING_PROTOCOL_ID))
        try:
            nonce = gate.rng_nonce(PING_NONCE_BYTES)
            start = gate.clock.monotonic()
            reply = await fs.request(Ping(nonce=nonce))
            rtt_ms = (gate.clock.monotonic() - start) * 1000
            if not isinstance(reply, Pong) or reply.nonce != nonce:
                raise RemoteProtocolError("ping answered with the wrong message")
            return rtt_ms
        finally:
            await fs.close()

    def suspect(self, peer_id: str, reason: str) -> bool:
        """Probe `peer_id` now (a service found it silent); False when it is not
        connected or a probe of it is already under way."""
        if not self._start_probe(peer_id, SUSPECT_TIMEOUT_S, reason):
            return False
        self.suspected[peer_id] += 1
        self.gate.log.info("peer.suspected", peer=peer_id, reason=reason)
        return True

    async def _probe(self, peer_id: str, timeout_s: float, reason: str) -> None:
        gate = self.gate
        rec = gate.table.get(peer_id)
        try:
            rtt = await self.ping(peer_id, timeout_s)
        except Exception as exc:  # timeout, reset, garbage: all mean no answer
            if rec is not None and rec.connected:
                rec.score.failure(gate.clock.monotonic())
                gate.log.info("peer.ping_failed", peer=peer_id, why=reason,
                              error=repr(exc)[:200])
                self.dropped += 1
                await gate.drop(peer_id, f"no answer to ping ({reason})", ban=False)
            return
        finally:
            self._probing.discard(peer_id)
        if rec is not None:
            rec.score.rtt(rtt)

    async def run(self) -> None:
        """Every `[mesh] ping_interval_s`, probe every connected peer (one at a time
        per peer: a probe still waiting is not doubled)."""
        gate = self.gate
        interval = gate.cfg.mesh.ping_interval_s
        while True:
            await trio.sleep(interval)
            for rec in gate.table.connected():
                self._start_probe(rec.peer_id, PING_TIMEOUT_S, "timer")

    def _start_probe(self, peer_id: str, timeout_s: float, reason: str) -> bool:
        """Probe `peer_id` in its lifetime unless a probe of it is under way; False
        when one is, or the peer is not connected."""
        if peer_id in self._probing or not self.gate.spawn(
                peer_id, self._probe, peer_id, timeout_s, reason):
            return False
        self._probing.add(peer_id)
        return True


__all__ = ["PING_TIMEOUT_S", "SUSPECT_TIMEOUT_S", "Liveness"]
