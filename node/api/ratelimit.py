"""Per-credential rate limits: one token bucket per token id (or per client address for
requests without credentials, so a flood of bad tokens is limited too).

A bucket holds `burst` requests and refills at `rate` per second; a request finding it
empty is answered 429 with `Retry-After` (RFC 9110 §10.2.3, whole seconds, rounded up)
and costs nothing else. The clock is injected so tests drive it without sleeping.
Buckets are kept for at most MAX_BUCKETS credentials; past that the fullest (idlest)
ones are forgotten first, which only ever errs toward letting a request through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from gd.crdt.clock import Clock
from gd.node.clock import SYSTEM_CLOCK

# Tokens plus client addresses seen recently; a bucket is 3 floats, so this is < 1 MiB.
MAX_BUCKETS: Final = 10_000


@dataclass
class _Bucket:
    level: float
    stamp: float


class RateLimiter:
    """`check(key)` → 0.0 when allowed, else the seconds until one request is."""

    def __init__(self, rate_per_s: float, burst: int,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s and burst must be positive")
        self.rate = float(rate_per_s)
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def check(self, key: str) -> float:
        now = self.clock.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._evict(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            bucket.level = min(self.burst, bucket.level + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        if bucket.level >= 1.0:
            bucket.level -= 1.0
            return 0.0
        return (1.0 - bucket.level) / self.rate

    def _evict(self, now: float) -> None:
        def level(b: _Bucket) -> float:
            return min(self.burst, b.level + (now - b.stamp) * self.rate)
        ranked = sorted(self._buckets, key=lambda k: level(self._buckets[k]), reverse=True)
        for key in ranked[: max(1, len(ranked) // 10)]:
            del self._buckets[key]


def retry_after_header(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))
