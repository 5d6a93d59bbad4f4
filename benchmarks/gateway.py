"""Benchmark: the gateway end to end over mTLS on loopback (issue 6).

    python benchmarks/gateway.py [--quick] [--workers N] [--method query|query2|verify]
                                 [--event-loop uvloop|asyncio] [--noop-event-loop asyncio|uvloop]
                                 [--py-spy FILE]
                                 [--store sqlite|postgresql [--pg-url URL]]

Builds a development home in a temporary directory (``gateway.devsetup.make_dev_home``: 20,000
persons and 2,000 employers; --quick 5,000 / 500), grants hrss a consent to read the graduation
record (level, school_name, graduation_date) of every subject the education source holds (up to
2,000), then starts, each in its own process:

* the gateway (``python -m gateway serve --config ... --ready-file ...``, ``--workers`` worker
  processes, default 1, on ``server.event_loop``: uvloop unless ``--event-loop asyncio``);
* a no-op grpc.aio server (on asyncio's own loop, whatever the gateway runs on: the fixed
  reference; ``--noop-event-loop uvloop`` puts it on uvloop, as the gateway; ``noop_event_loop``
  in the JSON says which it got) with the same mTLS server credentials (client certificates
  required)
  whose DataExchange.Query returns a fixed QueryResponse: a real answer of the gateway, so the
  same size on the wire. It is the limit: what the same client gets from a server doing nothing;
  with ``--method verify`` its DataExchange.Verify returns a fixed VerifyResponse instead;
* the load generator: grpc.aio, ``--channels`` channels (separate connections) with the hrss
  client certificate (default 2 with one worker, 4 per worker with several), a closed loop of K
  concurrent callers.

``--store postgresql`` puts the providers' sources and the consent store on a PostgreSQL server
instead of SQLite files (``--pg-url``, default ``$DSGW_TEST_PG_URL`` or
``postgresql://postgres@127.0.0.1:5432/test``): the same persons and seed, generated into the
schemas ``bench_<pid>_<random>_<agency>`` (and ``..._truth``, ``..._consent``, unique to the run),
which are dropped at the end, whatever happens (``--keep DIR`` keeps them and prints their names).
``store`` in the JSON says which; ``pg_generate_s`` is the time the generation took.

Measured, in the same run and with the same client:

* ``qps`` / ``noop_qps``: peak Query throughput, the maximum over a few concurrency levels (each
  bounded in time, after a short warm-up); ``ratio`` = qps / noop_qps (goal >= 0.5). Every
  gateway Query runs the full path: certificate and CRL check, agreement, purpose, a real consent
  check in the consent store, the provider fetch, minimise and mask, and a durable audit append
  before the answer. ``--method verify`` measures Verify instead of Query, through the same
  phases: hrss asks education's ``graduated_within_years`` (years 3) of the same subjects, with
  the same purpose and consent (the predicate reads graduation_date); ``--method query2`` asks
  two datasets in each Query: the graduation record and, under hrss's statutory duty, the civil
  affairs assistance record (``household_category``, ``zero_employment_household``), for the
  purpose ``employment_subsidy_review`` (the consents name it too); ``method`` in the JSON says
  which;
* ``p50_ms`` / ``p99_ms``: latency of an open-loop paced load at ``p99_rate_qps`` = 70 % of the
  gateway's peak (goal: p99 <= 20 ms). Latency counts from the scheduled send time, so a stalled
  client or server is not hidden (no coordinated omission); the same paced load against the
  no-op server gives ``noop_p50_ms`` / ``noop_p99_ms`` (what the client and loopback add);
* ``paced_client_over_20ms`` / ``paced_handler_over_20ms``: of the paced phase's calls (its
  warm-up included, so that both count the same calls), the share answered more than 20 ms after
  its scheduled send, and the share whose time inside the gateway's handler
  (``dsgw_call_latency_seconds``: from the handler's start to its answer) was over 20 ms. A
  tail at the client that the handler does not have is in the wait before gRPC hands a call to
  the handler (or in sending the answer back);
* ``paced_send_lag_p99_ms``: how late the load generator started its paced calls (p99, from
  their scheduled time): small, the paced phase's tail is not the client's sending;
* ``paced_gc_pauses`` / ``paced_gc_pauses_over_5ms``: the gateway's garbage collections during
  the paced phase (``dsgw_gc_pause_seconds``), all and those that held its event loop over 5 ms
  (``gc_young_every_ms``: how often a worker collects its young generation itself;
  ``gil_switch_interval_ms``: the workers' thread switch interval, ``--gil-switch-interval-ms``;
  ``cpu_affinity``: whether each worker was kept on a CPU of its own, ``--cpu-affinity``;
  ``commit_delay_ms``: how long an audit commit gathered the next calls' entries,
  ``--commit-delay-ms``);
* ``paced_query_batch_wait_ms`` / ``paced_loop_busy``: at the end of the paced phase, how long a
  Query batch waited for more calls and the share of time the event loop's thread was busy, on
  a CPU or queued for one (``dsgw_query_batch_wait_seconds``, ``dsgw_event_loop_busy_ratio``;
  averaged over the workers). The wait follows the load (``server.query_batch_adaptive``) unless
  ``--query-batch-fixed``; each closed-loop level prints both too;
* ``batch_verify_per_s``: subjects per second on ONE BatchVerify stream (hrss -> civil_affairs
  receives_subsistence_allowance, a statutory duty: no consent per subject; every item audited),
  50,000 subjects (--quick 10,000) in messages of 500 (goal >= 20,000/s);
* ``server_cpu_ms_per_call`` / ``loop_cpu_ms_per_call`` (and ``noop_...``): the server
  processes' CPU per call at the peak, all threads and the event-loop (main) threads alone
  (summed over the workers), from ``/proc``: an event loop near ``1 / qps`` per call is the
  bottleneck;
* ``client_cpu_ms_per_call`` (and ``noop_...``): the load generator's CPU per call at the peak;
  ``machine_busy`` (and ``noop_...``, ``paced_...``): the share of all the machine's CPU time
  that was busy (``/proc/stat``: all but idle and iowait) during the peak level and the paced
  phase. Near 1, the machine is the limit: the client and the server share its cores (on two
  cores the no-op server's peak is usually this), and a paced phase that runs the machine near
  it has a tail whatever the server does. ``paced_server_cpu_ms_per_call`` is the server's CPU
  per call in the paced phase (warm-up included). The closed-loop levels alternate between the
  no-op server and the gateway (each level against both, in turn), so that a change of the
  machine's pace during the run meets both alike;
* ``audit_verified``: ``dsgw audit verify`` over the gateway's log(s) after it drained, and
  ``audit_entries`` the entries they hold; ``audit_entries_per_worker`` splits them by worker,
  which shows how the kernel spread the ``--channels`` connections over the ``--workers``
  (SO_REUSEPORT hashes each connection: with two channels and two workers, both would land on
  the same worker half the time, making the run a one-worker run); those counts include the
  BatchVerify stream's entries, all on one worker. ``paced_calls_per_worker``: the calls each
  worker answered in the paced phase (warm-up included, from each worker's metrics), the split
  its tail met.

The machine's cores are shared by the gateway, the no-op server and the load generator; figures
are noisy, the ratio is the figure to compare across machines. ``--py-spy FILE`` records the
gateway process with py-spy (raw collapsed stacks) during its closed-loop phase, or with
``--py-spy-phase paced`` during the paced load, ``--py-spy-phase batch`` during BatchVerify
(the figures of such a run are lowered by the sampling). Progress lines first, then one JSON
object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if TYPE_CHECKING:
    from gateway.devsetup import DevHome

STARTED = time.perf_counter()

QUERY_METHOD = "/dsgw.v1.DataExchange/Query"
VERIFY_METHOD = "/dsgw.v1.DataExchange/Verify"
BATCH_METHOD = "/dsgw.v1.DataExchange/BatchVerify"
FIELDS = ("level", "school_name", "graduation_date")
QUERY_PURPOSE = "graduate_employment"
#: --method query2: the graduation record and, under a statutory duty, the civil affairs
#: assistance record, in one Query (a purpose both agreements allow)
QUERY2_PURPOSE = "employment_subsidy_review"
ASSISTANCE_FIELDS = ("household_category", "zero_employment_household")
METHODS = {"query": "Query", "query2": "Query", "verify": "Verify"}
"""--method -> the RPC it calls (the method label of the gateway's metrics)."""
#: --method verify: a comparison over the same dataset and consent (it reads graduation_date)
VERIFY_PREDICATE = "graduated_within_years"
VERIFY_PARAMETERS = {"years": 3}
BATCH_PURPOSE = "employment_assistance"
DEV_SEED = 7
"""The seed of the synthetic data (``make_dev_home``'s default), for both stores."""
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
"""--store postgresql: the server, unless ``--pg-url`` or ``$DSGW_TEST_PG_URL`` says otherwise."""


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f} s] {message}", flush=True)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def cpu_seconds(pids: Sequence[int], *, main_thread: bool = False) -> float:
    """User + system CPU time of processes so far (Linux /proc); with ``main_thread``, of their
    main threads only (the event loop of a grpc.aio server)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        path = f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat"
        with contextlib.suppress(OSError):
            fields = Path(path).read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def machine_jiffies(text: str) -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from the text of ``/proc/stat`` (its ``cpu`` line):
    busy is everything but idle and iowait (user, nice, system, irq, softirq, steal)."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            values = [int(v) for v in fields[1:9]]  # guest time is already in user and nice
            values += [0] * (8 - len(values))
            idle = values[3] + values[4]
            return sum(values) - idle, sum(values)
    raise ValueError("no cpu line in /proc/stat")


def machine_busy_share(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """The share of the machine's CPU time (all cores) that was busy between two readings of
    :func:`machine_jiffies`; None when no time passed."""
    total = after[1] - before[1]
    if total <= 0:
        return None
    return round((after[0] - before[0]) / total, 3)


def read_machine() -> tuple[int, int]:
    return machine_jiffies(Path("/proc/stat").read_text())


_LABEL = re.compile(r'(\w+)="([^"]*)"')
_SAMPLE = re.compile(r"^(\w+)(?:\{([^}]*)\})? (\S+)$")
_COUNTERS = (
    "batch_sum",
    "batch_count",
    "queries",
    "queries_within_bound",
    "gc_pauses",
    "gc_pauses_within_bound",
    "batch_wait_s",
    "loop_busy",
    "load_gauges",
)
GC_BOUND_S = 0.005
"""A garbage collection longer than this counts in ``paced_gc_pauses_over_5ms`` (a bucket bound
of ``dsgw_gc_pause_seconds``)."""
HANDLER_BOUND_S = 0.02
"""The paced phase's goal (p99 <= 20 ms), also a bucket bound of ``dsgw_call_latency_seconds``."""


