"""The Query batches' wait follows the event loop's load (gateway/batch_wait.py): pure parts."""

from __future__ import annotations

import math
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.batch_wait import HIGH, LOW, SETTLE, AdaptiveWait, demand_clock, smoothed, wait_for_load

shares = st.floats(min_value=0.0, max_value=1.0)
waits = st.floats(min_value=0.0, max_value=0.02)


def test_the_wait_for_a_load() -> None:
    assert wait_for_load(0.0, 0.004) == 0.0
    assert wait_for_load(LOW, 0.004) == 0.0
    assert wait_for_load(HIGH, 0.004) == 0.004
    assert wait_for_load(1.0, 0.004) == 0.004
    assert wait_for_load((LOW + HIGH) / 2, 0.004) == pytest.approx(0.002)
    assert wait_for_load(1.0, 0.0) == 0.0
    with pytest.raises(ValueError):
        wait_for_load(0.5, 0.004, low=0.7, high=0.7)


@given(shares, shares, waits)
def test_a_busier_loop_never_waits_less(a: float, b: float, most: float) -> None:
    lo, hi = sorted((a, b))
    assert 0.0 <= wait_for_load(lo, most) <= wait_for_load(hi, most) <= most


@given(waits, waits, st.floats(min_value=0.0, max_value=100.0))
def test_smoothing_never_overshoots(current: float, target: float, t: float) -> None:
    moved = smoothed(current, target, t)
    assert min(current, target) - 1e-15 <= moved <= max(current, target) + 1e-15
    assert abs(smoothed(current, target, t + 0.1) - target) <= abs(moved - target) + 1e-15


def test_smoothing_over_time() -> None:
    assert smoothed(0.004, 0.0, 0.0) == 0.004
    assert smoothed(0.004, 0.0, 0.3, tau=0.3) == pytest.approx(0.004 / math.e)
    assert smoothed(0.004, 0.0, 30.0) == pytest.approx(0.0, abs=1e-15)  # a long quiet spell
    assert smoothed(0.004, 0.001, 0.1, tau=0.0) == 0.001


class _Clocks:
    """A loop clock and a CPU clock that a test moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.cpu = 0.0

    def run(self, seconds: float, busy: float) -> float:
        self.now += seconds
        self.cpu += seconds * busy
        return self.now


def test_a_quiet_loop_stops_waiting_and_a_busy_one_waits_again() -> None:
    clocks = _Clocks()
    w = AdaptiveWait(0.004, cpu=lambda: clocks.cpu)
    assert w.observe(clocks.now) == 0.004  # the configured wait until a window is measured
    for _ in range(20):  # 2 s at 10 % busy
        w.observe(clocks.run(0.1, 0.1))
    assert w.busy == pytest.approx(0.1)
    assert w.wait == 0.0
    for _ in range(20):  # 2 s at 90 % busy
        w.observe(clocks.run(0.1, 0.9))
    assert w.busy == pytest.approx(0.9)
    # exactly the whole wait, not a hair under it (on uvloop that would be a 1 ms shorter timer)
    assert w.wait == 0.004
    for _ in range(40):  # half way between LOW and HIGH: half the wait
        w.observe(clocks.run(0.1, (LOW + HIGH) / 2))
    assert w.wait == pytest.approx(0.002, rel=0.01)


def test_the_wait_settles_on_its_target() -> None:
    clocks = _Clocks()
    w = AdaptiveWait(0.004, cpu=lambda: clocks.cpu)
    w.observe(clocks.now)
    w.observe(clocks.run(0.1, 0.1))  # quiet: on its way down, far from none
    assert 0.002 < w.wait < 0.004
    steps = 0
    while w.wait != 0.0:
        w.observe(clocks.run(0.1, 0.1))
        steps += 1
    assert steps <= 15  # under 2 s
    w.observe(clocks.run(0.1, 1.0))  # a sudden load: back up faster than it came down
    assert 0.0 < w.wait < 0.004 * (1 - SETTLE)
    steps = 1
    while w.wait != 0.004:
        w.observe(clocks.run(0.1, 1.0))
        steps += 1
    assert steps <= 5  # 0.5 s


def test_the_load_is_measured_once_a_window() -> None:
    clocks = _Clocks()
    reads = 0

    def cpu() -> float:
        nonlocal reads
        reads += 1
        return clocks.cpu

    w = AdaptiveWait(0.004, cpu=cpu, window=0.1)
    w.observe(clocks.now)
    for _ in range(99):  # calls every millisecond: no new measurement within the window
        w.observe(clocks.run(0.001, 0.0))
    assert reads == 1 and w.wait == 0.004
    w.observe(clocks.run(0.001, 0.0))
    assert reads == 2 and w.wait < 0.004


def test_a_negative_wait_is_refused() -> None:
    with pytest.raises(ValueError):
        AdaptiveWait(-0.001)


def test_a_fixed_wait_still_measures_the_load() -> None:
    clocks = _Clocks()
    w = AdaptiveWait(0.004, follow=False, cpu=lambda: clocks.cpu)
    w.observe(clocks.now)
    for _ in range(20):
        assert w.observe(clocks.run(0.1, 0.1)) == 0.004
    assert w.busy == pytest.approx(0.1)


def test_the_demand_clock_counts_the_threads_time_on_the_cpu() -> None:
    clock = demand_clock()
    start, cpu = clock(), time.thread_time()
    while time.thread_time() < cpu + 0.05:  # 50 ms on the CPU
        pass
    assert clock() - start >= 0.04


def test_without_schedstat_the_demand_clock_is_the_cpu_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threading, "get_native_id", lambda: 2**31 - 1)  # no such task
    assert demand_clock() is time.thread_time


def test_a_clock_that_fails_gives_way_to_the_cpu_clock() -> None:
    def broken() -> float:
        raise OSError("no /proc")

    w = AdaptiveWait(0.004, cpu=broken)
    assert w.observe(0.0) == 0.004  # a new baseline on the thread's CPU clock, no error
    assert w.observe(0.2) <= 0.004 and 0.0 <= w.busy <= 1.0
