"""benchmarks/request_path.py: the gateway's request path in one process, without gRPC. It runs
every step on a real worker and checks each answer; a tiny run here shows that it does, and
that it reports its figures (the figures themselves are for benchmarks, not tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "request_path.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=240, check=False
    )


def test_a_tiny_run_answers_every_call_and_reports_each_level() -> None:
    out = _run("--levels", "1,3", "--calls", "30", "--repeats", "2")
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "request_path"
    assert set(result["levels"]) == {"1", "3"}
    for figures in result["levels"].values():
        assert figures["loop_cpu_ms_per_call"] > 0
        assert figures["process_cpu_ms_per_call"] >= figures["loop_cpu_ms_per_call"] * 0.5
        assert figures["wall_ms_per_call"] > 0
        low, high = figures["spread_loop_cpu_ms"]
        assert low <= figures["loop_cpu_ms_per_call"] <= high
    assert result["levels"]["1"]["batch_mean"] == 1.0  # one caller: each call alone


def test_bad_levels_are_refused_with_one_line() -> None:
    out = _run("--levels", "0,2")
    assert out.returncode == 2
    assert "--levels: each level is at least 1" in out.stderr
    assert "Traceback" not in out.stderr
