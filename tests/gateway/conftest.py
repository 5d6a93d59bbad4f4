"""Shared fixtures of the gateway integration tests: one development home per session (synthetic
data for 2000 persons and 200 employers, a development PKI with every agency's certificate),
subjects picked from that data through the adapters, and helpers to run a gateway over loopback
gRPC with real certificates, grant consents over the ConsentService, and read the audit log with
the review tools once the gateway has stopped.

Each test module starts its own gateway (own home: keys, consent store, audit log) over the
shared data and PKI, so that modules do not see each other's consents, rate-limit buckets or
audit entries."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from adapters.agencies import Agency
from adapters.contract import Adapter, Subject, SubjectKind, SubjectNotFound
from adapters.registry import close_adapters, open_adapters
from adapters.sources import sqlite_sources
from audit.entry import AuditEntry
from dsgw.v1 import common_pb2, consent_pb2, consent_pb2_grpc, exchange_pb2_grpc
from gateway import pki
from gateway.client import GatewayClient
from gateway.config import GatewayConfig, ServerSection, load_config
from gateway.devsetup import DEFAULT_AGREEMENTS, DevHome, make_dev_home, write_config
from gateway.identity.resident_id import make_resident_id
from gateway.server import app
from gateway.server.app import BackgroundGateway
from gateway.server.wire import agency_to_wire, timestamp_to

PERSONS = 2000
EMPLOYERS = 200


# --- the development home and its subjects -----------------------------------------------------


@pytest.fixture(scope="session")
def dev_home(tmp_path_factory: pytest.TempPathFactory) -> DevHome:
    """Synthetic data, PKI and agency certificates (the home's own gateway.toml is not used)."""
    return make_dev_home(tmp_path_factory.mktemp("dsgw") / "home", persons=PERSONS, employers=EMPLOYERS)


@dataclass(frozen=True)
class Subjects:
    """Test subjects found in the synthetic data (each list in a stable order)."""

    #: Persons education holds a graduation record of, with the record's values.
    graduates: list[tuple[str, Mapping[str, Any]]]
    #: Persons civil_affairs holds a current assistance record of.
    assisted: list[str]
    #: Persons hrss holds an employment-status record of, with hard_to_employ true.
    hard_to_employ: list[str]
    #: Persons hrss holds a person-insurance record of.
    insured: list[str]
    #: Employers market_regulation holds a registration of.
    employers: list[str]
    #: Valid identity numbers no agency holds anything about.
    unknown: list[str]
    #: The adapters' own answers for predicates, per (agency, predicate, subject id).
    answers: dict[tuple[str, str, str], bool | None] = field(default_factory=dict)


def _found(adapter: Adapter, dataset: str, subject: Subject) -> Mapping[str, Any] | None:
    try:
        return adapter.fetch(dataset, subject).values
    except SubjectNotFound:
        return None


def _pick(
    adapter: Adapter,
    dataset: str,
    ids: Sequence[str],
    kind: SubjectKind,
    n: int,
    want: Any = None,
) -> list[tuple[str, Mapping[str, Any]]]:
    out: list[tuple[str, Mapping[str, Any]]] = []
    for sid in ids:
        values = _found(adapter, dataset, Subject(kind, sid))
        if values is not None and (want is None or want(values)):
            out.append((sid, values))
            if len(out) >= n:
                break
    assert len(out) >= n, f"the synthetic data has too few subjects for {dataset}"
    return out


@pytest.fixture(scope="session")
def subjects(dev_home: DevHome) -> Subjects:
    with contextlib.closing(sqlite3.connect(f"file:{dev_home.data / 'truth.sqlite'}?mode=ro", uri=True)) as c:
        persons = [r[0] for r in c.execute("SELECT person_id FROM person ORDER BY substr(person_id, 11)")]
        grads = [
            r[0]
            for r in c.execute(
                "SELECT person_id FROM person WHERE graduation_date IS NOT NULL"
                " ORDER BY substr(person_id, 11)"
            )
        ]
        hard = [
            r[0]
            for r in c.execute("SELECT person_id FROM person WHERE hard_to_employ = 1 ORDER BY person_id")
        ]
        assisted = [
            r[0]
            for r in c.execute(
                "SELECT person_id FROM person WHERE household_id IS NOT NULL ORDER BY person_id"
            )
        ]
        employers = [r[0] for r in c.execute("SELECT credit_code FROM employer ORDER BY credit_code")]
    known = set(persons)
    adapters = open_adapters(sqlite_sources(dev_home.data))
    person = SubjectKind.PERSON
    try:
        graduates = _pick(adapters[Agency.EDUCATION], "graduation", grads, person, 14)
        assisted_found = _pick(adapters[Agency.CIVIL_AFFAIRS], "assistance", assisted, person, 6)
        hard_found = _pick(
            adapters[Agency.HRSS], "employment_status", hard, person, 3, lambda v: v["hard_to_employ"]
        )
        taken = {s for s, _ in graduates}  # keep the consent subjects of different tests apart
        insured = _pick(
            adapters[Agency.HRSS], "person_insurance", [p for p in persons if p not in taken], person, 12
        )
        regs = _pick(
            adapters[Agency.MARKET_REGULATION], "business_registration", employers, SubjectKind.EMPLOYER, 4
        )
        unknown: list[str] = []
        sequence = 997
        while len(unknown) < 3:
            sid = make_resident_id("120101", dt.date(1961, 2, 3), sequence)
            sequence -= 1
            s = Subject(person, sid)
            if sid in known:
                continue
            if any(
                _found(a, d.name, s) is not None
                for a in adapters.values()
                for d in a.describe().datasets
                if d.subject_kind is person
            ):
                continue
            unknown.append(sid)
        answers: dict[tuple[str, str, str], bool | None] = {}
        civil = adapters[Agency.CIVIL_AFFAIRS]
        hrss = adapters[Agency.HRSS]
        for sid in [s for s, _ in assisted_found] + [s for s, _ in insured] + unknown:
            for agency, adapter, predicate in (
                ("civil_affairs", civil, "receives_subsistence_allowance"),
                ("hrss", hrss, "currently_insured"),
            ):
                try:
                    answers[(agency, predicate, sid)] = adapter.evaluate(predicate, Subject(person, sid))
                except SubjectNotFound:
                    answers[(agency, predicate, sid)] = None
    finally:
        close_adapters(adapters)
    return Subjects(
        graduates=graduates,
        assisted=[s for s, _ in assisted_found],
        hard_to_employ=[s for s, _ in hard_found],
        insured=[s for s, _ in insured],
        employers=[s for s, _ in regs],
        unknown=unknown,
        answers=answers,
    )


# --- a running gateway -------------------------------------------------------------------------


REPO = Path(__file__).resolve().parents[2]


def serve_env() -> dict[str, str]:
    """The environment of a ``dsgw serve`` child: this one without ``DSGW_*`` overrides, the
    repository on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSGW_")}
    env["PYTHONPATH"] = str(REPO)
    return env


@contextlib.contextmanager
def serving(config: Path, directory: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``python -m gateway serve --config CONFIG`` as a child process (its output in
    ``DIRECTORY/serve.log``): yields it and its port once it listens; killed at the end (continued
    first, in case a test stopped it)."""
    ready = directory / "ready.json"
    with (directory / "serve.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--ready-file", str(ready)],
            cwd=REPO,
            env=serve_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, (directory / "serve.log").read_text()
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.05)
        yield proc, int(json.loads(ready.read_text())["port"])
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        proc.wait()


