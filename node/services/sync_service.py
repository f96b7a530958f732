"""Sync over libp2p streams: the change feed (`/gd/sync/1.0.0`) and anti-entropy repair
(`/gd/reconcile/1.0.0`) between running daemons (issue 6, the network half).

The sans-I/O cores decide everything: `gd.protocol.sync` (SyncSender / SyncReceiver)
says what a batch holds and when the checkpoint moves, `gd.protocol.reconcile` finds what
the feed missed, `gd.node.store.sync_store` applies a batch and its checkpoint in one LMDB
transaction. This module only carries their bytes between peers, runs the LMDB and
crypto work in worker threads, bounds every wait, counts bytes, and decides *when* to
sync:

* on connect: a new handshaken peer is pulled from at once;
* on a local change: when our feed grows (a local write, or genes we pulled, which is how
  genes travel along a chain of peers) we send every peer a `SyncHint`, debounced, and
  the peer pulls from us;
* on a timer (`interval_s`) as a safety net, and `repair_interval_s` for anti-entropy;
* on demand: `sync_now` (the `gd-node sync now` control method).

Pull-based, like CouchDB replication: a node only ever *asks* for changes, so nothing
arrives that the receiver did not request, and the checkpoint lives with the receiver.

Sovereignty: every conversation with a peer goes through a per-peer *view*. The sender
side serves a receiver through a `SenderView` (its feed reader, which entries may go, and
in which form: the sovereignty filter may send a derived, anonymised gene), used for the
feed, for reconciliation items (so unauthorised ids never appear, even inside a
fingerprint) and for repair fetches; the receiver side takes genes through a
`ReceiverView`. Each view hears `finish_batch()` after a batch went out or was applied,
which is where the audit log is written. `gd.node.services.sovereignty_service` installs the
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
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Final, Protocol

import trio
import zstandard
from libp2p.custom_types import TProtocol

from gd.genome import canonical
from gd.genome.errors import DecodeError, ValidationError
from gd.genome.gene import Gene
from gd.node.config import ConfigError, NodeConfig
from gd.node.gc_tuning import freeze_startup_heap
from gd.node.net.host import to_id
from gd.node.net.peers import PeerRecord
from gd.node.net.streams import READ_TIMEOUT_S, FramedStream, StreamGone
from gd.node.services.verify_pool import VerifyPool
from gd.node.store.sync_store import (
    ApplyStats,
    SyncStore,
    domain_conflict_policies,
    resolve_conflict,
)
from gd.protocol.errors import RemoteProtocolError
from gd.protocol.reconcile import ID_LEN, Item, ReconcileProtocolError, Reconciler
from gd.protocol.sync import (
    FeedReader,
    RejectedGene,
    SharePolicy,
    SyncReceiver,
    SyncSender,
    share_nothing,
    verify_genes,
)
from gd.protocol.sync_messages import (
    MAX_BATCH_BYTES,
    MAX_BATCH_GENES,
    MAX_SEQ,
    ChangeBatch,
    ChangesRequest,
    SyncProtocolError,
)
from gd.protocol.wire import HEADER_SIZE, Message, encode_body, message

if TYPE_CHECKING:
    from gd.node.daemon import Daemon

SYNC_PROTOCOL_ID: Final = "/gd/sync/1.0.0"
RECONCILE_PROTOCOL_ID: Final = "/gd/reconcile/1.0.0"

# The watcher notices new peers and feed growth this often: a cheap LMDB read and a set
# comparison; 0.25 s keeps "on connect" and "on local change" prompt.
WATCH_TICK_S: Final = 0.25
# Opening a stream is ~9 ms on loopback; a peer that cannot open one in this long is gone.
OPEN_TIMEOUT_S: Final = 10.0
# A `sync now` asks the peer to pull from us and waits for it to finish: a cold sync of
# 100k genes takes tens of seconds here, so the wait is long but still bounded.
ROUND_TIMEOUT_S: Final = 600.0
# A repair fetch asks for at most this many versions: the same bound as a feed batch,
# so a reply fits the same frame and LMDB transaction budget.
MAX_FETCH_HASHES: Final = MAX_BATCH_GENES
# Batches smaller than this are sent as they are: zstd saves little on a few hundred
# bytes and the frame flag costs nothing either way.
ZSTD_MIN_BYTES: Final = 1024
# Level 3 is zstd's default: ~3-5x on msgpack genes at hundreds of MB/s; higher levels
# gain a few percent for several times the CPU on a 2-core node.
ZSTD_LEVEL: Final = 3

# Defaults of the [sync] config section.
# The initiator of a repair waits this long for each reply: the responder builds its item
# set (every head the policy lets us see) on the first step and scans for derived forms
# on a fetch — O(n) work, ~15 s for 100k genes on a busy 2-core machine, far above the
# 10 s read timeout that suits the feed's small steps.
REPAIR_READ_TIMEOUT_S: Final = 180.0
DEFAULT_INTERVAL_S: Final = 30.0
DEFAULT_DEBOUNCE_S: Final = 0.5
DEFAULT_REPAIR_INTERVAL_S: Final = 600.0
# A pull asks for this many genes first and doubles per batch up to [sync].batch_genes:
# the first answer comes back quickly, so verifying it overlaps the sender's next read.
FIRST_BATCH_GENES: Final = 32

# (sender peer id, gene) -> do we take this gene from this sender?
AcceptPolicy = Callable[[str, Gene], bool]


def share_all(receiver: str, gene: Gene) -> bool:
    """Allow-all policy: only for tests and benchmarks, passed in-process by constructor
    (there is deliberately no config key for it: a config file must never switch
    sovereignty off in the real binary)."""
    return True


def accept_all(sender: str, gene: Gene) -> bool:
    return True


# ---- per-peer views (where sovereignty plugs in) -------------------------------------


class SenderView(Protocol):
    """How we serve one receiver, for the life of one conversation (a pull, a reconcile).

    `read_feed` and `policy` feed `SyncSender` (the view may yield a different form of a
    stored gene, and `policy` approves exactly the forms it cleared); `outgoing(gene)` is
    the form of a stored head the receiver may have, or None (reconciliation items and
    repair fetches). `finish_batch(extra)` is called once a batch has gone out, with the
    fetched genes it carried beyond the feed's; it returns how many genes went out."""

    def read_feed(self, since: int, limit: int) -> Iterable[tuple[int, Gene]]: ...

    def policy(self, receiver: str, gene: Gene) -> bool: ...

    def outgoing(self, gene: Gene) -> Gene | None: ...

    def finish_batch(self, extra: Sequence[Gene] = ()) -> int: ...


