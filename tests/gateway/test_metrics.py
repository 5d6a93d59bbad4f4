"""Prometheus metrics on the loopback port: RPCs by method and code, latency, provider accesses
by caller, provider and decision, circuit state."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from gateway.client import GatewayError
from gateway.devsetup import DevHome
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
