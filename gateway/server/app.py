"""Starting, running and draining the gateway (``dsgw serve``).

One worker process = one grpc.aio server with its own audit log (as each X-Road security server
keeps its own), adapters, consent-store connections, I/O threads and metrics port. With
``server.workers`` > 1 the parent starts that many workers that all listen on the same port
(SO_REUSEPORT: the kernel spreads connections over them, so both cores serve) and forwards
SIGTERM to them; the consent store is shared (a revocation is seen by the next call on every
worker), and ``dsgw audit verify|search|report`` read the workers' logs together.

SIGTERM (or SIGINT): health turns NOT_SERVING, the server stops taking calls, in-flight calls get
``server.drain_seconds`` to finish, then the audit log is closed with a final checkpoint, and the
process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import multiprocessing
import os
import queue
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.engine import make_url

from adapters.agencies import Agency
from adapters.contract import Adapter
from adapters.registry import open_adapter
from adapters.resilience import ResiliencePolicy
from audit.checkpoints import CheckpointPolicy
from audit.errors import AuditError
from audit.layout import HomeKeys
from audit.log import AuditLog, init_log
from dsgw.v1 import consent_pb2, consent_pb2_grpc, exchange_pb2, exchange_pb2_grpc
from gateway import pki
from gateway.config import GatewayConfig, split_address
from gateway.consent.receipts import load_receipt_signer
from gateway.consent.service import ConsentService
from gateway.consent.store import ConsentStore
from gateway.errors import DsgwError, StartError
from gateway.exchange import Exchange
from gateway.pipeline.record import consent_hook
from gateway.server import affinity
from gateway.server.gc_pacing import PauseObserver, collect_young
from gateway.server.metrics import GatewayMetrics
from gateway.server.servicers import Authenticator, ConsentServicer, DataExchangeServicer

__all__ = ["BackgroundGateway", "Worker", "ensure_home", "serve"]

_log = structlog.get_logger("gateway.serve")
T = TypeVar("T")

SERVICE_NAMES = (
    exchange_pb2.DESCRIPTOR.services_by_name["DataExchange"].full_name,
    consent_pb2.DESCRIPTOR.services_by_name["ConsentService"].full_name,
)


def ensure_home(config: GatewayConfig) -> None:
    """The home's audit keys, one audit log per worker and the consent store's tables, created on
    first start (once, before any worker starts: workers starting together must not race to
    create them)."""
    home = config.home_dir
    keys = HomeKeys(home)
    if not keys.checkpoint_key.exists():
        keys.generate()
    loaded = keys.load()
    for worker in range(config.server.workers):
        directory = config.audit_dir(worker)
        if not (directory / "log.json").exists():
            node = config.node if worker == 0 else f"{config.node}-w{worker}"
            init_log(directory, loaded, node=node, suite=config.audit.suite)
    ConsentStore(config.consent_store_url(), schema=config.consent.store_schema).close()  # the tables


class _WatchContext:
    """A Watch call's context that remembers the last status it wrote."""

    def __init__(self, context: Any) -> None:
        self._context = context
        self.last: int | None = None
        self.written = asyncio.Event()

    async def write(self, message: health_pb2.HealthCheckResponse) -> None:
        await self._context.write(message)
        self.last = message.status
        self.written.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class _DrainingHealth(health.aio.HealthServicer):  # type: ignore[misc]
    """grpc.health.v1 whose Watch streams end (status OK) once a drain has told them NOT_SERVING.
    An open Watch (a monitoring system's) would otherwise hold every drain for all of
    ``drain_seconds`` and then be cancelled, with a traceback in the log."""

    _TELL_S = 1.0
    """How long a drain waits for a watcher to be told NOT_SERVING before ending its stream."""

    def __init__(self) -> None:
        super().__init__()
        self._draining = asyncio.Event()

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        told = _WatchContext(context)
        watch = asyncio.ensure_future(super().Watch(request, told))
        drained = asyncio.ensure_future(self._draining.wait())
        try:
            await asyncio.wait({watch, drained}, return_when=asyncio.FIRST_COMPLETED)
            deadline = asyncio.get_running_loop().time() + self._TELL_S
            while not watch.done() and told.last != health_pb2.HealthCheckResponse.NOT_SERVING:
                told.written.clear()
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(told.written.wait(), left)
        finally:
            drained.cancel()
            if not watch.done():
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
        if not watch.cancelled():
            watch.result()  # a failure of the stream itself

    async def enter_graceful_shutdown(self) -> None:
        await super().enter_graceful_shutdown()  # every watcher is notified: NOT_SERVING
        self._draining.set()


