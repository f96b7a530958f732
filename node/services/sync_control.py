"""Sync on demand: `gd-node sync now` and conflict resolution inside the daemon.

A round with one peer pulls from it and, at the same time, hints it to pull from us and
waits for its answer (`SyncPulled`), so one call moves genes both ways; `repair` adds an
anti-entropy round. Each part runs under the service's round guard: a peer's failure
is recorded in the round's `errors`, never raised into the control call.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Final

import trio

from gd.genome.errors import ValidationError
from gd.genome.gene import Gene
from gd.node.services.sync_state import RoundStats, ServedCounters
from gd.node.store.sync_store import resolve_conflict
from gd.protocol.errors import RemoteProtocolError
from gd.protocol.sync_frames import RECONCILE_PROTOCOL_ID, SYNC_PROTOCOL_ID, SyncHint, SyncPulled

if TYPE_CHECKING:
    from gd.node.services.sync_service import SyncService

# A `sync now` asks the peer to pull from us and waits for it to finish: a cold sync of
# 100k genes takes tens of seconds here, so the wait is long but still bounded.
ROUND_TIMEOUT_S: Final = 600.0
_TOTALS: Final = ("genes_in", "genes_out", "payload_in", "wire_in", "payload_out",
                  "wire_out", "overhead_in", "overhead_out", "conflicts", "rejected",
                  "repaired")


class SyncControl:
    """`sync_now` and `conflicts_resolve` for one `SyncService`."""

    def __init__(self, service: SyncService) -> None:
        self.svc = service

    async def sync_round(self, peer: str, *, repair: bool = False) -> RoundStats:
        """Pull from `peer`, have it pull from us (and wait), optionally reconcile."""
        svc = self.svc
        stats = RoundStats(peer)
        st = svc.state(peer)
        before = ServedCounters(**asdict(st.served))

        async def pull_in() -> None:
            await svc.guard_round(peer, SYNC_PROTOCOL_ID, svc.pull(peer, stats), stats.errors)

        async def ask() -> None:
            fs = await svc.open_stream(peer, SYNC_PROTOCOL_ID, None,
                                       read_timeout_s=ROUND_TIMEOUT_S)
            try:
                head = await trio.to_thread.run_sync(lambda: svc.cortex.last_seq)
                reply = await fs.request(SyncHint(head=head, wait=True))
            finally:
                await fs.close()
            if not isinstance(reply, SyncPulled):
                raise RemoteProtocolError(f"expected gd.sync.pulled, got {reply.TYPE}")
            if reply.error:
                stats.errors.append(f"peer pulling from us: {reply.error}")

        async def push_out() -> None:
            await svc.guard_round(peer, SYNC_PROTOCOL_ID, ask(), stats.errors)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pull_in)
            nursery.start_soon(push_out)
        if repair:
            await svc.guard_round(peer, RECONCILE_PROTOCOL_ID, svc.reconcile(peer, stats),
                                  stats.errors)
        stats.genes_out = st.served.genes - before.genes
        stats.payload_out = st.served.payload - before.payload
        stats.wire_out += st.served.wire - before.wire
        return stats

    async def sync_now(self, peer: str | None = None, *, repair: bool = False
                       ) -> list[RoundStats]:
        """One round with `peer`, or with every connected peer at once."""
        connected = [r.peer_id for r in self.svc.gate.table.connected()]
        if peer is not None and peer not in connected:
            raise LookupError(f"peer {peer} is not connected")
        targets = [peer] if peer is not None else connected
        results: dict[str, RoundStats] = {}

        async def one(p: str) -> None:
            results[p] = await self.sync_round(p, repair=repair)

        async with trio.open_nursery() as nursery:
            for p in targets:
                nursery.start_soon(one, p)
        return [results[p] for p in targets]

    async def control_sync_now(self, peer: str | None = None, repair: bool = False
                               ) -> dict[str, Any]:
        """The `sync_now` control method: each peer's round and the totals."""
        rounds = [r.to_plain() for r in await self.sync_now(peer, repair=repair)]
        totals = {k: sum(r[k] for r in rounds) for k in _TOTALS}
        return {"peers": rounds, "totals": totals}

    async def control_resolve(self, key: str, keep: str,
                              content: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resolve a queued conflict inside the daemon (its store stays consistent)."""
        svc = self.svc

        def run() -> Gene:
            return resolve_conflict(svc.store, svc.gate.key, key, keep, content,
                                    clock=svc.gate.clock)

        try:
            gene = await trio.to_thread.run_sync(run)
        except ValidationError as exc:
            raise ValueError(str(exc)) from None
        svc.notify_local_change()
        return {"gene_id": gene.id, "version": gene.version,
                "version_hash": gene.version_hash.hex(), "vv": dict(gene.vv)}
