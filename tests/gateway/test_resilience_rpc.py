"""Provider failures seen through the gateway over real loopback gRPC: a provider that is down
answers UNAVAILABLE within the caller's deadline (with a retry delay), opens its circuit breaker
after ``resilience.fail_max`` failures, and the breaker closes again once the provider is back;
a provider that accepts connections and never answers is cut off at the caller's deadline.
Every failed provider access is audited (allowed, outcome failed)."""

from __future__ import annotations

import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from audit.entry import AuditEntry
from gateway.client import GatewayClient, GatewayError, VerifyResult
from gateway.devsetup import DevHome
from tests.gateway.conftest import Gateway, Subjects, entries_of, grant, read_audit, run_cli, start_gateway

RESET_S = 1.0
FAIL_MAX = 2


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP connections and never answers (a hung database)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


@pytest.fixture(scope="module")
def civil_db(dev_home: DevHome, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of civil_affairs' database that the tests move away and back."""
    directory = tmp_path_factory.mktemp("civil")
    path = directory / "civil_affairs.sqlite"
    shutil.copy(dev_home.data / "civil_affairs.sqlite", directory / "aside.sqlite")
    return path  # absent: the provider is down when the gateway starts


@pytest.fixture(scope="module")
def gateway(
    dev_home: DevHome, tmp_path_factory: pytest.TempPathFactory, civil_db: Path, silent_port: int
) -> Iterator[Gateway]:
    gw = start_gateway(
        dev_home,
        tmp_path_factory.mktemp("gw-resilience") / "home",
        providers={
            "civil_affairs": {"url": f"sqlite:///{civil_db}", "call_timeout_s": 2.0},
            "market_regulation": {
                "url": f"postgresql://dsgw@127.0.0.1:{silent_port}/none",
                "connect_timeout_s": 1.0,
                "call_timeout_s": 5.0,
            },
        },
        extra={"resilience": {"attempts": 2, "fail_max": FAIL_MAX, "reset_timeout_s": RESET_S}},
    )
    try:
        yield gw
    finally:
        gw.stop()


def _verify(client: GatewayClient, subject: str, rid: str, timeout: float = 2.0) -> VerifyResult:
    return client.verify(
        subject,
        "employment_assistance",
        "civil_affairs",
        "receives_subsistence_allowance",
        request_id=rid,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def request_ids() -> dict[str, list[str]]:
    return {"failed": [], "ok": [], "hung": []}


def test_provider_down_opens_the_breaker_and_closes_when_back(
    gateway: Gateway, subjects: Subjects, civil_db: Path, request_ids: dict[str, list[str]]
) -> None:
    client = gateway.client("hrss")
    subject = subjects.assisted[0]
    reasons = []
    for _ in range(FAIL_MAX + 1):
        rid = f"down-{uuid.uuid4().hex[:12]}"
        started = time.monotonic()
        with pytest.raises(GatewayError) as exc:
            _verify(client, subject, rid)
        elapsed = time.monotonic() - started
        assert exc.value.code == "UNAVAILABLE"
        assert exc.value.retry_after_s is not None and exc.value.retry_after_s > 0
        assert exc.value.metadata.get("provider") == "civil_affairs"
        assert elapsed < 2.0  # within the deadline
        reasons.append(exc.value.reason)
        request_ids["failed"].append(rid)
    # fail_max failures open the breaker: the next call fails fast without trying the provider
    assert reasons == ["PROVIDER_UNAVAILABLE"] * FAIL_MAX + ["CIRCUIT_OPEN"]

    # a retry of a failed request id runs again (an UNAVAILABLE answer is not kept)
    with pytest.raises(GatewayError) as again:
        _verify(client, subject, request_ids["failed"][0])
    assert again.value.reason == "CIRCUIT_OPEN"

    # the provider comes back; the breaker lets a trial call through after its reset timeout
    shutil.move(civil_db.parent / "aside.sqlite", civil_db)
    deadline = time.monotonic() + RESET_S + 3.0
    while True:
        rid = f"back-{uuid.uuid4().hex[:12]}"
        try:
            answer = _verify(client, subject, rid)
            break
        except GatewayError as exc:
            assert exc.code == "UNAVAILABLE" and exc.reason == "CIRCUIT_OPEN", exc
            assert time.monotonic() < deadline, "the breaker did not close"
            time.sleep(0.2)
    request_ids["ok"].append(rid)
    assert answer.result is subjects.answers[("civil_affairs", "receives_subsistence_allowance", subject)]
    # closed: the following calls are answered
    for _ in range(3):
        rid = f"closed-{uuid.uuid4().hex[:12]}"
        _verify(client, subject, rid)
        request_ids["ok"].append(rid)
    # and a retry of the failed request id is now answered
    assert _verify(client, subject, request_ids["failed"][0]).result is answer.result
    request_ids["ok"].append(request_ids["failed"][0])


def _ask_hung(client: GatewayClient, employer: str, rid: str) -> tuple[GatewayError, float]:
    """A Query of market_regulation (the hung provider) with a 1.5 s deadline: its error and
    how long it took."""
    started = time.monotonic()
    with pytest.raises(GatewayError) as exc:
        client.query(
            employer,
            "hiring_subsidy",
            [("market_regulation", "business_registration", ["name"])],
            request_id=rid,
            timeout=1.5,
        )
    return exc.value, time.monotonic() - started


def test_hung_provider_fails_cleanly_at_the_deadline(
    gateway: Gateway, subjects: Subjects, request_ids: dict[str, list[str]]
) -> None:
    rid = f"hung-{uuid.uuid4().hex[:12]}"
    error, elapsed = _ask_hung(gateway.client("hrss"), subjects.employers[0], rid)
    request_ids["hung"].append(rid)
    # The gateway stops waiting for the provider at the caller's deadline (less the time kept to
    # audit and answer), whatever the driver does: UNAVAILABLE PROVIDER_TIMEOUT, audited.
    assert error.code == "UNAVAILABLE", error
    assert elapsed < 1.5 + 0.5
    assert error.reason == "PROVIDER_TIMEOUT" and error.retry_after_s is not None


def test_concurrent_calls_to_a_hung_server_database_each_end_at_their_deadline(
    gateway: Gateway, subjects: Subjects, request_ids: dict[str, list[str]]
) -> None:
    """market_regulation is a server database: its concurrent calls are batched on the I/O
    threads, behind the batch the hung provider holds. Each still ends UNAVAILABLE at its own
    deadline, audited as a failed access (or, once the failures opened the breaker, at once)."""
    client = gateway.client("hrss")
    employers = subjects.employers[1:]
    rids = [f"hung-many-{uuid.uuid4().hex[:12]}" for _ in employers]
    with ThreadPoolExecutor(len(employers)) as pool:
        outcomes = list(pool.map(lambda e, r: _ask_hung(client, e, r), employers, rids))
    for error, elapsed in outcomes:
        assert error.code == "UNAVAILABLE", error
        assert error.reason in ("PROVIDER_TIMEOUT", "CIRCUIT_OPEN"), error.reason
        assert elapsed < 1.5 + 0.5
    request_ids["hung_many"] = rids


def test_other_providers_are_unaffected(gateway: Gateway, subjects: Subjects) -> None:
    subject = subjects.graduates[0][0]
    grant(gateway, "hrss", subject, [("education", "graduation", [])], ["graduate_employment"])
    answer = gateway.client("hrss").verify(
        subject, "graduate_employment", "education", "graduated_within_years", {"years": 80}
    )
    assert answer.result is True


# --- audit (stops the gateway: keep last) -----------------------------------------------------


@pytest.fixture(scope="module")
def audit_entries(gateway: Gateway) -> list[AuditEntry]:
    gateway.stop()
    return read_audit(gateway.home, [gateway.audit_dir])


def test_failed_accesses_are_audited(
    request_ids: dict[str, list[str]], audit_entries: list[AuditEntry]
) -> None:
    if not request_ids["failed"]:
        pytest.skip("run with the tests above")
    for rid in set(request_ids["failed"]):
        failed = [e for e in entries_of(audit_entries, rid) if e.body.outcome.kind.value == "failed"]
        assert failed, rid
        for e in failed:
            assert e.body.decision.value == "allowed"
            assert e.body.reason in ("PROVIDER_UNAVAILABLE", "PROVIDER_TIMEOUT", "CIRCUIT_OPEN")
            # the basis the call was decided on, with its reference (the review tools need it)
            assert e.body.legal_basis.kind.value == "statutory_duty"
            assert e.body.legal_basis.reference.startswith("Tianjin employment promotion")
    for rid in request_ids["ok"]:
        assert any(e.body.outcome.kind.value == "found" for e in entries_of(audit_entries, rid)), rid
    # the call whose provider hung is audited as a failed access at the deadline
    for rid in request_ids["hung"]:
        hung = entries_of(audit_entries, rid)
        assert [e.body.reason for e in hung] == ["PROVIDER_TIMEOUT"], rid
        assert hung[0].body.outcome.kind.value == "failed"
    for rid in request_ids.get("hung_many", []):
        (entry,) = entries_of(audit_entries, rid)
        assert entry.body.outcome.kind.value == "failed"
        assert entry.body.reason in ("PROVIDER_TIMEOUT", "CIRCUIT_OPEN"), rid


def test_audit_log_verifies(gateway: Gateway, audit_entries: list[AuditEntry]) -> None:
    code, out, err = run_cli("audit", "verify", "--log", str(gateway.audit_dir))
    assert code == 0, err + out
