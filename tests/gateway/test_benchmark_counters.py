"""The gateway benchmark's reading of a worker's Prometheus text (benchmarks/gateway.py): Queries
per batch, the share of answered Queries whose time in the gateway's handler exceeded the
paced phase's 20 ms goal, and the garbage collections longer than 5 ms. Fed with the text the
gateway's own metrics registry writes."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from prometheus_client import generate_latest

from gateway.server import metrics as metrics_module
from gateway.server.metrics import GatewayMetrics


def _benchmark() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gateway.py"
    spec = importlib.util.spec_from_file_location("dsgw_benchmark_gateway", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _benchmark()


def _text(m: GatewayMetrics) -> str:
    return generate_latest(m.registry).decode()


def test_the_bound_is_a_bucket_of_the_latency_histogram() -> None:
    # otherwise no bucket would hold the Queries within it and every Query would count as over
    assert bench.HANDLER_BOUND_S in metrics_module._BUCKETS


def test_counts_answered_queries_within_the_bound_and_batches() -> None:
    m = GatewayMetrics(worker=0)
    before = bench.gateway_counters(_text(m))
    assert before == dict.fromkeys(bench._COUNTERS, 0.0)
    for seconds in (0.001, 0.015, 0.02, 0.03, 0.2):
        m.observe("Query", "OK", seconds)
    m.observe("Query", "PERMISSION_DENIED", 0.5)  # refusals are not answered Queries
    m.observe("Verify", "OK", 0.5)  # nor other methods
    m.query_batch(4)
    m.query_batch(8)
    after = bench.gateway_counters(_text(m))
    assert after == {
        "batch_sum": 12.0,
        "batch_count": 2.0,
        "queries": 5.0,
        "queries_within_bound": 3.0,
        "gc_pauses": 0.0,
        "gc_pauses_within_bound": 0.0,
        "batch_wait_s": 0.0,
        "loop_busy": 0.0,
        "load_gauges": 0.0,
    }
    assert bench.batch_mean(before, after) == 6.0
    assert bench.handler_over_bound(before, after) == pytest.approx(0.4)


def test_with_method_verify_counts_answered_verifies_instead() -> None:
    m = GatewayMetrics(worker=0)
    before = bench.gateway_counters(_text(m), "Verify")
    for seconds in (0.001, 0.03):
        m.observe("Verify", "OK", seconds)
    m.observe("Query", "OK", 0.5)  # not the benchmarked method
    m.observe("Verify", "PERMISSION_DENIED", 0.5)  # a refusal is not an answer
    after = bench.gateway_counters(_text(m), "Verify")
    assert (after["queries"], after["queries_within_bound"]) == (2.0, 1.0)
    assert bench.handler_over_bound(before, after) == pytest.approx(0.5)
    assert bench.gateway_counters(_text(m))["queries"] == 1.0  # Query by default


def test_shares_are_between_two_scrapes_and_summed_over_workers() -> None:
    first, second = GatewayMetrics(worker=0), GatewayMetrics(worker=1)
    first.observe("Query", "OK", 0.5)  # before the phase: not counted
    before = bench.gateway_counters(_text(first))
    first.observe("Query", "OK", 0.001)
    second.observe("Query", "OK", 0.001)
    second.observe("Query", "OK", 0.05)
    second.observe("Query", "OK", 0.06)
    after = bench.gateway_counters(_text(first) + _text(second))  # as scrape joins the workers'
    assert bench.handler_over_bound(before, after) == pytest.approx(0.5)
    assert bench.batch_mean(before, after) is None  # no batch in the phase


def test_nothing_answered_gives_no_share() -> None:
    zero = dict.fromkeys(bench._COUNTERS, 0.0)
    assert bench.handler_over_bound(zero, zero) is None
    assert bench.gateway_counters("# HELP x\nnot a sample line\n") == zero


def test_the_gc_bound_is_a_bucket_of_the_pause_histogram() -> None:
    assert bench.GC_BOUND_S in metrics_module._GC_BUCKETS


def test_counts_garbage_collections_over_the_bound_of_every_generation_and_worker() -> None:
    first, second = GatewayMetrics(worker=0), GatewayMetrics(worker=1)
    first.gc_pause(0, 0.012)  # before the phase: not counted
    before = bench.gateway_counters(_text(first) + _text(second))
    first.gc_pause(0, 0.0002)
    first.gc_pause(0, 0.005)  # at the bound: within
    first.gc_pause(1, 0.0051)
    second.gc_pause(0, 0.0004)
    second.gc_pause(2, 0.04)
    after = bench.gateway_counters(_text(first) + _text(second))
    assert bench.gc_pauses_over_bound(before, after) == (5, 2)
    assert bench.gc_pauses_over_bound(after, after) == (0, 0)


def test_reads_the_batch_wait_and_the_loop_load_averaged_over_workers() -> None:
    first, second, fixed = GatewayMetrics(worker=0), GatewayMetrics(worker=1), GatewayMetrics(worker=2)
    assert bench.batch_wait_now(bench.gateway_counters(_text(fixed))) is None  # no batching: no gauges
    first.watch_batch_wait(lambda: 0.004, lambda: 0.8)
    second.watch_batch_wait(lambda: 0.001, lambda: 0.5)
    assert bench.batch_wait_now(bench.gateway_counters(_text(first))) == (4.0, 0.8)
    both = bench.gateway_counters(_text(first) + _text(second) + _text(fixed))
    assert bench.batch_wait_now(both) == (2.5, 0.65)


# --- the machine's CPU share (/proc/stat) -------------------------------------------------------

_STAT = """cpu  100 5 50 800 20 3 2 10 0 0
cpu0 50 2 25 400 10 1 1 5 0 0
intr 12345
"""


def test_machine_jiffies_counts_all_but_idle_and_iowait() -> None:
    # user nice system idle iowait irq softirq steal (guest is already in user)
    assert bench.machine_jiffies(_STAT) == (100 + 5 + 50 + 3 + 2 + 10, 990)


def test_machine_jiffies_of_an_older_kernel_with_fewer_columns() -> None:
    assert bench.machine_jiffies("cpu  10 0 5 80 5\n") == (15, 100)


def test_machine_jiffies_without_a_cpu_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="no cpu line"):
        bench.machine_jiffies("intr 1\n")


def test_machine_busy_share_between_two_readings() -> None:
    assert bench.machine_busy_share((100, 1000), (250, 1200)) == 0.75
    assert bench.machine_busy_share((100, 1000), (100, 1000)) is None  # no time passed


def test_machine_jiffies_reads_this_machine() -> None:
    busy, total = bench.read_machine()
    assert 0 <= busy <= total and total > 0


def test_calls_per_worker_between_two_scrapes_of_each_worker() -> None:
    first, second = GatewayMetrics(worker=0), GatewayMetrics(worker=1)
    first.observe("Query", "OK", 0.001)  # before the phase: not counted
    before = [bench.gateway_counters(_text(first)), bench.gateway_counters(_text(second))]
    for _ in range(3):
        first.observe("Query", "OK", 0.001)
    second.observe("Query", "OK", 0.05)
    second.observe("Query", "UNAVAILABLE", 0.05)  # not an answered call
    after = [bench.gateway_counters(_text(first)), bench.gateway_counters(_text(second))]
    assert bench.calls_per_worker(before, after) == [3, 1]
    # the workers' counters together read as one scrape of all their endpoints reads them
    assert bench.joined(after) == bench.gateway_counters(_text(first) + _text(second))
    with pytest.raises(ValueError):
        bench.calls_per_worker(before, after[:1])  # a worker's scrape missing
