"""Rate limits of the agreements: one token bucket per (caller, agreement) in each server
process. Pure over an injected clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.pipeline.errors import RateLimited

__all__ = ["RateLimiter"]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """``take(key, rate, burst)``: RESOURCE_EXHAUSTED (with the wait until a token is back) once
    ``key`` spends more than ``rate`` per second beyond a burst of ``burst`` (0: one second's
    worth). A rate of 0 is unlimited."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, rate: float, burst: int = 0) -> None:
        if rate <= 0:
            return
        capacity = float(burst) if burst > 0 else max(rate, 1.0)
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(capacity, now)
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            wait = (1.0 - bucket.tokens) / rate
            raise RateLimited(
                "RATE_LIMITED", f"rate limit of {rate:g} calls/s reached for {key}", retry_after_s=wait
            )
        bucket.tokens -= 1.0
