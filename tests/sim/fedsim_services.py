"""The daemon's own sync and sovereignty code, as the federation simulation runs it.

Why this module exists: issue 12 item 6 asks the simulation to drive the real services,
not a copy of their conversations. The daemon's services are thin async drivers around
sans-I/O cores (`gd.protocol.sync_round`, `gd.protocol.repair`,
`gd.protocol.agreement_messages`) and around plain methods they run in worker threads:
`Repairer.items` / `Repairer.versions` (the items a peer may see, including the heads it
authored, and the fetch answers), `AgreementDelivery.take_proposals` /
`take_tombstones`, the sovereignty views (`SovereignSenderView`,
`SovereignReceiverView`, which write the audit trail) and `feed_policy` (echo
suppression). Those methods read their stores from the service object that owns them;
`SyncSide` and `SovereigntySide` are that object for one simulated node, built over the
node's real Cortex, `SyncStore`, `PolicyStore`, `AuditLog`, `AdaptationDesk` and
`ForgetOutbox`. The simulation then calls exactly the functions the daemon calls.

What stays the simulation's: the byte transport (`fedsim.Simulation.deliver`, which gives
each connection the in-order, duplicate-free delivery of a TCP stream), the clocks (every
HLC stamp the stores take comes from the simulated clock) and the scheduler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gd.genome.gene import Gene
from gd.genome.identity import NodeKey
from gd.node.app.adaptation import AdaptationDesk
from gd.node.config_sections import SyncSettings
from gd.node.services.sovereignty_delivery import AgreementDelivery
from gd.node.services.sovereignty_forget import ForgetOutbox
from gd.node.services.sovereignty_repair import RepairItemCache
from gd.node.services.sovereignty_views import SovereignReceiverView, SovereignSenderView
from gd.node.services.sync_repair import Repairer
from gd.node.services.sync_views import ReceiverView, SenderView
from gd.node.store.audit import AuditLog, MemoryLedgerSink
from gd.node.store.cortex import Cortex
from gd.node.store.policy_store import PolicyStore, ProposalOutcome
from gd.node.store.sync_store import SyncStore
from gd.protocol.policy_rules import PeerInfo
from gd.protocol.sync import RejectedGene

# The simulation inspects every byte it sends for clear-text leaks, so batches travel
# uncompressed (zstd is a transport detail the sovereignty checks must see through).
SIM_SYNC_SETTINGS = SyncSettings(compress=False)


class SimLog:
    """The structured logger the services write to: events land in a list the
    simulation reads (a refused honest proposal is a failure), in order, so they are
    part of a seed's deterministic record."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def bind(self, **_: Any) -> SimLog:
        return self

    def _add(self, level: str, event: str, **fields: Any) -> None:
        self.events.append((level, event, fields))

    def info(self, event: str, **fields: Any) -> None:
        self._add("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._add("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._add("error", event, **fields)


class SimPolicyStore:
    """The node's real `PolicyStore`, with the simulated clock's HLC stamp on every
    proposal it receives (the daemon passes none and the store reads the wall clock),
    and a count of the stale ones it skipped (the daemon's ack does not carry it)."""

    def __init__(self, store: PolicyStore, tick: Callable[[], int]) -> None:
        self._store = store
        self._tick = tick
        self.received = 0
        self.stale = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def receive_proposal(self, data: bytes, sender: str, *, ledger: Any = None,
                         hlc: int | None = None) -> ProposalOutcome:
        outcome = self._store.receive_proposal(data, sender, ledger=ledger,
                                               hlc=self._tick() if hlc is None else hlc)
        if outcome.stale:
            self.stale += 1
        else:
            self.received += 1
        return outcome


class SyncSide:
    """What `Repairer` (and the pull/serve drivers) read from their `SyncService`."""

    def __init__(self, cortex: Cortex, store: SyncStore,
                 sender_views: Callable[[str], SenderView],
                 receiver_views: Callable[[str], ReceiverView]) -> None:
        self.cortex = cortex
        self.store = store
        self.settings = SIM_SYNC_SETTINGS
        self.read_feed = store.read_feed
        self.on_received = None
        self.verify_pool = None
        self._sender_views = sender_views
        self._receiver_views = receiver_views
        self.repairer = Repairer(self)  # type: ignore[arg-type]  # the service's shape

    def sender_view(self, peer: str) -> SenderView:
        return self._sender_views(peer)

    def receiver_view(self, peer: str) -> ReceiverView:
        return self._receiver_views(peer)


class SovereigntySide:
    """What the sovereignty views and `AgreementDelivery` read from their
    `SovereigntyService`."""

    def __init__(self, cortex: Cortex, key: NodeKey, secret: bytes, policy: SimPolicyStore,
                 audit: AuditLog, desk: AdaptationDesk, sync: SyncSide) -> None:
        self.cortex = cortex
        self.key = key
        self.secret = secret
        self.store = policy
        self.audit = audit
        self.desk = desk
        self.sync = sync
        self.ledger = MemoryLedgerSink()
        self.log = SimLog()
        self.forget = ForgetOutbox(cortex, audit, key, self.log)
        self.repair_items = RepairItemCache(cortex)  # per-peer repair items (ADR 0034)
        self.delivery = AgreementDelivery(self)  # type: ignore[arg-type]

    def sender_view(self, info: PeerInfo) -> SovereignSenderView:
        return SovereignSenderView(self, info)  # type: ignore[arg-type]

    def receiver_view(self, info: PeerInfo) -> SovereignReceiverView:
        return SovereignReceiverView(self, info)  # type: ignore[arg-type]

    def effective_with(self, peer: str) -> bool:
        """`SovereigntyService.effective_with`: any agreement with `peer` in force."""
        return any(a.peer == peer and a.flows for a in self.store.agreements())


class CheckedReceiverView:
    """A receiver view that hands every refusal to `explain` as it happens (the
    simulation fails one its oracle cannot explain), then behaves as the view."""

    def __init__(self, view: ReceiverView, explain: Callable[[Gene], None]) -> None:
        self.view = view
        self.explain = explain
        self.refused = 0

    def accept(self, gene: Gene) -> bool:
        ok = self.view.accept(gene)
        if not ok:
            self.refused += 1
            self.explain(gene)
        return ok

    def finish_batch(self, refused: Any = (), **kwargs: Any) -> int:
        rejected: list[RejectedGene] = list(refused)
        return self.view.finish_batch(rejected, **kwargs)  # type: ignore[call-arg]

    def __getattr__(self, name: str) -> Any:
        # `begin_batch`, `audit_in`: the drivers look them up on the view (getattr), so
        # hiding them would run another code path than the daemon's.
        return getattr(self.view, name)
