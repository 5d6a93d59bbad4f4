"""Timeouts, retries, the circuit breaker and typed errors, against real sources that fail: a
missing file, a closed loopback port, a loopback listener that never answers, locked tables, a
proxy taken down and brought back. Elapsed-time checks are hang checks with generous bounds."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog
from sqlalchemy import Connection, text
from sqlalchemy import exc as sa_exc
from structlog.testing import capture_logs

from adapters.agencies import Agency
from adapters.contract import HealthState, ProviderUnavailable, Subject, SubjectKind, SubjectNotFound
from adapters.registry import open_adapter
from adapters.resilience import (
    AgencyCircuit,
    CircuitOpen,
    NativeDataError,
    ResiliencePolicy,
    ResilientSource,
    classify,
)
from adapters.sources import SourceConfig, server_sources
from tests.adapters.nativedb import NativeDb, person_id
from tests.adapters.netutil import TcpProxy, closed_port, silent_listener

P1 = Subject(SubjectKind.PERSON, person_id(1))
FAST = ResiliencePolicy(
    attempts=3, backoff_multiplier_s=0.01, backoff_max_s=0.05, fail_max=3, reset_timeout_s=0.3
)


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    structlog.reset_defaults()  # another test may have filtered levels process-wide
    with capture_logs() as captured:
        yield captured


def calls(captured: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in captured if e["event"] == "adapter.call"]


def operational(message: str) -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError(message))


# ---- classification (pure) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "cause", "transient", "timed_out"),
    [
        (
            operational('connection to server at "127.0.0.1", port 1 failed: Connection refused'),
            "connection refused",
            True,
            False,
        ),
        (operational("connection timeout expired"), "timed out after 2.0s", True, True),
        (operational("canceling statement due to statement timeout"), "timed out after 2.0s", True, True),
        (operational("interrupted"), "timed out after 2.0s", True, True),
        (operational("server closed the connection unexpectedly"), "connection lost", True, False),
        (operational("database is locked"), "database locked", True, False),
        (operational("unable to open database file"), "cannot open database file", True, False),
        (operational("no such table: ac01"), "schema mismatch: a table or column is missing", False, False),
        (
            operational('password authentication failed for user "x"'),
            "connection rejected by the server",
            False,
            False,
        ),
        (operational("something else"), "operational error (OperationalError)", True, False),
        (
            sa_exc.ProgrammingError("SELECT", {}, sqlite3.ProgrammingError("bad")),
            "source error (ProgrammingError)",
            False,
            False,
        ),
        (sa_exc.TimeoutError("pool"), "timed out after 2.0s", True, True),
        (ConnectionRefusedError(), "connection refused", True, False),
        (ConnectionResetError(), "connection lost", True, False),
    ],
)
def test_classify(exc: BaseException, cause: str, transient: bool, timed_out: bool) -> None:
    failure = classify(exc, timeout=2.0)
    assert (failure.cause, failure.transient, failure.timed_out) == (cause, transient, timed_out)


def test_classify_never_quotes_the_driver_message() -> None:
    secret = person_id(7)
    failure = classify(operational(f"weird failure near '{secret}'"), timeout=1)
    assert secret not in failure.cause
    assert classify(NativeDataError("ac01.aac006: not a YYYYMMDD date"), timeout=1).counts is False
    assert classify(KeyError("x"), timeout=1).internal


# ---- the circuit (pure state machine over pybreaker) ----------------------------------------


def test_circuit_opens_half_opens_one_trial_and_closes() -> None:
    circuit = AgencyCircuit(Agency.TAX, fail_max=2, reset_timeout_s=0.2)
    for _ in range(2):
        trial = circuit.admit()
        circuit.record(ok=False, trial=trial, error=RuntimeError())
    assert circuit.state == "open"
    with pytest.raises(CircuitOpen):
        circuit.admit()
    time.sleep(0.25)
    assert circuit.admit() is True  # the one trial
    assert circuit.state == "half-open"
    with pytest.raises(CircuitOpen):
        circuit.admit()  # others still fail fast while the trial is in flight
    circuit.record(ok=False, trial=True, error=RuntimeError())
    assert circuit.state == "open"
    time.sleep(0.25)
    assert circuit.admit() is True
    circuit.record(ok=True, trial=True)
    assert circuit.state == "closed" and circuit.failures == 0
    assert circuit.admit() is False


# ---- retries and deadlines on the resilient source -----------------------------------------


def test_transient_failure_retried_then_success(
    sqlite_db: NativeDb, logs: list[MutableMapping[str, Any]]
) -> None:
    adapter = sqlite_db.adapter(Agency.HRSS, FAST)
    attempts = {"n": 0}

    def flaky(conn: Connection) -> int:
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise operational("server closed the connection unexpectedly")
        return int(conn.execute(text("SELECT 42")).scalar_one())

    assert adapter.source.run("probe", flaky) == 42
    assert attempts["n"] == 3
    assert [e["attempt"] for e in logs if e["event"] == "adapter.retry"] == [1, 2]
    assert calls(logs)[-1]["outcome"] == "ok" and calls(logs)[-1]["attempt"] == 3
    assert adapter.source.circuit.failures == 0


def test_non_transient_errors_are_not_retried(
    sqlite_db: NativeDb, logs: list[MutableMapping[str, Any]]
) -> None:
    sqlite_db.add("ac01", aac001=1, aac002=person_id(2))
    adapter = sqlite_db.adapter(Agency.HRSS, FAST)
    with pytest.raises(SubjectNotFound):
        adapter.fetch("person_insurance", P1)
    assert calls(logs)[-1]["attempt"] == 1 and calls(logs)[-1]["outcome"] == "subject_not_found"
    assert adapter.source.circuit.failures == 0

    def broken(conn: Connection) -> None:
        conn.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(ProviderUnavailable, match="schema mismatch"):
        adapter.source.run("probe", broken)
    assert calls(logs)[-1]["attempt"] == 1
    assert adapter.source.circuit.failures == 1  # a broken source is unhealthy


def test_sqlite_query_past_its_deadline_is_interrupted(sqlite_db: NativeDb) -> None:
    adapter = sqlite_db.adapter(Agency.HRSS, ResiliencePolicy(attempts=1))
    slow = text(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) "
        "SELECT sum(x) FROM c"
    )
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable) as info:
        adapter.source.run("slow", lambda conn: conn.execute(slow).scalar(), timeout=0.3)
    assert time.monotonic() - started < 3.0
    assert info.value.timed_out and info.value.cause == "timed out after 0.3s"
    # the pooled connection is usable afterwards: the deadline handler is removed
    assert adapter.source.run("after", lambda conn: conn.execute(text("SELECT 1")).scalar()) == 1


def test_sqlite_call_reads_one_snapshot(tmp_path: Any) -> None:
    """The statements of one call run in one read transaction: a write committed between them
    (WAL lets a writer commit beside a reader) is not half seen; the next call sees it."""
    path = tmp_path / "education.sqlite"
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE t (x INTEGER)")
    setup.execute("INSERT INTO t VALUES (1)")
    setup.commit()
    source = ResilientSource(Agency.EDUCATION, SourceConfig(url=f"sqlite:///{path}"))

    def two_reads(conn: Connection) -> tuple[int, int]:
        first = conn.execute(text("SELECT count(*) FROM t")).scalar_one()
        setup.execute("INSERT INTO t VALUES (2)")  # another connection commits meanwhile
        setup.commit()
        return first, conn.execute(text("SELECT count(*) FROM t")).scalar_one()

    assert source.run("snapshot", two_reads) == (1, 1)
    assert source.run("after", lambda conn: conn.execute(text("SELECT count(*) FROM t")).scalar_one()) == 2
    source.close()
    setup.close()


@pytest.mark.postgres
def test_postgres_statement_timeout(pg_url: str) -> None:
    source = ResilientSource(
        Agency.TAX, SourceConfig(url=pg_url), ResiliencePolicy(attempts=2, backoff_max_s=0.01)
    )
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable) as info:
        source.run("sleep", lambda conn: conn.execute(text("SELECT pg_sleep(5)")).all(), timeout=0.5)
    assert time.monotonic() - started < 3.0
    assert info.value.timed_out and "timed out after 0.5s" in str(info.value)
    assert source.run("after", lambda conn: conn.execute(text("SHOW statement_timeout")).scalar()) != "0"
    source.close()


@pytest.mark.postgres
def test_calls_to_one_agency_are_not_serialised(pg_url: str) -> None:
    source = ResilientSource(Agency.TAX, SourceConfig(url=pg_url))
    source.run("warm", lambda conn: conn.execute(text("SELECT 1")).all())
    threads = [
        threading.Thread(
            target=source.run, args=("sleep", lambda c: c.execute(text("SELECT pg_sleep(0.4)")).all())
        )
        for _ in range(3)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - started < 1.1  # three 0.4 s calls in parallel, not 1.2 s in a row
    source.close()


def test_locked_source_times_out_not_hangs(db: NativeDb) -> None:
    db.add("ac01", aac001=1, aac002=P1.id)
    adapter = db.adapter(Agency.HRSS, ResiliencePolicy(attempts=3, backoff_max_s=0.05))
    engine = db.engine(Agency.HRSS)
    with engine.connect() as holder:
        if db.backend == "sqlite":
            raw = holder.connection.driver_connection
            assert isinstance(raw, sqlite3.Connection)
            raw.execute("BEGIN EXCLUSIVE")
        else:
            holder.execute(text(f'LOCK TABLE "{db.sources["hrss"].db_schema}".ac01 IN ACCESS EXCLUSIVE MODE'))
        started = time.monotonic()
        with pytest.raises(ProviderUnavailable) as info:
            adapter.fetch("person_insurance", P1, timeout=0.5)
        elapsed = time.monotonic() - started
        holder.rollback()
    assert elapsed < 5.0
    assert info.value.timed_out or info.value.cause == "database locked"
    assert adapter.fetch("person_insurance", P1).values["currently_insured"] is False


# ---- unreachable sources ---------------------------------------------------------------------


def test_missing_database_file(tmp_path: Any, logs: list[MutableMapping[str, Any]]) -> None:
    adapter = open_adapter(Agency.EDUCATION, SourceConfig(url=f"sqlite:///{tmp_path}/education.sqlite"), FAST)
    with pytest.raises(ProviderUnavailable) as info:
        adapter.fetch("graduation", P1)
    assert str(info.value) == "education unavailable: database file missing"
    assert calls(logs)[-1]["attempt"] == 1  # not retried: it will not appear within the call
    health = adapter.health()
    assert (health.state, health.detail) == (HealthState.DOWN, "database file missing")
    assert not (tmp_path / "education.sqlite").exists()  # never created by the adapter
    adapter.close()


def test_closed_port_is_connection_refused(logs: list[MutableMapping[str, Any]]) -> None:
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/test"
    adapter = open_adapter(Agency.TAX, SourceConfig(url=url, db_schema="tax", connect_timeout_s=1), FAST)
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable) as info:
        adapter.fetch("employer_tax", Subject(SubjectKind.EMPLOYER, "91120116000000019T"))
    assert time.monotonic() - started < 10 * 2.0
    assert str(info.value) == "tax unavailable: connection refused"
    assert not info.value.circuit_open
    assert calls(logs)[-1]["attempt"] == 3  # transient: retried
    adapter.close()


def test_listener_that_never_answers_times_out(logs: list[MutableMapping[str, Any]]) -> None:
    with silent_listener() as port:
        source = SourceConfig(
            url=f"postgresql://postgres@127.0.0.1:{port}/test", connect_timeout_s=1, call_timeout_s=1.0
        )
        adapter = open_adapter(Agency.HRSS, source, FAST)
        started = time.monotonic()
        with pytest.raises(ProviderUnavailable) as info:
            adapter.fetch("person_insurance", P1)
        elapsed = time.monotonic() - started
        adapter.close()
    assert elapsed < 10 * 1.0  # a hang check: libpq's minimum connect timeout is 2 s
    assert info.value.timed_out and info.value.cause == "timed out after 1.0s"


def test_hung_postgres_gives_up_at_the_callers_deadline(logs: list[MutableMapping[str, Any]]) -> None:
    """A server that accepts connections and never answers: the call ends at its own deadline
    (0.5 s), although the driver's connect timeout never goes below 2 s (the connect goes on in
    a helper thread and is discarded)."""
    with silent_listener() as port:
        source = SourceConfig(url=f"postgresql://postgres@127.0.0.1:{port}/test", db_schema="hrss")
        adapter = open_adapter(Agency.HRSS, source)  # default policy: 3 attempts, 3 s connect timeout
        try:
            for call in (
                lambda: adapter.fetch("person_insurance", P1, timeout=0.5),
                lambda: adapter.evaluate("currently_insured", P1, timeout=0.5),
            ):
                started = time.monotonic()
                with pytest.raises(ProviderUnavailable) as info:
                    call()
                elapsed = time.monotonic() - started
                assert elapsed < 0.7
                assert info.value.timed_out and info.value.cause == "timed out after 0.5s"
            started = time.monotonic()
            health = adapter.health(timeout=0.3)
            assert time.monotonic() - started < 0.5
            assert health.state is HealthState.DOWN and health.detail == "timed out after 0.3s"
        finally:
            adapter.close()
    assert [e["outcome"] for e in calls(logs)] == ["timeout"] * 3


# ---- the circuit breaker on real sources: down, open, fail fast, half-open, back -------------


class _Outage:
    """Takes a backend's source down and brings it back."""

    def __init__(self, db: NativeDb, tmp_path: Any, pg_url: str | None) -> None:
        self.db = db
        self.proxy: TcpProxy | None = None
        if db.backend == "sqlite":
            self.path = tmp_path / "hrss.sqlite"
            self.stash = tmp_path / "stash.sqlite"
            self.source = db.sources["hrss"]
        else:
            assert pg_url is not None
            self.proxy = TcpProxy(5432)
            self.proxy.up()
            schema = db.sources["hrss"].db_schema
            assert schema is not None
            url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{self.proxy.port}")
            self.source = server_sources(url, schema[: -len("hrss")])["hrss"].model_copy(
                update={"connect_timeout_s": 1}
            )

    def down(self) -> None:
        if self.proxy is not None:
            self.proxy.down()
        else:
            self.db.close()
            shutil.move(self.path, self.stash)

    def up(self) -> None:
        if self.proxy is not None:
            self.proxy.up()
        else:
            shutil.move(self.stash, self.path)