@dataclass
class Worker:
    """Everything one server process runs on (built by :meth:`start`)."""

    config: GatewayConfig
    worker: int = 0
    server: grpc.aio.Server | None = None
    port: int = 0
    metrics_port: int = 0
    audit: AuditLog | None = None
    adapters: dict[Agency, Adapter] = field(default_factory=dict)
    store: ConsentStore | None = None
    executor: ThreadPoolExecutor | None = None
    health: Any = None
    exchange: Exchange | None = None
    _expiry: asyncio.Task[None] | None = None
    _gc_task: asyncio.Task[None] | None = None
    _gc_pauses: PauseObserver | None = None

    async def start(self, *, bind: str | None = None) -> int:
        c = self.config
        try:
            self.audit = AuditLog.open(
                c.audit_dir(self.worker),
                home=c.home_dir,
                policy=CheckpointPolicy(
                    every_entries=c.audit.checkpoint_every, every_seconds=c.audit.checkpoint_seconds
                ),
                index="process",  # the index follower runs in a child process: off this one's lock
                commit_delay=c.audit.commit_delay_ms / 1000,
            )
        except AuditError as exc:  # locked by another gateway, corrupt, not this home's keys
            raise StartError(f"the audit log cannot be opened: {exc}") from None
        node = c.node if self.worker == 0 else f"{c.node}-w{self.worker}"
        policy = ResiliencePolicy(
            attempts=c.resilience.attempts,
            fail_max=c.resilience.fail_max,
            reset_timeout_s=c.resilience.reset_timeout_s,
        )
        self.adapters = {a: open_adapter(a, p.source(), policy) for a, p in c.providers.items()}
        self.store = ConsentStore(
            c.consent_store_url(), schema=c.consent.store_schema, create=False
        )  # ensure_home made the tables
        on_event = consent_hook(self.audit.append, node)
        # a gm gateway signs receipts with SM2; otherwise the home decides (a home that holds an
        # SM2 receipt key stays gm, as dsgw consent does)
        signer = load_receipt_signer(c.home_dir, "gm" if c.audit.suite == "gm" else None)
        consent = ConsentService(self.store, catalogue=c.catalogue, signer=signer, on_event=on_event)
        self.executor = ThreadPoolExecutor(c.server.io_threads, thread_name_prefix="dsgw-io")
        metrics = GatewayMetrics(self.worker)
        metrics.watch_circuits({a.value: _circuit_state(ad) for a, ad in self.adapters.items()})
        self.exchange = Exchange(
            c,
            adapters=self.adapters,
            consent=consent,
            audit=self.audit,
            executor=self.executor,
            metrics=metrics,
        )
        load = self.exchange.batch_load
        if load is not None:
            metrics.watch_batch_wait(lambda: load.wait, lambda: load.busy)
        dev = c.server.insecure_dev_plaintext
        if dev:
            auth = Authenticator(None, None, dev_plaintext=True)
        else:
            checker = pki.RevocationChecker(c.tls_file("crl"), c.tls_file("ca"))
            auth = Authenticator(pki.agency_from_certificate, checker.is_revoked)

        self.server = grpc.aio.server(options=server_options(c))
        exchange_pb2_grpc.add_DataExchangeServicer_to_server(
            DataExchangeServicer(self.exchange, auth, metrics), self.server
        )
        consent_pb2_grpc.add_ConsentServiceServicer_to_server(
            ConsentServicer(self.exchange, auth, metrics), self.server
        )
        self.health = _DrainingHealth()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        address = bind or c.server.listen
        if dev:
            _log.warning(
                "serve.plaintext", detail="listening WITHOUT TLS (development flag); never in production"
            )
        try:
            if dev:
                self.port = self.server.add_insecure_port(address)
            else:
                creds = pki.ServerCredentialsReloader(
                    c.tls_file("cert"), c.tls_file("key"), c.tls_file("ca")
                ).credentials()
                self.port = self.server.add_secure_port(address, creds)
        except RuntimeError:  # grpc: "Failed to bind to address ..."
            self.port = 0
        if self.port == 0:
            raise StartError(
                f"cannot listen on {address} (server.listen): "
                "the port is in use or the address is not this host's"
            )
        if c.server.metrics_listen:
            host, mport = split_address(c.server.metrics_listen)
            wanted = mport + self.worker if mport else 0
            try:
                self.metrics_port = metrics.serve(host, wanted)
            except OSError as exc:
                raise StartError(
                    f"cannot serve metrics on {host}:{wanted} (server.metrics_listen): {exc.strerror or exc}"
                ) from None
        await self.server.start()
        for name in (*SERVICE_NAMES, ""):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._expiry = asyncio.get_running_loop().create_task(self._expire_loop(consent))
        # Long-lived start-up objects (descriptors, adapters, protobuf classes) out of the
        # collector's way, and fewer young-generation collections on the request path.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 50, 100)
        self._gc_pauses = PauseObserver(metrics.gc_pause)
        if c.server.gc_young_every_ms > 0:  # short collections instead of one long one
            self._gc_task = asyncio.get_running_loop().create_task(
                collect_young(c.server.gc_young_every_ms / 1000)
            )
        _log.info(
            "serve.started", port=self.port, worker=self.worker, metrics_port=self.metrics_port, node=node
        )
        return self.port

    async def _expire_loop(self, consent: ConsentService) -> None:
        """Record consent expiries (each audited) once a minute; only worker 0 does it."""
        if self.worker != 0:
            return
        while True:
            try:
                assert self.executor is not None
                await asyncio.get_running_loop().run_in_executor(self.executor, consent.expire)
            except Exception as exc:  # the next round tries again
                _log.warning("consent.expire_failed", error=type(exc).__name__)
            await asyncio.sleep(60)

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING, stop taking calls, let in-flight calls finish within ``grace``,
        then close the log (final checkpoint), adapters and stores."""
        if self.health is not None:
            await self.health.enter_graceful_shutdown()
        if self._expiry is not None:
            self._expiry.cancel()
        if self._gc_task is not None:
            self._gc_task.cancel()
        if self._gc_pauses is not None:
            self._gc_pauses.close()
        if self.server is not None:
            await self.server.stop(self.config.server.drain_seconds if grace is None else grace)
        if self.executor is not None:
            self.executor.shutdown(wait=True)
        for adapter in self.adapters.values():
            adapter.close()
        if self.audit is not None:
            self.audit.close()
        if self.store is not None:
            self.store.close()
        _log.info("serve.stopped", worker=self.worker)


def _circuit_state(adapter: Adapter) -> Callable[[], str]:
    source = getattr(adapter, "source", None)
    circuit = getattr(source, "circuit", None)
    return (lambda: str(circuit.state)) if circuit is not None else (lambda: "closed")


async def _run_worker(config: GatewayConfig, worker: int, ready: Callable[[int], None] | None = None) -> None:
    # The event loop shares the interpreter lock with the audit committer and I/O threads
    # (server.gil_switch_interval_ms: how long a thread waits for it before asking the holder
    # to let go; docs/gateway.md).
    sys.setswitchinterval(config.server.gil_switch_interval_ms / 1000)
    if config.server.cpu_affinity == "spread":  # before gRPC starts its threads: they inherit it
        _log.info("serve.cpu_affinity", worker=worker, cpu=affinity.pin_worker(worker))
    w = Worker(config, worker)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        port = await w.start()
        if ready is not None:
            ready(port)
        await stop.wait()
    finally:
        await w.stop()


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new event loop of the kind ``server.event_loop`` names; asyncio's own, with a warning,
    where uvloop is not installed."""
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            _log.warning("serve.event_loop", detail="uvloop is not installed: running on asyncio's loop")
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run_loop(main: Coroutine[Any, Any, T], kind: str) -> T:
    """Run ``main`` to completion on a new event loop of the kind ``server.event_loop`` names."""
    with asyncio.Runner(loop_factory=lambda: new_event_loop(kind)) as runner:
        return runner.run(main)


