"""kill -9 at a random moment loses no acknowledged entry.

A child process (tests/audit/crash_writer.py) appends from several threads and prints every
acknowledged index with its request id; the parent SIGKILLs it after a random short time, three
times, each run reopening (recovering) the same log. Afterwards every acknowledged entry is in
the log, decrypts (auditor key) to the request id it was acknowledged for, and the log verifies.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from audit.keys import FileKeyProvider
from audit.layout import HomeKeys
from audit.log import AuditLog
from audit.reader import LogReader
from audit.verify import verify_log
from tests.audit.crash_writer import make_log

ROOT = Path(__file__).resolve().parents[2]


def run_and_kill(log_dir: Path, home: Path, rng: random.Random) -> dict[int, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.audit.crash_writer", str(log_dir), str(home), "6"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        env=env,
    )
    assert proc.stdout is not None
    acked: dict[int, str] = {}
    started = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            if not raw.endswith(b"\n"):
                break  # a line cut by the kill: not known to be acknowledged
            index, _, request_id = raw.decode().rstrip("\n").partition(" ")
            acked[int(index)] = request_id
            started.set()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert started.wait(60), "the writer did not acknowledge anything"
        time.sleep(rng.uniform(0.2, 1.0))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join()
    return acked


def test_kill_9_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    log_dir, home, _ = make_log(tmp_path)
    rng = random.Random()
    acked: dict[int, str] = {}
    for _ in range(3):
        got = run_and_kill(log_dir, home, rng)
        assert got and not set(got) & set(acked), "an index was acknowledged twice"
        acked.update(got)
    with AuditLog.open(log_dir, home=home, index="thread") as log:  # recovery, then a clean close
        assert log.size > max(acked)
    reader = LogReader(log_dir)
    keyring = reader.keyring(FileKeyProvider.from_private_key_file(HomeKeys(home).auditor_key))
    for index, request_id in acked.items():
        assert reader.entry(index, keyring).request_id == request_id
    report = verify_log(reader)
    assert report.ok, report.problem
    assert report.entries > max(acked)