def test_circuit_opens_fails_fast_and_closes_when_source_returns(
    db: NativeDb, tmp_path: Any, request: pytest.FixtureRequest, logs: list[MutableMapping[str, Any]]
) -> None:
    db.add("ac01", aac001=1, aac002=P1.id)
    db.flush()
    pg_url = request.getfixturevalue("pg_url") if db.backend == "postgres" else None
    outage = _Outage(db, tmp_path, pg_url)
    outage.down()  # down before the first call: on SQLite the engine is not even made yet
    policy = ResiliencePolicy(
        attempts=2, backoff_multiplier_s=0.01, backoff_max_s=0.02, fail_max=3, reset_timeout_s=0.5
    )
    adapter = open_adapter(Agency.HRSS, outage.source, policy)
    try:
        for _ in range(3):
            with pytest.raises(ProviderUnavailable) as info:
                adapter.evaluate("currently_insured", P1, timeout=1.0)
            assert not info.value.circuit_open
        assert adapter.source.circuit.state == "open"

        started = time.monotonic()
        with pytest.raises(ProviderUnavailable) as info:
            adapter.evaluate("currently_insured", P1)
        assert time.monotonic() - started < 0.1  # fails fast, no I/O
        assert info.value.circuit_open and str(info.value) == "hrss unavailable: circuit open"
        assert adapter.health().state is HealthState.CIRCUIT_OPEN

        time.sleep(0.6)  # half-open: one trial goes through, still down: open again
        with pytest.raises(ProviderUnavailable) as info:
            adapter.evaluate("currently_insured", P1, timeout=1.0)
        assert not info.value.circuit_open
        assert adapter.source.circuit.state == "open"

        outage.up()
        time.sleep(0.6)
        assert adapter.evaluate("currently_insured", P1) is False  # the trial succeeds
        assert adapter.source.circuit.state == "closed"
        assert adapter.fetch("person_category", P1).values["veteran"] is False
        assert adapter.health().state is HealthState.UP
    finally:
        adapter.close()
        if outage.proxy is not None:
            outage.proxy.down()
    outcomes = [e["outcome"] for e in calls(logs)]
    assert "circuit_open" in outcomes and outcomes[-1] == "ok"


