"""Prometheus metrics (prometheus_client) on a loopback HTTP port: calls by method, caller,
provider and decision; call latency histograms by method; provider circuit state; garbage
collection pauses by generation; the Query batches' wait and the event loop's load. With several
worker processes each serves its own port (the configured port + worker number)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["GatewayMetrics"]

_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_GC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5)
_CIRCUIT = {"closed": 0.0, "half-open": 1.0, "open": 2.0}


def _circuit_value(state: Callable[[], str]) -> Callable[[], float]:
    return lambda: _CIRCUIT.get(state(), 2.0)


class GatewayMetrics:
    def __init__(self, worker: int = 0) -> None:
        self.registry = CollectorRegistry()
        labels = {"worker": str(worker)}
        self.calls = Counter(
            "dsgw_calls",
            "Provider accesses by method, caller, provider and decision/outcome",
            ["method", "caller", "provider", "decision"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dsgw_call_latency_seconds",
            "Gateway latency of RPCs by method and status code",
            ["method", "code"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.rpcs = Counter(
            "dsgw_rpcs", "RPCs by method and status code", ["method", "code"], registry=self.registry
        )
        self.circuit = Gauge(
            "dsgw_provider_circuit_state",
            "Provider circuit breaker state (0 closed, 1 half-open, 2 open)",
            ["provider"],
            registry=self.registry,
        )
        self.batches = Histogram(
            "dsgw_query_batch_size",
            "Queries and Verifies over local sources decided and fetched together",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.gc_pauses = Histogram(
            "dsgw_gc_pause_seconds",
            "Garbage collections in this worker by generation: how long each held the event loop",
            ["generation"],
            buckets=_GC_BUCKETS,
            registry=self.registry,
        )
        self._gc_pauses = [self.gc_pauses.labels(str(g)) for g in range(3)]
        self.info = Gauge("dsgw_worker", "This worker process", list(labels), registry=self.registry)
        self.info.labels(**labels).set(1)
        # label children by label values (a label lookup per call costs more than the update)
        self._calls: dict[tuple[str, str, str, str], Any] = {}
        self._rpcs: dict[tuple[str, str], tuple[Any, Any]] = {}

    def decision(self, method: str, caller: str, provider: str, outcome: str) -> None:
        key = (method, caller, provider, outcome)
        child = self._calls.get(key)
        if child is None:
            child = self._calls[key] = self.calls.labels(*key)
        child.inc()

    def query_batch(self, size: int) -> None:
        self.batches.observe(size)

    def gc_pause(self, generation: int, seconds: float) -> None:
        self._gc_pauses[min(max(generation, 0), 2)].observe(seconds)

    def observe(self, method: str, code: str, seconds: float) -> None:
        key = (method, code)
        children = self._rpcs.get(key)
        if children is None:
            children = self._rpcs[key] = (self.rpcs.labels(*key), self.latency.labels(*key))
        children[0].inc()
        children[1].observe(seconds)

    def watch_circuits(self, states: Mapping[str, Callable[[], str]]) -> None:
        for provider, state in states.items():
            self.circuit.labels(provider).set_function(_circuit_value(state))

    def watch_batch_wait(self, wait: Callable[[], float], busy: Callable[[], float]) -> None:
        """Report the Query batches' wait and the event loop's load (read when scraped; a worker
        that does not batch Queries has neither)."""
        Gauge(
            "dsgw_query_batch_wait_seconds",
            "How long a Query batch waits for more calls now (server.query_batch_adaptive: it "
            "follows the event loop's load)",
            registry=self.registry,
        ).set_function(wait)
        Gauge(
            "dsgw_event_loop_busy_ratio",
            "Share of the last measured window (0.1 s or more) the event loop's thread was busy: "
            "on a CPU or waiting in the run queue for one",
            registry=self.registry,
        ).set_function(busy)

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP endpoint (a daemon thread); returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)
