"""The adapters' hot path: statements compiled once per IN-list size and run on the driver cursor
(the same rows as ``Connection.execute``), one SQLite connection per calling thread, and the first
attempt made outside tenacity (same retries, logs and circuit as before)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog
from sqlalchemy import Connection, Select, text
from sqlalchemy import exc as sa_exc
from structlog.testing import capture_logs

from adapters.agencies import Agency
from adapters.civil_affairs.adapter import HOUSEHOLD_SIZES, MEMBER, MEMBER_HOUSEHOLDS
from adapters.contract import ProviderUnavailable, Subject, SubjectKind
from adapters.education.adapter import GRADUATE, GRADUATE_ROWS
from adapters.hrss.adapter import CATEGORIES, PERSON, SPELLS_OF_PERSONS
from adapters.resilience import BUSY_SLACK_MS, ResiliencePolicy
from adapters.statements import IN_BATCH, bucket, select_in
from tests.adapters.nativedb import AS_OF, NativeDb, person_id


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    structlog.reset_defaults()
    with capture_logs() as captured:
        yield captured


def test_bucket_sizes() -> None:
    assert [bucket(n) for n in (1, 2, 8, 9, 16, 17, 600, 1000)] == [1, 2, 8, 16, 16, 32, 1000, 1000]
    assert all(bucket(n) >= n for n in range(1, IN_BATCH + 1))


def _fill(db: NativeDb) -> None:
    for n in range(1, 13):
        db.add("ac01", aac001=n, aac002=person_id(n) if n % 4 else person_id(n).lower())
        db.add("ab01", aab001=100 + n, aab003=f"9112011600000{n:03d}X")
        db.add("ac02", aac001=n, aab001=100 + n, aae030="202401", aae140="110" if n % 3 else "120")
        db.add("jy_rylb", aac001=n, rylb="01" if n % 2 else "02")
        db.add("graduate_record", record_id=n, cert_no=person_id(n), cert_type="1" if n % 5 else "2")
        db.add("T_JZ_CY", CYBH=n, JTBH=f"H{n % 4}", SFZH=person_id(n))
    for h in range(4):  # H0 is no longer assisted
        db.add("T_JZ_JT", JTBH=f"H{h}", TBRQ="2025/01/01" if h == 0 else None)


CASES: list[tuple[Agency, str, Select[Any], str]] = [
    (Agency.HRSS, "ac01 lookup", PERSON.lookup, "ids"),
    (Agency.HRSS, "spells (join, constant after IN)", SPELLS_OF_PERSONS, "keys"),
    (Agency.HRSS, "categories (attribute access)", CATEGORIES, "keys"),
    (Agency.EDUCATION, "graduate lookup (constant before IN)", GRADUATE.lookup, "ids"),
    (Agency.EDUCATION, "graduate rows (a column twice)", GRADUATE_ROWS, "keys"),
    (Agency.CIVIL_AFFAIRS, "member lookup (join)", MEMBER.lookup, "ids"),
    (Agency.CIVIL_AFFAIRS, "member households", MEMBER_HOUSEHOLDS, "keys"),
    (Agency.CIVIL_AFFAIRS, "household sizes (count, group by)", HOUSEHOLD_SIZES, "keys"),
]


@pytest.mark.parametrize(("agency", "what", "statement", "name"), CASES, ids=[c[1] for c in CASES])
def test_select_in_gives_the_rows_of_execute(
    db: NativeDb, agency: Agency, what: str, statement: Select[Any], name: str
) -> None:
    _fill(db)
    adapter = db.adapter(agency)
    for count in (1, 2, 3, 9, 12, 40):
        if name == "ids":
            values: list[Any] = [person_id(n) for n in range(1, count + 1)]
            values += [person_id(n).lower() for n in range(1, count + 1)][: max(0, count - len(values))]
        elif statement is HOUSEHOLD_SIZES:
            values = [f"H{n}" for n in range(count)]
        else:
            values = list(range(1, count + 1))

        def both(conn: Connection, v: list[Any] = values) -> tuple[list[Any], list[Any], list[str]]:
            fast = select_in(conn, statement, name, v)
            result = conn.execute(statement, {name: v})
            return fast, result.all(), list(result.keys())

        fast, slow, keys = adapter.source.run("compare", both)
        assert sorted(map(tuple, fast)) == sorted(map(tuple, slow)), (what, count)
        assert slow or count < 3, (what, count)  # the comparison is not vacuous
        for row in fast:
            assert list(row._fields) == keys
            assert [getattr(row, k) for k in keys] == list(row)
    if statement is CATEGORIES:
        rows = adapter.source.run("attr", lambda c: select_in(c, CATEGORIES, "keys", [1, 2]))
        assert sorted(r.rylb for r in rows) == ["01", "02"]


def test_select_in_rejects_empty_and_oversized(sqlite_db: NativeDb) -> None:
    adapter = sqlite_db.adapter(Agency.HRSS)
    for values in ([], list(range(IN_BATCH + 1))):
        with pytest.raises(ValueError):
            adapter.source.run("bad", lambda c, v=values: select_in(c, CATEGORIES, "keys", v))


def test_select_in_errors_are_sqlalchemy_errors(sqlite_db: NativeDb) -> None:
    """A driver error on the fast path is classified as it was through Connection.execute."""
    adapter = sqlite_db.adapter(Agency.HRSS, ResiliencePolicy(attempts=1))
    adapter.source.run("ok", lambda c: select_in(c, CATEGORIES, "keys", [1]))

    # the agency's schema changes under the gateway (a call's own statements run in a read
    # transaction that its failure rolls back, so the change is made from another connection)
    with sqlite_db.engine(Agency.HRSS).begin() as other:
        other.execute(text("DROP TABLE jy_rylb"))

    with pytest.raises(ProviderUnavailable, match="schema mismatch"):
        adapter.source.run("broken", lambda c: select_in(c, CATEGORIES, "keys", [1]))

    def wrapped(conn: Connection) -> Any:
        try:
            return select_in(conn, CATEGORIES, "keys", [1])
        except sa_exc.DBAPIError as exc:
            assert isinstance(exc.orig, sqlite3.OperationalError)
            raise

    with pytest.raises(ProviderUnavailable, match="schema mismatch"):
        adapter.source.run("wrapped", wrapped)


# ---- SQLite: one connection per calling thread ---------------------------------------------


def test_sqlite_calls_from_many_threads_share_nothing_and_close(sqlite_db: NativeDb) -> None:
    for n in range(1, 41):
        sqlite_db.add("graduate_record", record_id=n, cert_no=person_id(n))
    adapter = sqlite_db.adapter(Agency.EDUCATION)
    expected = {n: adapter.fetch("graduation", Subject(SubjectKind.PERSON, person_id(n)), as_of=AS_OF).values
                for n in range(1, 41)}  # fmt: skip
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(30):
                n = (k * 7 + i) % 40 + 1
                got = adapter.fetch("graduation", Subject(SubjectKind.PERSON, person_id(n)), as_of=AS_OF)
                assert got.values == expected[n]
                assert adapter.evaluate(
                    "degree_at_least", Subject(SubjectKind.PERSON, person_id(n)), {"rank": 1}, as_of=AS_OF
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    slots = list(adapter.source._slots)
    assert 1 <= len(slots) <= 33

    # the threads have ended: a new thread's connection replaces theirs
    done = threading.Thread(
        target=lambda: adapter.fetch("graduation", Subject(SubjectKind.PERSON, person_id(1)))
    )
    done.start()
    done.join()
    assert len(adapter.source._slots) <= 2
    assert all(s.conn.closed for s in slots if not s.alive())

    adapter.close()
    assert all(s.conn.closed for s in slots)
    with pytest.raises(ProviderUnavailable, match="adapter closed"):
        adapter.fetch("graduation", Subject(SubjectKind.PERSON, person_id(1)))


def test_sqlite_busy_timeout_is_cut_to_each_calls_deadline(sqlite_db: NativeDb) -> None:
    """A thread's connection outlives its calls: a short call after a long one still waits for
    a locked database no longer than its own timeout."""
    sqlite_db.add("ac01", aac001=1, aac002=person_id(1))
    adapter = sqlite_db.adapter(Agency.HRSS, ResiliencePolicy(attempts=3, backoff_max_s=0.02))
    p1 = Subject(SubjectKind.PERSON, person_id(1))
    adapter.fetch("person_insurance", p1, timeout=30)  # busy timeout now near 30 s
    slot = adapter.source._local.slot
    assert 30_000 - 2 * BUSY_SLACK_MS <= slot.busy_ms <= 30_000
    adapter.fetch("person_insurance", p1, timeout=30)
    assert adapter.source._local.slot is slot  # kept, and the PRAGMA not re-issued
    engine = sqlite_db.engine(Agency.HRSS)
    with engine.connect() as holder:
        raw = holder.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        raw.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        with pytest.raises(ProviderUnavailable) as info:
            adapter.fetch("person_insurance", p1, timeout=0.3)
        elapsed = time.monotonic() - started
        holder.rollback()
    assert elapsed < 0.6
    assert info.value.timed_out or info.value.cause == "database locked"
    assert adapter.fetch("person_insurance", p1, timeout=30).values["currently_insured"] is False


# ---- the first attempt outside tenacity --------------------------------------------------


def operational(message: str) -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError(message))


def test_single_attempt_policy_does_not_retry(
    sqlite_db: NativeDb, logs: list[MutableMapping[str, Any]]
) -> None:
    adapter = sqlite_db.adapter(Agency.HRSS, ResiliencePolicy(attempts=1))
    tries = {"n": 0}

    def flaky(conn: Connection) -> int:
        tries["n"] += 1
        raise operational("server closed the connection unexpectedly")

    with pytest.raises(ProviderUnavailable, match="connection lost"):
        adapter.source.run("probe", flaky)
    assert tries["n"] == 1
    assert not [e for e in logs if e["event"] == "adapter.retry"]
    call = [e for e in logs if e["event"] == "adapter.call"][-1]
    assert (call["outcome"], call["attempt"]) == ("unavailable", 1)
    assert adapter.source.circuit.failures == 1


def test_internal_errors_pass_through_after_one_attempt(
    sqlite_db: NativeDb, logs: list[MutableMapping[str, Any]]
) -> None:
    adapter = sqlite_db.adapter(Agency.HRSS)
    tries = {"n": 0}

    def buggy(conn: Connection) -> int:
        tries["n"] += 1
        raise KeyError("bug")

    with pytest.raises(KeyError):
        adapter.source.run("probe", buggy)
    assert tries["n"] == 1
    assert adapter.source.circuit.failures == 0
    assert [e for e in logs if e["event"] == "adapter.call"][-1]["outcome"] == "error"


def test_successes_keep_the_circuit_closed_and_reset_failures(sqlite_db: NativeDb) -> None:
    adapter = sqlite_db.adapter(Agency.HRSS, ResiliencePolicy(attempts=1, fail_max=3))

    def broken(conn: Connection) -> None:
        raise operational("database is locked")

    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            adapter.source.run("probe", broken)
    assert adapter.source.circuit.failures == 2
    assert adapter.source.run("ok", lambda c: c.execute(text("SELECT 1")).scalar()) == 1
    assert adapter.source.circuit.failures == 0 and adapter.source.circuit.state == "closed"