def write_gateway_config(
    dev: DevHome,
    home: Path,
    *,
    agreements: Sequence[Mapping[str, Any]] = DEFAULT_AGREEMENTS,
    providers: Mapping[str, Mapping[str, Any]] | None = None,
    server: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    name: str = "gateway.toml",
) -> Path:
    """A configuration for a gateway whose home is ``home`` (keys, consent store, audit log) over
    the shared synthetic data and PKI."""
    home.mkdir(parents=True, exist_ok=True)
    tls = {
        "ca": str(dev.pki / "ca.crt"),
        "cert": str(dev.pki / "server.crt"),
        "key": str(dev.pki / "server.key"),
        "crl": str(dev.pki / "crl.pem"),
    }
    return write_config(
        home / name,
        home=home,
        data=dev.data,
        agreements=agreements,
        server=server,
        providers=providers,
        extra={"tls": tls, **(extra or {})},
    )


@dataclass
class Gateway:
    """One BackgroundGateway on a loopback port, and mTLS channels to it as any agency."""

    dev: DevHome
    home: Path
    config: GatewayConfig
    background: BackgroundGateway
    port: int
    channels: list[grpc.Channel] = field(default_factory=list)
    clients: list[GatewayClient] = field(default_factory=list)
    stopped: bool = False

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def audit_dir(self) -> Path:
        return self.config.audit_dir()

    def client(self, agency: Agency | str, *, timeout: float = 5.0) -> GatewayClient:
        ca, cert, key = self.dev.agency_credentials(agency)
        c = GatewayClient(self.target, ca=ca, cert=cert, key=key, timeout=timeout)
        self.clients.append(c)
        return c

    def channel(self, agency: Agency | str) -> grpc.Channel:
        ca, cert, key = self.dev.agency_credentials(agency)
        ch = grpc.secure_channel(self.target, pki.client_channel_credentials(ca, cert, key))
        self.channels.append(ch)
        return ch

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        for c in self.clients:
            c.close()
        for ch in self.channels:
            ch.close()
        self.background.stop(grace=5.0)


def start_gateway(dev: DevHome, home: Path, **config: Any) -> Gateway:
    path = write_gateway_config(dev, home, **config)
    cfg = load_config(path)
    background = BackgroundGateway(cfg).start()
    return Gateway(dev=dev, home=home, config=cfg, background=background, port=background.port)


