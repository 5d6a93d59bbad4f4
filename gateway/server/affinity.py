"""``server.cpu_affinity``: each worker process, every thread of it, kept on one CPU.

A worker's threads (its event loop, gRPC's poller and event-engine threads, the audit committer,
the I/O threads) hand work to one another several times per call. Left to the kernel they run
wherever a CPU is free, and a hand-over to a thread on another CPU wakes that CPU (on a virtual
machine, through the hypervisor). With ``spread`` worker *i* runs on the *i*-th CPU the gateway
may use (round robin when there are more workers than CPUs), so its hand-overs stay on one CPU;
what that gained and cost is in docs/gateway.md, "Keeping a worker on one CPU".
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection

__all__ = ["can_pin", "cpu_of_worker", "pin_worker"]


def can_pin() -> bool:
    """Whether this platform lets a process choose the CPUs of its threads (Linux)."""
    return hasattr(os, "sched_setaffinity") and hasattr(os, "sched_getaffinity")


def cpu_of_worker(worker: int, allowed: Collection[int]) -> int:
    """The CPU of worker ``worker`` (from 0) among the CPUs ``allowed``: the lowest for worker 0,
    the next for worker 1, and round again when the workers outnumber them."""
    if worker < 0:
        raise ValueError(f"worker {worker}: workers count from 0")
    cpus = sorted(allowed)
    if not cpus:
        raise ValueError("no CPU is allowed")
    return cpus[worker % len(cpus)]


def pin_worker(worker: int) -> int:
    """Keep every thread of this process, those that exist and (as they inherit it) those it
    starts later, on :func:`cpu_of_worker` among the CPUs it may use now; returns that CPU."""
    cpu = cpu_of_worker(worker, os.sched_getaffinity(0))
    for tid in _threads():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(tid, {cpu})
    return cpu


def _threads() -> list[int]:
    """The ids of this process's threads (the calling thread alone where /proc cannot tell)."""
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        return [0]