START_FAILED_EXIT = 2
"""A worker's exit code when it cannot start (its one-line reason is on stderr)."""


def _worker_main(config: GatewayConfig, worker: int, started: Any) -> None:
    from gateway import logs

    logs.configure(level=os.environ.get("DSGW_LOG_LEVEL", "INFO"))
    try:
        main = _run_worker(config, worker, lambda port: started.put((worker, port)))
        run_loop(main, config.server.event_loop)
    except DsgwError as exc:  # one line, as the single-process gateway says it
        print(f"dsgw: worker {worker}: {exc}", file=sys.stderr)
        sys.exit(START_FAILED_EXIT)


def _serve_workers(config: GatewayConfig, ready: Callable[[int], None] | None) -> int:
    """The parent of ``server.workers`` worker processes: starts them, tells ``ready`` once every
    one listens, forwards SIGTERM / SIGINT (a signal that arrives while workers are still
    starting is held until they can drain), and exits 0 only if every worker did."""
    ctx = multiprocessing.get_context("spawn")
    started = ctx.Queue()
    procs = [
        ctx.Process(target=_worker_main, args=(config, w, started), name=f"dsgw-w{w}")
        for w in range(config.server.workers)
    ]
    state = {"stop": False, "ready": False}

    def stop_all() -> None:
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    def forward(signum: int, _frame: Any) -> None:
        state["stop"] = True
        if state["ready"]:
            stop_all()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for p in procs:
        p.start()
    waiting = set(range(len(procs)))
    deadline = time.monotonic() + 120
    while waiting and time.monotonic() < deadline:
        try:
            worker, _port = started.get(timeout=0.2)
            waiting.discard(worker)
        except queue.Empty:
            if any(p.exitcode is not None for p in procs):
                break  # a worker failed to start: stop the others
    state["ready"] = True
    if waiting or state["stop"]:
        stop_all()
    elif ready is not None:
        ready(int(config.server.listen.rpartition(":")[2]))
    codes = []
    for p in procs:
        p.join()
        codes.append(p.exitcode or 0)
    if waiting:
        _log.error("serve.worker_not_started", workers=sorted(waiting))
        return 2 if START_FAILED_EXIT in codes else 1
    return 0 if all(code == 0 for code in codes) else 1