class ReceiverView(Protocol):
    """How we take genes from one sender: `accept` runs on each verified gene;
    `finish_batch(refused)` once its batch is applied, with the genes the store refused
    after `accept` let them through (`SyncStore.apply_batch`: a version that changes a
    gene's origin or domain, a gene claiming our origin); returns how many it judged."""

    def accept(self, gene: Gene) -> bool: ...

    def finish_batch(self, refused: Sequence[RejectedGene] = ()) -> int: ...


SenderViewFactory = Callable[[str], SenderView]
ReceiverViewFactory = Callable[[str], ReceiverView]


class PolicyView:
    """The sender view of a plain share policy: stored genes go as they are."""

    def __init__(self, receiver: str, read_feed: FeedReader, share: SharePolicy) -> None:
        self.receiver = receiver
        self._read_feed = read_feed
        self._share = share
        self._sent = 0

    def read_feed(self, since: int, limit: int) -> Iterable[tuple[int, Gene]]:
        return self._read_feed(since, limit)

    def policy(self, receiver: str, gene: Gene) -> bool:
        allowed = self._share(receiver, gene)
        self._sent += allowed
        return allowed

    def outgoing(self, gene: Gene) -> Gene | None:
        return gene if self._share(self.receiver, gene) else None

    def finish_batch(self, extra: Sequence[Gene] = ()) -> int:
        sent, self._sent = self._sent + len(extra), 0
        return sent


class AcceptView:
    """The receiver view of a plain acceptance callback."""

    def __init__(self, sender: str, accept: AcceptPolicy) -> None:
        self.sender = sender
        self._accept = accept
        self._judged = 0

    def accept(self, gene: Gene) -> bool:
        self._judged += 1
        return self._accept(self.sender, gene)

    def finish_batch(self, refused: Sequence[RejectedGene] = ()) -> int:
        judged, self._judged = self._judged, 0
        return judged


# ---- configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class SyncSettings:
    """The [sync] section of config.toml (all optional)."""

    # false: no sync on connect, change or timer; only `gd-node sync now` (benchmarks).
    auto: bool = True
    compress: bool = True
    interval_s: float = DEFAULT_INTERVAL_S
    debounce_s: float = DEFAULT_DEBOUNCE_S
    repair_interval_s: float = DEFAULT_REPAIR_INTERVAL_S
    batch_genes: int = MAX_BATCH_GENES


_BOOL_KEYS = ("auto", "compress")
_SECONDS_KEYS = ("interval_s", "debounce_s", "repair_interval_s")


def sync_settings(cfg: NodeConfig) -> SyncSettings:
    """Validate and read [sync]; ConfigError names the bad key."""
    section = cfg.extra.get("sync", {})
    if not isinstance(section, dict):
        raise ConfigError("[sync] must be a table")
    known = {f.name for f in fields(SyncSettings)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"[sync]: unknown keys {unknown}")
    for key in _BOOL_KEYS:
        if key in section and type(section[key]) is not bool:
            raise ConfigError(f"[sync].{key} must be true or false")
    for key in _SECONDS_KEYS:
        value = section.get(key, 1.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"[sync].{key} must be a positive number of seconds")
    batch = section.get("batch_genes", MAX_BATCH_GENES)
    if type(batch) is not int or not 1 <= batch <= MAX_BATCH_GENES:
        raise ConfigError(f"[sync].batch_genes must be an integer in 1..{MAX_BATCH_GENES}")
    values: dict[str, Any] = {k: float(v) if k in _SECONDS_KEYS else v
                              for k, v in section.items()}
    return SyncSettings(**values)


# ---- wire messages -------------------------------------------------------------------


