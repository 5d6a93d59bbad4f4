"""``server.cpu_affinity``: with ``spread`` each worker process, every thread of it (gRPC's
included), runs on one CPU of its own; ``none`` (the default) leaves threads to the kernel."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ServerSection
from gateway.devsetup import DevHome
from gateway.errors import StartError
from gateway.server import affinity, app
from tests.gateway.conftest import free_port, run_worker_setup, serving, write_gateway_config

linux_only = pytest.mark.skipif(not affinity.can_pin(), reason="CPU affinity is a Linux feature")


def test_worker_zero_takes_the_lowest_cpu_and_the_next_workers_the_next() -> None:
    assert [affinity.cpu_of_worker(w, {5, 1, 3}) for w in range(5)] == [1, 3, 5, 1, 3]


@given(
    st.sets(st.integers(min_value=0, max_value=511), min_size=1, max_size=64),
    st.integers(min_value=0, max_value=1000),
)
def test_a_worker_gets_an_allowed_cpu_and_workers_share_one_only_past_their_number(
    allowed: set[int], worker: int
) -> None:
    cpu = affinity.cpu_of_worker(worker, allowed)
    assert cpu in allowed
    assert affinity.cpu_of_worker(worker + len(allowed), allowed) == cpu
    others = {affinity.cpu_of_worker(w, allowed) for w in range(len(allowed)) if w != worker % len(allowed)}
    assert cpu not in others


@pytest.mark.parametrize(("worker", "allowed"), [(-1, {0, 1}), (0, set())])
def test_a_negative_worker_or_no_cpu_is_an_error(worker: int, allowed: set[int]) -> None:
    with pytest.raises(ValueError):
        affinity.cpu_of_worker(worker, allowed)


def test_the_default_leaves_threads_to_the_kernel() -> None:
    assert ServerSection().cpu_affinity == "none"


def test_an_unknown_value_is_refused() -> None:
    with pytest.raises(ValueError, match="cpu_affinity"):
        ServerSection(cpu_affinity="pin")  # type: ignore[arg-type]


def test_spread_on_a_platform_that_cannot_pin_fails_the_preflight(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(affinity, "can_pin", lambda: False)
    config = SimpleNamespace(server=ServerSection(cpu_affinity="spread"))
    with pytest.raises(StartError, match=r"^server\.cpu_affinity: spread needs .*; set it to none$"):
        app.preflight(config)  # type: ignore[arg-type]


@pytest.mark.parametrize(("setting", "pinned"), [("none", []), ("spread", [3])])
def test_a_worker_pins_itself_only_when_told(
    monkeypatch: pytest.MonkeyPatch, setting: str, pinned: list[int]
) -> None:
    seen: list[int] = []
    monkeypatch.setattr(affinity, "pin_worker", lambda worker: seen.append(worker) or 0)
    run_worker_setup(monkeypatch, ServerSection(cpu_affinity=setting), worker=3)  # type: ignore[arg-type]
    assert seen == pinned


def _cpus_of_threads(pid: int) -> list[set[int]]:
    """The CPUs each thread of process ``pid`` may run on (those that did not end meanwhile)."""
    found = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            found.append(os.sched_getaffinity(int(tid)))
    return found


def _workers(pid: int) -> list[int]:
    """The worker processes of the gateway ``pid`` (its spawned children, not multiprocessing's
    resource tracker)."""
    children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


@linux_only
def test_two_spread_workers_keep_every_thread_on_a_cpu_of_their_own(
    dev_home: DevHome, tmp_path: Path
) -> None:
    config = write_gateway_config(
        dev_home,
        tmp_path / "pinned",
        server={
            "listen": f"127.0.0.1:{free_port()}",
            "workers": 2,
            "metrics_listen": "",
            "cpu_affinity": "spread",
        },
    )
    cpus = sorted(os.sched_getaffinity(0))
    with serving(config, tmp_path) as (proc, _):  # ready once every worker listens
        workers = _workers(proc.pid)
        assert len(workers) == 2, workers
        per_worker = []
        for pid in workers:
            threads = _cpus_of_threads(pid)
            assert len(threads) > 2, "the worker's gRPC and audit threads are running"
            assert all(len(t) == 1 for t in threads), threads
            assert len({min(t) for t in threads}) == 1, f"worker {pid}: its threads on several CPUs"
            per_worker.append(min(threads[0]))
        assert sorted(per_worker) == sorted(cpus[w % len(cpus)] for w in range(2))
        assert all(t == set(cpus) for t in _cpus_of_threads(proc.pid)), "the parent is left alone"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    log = (tmp_path / "serve.log").read_text()
    assert log.count('"serve.cpu_affinity"') == 2, log[-2000:]


@linux_only
def test_without_the_setting_a_worker_may_run_on_every_cpu(dev_home: DevHome, tmp_path: Path) -> None:
    config = write_gateway_config(
        dev_home, tmp_path / "free", server={"listen": "127.0.0.1:0", "metrics_listen": ""}
    )
    with serving(config, tmp_path) as (proc, _):
        assert all(t == os.sched_getaffinity(0) for t in _cpus_of_threads(proc.pid))
    assert "serve.cpu_affinity" not in (tmp_path / "serve.log").read_text()
