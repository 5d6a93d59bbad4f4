"""Prometheus metrics on the loopback port: RPCs by method and code, latency, provider accesses
by caller, provider and decision, circuit state."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from adapters.agencies import Agency
from gateway.client import GatewayError
from gateway.devsetup import DevHome
from gateway.pipeline.errors import PermissionDenied
from gateway.server.metrics import GatewayMetrics
from gateway.server.servicers import DEV_AGENCY_HEADER, Authenticator, _Base
from tests.gateway.conftest import Subjects, start_gateway


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:  # loopback only
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_metrics_count_calls_and_decisions(dev_home: DevHome, subjects: Subjects, tmp_path: Path) -> None:
    gw = start_gateway(dev_home, tmp_path / "home")
    try:
        client = gw.client("hrss")
        for _ in range(3):
            client.verify(subjects.assisted[0], "employment_assistance", "civil_affairs", "near_subsistence")
        try:
            client.query(subjects.graduates[0][0], "graduate_employment", [("education", "graduation", [])])
        except GatewayError as exc:
            assert exc.reason == "CONSENT_MISSING"
        m = _scrape(gw.background.worker.metrics_port)
    finally:
        gw.stop()
    assert m['dsgw_rpcs_total{code="OK",method="Verify"}'] == 3
    assert m['dsgw_rpcs_total{code="PERMISSION_DENIED",method="Query"}'] == 1
    assert m['dsgw_call_latency_seconds_count{code="OK",method="Verify"}'] == 3
    assert m['dsgw_calls_total{caller="hrss",decision="found",method="verify",provider="civil_affairs"}'] == 3
    assert (
        m['dsgw_calls_total{caller="hrss",decision="consent_missing",method="query",provider="education"}']
        == 1
    )
    assert m['dsgw_provider_circuit_state{provider="civil_affairs"}'] == 0


class _AbortingContext:
    """A servicer context whose abort records what the metrics held when the status left."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics
        self.seen_at_abort: float | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((DEV_AGENCY_HEADER, "hrss"),)

    async def abort_with_status(self, status: object) -> None:
        self.seen_at_abort = self.metrics.registry.get_sample_value(
            "dsgw_rpcs_total", {"method": "Query", "code": "PERMISSION_DENIED"}
        )
        raise grpc.aio.AbortError()


def test_a_refusal_is_counted_before_its_status_is_sent() -> None:
    # a caller that has its refusal and then scrapes must find it counted (the count used to be
    # taken after the abort had sent the status, which raced with the scrape)
    metrics = GatewayMetrics()
    base = _Base(Authenticator(None, None, dev_plaintext=True), metrics)
    context = _AbortingContext(metrics)

    async def refuse(_caller: Agency) -> None:
        raise PermissionDenied("CONSENT_MISSING", "no consent")

    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(base._run("Query", context, "p", "r", refuse))  # type: ignore[arg-type]
    assert context.seen_at_abort == 1
    assert (
        metrics.registry.get_sample_value("dsgw_rpcs_total", {"method": "Query", "code": "PERMISSION_DENIED"})
        == 1
    )


def test_a_worker_collects_its_young_generation_and_reports_the_pauses(
    dev_home: DevHome, tmp_path: Path
) -> None:
    gw = start_gateway(dev_home, tmp_path / "home", server={"gc_young_every_ms": 10})
    try:
        port = gw.background.worker.metrics_port
        key = 'dsgw_gc_pause_seconds_count{generation="0"}'
        deadline = time.monotonic() + 10
        while _scrape(port).get(key, 0) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        m = _scrape(port)
    finally:
        gw.stop()
    # an idle worker reaches the interpreter's young threshold (20,000) seldom: these are its own
    assert m[key] >= 20
    assert m['dsgw_gc_pause_seconds_bucket{generation="0",le="0.005"}'] >= 1
