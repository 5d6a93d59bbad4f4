"""The gateway benchmark's settings flags (benchmarks/gateway.py): a value the gateway's
configuration refuses ends the run with one line naming the key and exit status 2, before any
server is started, and leaves no temporary home behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO


@pytest.mark.parametrize(
    ("flag", "value", "key"),
    [
        ("--commit-delay-ms", "60", "audit.commit_delay_ms"),
        ("--gil-switch-interval-ms", "0", "server.gil_switch_interval_ms"),
    ],
)
def test_a_refused_setting_is_one_line_and_exit_2(tmp_path: Path, flag: str, value: str, key: str) -> None:
    small = ["--quick", "--persons", "300", "--employers", "30"]
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gateway.py"), *small, flag, value],
        env={**os.environ, "TMPDIR": str(tmp_path)},  # the run's temporary home
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("gateway.py: error: invalid configuration: ") and key in last
    assert "Traceback" not in run.stderr
    assert list(tmp_path.iterdir()) == []  # the run's home was removed
