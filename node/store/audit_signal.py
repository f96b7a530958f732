"""Who is told, at once, that a record was appended to a Cortex's audit log.

Why: the daemon's sovereignty service queues tombstones and delivers agreement outboxes
when the audit log grows. It used to poll the log's size every half second; now every
append (in whatever thread, through whichever `AuditLog` over that Cortex) calls the
listeners registered for the Cortex (ADR 0022). A listener runs inside the writer's
open transaction, so it must not block or touch the Cortex: it only schedules a wake-up
(for trio, `TrioToken.run_sync_soon`). A reader woken this way sees the record once the
writer commits: a write transaction begun after the wake-up waits for that commit
(`AuditLog.settled_len`).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

Listener = Callable[[], None]

_lock = threading.Lock()
_listeners: weakref.WeakKeyDictionary[Any, list[Listener]] = weakref.WeakKeyDictionary()


def listen(cortex: Any, listener: Listener) -> Callable[[], None]:
    """Call `listener()` after each audit record appended to `cortex`; returns the
    function that stops it."""
    with _lock:
        _listeners.setdefault(cortex, []).append(listener)

    def stop() -> None:
        with _lock:
            found = _listeners.get(cortex, [])
            if listener in found:
                found.remove(listener)

    return stop


def appended(cortex: Any) -> None:
    """An audit record went into `cortex` (called by `AuditLog.append_in`)."""
    with _lock:
        found = list(_listeners.get(cortex, ()))
    for listener in found:
        listener()
