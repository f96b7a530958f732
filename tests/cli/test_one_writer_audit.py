"""One writer, no polling (issue 12.1, ADR 0022): an audit record appended in the daemon's
Cortex, from any thread and through any `AuditLog` over it, wakes the sovereignty
service at once (tombstones queued, outboxes delivered); nothing reads the log's size on
a timer."""

from __future__ import annotations

import pytest
import trio
from daemon_cluster import DaemonCluster, quiet_libp2p
from gd_testkit import key_from_int

from gd.node.config import NodeConfig
from gd.node.local import initialise_home
from gd.node.store import audit_signal
from gd.node.store.audit import AuditKind, AuditLog


@pytest.fixture(autouse=True)
def _quiet() -> None:
    quiet_libp2p()


async def test_an_audit_append_in_a_worker_thread_wakes_the_sovereignty_service_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with DaemonCluster.in_tmp("gdwl") as c:
        home = c.home(1)
        home.root.mkdir(parents=True, exist_ok=True)
        initialise_home(home, NodeConfig(org="org1", region="eu"), key_from_int(1))
        async with trio.open_nursery() as nursery:
            a = await c.start_daemon(nursery, 1)
            calls: list[int] = []
            real = a.sovereignty.queue_tombstones

            def counted() -> int:
                calls.append(1)
                return real()

            monkeypatch.setattr(a.sovereignty, "queue_tombstones", counted)
            # The watcher has no timer (peers come as gate events): only a wake-up moves it.
            await trio.sleep(1.0)  # the current half-second wait runs out
            before = len(calls)
            await trio.sleep(1.0)
            assert len(calls) == before  # idle: no round without an append
            other = AuditLog(a.cortex)  # not the service's own instance
            await trio.to_thread.run_sync(
                lambda: other.append(AuditKind.FORGET, gene_id="g-forgotten"))
            with trio.fail_after(5.0):
                while len(calls) == before:
                    await trio.sleep(0.02)
            c.stop_all(a)


def test_listeners_are_told_of_appends_to_their_cortex_only_until_stopped(
        tmp_path: object) -> None:
    cortex_a, cortex_b = object.__new__(_Weak), object.__new__(_Weak)
    seen: list[str] = []
    stop = audit_signal.listen(cortex_a, lambda: seen.append("a"))
    audit_signal.appended(cortex_a)
    audit_signal.appended(cortex_b)
    stop()
    audit_signal.appended(cortex_a)
    assert seen == ["a"]


class _Weak:
    """Something weak-referenceable standing for a Cortex."""
