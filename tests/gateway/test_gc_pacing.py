"""A worker collects its young garbage generation itself, in short collections, and reports every
collection's pause (gateway/server/gc_pacing.py)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest

from gateway.server.gc_pacing import OLDER_EVERY, PauseObserver, collect_young, generation_due
from gateway.server.metrics import GatewayMetrics


@given(st.integers(min_value=1, max_value=10_000), st.integers(min_value=1, max_value=500))
def test_the_middle_generation_every_nth_tick_else_the_young(tick: int, every: int) -> None:
    assert generation_due(tick, every) == (1 if tick % every == 0 else 0)


def test_ticks_count_from_one() -> None:
    assert [generation_due(t) for t in range(1, OLDER_EVERY + 1)].count(1) == 1
    with pytest.raises(ValueError):
        generation_due(0)
    with pytest.raises(ValueError):
        generation_due(1, 0)


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    """Only explicit collections in the test (the interpreter's would count as the loop's)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def test_the_loop_collects_young_and_now_and_then_the_middle_generation(no_automatic_gc: None) -> None:
    seen: list[int] = []
    observer = PauseObserver(lambda generation, seconds: seen.append(generation))

    async def run() -> None:
        task = asyncio.get_running_loop().create_task(collect_young(0.005, older_every=3))
        while len(seen) < 6:
            await asyncio.sleep(0.005)
        task.cancel()

    try:
        asyncio.run(asyncio.wait_for(run(), 10))
    finally:
        observer.close()
    assert seen[:6] == [0, 0, 1, 0, 0, 1]


def test_pauses_are_observed_until_closed(no_automatic_gc: None) -> None:
    pauses: list[tuple[int, float]] = []
    observer = PauseObserver(lambda generation, seconds: pauses.append((generation, seconds)))
    gc.collect(0)
    gc.collect(2)
    observer.close()
    gc.collect(0)
    assert [g for g, _ in pauses] == [0, 2]
    assert all(0 <= s < 10 for _, s in pauses)
    observer.close()  # twice: no error


def test_collect_young_refuses_a_period_that_is_not_positive() -> None:
    with pytest.raises(ValueError):
        asyncio.run(collect_young(0))


def test_the_metrics_hold_pauses_by_generation() -> None:
    m = GatewayMetrics(worker=0)
    m.gc_pause(0, 0.0003)
    m.gc_pause(0, 0.007)
    m.gc_pause(2, 0.03)
    text = generate_latest(m.registry).decode()
    assert 'dsgw_gc_pause_seconds_count{generation="0"} 2.0' in text
    assert 'dsgw_gc_pause_seconds_bucket{generation="0",le="0.005"} 1.0' in text
    assert 'dsgw_gc_pause_seconds_count{generation="2"} 1.0' in text