@message
@dataclass(frozen=True)
class SyncPull(Message):
    """Receiver -> sender: the core's `ChangesRequest`; `zstd`: we take compressed batches."""

    TYPE = "gd.sync.pull"
    request: bytes
    zstd: bool = False


@message
@dataclass(frozen=True)
class SyncBatch(Message):
    """Sender -> receiver: the core's `ChangeBatch` (zstd-compressed when `zstd`) and
    the sender's feed head, for the lag metric and to notice a feed that went back."""

    TYPE = "gd.sync.batch"
    batch: bytes
    zstd: bool
    head: int


@message
@dataclass(frozen=True)
class SyncHint(Message):
    """"My feed is at `head`: pull from me." With `wait`, the peer pulls at once and
    answers `SyncPulled` (that is how `sync now` moves genes out)."""

    TYPE = "gd.sync.hint"
    head: int
    wait: bool = False


@message
@dataclass(frozen=True)
class SyncPulled(Message):
    TYPE = "gd.sync.pulled"
    genes: int
    conflicts: int
    rejected: int
    error: str = ""


@message
@dataclass(frozen=True)
class ReconcileStep(Message):
    """One `gd.protocol.reconcile` message, either way."""

    TYPE = "gd.reconcile.step"
    data: bytes


@message
@dataclass(frozen=True)
class FetchVersions(Message):
    """Initiator -> responder after reconciling: send me these versions (by hash)."""

    TYPE = "gd.reconcile.fetch"
    hashes: tuple[bytes, ...]
    zstd: bool = False

    def __post_init__(self) -> None:
        if len(self.hashes) > MAX_FETCH_HASHES:
            raise ValueError(f"more than {MAX_FETCH_HASHES} hashes")
        if any(len(h) != ID_LEN for h in self.hashes):
            raise ValueError(f"version hashes are {ID_LEN} bytes")


@message
@dataclass(frozen=True)
class Versions(Message):
    """The fetched versions the responder holds *and* may share: a canonical list of wire
    genes (zstd when flagged). Unknown or withheld hashes are left out silently."""

    TYPE = "gd.reconcile.versions"
    genes: bytes
    zstd: bool


@message
@dataclass(frozen=True)
class ReconcileEnd(Message):
    """Initiator -> responder: done; you lack `you_lack` versions I hold, so reconcile
    with me when you can (only the initiator learns the differences)."""

    TYPE = "gd.reconcile.end"
    you_lack: int


def _frame_len(msg: Message) -> int:
    return HEADER_SIZE + len(encode_body(msg))


def _compress(raw: bytes, allowed: bool) -> tuple[bytes, bool]:
    if not allowed or len(raw) < ZSTD_MIN_BYTES:
        return raw, False
    packed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw)
    return (packed, True) if len(packed) < len(raw) else (raw, False)


def _decompress(data: bytes, compressed: bool) -> bytes:
    if not compressed:
        return data
    try:
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_BATCH_BYTES)
    except zstandard.ZstdError as exc:
        raise RemoteProtocolError(f"bad zstd batch (or over {MAX_BATCH_BYTES} bytes): "
                                  f"{exc}") from None


def _open_batch(reply: SyncBatch) -> tuple[bytes, ChangeBatch]:
    """Worker thread: decompress and decode a batch (its raw bytes for the counters)."""
    raw = _decompress(reply.batch, reply.zstd)
    return raw, ChangeBatch.decode(raw)


def _array_header(n: int) -> int:
    return 1 if n < 16 else 3 if n < 65536 else 5


def batch_payload(raw_len: int, since: int, upto: int, more: bool, n_genes: int) -> int:
    """Gene bytes inside an encoded `ChangeBatch` of `raw_len` bytes: msgpack is
    compositional, so the genes are everything but the batch's own envelope."""
    envelope = len(ChangeBatch(since, upto, more).encode()) - 1 + _array_header(n_genes)
    return raw_len - envelope


# ---- statistics ----------------------------------------------------------------------


@dataclass
class RoundStats:
    """What one round with one peer moved (what `gd-node sync now` prints)."""

    peer: str
    genes_in: int = 0
    genes_out: int = 0
    payload_in: int = 0
    wire_in: int = 0
    payload_out: int = 0
    wire_out: int = 0
    conflicts: int = 0
    rejected: int = 0
    ignored: int = 0
    batches: int = 0
    repaired: int = 0
    repair_round_trips: int = 0
    repair_wire: int = 0
    errors: list[str] = field(default_factory=list)

    def to_plain(self) -> dict[str, Any]:
        out = asdict(self)
        out["overhead_in"] = self.wire_in - self.payload_in
        out["overhead_out"] = self.wire_out - self.payload_out
        return out


@dataclass
class ServedCounters:
    """What we sent one peer, ever (sender side)."""

    genes: int = 0
    payload: int = 0
    wire: int = 0


@dataclass
class PeerSyncState:
    pull_lock: trio.Lock = field(default_factory=trio.Lock)
    repair_lock: trio.Lock = field(default_factory=trio.Lock)
    wake: trio.Event = field(default_factory=trio.Event)
    repair_due: bool = False
    head: int = 0
    checkpoint: int = 0
    served: ServedCounters = field(default_factory=ServedCounters)
    scope: trio.CancelScope | None = None


