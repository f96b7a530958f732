"""Inbound connection slots that come back when the connection closes.

py-libp2p 0.8.1 caps inbound connections with a `trio.CapacityLimiter`
(`Swarm._inbound_limiter`, `max_connections - min_connections` tokens). The token is
taken in `_handle_inbound_connection` and released in its `finally`, but the inner
handler, once the upgrade succeeded, parks on `await self.manager.wait_finished()`: the
swarm's lifetime, not the connection's. So every inbound connection that ever completed
Noise + yamux holds its token until the host stops, closed or not. After `slots` of them
(silent peers closed by our handshake watchdog, but honest peers that reconnect too) the
node refuses every new inbound connection before security ("failed to negotiate the
secure protocol"). The parked handler also keeps the dead connection's objects alive: a
memory leak an outsider can drive. See docs/libp2p-notes.md.

The workaround replaces the inner handler (TCP/WebSocket path only) with one that waits
for *that* connection to close (or the swarm to stop) and then returns, so the token and
the task go with the connection. The limiter then bounds live inbound connections plus
upgrades in progress, which is what upstream meant it to do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio
from libp2p.abc import IHost, IMuxedConn
from libp2p.network.connection.raw_connection import RawConnection

from gd.node.errors import HostError

# The private py-libp2p members the workaround relies on; checked at build time so an
# upgrade that renames them fails loudly instead of silently bringing the leak back.
# (`swarm.manager`, used too, exists only once the swarm runs.)
_SWARM_MEMBERS = ("_inbound_limiter", "_do_handle_inbound_connection",
                  "upgrade_inbound_raw_conn", "_build_remote_multiaddr", "connection_gate")


def _swarm_of(host: IHost) -> Any:
    swarm = host.get_network()
    missing = [m for m in _SWARM_MEMBERS if not hasattr(swarm, m)]
    if missing:
        raise HostError(f"this py-libp2p lacks {missing}: the inbound slot workaround "
                        "(node/net/inbound.py) must be revisited for it")
    return swarm


def inbound_slots(host: IHost) -> int:
    """How many inbound connections (live or upgrading) the host accepts at once."""
    return int(_swarm_of(host)._inbound_limiter.total_tokens)


def set_inbound_slots(host: IHost, slots: int) -> None:
    """Change the inbound cap (tests lower it to reach the bound quickly)."""
    if slots < 1:
        raise HostError("inbound slots must be at least 1")
    _swarm_of(host)._inbound_limiter.total_tokens = slots


async def _until_closed(muxed: IMuxedConn, swarm_finished: Callable[[], Awaitable[Any]]
                        ) -> None:
    """Return when this connection closes (either side) or the swarm stops."""
    async with trio.open_nursery() as nursery:
        async def first(wait: Callable[[], Awaitable[Any]]) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        closed = getattr(muxed, "event_closed", None)
        if closed is None:  # a muxer without the event: fall back to polling its flag
            async def poll() -> None:
                while not muxed.is_closed:
                    await trio.sleep(1.0)
            nursery.start_soon(first, poll)
        else:
            nursery.start_soon(first, closed.wait)
        nursery.start_soon(first, swarm_finished)


def install_inbound_slot_fix(host: IHost) -> None:
    """Make inbound slots (and handler tasks) end with their connection; see above."""
    swarm = _swarm_of(host)
    original = swarm._do_handle_inbound_connection

    async def handle(read_write_closer: Any, maddr: Any, failure_event: Any) -> None:
        if isinstance(read_write_closer, IMuxedConn):  # QUIC and the like: not ours
            await original(read_write_closer, maddr, failure_event)
            return
        remote = swarm._build_remote_multiaddr(read_write_closer)
        if remote is not None and not await swarm.connection_gate.is_allowed(remote):
            with trio.CancelScope(shield=True):
                await _close_quietly(read_write_closer)
            return
        raw = RawConnection(read_write_closer, False)
        try:
            muxed = await swarm.upgrade_inbound_raw_conn(raw, maddr)
        except Exception:  # refused, timed out, bad security: py-libp2p logged it
            with trio.CancelScope(shield=True):
                await _close_quietly(raw)
            return
        await _until_closed(muxed, swarm.manager.wait_finished)

    swarm._do_handle_inbound_connection = handle


async def _close_quietly(conn: Any) -> None:
    try:
        await conn.close()
    except Exception:  # already closed or reset: nothing left to release
        return
