"""What we know about each peer: the peer table, scores, and per-peer resource budgets.

Sans-I/O: every method takes `now` (seconds, from whichever clock the caller uses), so
the same code runs in the daemon and in deterministic tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gd.protocol.errors import LimitExceeded

__all__ = ["LimitExceeded"]  # defined with the other protocol errors; re-exported here
from gd.protocol.handshake import PeerHello
from gd.protocol.wire import MAX_FRAME_SIZE

# ---- scoring -------------------------------------------------------------------------
# A peer's score starts at 0 and goes negative with trouble; penalties fade with this
# half-life so a peer that had one bad afternoon is not shunned forever.
PENALTY_HALF_LIFE_S = 600.0
# What each kind of trouble costs. A protocol violation (garbage, bad signature, limit
# exceeded) is deliberate or badly broken: five of them within a half-life drop the peer.
# A failed dial or timeout can be the network's fault: it takes twenty.
PROTOCOL_ERROR_PENALTY = 4.0
FAILURE_PENALTY = 1.0
DROP_SCORE = -20.0
# Latency costs one point per 100 ms of smoothed RTT, capped: latency ranks peers but
# never alone drops one (a far region is still worth a bridge).
LATENCY_POINTS_PER_MS = 1 / 100
MAX_LATENCY_PENALTY = 5.0
# Smoothing of RTT samples (TCP's SRTT uses 1/8).
LATENCY_EWMA_ALPHA = 0.125


@dataclass
class PeerScore:
    penalty: float = 0.0
    updated: float = 0.0
    latency_ms: float | None = None
    protocol_errors: int = 0
    failures: int = 0

    def _decayed(self, now: float) -> float:
        if now <= self.updated:
            return self.penalty
        return self.penalty * 0.5 ** ((now - self.updated) / PENALTY_HALF_LIFE_S)

    def _add(self, points: float, now: float) -> None:
        self.penalty = self._decayed(now) + points
        self.updated = max(now, self.updated)

    def protocol_error(self, now: float) -> None:
        self.protocol_errors += 1
        self._add(PROTOCOL_ERROR_PENALTY, now)

    def failure(self, now: float) -> None:
        self.failures += 1
        self._add(FAILURE_PENALTY, now)

    def rtt(self, ms: float) -> None:
        self.latency_ms = ms if self.latency_ms is None else (
            (1 - LATENCY_EWMA_ALPHA) * self.latency_ms + LATENCY_EWMA_ALPHA * ms)

    def value(self, now: float) -> float:
        latency = 0.0 if self.latency_ms is None else min(
            self.latency_ms * LATENCY_POINTS_PER_MS, MAX_LATENCY_PENALTY)
        return -self._decayed(now) - latency

    def should_drop(self, now: float) -> bool:
        return self.value(now) <= DROP_SCORE


# ---- the table -----------------------------------------------------------------------


@dataclass
class PeerRecord:
    """One peer, as `gd-node peers` shows it.

    `org` and `region` are what the peer claims (its own key signs them, which proves
    nothing about an organisation; `region` may even be a bootstrap or DHT hint): fine for
    display and mesh topology, never for authorisation. `certified_org` and
    `certified_region` are set only by a handshake whose certificate an org key we trust
    signed; None (the default) means uncertified, and anything deciding what a peer may
    get reads these."""

    peer_id: str
    region: str | None = None
    org: str | None = None
    certified_org: str | None = None
    certified_region: str | None = None
    addrs: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    ledger_size: int = 0
    ledger_root: bytes = b""
    version: str | None = None
    connected: bool = False
    since: float | None = None  # wall-clock seconds when the current session started
    score: PeerScore = field(default_factory=PeerScore)

    def row(self, now: float) -> dict[str, object]:
        """Plain data for the control socket and `gd-node peers --json`."""
        return {
            "peer_id": self.peer_id, "org": self.org, "region": self.region,
            "certified_org": self.certified_org, "certified_region": self.certified_region,
            "addrs": list(self.addrs), "latency_ms": self.score.latency_ms,
            "score": round(self.score.value(now), 3), "since": self.since,
            "connected": self.connected, "domains": list(self.domains),
            "ledger_size": self.ledger_size, "version": self.version,
        }


class PeerTable:
    """Every peer we have heard of; verified facts come only from handshakes."""

    def __init__(self) -> None:
        self._peers: dict[str, PeerRecord] = {}

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._peers

    def get(self, peer_id: str) -> PeerRecord | None:
        return self._peers.get(peer_id)

    def learn(self, peer_id: str, addrs: tuple[str, ...] = (), region: str | None = None
              ) -> PeerRecord:
        """Record an unverified hint (bootstrap file, DHT). Never overrides a verified region."""
        rec = self._peers.setdefault(peer_id, PeerRecord(peer_id))
        if addrs:
            rec.addrs = tuple(dict.fromkeys(rec.addrs + tuple(addrs)))
        if region and rec.version is None:
            rec.region = region
        return rec

    def verified(self, hello: PeerHello, addrs: tuple[str, ...], now_wall: float) -> PeerRecord:
        """The peer passed the handshake: its claims replace whatever hints we had."""
        rec = self.learn(hello.peer_id, addrs)
        rec.org, rec.region, rec.version = hello.org, hello.region, hello.version
        # Both or neither: a certificate vouches for the pair (a new session without one
        # clears what an earlier session proved).
        rec.certified_org, rec.certified_region = hello.certified_org, hello.certified_region
        rec.domains, rec.capabilities = hello.domains, hello.capabilities
        rec.ledger_size, rec.ledger_root = hello.ledger_size, hello.ledger_root
        rec.connected, rec.since = True, now_wall
        return rec

    def disconnected(self, peer_id: str) -> None:
        rec = self._peers.get(peer_id)
        if rec is not None:
            rec.connected, rec.since = False, None

    def connected(self) -> list[PeerRecord]:
        return [r for r in self._peers.values() if r.connected]

    def all(self) -> list[PeerRecord]:
        return list(self._peers.values())

    def rows(self, now: float, *, connected_only: bool = True) -> list[dict[str, object]]:
        peers = self.connected() if connected_only else self.all()
        return [p.row(now) for p in sorted(peers, key=lambda p: (p.region or "", p.peer_id))]

    def by_region(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for rec in self.connected():
            counts[rec.region or "unknown"] = counts.get(rec.region or "unknown", 0) + 1
        return counts


# ---- per-peer limits -----------------------------------------------------------------


@dataclass(frozen=True)
class PeerLimits:
    """What one peer may cost us. Defaults sized for sync bursts between honest nodes."""

    # Concurrent inbound streams: sync, ledger and handshake need a few each; 32 is ample
    # and bounds the tasks one peer can make us run.
    max_streams: int = 32
    # Per-frame limit on streams from this peer (protocol/wire.py explains the 4 MiB).
    max_frame_size: int = MAX_FRAME_SIZE
    # Sustained inbound bytes per second: a 100k-gene sync (~100 MB) in ~10 s is fine.
    max_bytes_per_s: float = 10 * 1024 * 1024
    # Burst above the rate, e.g. one initial sync batch; two seconds' worth.
    burst_bytes: float = 20 * 1024 * 1024
    # How much throttling (seconds of imposed delay, decaying with THROTTLE_HALF_LIFE_S)
    # we tolerate before deciding the peer is flooding rather than catching up.
    max_throttle_debt_s: float = 5.0

    def __post_init__(self) -> None:
        if self.max_streams < 1 or self.max_bytes_per_s <= 0 or self.burst_bytes <= 0:
            raise ValueError("peer limits must be positive")
        if not 0 < self.max_frame_size <= MAX_FRAME_SIZE:
            raise ValueError(f"max_frame_size must be in 1..{MAX_FRAME_SIZE}")


THROTTLE_HALF_LIFE_S = 10.0


class PeerBudget:
    """A token bucket over a peer's inbound bytes plus a stream count.

    `charge` returns how long the reader should pause (throttling: the peer's yamux
    window fills and its writes block) and raises LimitExceeded once the accumulated
    pause says the peer keeps sending far over its rate (then we disconnect it).
    """

    def __init__(self, limits: PeerLimits, now: float) -> None:
        self.limits = limits
        self._tokens = limits.burst_bytes
        self._at = now
        self._debt = 0.0
        self._debt_at = now
        self.streams = 0
        self.throttled_s = 0.0

    def charge(self, nbytes: int, now: float) -> float:
        lim = self.limits
        elapsed = max(0.0, now - self._at)
        self._tokens = min(lim.burst_bytes, self._tokens + elapsed * lim.max_bytes_per_s)
        self._at = max(now, self._at)
        self._tokens -= nbytes
        if self._tokens >= 0:
            return 0.0
        delay = -self._tokens / lim.max_bytes_per_s
        self._debt = self._debt * 0.5 ** (max(0.0, now - self._debt_at) / THROTTLE_HALF_LIFE_S)
        self._debt += delay
        self._debt_at = max(now, self._debt_at)
        self.throttled_s += delay
        if self._debt > lim.max_throttle_debt_s:
            raise LimitExceeded(
                f"peer sends over {lim.max_bytes_per_s / 1e6:.1f} MB/s for too long "
                f"(throttled {self._debt:.1f} s)")
        return delay

    def open_stream(self) -> None:
        if self.streams >= self.limits.max_streams:
            raise LimitExceeded(f"peer opened more than {self.limits.max_streams} streams")
        self.streams += 1

    def close_stream(self) -> None:
        self.streams = max(0, self.streams - 1)

