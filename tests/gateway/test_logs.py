"""Log lines: structlog's own and the standard logging module's (gRPC, asyncio) alike, one JSON
object per line, tracebacks inside it."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from gateway import logs


def test_standard_logging_records_are_json_lines_with_their_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure(json=True, level="INFO")
    logs.configure(json=True, level="INFO")  # configuring again does not double the lines
    logging.getLogger("grpc._cython.cygrpc").warning("handshake %s", "failed")
    try:
        raise asyncio.CancelledError()
    except asyncio.CancelledError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["event"] == "handshake failed" and first["logger"] == "grpc._cython.cygrpc"
    assert first["level"] == "warning" and "timestamp" in first
    assert second["level"] == "error" and "CancelledError" in second["exception"]


def test_each_line_is_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """Message and newline in one write: the lines of two workers sharing stderr never run into
    each other (print() wrote them apart)."""
    import structlog

    writes: list[str] = []

    class Recorder:
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

        def flush(self) -> None:
            pass

    monkeypatch.setattr("sys.stderr", Recorder())
    logs.configure(json=True, level="INFO")
    structlog.get_logger().info("serve.started", port=1)
    logging.getLogger("grpc").warning("a library line")
    assert len(writes) == 2 and all(w.endswith("}\n") and w.count("\n") == 1 for w in writes)
