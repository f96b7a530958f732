"""Supervision: a failure in one peer's task or one service never reaches the daemon's root.

trio propagates an exception out of a nursery and cancels its siblings; that is right for
bugs in start-up, and wrong for the long-running work a hostile or unlucky peer can
reach. Two wrappers draw the line (issue 11, item 1: a `TypeError` in a drop task once
killed the whole daemon):

* `peer_task` — work done for one peer (dial, drop, ping, serving a stream). A failure
  is logged with the peer and handed to `on_failure` (the daemon drops that peer); the
  task ends, nothing else does.
* `supervised` — a service's `run()` (mesh, discovery, sync, ledger, …). A failure is
  logged and the service restarts after a backoff that doubles up to
  `RESTART_BACKOFF_MAX_S` and resets after the service ran healthy for
  `HEALTHY_AFTER_S`, the way systemd's `Restart=on-failure` with `RestartSec` behaves
  but without giving up: the node keeps serving everything else.

Cancellation (`trio.Cancelled`, a `BaseException`) always passes through: shutdown must
still stop everything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

# First restart after 0.5 s, then 1, 2, … up to 30 s: quick for a one-off failure,
# bounded log and CPU for a service that fails on every start.
RESTART_BACKOFF_S = 0.5
RESTART_BACKOFF_MAX_S = 30.0
# A service that ran this long since its last start counts as healthy again.
HEALTHY_AFTER_S = 60.0

OnPeerFailure = Callable[[str, BaseException], Awaitable[None]]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


async def peer_task(log: Any, peer_id: str, on_failure: OnPeerFailure,
                    fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """Run `fn(*args)` for `peer_id`; an exception is logged and ends with `on_failure`."""
    try:
        await fn(*args)
    except Exception as exc:
        log.error("peer.task_failed", peer=peer_id, task=getattr(fn, "__name__", repr(fn)),
                  error=_describe(exc))
        try:
            await on_failure(peer_id, exc)
        except Exception as again:  # dropping must not fail the caller either
            log.error("peer.drop_failed", peer=peer_id, error=_describe(again))


async def supervised(log: Any, name: str, fn: Callable[..., Awaitable[Any]], *args: Any,
                     restarts: list[int] | None = None) -> None:
    """Run service `name` (`fn(*args)`) until cancelled, restarting it after a failure.

    `restarts`, when given, gets one element appended per restart (a counter tests and
    metrics can read). A service that returns normally is finished and not restarted."""
    backoff = RESTART_BACKOFF_S
    while True:
        started = trio.current_time()
        try:
            await fn(*args)
            return
        except Exception as exc:
            if trio.current_time() - started >= HEALTHY_AFTER_S:
                backoff = RESTART_BACKOFF_S
            log.error("service.crashed", service=name, error=_describe(exc),
                      restart_in_s=backoff)
            if restarts is not None:
                restarts.append(1)
        await trio.sleep(backoff)
        backoff = min(backoff * 2, RESTART_BACKOFF_MAX_S)
        log.info("service.restarted", service=name)
