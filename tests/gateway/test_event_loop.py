"""``server.event_loop``: a worker runs on uvloop by default, on asyncio's loop when asked, and
on asyncio's loop with a warning where uvloop is not installed."""

from __future__ import annotations

import asyncio
import sys

import pytest
import structlog

from gateway.server.app import new_event_loop, run_loop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_a_worker_runs_on_uvloop_by_default() -> None:
    assert run_loop(_loop_module(), "uvloop") == "uvloop"


def test_a_worker_runs_on_asyncio_when_asked() -> None:
    assert run_loop(_loop_module(), "asyncio") == "asyncio"


def test_without_uvloop_a_worker_runs_on_asyncio_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    with structlog.testing.capture_logs() as logs:
        assert run_loop(_loop_module(), "uvloop") == "asyncio"
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["serve.event_loop"]
    assert "uvloop is not installed" in logs[0]["detail"]


def test_new_event_loop_gives_a_fresh_loop_each_time() -> None:
    a, b = new_event_loop("uvloop"), new_event_loop("uvloop")
    try:
        assert a is not b and not a.is_closed()
    finally:
        a.close()
        b.close()