@pytest.fixture(scope="module")
def gateway(dev_home: DevHome, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The module's gateway with the development agreement catalogue."""
    gw = start_gateway(dev_home, tmp_path_factory.mktemp("gw") / "home")
    try:
        yield gw
    finally:
        gw.stop()


# --- consent over gRPC -------------------------------------------------------------------------


def consent_stub(gw: Gateway, agency: Agency | str) -> consent_pb2_grpc.ConsentServiceStub:
    return consent_pb2_grpc.ConsentServiceStub(gw.channel(agency))


def exchange_stub(gw: Gateway, agency: Agency | str) -> exchange_pb2_grpc.DataExchangeStub:
    return exchange_pb2_grpc.DataExchangeStub(gw.channel(agency))


def subject_ref(subject: str) -> common_pb2.SubjectRef:
    return common_pb2.SubjectRef(id=subject)


def grant_request(
    subject: str,
    scope: Sequence[tuple[str, str, Sequence[str]]],
    purposes: Sequence[str],
    *,
    consumers: Sequence[str] = (),
    separate: bool = False,
    days: float = 30,
    request_id: str = "",
) -> consent_pb2.GrantConsentRequest:
    req = consent_pb2.GrantConsentRequest(
        subject=subject_ref(subject),
        consumers=[agency_to_wire(Agency(c)) for c in consumers],
        purposes=list(purposes),
        valid_to=timestamp_to(dt.datetime.now(dt.UTC) + dt.timedelta(days=days)),
        separate=separate,
        channel="counter",
        evidence_ref=f"form-{uuid.uuid4().hex[:8]}",
        notice_version="v1",
        request_id=request_id,
    )
    for provider, dataset, fields in scope:
        req.scope.add(provider=agency_to_wire(Agency(provider)), dataset=dataset, fields=list(fields))
    return req


def grant(
    gw: Gateway,
    agency: str,
    subject: str,
    scope: Sequence[tuple[str, str, Sequence[str]]],
    purposes: Sequence[str],
    **kw: Any,
) -> consent_pb2.ConsentChangeResponse:
    """Grant a consent over gRPC as ``agency`` (the consumer unless ``consumers`` is given)."""
    resp: consent_pb2.ConsentChangeResponse = consent_stub(gw, agency).Grant(
        grant_request(subject, scope, purposes, **kw), timeout=5
    )
    return resp


def client_grant(
    client: GatewayClient,
    subject: str,
    datasets: Sequence[tuple[str, str, Sequence[str]]],
    purposes: Sequence[str],
    *,
    uses: int = 0,
) -> str:
    """Grant a consent through the Python client (channel app, 30 days, ``uses`` 0: no limit);
    returns its id."""
    consent, _ = client.grant_consent(
        subject,
        datasets,
        purposes,
        valid_days=30,
        use_limit=uses,
        channel="app",
        evidence_ref=f"APP-{uuid.uuid4().hex[:12]}",
        notice_version="v1",
    )
    return str(consent.consent_id)


def revoke(gw: Gateway, agency: str, consent_id: str, subject: str) -> consent_pb2.ConsentChangeResponse:
    resp: consent_pb2.ConsentChangeResponse = consent_stub(gw, agency).Revoke(
        consent_pb2.RevokeConsentRequest(
            consent_id=consent_id, subject=subject_ref(subject), channel="counter", evidence_ref="rev-1"
        ),
        timeout=5,
    )
    return resp


# --- the audit log -----------------------------------------------------------------------------


def read_audit(home: Path, logs: Sequence[Path]) -> list[AuditEntry]:
    """Every entry of ``logs`` (decrypted with the home's auditor key), through the review tools'
    search (audit.review.query), in time order."""
    from audit.keys import FileKeyProvider
    from audit.layout import HomeKeys
    from audit.review.query import AuditorKeys, Criteria, LogSet

    keys = AuditorKeys(provider=FileKeyProvider.from_private_key_file(HomeKeys(home).auditor_key))
    since = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    with LogSet.open(list(logs), keys) as logset:
        result = logset.search(Criteria(since=since))
    return [e.entry for e in result.entries]


def entries_of(entries: Sequence[AuditEntry], request_id: str) -> list[AuditEntry]:
    return [e for e in entries if e.request_id == request_id]


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``dsgw ARGV`` in this process: (exit code, stdout, stderr)."""
    from gateway.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


class WorkerStarted(Exception):
    """Raised by :class:`_StopAtStart`: ``_run_worker`` got as far as starting its worker."""


class _StopAtStart:
    """A stand-in for ``gateway.server.app.Worker`` whose start raises :class:`WorkerStarted`."""

    def __init__(self, config: Any, worker: int) -> None:
        pass

    async def start(self) -> int:
        raise WorkerStarted

    async def stop(self, grace: float | None = None) -> None:
        pass


def run_worker_setup(monkeypatch: pytest.MonkeyPatch, server: ServerSection, worker: int = 0) -> None:
    """Run the real ``_run_worker`` with ``server`` as far as starting worker ``worker``: what it
    sets up first (switch interval, CPU affinity) and nothing more."""
    monkeypatch.setattr(app, "Worker", _StopAtStart)
    with pytest.raises(WorkerStarted):
        app.run_loop(app._run_worker(SimpleNamespace(server=server), worker), "asyncio")  # type: ignore[arg-type]


def free_port() -> int:
    """A loopback port free now (for a gateway whose workers need a fixed one)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
