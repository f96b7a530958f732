"""Live events for `/v1/events` (Server-Sent Events), filtered by what the caller sees.

Kinds: `gene.received` (a peer's gene landed pending), `gene.approved`, `gene.rejected`,
`decision.made`, `conflict.queued`, `peer.up`, `peer.down`, `ledger.alarm`,
`job.progress`, `job.finished`. API actions publish theirs directly; peers come from the
gate's connection events (`PeerEvents`, subscribed through `Gate.on_peer`: no polling of
the peer table); the rest from `EventWatcher`, which compares the node's state once per
tick with the previous one (the change feed, the conflict queue, fork alarms) instead of
hooking into the sync and ledger services: those stay unaware of the API, and an event
can never slow or fail the work it reports. An event's time is the daemon's injected
clock at publication.

Each subscriber gets a bounded queue; one that falls SUBSCRIBER_BUFFER events behind is
disconnected (its client reconnects) rather than making the daemon buffer for it
without limit, the way go-libp2p's resource manager refuses rather than stalls.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import trio

from gd.crdt.clock import Clock
from gd.genome.gene import GeneStatus
from gd.node.api.auth import Principal
from gd.node.net.gate import PeerChange
from gd.node.net.peers import PeerTable

SUBSCRIBER_BUFFER: Final = 256
MAX_SUBSCRIBERS: Final = 64
WATCH_TICK_S: Final = 1.0
# A comment line this often keeps proxies and clients from timing the stream out.
HEARTBEAT_S: Final = 15.0
# Genes a single watcher tick looks at; the rest wait for the next tick.
MAX_CHANGES_PER_TICK: Final = 1000


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    data: dict[str, Any]
    time_ms: int
    domain: str = ""     # "": node-wide (peers, ledger), visible to every caller
    gene_id: str = ""

    def visible_to(self, who: Principal) -> bool:
        if not self.domain:
            return True
        if self.gene_id:
            return who.sees_gene(self.gene_id, self.domain)
        return who.sees_domain(self.domain)

    def sse(self) -> str:
        body = json.dumps({"kind": self.kind, "time_ms": self.time_ms,
                           "domain": self.domain or None, **self.data}, sort_keys=True)
        return f"id: {self.id}\nevent: {self.kind}\ndata: {body}\n\n"


class TooManySubscribers(RuntimeError):
    """The event hub holds its maximum of live subscribers: the new one gets a 503."""


class EventBus:
    """Fan-out of events to the open `/v1/events` streams."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._ids = itertools.count(1)
        self._subscribers: dict[int, trio.MemorySendChannel[Event]] = {}
        self._keys = itertools.count()
        self.published = 0

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, kind: str, data: dict[str, Any], *, domain: str = "",
                gene_id: str = "") -> Event:
        event = Event(next(self._ids), kind, data, int(self.clock.wall() * 1000), domain,
                      gene_id)
        self.published += 1
        for key, send in list(self._subscribers.items()):
            try:
                send.send_nowait(event)
            except trio.WouldBlock:  # too slow: cut it loose, its client reconnects
                send.close()
                del self._subscribers[key]
            except trio.ClosedResourceError:
                del self._subscribers[key]
        return event

    def subscribe(self) -> tuple[int, trio.MemoryReceiveChannel[Event]]:
        if len(self._subscribers) >= MAX_SUBSCRIBERS:
            raise TooManySubscribers(f"{MAX_SUBSCRIBERS} event streams are open")
        send, receive = trio.open_memory_channel[Event](SUBSCRIBER_BUFFER)
        key = next(self._keys)
        self._subscribers[key] = send
        return key, receive

    def unsubscribe(self, key: int) -> None:
        send = self._subscribers.pop(key, None)
        if send is not None:
            send.close()

    async def stream(self, who: Principal, kinds: frozenset[str] | None = None
                     ) -> AsyncIterator[str]:
        """SSE text for one subscriber until it disconnects or falls behind."""
        key, receive = self.subscribe()
        try:
            yield f"retry: 3000\n: subscribed as {who.actor}\n\n"
            while True:
                with trio.move_on_after(HEARTBEAT_S):
                    try:
                        event = await receive.receive()
                    except trio.EndOfChannel:
                        return
                    if event.visible_to(who) and (kinds is None or event.kind in kinds):
                        yield event.sse()
                    continue
                yield ": keep-alive\n\n"
        finally:
            self.unsubscribe(key)


