"""Which of a peer's connections our streams go on: the newest we hold (ADR 0056).

A pair of nodes can hold two connections at once (a simultaneous dial, or a redial by
one side that the other has not noticed yet). py-libp2p opens a stream on the
connection with the most streams (go-libp2p's `isBetterConn`). That is the *old*
one, and the old one is the one the peer may have dropped from its list and stopped
reading: caught in the ledger's failover tail (docs/ledger.md). The survivor's
Raft frames and pings then went down a connection nobody read, for 4-7 s, while the
peer's own frames reached it on the new one.

So the gate numbers connections as they open (`opened`), and the swarm picks the
highest number among a peer's ready connections (`select`, installed over
`Swarm._select_connection`, the library's one hook for this choice). A connection the
peer opens afresh is one it reads. Long-lived streams do not move by themselves: a
link that sees the peer write to us on a newer connection than the one its own stream
uses reopens it (`newer`; `gd.node.services.ledger_links`).

Both sides only ever move to a newer connection than the one they use, so two nodes
cannot chase each other between two connections: each moves at most once per
connection it learns of.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

from libp2p.abc import INetConn
from libp2p.connection_types import ConnectionType
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID

Selector = Callable[[list[INetConn], ID], INetConn]


class ConnectionOrder:
    """The order in which connections opened, and the swarm's choice by it."""

    def __init__(self) -> None:
        self._next = itertools.count(1)
        # Keyed by the muxed connection (what a stream names as `muxed_conn`); weak,
        # so a closed connection's entry goes with it.
        self._rank: WeakKeyDictionary[Any, int] = WeakKeyDictionary()
        self._fallback: Selector | None = None

    def opened(self, muxed_conn: Any) -> None:
        """A connection came up (the gate's connection event): it is the newest."""
        if muxed_conn not in self._rank:
            self._rank[muxed_conn] = next(self._next)

    def rank(self, muxed_conn: Any) -> int:
        """Its place in the order; 0 for one we never saw open (oldest of all)."""
        try:
            return self._rank.get(muxed_conn, 0)
        except TypeError:  # not weak-referenceable: not a connection we numbered
            return 0

    def newer(self, stream: Any, than: Any) -> bool:
        """Did `stream` come on a newer connection than `than` uses?"""
        return (self.rank(getattr(stream, "muxed_conn", None))
                > self.rank(getattr(than, "muxed_conn", None)))

    def select(self, connections: list[INetConn], peer_id: ID) -> INetConn:
        """The newest of `connections`, a direct one before any relayed one (a circuit
        costs the relay's bandwidth and a hop: the library prefers direct too); the
        library's choice if we numbered none."""
        best = max(connections, key=lambda c: (_direct(c), self.rank(c.muxed_conn)))
        if self.rank(best.muxed_conn) == 0 and self._fallback is not None:
            return self._fallback(connections, peer_id)
        return best

    def install(self, network: Any) -> bool:
        """Make `network` (py-libp2p's `Swarm`) open streams on the newest connection;
        False for anything else (a test's stand-in), which keeps its own choice."""
        if not isinstance(network, Swarm):
            return False
        self._fallback = network._select_connection
        setattr(network, "_select_connection", self.select)  # noqa: B010 (a method)
        return True


def _direct(conn: INetConn) -> bool:
    """Is `conn` a direct connection (not through a relay)? Unknown counts as direct,
    as py-libp2p's own choice counts it."""
    try:
        return bool(conn.get_connection_type() != ConnectionType.RELAYED)
    except Exception:  # a connection that cannot say: the library assumes direct
        return True


__all__ = ["ConnectionOrder", "Selector"]