def test_a_failed_query_for_many_subjects_counts_as_that_many_calls(
    db: NativeDb, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    """A query for several subjects (a gateway batch, a BatchVerify chunk) that fails counts for
    the circuit breaker as the calls it stands for (at most fail_max): a down source opens the
    circuit as soon as it would have unbatched (it used to take fail_max failed batches)."""
    db.add("ac01", aac001=1, aac002=P1.id)
    db.flush()
    pg_url = request.getfixturevalue("pg_url") if db.backend == "postgres" else None
    outage = _Outage(db, tmp_path, pg_url)
    outage.down()
    policy = ResiliencePolicy(attempts=1, fail_max=3, reset_timeout_s=30)
    adapter = open_adapter(Agency.HRSS, outage.source, policy)
    two = [P1, Subject(SubjectKind.PERSON, person_id(2))]
    third = Subject(SubjectKind.PERSON, person_id(3))
    try:
        with pytest.raises(ProviderUnavailable):
            adapter.fetch_many("person_category", two, timeout=1.0)
        assert (adapter.source.circuit.state, adapter.source.circuit.failures) == ("closed", 2)
        with pytest.raises(ProviderUnavailable):
            adapter.evaluate_many("currently_insured", [*two, third], timeout=1.0)
        assert adapter.source.circuit.state == "open"
    finally:
        adapter.close()
        if outage.proxy is not None:
            outage.proxy.down()


def test_a_weighted_failure_counts_as_that_many_at_most_fail_max() -> None:
    circuit = AgencyCircuit(Agency.TAX, fail_max=3, reset_timeout_s=30)
    circuit.record(ok=False, trial=False, error=RuntimeError(), weight=500)
    assert circuit.state == "open" and circuit.failures == 3
    fresh = AgencyCircuit(Agency.TAX, fail_max=3, reset_timeout_s=0)
    fresh.record(ok=False, trial=False, error=RuntimeError(), weight=2)
    assert (fresh.state, fresh.failures) == ("closed", 2)
    fresh.record(ok=True, trial=False)  # the source answered: the count starts again
    assert (fresh.state, fresh.failures) == ("closed", 0)
    fresh.record(ok=False, trial=False, error=RuntimeError(), weight=3)
    assert fresh.state == "open"
    assert fresh.admit() is True  # half-open: the one trial
    fresh.record(ok=False, trial=True, error=RuntimeError(), weight=500)  # fails: open again
    assert fresh.state == "open"


def test_a_query_for_many_subjects_that_times_out_counts_once(sqlite_db: NativeDb) -> None:
    """A timeout may be the query's size (single calls would answer): it counts once, whatever
    the weight."""
    adapter = sqlite_db.adapter(Agency.HRSS, ResiliencePolicy(attempts=1, fail_max=3))
    slow = text(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) "
        "SELECT sum(x) FROM c"
    )
    with pytest.raises(ProviderUnavailable) as info:
        adapter.source.run("slow_many", lambda conn: conn.execute(slow).scalar(), timeout=0.2, weight=500)
    assert info.value.timed_out
    assert (adapter.source.circuit.state, adapter.source.circuit.failures) == ("closed", 1)