def gateway_counters(text: str, method: str = "Query") -> dict[str, float]:
    """The counters this benchmark reads from Prometheus text (one worker's, or several workers'
    one after the other: their counts add up):

    * ``batch_sum`` / ``batch_count``: the ``dsgw_query_batch_size`` histogram (Queries and
      Verifies decided and fetched together);
    * ``queries`` / ``queries_within_bound``: answered calls of ``method`` (Query, or Verify with
      ``--method verify``; ``dsgw_call_latency_seconds``, code OK), all and those whose time in
      the gateway's handler (from the handler's start to its answer) was at most
      :data:`HANDLER_BOUND_S`. What a call waits before gRPC hands it to the handler, and the
      sending of its answer, are not in it;
    * ``gc_pauses`` / ``gc_pauses_within_bound``: the worker's garbage collections
      (``dsgw_gc_pause_seconds``, every generation), all and those that held the event loop at
      most :data:`GC_BOUND_S`;
    * ``batch_wait_s`` / ``loop_busy`` / ``load_gauges``: the Query batches' wait now
      (``dsgw_query_batch_wait_seconds``) and the event loop's last measured load
      (``dsgw_event_loop_busy_ratio``), summed over the workers that report them, and how many
      do (:func:`batch_wait_now` averages them)."""
    out = dict.fromkeys(_COUNTERS, 0.0)
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None:
            continue
        name, labels, value = m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))
        if name == "dsgw_query_batch_wait_seconds":
            out["batch_wait_s"] += value
            out["load_gauges"] += 1
        elif name == "dsgw_event_loop_busy_ratio":
            out["loop_busy"] += value
        elif name == "dsgw_gc_pause_seconds_count":
            out["gc_pauses"] += value
        elif name == "dsgw_gc_pause_seconds_bucket" and float(labels["le"]) == GC_BOUND_S:
            out["gc_pauses_within_bound"] += value
        elif name == "dsgw_query_batch_size_sum":
            out["batch_sum"] += value
        elif name == "dsgw_query_batch_size_count":
            out["batch_count"] += value
        elif labels.get("method") != method or labels.get("code") != "OK":
            continue
        elif name == "dsgw_call_latency_seconds_count":
            out["queries"] += value
        elif name == "dsgw_call_latency_seconds_bucket" and float(labels["le"]) == HANDLER_BOUND_S:
            out["queries_within_bound"] += value
    return out


def scrape(ports: Sequence[int], method: str = "Query") -> dict[str, float]:
    """:func:`gateway_counters` of the gateway workers' Prometheus endpoints (loopback) together."""
    import urllib.request

    texts = []
    for port in ports:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r,
        ):
            texts.append(r.read().decode())
    return gateway_counters("\n".join(texts), method)


def scrape_each(ports: Sequence[int], method: str = "Query") -> list[dict[str, float]]:
    """:func:`gateway_counters` of each gateway worker's Prometheus endpoint apart."""
    return [scrape([port], method) for port in ports]


def joined(each: Sequence[dict[str, float]]) -> dict[str, float]:
    """The workers' counters together, as :func:`scrape` of all their endpoints reads them."""
    return {name: sum(c[name] for c in each) for name in _COUNTERS}


def calls_per_worker(before: Sequence[dict[str, float]], after: Sequence[dict[str, float]]) -> list[int]:
    """Calls of the benchmarked method each worker answered between two :func:`scrape_each`:
    how the kernel's placing of the connections (SO_REUSEPORT) spread the load over them."""
    return [round(a["queries"] - b["queries"]) for b, a in zip(before, after, strict=True)]


