"""The API's store watcher (`EventWatcher.tick_store`): one `gene.received` event per
change that leaves a gene pending from another origin, read from the genes' head
records (no gene decoded), published in one hand-off to the event loop per tick."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import trio
from gd_testkit import key_from_int, make_gene

from gd.crdt.clock import ManualClock
from gd.genome.gene import GeneStatus
from gd.node.api.events import MAX_CHANGES_PER_TICK, EventBus, EventWatcher
from gd.node.store.cortex import Cortex

ME, OTHER = key_from_int(1), key_from_int(2)


def watcher_over(cortex: Cortex) -> tuple[EventWatcher, EventBus, list[object]]:
    bus = EventBus(ManualClock())
    handoffs: list[object] = []
    api = SimpleNamespace(daemon=SimpleNamespace(cortex=cortex, key=ME, sync=None),
                          events=bus, ledger=lambda: SimpleNamespace(alarms=list),
                          log=None)
    watcher = EventWatcher(api)
    publish_all = watcher._publish_all

    def counted(events: list[object]) -> None:
        handoffs.append(len(events))
        publish_all(events)  # type: ignore[arg-type]

    watcher._publish_all = counted  # type: ignore[method-assign]
    return watcher, bus, handoffs


async def test_pending_genes_from_others_become_events_one_handoff_a_tick(
        tmp_path: Path) -> None:
    with Cortex.open(tmp_path / "cortex") as cortex:
        watcher, bus, handoffs = watcher_over(cortex)
        _, events = bus.subscribe()
        await trio.to_thread.run_sync(watcher.tick_store)  # the first tick sets the mark
        received = [make_gene(OTHER, name=f"rule-{i}").with_local(
            status=GeneStatus.ADAPTATION_PENDING) for i in range(3)]
        own = make_gene(ME, name="ours").with_local(  # pending but ours: no event
            status=GeneStatus.ADAPTATION_PENDING)
        accepted = make_gene(OTHER, name="approved")  # from another origin, native
        cortex.put_genes([*received, own, accepted])
        await trio.to_thread.run_sync(watcher.tick_store)
        got = [events.receive_nowait() for _ in range(3)]
        assert [e.kind for e in got] == ["gene.received"] * 3
        assert [e.data for e in got] == [
            {"gene": g.id, "origin": OTHER.peer_id, "version": 1,
             "status": "adaptation_pending"} for g in received]
        assert {e.domain for e in got} == {"turbofan"}
        assert [e.gene_id for e in got] == [g.id for g in received]
        assert handoffs == [3]  # one hand-off for the tick's three events
        await trio.to_thread.run_sync(watcher.tick_store)  # nothing new: nothing sent
        assert handoffs == [3] and bus.published == 3


async def test_a_tick_reads_at_most_its_bound_and_the_next_goes_on(tmp_path: Path) -> None:
    with Cortex.open(tmp_path / "cortex", map_size=1 << 30) as cortex:
        watcher, bus, handoffs = watcher_over(cortex)
        await trio.to_thread.run_sync(watcher.tick_store)
        n = MAX_CHANGES_PER_TICK + 5
        cortex.put_genes([make_gene(OTHER, name=f"rule-{i}").with_local(
            status=GeneStatus.ADAPTATION_PENDING) for i in range(n)])
        await trio.to_thread.run_sync(watcher.tick_store)
        await trio.to_thread.run_sync(watcher.tick_store)
        assert handoffs == [MAX_CHANGES_PER_TICK, 5] and bus.published == n