def preflight(config: GatewayConfig) -> None:
    """What a start needs beyond a valid configuration, checked before anything listens (and by
    ``dsgw serve --check``): a fixed port for several workers; the server certificate, key and CA
    readable and matching; a CRL signed by that CA and current (else every call would be refused
    while health said SERVING). :class:`StartError` naming the key."""
    if config.server.workers > 1 and config.server.listen.endswith(":0"):
        raise StartError("server.listen: server.workers > 1 needs a fixed port (the workers share it)")
    _check_listen_host(config.server.listen)
    if config.server.cpu_affinity != "none" and not affinity.can_pin():
        raise StartError(
            f"server.cpu_affinity: {config.server.cpu_affinity} needs a platform where a process "
            "chooses its CPUs (Linux); set it to none"
        )
    _check_databases(config)
    if config.server.insecure_dev_plaintext:
        return
    try:
        pki.ServerCredentialsReloader(
            config.tls_file("cert"), config.tls_file("key"), config.tls_file("ca")
        ).initial_configuration()
    except pki.PkiError as exc:
        raise StartError(f"tls (ca, cert, key): {exc}") from None
    try:
        pki.RevocationChecker(config.tls_file("crl"), config.tls_file("ca")).check()
    except pki.PkiError as exc:
        raise StartError(f"tls.crl: {exc}") from None