def batch_mean(before: dict[str, float], after: dict[str, float]) -> float | None:
    """Queries per batch between two scrapes."""
    calls, batches = after["batch_sum"] - before["batch_sum"], after["batch_count"] - before["batch_count"]
    return round(calls / batches, 2) if batches else None


def batch_wait_now(counters: dict[str, float]) -> tuple[float, float] | None:
    """(the Query batches' wait in milliseconds, the event loop's load) at a scrape, averaged
    over the workers; None when no worker reports them (a fixed wait)."""
    n = counters["load_gauges"]
    if not n:
        return None
    return round(1000 * counters["batch_wait_s"] / n, 2), round(counters["loop_busy"] / n, 2)


def handler_over_bound(before: dict[str, float], after: dict[str, float]) -> float | None:
    """The share of the Queries answered between two scrapes whose time in the gateway's handler
    exceeded :data:`HANDLER_BOUND_S`."""
    calls = after["queries"] - before["queries"]
    within = after["queries_within_bound"] - before["queries_within_bound"]
    return round(1 - within / calls, 4) if calls else None


def load_text(phase: dict[str, Any]) -> str:
    """A phase's batch wait and loop load as its progress line shows them."""
    return f"wait {phase['query_batch_wait_ms']:.1f} ms, loop {phase['loop_busy']:.0%} busy"


def gc_pauses_over_bound(before: dict[str, float], after: dict[str, float]) -> tuple[int, int]:
    """(garbage collections, those longer than :data:`GC_BOUND_S`) between two scrapes."""
    pauses = after["gc_pauses"] - before["gc_pauses"]
    within = after["gc_pauses_within_bound"] - before["gc_pauses_within_bound"]
    return int(pauses), int(pauses - within)


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the no-op server (its own process) ----------------------------------------------------------


def noop_server_main(pki_dir: str, method: str, response: bytes, event_loop: str, conn: Connection) -> None:
    """The no-op server on ``event_loop`` (asyncio, the fixed reference, or uvloop); sends its port
    and the loop it got (asyncio where uvloop is not installed) when it listens."""
    import grpc

    from dsgw.v1 import exchange_pb2, exchange_pb2_grpc
    from gateway.server.app import run_loop

    fixed_query = exchange_pb2.QueryResponse.FromString(response) if METHODS[method] == "Query" else None
    fixed_verify = exchange_pb2.VerifyResponse.FromString(response) if method == "verify" else None

    class Noop(exchange_pb2_grpc.DataExchangeServicer):
        async def Query(self, request: Any, context: Any) -> Any:
            return fixed_query

        async def Verify(self, request: Any, context: Any) -> Any:
            return fixed_verify

    async def run() -> None:
        pki = Path(pki_dir)
        creds = grpc.ssl_server_credentials(
            [((pki / "server.key").read_bytes(), (pki / "server.crt").read_bytes())],
            root_certificates=(pki / "ca.crt").read_bytes(),
            require_client_auth=True,
        )
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", 16 * 2**20),
                ("grpc.keepalive_permit_without_calls", 1),
            ]
        )
        exchange_pb2_grpc.add_DataExchangeServicer_to_server(Noop(), server)  # type: ignore[abstract]
        port = server.add_secure_port("127.0.0.1:0", creds)
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        conn.send((port, type(loop).__module__.split(".")[0]))
        await stop.wait()
        await server.stop(1)

    run_loop(run(), event_loop)


# --- the load generator (its own process) --------------------------------------------------------


