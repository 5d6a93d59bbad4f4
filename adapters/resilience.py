"""Timeouts, retries and a circuit breaker around every call an adapter makes to its source.

One ``ResilientSource`` per agency owns the SQLAlchemy engine of that agency's source, and runs
each unit of work (a function of an open ``Connection``) as one *call*:

- **Deadline.** A call has a timeout (``SourceConfig.call_timeout_s`` unless the caller passes
  one). Everything happens before that deadline: connecting (the connect timeout is cut to the
  time left, and a server connect runs on a helper thread the call stops waiting for at its
  deadline, since drivers never time out in less than 2 s), each query (PostgreSQL: ``SET LOCAL
  statement_timeout`` per transaction; SQLite: a progress handler, installed once per
  connection, that interrupts the statement past the deadline, and a busy timeout kept at most
  the time left) and the waits between retries.
- **Retries.** Transient failures (connection refused, reset or lost, operational errors,
  timeouts) are retried with tenacity: at most ``attempts`` tries, waits drawn by
  ``wait_random_exponential`` and never past the deadline. Everything else (``SubjectNotFound``,
  ``InvalidRequest``, programming errors, a missing database file) is never retried. The first
  attempt is made without tenacity; a failure of it enters the retry loop as its attempt 1.
- **Circuit breaker.** Per agency, with pybreaker's state machine: ``fail_max`` failed calls in a
  row open the circuit; while open, calls fail at once with ``ProviderUnavailable(circuit_open=
  True)``; after ``reset_timeout_s`` one trial call goes through (half-open) while the others
  keep failing fast; its success closes the circuit, its failure opens it again. The I/O runs
  outside pybreaker's lock, so calls to one agency are not serialised.
- **Typed errors.** Whatever goes wrong surfaces as ``ProviderUnavailable`` with a short cause
  ("connection refused", "timed out after 2.0s", "database file missing"), never as a raw
  SQLAlchemy or driver exception, never as a hang.
- **Logs.** structlog events ``adapter.call`` and ``adapter.retry`` carry the agency, operation,
  dataset or predicate, outcome, latency and attempt, and never an identifier, name or value
  (driver messages, which may quote SQL parameters, are never logged).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import pybreaker
import structlog
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import NullPool
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_random_exponential

from adapters.agencies import Agency
from adapters.contract import AdapterError, InvalidRequest, ProviderUnavailable
from adapters.sources import SourceConfig, make_engine
from gateway.logs import debug_dropped

T = TypeVar("T")

log = structlog.get_logger("adapters")

#: An attempt is not started with less time than this left before the deadline.
MIN_ATTEMPT_S = 0.02

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "dsgw_adapter_deadline", default=None
)


@dataclass(frozen=True, slots=True)
class ResiliencePolicy:
    """How hard an adapter tries. Timeouts themselves live in ``SourceConfig`` (``call_timeout_s``,
    ``connect_timeout_s``) and per call."""

    #: Tries per call, the first included.
    attempts: int = 3
    #: wait_random_exponential(multiplier, max) between tries, seconds.
    backoff_multiplier_s: float = 0.05
    backoff_max_s: float = 1.0
    #: Consecutive failed calls that open the circuit.
    fail_max: int = 5
    #: Seconds the circuit stays open before a trial call is let through.
    reset_timeout_s: float = 30.0
    #: Timeout of one chunk of a bulk extract (extract has no per-call timeout argument).
    extract_chunk_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.fail_max < 1:
            raise ValueError("attempts and fail_max must be at least 1")
        if min(self.backoff_multiplier_s, self.backoff_max_s, self.reset_timeout_s) < 0:
            raise ValueError("backoff and reset timeout must not be negative")
        if self.extract_chunk_timeout_s <= 0:
            raise ValueError("extract_chunk_timeout_s must be positive")


DEFAULT_POLICY = ResiliencePolicy()


# --------------------------------------------------------------------------------------------
# Failure classification: pure, over exception types and driver message *categories*.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Failure:
    """What a failed attempt means: a short cause without personal data, whether trying again may
    help, whether the deadline was hit, and whether it says the source is unhealthy (counts
    towards opening the circuit)."""

    cause: str
    transient: bool
    timed_out: bool = False
    counts: bool = True
    #: Not a failure of the source at all (a bug in the adapter): re-raised as it is.
    internal: bool = False


class _DeadlineExceeded(Exception):
    """No time left for (another) attempt."""


class _SourceMissing(Exception):
    """The source does not exist (SQLite: no database file)."""


class NativeDataError(ValueError):
    """A native value the adapter cannot map (unknown code, malformed date). The message names the
    column and the problem, never the value."""


def format_seconds(seconds: float) -> str:
    return f"{float(seconds)}s"


_TIMEOUT_MARKERS = (
    "statement timeout",
    "canceling statement",
    "connection timeout expired",
    "timeout expired",
    "timed out",
    "interrupted",
)
_LOST_MARKERS = (
    "server closed the connection",
    "connection reset",
    "broken pipe",
    "terminating connection",
    "consuming input failed",
    "connection is lost",
    "connection is closed",
    "the connection is bad",
    "ssl syscall error",
    "eof detected",
)
_REJECTED_MARKERS = (
    "password authentication failed",
    "no pg_hba.conf entry",
    "authentication failed",
)
_SCHEMA_MARKERS = ("no such table", "no such column", "does not exist", "undefined")


def classify(exc: BaseException, *, timeout: float, past_deadline: bool = False) -> Failure:
    """The ``Failure`` an exception raised while talking to the source stands for."""
    timed = Failure(f"timed out after {format_seconds(timeout)}", transient=True, timed_out=True)
    if isinstance(exc, _DeadlineExceeded):
        return timed
    if isinstance(exc, _SourceMissing):
        return Failure("database file missing", transient=False)
    if isinstance(exc, NativeDataError):
        return Failure(f"malformed native data ({exc})", transient=False, counts=False)
    if isinstance(exc, sa_exc.TimeoutError):  # pool checkout
        return timed
    if isinstance(exc, sa_exc.DBAPIError):
        orig = exc.orig
        message = str(orig).lower() if orig is not None else ""
        name = type(orig).__name__ if orig is not None else type(exc).__name__
        if past_deadline or any(m in message for m in _TIMEOUT_MARKERS) or name in ("QueryCanceled",):
            return timed
        if "connection refused" in message:
            return Failure("connection refused", transient=True)
        if any(m in message for m in _LOST_MARKERS) or exc.connection_invalidated:
            return Failure("connection lost", transient=True)
        if any(m in message for m in _REJECTED_MARKERS):
            return Failure("connection rejected by the server", transient=False)
        if "unable to open database" in message:
            return Failure("cannot open database file", transient=True)
        if "database is locked" in message:
            return Failure("database locked", transient=True)
        if any(m in message for m in _SCHEMA_MARKERS) and not isinstance(exc, sa_exc.InterfaceError):
            return Failure("schema mismatch: a table or column is missing", transient=False)
        if "could not translate host name" in message or "name or service not known" in message:
            return Failure("host not found", transient=True)
        if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
            return Failure(f"operational error ({name})", transient=True)
        return Failure(f"source error ({name})", transient=False)
    if isinstance(exc, sa_exc.SQLAlchemyError):
        return Failure(f"source error ({type(exc).__name__})", transient=False)
    if isinstance(exc, ConnectionRefusedError):
        return Failure("connection refused", transient=True)
    if isinstance(exc, ConnectionError):
        return Failure("connection lost", transient=True)
    if isinstance(exc, TimeoutError):
        return timed
    if isinstance(exc, OSError):
        return Failure(f"os error ({type(exc).__name__})", transient=True)
    if isinstance(exc, sqlite3.Error):
        return Failure(
            f"source error ({type(exc).__name__})", transient=not isinstance(exc, sqlite3.ProgrammingError)
        )
    return Failure(
        f"internal adapter error ({type(exc).__name__})", transient=False, counts=False, internal=True
    )


# --------------------------------------------------------------------------------------------
# Circuit breaker: pybreaker's states, without holding its lock around the I/O.
# --------------------------------------------------------------------------------------------


class CircuitOpen(Exception):
    """The circuit is open (or half-open with its trial call in flight)."""


def _noop() -> None:
    return None


def _reraise(exc: BaseException) -> None:
    raise exc


class AgencyCircuit:
    """One agency's circuit breaker.

    pybreaker keeps the state (closed / open / half-open, failure counter, opened-at) and its
    transitions; ``admit`` decides whether a call may go ahead, ``record`` feeds its outcome back
    by replaying it through ``pybreaker.CircuitBreaker.call`` (which holds pybreaker's lock only for
    that instant, not for the duration of the I/O)."""

    def __init__(self, agency: Agency, *, fail_max: int, reset_timeout_s: float) -> None:
        self.agency = agency
        self._storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout_s,
            state_storage=self._storage,
            name=agency.value,
            throw_new_error_on_trip=False,
        )
        self._lock = threading.Lock()
        self._trial_in_flight = False

    @property
    def state(self) -> str:
        """'closed', 'open' or 'half-open' (pybreaker's names)."""
        return str(self._breaker.current_state)

    @property
    def failures(self) -> int:
        return int(self._breaker.fail_counter)

    @property
    def fail_max(self) -> int:
        return int(self._breaker.fail_max)

    def _reset_elapsed(self) -> bool:
        opened_at = self._storage.opened_at
        if opened_at is None:
            return True
        return (datetime.now(UTC) - opened_at).total_seconds() >= float(self._breaker.reset_timeout)

    def admit(self) -> bool:
        """Let a call through or raise ``CircuitOpen``. Returns True for the half-open trial call,
        which the caller must ``record``."""
        with self._lock:
            state = self._breaker.current_state
            if state == pybreaker.STATE_CLOSED:
                return False
            if self._trial_in_flight:
                raise CircuitOpen
            if state == pybreaker.STATE_OPEN:
                if not self._reset_elapsed():
                    raise CircuitOpen
                self._breaker.half_open()
            self._trial_in_flight = True
            return True

    def record(self, *, ok: bool, trial: bool, error: BaseException | None = None, weight: int = 1) -> None:
        """Feed a call's outcome back: ``ok`` (the source answered) or a failure that counts, as
        ``weight`` failed calls (one query for many subjects stands for as many calls: at most
        ``fail_max`` of them count, enough to open the circuit)."""
        if ok and not trial:
            storage = self._storage
            if (
                storage.state == pybreaker.STATE_CLOSED
                and storage.counter == 0
                and not self._breaker.listeners
            ):
                # what pybreaker would do for a success here: reset a counter that is zero
                return
        with self._lock:
            try:
                if ok:
                    self._breaker.call(_noop)
                else:
                    more = min(weight, self.fail_max) - 1
                    if more > 0 and self._storage.state == pybreaker.STATE_CLOSED:
                        for _ in range(more):  # the failures beyond one, straight to the count
                            self._storage.increment_counter()
                    # one replay: pybreaker counts it and opens the circuit at fail_max
                    self._breaker.call(_reraise, error or RuntimeError("failed"))
            except Exception:
                pass  # the replayed failure itself, or "still open" for a late outcome
            finally:
                if trial:
                    self._trial_in_flight = False

    def release(self, *, trial: bool) -> None:
        """A call that ended without saying anything about the source's health."""
        if trial:
            with self._lock:
                self._trial_in_flight = False


# --------------------------------------------------------------------------------------------
# The resilient source
# --------------------------------------------------------------------------------------------


class _Stop:
    """tenacity stop: after ``attempts`` tries, or when the next try would start too late."""

    def __init__(self, attempts: int, deadline: float) -> None:
        self.attempts = attempts
        self.deadline = deadline

    def __call__(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self.attempts:
            return True
        left = self.deadline - time.monotonic() - state.upcoming_sleep
        return left < MIN_ATTEMPT_S


class _Wait:
    """tenacity wait: random exponential, cut so that a try still fits before the deadline."""

    def __init__(self, policy: ResiliencePolicy, deadline: float) -> None:
        self._base = wait_random_exponential(multiplier=policy.backoff_multiplier_s, max=policy.backoff_max_s)
        self.deadline = deadline

    def __call__(self, state: RetryCallState) -> float:
        left = self.deadline - time.monotonic() - MIN_ATTEMPT_S
        return max(0.0, min(float(self._base(state)), left))


class _PendingConnect:
    """A driver connect running on a helper thread, which the caller may stop waiting for: a
    connection that arrives after the caller gave up is closed, never used."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._abandoned = False
        self._conn: Any = None
        self._error: BaseException | None = None

    def finish(self, conn: Any = None, error: BaseException | None = None) -> None:
        with self._lock:
            abandoned = self._abandoned
            if not abandoned:
                self._conn, self._error = conn, error
        if abandoned and conn is not None:
            with contextlib.suppress(Exception):  # nothing to do about a late connection
                conn.close()
        self.done.set()

    def abandon(self) -> bool:
        """Stop waiting; False when the connect finished meanwhile (its outcome stands)."""
        with self._lock:
            if self.done.is_set() or self._conn is not None or self._error is not None:
                return False
            self._abandoned = True
            return True

    def outcome(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._conn


def connect_within(agency: Agency, connect: Callable[[], Any], deadline: float) -> Any:
    """``connect()`` (a driver connect) on a helper thread, waited for until ``deadline`` at the
    latest: drivers have a floor on their own connect timeout (libpq and psycopg wait at least
    2 s), which a short call deadline must not inherit. Past the deadline raises
    ``_DeadlineExceeded`` (a timeout); the helper finishes on its own and closes what it got."""
    pending = _PendingConnect()

    def work() -> None:
        try:
            conn = connect()
        except BaseException as exc:
            pending.finish(error=exc)
        else:
            pending.finish(conn=conn)

    threading.Thread(target=work, name=f"dsgw-connect-{agency.value}", daemon=True).start()
    if not pending.done.wait(max(0.0, deadline - time.monotonic())) and pending.abandon():
        raise _DeadlineExceeded
    pending.done.wait()
    return pending.outcome()


#: The SQLite busy timeout is re-set when it is above the time left in a call, or more than this
#: below it (so that calls with the same timeout set it once per connection, not once each).
BUSY_SLACK_MS = 100


class _SqliteSlot:
    """One thread's own connection to a SQLite source, kept across calls (no pool checkout per
    call). Its progress handler, installed once, interrupts a statement past the deadline of the
    call in progress (``deadline``; infinite between calls); its busy timeout is cut to the time
    left when needed (``busy_ms`` is the value in force)."""

    __slots__ = ("__weakref__", "busy_ms", "conn", "deadline", "doomed", "engine", "lock", "raw", "thread")

    def __init__(self, engine: Engine, conn: Connection, busy_ms: int) -> None:
        self.engine = engine
        self.conn = conn
        self.deadline = math.inf
        self.busy_ms = busy_ms
        self.doomed = False
        self.lock = threading.Lock()
        self.thread = weakref.ref(threading.current_thread())
        raw = conn.connection.driver_connection
        self.raw: sqlite3.Connection | None = raw if isinstance(raw, sqlite3.Connection) else None
        if self.raw is not None:
            self.raw.set_progress_handler(self._past_deadline, 1000)

    def _past_deadline(self) -> int:
        return 1 if time.monotonic() >= self.deadline else 0

    def arm(self, deadline: float) -> None:
        if self.raw is not None:
            left_ms = max(1, int((deadline - time.monotonic()) * 1000))
            if self.busy_ms > left_ms or self.busy_ms < left_ms - BUSY_SLACK_MS:
                target = max(1, left_ms - min(BUSY_SLACK_MS // 2, left_ms // 4))
                self.raw.execute(f"PRAGMA busy_timeout = {target}")
                self.busy_ms = target
        self.deadline = deadline

    def close(self) -> None:
        self.deadline = math.inf
        with contextlib.suppress(Exception):  # closing a broken connection
            self.conn.close()

    def alive(self) -> bool:
        thread = self.thread()
        return thread is not None and thread.is_alive()


class ResilientSource:
    """An agency's source behind a deadline, retries and a circuit breaker.

    The engine is made on first use (a missing SQLite file is a failed call, not a failed start,
    so the circuit can close once the file appears) and kept once it works. On SQLite each thread
    keeps its own connection across calls; on a server database the engine's pool holds up to
    ``SourceConfig.pool_size`` connections."""

    def __init__(
        self,
        agency: Agency,
        config: SourceConfig,
        policy: ResiliencePolicy = DEFAULT_POLICY,
        *,
        circuit: AgencyCircuit | None = None,
    ) -> None:
        self.agency = agency
        self.config = config
        self.policy = policy
        self.circuit = circuit or AgencyCircuit(
            agency, fail_max=policy.fail_max, reset_timeout_s=policy.reset_timeout_s
        )
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        self._is_sqlite = config.is_sqlite
        self._closed = False
        self._local = threading.local()
        self._slots: list[_SqliteSlot] = []

    # ---- engine ---------------------------------------------------------------------------

    def _get_engine(self) -> Engine:
        engine = self._engine
        if engine is not None and not self._closed:
            return engine
        with self._engine_lock:
            if self._closed:
                raise ProviderUnavailable(self.agency, "adapter closed")
            if self._engine is None:
                self._engine = self._make_engine()
            return self._engine

    def _make_engine(self) -> Engine:
        # No pool_pre_ping (a round trip per call): a stale pooled connection fails its attempt
        # as "connection lost", SQLAlchemy invalidates the pool, and the retry connects afresh.
        kw: dict[str, Any]
        if self._is_sqlite:
            # each thread keeps its own connection (_SqliteSlot): nothing to pool
            kw = {"poolclass": NullPool}
        else:
            kw = {
                "pool_size": self.config.pool_size,
                "max_overflow": 0,
                "pool_timeout": max(0.1, self.config.call_timeout_s),
            }
        try:
            engine = make_engine(self.config, **kw)
        except FileNotFoundError:
            raise _SourceMissing from None
        if not self._is_sqlite:
            config = self.config
            agency = self.agency

            @event.listens_for(engine, "do_connect")
            def _connect(dialect: Any, _rec: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
                limit = config.connect_timeout_s
                deadline = _deadline.get()
                if deadline is not None:
                    limit = min(limit, max(0.0, deadline - time.monotonic()))
                # the driver's own timeout (libpq / psycopg: whole seconds, at least 2 s) bounds
                # the helper thread; the call itself gives up at its deadline (connect_within)
                cparams["connect_timeout"] = max(1, math.ceil(limit))
                if "psycopg" in dialect.driver:
                    cparams.setdefault("keepalives", 1)
                    cparams.setdefault("keepalives_idle", 5)
                    cparams.setdefault("keepalives_interval", 2)
                    cparams.setdefault("keepalives_count", 3)
                if deadline is None:
                    return None  # the default connect
                return connect_within(agency, lambda: dialect.connect(*cargs, **cparams), deadline)

        return engine

    def close(self) -> None:
        with self._engine_lock:
            self._closed = True
            slots, self._slots = self._slots, []
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None
        for slot in slots:
            slot.doomed = True
            if slot.lock.acquire(blocking=False):  # else its thread closes it after its call
                try:
                    slot.close()
                finally:
                    slot.lock.release()

    # ---- SQLite: one connection per thread --------------------------------------------------

    def _slot(self, engine: Engine) -> _SqliteSlot:
        slot: _SqliteSlot | None = getattr(self._local, "slot", None)
        if slot is not None and slot.engine is engine and not slot.doomed:
            return slot
        conn = engine.connect()
        try:
            slot = _SqliteSlot(engine, conn, int(self.config.connect_timeout_s * 1000))
        except BaseException:
            conn.close()
            raise
        with self._engine_lock:
            closed = self._closed
            if not closed:
                dead = [s for s in self._slots if not s.alive()]
                self._slots = [s for s in self._slots if s.alive()]
                self._slots.append(slot)
        if closed:
            slot.close()
            raise ProviderUnavailable(self.agency, "adapter closed")
        for old in dead:  # threads that ended: their connections are nobody's any more
            old.close()
        self._local.slot = slot
        return slot

    def _drop(self, slot: _SqliteSlot) -> None:
        if getattr(self._local, "slot", None) is slot:
            self._local.slot = None
        with self._engine_lock:
            if slot in self._slots:
                self._slots.remove(slot)
        slot.close()

    def _attempt_sqlite(self, engine: Engine, fn: Callable[[Connection], T], deadline: float) -> T:
        slot = self._slot(engine)
        keep = False
        with slot.lock:
            try:
                if slot.doomed:
                    raise ProviderUnavailable(self.agency, "adapter closed")
                slot.arm(deadline)
                with slot.conn.begin():
                    if slot.raw is not None and not slot.raw.in_transaction:
                        # One read transaction for the whole call (pysqlite opens none for a
                        # SELECT): its statements see one snapshot of the source, which is
                        # locked and checked for changes once instead of once per statement.
                        # SQLAlchemy's commit (or rollback) below ends it.
                        slot.raw.execute("BEGIN")
                    result = fn(slot.conn)
                keep = True
                return result
            except AdapterError:
                keep = not slot.doomed  # an answer: the connection is fine
                raise
            finally:
                slot.deadline = math.inf
                if not keep or slot.doomed:
                    # a failed attempt may leave the connection broken: the retry starts afresh
                    self._drop(slot)

    # ---- one attempt ----------------------------------------------------------------------

    def _attempt(self, fn: Callable[[Connection], T], deadline: float) -> T:
        if deadline - time.monotonic() < MIN_ATTEMPT_S:
            raise _DeadlineExceeded
        engine = self._get_engine()
        if self._is_sqlite:
            return self._attempt_sqlite(engine, fn, deadline)
        token = _deadline.set(deadline)
        try:
            with engine.connect() as conn, conn.begin():
                left_ms = max(1, int((deadline - time.monotonic()) * 1000))
                conn.execute(text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": str(left_ms)})
                return fn(conn)
        finally:
            _deadline.reset(token)

    # ---- one call -------------------------------------------------------------------------

    def run(
        self,
        operation: str,
        fn: Callable[[Connection], T],
        *,
        timeout: float | None = None,
        attempts: int | None = None,
        log_fields: Mapping[str, str] | None = None,
        weight: int = 1,
    ) -> T:
        """Run ``fn`` in a transaction on a connection to the source, within ``timeout`` seconds
        (default ``call_timeout_s``), retrying transient failures. Raises ``ProviderUnavailable``
        for any failure of the source; ``AdapterError``s raised by ``fn`` pass through. ``weight``:
        how many calls the query stands for (a query for many subjects: each would have been a
        call), as which its failure counts for the circuit breaker (a timeout counts once).

        The first attempt is made directly; only a failure enters tenacity's retry loop, which
        sees that failure as its first attempt (same attempts, backoff, deadline and logs as if
        tenacity had made it)."""
        if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
            raise InvalidRequest("timeout must be a positive number of seconds")
        limit = self.config.call_timeout_s if timeout is None else float(timeout)
        started = time.monotonic()
        deadline = started + limit

        try:
            trial = self.circuit.admit()
        except CircuitOpen:
            self._log("circuit_open", operation, log_fields, started, 0)
            raise ProviderUnavailable(self.agency, "circuit open", circuit_open=True) from None

        made = [1]
        try:
            try:
                result = self._attempt(fn, deadline)
            except AdapterError:
                raise
            except BaseException as first:
                result = self._retry(operation, fn, first, limit, deadline, attempts, log_fields, made)
        except AdapterError as exc:
            self.circuit.record(ok=True, trial=trial)  # the source answered
            self._log(type(exc).reason.lower(), operation, log_fields, started, made[0])
            raise
        except BaseException as exc:
            failure = classify(exc, timeout=limit, past_deadline=time.monotonic() >= deadline)
            if failure.counts:
                # a query for many subjects that fails counts as the calls it stands for; one that
                # timed out, once (the query's size may be why, where single calls would answer)
                counted = 1 if failure.timed_out else weight
                self.circuit.record(ok=False, trial=trial, error=exc, weight=counted)
            else:
                self.circuit.release(trial=trial)
            if failure.internal or not isinstance(exc, Exception):
                if isinstance(exc, Exception):
                    self._log("error", operation, log_fields, started, made[0], cause=failure.cause)
                raise  # a bug, KeyboardInterrupt and the like: not the source's doing
            outcome = "timeout" if failure.timed_out else "unavailable"
            self._log(outcome, operation, log_fields, started, made[0], cause=failure.cause)
            raise ProviderUnavailable(self.agency, failure.cause, timed_out=failure.timed_out) from None
        self.circuit.record(ok=True, trial=trial)
        self._log("ok", operation, log_fields, started, made[0])
        return result

    def _retry(
        self,
        operation: str,
        fn: Callable[[Connection], T],
        first: BaseException,
        limit: float,
        deadline: float,
        attempts: int | None,
        log_fields: Mapping[str, str] | None,
        made: list[int],
    ) -> T:
        """tenacity's retry loop after a failed first attempt, whose failure it replays as its
        attempt 1 (nothing is run again for it). ``made[0]`` counts the attempts made."""
        fields = dict(log_fields or {})
        replay: list[BaseException] = [first]

        def _one() -> T:
            if replay:
                raise replay.pop()
            made[0] += 1
            return self._attempt(fn, deadline)

        def _retryable(exc: BaseException) -> bool:
            failure = classify(exc, timeout=limit, past_deadline=time.monotonic() >= deadline)
            return failure.transient

        def _before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            cause = classify(exc, timeout=limit).cause if exc is not None else "unknown"
            log.info(
                "adapter.retry",
                agency=self.agency.value,
                op=operation,
                attempt=state.attempt_number,
                cause=cause,
                wait_ms=round(state.upcoming_sleep * 1000, 1),
                **fields,
            )

        retrying = Retrying(
            stop=_Stop(attempts or self.policy.attempts, deadline),
            wait=_Wait(self.policy, deadline),
            retry=retry_if_exception(lambda e: not isinstance(e, AdapterError) and _retryable(e)),
            reraise=True,
            before_sleep=_before_sleep,
        )
        return retrying(_one)

    def _log(
        self,
        outcome: str,
        operation: str,
        fields: Mapping[str, str] | None,
        started: float,
        attempts: int,
        cause: str | None = None,
    ) -> None:
        quiet = outcome in ("ok", "subject_not_found")
        if quiet and debug_dropped():
            return  # the event would be dropped unread: do not build it
        event_fields: dict[str, Any] = {
            "agency": self.agency.value,
            "op": operation,
            "outcome": outcome,
            "latency_ms": round((time.monotonic() - started) * 1000, 2),
            "attempt": attempts,
            **(fields or {}),
        }
        if cause is not None:
            event_fields["cause"] = cause
        if quiet:
            log.debug("adapter.call", **event_fields)
        elif outcome in ("invalid_request",):
            log.info("adapter.call", **event_fields)
        else:
            log.warning("adapter.call", **event_fields)
