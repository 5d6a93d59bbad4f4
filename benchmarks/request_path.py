"""Benchmark: the gateway's own request path in one process, without gRPC (a diagnostic).

    python benchmarks/request_path.py [--quick] [--levels K,...] [--calls N] [--repeats R]

``benchmarks/gateway.py`` measures the gateway end to end, where gRPC, TLS, the load generator
and the machine's noise weigh as much as the gateway's own work. This one measures only that
work, with the CPU time of the thread that does it, which varies far less from run to run.

It builds a development home in a temporary directory (``gateway.devsetup.make_dev_home``: 5,000
persons and 500 employers, seed 7), grants hrss a consent to read the graduation record of every
subject the education source holds (as the gateway benchmark does), starts one gateway worker in
this process (``gateway.server.app.Worker``: the real audit log with its committer thread,
consent store, adapters and batches; its gRPC port is bound but not used) on uvloop, and drives
``DataExchangeServicer.Query`` directly with K concurrent callers on the worker's event loop:
each call a real ``QueryRequest`` (three fields of education's graduation record, purpose
graduate_employment, a new request id), and a call context that presents the hrss client
certificate, as gRPC would after the TLS handshake. So every step runs: authentication and
revocation check, agreement, purpose, rate limit, request id, the consent decision in the store,
the provider fetch, minimise and mask, the durable audit append, the response message and the
metrics. The callers of a level call in step, so each batch holds one call of each (K per
batch; over gRPC, batches form from the calls that arrive within the batch's wait).

For each level K (default 1,4,12,32) it runs ``--calls`` calls (default 24,000; --quick 6,000)
after a warm-up, ``--repeats`` times (default 3), and reports the median of:

* ``loop_cpu_ms_per_call``: CPU time of the event loop's thread per call (``time.thread_time``);
  the gateway benchmark's ``loop_cpu_ms_per_call`` less what gRPC adds (measured apart: about
  0.11 ms per call on the project's machines, docs/gateway.md) is this figure inflated by the
  server's other work;
* ``process_cpu_ms_per_call``: CPU time of the whole process per call (the audit committer and
  the other threads too);
* ``wall_ms_per_call`` and ``batch_mean`` (calls per consent and fetch batch).

Every answer is checked (found, the three fields); a call that fails or answers otherwise makes
the run fail (exit 1). Logs as the gateway runs them (level WARNING). Last line: one JSON object.
No goal: it is the figure to compare when changing the request path.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUERY_PURPOSE = "graduate_employment"
FIELDS = ("level", "school_name", "graduation_date")


def _gateway_benchmark() -> ModuleType:
    """benchmarks/gateway.py as a module (its helpers: the subjects and their consents)."""
    path = Path(__file__).resolve().parent / "gateway.py"
    spec = importlib.util.spec_from_file_location("dsgw_benchmark_gateway", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class PeerContext:
    """What the servicer reads of a gRPC call's context: the peer's certificate (as gRPC's auth
    context holds it after the TLS handshake), the time left and the metadata."""

    def __init__(self, pem: bytes, seconds: float = 10.0) -> None:
        self._pem = pem
        self._seconds = seconds

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [bytes(self._pem)], "transport_security_type": [b"ssl"]}

    def time_remaining(self) -> float:
        return self._seconds

    def invocation_metadata(self) -> tuple[()]:
        return ()

    async def abort_with_status(self, status: Any) -> None:
        raise RuntimeError(f"the call was refused: {status.details}")

    async def abort(self, code: Any, details: str) -> None:
        raise RuntimeError(f"the call failed: {code} {details}")


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


async def measure(
    bench: ModuleType,
    config: Any,
    pem: bytes,
    subjects: list[str],
    levels: list[int],
    calls: int,
    repeats: int,
) -> dict[str, Any]:
    from prometheus_client import generate_latest

    from adapters.agencies import Agency
    from dsgw.v1 import common_pb2, exchange_pb2
    from gateway import pki
    from gateway.server.app import Worker
    from gateway.server.servicers import Authenticator, DataExchangeServicer
    from gateway.server.wire import agency_to_wire

    worker = Worker(config)
    await worker.start(bind="127.0.0.1:0")
    try:
        x = worker.exchange
        assert x is not None
        checker = pki.RevocationChecker(config.tls_file("crl"), config.tls_file("ca"))
        servicer = DataExchangeServicer(
            x, Authenticator(pki.agency_from_certificate, checker.is_revoked), x.metrics
        )
        context = PeerContext(pem)
        provider = agency_to_wire(Agency.EDUCATION)
        ids = itertools.count()
        prefix = f"rp{os.getpid()}"
        registry = x.metrics.registry  # type: ignore[attr-defined]  # the worker's GatewayMetrics

        def counters() -> dict[str, float]:  # the worker's batches, as the gateway benchmark reads them
            return bench.gateway_counters(generate_latest(registry).decode())  # type: ignore[no-any-return]

        async def caller(n: int, offset: int) -> None:
            for i in range(n):
                request = exchange_pb2.QueryRequest(
                    meta=common_pb2.RequestMeta(
                        request_id=f"{prefix}-{next(ids)}", purpose=common_pb2.Purpose(code=QUERY_PURPOSE)
                    ),
                    subject=common_pb2.SubjectRef(id=subjects[(offset + i * 7919) % len(subjects)]),
                )
                request.datasets.add(provider=provider, dataset="graduation", fields=FIELDS)
                answer = await servicer.Query(request, context)  # type: ignore[arg-type]  # for gRPC's
                result = answer.results[0]
                if not result.found or sorted(result.values) != sorted(FIELDS):
                    raise RuntimeError(
                        f"unexpected answer: found={result.found} fields={sorted(result.values)}"
                    )

        async def level(k: int, n: int) -> tuple[float, float, float, float | None]:
            per = max(1, n // k)
            before = counters()
            thread0, process0, wall0 = time.thread_time(), time.process_time(), time.perf_counter()
            await asyncio.gather(*(caller(per, j * 101) for j in range(k)))
            done = per * k
            return (
                (time.thread_time() - thread0) / done * 1000,
                (time.process_time() - process0) / done * 1000,
                (time.perf_counter() - wall0) / done * 1000,
                bench.batch_mean(before, counters()),
            )

        out: dict[str, Any] = {}
        for k in levels:
            await level(k, max(k * 20, calls // 10))  # warm-up
            runs = [await level(k, calls) for _ in range(repeats)]
            loop_cpu = [r[0] for r in runs]
            figures = {
                "loop_cpu_ms_per_call": median(loop_cpu),
                "process_cpu_ms_per_call": median([r[1] for r in runs]),
                "wall_ms_per_call": median([r[2] for r in runs]),
                "batch_mean": median(sizes) if (sizes := [r[3] for r in runs if r[3] is not None]) else None,
                "spread_loop_cpu_ms": [round(min(loop_cpu), 4), round(max(loop_cpu), 4)],
            }
            out[str(k)] = figures
            print(
                f"K={k:<3} event loop {figures['loop_cpu_ms_per_call']:.4f} ms/call"
                f" (runs {figures['spread_loop_cpu_ms'][0]:.4f}-{figures['spread_loop_cpu_ms'][1]:.4f}),"
                f" process {figures['process_cpu_ms_per_call']:.4f}, wall {figures['wall_ms_per_call']:.4f}"
                + (f", {figures['batch_mean']:.1f} calls/batch" if figures["batch_mean"] else ""),
                file=sys.stderr,
                flush=True,
            )
        return out
    finally:
        await worker.stop(grace=1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6,000 calls per level")
    parser.add_argument(
        "--levels", default="1,4,12,32", help="concurrent callers per level (default %(default)s)"
    )
    parser.add_argument("--calls", type=int, default=None, help="calls per level and repeat")
    parser.add_argument("--repeats", type=int, default=3, help="runs per level (the median is reported)")
    args = parser.parse_args(argv)
    try:
        levels = [int(v) for v in args.levels.split(",")]
    except ValueError:
        parser.error("--levels: comma-separated whole numbers")
    if not levels or min(levels) < 1:
        parser.error("--levels: each level is at least 1")
    calls = args.calls if args.calls is not None else (6000 if args.quick else 24_000)
    if calls < 1 or args.repeats < 1:
        parser.error("--calls and --repeats are at least 1")

    import uvloop

    from gateway import logs
    from gateway.config import load_config
    from gateway.devsetup import make_dev_home
    from gateway.server.app import ensure_home

    logs.configure(level="WARNING")
    bench = _gateway_benchmark()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dsgw-bench-path-") as tmp:
        dev = make_dev_home(Path(tmp) / "home", persons=5000, employers=500, seed=bench.DEV_SEED)
        config = load_config(dev.config)
        subjects = bench.graduates(dev.data, 2000)
        bench.grant_consents(config, subjects)
        ensure_home(config)
        print(
            f"{len(subjects):,} subjects, levels {levels}, {calls:,} calls x {args.repeats}", file=sys.stderr
        )
        pem = dev.agency_credentials("hrss")[1].read_bytes()  # (ca, certificate, key)
        try:
            figures = uvloop.run(measure(bench, config, pem, subjects, levels, calls, args.repeats))
        except RuntimeError as exc:  # a call refused, failed or answered otherwise
            print(f"request_path: {exc}", file=sys.stderr)
            return 1
    result = {
        "benchmark": "request_path",
        "quick": args.quick,
        "calls": calls,
        "repeats": args.repeats,
        "subjects": len(subjects),
        "levels": figures,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
