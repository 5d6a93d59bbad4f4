"""``server.event_loop``: a worker runs on uvloop by default, on asyncio's loop when asked, and
on asyncio's loop with a warning where uvloop is not installed."""

from __future__ import annotations

import asyncio
import sys

import pytest

from gateway.config import ServerSection
from gateway.server import app
from gateway.server.app import new_event_loop, run_loop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_a_worker_runs_on_uvloop_by_default() -> None:
    pytest.importorskip("uvloop")
    assert run_loop(_loop_module(), ServerSection().event_loop) == "uvloop"


def test_a_worker_runs_on_asyncio_when_asked() -> None:
    assert run_loop(_loop_module(), "asyncio") == "asyncio"


class _Warnings:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, object]]] = []

    def warning(self, event: str, **fields: object) -> None:
        self.seen.append((event, fields))


def test_without_uvloop_a_worker_runs_on_asyncio_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    log = _Warnings()
    monkeypatch.setattr(app, "_log", log)  # the module's logger (structlog may have cached its own)
    assert run_loop(_loop_module(), "uvloop") == "asyncio"
    assert [event for event, _ in log.seen] == ["serve.event_loop"]
    assert "uvloop is not installed" in str(log.seen[0][1]["detail"])


def test_new_event_loop_gives_a_fresh_loop_each_time() -> None:
    pytest.importorskip("uvloop")
    a, b = new_event_loop("uvloop"), new_event_loop("uvloop")
    try:
        assert a is not b and not a.is_closed()
    finally:
        a.close()
        b.close()
