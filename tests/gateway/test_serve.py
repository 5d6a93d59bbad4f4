"""``dsgw serve`` as a process (``python -m gateway serve``): SIGTERM under load lets the calls in
flight finish, refuses new ones cleanly, closes the audit log and exits 0 (the log then
verifies); a bad configuration stops the start with exit 2 and a one-line reason."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.client import GatewayClient, GatewayError
from gateway.config import load_config
from gateway.devsetup import DEFAULT_AGREEMENTS, DevHome
from gateway.server.app import port_taken
from tests.gateway.conftest import (
    REPO,
    Subjects,
    free_port,
    read_audit,
    serve_env,
    serving,
    write_gateway_config,
)


def dsgw(*argv: str) -> list[str]:
    return [sys.executable, "-m", "gateway", *argv]


_env = serve_env


@dataclass
class Caller:
    """One thread calling the gateway in a loop until refused (or told to stop)."""

    client: GatewayClient
    subjects: list[str]
    ok: list[str] = field(default_factory=list)
    refusal: GatewayError | None = None
    #: Calls that were started before SIGTERM and answered after it.
    finished_after_term: int = 0
    term_at: list[float] = field(default_factory=list)

    def run(self, stop: threading.Event) -> None:
        i = 0
        while not stop.is_set():
            subject = self.subjects[i % len(self.subjects)]
            i += 1
            rid = f"load-{uuid.uuid4().hex}"
            started = time.monotonic()
            try:
                self.client.verify(
                    subject,
                    "employment_assistance",
                    "civil_affairs",
                    "receives_subsistence_allowance",
                    request_id=rid,
                    timeout=10,
                )
            except GatewayError as exc:
                self.refusal = exc
                return
            self.ok.append(rid)
            if self.term_at and started < self.term_at[0] < time.monotonic():
                self.finished_after_term += 1


@pytest.fixture
def served(dev_home: DevHome, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    config = write_gateway_config(
        dev_home, tmp_path / "serve-home", server={"drain_seconds": 5.0, "io_threads": 8}
    )
    with serving(config, tmp_path) as (proc, port):
        yield proc, config, port


def test_sigterm_under_load_drains_and_exits_zero(
    served: tuple[subprocess.Popen[bytes], Path, int], dev_home: DevHome, subjects: Subjects
) -> None:
    proc, config_path, port = served
    callers = []
    for _ in range(8):
        ca, cert, key = dev_home.agency_credentials("hrss")
        client = GatewayClient(f"127.0.0.1:{port}", ca=ca, cert=cert, key=key, timeout=10)
        callers.append(Caller(client, subjects.assisted + subjects.unknown))
    stop = threading.Event()
    threads = [threading.Thread(target=c.run, args=(stop,), daemon=True) for c in callers]
    try:
        for t in threads:
            t.start()
        time.sleep(0.8)  # load builds up
        assert all(c.ok for c in callers), "every caller is answered before SIGTERM"
        term_at = time.monotonic()
        for c in callers:
            c.term_at.append(term_at)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        stop.set()
        for t in threads:
            t.join(timeout=15)
        assert not any(t.is_alive() for t in threads), "a call hung"
    finally:
        stop.set()
        for c in callers:
            c.client.close()
    for c in callers:
        # every call either succeeded or, once the gateway went away, was refused cleanly
        if c.refusal is not None:
            assert c.refusal.code in ("UNAVAILABLE", "CANCELLED"), c.refusal
    answered = [rid for c in callers for rid in c.ok]
    assert len(answered) > 50
    # calls in flight when SIGTERM arrived were answered, not dropped
    assert sum(c.finished_after_term for c in callers) >= 1

    # the log was closed cleanly: it verifies, and every answered call is in it
    audit_dir = load_config(config_path).audit_dir()
    result = subprocess.run(
        dsgw("audit", "verify", "--log", str(audit_dir)),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    entries = {e.request_id for e in read_audit(config_path.parent, [audit_dir])}
    assert set(answered) <= entries


def _verify_assisted(client: GatewayClient, subjects: Subjects, prefix: str) -> str:
    """One Verify of a subsistence recipient under a new request id; returns the id."""
    rid = f"{prefix}-{uuid.uuid4().hex}"
    client.verify(
        subjects.assisted[0],
        "employment_assistance",
        "civil_affairs",
        "receives_subsistence_allowance",
        request_id=rid,
    )
    return rid


def test_two_workers_share_the_port_and_keep_their_own_logs(
    dev_home: DevHome, subjects: Subjects, tmp_path: Path
) -> None:
    """server.workers = 2: two processes on one port (SO_REUSEPORT), connections spread over
    them, each worker audits into its own log, SIGTERM drains both and the parent exits 0."""
    home = tmp_path / "two"
    port = free_port()
    config = write_gateway_config(
        dev_home, home, server={"listen": f"127.0.0.1:{port}", "workers": 2, "metrics_listen": ""}
    )
    with serving(config, tmp_path) as (proc, _):  # ready once every worker listens
        deadline = time.monotonic() + 60
        ca, cert, key = dev_home.agency_credentials("hrss")
        answered: list[str] = []
        # every new channel is a new connection, which the kernel gives to either worker
        while len(answered) < 12 and time.monotonic() < deadline:
            try:
                with GatewayClient(f"127.0.0.1:{port}", ca=ca, cert=cert, key=key, timeout=10) as client:
                    answered.append(_verify_assisted(client, subjects, "two"))
            except GatewayError:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                raise
        assert len(answered) == 12
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    cfg = load_config(config)
    logs = cfg.audit_dirs()
    assert [d.name for d in logs] == ["gw1", "gw1-w1"]
    for d in logs:
        result = subprocess.run(
            dsgw("audit", "verify", "--log", str(d)), cwd=REPO, env=_env(), capture_output=True, timeout=60
        )
        assert result.returncode == 0, result.stderr.decode()
    per_log = [{e.request_id for e in read_audit(home, [d])} for d in logs]
    assert set(answered) == per_log[0] | per_log[1]
    assert not per_log[0] & per_log[1]
    assert per_log[0] and per_log[1], "both workers served calls"


def test_one_long_lived_channel_is_spread_over_the_workers_by_connection_age(
    dev_home: DevHome, subjects: Subjects, tmp_path: Path
) -> None:
    """server.max_connection_age_s: the gateway asks a connection to reconnect (GOAWAY) after that
    long, so ONE client channel (an agency's long-lived connection) reaches both workers over time
    instead of the one the kernel gave its first connection; no call fails meanwhile."""
    home = tmp_path / "aged"
    port = free_port()
    config = write_gateway_config(
        dev_home,
        home,
        server={
            "listen": f"127.0.0.1:{port}",
            "workers": 2,
            "metrics_listen": "",
            "max_connection_age_s": 0.2,
        },
    )
    with serving(config, tmp_path) as (proc, _):
        ca, cert, key = dev_home.agency_credentials("hrss")
        answered: list[str] = []
        with GatewayClient(f"127.0.0.1:{port}", ca=ca, cert=cert, key=key, timeout=10) as client:
            for _ in range(40):  # about 4 s: some 20 connections, each given to either worker
                answered.append(_verify_assisted(client, subjects, "aged"))
                time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    per_log = [{e.request_id for e in read_audit(home, [d])} for d in load_config(config).audit_dirs()]
    assert per_log[0] | per_log[1] == set(answered)
    assert per_log[0] and per_log[1], "one channel reached both workers"


def test_server_options_recycle_connections_only_when_asked(dev_home: DevHome, tmp_path: Path) -> None:
    from gateway.server.app import server_options

    aged = load_config(write_gateway_config(dev_home, tmp_path / "a"))
    assert ("grpc.max_connection_age_ms", 600_000) in server_options(aged)  # the default: 10 minutes
    never = load_config(write_gateway_config(dev_home, tmp_path / "b", server={"max_connection_age_s": 0}))
    assert not any(name == "grpc.max_connection_age_ms" for name, _ in server_options(never))


# --- bad configuration -------------------------------------------------------------------------


def _with(agreements: list[dict[str, Any]], index: int, **changes: Any) -> list[dict[str, Any]]:
    out = [dict(a) for a in agreements]
    out[index].update(changes)
    return out


BASE = [dict(a) for a in DEFAULT_AGREEMENTS]

#: name -> (write_gateway_config keywords, words the one-line reason must contain)
BAD_CONFIGS: dict[str, tuple[Mapping[str, Any], tuple[str, ...]]] = {
    "unknown-agency": ({"agreements": _with(BASE, 0, consumer="police")}, ("unknown agency", "police")),
    "field-not-offered": (
        {"agreements": _with(BASE, 0, fields=["level", "school_name", "shoe_size"])},
        ("offers no field", "shoe_size"),
    ),
    "overlapping-agreements": (
        {"agreements": [*BASE, {**BASE[0], "id": "hrss-education-graduation-2"}]},
        ("overlaps", "hrss-education-graduation"),
    ),
    "unknown-key": ({"server": {"listen": "127.0.0.1:0", "threads": 4}}, ("unknown key", "server.threads")),
    "unsupported-provider-url": (
        {"providers": {"education": {"url": "mysql://user:secret@db/education"}}},
        ("providers.education.url", "'mysql' databases are not supported"),
    ),
    "missing-provider-database": (
        {"providers": {"education": {"url": "sqlite:////nonexistent-dsgw/education.sqlite"}}},
        ("providers.education.url", "no SQLite database file", "/nonexistent-dsgw/education.sqlite"),
    ),
    "unsupported-consent-store": (
        {"extra": {"consent": {"store": "mysql://user:secret@db/consent"}}},
        ("consent.store", "'mysql' databases are not supported"),
    ),
    "consent-store-in-a-missing-directory": (
        {"extra": {"consent": {"store": "sqlite:////nonexistent-dsgw/dir/consent.sqlite"}}},
        ("consent.store", "/nonexistent-dsgw/dir does not exist"),
    ),
}


@pytest.fixture(scope="module")
def bad_configs(dev_home: DevHome, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("bad-config")
    paths = {
        name: write_gateway_config(dev_home, directory / name, **kw) for name, (kw, _) in BAD_CONFIGS.items()
    }
    paths["good"] = write_gateway_config(dev_home, directory / "good")
    return paths


@pytest.fixture(scope="module")
def bad_starts(bad_configs: dict[str, Path]) -> dict[str, subprocess.CompletedProcess[str]]:
    """``python -m gateway serve --config BAD`` for every bad configuration (run concurrently),
    and ``--check --json`` of the good one."""
    procs: dict[str, subprocess.Popen[str]] = {}
    for name, path in bad_configs.items():
        extra = ["--check", "--json"] if name == "good" else []
        procs[name] = subprocess.Popen(
            dsgw("serve", "--config", str(path), *extra),
            cwd=REPO,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=60)
        out[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return out


def _one_line_reason(code: int, stdout: str, stderr: str, name: str) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("dsgw: ")
    for word in BAD_CONFIGS[name][1]:
        assert word in lines[0], lines[0]
    assert "secret" not in lines[0]  # a URL's password is never echoed
    assert stdout == ""


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_configuration_fails_at_start_with_one_line(
    bad_starts: dict[str, subprocess.CompletedProcess[str]], name: str
) -> None:
    run = bad_starts[name]
    _one_line_reason(run.returncode, run.stdout, run.stderr, name)


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_configuration_fails_the_check_with_one_line(
    bad_configs: dict[str, Path], capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """``dsgw serve --config BAD --check`` (the CLI's main in this process; the same main that
    ``python -m gateway`` runs, as test_bad_configuration_fails_at_start_with_one_line shows)."""
    from gateway.cli import main

    code = main(["serve", "--config", str(bad_configs[name]), "--check"])
    captured = capsys.readouterr()
    _one_line_reason(code, captured.out, captured.err, name)


def test_good_configuration_checks(bad_starts: dict[str, subprocess.CompletedProcess[str]]) -> None:
    run = bad_starts["good"]
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["ok"] is True and report["agreements"] == len(DEFAULT_AGREEMENTS)


def _start_fails(config: Path, *words: str) -> None:
    """``dsgw serve`` exits 2 with one ``dsgw:`` line naming the problem (after its JSON log
    lines), no traceback."""
    run = subprocess.run(
        dsgw("serve", "--config", str(config)),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("dsgw: "), run.stderr
    for word in words:
        assert word in last, last


def test_a_second_gateway_on_the_same_audit_log_fails_to_start_with_one_line(
    served: tuple[subprocess.Popen[bytes], Path, int],
) -> None:
    _proc, config, _port = served  # the same home: its audit log is held by the running gateway
    _start_fails(config, "audit log", "open for writing by another process")


def test_a_taken_port_fails_to_start_with_one_line(dev_home: DevHome, tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        grpc_taken = write_gateway_config(
            dev_home, tmp_path / "a", server={"listen": f"127.0.0.1:{port}", "metrics_listen": ""}
        )
        _start_fails(grpc_taken, f"cannot listen on 127.0.0.1:{port}", "server.listen")
        metrics_taken = write_gateway_config(
            dev_home, tmp_path / "b", server={"listen": "127.0.0.1:0", "metrics_listen": f"127.0.0.1:{port}"}
        )
        _start_fails(metrics_taken, "cannot serve metrics", "server.metrics_listen")


def test_a_listen_host_that_does_not_resolve_fails_the_preflight(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from gateway.errors import StartError
    from gateway.server import app

    def no_such_host(*_args: Any, **_kw: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    with pytest.raises(StartError, match=r"^server\.listen: cannot use host '999\.1\.1\.1' \(Name or"):
        app._check_listen_host("999.1.1.1:7443")


def test_a_port_another_gateway_listens_on_fails_to_start(dev_home: DevHome, tmp_path: Path) -> None:
    """Another gateway's workers listen with SO_REUSEPORT, as ours do: without the probe the new
    gateway would silently share the port with it (the kernel spreading the connections)."""
    import socket

    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        config = write_gateway_config(
            dev_home, tmp_path / "a", server={"listen": f"127.0.0.1:{port}", "metrics_listen": ""}
        )
        _start_fails(config, f"cannot listen on 127.0.0.1:{port}", "in use by another process")
        assert port_taken(f"127.0.0.1:{port}") and port_taken(f"localhost:{port}")
    assert not port_taken(f"127.0.0.1:{port}")
    assert not port_taken("127.0.0.1:0")


@pytest.mark.parametrize(
    "case", ["crl-of-another-ca", "missing-crl", "missing-ca", "key-of-another-cert", "agency-cert-as-server"]
)
def test_tls_files_a_start_cannot_use_fail_it_and_the_check_with_one_line(
    case: str, dev_home: DevHome, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a foreign or missing CRL let the gateway start and say SERVING while refusing every
    call; with two workers a bad TLS file gave each worker's traceback."""
    from gateway import pki
    from gateway.cli import main

    other = pki.init_pki(tmp_path / "other-pki")
    tls = {
        "ca": str(dev_home.pki / "ca.crt"),
        "cert": str(dev_home.pki / "server.crt"),
        "key": str(dev_home.pki / "server.key"),
        "crl": str(dev_home.pki / "crl.pem"),
    }
    change, key = {
        "crl-of-another-ca": ({"crl": str(other.crl)}, "tls.crl"),
        "missing-crl": ({"crl": str(tmp_path / "nowhere" / "crl.pem")}, "tls.crl"),
        "missing-ca": ({"ca": str(tmp_path / "nowhere" / "ca.crt")}, "tls (ca, cert, key)"),
        "key-of-another-cert": ({"key": str(other.server_key)}, "tls (ca, cert, key)"),
        # an agency's client certificate (it chains and its key matches; it cannot serve TLS)
        "agency-cert-as-server": (
            {
                "cert": str(dev_home.pki / "agencies" / "hrss.crt"),
                "key": str(dev_home.pki / "agencies" / "hrss.key"),
            },
            "not a server certificate",
        ),
    }[case]
    config = write_gateway_config(
        dev_home,
        tmp_path / "home",
        server={"listen": f"127.0.0.1:{free_port()}", "workers": 2, "metrics_listen": ""},
        extra={"tls": {**tls, **change}},
    )
    _start_fails(config, key)
    capsys.readouterr()
    assert main(["serve", "--config", str(config), "--check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and key in err


def test_a_health_watch_ends_cleanly_at_drain(
    served: tuple[subprocess.Popen[bytes], Path, int], dev_home: DevHome
) -> None:
    """A watcher is told NOT_SERVING and its stream then ends with OK, so the drain does not wait
    for it (it held every drain for all of drain_seconds, then was cancelled with a traceback)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    proc, _config, port = served
    ca, cert, key = dev_home.agency_credentials("hrss")
    creds = grpc.ssl_channel_credentials(ca.read_bytes(), key.read_bytes(), cert.read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=30
        )
        statuses = [next(stream).status]
        proc.send_signal(signal.SIGTERM)
        statuses += [r.status for r in stream]  # ends without an error: grpc.RpcError otherwise
        assert stream.code() is grpc.StatusCode.OK
    assert statuses == [health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING]
    assert proc.wait(timeout=30) == 0
