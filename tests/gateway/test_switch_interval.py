"""``server.gil_switch_interval_ms``: a worker sets the interpreter's thread switch interval before
it starts serving; by default Python's own 5 ms (0.5 ms gave the paced load a longer tail,
docs/gateway.md "The interpreter's switch interval")."""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.config import ServerSection
from gateway.server import app


class _Stop(Exception):
    """Raised by the fake worker's start: the worker function got as far as starting it."""


class _FakeWorker:
    def __init__(self, config: Any, worker: int) -> None:
        pass

    async def start(self) -> int:
        raise _Stop

    async def stop(self, grace: float | None = None) -> None:
        pass


def _interval_set_by_a_worker(monkeypatch: pytest.MonkeyPatch, server: ServerSection) -> float:
    seen: list[float] = []
    monkeypatch.setattr(sys, "setswitchinterval", seen.append)
    monkeypatch.setattr(app, "Worker", _FakeWorker)
    with pytest.raises(_Stop):
        app.run_loop(app._run_worker(SimpleNamespace(server=server), 0), "asyncio")  # type: ignore[arg-type]
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
