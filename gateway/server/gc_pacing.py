"""Short garbage collections on a worker's event loop.

grpc.aio leaves a few objects in reference cycles behind every call (the closure of its method
lookup), which only the cycle collector frees. With the worker's young-generation threshold
(20,000, set at start), a collection came every 3,000-4,000 calls and held the event loop for
6-17 ms while it freed them: a stall that a loaded worker then takes a few hundred milliseconds
to catch up on. A worker therefore collects its young generation itself, every
``server.gc_young_every_ms`` (50 ms by default): each collection finds the garbage of a few
dozen calls and takes a fraction of a millisecond; every :data:`OLDER_EVERY`-th one collects the
middle generation too (the survivors of the young ones: calls in flight at the time, most gone
since). The full collections stay with the interpreter's thresholds; the worker froze its
start-up objects, so they are rare.

:class:`PauseObserver` reports every collection's duration (``dsgw_gc_pause_seconds``), so what
the collector costs the event loop shows in the metrics.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

__all__ = ["OLDER_EVERY", "PauseObserver", "collect_young", "generation_due"]

OLDER_EVERY = 40
"""Every this many young collections, one of the middle generation instead (2 s at 50 ms)."""


def generation_due(tick: int, older_every: int = OLDER_EVERY) -> int:
    """The generation to collect at ``tick`` (1, 2, ...): the middle one (1) every
    ``older_every`` ticks, else the young one (0)."""
    if tick < 1 or older_every < 1:
        raise ValueError("tick and older_every count from 1")
    return 1 if tick % older_every == 0 else 0


async def collect_young(every_s: float, older_every: int = OLDER_EVERY) -> None:
    """Collect the young generation (and, every ``older_every`` times, the middle one) every
    ``every_s`` seconds, on the running event loop, until cancelled."""
    if every_s <= 0:
        raise ValueError("every_s must be positive")
    tick = 0
    while True:
        await asyncio.sleep(every_s)
        tick += 1
        gc.collect(generation_due(tick, older_every))


class PauseObserver:
    """Calls ``observe(generation, seconds)`` after every garbage collection in this process
    (a ``gc.callbacks`` hook; :meth:`close` removes it)."""

    def __init__(self, observe: Callable[[int, float], None]) -> None:
        self._observe = observe
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            self._observe(int(info["generation"]), time.perf_counter() - self._started)
            self._started = 0.0

    def close(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
