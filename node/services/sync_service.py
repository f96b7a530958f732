"""Sync over libp2p streams: the change feed (`/gd/sync/1.0.0`) and anti-entropy repair
(`/gd/reconcile/2.0.0`) between running daemons (issue 6, the network half).

The sans-I/O cores decide everything: `gd.protocol.sync` (SyncSender / SyncReceiver)
says what a batch holds and when the checkpoint moves, `gd.protocol.sync_round` runs a
pull round, `gd.protocol.reconcile` and `gd.protocol.repair` find and fetch what the feed
missed, `gd.node.store.sync_store` applies a batch and its checkpoint in one LMDB
transaction. The drivers carry their frames (`sync_pull`, `sync_serve`, `sync_repair`,
`sync_control`); this module owns the per-peer state, opens streams, guards every
round (one place turns a peer's `RemoteProtocolError` into a misbehaviour score), and
decides *when* to sync:

* on connect: a new handshaken peer is pulled from at once;
* on a local change: when our feed grows (a local write, or genes we pulled, which is how
  genes travel along a chain of peers) we send every peer a `SyncHint`, debounced, and
  the peer pulls from us;
* on a timer (`interval_s`) as a safety net, and `repair_interval_s` for anti-entropy;
* on demand: `sync_now` (the `gd-node sync now` control method).

Pull-based, like CouchDB replication: a node only ever *asks* for changes, so nothing
arrives that the receiver did not request, and the checkpoint lives with the receiver.

Sovereignty: every conversation with a peer goes through a per-peer *view*
(`gd.node.services.sync_views`); `gd.node.services.sovereignty_service` installs the
policy-driven views (`set_view_factories`). Default deny: without them nothing is sent.
No configuration turns that off: only code in the same process can, by passing a
`share_policy` to the constructor (`run_daemon(share_policy=...)`, tests and benchmarks)
or calling `set_share_policy` (a plain `(receiver, gene) -> bool`).

Wire efficiency: a batch of up to 256 genes travels as one frame, zstd-compressed when
the receiver asked for it and compression pays. "Payload" is the genes' canonical bytes
before compression; "wire" is every frame byte on our streams; overhead = wire - payload.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import trio

from gd.node.config import NodeConfig, SyncSettings
from gd.node.domain_settings import conflict_policies
from gd.node.gc_tuning import freeze_startup_heap
from gd.node.net.open_stream import open_framed_stream
from gd.node.net.streams import READ_TIMEOUT_S, FramedStream, StreamGone
from gd.node.services.sync_control import SyncControl
from gd.node.services.sync_pull import FeedPuller
from gd.node.services.sync_repair import Repairer
from gd.node.services.sync_serve import FeedServer
from gd.node.services.sync_state import REPAIR_HOLD_POLL_S, PeerSyncState, RoundStats
from gd.node.services.sync_views import (
    AcceptPolicy,
    AcceptView,
    PolicyView,
    ReceiverView,
    ReceiverViewFactory,
    SenderView,
    SenderViewFactory,
    accept_all,
    share_all,
)
from gd.node.services.verify_procs import ProcessVerifyPool
from gd.node.store.sync_store import SyncStore
from gd.protocol.errors import RemoteProtocolError
from gd.protocol.sync import FeedReader, SharePolicy, share_nothing
from gd.protocol.sync_frames import RECONCILE_PROTOCOL_ID, SYNC_PROTOCOL_ID, SyncHint

if TYPE_CHECKING:
    from gd.genome import Gene
    from gd.node.net.gate import Gate, PeerChange

# The callers' names for what moved to the sync rooms (tests, benchmarks, the daemon).
__all__ = ["RECONCILE_PROTOCOL_ID", "SYNC_PROTOCOL_ID", "RoundStats", "SyncService",
           "SyncSettings", "share_all", "sync_settings"]

# Opening a stream is ~9 ms on loopback; a peer that cannot open one in this long is gone.
OPEN_TIMEOUT_S: Final = 10.0


def sync_settings(cfg: NodeConfig) -> SyncSettings:
    """The [sync] section, typed and checked when config.toml was read."""
    return cfg.sync


class SyncService:
    """Change-feed sync and anti-entropy for one daemon. Registers its protocols and
    control methods on construction; `run()` drives the triggers until cancelled."""

    def __init__(self, gate: Gate, cortex: Any, *, settings: SyncSettings | None = None,
                 share_policy: SharePolicy | None = None,
                 accept: AcceptPolicy | None = None) -> None:
        self.gate = gate
        self.settings = settings or sync_settings(gate.cfg)
        self.cortex = cortex
        self.store = SyncStore(self.cortex, clock=lambda: int(gate.clock.wall()),
                               policy_for=conflict_policies(gate.cfg.domains),
                               local_peer=gate.peer_id)
        self.log = gate.log.bind(component="sync")
        self.metrics = gate.metrics
        self._share: SharePolicy = share_policy or share_nothing
        # A policy passed in-process (tests, benchmarks) replaces sovereignty's views.
        self.policy_injected = share_policy is not None
        self._accept: AcceptPolicy = accept or accept_all
        # The feed reader the sender uses; tests wrap it to inject faults.
        self.read_feed: FeedReader = self.store.read_feed
        self._sender_views: SenderViewFactory = self._policy_view
        self._receiver_views: ReceiverViewFactory = self._accept_view
        self.peers: dict[str, PeerSyncState] = {}
        # Called with (sender, genes) after each applied batch (auto-adaptation).
        self.on_received: Callable[[str, Sequence[Gene]], object] | None = None
        # Received genes are checked across cores, in processes (ADR 0038; closed when
        # `run` ends).
        self.verify_pool = ProcessVerifyPool()
        self._announced = -1
        self._changed = trio.Event()
        # Who made the changes since the last hint: peers (their genes applied) or None
        # (anything else); see `notify_local_change`.
        self._changed_by: set[str | None] = set()
        self.puller = FeedPuller(self)
        self.server = FeedServer(self)
        self.repairer = Repairer(self)
        self.control = SyncControl(self)
        gate.register_protocol(SYNC_PROTOCOL_ID, self.server.serve_sync)
        gate.register_protocol(RECONCILE_PROTOCOL_ID, self.repairer.serve_reconcile)
        gate.methods.add("sync_now", self.control.control_sync_now)
        gate.methods.add("conflicts_resolve", self.control.control_resolve)
        gate.on_peer(self._peer_changed)  # each new peer is pulled from at once
        if self.policy_injected:
            self.log.warning("sync.share_policy_injected",
                             note="an in-process share policy replaces sovereignty")

    # -- policies ----------------------------------------------------------------------

    def set_share_policy(self, policy: SharePolicy) -> None:
        """`(receiver_peer_id, gene) -> bool`, run at the sender before encoding; genes
        go unchanged. Replaces any installed sender views."""
        self._share = policy
        self._sender_views = self._policy_view

    def set_accept_policy(self, accept: AcceptPolicy) -> None:
        """`(sender_peer_id, gene) -> bool`, run at the receiver after verification.
        Replaces any installed receiver views."""
        self._accept = accept
        self._receiver_views = self._accept_view

    def set_view_factories(self, sender: SenderViewFactory | None = None,
                           receiver: ReceiverViewFactory | None = None) -> None:
        """Install per-peer views (the sovereignty filter): `sender(peer)` serves that
        receiver, `receiver(peer)` takes genes from that sender."""
        if sender is not None:
            self._sender_views = sender
        if receiver is not None:
            self._receiver_views = receiver

    def _policy_view(self, peer: str) -> SenderView:
        return PolicyView(peer, self.read_feed, self._share)

    def _accept_view(self, peer: str) -> ReceiverView:
        return AcceptView(peer, self._accept)

    def sender_view(self, peer: str) -> SenderView:
        return self._sender_views(peer)

    def receiver_view(self, peer: str) -> ReceiverView:
        return self._receiver_views(peer)

    def notify_local_change(self, source: str | None = None) -> None:
        """Every writer inside the daemon calls this after changing the feed (the control
        socket's writes, the API, sync apply): peers are hinted after the debounce.

        `source`: the peer whose genes alone made this change (a sync apply, a repair
        fetch). A peer is not hinted for changes that are all its own genes: it holds
        them, so the hint would only have it pull and skip them, while it may still be
        sending us more (a cold sync: the receiver's copy of each group woke the sender
        to pull its own genes back). It reads them at its next pull (ADR 0061)."""
        self._changed_by.add(source)
        self._changed.set()

    def state(self, peer: str) -> PeerSyncState:
        return self.peers.setdefault(peer, PeerSyncState())

    def repair_after_pull(self, peer: str) -> bool:
        """Have `peer`'s loop pull now and run one anti-entropy round right after that
        pull; False when no loop runs for it (`auto` off, or the peer not up), and the
        caller runs the round itself.

        Why after the pull (sovereignty's backfill when an agreement becomes
        effective): genes behind our checkpoint on the peer's feed only a repair round
        brings, but those after it the pull brings anyway. Run side by side, as the
        backfill did, both fetched those: a cold sync of 100k genes right after
        `share` verified and applied most of them twice (the pull was still scanning
        the feed the agreement had just opened). Pulling first leaves the repair round
        only the genes the feed had passed."""
        st = self.peers.get(peer)
        if not self.settings.auto or st is None or st.scope is None:
            return False
        st.repair_due = True
        st.wake.set()
        return True

    # -- the conversations (drivers in sync_pull, sync_repair, sync_control) -----------

    async def pull(self, peer: str, stats: RoundStats | None = None) -> RoundStats:
        """Pull `peer`'s feed from our checkpoint until it has nothing more for us."""
        return await self.puller.pull(peer, stats)

    async def reconcile(self, peer: str, stats: RoundStats | None = None) -> RoundStats:
        """Initiate one anti-entropy round with `peer`; fetch the versions we lack."""
        return await self.repairer.reconcile(peer, stats)

    async def sync_round(self, peer: str, *, repair: bool = False) -> RoundStats:
        """Pull from `peer`, have it pull from us (and wait), optionally reconcile."""
        return await self.control.sync_round(peer, repair=repair)

    async def sync_now(self, peer: str | None = None, *, repair: bool = False
                       ) -> list[RoundStats]:
        """One round with `peer`, or with every connected peer at once."""
        return await self.control.sync_now(peer, repair=repair)

    # -- triggers ----------------------------------------------------------------------

    async def run(self) -> None:
        """Watch connections and the feed; runs until cancelled with the daemon."""
        freeze_startup_heap()  # the daemon has started: its objects live as long as it
        try:
            await self.watch_feed_head()
        finally:
            self.verify_pool.close()

    async def watch_feed_head(self) -> None:
        """Hint every connected peer once the feed has changed and stayed quiet for
        `debounce_s`. The feed head is read only when a writer inside the daemon says it
        moved (`notify_local_change`: the control socket's writes, the API, sync apply):
        the CLI writes through the daemon, so there is nothing to poll for (ADR 0022).
        Peers are not polled either: the gate tells us of each (`_peer_changed`)."""
        self._announced = await trio.to_thread.run_sync(lambda: self.cortex.last_seq)
        changed_at: float | None = None
        while True:
            wait = math.inf
            if changed_at is not None:  # wake when the debounce is over
                wait = max(0.0, changed_at + self.settings.debounce_s - trio.current_time())
            with trio.move_on_after(wait):
                await self._changed.wait()
            if self._changed.is_set():
                self._changed = trio.Event()
                changed_at = trio.current_time()  # each change restarts the debounce
            if not self.settings.auto:
                changed_at = None
                self._changed_by.clear()
                continue
            if changed_at is None or trio.current_time() - changed_at < self.settings.debounce_s:
                continue
            changed_at = None
            head = await trio.to_thread.run_sync(lambda: self.cortex.last_seq)
            changed_by, self._changed_by = self._changed_by, set()
            if head != self._announced:
                self._announced = head
                for rec in self.gate.table.connected():
                    if changed_by <= {rec.peer_id}:
                        continue  # only its own genes came in: nothing new for it
                    self.gate.spawn(rec.peer_id, self._send_hint, rec.peer_id, head)

    def _peer_changed(self, change: PeerChange) -> None:
        """A peer came (start its loop in its lifetime, pulling at once) or went (its
        lifetime took the loop; forget its lag)."""
        st = self.state(change.peer_id)
        if not change.up:
            if st.scope is not None:
                st.scope.cancel()
                st.scope = None
            with contextlib.suppress(KeyError):
                self.metrics.sync_peer_lag.remove(change.peer_id)
            return
        if self.settings.auto and st.scope is None:  # a second handshake: one loop
            st.scope = trio.CancelScope()
            st.wake.set()  # on connect
            self.gate.spawn(change.peer_id, self._peer_loop, change.peer_id, st, st.scope)

    async def _peer_loop(self, peer: str, st: PeerSyncState, scope: trio.CancelScope) -> None:
        s = self.settings
        with scope:
            next_pull = trio.current_time() + s.interval_s
            next_repair = trio.current_time() + s.repair_interval_s
            held = False  # the last turn held a due repair round back
            while True:
                with trio.move_on_at(min(next_pull, next_repair)):
                    await st.wake.wait()
                woken = st.wake.is_set()
                if woken:
                    await trio.sleep(s.debounce_s)  # coalesce a burst of hints
                    st.wake = trio.Event()
                # A turn that only looks at a held repair round pulls nothing.
                if woken or not held or trio.current_time() >= next_pull:
                    await self.guard_round(peer, SYNC_PROTOCOL_ID, self.pull(peer))
                    next_pull = trio.current_time() + s.interval_s
                now = trio.current_time()
                if st.repair_due or now >= next_repair:
                    # The peer still pulling our feed: a round now would name (and
                    # build items for) every gene it is about to pull anyway.
                    held = st.hold_repair(now)
                    if held:
                        next_repair = now + REPAIR_HOLD_POLL_S
                        continue
                    st.repair_due = False
                    await self.guard_round(peer, RECONCILE_PROTOCOL_ID, self.reconcile(peer))
                    next_repair = trio.current_time() + s.repair_interval_s

    async def guard_round(self, peer: str, protocol: str, work: Awaitable[Any],
                          errors: list[str] | None = None) -> Any:
        """Run one round; a failure is logged (and scored when it is the peer's fault),
        never raised into the daemon. The one place sync turns a peer's
        `RemoteProtocolError` into a misbehaviour score; other services (sovereignty's
        backfill) run their sync rounds through it too."""
        try:
            return await work
        except RemoteProtocolError as exc:
            self.metrics.sync_rounds.labels(kind=protocol, outcome="peer_error").inc()
            if errors is not None:
                errors.append(f"{protocol}: {exc.message}")
            await self.gate.misbehaved(peer, protocol, exc)
        except (StreamGone, trio.TooSlowError) as exc:
            self.metrics.sync_rounds.labels(kind=protocol, outcome="gone").inc()
            if errors is not None:
                errors.append(f"{protocol}: {exc or 'timed out'}")
            self.log.info("sync.interrupted", peer=peer, protocol=protocol, error=repr(exc))
        except Exception as exc:  # a local failure must not take the daemon down
            self.metrics.sync_rounds.labels(kind=protocol, outcome="local_error").inc()
            if errors is not None:
                errors.append(f"{protocol}: {type(exc).__name__}: {exc}")
            self.log.error("sync.failed", peer=peer, protocol=protocol, error=repr(exc)[:300])
        return None

    async def open_stream(self, peer: str, protocol: str, stats: RoundStats | None,
                          read_timeout_s: float = READ_TIMEOUT_S) -> FramedStream:
        """A framed stream of `protocol` to `peer` whose bytes count in the metrics (and
        in `stats`); `StreamGone` when the peer cannot be reached in time."""
        metric = self.metrics.bytes

        def count(direction: str, n: int) -> None:
            metric.labels(protocol=protocol, direction=direction).inc(n)
            self.metrics.sync_bytes.labels(direction=direction, kind="wire").inc(n)
            if stats is not None:
                if direction == "in":
                    stats.wire_in += n
                else:
                    stats.wire_out += n

        return await open_framed_stream(self.gate.host, peer, protocol, timeout_s=OPEN_TIMEOUT_S,
                                        count_bytes=count, read_timeout_s=read_timeout_s)

    async def _send_hint(self, peer: str, head: int) -> None:
        async def hint() -> None:
            fs = await self.open_stream(peer, SYNC_PROTOCOL_ID, None)
            try:
                await fs.send(SyncHint(head=head))
            finally:
                await fs.close()

        await self.guard_round(peer, SYNC_PROTOCOL_ID, hint())

    def lag(self) -> int:
        """Feed entries the slowest peer's feed is ahead of what we applied from it."""
        return max((max(0, s.head - s.checkpoint) for s in self.peers.values()), default=0)

    def set_lag(self, peer: str, st: PeerSyncState) -> None:
        """Publish `peer`'s lag (and the slowest peer's) to the metrics."""
        lag = max(0, st.head - st.checkpoint)
        self.metrics.sync_peer_lag.labels(peer=peer).set(lag)
        self.metrics.sync_lag.set(self.lag())
