"""Per-peer lifetimes: every task done for a connected peer lives and dies with it.

Why (issue 12 item 3, STYLE.md "one nursery per peer connection"): per-peer work used to
be started in whichever loop's nursery noticed the peer, so dropping a peer left its sync
loop, deliveries and pings running until they hit a dead stream, and nothing said which
tasks belonged to whom. The gate owns one `PeerLifetimes`: a peer's lifetime begins when
its handshake is accepted and ends when its connection goes. Work for it runs in the
gate's nursery under a cancel scope filed under that peer (trio scopes are entered
once, so one scope per task, grouped per connection), which gives the two properties a
nursery per connection would:

* the connection ends (dropped, banned, gone) → every one of its tasks is cancelled;
* one of its tasks fails → that task ends, the failure is handed to `on_failure` (the
  gate drops that peer, which cancels the peer's other tasks); other peers go on.

Work started before the nursery runs (a peer can handshake while the daemon still wires
its services) waits, bounded, and starts with it. A task for a peer that is not
connected is refused (`spawn` returns False): a lifetime never begins from a task.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import trio

# Tasks that may wait for the nursery to start (only at start-up: services subscribe
# before the daemon's nursery opens). A handful per early peer; more is a bug, refused.
MAX_PENDING = 1024

OnFailure = Callable[[str, BaseException], Awaitable[None]]
Work = tuple[str, Callable[..., Awaitable[Any]], tuple[Any, ...]]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


class PeerLifetimes:
    """Which peers are connected and the cancel scopes of the work running for each."""

    def __init__(self, log: Any, on_failure: OnFailure) -> None:
        self.log = log
        self.on_failure = on_failure
        # peer -> the scopes of its running tasks (present only while it is connected)
        self._scopes: dict[str, set[trio.CancelScope]] = {}
        self._nursery: trio.Nursery | None = None
        self._pending: list[Work] = []

    def live(self, peer_id: str) -> bool:
        return peer_id in self._scopes

    def tasks(self, peer_id: str) -> int:
        """How many tasks run for `peer_id` now (0 when it is not connected)."""
        return len(self._scopes.get(peer_id, ()))

    def begin(self, peer_id: str) -> None:
        """The peer's handshake was accepted: work may be started for it."""
        self._scopes.setdefault(peer_id, set())

    def end(self, peer_id: str) -> int:
        """The peer's connection is gone: cancel all its work; how many tasks were told."""
        scopes = self._scopes.pop(peer_id, set())
        for scope in scopes:
            scope.cancel()
        self._pending = [w for w in self._pending if w[0] != peer_id]
        return len(scopes)

    def spawn(self, peer_id: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Run `fn(*args)` for the connected `peer_id` until it returns, fails or the
        peer goes. False (nothing started) when the peer is not connected."""
        if peer_id not in self._scopes:
            return False
        if self._nursery is None:
            if len(self._pending) >= MAX_PENDING:
                self.log.error("peer.task_refused", peer=peer_id, reason="start-up queue full")
                return False
            self._pending.append((peer_id, fn, args))
            return True
        scope = trio.CancelScope()
        self._scopes[peer_id].add(scope)
        self._nursery.start_soon(self._run, peer_id, scope, fn, args,
                                 name=f"peer {peer_id[-8:]}: {getattr(fn, '__name__', fn)}")
        return True

    @contextlib.contextmanager
    def scope(self, peer_id: str) -> Iterator[trio.CancelScope]:
        """A cancel scope for work the caller runs itself (serving a stream): cancelled
        when the peer goes. Cancelled at once for a peer that is not connected."""
        scope = trio.CancelScope()
        scopes = self._scopes.get(peer_id)
        if scopes is None:
            scope.cancel()
        else:
            scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            if scopes is not None:
                scopes.discard(scope)

    async def _run(self, peer_id: str, scope: trio.CancelScope,
                   fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        try:
            with scope:
                await fn(*args)
        except Exception as exc:
            self.log.error("peer.task_failed", peer=peer_id,
                           task=getattr(fn, "__name__", repr(fn)), error=_describe(exc))
            # Outside the failed task's scope: dropping the peer cancels its lifetime.
            if self._nursery is not None:
                self._nursery.start_soon(self._fail, peer_id, exc)
        finally:
            scopes = self._scopes.get(peer_id)
            if scopes is not None:
                scopes.discard(scope)

    async def _fail(self, peer_id: str, exc: BaseException) -> None:
        try:
            await self.on_failure(peer_id, exc)
        except Exception as again:  # dropping must not take the gate's nursery down
            self.log.error("peer.drop_failed", peer=peer_id, error=_describe(again))

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Own the nursery every peer's work runs in, until cancelled (with the daemon)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                pending, self._pending = self._pending, []
                for peer_id, fn, args in pending:
                    self.spawn(peer_id, fn, *args)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            for peer_id in list(self._scopes):
                for scope in self._scopes[peer_id]:
                    scope.cancel()
