"""Group commit of a stream: appends that arrive one at a time from an open stream (a server's
calls) at a high enough rate are gathered for up to ``commit_delay`` into fewer fdatasyncs."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit.log import AuditLog, AuditUnavailable, stream_target
from audit.reader import LogReader
from audit.verify import verify_log
from tests.audit.crash_writer import entry, make_log


def test_no_wait_when_not_even_one_more_append_is_expected() -> None:
    assert stream_target(0.0, 0.002, 1000) is None
    assert stream_target(400.0, 0.002, 1000) is None  # 0.8 expected within 2 ms
    assert stream_target(5000.0, 0.0, 1000) is None  # off


def test_the_wait_targets_twice_the_expected_appends() -> None:
    assert stream_target(500.0, 0.002, 1000) == 2
    assert stream_target(1000.0, 0.002, 1000) == 4
    assert stream_target(2600.0, 0.002, 1000) == 10
    assert stream_target(1e6, 0.002, 64) == 64  # never more than a batch holds


@given(rate=st.floats(0, 1e7), delay=st.floats(0, 0.05), cap=st.integers(1, 1 << 16))
def test_a_target_is_none_or_between_two_and_the_cap(rate: float, delay: float, cap: int) -> None:
    target = stream_target(rate, delay, cap)
    assert target is None or min(2, cap) <= target <= cap
    assert (target is None) == (rate * delay < 1 or delay <= 0)


def _paced_appends(log: AuditLog, rate: float, count: int) -> list[int]:
    async def main() -> list[int]:
        start = time.perf_counter()
        tasks = []
        for i in range(count):
            pause = start + i / rate - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
            tasks.append(asyncio.ensure_future(log.append_async(entry(i))))
        return [r.index for r in await asyncio.gather(*tasks)]

    return asyncio.run(main())


@pytest.fixture
def fdatasyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The fdatasync calls made from now on (a list of their file descriptors)."""
    calls: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    return calls


def test_a_stream_of_appends_shares_fdatasyncs(tmp_path: Path, fdatasyncs: list[int]) -> None:
    log_dir, home, _ = make_log(tmp_path)
    before = len(fdatasyncs)
    # 1,000 appends/s with 20 ms to gather: about 20 appends per commit once the rate is known
    with AuditLog.open(log_dir, home=home, index="none", commit_delay=0.02) as log:
        indices = _paced_appends(log, 1000.0, 600)
    syncs = len(fdatasyncs) - before
    assert sorted(indices) == list(range(600))  # every append acknowledged, each once
    assert syncs < 600 / 3, f"{syncs} fdatasyncs for 600 appends"
    assert verify_log(LogReader(log_dir)).ok


def test_without_commit_delay_each_lone_append_commits_at_once(tmp_path: Path, fdatasyncs: list[int]) -> None:
    log_dir, home, _ = make_log(tmp_path)
    with AuditLog.open(log_dir, home=home, index="none", commit_delay=0) as log:
        before = len(fdatasyncs)
        for i in range(20):  # one at a time: nothing to gather
            log.append(entry(i))
        assert len(fdatasyncs) - before >= 20


def test_a_reopened_log_does_not_count_its_old_entries_as_a_burst(tmp_path: Path) -> None:
    log_dir, home, _ = make_log(tmp_path)
    with AuditLog.open(log_dir, home=home, index="none") as log:
        log.append_many(entry(i) for i in range(2000))
    with AuditLog.open(log_dir, home=home, index="none", commit_delay=0.02) as log:
        time.sleep(0.06)  # one rate window
        log.append(entry(2000))
        assert log._rate < 100  # one append in the window, not 2,001


def test_a_failure_while_a_stream_is_gathered_ends_the_committer_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_dir, home, _ = make_log(tmp_path)
    crashes: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", crashes.append)
    log = AuditLog.open(log_dir, home=home, index="none", commit_delay=0.5)
    log._rate, log._rate_at = 1e6, time.monotonic() + 60  # a busy stream: the next commit gathers
    outcome: list[BaseException | int] = []

    def appender() -> None:
        try:
            outcome.append(log.append(entry(0)).index)
        except AuditUnavailable as exc:
            outcome.append(exc)

    thread = threading.Thread(target=appender)
    thread.start()
    deadline = time.monotonic() + 5
    while not (log._queue and log._idle) and time.monotonic() < deadline:  # gathering the stream
        time.sleep(0.001)
    log._fail(AuditUnavailable("the disk went away"))
    thread.join(5)
    log.close()
    assert len(outcome) == 1 and isinstance(outcome[0], AuditUnavailable)
    assert crashes == []


def test_a_writer_waiting_for_its_own_commit_is_not_made_to_wait_out_the_delay(tmp_path: Path) -> None:
    # one thread appending in a loop (a consent import, an expiry sweep) sends nothing while its
    # append waits: once a wait gathered nothing, commits stop sitting out commit_delay (0.2 s
    # here) for appends that cannot come, but for a probe every 25 delays
    log_dir, home, _ = make_log(tmp_path)
    with AuditLog.open(log_dir, home=home, index="none", commit_delay=0.2) as log:
        log._rate, log._rate_at = 1e6, time.monotonic() + 60  # as if a fast stream had just passed
        started = time.monotonic()
        for i in range(50):
            log.append(entry(i))
        waited = time.monotonic() - started
    assert waited < 5, f"50 appends took {waited:.1f} s: each sat out the delay"  # 10 s if they did
