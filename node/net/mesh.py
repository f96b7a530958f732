"""The regional mesh policy: whom to dial, whom to drop, and when to try again.

Sans-I/O: `MeshPlanner.plan(now, table)` looks at the peer table and returns a `MeshPlan`
(peers to dial, peers to drop, with reasons); node/daemon.py carries it out and reports
back with `dial_started` / `dial_failed` / `connected` / `disconnected`.

The shape (DESIGN.md, Federation): most links stay inside the node's region, where sync
and the ledger's Raft traffic live; a few *bridges* reach other regions so the DHT and
cross-region agreements have a path. Redials back off exponentially with jitter drawn
from a seeded generator, so a testnet replays the same schedule.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from gd.node.net.peers import PeerRecord, PeerTable

# In-region peers: enough that losing a few keeps the region connected and sync has
# choices; few enough that sync fan-out stays cheap (Syncthing and IPFS keep similar
# small working sets; GossipSub's mesh degree D is 6, with D_high 12).
TARGET_REGION_PEERS = 6
MAX_REGION_PEERS = 12
# Bridges to other regions: two keeps a path when one bridge is down.
TARGET_BRIDGES = 2
MAX_BRIDGES = 4
# Redial backoff: 1 s doubling to 5 minutes, +/-20 % jitter so a region's nodes do not
# redial a restarted peer in lockstep.
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 300.0
BACKOFF_JITTER = 0.2
# A peer dropped for misbehaviour is not redialled (and its inbound connections are
# refused) for this long.
BAN_S = 900.0


@dataclass(frozen=True)
class MeshPolicy:
    region: str
    target_region_peers: int = TARGET_REGION_PEERS
    max_region_peers: int = MAX_REGION_PEERS
    target_bridges: int = TARGET_BRIDGES
    max_bridges: int = MAX_BRIDGES
    backoff_base_s: float = BACKOFF_BASE_S
    backoff_max_s: float = BACKOFF_MAX_S
    backoff_jitter: float = BACKOFF_JITTER
    ban_s: float = BAN_S

    def __post_init__(self) -> None:
        if not 0 <= self.target_region_peers <= self.max_region_peers:
            raise ValueError("need 0 <= target_region_peers <= max_region_peers")
        if not 0 <= self.target_bridges <= self.max_bridges:
            raise ValueError("need 0 <= target_bridges <= max_bridges")
        if not 0 <= self.backoff_jitter < 1 or self.backoff_base_s <= 0:
            raise ValueError("backoff_jitter must be in [0, 1), backoff_base_s > 0")


@dataclass(frozen=True)
class Drop:
    peer_id: str
    reason: str
    ban: bool


@dataclass(frozen=True)
class MeshPlan:
    dial: tuple[str, ...] = ()
    drop: tuple[Drop, ...] = ()


@dataclass
class _DialState:
    attempts: int = 0
    next_at: float = 0.0
    banned_until: float = 0.0


@dataclass
class MeshPlanner:
    policy: MeshPolicy
    seed: int = 0
    _rng: random.Random = field(init=False)
    _dial: dict[str, _DialState] = field(init=False, default_factory=dict)
    _in_flight: set[str] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    # ---- events from the daemon ------------------------------------------------------

    def backoff_s(self, attempts: int) -> float:
        """Delay before attempt `attempts + 1`: exponential, capped, jittered (seeded)."""
        base = min(self.policy.backoff_max_s, self.policy.backoff_base_s * 2 ** attempts)
        jitter = self.policy.backoff_jitter
        return base * (1 + self._rng.uniform(-jitter, jitter))

    def dial_started(self, peer_id: str) -> None:
        self._in_flight.add(peer_id)

    def dial_failed(self, peer_id: str, now: float) -> float:
        """Returns when the next attempt may happen."""
        self._in_flight.discard(peer_id)
        st = self._dial.setdefault(peer_id, _DialState())
        st.next_at = now + self.backoff_s(st.attempts)
        st.attempts += 1
        return st.next_at

    def connected(self, peer_id: str) -> None:
        self._in_flight.discard(peer_id)
        st = self._dial.setdefault(peer_id, _DialState())
        st.attempts, st.next_at = 0, 0.0

    def disconnected(self, peer_id: str, now: float) -> None:
        """A live connection ended: try again soon, but not in a tight loop."""
        self._in_flight.discard(peer_id)
        st = self._dial.setdefault(peer_id, _DialState())
        st.next_at = max(st.next_at, now + self.backoff_s(st.attempts))
        st.attempts += 1

    def ban(self, peer_id: str, now: float) -> None:
        self._dial.setdefault(peer_id, _DialState()).banned_until = now + self.policy.ban_s

    def is_banned(self, peer_id: str, now: float) -> bool:
        st = self._dial.get(peer_id)
        return st is not None and st.banned_until > now

    def next_attempt_at(self, peer_id: str) -> float:
        st = self._dial.get(peer_id)
        return 0.0 if st is None else max(st.next_at, st.banned_until)

    # ---- the plan --------------------------------------------------------------------

    def _dialable(self, rec: PeerRecord, now: float) -> bool:
        return (not rec.connected and rec.peer_id not in self._in_flight and bool(rec.addrs)
                and self.next_attempt_at(rec.peer_id) <= now)

    def _rank(self, rec: PeerRecord, now: float) -> tuple[float, float, str]:
        # Best first: high score, then low latency, then a stable order.
        latency = rec.score.latency_ms if rec.score.latency_ms is not None else 1e9
        return (-rec.score.value(now), latency, rec.peer_id)

    def plan(self, now: float, table: PeerTable) -> MeshPlan:
        region = self.policy.region
        drops: list[Drop] = []
        live = table.connected()
        for rec in live:
            if rec.score.should_drop(now):
                drops.append(Drop(rec.peer_id, f"score {rec.score.value(now):.1f}", ban=True))
        dropped = {d.peer_id for d in drops}
        live = [r for r in live if r.peer_id not in dropped]
        local = sorted((r for r in live if r.region == region), key=lambda r: self._rank(r, now))
        remote = sorted((r for r in live if r.region != region), key=lambda r: self._rank(r, now))
        for rec in local[self.policy.max_region_peers:]:
            drops.append(Drop(rec.peer_id, "over the in-region peer limit", ban=False))
        for rec in remote[self.policy.max_bridges:]:
            drops.append(Drop(rec.peer_id, "over the bridge limit", ban=False))

        in_flight = [table.get(p) for p in self._in_flight]
        pending_local = sum(1 for r in in_flight if r is not None and r.region == region)
        pending_remote = len(in_flight) - pending_local
        want_local = self.policy.target_region_peers - len(local) - pending_local
        want_remote = self.policy.target_bridges - len(remote) - pending_remote

        candidates = sorted((r for r in table.all() if self._dialable(r, now)
                             and not self.is_banned(r.peer_id, now)),
                            key=lambda r: self._rank(r, now))
        dial: list[str] = []
        # Unknown region (a hint without one): dial it to learn its region via handshake,
        # counted against the in-region budget since that is what we are short of.
        for rec in candidates:
            if want_local > 0 and rec.region in (region, None):
                dial.append(rec.peer_id)
                want_local -= 1
        bridged = {r.region for r in remote}
        for prefer_new_region in (True, False):
            for rec in candidates:
                if want_remote <= 0 or rec.peer_id in dial or rec.region in (region, None):
                    continue
                if prefer_new_region and rec.region in bridged:
                    continue
                dial.append(rec.peer_id)
                bridged.add(rec.region)
                want_remote -= 1
        return MeshPlan(dial=tuple(dial), drop=tuple(drops))