class LoadGen:
    """Commands from the parent over a pipe: one grpc.aio client per target port, calling Query
    (``method`` "query", or "query2": two datasets) or Verify ("verify")."""

    def __init__(
        self, creds: tuple[bytes, bytes, bytes], subjects: list[str], channels: int, method: str
    ) -> None:
        self.creds = creds
        self.subjects = subjects
        self.channels = channels
        self.method = method
        self._clients: dict[int, list[Any]] = {}
        self._seq = 0
        self._prefix = f"b{os.getpid()}-{int(time.time())}"

    def _calls(self, port: int) -> list[Any]:
        import grpc

        calls = self._clients.get(port)
        if calls is None:
            ca, cert, key = self.creds
            creds = grpc.ssl_channel_credentials(ca, key, cert)
            calls = []
            for _ in range(self.channels):
                channel = grpc.aio.secure_channel(
                    f"127.0.0.1:{port}",
                    creds,
                    options=[("grpc.use_local_subchannel_pool", 1)],
                )
                # bytes in, bytes out: the client's own cost kept small and equal for both servers
                calls.append(channel.unary_unary(VERIFY_METHOD if self.method == "verify" else QUERY_METHOD))
            self._clients[port] = calls
        return calls

    def _request(self) -> bytes:
        from dsgw.v1 import common_pb2, exchange_pb2

        self._seq += 1
        purpose = QUERY2_PURPOSE if self.method == "query2" else QUERY_PURPOSE
        meta = common_pb2.RequestMeta(
            request_id=f"{self._prefix}-{self._seq}", purpose=common_pb2.Purpose(code=purpose)
        )
        subject = common_pb2.SubjectRef(
            kind=common_pb2.SUBJECT_KIND_PERSON, id=self.subjects[self._seq % len(self.subjects)]
        )
        if self.method == "verify":
            verify = exchange_pb2.VerifyRequest(
                meta=meta,
                subject=subject,
                provider=common_pb2.AGENCY_CODE_EDUCATION,
                predicate=VERIFY_PREDICATE,
                parameters=VERIFY_PARAMETERS,
            )
            return verify.SerializeToString()
        req = exchange_pb2.QueryRequest(meta=meta, subject=subject)
        req.datasets.add(provider=common_pb2.AGENCY_CODE_EDUCATION, dataset="graduation", fields=FIELDS)
        if self.method == "query2":
            req.datasets.add(
                provider=common_pb2.AGENCY_CODE_CIVIL_AFFAIRS, dataset="assistance", fields=ASSISTANCE_FIELDS
            )
        return req.SerializeToString()

    async def check(self, port: int) -> dict[str, Any]:
        """One call, parsed: what the answer looks like (and that it is not an error)."""
        from dsgw.v1 import exchange_pb2

        raw = await self._calls(port)[0](self._request(), timeout=10)
        if self.method == "verify":
            answer = exchange_pb2.VerifyResponse.FromString(raw)
            return {
                "bytes": len(raw),
                "found": [answer.result != exchange_pb2.VERIFY_RESULT_SUBJECT_NOT_FOUND],
                "raw": raw,
            }
        resp = exchange_pb2.QueryResponse.FromString(raw)
        return {"bytes": len(raw), "found": [r.found for r in resp.results], "raw": raw}

    async def closed(self, port: int, concurrency: int, seconds: float, warmup: float) -> dict[str, Any]:
        calls = self._calls(port)
        latencies: list[float] = []
        errors: dict[str, int] = {}
        state = {"measure": False, "stop": False}
        total = [0]

        async def caller(i: int) -> None:
            call = calls[i % len(calls)]
            while not state["stop"]:
                request = self._request()
                t0 = time.perf_counter()
                total[0] += 1
                try:
                    await call(request, timeout=10)
                except Exception as exc:  # counted; the figure says how many
                    name = getattr(exc, "code", lambda: None)()
                    key = getattr(name, "name", type(exc).__name__)
                    errors[key] = errors.get(key, 0) + 1
                    continue
                if state["measure"]:
                    latencies.append(time.perf_counter() - t0)

        tasks = [asyncio.create_task(caller(i)) for i in range(concurrency)]
        await asyncio.sleep(warmup)
        state["measure"] = True
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        state["measure"] = False
        elapsed = time.perf_counter() - started
        state["stop"] = True
        await asyncio.gather(*tasks)
        latencies.sort()
        return {
            "concurrency": concurrency,
            "calls": len(latencies),
            "all_calls": total[0],
            "seconds": round(elapsed, 3),
            "qps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
            "errors": errors,
        }

    async def paced(self, port: int, rate: float, seconds: float, warmup: float) -> dict[str, Any]:
        """Open loop: calls sent at ``rate`` per second whatever the answers do; latency from the
        scheduled send time to the answer."""
        calls = self._calls(port)
        latencies: list[float] = []
        errors: dict[str, int] = {}
        pending: set[asyncio.Task[None]] = set()
        max_in_flight = 0
        dropped = 0

        answered = [0, 0]  # every answer, warm-up included: all, over HANDLER_BOUND_S
        late: list[float] = []  # how long after its scheduled time each measured call was sent

        async def one(call: Any, request: bytes, due: float, measured: bool) -> None:
            if measured:
                late.append(time.perf_counter() - due)
            try:
                await call(request, timeout=10)
            except Exception as exc:
                name = getattr(exc, "code", lambda: None)()
                key = getattr(name, "name", type(exc).__name__)
                errors[key] = errors.get(key, 0) + 1
                return
            latency = time.perf_counter() - due
            answered[0] += 1
            answered[1] += latency > HANDLER_BOUND_S
            if measured:
                latencies.append(latency)

        interval = 1.0 / rate
        total = warmup + seconds
        start = time.perf_counter()
        n = 0
        while True:
            now = time.perf_counter()
            if now - start >= total:
                break
            # every call due by now is sent now (the loop wakes about once per millisecond)
            while start + n * interval <= now:
                due = start + n * interval
                if len(pending) >= 4096:
                    dropped += 1
                else:
                    task = asyncio.create_task(
                        one(calls[n % len(calls)], self._request(), due, due - start >= warmup)
                    )
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                n += 1
            max_in_flight = max(max_in_flight, len(pending))
            await asyncio.sleep(max(0.0, min(0.001, start + n * interval - time.perf_counter())))
        if pending:
            await asyncio.wait(pending, timeout=15)
        latencies.sort()
        late.sort()
        sent = n - int(warmup * rate)
        return {
            "rate_qps": round(rate, 1),
            "sent": sent,
            "answered": len(latencies),
            "all_answered": answered[0],  # warm-up included
            "achieved_qps": round(len(latencies) / seconds, 1),
            "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
            "p90_ms": round(percentile(latencies, 0.9) * 1000, 2),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
            "max_ms": round(latencies[-1] * 1000, 2) if latencies else None,
            "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else None,
            "max_in_flight": max_in_flight,
            # the load generator's own lag: a tail here would be the client's, not the server's
            "send_lag_p99_ms": round(percentile(late, 0.99) * 1000, 2),
            "send_lag_max_ms": round(late[-1] * 1000, 2) if late else None,
            "dropped": dropped,
            # the same calls as the gateway's handler_over_20ms (warm-up included)
            "all_over_20ms": round(answered[1] / answered[0], 4) if answered[0] else None,
            "errors": errors,
        }

    async def batch(self, port: int, subjects: list[str], items: int, chunk: int) -> dict[str, Any]:
        """One BatchVerify stream of ``items`` subjects in messages of ``chunk``."""
        import grpc

        from dsgw.v1 import common_pb2, exchange_pb2, exchange_pb2_grpc

        ca, cert, key = self.creds
        channel = grpc.aio.secure_channel(
            f"127.0.0.1:{port}",
            grpc.ssl_channel_credentials(ca, key, cert),
            options=[("grpc.use_local_subchannel_pool", 1)],
        )
        stub = exchange_pb2_grpc.DataExchangeStub(channel)
        # the messages are built before the clock starts: the figure is the gateway's
        messages = []
        for start in range(0, items, chunk):
            msg = exchange_pb2.BatchVerifyRequest()
            if start == 0:
                msg.meta.request_id = f"{self._prefix}-batch"
                msg.meta.purpose.code = BATCH_PURPOSE
                msg.provider = common_pb2.AGENCY_CODE_CIVIL_AFFAIRS
                msg.predicate = "receives_subsistence_allowance"
            for i in range(start, min(items, start + chunk)):
                msg.items.add(
                    item_id=str(i),
                    subject=common_pb2.SubjectRef(
                        kind=common_pb2.SUBJECT_KIND_PERSON, id=subjects[i % len(subjects)]
                    ),
                )
            messages.append(msg)

        async def requests() -> Any:
            for m in messages:
                yield m

        answered = 0
        results: dict[str, int] = {}
        started = time.perf_counter()
        first = None
        async for resp in stub.BatchVerify(requests(), timeout=300):
            if first is None:
                first = time.perf_counter() - started
            answered += len(resp.outcomes)
            for o in resp.outcomes:
                label = o.error_reason or exchange_pb2.VerifyResult.Name(o.result)
                results[label] = results.get(label, 0) + 1
        seconds = time.perf_counter() - started
        await channel.close()
        return {
            "items": items,
            "answered": answered,
            "seconds": round(seconds, 3),
            "per_s": round(answered / seconds),
            "first_answer_ms": round((first or 0) * 1000, 1),
            "results": dict(sorted(results.items())),
        }


def loadgen_main(
    creds: tuple[bytes, bytes, bytes], subjects: list[str], channels: int, method: str, conn: Connection
) -> None:
    async def run() -> None:
        gen = LoadGen(creds, subjects, channels, method)
        loop = asyncio.get_running_loop()
        while True:
            op, kwargs = await loop.run_in_executor(None, conn.recv)
            if op == "stop":
                conn.send(None)
                return
            try:
                conn.send(("ok", await getattr(gen, op)(**kwargs)))
            except Exception as exc:
                conn.send(("error", f"{type(exc).__name__}: {exc}"[:500]))

    asyncio.run(run())


class Remote:
    """The parent's handle on a child process that answers commands over a pipe."""

    def __init__(self, ctx: Any, target: Any, *args: Any) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(*args, child), daemon=True)
        self.proc.start()

    def call(self, op: str, **kwargs: Any) -> Any:
        self.conn.send((op, kwargs))
        status, value = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"load generator {op}: {value}")
        return value

    def stop(self) -> None:
        if self.proc.is_alive():
            with contextlib.suppress(Exception):
                self.conn.send(("stop", {}))
                self.conn.recv()
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.terminate()