def test_health_up_with_latency(db: NativeDb) -> None:
    adapter = db.adapter(Agency.CIVIL_AFFAIRS)
    health = adapter.health()
    assert health.state is HealthState.UP and health.latency_ms >= 0 and health.agency is Agency.CIVIL_AFFAIRS


@pytest.mark.postgres
def test_postgres_missing_schema_is_a_schema_mismatch(pg_url: str) -> None:
    adapter = open_adapter(Agency.TAX, SourceConfig(url=pg_url, db_schema="dsgw_no_such_schema"), FAST)
    with pytest.raises(ProviderUnavailable, match="schema mismatch"):
        adapter.fetch("employer_tax", Subject(SubjectKind.EMPLOYER, "91120116000000019T"))
    health = adapter.health()
    assert health.state is HealthState.DOWN
    adapter.close()


# ---- logs ------------------------------------------------------------------------------------


def test_logs_carry_no_identifiers_names_or_values(
    db: NativeDb, logs: list[MutableMapping[str, Any]]
) -> None:
    db.add("ac01", aac001=1, aac002=P1.id, aac003="欧阳明")
    db.add("ab01", aab001=1, aab003="91120116000000019T")
    db.add("ac02", aac001=1, aab001=1, aae030="202501", aac040=98765)
    adapter = db.adapter(Agency.HRSS)
    adapter.fetch("person_insurance", P1)
    adapter.evaluate("insured_months_at_least", P1, {"months": 1})
    list(adapter.extract("person_insurance"))
    with pytest.raises(SubjectNotFound):
        adapter.fetch("person_insurance", Subject(SubjectKind.PERSON, person_id(9)))
    text_of_logs = repr(logs)
    for secret in (P1.id, person_id(9), "欧阳明", "91120116000000019T", "98765"):
        assert secret not in text_of_logs
    event = calls(logs)[0]
    assert {"agency", "op", "outcome", "latency_ms", "attempt", "dataset"} <= set(event)
