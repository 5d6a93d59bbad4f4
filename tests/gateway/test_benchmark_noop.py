"""The gateway benchmark's no-op server (benchmarks/gateway.py ``noop_server_main``): over mTLS it
answers every Query with the fixed response, on the event loop it is given (asyncio, the fixed
reference, or uvloop with ``--noop-event-loop uvloop``), tells the parent which loop it got, and
stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from dsgw.v1 import exchange_pb2
from gateway.devsetup import ensure_dev_pki

from .conftest import REPO, serve_env

# Runs the no-op server in the main thread of a child (it installs a SIGTERM handler) and prints
# what it sends its parent once it listens: its port and its event loop.
_CHILD = """
import importlib.util, json, sys, threading
from multiprocessing import Pipe
spec = importlib.util.spec_from_file_location("bench", sys.argv[1])
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
parent, child = Pipe()
def report():
    print(json.dumps(parent.recv()), flush=True)
threading.Thread(target=report, daemon=True).start()
bench.noop_server_main(sys.argv[2], "query", bytes.fromhex(sys.argv[3]), sys.argv[4], child)
"""


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_dev_pki(tmp_path_factory.mktemp("noop") / "pki")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_noop_server_answers_over_mtls_on_the_loop_asked(pki_dir: Path, loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    fixed = exchange_pb2.QueryResponse(request_id="fixed", replayed=False)
    fixed.results.add(dataset="graduation", found=True)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(REPO / "benchmarks" / "gateway.py"),
            str(pki_dir),
            fixed.SerializeToString().hex(),
            loop,
        ],
        stdout=subprocess.PIPE,
        env=serve_env(),
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        port, got = json.loads(proc.stdout.readline())
        assert got == loop
        creds = grpc.ssl_channel_credentials(
            (pki_dir / "ca.crt").read_bytes(),
            (pki_dir / "agencies" / "hrss.key").read_bytes(),
            (pki_dir / "agencies" / "hrss.crt").read_bytes(),
        )
        with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
            query = channel.unary_unary("/dsgw.v1.DataExchange/Query")
            raw = query(exchange_pb2.QueryRequest().SerializeToString(), timeout=10)
        assert exchange_pb2.QueryResponse.FromString(raw) == fixed
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
