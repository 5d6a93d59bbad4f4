"""``dsgw serve`` as a child process (the demo and the benchmarks run the gateway as its own
process, as in production): start it, wait until every worker listens, learn the port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from gateway.errors import CheckFailed

__all__ = ["GatewayDidNotStart", "start_serve_process"]


class GatewayDidNotStart(CheckFailed):
    """The gateway process exited or did not listen in time; the message names its log."""

    reason = "GATEWAY_DID_NOT_START"


def start_serve_process(
    config: Path,
    *,
    ready: Path,
    log: Path,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 60.0,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``python -m gateway serve --config CONFIG --ready-file READY`` with its output
    appended to ``log``; returns the process and its port once ``ready`` says every worker
    listens. :class:`GatewayDidNotStart` otherwise (the process is killed)."""
    ready.unlink(missing_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--ready-file", str(ready)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
    deadline = time.monotonic() + timeout_s
    while not ready.exists():
        if proc.poll() is not None:
            raise GatewayDidNotStart(f"the gateway did not start (exit {proc.returncode}); see {log}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise GatewayDidNotStart(f"the gateway did not start within {timeout_s:g} s; see {log}")
        time.sleep(0.05)
    return proc, int(json.loads(ready.read_text())["port"])
