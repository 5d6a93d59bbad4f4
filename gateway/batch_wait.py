"""How long a batch of Queries waits for more calls, by how busy the worker's event loop is.

A batch's wait (``server.query_batch_wait_ms``) spreads its fixed cost (one consent-store read,
one provider transaction and query) over more calls. That pays only while the event loop is
busy: on a quiet worker it is latency for nothing. With a few concurrent callers the loss was
large: two closed-loop callers got fewer answers per second than one (408 against 516/s, p50 4.6
against 1.9 ms), since each call waited for a partner that was itself still being answered.

So the wait follows the loop's load (``server.query_batch_adaptive``, on by default):
:func:`wait_for_load` gives none while the loop's thread is busy at most :data:`LOW` of the
time, the whole configured wait from :data:`HIGH` on, and a share in between;
:class:`AdaptiveWait` measures that share over windows of :data:`WINDOW_S` and moves the wait
towards its target smoothly (:func:`smoothed`: quickly up, :data:`TAU_UP_S`, slowly down,
:data:`TAU_DOWN_S`). Without the smoothing the two would chase each other: a shorter wait
means smaller batches, which cost the loop more per call, which asks for a longer wait.

Busy means on a CPU or waiting in the kernel's run queue for one (:func:`demand_clock`). With
two workers and the callers sharing two cores, each loop thread was on a CPU only about 60 % of
the time at the peak, the rest of its demand queued behind the others: counted by its CPU time
alone, the wait shrank when CPU was scarcest: batches of 3.3 calls at the peak against 7.4
with the fixed wait, and 2,354-2,517 Queries/s against 2,929.

Everything here is plain arithmetic except the clock (:func:`demand_clock`, or one a test gives).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = [
    "HIGH",
    "LOW",
    "SETTLE",
    "TAU_DOWN_S",
    "TAU_UP_S",
    "WINDOW_S",
    "AdaptiveWait",
    "demand_clock",
    "smoothed",
    "wait_for_load",
]

LOW = 0.45
"""Up to this share of the time busy (on a CPU or queued for one), the event loop's batches do
not wait."""
HIGH = 0.6
"""From this share on, they wait the whole configured time. A worker at 70 % of its peak Query
rate has its loop 64-94 % busy: it keeps the whole wait, whose larger batches cost the loop less
per call, and so its latency tail under load is not traded for the quiet worker's gain."""
SETTLE = 0.02
"""A wait this close to its target (as a share of the whole wait) takes the target exactly. The
smoothing alone never reaches it, and on uvloop, whose timers count whole milliseconds, a wait
a hair under 4 ms is a 3 ms timer: without this the peak's batches were a quarter smaller
than with the fixed wait (12 against 17 calls)."""
WINDOW_S = 0.1
"""The loop's load is measured over windows of at least this long (loop time, seconds)."""
TAU_UP_S = 0.1
"""Time constant of the wait's rise towards a longer target (seconds): under a sudden load the
wait is back to the whole of it (within :data:`SETTLE`) in about 0.4 s, so a burst after a
quiet spell is not answered unbatched for long."""
TAU_DOWN_S = 0.3
"""Time constant of its fall towards a shorter one: a moment's lull does not undo the batching
of a loaded worker."""


def wait_for_load(busy: float, most: float, low: float = LOW, high: float = HIGH) -> float:
    """The wait (seconds) a batch should have when its event loop is ``busy`` (0-1, the share
    of time its thread was busy): none up to ``low``, ``most`` from ``high``, linear in
    between."""
    if not low < high:
        raise ValueError("low must be below high")
    if most <= 0 or busy <= low:
        return 0.0
    if busy >= high:
        return most
    return most * (busy - low) / (high - low)


def smoothed(current: float, target: float, elapsed: float, tau: float = TAU_DOWN_S) -> float:
    """``current`` moved towards ``target`` after ``elapsed`` seconds (first-order lag with time
    constant ``tau``; a long quiet spell moves it all the way)."""
    if elapsed <= 0:
        return current
    if tau <= 0:
        return target
    return target + (current - target) * math.exp(-elapsed / tau)


def demand_clock() -> Callable[[], float]:
    """A clock of the calling thread's demand for a CPU, in seconds: its time on one plus its
    time waiting in the run queue for one (Linux ``/proc/.../schedstat``, read afresh each time:
    a few microseconds, once a window). Where the kernel does not tell, the thread's CPU time
    alone (:func:`time.thread_time`, which only a thread itself can read)."""
    path = f"/proc/self/task/{threading.get_native_id()}/schedstat"

    def read() -> float:
        with open(path, "rb", buffering=0) as f:
            on_cpu, queued = f.read(128).split()[:2]
        return (int(on_cpu) + int(queued)) / 1e9

    try:
        read()
    except (OSError, ValueError):
        return time.thread_time
    return read


class AdaptiveWait:
    """The batch wait of one event loop, following that loop's load (or fixed at ``most`` when
    ``follow`` is off: the load is still measured, for the metrics).

    :meth:`observe` is called from the loop's thread with the loop's time (on every call that
    may join a batch: it measures only once a window has passed); :attr:`wait` is the wait now,
    :attr:`busy` the last window's load. ``cpu`` is the loop thread's busy clock: by default
    :func:`demand_clock`, made at the first :meth:`observe` (on the loop's thread); a test gives
    its own."""

    def __init__(
        self,
        most: float,
        *,
        follow: bool = True,
        cpu: Callable[[], float] | None = None,
        window: float = WINDOW_S,
        tau_up: float = TAU_UP_S,
        tau_down: float = TAU_DOWN_S,
    ) -> None:
        if most < 0:
            raise ValueError("the longest wait cannot be negative")
        self.most = most
        self.follow = follow
        #: starts at the whole wait: the configured behaviour until the first window is measured
        self.wait = most
        self.busy = 0.0
        self._cpu = cpu
        self._window = window
        self._tau_up = tau_up
        self._tau_down = tau_down
        self._at = -math.inf
        self._cpu_at = 0.0

    def observe(self, now: float) -> float:
        """The wait at loop time ``now``, re-measured when a window has passed since the last."""
        elapsed = now - self._at
        if elapsed < self._window:
            return self.wait
        if self._cpu is None:
            self._cpu = demand_clock()
        try:
            cpu = self._cpu()
        except (OSError, ValueError):  # the clock failed (/proc gone?): CPU time from now on
            self._cpu, self._at = time.thread_time, -math.inf
            cpu = self._cpu()
        if math.isfinite(self._at):
            self.busy = min(1.0, max(0.0, (cpu - self._cpu_at) / elapsed))
            if self.follow:
                target = wait_for_load(self.busy, self.most)
                tau = self._tau_up if target > self.wait else self._tau_down
                wait = smoothed(self.wait, target, elapsed, tau)
                self.wait = target if abs(wait - target) <= SETTLE * self.most else wait
        self._at, self._cpu_at = now, cpu
        return self.wait