# ---- the service ---------------------------------------------------------------------


class SyncService:
    """Change-feed sync and anti-entropy for one daemon. Registers its protocols and
    control methods on construction; `run()` drives the triggers until cancelled."""

    def __init__(self, daemon: Daemon, *, settings: SyncSettings | None = None,
                 share_policy: SharePolicy | None = None,
                 accept: AcceptPolicy | None = None) -> None:
        self.daemon = daemon
        self.settings = settings or sync_settings(daemon.cfg)
        self.cortex = daemon.cortex
        self.store = SyncStore(self.cortex, clock=lambda: int(time.time()),
                               policy_for=domain_conflict_policies(
                                   daemon.cfg.extra.get("domains", {})),
                               local_peer=daemon.peer_id)
        self.log = daemon.log.bind(component="sync")
        self.metrics = daemon.metrics
        self._share: SharePolicy = share_policy or share_nothing
        # A policy passed in-process (tests, benchmarks) replaces sovereignty's views.
        self.policy_injected = share_policy is not None
        self._accept: AcceptPolicy = accept or accept_all
        # The feed reader the sender uses; tests wrap it to inject faults.
        self.read_feed: FeedReader = self.store.read_feed
        self._sender_views: SenderViewFactory = self._policy_view
        self._receiver_views: ReceiverViewFactory = self._accept_view
        self.peers: dict[str, PeerSyncState] = {}
        # Received genes are checked across cores (closed when `run` ends).
        self.verify_pool = VerifyPool()
        self._announced = -1
        self._changed = trio.Event()
        daemon.register_protocol(SYNC_PROTOCOL_ID, self.serve_sync)
        daemon.register_protocol(RECONCILE_PROTOCOL_ID, self.serve_reconcile)
        daemon.methods.add("sync_now", self._control_sync_now)
        daemon.methods.add("conflicts_resolve", self._control_resolve)
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

    @staticmethod
    def _feed_policy(view: SenderView) -> SharePolicy:
        def policy(receiver: str, gene: Gene) -> bool:
            # Echo suppression: the receiver authored this version, so it has it (or lost
            # it in a restore, which anti-entropy repairs: items and fetches skip this).
            return gene.author != receiver and view.policy(receiver, gene)

        return policy

    def notify_local_change(self) -> None:
        """Local writers may call this to announce a change before the next tick."""
        self._changed.set()

    def state(self, peer: str) -> PeerSyncState:
        return self.peers.setdefault(peer, PeerSyncState())

    # -- triggers ----------------------------------------------------------------------

    async def run(self) -> None:
        """Watch connections and the feed; runs until cancelled with the daemon."""
        freeze_startup_heap()  # the daemon has started: its objects live as long as it
        try:
            await self._watch()
        finally:
            self.verify_pool.close()

    async def _watch(self) -> None:
        async with trio.open_nursery() as nursery:
            self._announced = await trio.to_thread.run_sync(lambda: self.cortex.last_seq)
            changed_at: float | None = None
            seen = self._announced
            while True:
                with trio.move_on_after(WATCH_TICK_S):
                    await self._changed.wait()
                self._changed = trio.Event()
                connected = {r.peer_id for r in self.daemon.table.connected()}
                self._track_peers(nursery, connected)
                if not self.settings.auto:
                    continue
                head = await trio.to_thread.run_sync(lambda: self.cortex.last_seq)
                now = trio.current_time()
                if head != seen:
                    seen, changed_at = head, now
                if (head != self._announced and changed_at is not None
                        and now - changed_at >= self.settings.debounce_s):
                    self._announced = head
                    for peer in connected:
                        nursery.start_soon(self._send_hint, peer, head)

    def _track_peers(self, nursery: trio.Nursery, connected: set[str]) -> None:
        for peer, st in list(self.peers.items()):
            if peer not in connected and st.scope is not None:
                st.scope.cancel()
                st.scope = None
                with contextlib.suppress(KeyError):
                    self.metrics.sync_peer_lag.remove(peer)
        if not self.settings.auto:
            return
        for peer in connected:
            st = self.state(peer)
            if st.scope is None:
                st.scope = trio.CancelScope()
                st.wake.set()  # on connect
                nursery.start_soon(self._peer_loop, peer, st, st.scope)

    async def _peer_loop(self, peer: str, st: PeerSyncState, scope: trio.CancelScope) -> None:
        s = self.settings
        with scope:
            next_pull = trio.current_time() + s.interval_s
            next_repair = trio.current_time() + s.repair_interval_s
            while True:
                with trio.move_on_at(min(next_pull, next_repair)):
                    await st.wake.wait()
                if st.wake.is_set():
                    await trio.sleep(s.debounce_s)  # coalesce a burst of hints
                    st.wake = trio.Event()
                await self._guarded(peer, SYNC_PROTOCOL_ID, self.pull(peer))
                now = trio.current_time()
                next_pull = now + s.interval_s
                if st.repair_due or now >= next_repair:
                    st.repair_due = False
                    await self._guarded(peer, RECONCILE_PROTOCOL_ID, self.reconcile(peer))
                    next_repair = trio.current_time() + s.repair_interval_s

    async def _guarded(self, peer: str, protocol: str, work: Awaitable[Any],
                       errors: list[str] | None = None) -> Any:
        """Run one round; a failure is logged (and scored when it is the peer's fault),
        never raised into the daemon."""
        try:
            return await work
        except RemoteProtocolError as exc:
            self.metrics.sync_rounds.labels(kind=protocol, outcome="peer_error").inc()
            if errors is not None:
                errors.append(f"{protocol}: {exc.message}")
            await self.daemon.misbehaved(peer, protocol, exc)
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

    async def _open(self, peer: str, protocol: str, stats: RoundStats | None,
                    read_timeout_s: float = READ_TIMEOUT_S) -> FramedStream:
        try:
            with trio.fail_after(OPEN_TIMEOUT_S):
                stream = await self.daemon.host.new_stream(to_id(peer), [TProtocol(protocol)])
        except trio.TooSlowError:
            raise StreamGone(f"could not open {protocol} to {peer} in time") from None
        except Exception as exc:  # libp2p raises many kinds for "no connection"
            raise StreamGone(f"could not open {protocol} to {peer}: {exc!r}") from None
        metric = self.metrics.bytes

        def count(direction: str, n: int) -> None:
            metric.labels(protocol=protocol, direction=direction).inc(n)
            self.metrics.sync_bytes.labels(direction=direction, kind="wire").inc(n)
            if stats is not None:
                if direction == "in":
                    stats.wire_in += n
                else:
                    stats.wire_out += n

        return FramedStream(stream, read_timeout_s=read_timeout_s, count_bytes=count)

    async def _send_hint(self, peer: str, head: int) -> None:
        async def hint() -> None:
            fs = await self._open(peer, SYNC_PROTOCOL_ID, None)
            try:
                await fs.send(SyncHint(head=head))
            finally:
                await fs.close()

        await self._guarded(peer, SYNC_PROTOCOL_ID, hint())

    def lag(self) -> int:
        """Feed entries the slowest peer's feed is ahead of what we applied from it."""
        return max((max(0, s.head - s.checkpoint) for s in self.peers.values()), default=0)

    def _set_lag(self, peer: str, st: PeerSyncState) -> None:
        lag = max(0, st.head - st.checkpoint)
        self.metrics.sync_peer_lag.labels(peer=peer).set(lag)
        self.metrics.sync_lag.set(self.lag())

    # -- pulling (receiver role) -------------------------------------------------------

    async def pull(self, peer: str, stats: RoundStats | None = None) -> RoundStats:
        """Pull `peer`'s feed from our checkpoint until it has nothing more for us."""
        stats = stats or RoundStats(peer)
        st = self.state(peer)
        async with st.pull_lock:
            checkpoint = await trio.to_thread.run_sync(self.cortex.get_checkpoint, peer)

            applied: list[ApplyStats] = []

            def applier(sender: str, genes: Sequence[Gene], upto: int) -> None:
                applied.append(self.store.apply_batch(sender, genes, upto))

            view = self.receiver_view(peer)
            cap = self.settings.batch_genes
            receiver = SyncReceiver(peer, applier, checkpoint=checkpoint,
                                    accept=view.accept, max_genes=min(FIRST_BATCH_GENES, cap),
                                    check=self.verify_pool)

            def receive(batch: ChangeBatch) -> Any:
                outcome = receiver.receive_batch(batch)
                view.finish_batch([r for s in applied for r in s.refused])
                return outcome

            def pull_msg(since: int) -> SyncPull:
                request = ChangesRequest(since, receiver.max_genes).encode()
                return SyncPull(request, zstd=self.settings.compress)

            fs = await self._open(peer, SYNC_PROTOCOL_ID, stats)
            try:
                await fs.send(pull_msg(receiver.checkpoint))
                while True:
                    reply = await fs.receive()
                    if not isinstance(reply, SyncBatch):
                        raise RemoteProtocolError(f"expected gd.sync.batch, got {reply.TYPE}")
                    if reply.head > MAX_SEQ:
                        raise RemoteProtocolError("feed head is not a u64")
                    since = receiver.checkpoint
                    try:
                        raw, batch = await trio.to_thread.run_sync(_open_batch, reply)
                    except SyncProtocolError as exc:
                        raise RemoteProtocolError(f"bad sync batch: {exc}") from None
                    # Pipelining: ask for the next batch before verifying and applying
                    # this one, so the sender reads and encodes it meanwhile. The request
                    # names the checkpoint this batch will leave; if applying fails the
                    # stream closes and that answer is never read.
                    ahead = (batch.more and batch.since == since
                             and reply.head >= batch.upto)
                    if ahead:
                        # Slow start: small first batches fill the pipeline sooner.
                        receiver.max_genes = min(cap, receiver.max_genes * 2)
                        await fs.send(pull_msg(batch.upto))
                    applied.clear()
                    try:
                        outcome = await trio.to_thread.run_sync(receive, batch)
                    except SyncProtocolError as exc:
                        raise RemoteProtocolError(f"bad sync batch: {exc}") from None
                    st.checkpoint, st.head = receiver.checkpoint, reply.head
                    self._count_batch(stats, outcome, applied, raw, since)
                    if outcome.stale:
                        raise RemoteProtocolError("sync batch does not start at our checkpoint")
                    if reply.head < receiver.checkpoint:
                        await self._feed_went_back(peer, st, reply.head)
                        break
                    self._set_lag(peer, st)
                    if not outcome.more:
                        break
                    if not ahead:
                        await fs.send(pull_msg(receiver.checkpoint))
            finally:
                await fs.close()
        self.metrics.sync_rounds.labels(kind=SYNC_PROTOCOL_ID, outcome="ok").inc()
        return stats

    def _count_batch(self, stats: RoundStats, outcome: Any, applied: list[ApplyStats],
                     raw: bytes, since: int) -> None:
        n = len(outcome.applied) + len(outcome.rejected)
        payload = batch_payload(len(raw), since, outcome.checkpoint, outcome.more, n) \
            if n else 0
        stats.batches += 1
        stats.payload_in += payload
        stats.rejected += len(outcome.rejected)
        for s in applied:
            stats.rejected += len(s.refused)
            self.metrics.sync_rejected.inc(len(s.refused))
            for bad in s.refused:
                self.log.warning("sync.refused", peer=stats.peer, gene=bad.gene_id,
                                 reason=bad.reason)
            stats.genes_in += s.applied
            stats.conflicts += s.queued
            stats.ignored += s.ignored
            self.metrics.sync_genes.labels(direction="in").inc(s.applied)
            self.metrics.sync_conflicts.inc(s.queued)
        self.metrics.sync_bytes.labels(direction="in", kind="payload").inc(payload)
        self.metrics.sync_rejected.inc(len(outcome.rejected))
        for bad in outcome.rejected:
            self.log.warning("sync.rejected", peer=stats.peer, gene=bad.gene_id,
                             reason=bad.reason)

    async def _feed_went_back(self, peer: str, st: PeerSyncState, head: int) -> None:
        """The peer's feed head is below our checkpoint: it was restored from a backup.
        Its new writes will reuse sequence numbers we think we have, so follow its head
        and let anti-entropy find what the gap hides."""
        self.log.warning("sync.feed_rewound", peer=peer, checkpoint=st.checkpoint, head=head)
        await trio.to_thread.run_sync(self.cortex.set_checkpoint, peer, head)
        st.checkpoint, st.head, st.repair_due = head, head, True
        st.wake.set()

    # -- serving (sender role) ---------------------------------------------------------

    async def serve_sync(self, fs: FramedStream, rec: PeerRecord) -> None:
        """Inbound /gd/sync: a pull conversation, or a hint."""
        peer = rec.peer_id
        st = self.state(peer)
        msg = await fs.receive()
        if isinstance(msg, SyncHint):
            await self._on_hint(fs, peer, st, msg)
            return
        view = self.sender_view(peer)
        sender = SyncSender(peer, view.read_feed, self._feed_policy(view))
        while True:
            if not isinstance(msg, SyncPull):
                raise RemoteProtocolError(f"expected gd.sync.pull, got {msg.TYPE}")
            try:
                data, packed, n, payload, head = await trio.to_thread.run_sync(
                    self._answer, sender, msg.request, msg.zstd and self.settings.compress)
            except SyncProtocolError as exc:
                raise RemoteProtocolError(f"bad sync request: {exc}") from None
            reply = SyncBatch(batch=data, zstd=packed, head=head)
            await fs.send(reply)
            if n:
                await trio.to_thread.run_sync(view.finish_batch)
            wire = _frame_len(reply)
            st.served.genes += n
            st.served.payload += payload
            st.served.wire += wire
            self.metrics.sync_genes.labels(direction="out").inc(n)
            self.metrics.sync_bytes.labels(direction="out", kind="payload").inc(payload)
            self.metrics.sync_bytes.labels(direction="out", kind="wire").inc(wire)
            msg = await fs.receive()  # StreamGone when the puller is done

    def _answer(self, sender: SyncSender, request: bytes, zstd: bool
                ) -> tuple[bytes, bool, int, int, int]:
        """Worker thread: read the feed, filter, encode, compress. Returns (data,
        compressed, genes, payload bytes, feed head). The head is read after the batch,
        so an honest batch never ends beyond it."""
        batch = sender.batch(ChangesRequest.decode(request))
        head = self.cortex.last_seq
        raw = batch.encode()
        n = len(batch.genes)
        payload = batch_payload(len(raw), batch.since, batch.upto, batch.more, n) if n else 0
        data, packed = _compress(raw, zstd)
        return data, packed, n, payload, head

    async def _on_hint(self, fs: FramedStream, peer: str, st: PeerSyncState,
                       hint: SyncHint) -> None:
        st.head = max(st.head, min(hint.head, MAX_SEQ))
        self._set_lag(peer, st)
        if not hint.wait:
            if self.settings.auto:
                st.wake.set()
            return
        stats = RoundStats(peer)
        await self._guarded(peer, SYNC_PROTOCOL_ID, self.pull(peer, stats), stats.errors)
        await fs.send(SyncPulled(genes=stats.genes_in, conflicts=stats.conflicts,
                                 rejected=stats.rejected, error="; ".join(stats.errors)[:500]))

    # -- anti-entropy (reconcile) ------------------------------------------------------

    def _items_for(self, peer: str) -> list[Item]:
        """Worker thread: (hlc, version hash) of the heads `peer` may see, in the form it
        would get them, plus the heads `peer` itself authored: it holds those versions
        already (so naming them tells it nothing), and without them every round would
        find "missing" the genes it sent us and we may not send back."""
        view = self.sender_view(peer)
        items: list[Item] = []
        for g in self.cortex.genes():
            out = view.outgoing(g)
            if out is not None:
                items.append((out.hlc, out.version_hash))
            elif g.author == peer:
                items.append((g.hlc, g.version_hash))
        return items

    def _versions_for(self, peer: str, hashes: Sequence[bytes], zstd: bool
                      ) -> tuple[bytes, bool]:
        """Worker thread: the requested versions we hold and may share, encoded (in the
        form the view gives them; the view hears what went, via `finish_batch`)."""
        view = self.sender_view(peer)
        wanted = list(dict.fromkeys(hashes))
        found: dict[bytes, Gene] = {}
        for h in wanted:
            gene = self.cortex.get_by_version_hash(h)
            if gene is not None:
                head = self.cortex.get_gene(gene.id)
                # The policy sees the gene's local status (revoked, retired...).
                if head is not None and head.version_hash == h:
                    gene = head
                out = view.outgoing(gene)
                if out is not None and out.version_hash == h:
                    found[h] = out
        if len(found) < len(wanted):
            # Derived forms (anonymised, re-scoped) exist only per receiver: find them
            # by deriving the heads' forms for this peer.
            missing = set(wanted) - set(found)
            for g in self.cortex.genes():
                out = view.outgoing(g)
                if out is not None and out.version_hash in missing:
                    found[out.version_hash] = out
        genes = [found[h] for h in wanted if h in found]
        view.finish_batch(genes)
        return _compress(canonical.encode_plain([g.to_wire() for g in genes]),
                         zstd and self.settings.compress)

    async def reconcile(self, peer: str, stats: RoundStats | None = None) -> RoundStats:
        """Initiate one anti-entropy round with `peer`; fetch the versions we lack."""
        stats = stats or RoundStats(peer)
        st = self.state(peer)
        async with st.repair_lock:
            items = await trio.to_thread.run_sync(self._items_for, peer)
            rec = await trio.to_thread.run_sync(Reconciler.initiator, items)
            counted = RoundStats(peer)
            fs = await self._open(peer, RECONCILE_PROTOCOL_ID, counted,
                                  read_timeout_s=REPAIR_READ_TIMEOUT_S)
            try:
                msg: bytes | None = rec.initiate()
                while msg is not None:
                    reply = await fs.request(ReconcileStep(msg))
                    stats.repair_round_trips += 1
                    if not isinstance(reply, ReconcileStep):
                        raise RemoteProtocolError(f"expected gd.reconcile.step, got "
                                                  f"{reply.TYPE}")
                    try:
                        msg = rec.receive(reply.data)
                    except ReconcileProtocolError as exc:
                        raise RemoteProtocolError(f"bad reconcile message: {exc}") from None
                need = sorted(rec.need)
                for i in range(0, len(need), MAX_FETCH_HASHES):
                    await self._fetch(fs, peer, need[i:i + MAX_FETCH_HASHES], stats)
                    stats.repair_round_trips += 1
                await fs.send(ReconcileEnd(you_lack=len(rec.have)))
            finally:
                await fs.close()
                stats.repair_wire += counted.wire_in + counted.wire_out
        self.metrics.sync_rounds.labels(kind=RECONCILE_PROTOCOL_ID, outcome="ok").inc()
        self.log.info("sync.reconciled", peer=peer, need=len(rec.need), have=len(rec.have),
                      round_trips=stats.repair_round_trips, bytes=stats.repair_wire)
        return stats

    async def _fetch(self, fs: FramedStream, peer: str, hashes: list[bytes],
                     stats: RoundStats) -> None:
        reply = await fs.request(FetchVersions(tuple(hashes), zstd=self.settings.compress))
        if not isinstance(reply, Versions):
            raise RemoteProtocolError(f"expected gd.reconcile.versions, got {reply.TYPE}")
        raw = _decompress(reply.genes, reply.zstd)
        try:
            wires = canonical.decode(raw)
        except DecodeError as exc:
            raise RemoteProtocolError(f"bad versions list: {exc}") from None
        if not isinstance(wires, list) or len(wires) > len(hashes) or not all(
                isinstance(w, dict) for w in wires):
            raise RemoteProtocolError("versions must be a list of at most as many genes as "
                                      "were asked for")
        asked = set(hashes)
        view = self.receiver_view(peer)
        good, rejected = await trio.to_thread.run_sync(
            lambda: verify_genes(wires, view.accept, check=self.verify_pool))
        unasked = [g for g in good if g.version_hash not in asked]
        if unasked:
            raise RemoteProtocolError(f"sent version {unasked[0].version_hash.hex()[:16]} "
                                      "that was not asked for")

        def apply() -> ApplyStats:
            stats = self.store.apply_batch(peer, good, None)
            view.finish_batch(stats.refused)
            return stats

        applied = await trio.to_thread.run_sync(apply)
        stats.repaired += applied.applied
        stats.genes_in += applied.applied
        stats.conflicts += applied.queued
        stats.rejected += len(rejected) + len(applied.refused)
        stats.payload_in += sum(len(g.wire_bytes) for g in good)
        self.metrics.sync_genes.labels(direction="in").inc(applied.applied)
        self.metrics.sync_conflicts.inc(applied.queued)
        self.metrics.sync_rejected.inc(len(rejected) + len(applied.refused))
        for bad in (*rejected, *applied.refused):
            self.log.warning("sync.rejected", peer=peer, gene=bad.gene_id, reason=bad.reason)

    async def serve_reconcile(self, fs: FramedStream, rec: PeerRecord) -> None:
        """Inbound /gd/reconcile: answer steps, serve fetches, note the end."""
        peer = rec.peer_id
        responder: Reconciler | None = None
        while True:
            msg = await fs.receive()  # StreamGone when the initiator is done
            if isinstance(msg, ReconcileStep):
                if responder is None:
                    items = await trio.to_thread.run_sync(self._items_for, peer)
                    responder = await trio.to_thread.run_sync(Reconciler.responder, items)
                try:
                    reply = await trio.to_thread.run_sync(responder.receive, msg.data)
                except ReconcileProtocolError as exc:
                    raise RemoteProtocolError(f"bad reconcile message: {exc}") from None
                assert reply is not None  # a responder always answers
                await fs.send(ReconcileStep(reply))
            elif isinstance(msg, FetchVersions):
                data, packed = await trio.to_thread.run_sync(
                    self._versions_for, peer, msg.hashes, msg.zstd)
                await fs.send(Versions(genes=data, zstd=packed))
            elif isinstance(msg, ReconcileEnd):
                if msg.you_lack and self.settings.auto:
                    st = self.state(peer)
                    st.repair_due = True
                    st.wake.set()
            else:
                raise RemoteProtocolError(f"unexpected {msg.TYPE} on {RECONCILE_PROTOCOL_ID}")

    # -- on demand ---------------------------------------------------------------------

    async def sync_round(self, peer: str, *, repair: bool = False) -> RoundStats:
        """Pull from `peer`, have it pull from us (and wait), optionally reconcile."""
        stats = RoundStats(peer)
        st = self.state(peer)
        before = ServedCounters(**asdict(st.served))

        async def pull_in() -> None:
            await self._guarded(peer, SYNC_PROTOCOL_ID, self.pull(peer, stats), stats.errors)

        async def push_out() -> None:
            async def ask() -> None:
                fs = await self._open(peer, SYNC_PROTOCOL_ID, None,
                                      read_timeout_s=ROUND_TIMEOUT_S)
                try:
                    head = await trio.to_thread.run_sync(lambda: self.cortex.last_seq)
                    reply = await fs.request(SyncHint(head=head, wait=True))
                finally:
                    await fs.close()
                if not isinstance(reply, SyncPulled):
                    raise RemoteProtocolError(f"expected gd.sync.pulled, got {reply.TYPE}")
                if reply.error:
                    stats.errors.append(f"peer pulling from us: {reply.error}")

            await self._guarded(peer, SYNC_PROTOCOL_ID, ask(), stats.errors)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pull_in)
            nursery.start_soon(push_out)
        if repair:
            await self._guarded(peer, RECONCILE_PROTOCOL_ID, self.reconcile(peer, stats),
                                stats.errors)
        stats.genes_out = st.served.genes - before.genes
        stats.payload_out = st.served.payload - before.payload
        stats.wire_out += st.served.wire - before.wire
        return stats

    async def sync_now(self, peer: str | None = None, *, repair: bool = False
                       ) -> list[RoundStats]:
        connected = [r.peer_id for r in self.daemon.table.connected()]
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

    async def _control_sync_now(self, peer: str | None = None, repair: bool = False
                                ) -> dict[str, Any]:
        rounds = [r.to_plain() for r in await self.sync_now(peer, repair=repair)]
        keys = ("genes_in", "genes_out", "payload_in", "wire_in", "payload_out", "wire_out",
                "overhead_in", "overhead_out", "conflicts", "rejected", "repaired")
        totals = {k: sum(r[k] for r in rounds) for k in keys}
        return {"peers": rounds, "totals": totals}

    async def _control_resolve(self, key: str, keep: str,
                               content: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resolve a queued conflict inside the daemon (its store stays consistent)."""
        def run() -> Gene:
            return resolve_conflict(self.store, self.daemon.key, key, keep, content)

        try:
            gene = await trio.to_thread.run_sync(run)
        except ValidationError as exc:
            raise ValueError(str(exc)) from None
        self.notify_local_change()
        return {"gene_id": gene.id, "version": gene.version,
                "version_hash": gene.version_hash.hex(), "vv": dict(gene.vv)}
