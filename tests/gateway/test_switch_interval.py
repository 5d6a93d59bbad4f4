"""``server.gil_switch_interval_ms``: a worker sets the interpreter's thread switch interval before
it starts serving; by default Python's own 5 ms (0.5 ms gave the paced load a longer tail,
docs/gateway.md "The interpreter's switch interval")."""

from __future__ import annotations

import sys

import pytest

from gateway.config import ServerSection
from tests.gateway.conftest import run_worker_setup


def _interval_set_by_a_worker(monkeypatch: pytest.MonkeyPatch, server: ServerSection) -> float:
    seen: list[float] = []
    monkeypatch.setattr(sys, "setswitchinterval", seen.append)
    run_worker_setup(monkeypatch, server)
    assert len(seen) == 1
    return seen[0]


def test_the_default_is_pythons_own_interval() -> None:
    assert ServerSection().gil_switch_interval_ms == 5.0


def test_a_worker_runs_with_the_default_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _interval_set_by_a_worker(monkeypatch, ServerSection()) == pytest.approx(0.005)


def test_a_worker_runs_with_the_configured_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    server = ServerSection(gil_switch_interval_ms=0.5)
    assert _interval_set_by_a_worker(monkeypatch, server) == pytest.approx(0.0005)


@pytest.mark.parametrize("bad", [0.0, 0.01, 101.0])
def test_an_interval_out_of_range_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="gil_switch_interval_ms"):
        ServerSection(gil_switch_interval_ms=bad)