def server_options(config: GatewayConfig) -> list[tuple[str, int]]:
    """The grpc server's channel arguments: the workers share the port (SO_REUSEPORT), messages up
    to 16 MiB, keepalive pings allowed between calls, and connections recycled after
    ``server.max_connection_age_s`` (GOAWAY; no grace limit: calls and streams in flight finish)."""
    options = [
        ("grpc.so_reuseport", 1),
        ("grpc.max_receive_message_length", 16 * 2**20),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    age = config.server.max_connection_age_s
    if age > 0:
        options.append(("grpc.max_connection_age_ms", max(1, round(age * 1000))))
    return options


def _check_listen_host(listen: str) -> None:
    """StartError unless the host of ``listen`` resolves (an IP literal, or a name this host's
    resolver knows): found now, not after the audit log and the stores are open."""
    host, _ = split_address(listen)
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not an address"
        raise StartError(f"server.listen: cannot use host {host[:64]!r} ({reason})") from None


def _check_databases(config: GatewayConfig) -> None:
    """StartError for an SQLite file a start would not find: a provider's database (the adapters
    never create one), or the directory of an explicitly configured consent store (it would be
    created empty, and every consent check would then answer CONSENT_MISSING)."""
    for agency, section in sorted(config.providers.items(), key=lambda item: item[0].value):
        url = make_url(section.url)
        if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
            raise StartError(f"providers.{agency.value}.url: no SQLite database file at {url.database}")
    if config.consent.store:
        url = make_url(config.consent.store)
        folder = Path(url.database or "").parent
        if (
            url.get_backend_name() == "sqlite"
            and url.database not in (None, "", ":memory:")
            and not folder.is_dir()
        ):
            raise StartError(f"consent.store: the directory {folder} does not exist")


def port_taken(listen: str) -> bool:
    """Whether another process already listens on the fixed port of ``listen`` (HOST:PORT). The
    workers bind with SO_REUSEPORT (they share the port), which would also let them share it,
    without a word, with another gateway or any program that set that option: a probe bind
    without it fails then (EADDRINUSE). Port 0, or an address that does not resolve, is left to
    the real bind to judge."""
    host, port = split_address(listen)
    if port == 0:
        return False
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError, ValueError):
        return False
    for family, kind, proto, _, address in found:
        try:  # an address family the kernel lacks (IPv6 disabled) is the real bind's to judge
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "taken"
                probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
    return False


def serve(config: GatewayConfig, *, ready: Callable[[int], None] | None = None) -> int:
    """Run the gateway until SIGTERM; returns the exit code (0 after a clean drain)."""
    preflight(config)
    if port_taken(config.server.listen):
        raise StartError(
            f"cannot listen on {config.server.listen} (server.listen): the port is in use by another process"
        )
    ensure_home(config)
    if config.server.workers == 1:
        run_loop(_run_worker(config, 0, ready), config.server.event_loop)
        return 0
    return _serve_workers(config, ready)


class BackgroundGateway:
    """One worker on its own event loop in a daemon thread (tests, the demo, benchmarks):

    with BackgroundGateway(config) as gw:
        client = GatewayClient(f"127.0.0.1:{gw.port}", ...)
    """

    def __init__(self, config: GatewayConfig) -> None:
        import threading

        self.config = config
        self.worker = Worker(config)
        self._loop = new_event_loop(config.server.event_loop)
        self._thread = threading.Thread(target=self._loop.run_forever, name="dsgw-gateway", daemon=True)
        self.port = 0

    def start(self) -> BackgroundGateway:
        ensure_home(self.config)
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self.worker.start(), self._loop).result(timeout=60)
        return self

    def stop(self, grace: float | None = None) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.worker.stop(grace), self._loop).result(timeout=120)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> BackgroundGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