class PeerEvents:
    """`peer.up` / `peer.down` from the gate's connection events, as they happen.

    Subscribed once per API (`Gate.on_peer`); called on the trio thread, so it publishes
    directly and never blocks (the bus drops a subscriber that falls behind)."""

    def __init__(self, bus: EventBus, table: PeerTable) -> None:
        self.bus = bus
        self.table = table

    def __call__(self, change: PeerChange) -> None:
        if not change.up:
            self.bus.publish("peer.down", {"peer": change.peer_id})
            return
        rec = self.table.get(change.peer_id)
        org = (rec.org or "") if rec is not None else ""
        region = (rec.region or "") if rec is not None else ""
        self.bus.publish("peer.up", {"peer": change.peer_id, "org": org, "region": region})


class EventWatcher:
    """Turns changes of the node's stores into events, once per WATCH_TICK_S."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.daemon = api.daemon
        self.bus: EventBus = api.events
        self._seq: int | None = None
        self._conflicts: set[str] | None = None
        self._alarms: int | None = None

    async def run(self) -> None:
        while True:
            try:
                await trio.to_thread.run_sync(self.tick_store)
            except Exception as exc:  # events are best effort: never stop the API
                self.api.log.warning("api.events_tick_failed",
                                     error=f"{type(exc).__name__}: {exc}"[:300])
            await trio.sleep(WATCH_TICK_S)

    def tick_store(self) -> None:
        """Change feed, conflict queue and fork alarms (runs in a worker thread; the
        events are published from it through trio.from_thread)."""
        cortex = self.daemon.cortex
        events: list[tuple[str, dict[str, Any], str, str]] = []
        last = cortex.last_seq
        if self._seq is not None and last > self._seq:
            changes = cortex.changes_since(self._seq, limit=MAX_CHANGES_PER_TICK)
            # The gene's head says all an event tells (version, status, origin, domain):
            # read in one transaction, no gene decoded. A cold sync writes 100k changes,
            # and decoding each was a tenth of the receiver's CPU while it ran.
            puts = [c for c in changes if c.op == "put"]
            for change, head in zip(puts, cortex.heads([c.id for c in puts]), strict=True):
                if (head is not None and head.status == GeneStatus.ADAPTATION_PENDING
                        and head.origin != self.daemon.key.peer_id):
                    events.append(("gene.received", {"gene": change.id, "origin": head.origin,
                                                     "version": head.version,
                                                     "status": head.status},
                                   head.domain, change.id))
            if changes:
                self._seq = max(self._seq, changes[-1].seq)
        else:
            self._seq = last
        sync = self.daemon.sync
        if sync is not None:
            queued = {c.key: c for c in sync.store.conflicts()}
            if self._conflicts is not None:
                for key in sorted(queued.keys() - self._conflicts):
                    c = queued[key]
                    events.append(("conflict.queued", {"key": key, "gene": c.gene_id,
                                                       "sender": c.sender},
                                   c.local.domain, c.gene_id))
            self._conflicts = set(queued)
        alarms = self.api.ledger().alarms()
        if self._alarms is not None and len(alarms) > self._alarms:
            for alarm in alarms[self._alarms:]:
                data = alarm.to_json()
                events.append(("ledger.alarm", {"alarm": data.get("kind"),
                                                "detail": str(data.get("detail"))}, "", ""))
        self._alarms = len(alarms)
        if events:  # one hand-off to the event loop per tick, not one per event
            trio.from_thread.run_sync(self._publish_all, events)

    def _publish_all(self, events: list[tuple[str, dict[str, Any], str, str]]) -> None:
        for kind, data, domain, gene_id in events:
            self.bus.publish(kind, data, domain=domain, gene_id=gene_id)