# --- setup -----------------------------------------------------------------------------------------


class PgStore:
    """--store postgresql: the run's schemas on the server, all named ``prefix`` + a name:
    each agency's source and the truth (as ``dsgw data generate --schema-prefix``) and the
    consent store (``consent``). (A plain class: the tests load this file without registering
    it as a module, which a dataclass needs.)"""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix

    @classmethod
    def unique(cls, url: str) -> PgStore:
        """A prefix no other run uses (the process id and random digits)."""
        return cls(url, f"bench_{os.getpid()}_{secrets.token_hex(4)}_")

    def schema(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def connect(self) -> Any:
        import psycopg

        from adapters.synthetic.writers import postgres_conninfo

        return psycopg.connect(postgres_conninfo(self.url), autocommit=True, connect_timeout=5)

    def schemas(self) -> list[str]:
        """The schemas of the run that exist on the server."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT nspname FROM pg_namespace WHERE left(nspname, length(%s)) = %s ORDER BY nspname",
                (self.prefix, self.prefix),
            ).fetchall()
        return [r[0] for r in rows]

    def drop(self) -> list[str]:
        """Drop the run's schemas (CASCADE); returns their names."""
        from psycopg import sql

        names = self.schemas()
        with self.connect() as conn:
            conn.execute("SET lock_timeout = '30s'")
            for name in names:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        return names


def make_pg_home(
    home: Path,
    pg: PgStore,
    *,
    persons: int,
    employers: int,
    server: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> tuple[DevHome, float]:
    """What ``make_dev_home`` makes, with the sources generated into ``pg``'s schemas (the same
    persons and seed) and the providers and the consent store configured there; returns the
    home (a ``DevHome``, whose ``data`` stays empty) and the seconds the generation took."""
    from adapters.agencies import Agency
    from adapters.synthetic.generate import GenerateConfig, generate
    from gateway.devsetup import DevHome, ensure_dev_pki, write_config

    home.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    generate(
        GenerateConfig(
            persons=persons, employers=employers, seed=DEV_SEED, url=pg.url, schema_prefix=pg.prefix
        ),
        lambda message: progress(f"  {message}"),
    )
    seconds = time.perf_counter() - started
    pki_dir = ensure_dev_pki(home / "pki")
    config = write_config(
        home / "gateway.toml",
        home=home,
        data=home / "data",
        server=server,
        providers={a.value: {"url": pg.url, "db_schema": pg.schema(a.value)} for a in Agency},
        extra={"consent": {"store": pg.url, "store_schema": pg.schema("consent")}, **(extra or {})},
    )
    return DevHome(home=home, config=config, data=home / "data", pki=pki_dir), seconds


def person_ids(data: Path, pg: PgStore | None, *, graduated: bool = False) -> list[str]:
    """The persons of the truth (with ``graduated``, those with a graduation date), ordered by
    the end of their identity number: from ``data/truth.sqlite``, or the truth schema of ``pg``."""
    where = " WHERE graduation_date IS NOT NULL" if graduated else ""
    if pg is None:
        with contextlib.closing(sqlite3.connect(f"file:{data / 'truth.sqlite'}?mode=ro", uri=True)) as conn:
            return [
                r[0]
                for r in conn.execute(f"SELECT person_id FROM person{where} ORDER BY substr(person_id, 11)")
            ]
    from psycopg import sql

    query = sql.SQL(
        "SELECT person_id FROM {}.person" + where + ' ORDER BY substr(person_id, 11) COLLATE "C", person_id'
    ).format(sql.Identifier(pg.schema("truth")))
    with pg.connect() as conn:
        return [r[0] for r in conn.execute(query)]


def graduates(data: Path, limit: int, pg: PgStore | None = None) -> list[str]:
    """Persons the education source holds a graduation record of (checked through the adapter)."""
    from adapters.agencies import Agency
    from adapters.contract import Subject, SubjectKind, SubjectNotFound
    from adapters.registry import open_adapter
    from adapters.resilience import ResiliencePolicy
    from adapters.sources import SourceConfig

    candidates = person_ids(data, pg, graduated=True)
    source = (
        SourceConfig(url=f"sqlite:///{data / 'education.sqlite'}")
        if pg is None
        else SourceConfig(url=pg.url, db_schema=pg.schema(Agency.EDUCATION.value))
    )
    adapter = open_adapter(Agency.EDUCATION, source, ResiliencePolicy())
    found = []
    try:
        for pid in candidates:
            try:
                adapter.fetch("graduation", Subject(SubjectKind.PERSON, pid))
            except SubjectNotFound:
                continue
            found.append(pid)
            if len(found) >= limit:
                break
    finally:
        adapter.close()
    return found


def all_persons(data: Path, pg: PgStore | None = None) -> list[str]:
    return person_ids(data, pg)


def grant_consents(config: Any, subjects: list[str], purposes: Sequence[str] = (QUERY_PURPOSE,)) -> int:
    from gateway.consent.service import ConsentService, GrantRequest, ScopeRequest
    from gateway.consent.store import ConsentStore

    store = ConsentStore(config.consent_store_url(), schema=config.consent.store_schema)
    try:
        store.create_tables()
        service = ConsentService(store, catalogue=config.catalogue)
        now = datetime.now(UTC)
        reqs = [
            GrantRequest(
                subject=s,
                consumers=["hrss"],
                scope=[ScopeRequest("education", "graduation", FIELDS)],
                purposes=list(purposes),
                valid_from=now - timedelta(days=1),
                valid_to=now + timedelta(days=365),
                channel="counter",
                evidence_ref=f"bench-{i}",
                notice_version="notice-2026-1",
            )
            for i, s in enumerate(subjects)
        ]
        for start in range(0, len(reqs), 5000):
            service.grant_many(reqs[start : start + 5000], now=now)
        return store.count()
    finally:
        store.close()


def start_gateway(config_path: Path, home: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The gateway as its own process; returns once every worker listens."""
    from gateway.server.process import start_serve_process

    return start_serve_process(config_path, ready=home / "ready.json", log=home / "gateway.log")


def stop_gateway(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def worker_pids(proc: subprocess.Popen[bytes], workers: int) -> list[int]:
    if workers == 1:
        return [proc.pid]
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    with contextlib.suppress(OSError):
        return [int(p) for p in children.read_text().split()]
    return [proc.pid]


def verify_audit(config: Any) -> tuple[bool, list[int]]:
    """``dsgw audit verify`` over each worker's log: (all verified, entries of each log). The
    entries per log show how the kernel spread the channels' connections over the workers."""
    ok, entries = True, []
    for directory in config.audit_dirs():
        out = subprocess.run(
            [sys.executable, "-m", "gateway", "audit", "verify", "--log", str(directory), "--json"],
            capture_output=True,
            text=True,
            cwd=str(Path(__file__).resolve().parents[1]),
        )
        if out.returncode != 0:
            progress(f"  audit verify {directory.name}: exit {out.returncode}: {out.stderr.strip()[-300:]}")
            ok = False
            entries.append(0)
            continue
        report = json.loads(out.stdout.strip().splitlines()[-1])
        ok = ok and bool(report.get("ok"))
        entries.append(int(report.get("entries", 0)))
    return ok, entries


# --- the run -------------------------------------------------------------------------------------


def sweep(
    gen: Remote,
    port: int,
    levels: Sequence[int],
    seconds: float,
    warmup: float,
    name: str,
    pids: Sequence[int],
    metrics_ports: Sequence[int] = (),
) -> list[dict[str, Any]]:
    out = []
    client = [gen.proc.pid or 0]
    for k in levels:
        cpu, loop = cpu_seconds(pids), cpu_seconds(pids, main_thread=True)
        client_cpu, machine = cpu_seconds(client), read_machine()
        batches = scrape(metrics_ports)
        r = gen.call("closed", port=port, concurrency=k, seconds=seconds, warmup=warmup)
        cpu, loop = cpu_seconds(pids) - cpu, cpu_seconds(pids, main_thread=True) - loop
        client_cpu = cpu_seconds(client) - client_cpu
        r["machine_busy"] = machine_busy_share(machine, read_machine())
        r["server_cpu_ms_per_call"] = round(1000 * cpu / max(1, r["all_calls"]), 3)
        r["loop_cpu_ms_per_call"] = round(1000 * loop / max(1, r["all_calls"]), 3)
        r["client_cpu_ms_per_call"] = round(1000 * client_cpu / max(1, r["all_calls"]), 3)
        at_end = scrape(metrics_ports)
        r["query_batch_mean"] = batch_mean(batches, at_end)
        load = batch_wait_now(at_end)
        r["query_batch_wait_ms"], r["loop_busy"] = load if load is not None else (None, None)
        progress(
            f"  {name} K={k:<4} {r['qps']:>8,.0f} calls/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms"
            f"  server CPU {r['server_cpu_ms_per_call']:.3f} ms/call"
            f" (event loop {r['loop_cpu_ms_per_call']:.3f})"
            + f"  client CPU {r['client_cpu_ms_per_call']:.3f} ms/call"
            + (f"  machine {r['machine_busy']:.0%} busy" if r["machine_busy"] is not None else "")
            + (f"  {r['query_batch_mean']:.2f} calls/batch" if r["query_batch_mean"] else "")
            + (f" ({load_text(r)})" if r["query_batch_wait_ms"] is not None else "")
            + (f"  errors {r['errors']}" if r["errors"] else "")
        )
        out.append(r)
    return out


def start_spy(out: Path, pid: int, seconds: int) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid`` for ``seconds`` into ``out`` (raw collapsed stacks)."""
    spy = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--nonblocking",
            "--format",
            "raw",
            "--rate",
            "200",
            "-d",
            str(seconds),
            "-o",
            str(out),
            "-p",
            str(pid),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    return spy


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smaller home and shorter phases (about a minute)"
    )
    parser.add_argument("--persons", type=int, default=None)
    parser.add_argument("--employers", type=int, default=None)
    parser.add_argument(
        "--subjects", type=int, default=2000, help="consenting subjects the queries cycle over"
    )
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes (server.workers)")
    parser.add_argument(
        "--io-threads", type=int, default=None, help="server.io_threads (default: the product's)"
    )
    parser.add_argument(
        "--channels",
        type=int,
        default=None,
        help="client channels (connections); default 2 with one worker, 4 per worker with several",
    )
    parser.add_argument(
        "--levels", default=None, help="closed-loop concurrency levels (default 4,8,32,96; --quick 8,32)"
    )
    parser.add_argument("--seconds", type=float, default=None, help="seconds per closed-loop level")
    parser.add_argument("--batch-items", type=int, default=None)
    parser.add_argument("--load", type=float, default=0.7, help="paced load as a share of the gateway's peak")
    parser.add_argument(
        "--rate", type=float, default=None, help="paced load at this many calls/s instead (A/B at one load)"
    )
    parser.add_argument(
        "--method",
        choices=tuple(METHODS),
        default="query",
        help="the closed-loop and paced calls: Query of one dataset (default), query2 (two"
        " datasets: the graduation record and the civil affairs assistance record) or Verify",
    )
    parser.add_argument(
        "--query-batch-wait-ms",
        type=float,
        default=None,
        help="server.query_batch_wait_ms (default: the product's; 0: batch only the calls of one turn)",
    )
    parser.add_argument(
        "--query-batch-fixed",
        action="store_true",
        help="server.query_batch_adaptive = false: batches always wait the whole time (A/B)",
    )
    parser.add_argument(
        "--gc-young-every-ms",
        type=float,
        default=None,
        help="server.gc_young_every_ms (default: the product's; 0: the interpreter's thresholds only)",
    )
    parser.add_argument(
        "--gil-switch-interval-ms",
        type=float,
        default=None,
        help="server.gil_switch_interval_ms, the workers' thread switch interval (default: the product's)",
    )
    parser.add_argument(
        "--commit-delay-ms",
        type=float,
        default=None,
        help="audit.commit_delay_ms, how long an audit commit gathers the next calls' entries"
        " (default: the product's)",
    )
    parser.add_argument(
        "--cpu-affinity",
        choices=("none", "spread"),
        default=None,
        help="server.cpu_affinity: spread keeps each worker on a CPU of its own (default: the product's)",
    )
    parser.add_argument(
        "--event-loop",
        choices=("uvloop", "asyncio"),
        default=None,
        help="the gateway workers' event loop (default: server.event_loop's default, uvloop)",
    )
    parser.add_argument(
        "--noop-event-loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the no-op server's event loop (default asyncio, the fixed reference)",
    )
    parser.add_argument("--py-spy", type=Path, default=None, help="record the gateway with py-spy to FILE")
    parser.add_argument(
        "--py-spy-phase", choices=("closed", "paced", "batch"), default="closed", help="what --py-spy records"
    )
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="build the home in DIR and keep it (--store postgresql: and the run's schemas)",
    )
    parser.add_argument(
        "--store",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="where the providers' sources and the consent store are (default sqlite)",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("DSGW_TEST_PG_URL") or PG_URL,
        help="--store postgresql: the server (default $DSGW_TEST_PG_URL or %(default)s)",
    )
    args = parser.parse_args()
    if args.store == "postgresql" and not args.pg_url.startswith("postgresql"):
        parser.error("--pg-url must be a postgresql:// URL")
    if args.rate is not None and not args.rate > 0:
        parser.error("--rate must be more than 0 calls/s")
    if args.py_spy is not None and not (Path(sys.executable).parent / "py-spy").exists():
        parser.error("--py-spy needs py-spy in this environment: pip install py-spy")
    if args.channels is None:
        args.channels = 2 if args.workers == 1 else 4 * args.workers
    quick = args.quick
    persons = args.persons or (5000 if quick else 20_000)
    employers = args.employers or (500 if quick else 2000)
    levels = [int(x) for x in (args.levels or ("8,32" if quick else "4,8,32,96")).split(",")]
    seconds = args.seconds or (1.5 if quick else 3.0)
    warmup = 0.5 if quick else 1.0
    paced_seconds = 3.0 if quick else 6.0
    batch_items = args.batch_items or (10_000 if quick else 50_000)

    from gateway import logs
    from gateway.config import ConfigError, load_config
    from gateway.devsetup import make_dev_home

    logs.configure(level="WARNING")

    result: dict[str, Any] = {
        "benchmark": "gateway",
        "cpus": os.cpu_count(),
        "quick": quick,
        "method": args.method,
        "store": args.store,
    }
    ctx = multiprocessing.get_context("spawn")
    tmp = None
    if args.keep is not None:
        root = args.keep
    else:
        tmp = tempfile.mkdtemp(prefix="dsgw-bench-gateway-")
        root = Path(tmp)
    gateway: subprocess.Popen[bytes] | None = None
    noop: Remote | None = None
    gen: Remote | None = None
    spy: subprocess.Popen[bytes] | None = None
    pg = PgStore.unique(args.pg_url) if args.store == "postgresql" else None
    try:
        progress(f"dev home: {persons:,} persons, {employers:,} employers in {root}")
        server: dict[str, Any] = {"workers": args.workers}
        if args.io_threads:
            server["io_threads"] = args.io_threads
        if args.workers > 1:
            server["listen"] = f"127.0.0.1:{free_port()}"
        metrics_port = free_port()  # worker i serves its metrics on metrics_port + i
        server["metrics_listen"] = f"127.0.0.1:{metrics_port}"
        if args.query_batch_wait_ms is not None:
            server["query_batch_wait_ms"] = args.query_batch_wait_ms
        if args.query_batch_fixed:
            server["query_batch_adaptive"] = False
        if args.gc_young_every_ms is not None:
            server["gc_young_every_ms"] = args.gc_young_every_ms
        if args.gil_switch_interval_ms is not None:
            server["gil_switch_interval_ms"] = args.gil_switch_interval_ms
        if args.cpu_affinity is not None:
            server["cpu_affinity"] = args.cpu_affinity
        if args.event_loop is not None:
            server["event_loop"] = args.event_loop
        extra: dict[str, Any] = {}  # further sections of the gateway's configuration
        if args.commit_delay_ms is not None:
            extra["audit"] = {"commit_delay_ms": args.commit_delay_ms}
        if pg is None:
            dev = make_dev_home(
                root / "home",
                persons=persons,
                employers=employers,
                seed=DEV_SEED,
                server=server,
                extra=extra,
            )
        else:
            progress(f"  sources and consent store in PostgreSQL, schemas {pg.prefix}*")
            dev, generated = make_pg_home(
                root / "home", pg, persons=persons, employers=employers, server=server, extra=extra
            )
            result["pg_generate_s"] = round(generated, 1)
            progress(f"  PostgreSQL sources generated in {generated:.1f} s")
        try:
            config = load_config(dev.config)
        except ConfigError as exc:  # a flag's value the gateway refuses: one line, exit 2
            print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
            return 2
        subjects = graduates(dev.data, args.subjects, pg)
        purposes = (QUERY_PURPOSE, QUERY2_PURPOSE) if args.method == "query2" else (QUERY_PURPOSE,)
        consents = grant_consents(config, subjects, purposes)
        progress(f"  {len(subjects):,} subjects with a graduation record; {consents:,} consents stored")
        if not subjects:
            raise RuntimeError("no subject holds a graduation record")

        gateway, port = start_gateway(dev.config, dev.home)
        pids = worker_pids(gateway, args.workers)
        progress(f"gateway: port {port}, {args.workers} worker(s), pid(s) {pids}")
        ca, cert, key = dev.agency_credentials("hrss")
        creds = (ca.read_bytes(), cert.read_bytes(), key.read_bytes())
        gen = Remote(ctx, loadgen_main, creds, subjects, args.channels, args.method)
        probe = gen.call("check", port=port)
        rpc = METHODS[args.method]
        if not probe["found"] or not probe["found"][0]:  # the graduation record, at least
            raise RuntimeError(f"the probe {rpc} found {probe['found']}")
        progress(f"  a {rpc} answer is {probe['bytes']} bytes on the wire")

        noop = Remote(ctx, noop_server_main, str(dev.pki), args.method, probe["raw"], args.noop_event_loop)
        noop_port, noop_loop = noop.conn.recv()
        progress(f"no-op server: port {noop_port}, on {noop_loop}")
        gen.call("check", port=noop_port)

        progress(
            f"closed loop of {rpc} calls ({args.method}), each level against the no-op server"
            f" then the gateway ({seconds:g} s per level, {args.channels} channels)"
        )
        if args.py_spy is not None and args.py_spy_phase == "closed":
            spy = start_spy(args.py_spy, pids[0], int(2 * len(levels) * (seconds + warmup) + 2))
        metrics_ports = [metrics_port + i for i in range(args.workers)]
        noop_levels: list[dict[str, Any]] = []
        gw_levels: list[dict[str, Any]] = []
        for level in levels:  # interleaved: a change of the machine's pace meets both alike
            noop_levels += sweep(gen, noop_port, [level], seconds, warmup, "noop   ", [noop.proc.pid or 0])
            gw_levels += sweep(gen, port, [level], seconds, warmup, "gateway", pids, metrics_ports)
        if spy is not None:
            spy.wait(timeout=120)
            spy = None
            progress(f"  py-spy profile in {args.py_spy}")

        peak = max(gw_levels, key=lambda r: r["qps"])
        noop_peak = max(noop_levels, key=lambda r: r["qps"])
        rate = args.rate or max(1.0, args.load * peak["qps"])
        progress(
            f"paced load at {rate:,.0f} calls/s ({rate / peak['qps']:.0%} of the gateway's peak),"
            f" {paced_seconds:g} s"
        )
        before_each = scrape_each(metrics_ports, rpc)
        before = joined(before_each)
        if args.py_spy is not None and args.py_spy_phase == "paced":
            spy = start_spy(args.py_spy, pids[0], int(paced_seconds + warmup))
        machine, cpu = read_machine(), cpu_seconds(pids)
        paced = gen.call("paced", port=port, rate=rate, seconds=paced_seconds, warmup=warmup)
        paced["machine_busy"] = machine_busy_share(machine, read_machine())
        paced["server_cpu_ms_per_call"] = round(
            1000 * (cpu_seconds(pids) - cpu) / max(1, paced["all_answered"]), 3
        )
        if spy is not None:
            spy.wait(timeout=120)
            spy = None
            progress(f"  py-spy profile in {args.py_spy}")
        after_each = scrape_each(metrics_ports, rpc)
        after = joined(after_each)
        paced["calls_per_worker"] = calls_per_worker(before_each, after_each)
        paced["query_batch_mean"] = batch_mean(before, after)
        load = batch_wait_now(after)
        paced["query_batch_wait_ms"], paced["loop_busy"] = load if load is not None else (None, None)
        paced["handler_over_20ms"] = handler_over_bound(before, after)
        paced["gc_pauses"], paced["gc_pauses_over_5ms"] = gc_pauses_over_bound(before, after)
        progress(
            f"  gateway p50 {paced['p50_ms']:.2f} ms  p90 {paced['p90_ms']:.2f} ms"
            f"  p99 {paced['p99_ms']:.2f} ms"
            f"  ({paced['answered']:,} answered, max in flight {paced['max_in_flight']},"
            f" sent up to {paced['send_lag_p99_ms']:.2f} ms late (p99)"
            + (f", {paced['query_batch_mean']:.2f} calls/batch" if paced["query_batch_mean"] else "")
            + (f", {load_text(paced)}" if paced["query_batch_wait_ms"] is not None else "")
            + ")"
        )
        if paced["handler_over_20ms"] is not None and paced["all_over_20ms"] is not None:
            progress(
                f"  over 20 ms: {paced['all_over_20ms']:.1%} of the calls at the client,"
                f" {paced['handler_over_20ms']:.1%} inside the gateway's handler (warm-up included)"
            )
        progress(
            f"  server CPU {paced['server_cpu_ms_per_call']:.3f} ms/call"
            + (f", machine {paced['machine_busy']:.0%} busy" if paced["machine_busy"] is not None else "")
            + (f", calls per worker {paced['calls_per_worker']}" if args.workers > 1 else "")
        )
        progress(
            f"  garbage collections in the gateway: {paced['gc_pauses']:,},"
            f" {paced['gc_pauses_over_5ms']:,} of them over {GC_BOUND_S * 1000:g} ms"
        )
        noop_paced = gen.call("paced", port=noop_port, rate=rate, seconds=paced_seconds / 2, warmup=warmup)
        progress(f"  no-op   p50 {noop_paced['p50_ms']:.2f} ms  p99 {noop_paced['p99_ms']:.2f} ms")

        progress(f"BatchVerify: {batch_items:,} subjects on one stream, messages of 500")
        batch_subjects = all_persons(dev.data, pg)
        if args.py_spy is not None and args.py_spy_phase == "batch":
            spy = start_spy(args.py_spy, pids[0], 8)
        batch = gen.call("batch", port=port, subjects=batch_subjects, items=batch_items, chunk=500)
        if spy is not None:
            spy.wait(timeout=120)
            spy = None
            progress(f"  py-spy profile in {args.py_spy}")
        progress(f"  {batch['per_s']:,} subjects/s ({batch['seconds']:.2f} s; {batch['results']})")

        gen.stop()
        gen = None
        noop.proc.terminate()
        noop.proc.join(timeout=10)
        noop = None
        code = stop_gateway(gateway)
        gateway = None
        progress(f"gateway drained, exit {code}; verifying the audit log")
        verified, per_log = verify_audit(config)
        entries = sum(per_log)
        progress(
            f"  audit verified: {verified}, {entries:,} entries"
            + (f" ({' / '.join(f'{n:,}' for n in per_log)} per worker)" if len(per_log) > 1 else "")
        )

        qps = peak["qps"]
        noop_qps = noop_peak["qps"]
        gw_errors = sum(sum(r["errors"].values()) for r in gw_levels) + sum(paced["errors"].values())
        result.update(
            {
                "qps": qps,
                "noop_qps": noop_qps,
                "ratio": round(qps / noop_qps, 3) if noop_qps else None,
                "p50_ms": paced["p50_ms"],
                "p99_ms": paced["p99_ms"],
                "p99_rate_qps": paced["rate_qps"],
                "p99_achieved_qps": paced["achieved_qps"],
                "batch_verify_per_s": batch["per_s"],
                "concurrency": peak["concurrency"],
                "noop_concurrency": noop_peak["concurrency"],
                "server_cpu_ms_per_call": peak["server_cpu_ms_per_call"],
                "noop_server_cpu_ms_per_call": noop_peak["server_cpu_ms_per_call"],
                "loop_cpu_ms_per_call": peak["loop_cpu_ms_per_call"],
                "noop_loop_cpu_ms_per_call": noop_peak["loop_cpu_ms_per_call"],
                "client_cpu_ms_per_call": peak["client_cpu_ms_per_call"],
                "noop_client_cpu_ms_per_call": noop_peak["client_cpu_ms_per_call"],
                "machine_busy": peak["machine_busy"],
                "noop_machine_busy": noop_peak["machine_busy"],
                "paced_machine_busy": paced["machine_busy"],
                "paced_server_cpu_ms_per_call": paced["server_cpu_ms_per_call"],
                "query_batch_mean": peak["query_batch_mean"],
                "paced_query_batch_mean": paced["query_batch_mean"],
                "paced_query_batch_wait_ms": paced["query_batch_wait_ms"],
                "paced_loop_busy": paced["loop_busy"],
                "paced_client_over_20ms": paced["all_over_20ms"],
                "paced_handler_over_20ms": paced["handler_over_20ms"],
                "paced_send_lag_p99_ms": paced["send_lag_p99_ms"],
                "paced_gc_pauses": paced["gc_pauses"],
                "paced_gc_pauses_over_5ms": paced["gc_pauses_over_5ms"],
                "paced_calls_per_worker": paced["calls_per_worker"],
                "gc_young_every_ms": config.server.gc_young_every_ms,
                "gil_switch_interval_ms": config.server.gil_switch_interval_ms,
                "cpu_affinity": config.server.cpu_affinity,
                "commit_delay_ms": config.audit.commit_delay_ms,
                "query_batch_wait_ms": config.server.query_batch_wait_ms,
                "query_batch_adaptive": config.server.query_batch_adaptive,
                "event_loop": config.server.event_loop,
                "noop_event_loop": noop_loop,
                "peak_p50_ms": peak["p50_ms"],
                "peak_p99_ms": peak["p99_ms"],
                "noop_p50_ms": noop_paced["p50_ms"],
                "noop_p99_ms": noop_paced["p99_ms"],
                "gateway_errors": gw_errors,
                "audit_verified": verified and code == 0,
                "audit_entries": entries,
                "audit_entries_per_worker": per_log,
                "gateway_exit": code,
                "workers": args.workers,
                "io_threads": config.server.io_threads,
                "channels": args.channels,
                "persons": persons,
                "subjects": len(subjects),
                "response_bytes": probe["bytes"],
                "levels": {
                    "gateway": {r["concurrency"]: r["qps"] for r in gw_levels},
                    "noop": {r["concurrency"]: r["qps"] for r in noop_levels},
                },
                "paced": paced,
                "batch": batch,
                "goals": {
                    "ratio_ge_0_5": qps >= 0.5 * noop_qps,
                    "p99_le_20ms_at_70pct": paced["p99_ms"] <= 20.0,
                    "batch_verify_ge_20000": batch["per_s"] >= 20_000,
                },
            }
        )
    finally:
        if spy is not None:
            spy.kill()
        if gen is not None:
            gen.stop()
        if noop is not None:
            noop.proc.terminate()
        if gateway is not None:
            stop_gateway(gateway)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if pg is not None:
            try:
                if args.keep is not None:
                    progress(f"kept the PostgreSQL schemas: {', '.join(pg.schemas())}")
                else:
                    progress(f"dropped the run's {len(pg.drop())} PostgreSQL schemas ({pg.prefix}*)")
            except Exception as exc:  # the run's own error, if any, matters more
                progress(f"could not drop the PostgreSQL schemas {pg.prefix}*: {exc}")
    result["seconds"] = round(time.perf_counter() - STARTED, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
