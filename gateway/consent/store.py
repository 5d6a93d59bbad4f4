"""The consent store: SQLAlchemy Core over SQLite (embedded default) or PostgreSQL (by URL).

Tables (all INSERT-only except the use counter):

``consent``
    the immutable terms of each consent: id, subject (kind, id; indexed: the hot path of every
    check is "the records of this subject"), validity in microseconds since the epoch (indexed
    on ``valid_to_us`` for the expiry job), use limit, grant time and the terms as JSON.
``consent_event``
    the status history: primary key ``(consent_id, seq)``. Every new event is written with the
    next number of its consent's sequence after re-reading the history; two writers racing for
    the same consent (a revocation and the expiry job, two revocations on two replicas) both try
    the same ``seq`` and the primary key lets only one win; the loser re-reads and sees the
    consent is no longer granted. So the history is always 1..n without gaps or forks, and at
    most one of revoked / expired follows the grant.
``consent_use``
    one counter per consent that has a use limit: ``uses = uses + 1 WHERE uses < limit`` is one
    atomic statement on both backends.
``consent_opt_out``
    the opt-out history, primary key ``(subject_id, subject_kind, target, value, seq)``, same
    sequence discipline.

``consent``, ``consent_event`` and ``consent_opt_out`` carry triggers that refuse UPDATE and
DELETE, so the append-only rule holds even against code that forgets it.

On SQLite the store turns on WAL (readers do not block the writer) and waits up to
``busy_timeout_s`` for the write lock; a lost race surfaces as an IntegrityError or a "database is
locked" error and is retried with a short random back-off.

No cache holds anything that changes: every :meth:`ConsentStore.records_for` reads the history
and use counts from the database, so a revocation committed by any replica takes effect for the
next check everywhere. What is memoised is only what cannot change: a bounded LRU
(``record_cache`` consents, default 8,192, about 3 KB each) keeps the parsed terms and events of
records assembled before, reused when the database returns the same events and use count; it
admits a consent on its second sighting (see :class:`_Lru`).

The hot path (:meth:`ConsentStore.records_for`) runs one indexed query on a connection of its
own per thread, in autocommit mode (no transaction, so no stale snapshot), and builds the models
from the rows without re-running validation: the terms were validated before they were written,
and the row's consent id and subject are checked against the JSON (StoreError otherwise).
Writes go through the pooled engine, one transaction each.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Connection,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    and_,
    bindparam,
    event,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.pool import NullPool, StaticPool

from adapters.agencies import Agency
from adapters.contract import SubjectKind
from adapters.sources import SourceConfig, make_engine
from adapters.statements import IN_BATCH, bucket
from gateway.consent.errors import ConsentExists, ConsentNotFound, StoreError
from gateway.consent.model import (
    CaptureChannel,
    ConsentRecord,
    ConsentStatus,
    ConsentTerms,
    ContactPreferences,
    OptOut,
    OptOutTarget,
    Scope,
    ScopeItem,
    StatusEvent,
)

__all__ = ["ConsentStore", "EventHook", "from_us", "to_us"]

T = TypeVar("T")

#: Called inside the write transaction, after the event is written and before the commit:
#: raising aborts the change (nothing is stored).
EventHook = Callable[[ConsentRecord, StatusEvent], None]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

#: Subjects per query of :meth:`ConsentStore.records_for_many`.
MANY_SUBJECTS = IN_BATCH


def to_us(value: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    return (value - EPOCH) // _US


def from_us(value: int) -> datetime:
    return EPOCH + timedelta(0, 0, value)


metadata = MetaData()

consent_t = Table(
    "consent",
    metadata,
    Column("consent_id", String(64), primary_key=True),
    Column("subject_kind", String(16), nullable=False),
    Column("subject_id", String(64), nullable=False),
    Column("valid_from_us", BigInteger, nullable=False),
    Column("valid_to_us", BigInteger, nullable=False),
    Column("use_limit", BigInteger, nullable=True),
    Column("granted_us", BigInteger, nullable=False),
    Column("terms", Text, nullable=False),
    # " provider.dataset provider.dataset " of the scope: lets a check skip the subject's consents
    # for other datasets without parsing their terms
    Column("datasets", Text, nullable=False),
    CheckConstraint("valid_to_us > valid_from_us", name="ck_consent_window"),
    # the hot path: a subject's consents, already in consent_id order
    Index("ix_consent_subject", "subject_id", "subject_kind", "consent_id"),
    Index("ix_consent_valid_to", "valid_to_us"),
    Index("ix_consent_granted", "granted_us"),
)

event_t = Table(
    "consent_event",
    metadata,
    Column("consent_id", String(64), ForeignKey("consent.consent_id"), nullable=False),
    Column("seq", Integer, nullable=False, autoincrement=False),
    Column("status", String(16), nullable=False),
    Column("at_us", BigInteger, nullable=False),
    Column("recorded_us", BigInteger, nullable=False),
    Column("channel", String(16), nullable=True),
    Column("evidence_ref", String(128), nullable=False),
    Column("note", String(128), nullable=False),
    PrimaryKeyConstraint("consent_id", "seq", name="pk_consent_event"),
    CheckConstraint("seq >= 1", name="ck_consent_event_seq"),
    CheckConstraint("status IN ('granted', 'revoked', 'expired')", name="ck_consent_event_status"),
    CheckConstraint("(seq = 1) = (status = 'granted')", name="ck_consent_event_grant_first"),
    sqlite_with_rowid=False,
)

use_t = Table(
    "consent_use",
    metadata,
    Column("consent_id", String(64), ForeignKey("consent.consent_id"), primary_key=True),
    Column("uses", BigInteger, nullable=False),
    CheckConstraint("uses >= 0", name="ck_consent_use_uses"),
    sqlite_with_rowid=False,
)

opt_out_t = Table(
    "consent_opt_out",
    metadata,
    Column("subject_id", String(64), nullable=False),
    Column("subject_kind", String(16), nullable=False),
    Column("target", String(16), nullable=False),
    Column("value", String(64), nullable=False),
    Column("seq", Integer, nullable=False, autoincrement=False),
    Column("refused", Boolean, nullable=False),
    Column("at_us", BigInteger, nullable=False),
    Column("channel", String(16), nullable=True),
    Column("evidence_ref", String(128), nullable=False),
    PrimaryKeyConstraint("subject_id", "subject_kind", "target", "value", "seq", name="pk_consent_opt_out"),
    CheckConstraint("seq >= 1", name="ck_consent_opt_out_seq"),
    sqlite_with_rowid=False,
)

_APPEND_ONLY = ("consent", "consent_event", "consent_opt_out")
_TERMINAL = ("revoked", "expired")


#: Short, fixed reasons for driver errors, by a pattern of the driver's message (lower case).
#: Only these fixed texts are shown: a driver's message may name the host, user or database, and
#: a URL's password must never reach a message.
_REASONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), reason)
    for pattern, reason in (
        (r"connection refused", "connection refused"),
        (
            r"password authentication failed|no password supplied|authentication failed",
            "authentication failed",
        ),
        (r'database ".*" does not exist', "database does not exist"),
        (r'role ".*" does not exist', "role does not exist"),
        (r"could not translate host name|name or service not known|nodename nor servname", "unknown host"),
        (r"timeout expired|timed out", "connection timed out"),
        (r"no route to host|network is unreachable", "host unreachable"),
        (r"too many connections|remaining connection slots", "too many connections"),
        (r"starting up|shutting down", "server starting up or shutting down"),
        (r"server closed the connection|terminating connection|connection is closed", "connection lost"),
        (r"unable to open database file", "cannot open the database file"),
        (r"database is locked", "database is locked"),
        (r"readonly database|read-only", "read-only database"),
        (r"disk is full", "disk full"),
        (r"disk i/o error", "disk I/O error"),
        (r"file is not a database", "not a database file"),
        (r"permission denied", "permission denied"),
        (r"\bssl\b", "SSL error"),
    )
)


def _reason(exc: BaseException) -> str:
    """A short reason for a driver error (``DBAPIError.orig`` or the driver's own): one of the
    fixed texts above, never the driver's message; the exception class when none matches."""
    orig = getattr(exc, "orig", None) or exc
    message = str(orig).lower()
    for pattern, reason in _REASONS:
        if pattern.search(message):
            return reason
    return type(orig).__name__


def _is_retryable(exc: DBAPIError) -> bool:
    """A lost race: a unique-key conflict, a busy SQLite database, a PostgreSQL serialization
    failure or deadlock."""
    if isinstance(exc, IntegrityError):
        return True
    text_ = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    if "database is locked" in text_ or "database is busy" in text_ or "database table is locked" in text_:
        return True
    code = getattr(exc.orig, "sqlstate", None)
    return code in ("40001", "40P01")


M = TypeVar("M", bound=BaseModel)
_new = object.__new__
_set = object.__setattr__
_STATUS = {s.value: s for s in ConsentStatus}
_CHANNEL = {c.value: c for c in CaptureChannel}
_AGENCY = {a.value: a for a in Agency}
_KIND = {k.value: k for k in SubjectKind}
_TERMS_FIELDS = len(ConsentTerms.model_fields)
_TD = timedelta
#: the C scanner behind json.loads, called directly (the hot path parses one document per consent)
_scan_json: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _iso(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("stored time without a zone")
    return moment.astimezone(UTC)


def _trusted(cls: type[M], values: dict[str, Any]) -> M:
    """``cls.model_construct(**values)`` for the hot path, at a third of its cost: a model with
    every field given, no defaults, no extra and no private attributes, from values this store
    wrote after validating them. tests/consent/test_store.py holds it equal to validation."""
    obj = _new(cls)
    _set(obj, "__dict__", values)
    _set(obj, "__pydantic_fields_set__", set(values))
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj


class _NoUseLeft(Exception):
    pass


class _Lru:
    """A small thread-safe LRU of immutable values that admits a key on its second ``put``.

    Most checks are about subjects not seen lately (the memo mostly misses): a record that came
    once and is evicted unused has only cost the LRU bookkeeping and a long-lived object graph
    (fresh memory to fill, cold memory to free later, garbage-collector passes over it): measured,
    an LRU that admits every record makes a random-subject check slower than no memo at all. So a
    key is admitted when it comes again within about ``size / 2`` new keys (two generations of a
    set of keys of ``size / 4`` each: strings, no graph); a subject checked again soon is served
    from the memo from its third check on."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[str, ConsentRecord] = OrderedDict()
        self._seen: set[str] = set()
        self._seen_before: set[str] = set()
        self._window = max(1, size // 4)
        self._lock = threading.Lock()

    def get(self, key: str) -> ConsentRecord | None:
        if self._size <= 0:
            return None
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: str, value: ConsentRecord) -> None:
        if self._size <= 0:
            return
        with self._lock:
            if key not in self._data and key not in self._seen and key not in self._seen_before:
                self._seen.add(key)  # first sighting: remember the key only
                if len(self._seen) >= self._window:
                    self._seen_before, self._seen = self._seen, set()
                return
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)


class ConsentStore:
    """Consents, their status histories, use counts and opt-outs in one SQL database.

    ``url``: an SQLAlchemy URL (``sqlite:////path/consent.sqlite``, ``postgresql://host/db``);
    ``schema``: the PostgreSQL schema of the tables (created if missing; default: the search
    path). The tables are created on open unless ``create=False``.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        create: bool = True,
        record_cache: int = 8192,
        busy_timeout_s: float = 15.0,
        pool_size: int = 8,
    ) -> None:
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):  # ValueError: a port that is not a number
            raise StoreError("consent store URL is not a database URL") from None
        self.backend = parsed.get_backend_name()
        if self.backend not in ("sqlite", "postgresql"):
            raise StoreError(f"consent store backend {self.backend!r} is not supported (sqlite, postgresql)")
        self.schema = schema if self.backend != "sqlite" else None
        kw: dict[str, Any] = {}
        memory = self.backend == "sqlite" and (parsed.database or "") in ("", ":memory:")
        if memory:
            kw["poolclass"] = StaticPool
        elif self.backend == "postgresql":
            kw.update(pool_size=pool_size, max_overflow=pool_size * 2, pool_pre_ping=False)
        if self.backend == "sqlite" and not memory:
            Path(parsed.database or "").parent.mkdir(parents=True, exist_ok=True)
        timeout = busy_timeout_s if self.backend == "sqlite" else 3.0
        source = SourceConfig(url=url, db_schema=self.schema, connect_timeout_s=min(timeout, 60.0))
        try:
            self._engine: Engine = make_engine(source, create=True, **kw)
        except Exception as exc:
            raise StoreError(f"cannot open consent store: {_reason(exc)}") from None
        try:
            self._hot_engine: Engine = (
                self._engine if memory else make_engine(source, create=True, poolclass=NullPool)
            )
        except Exception as exc:
            raise StoreError(f"cannot open consent store: {_reason(exc)}") from None
        if self.backend == "sqlite" and not memory:

            @event.listens_for(self._engine, "connect")
            def _wal(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.close()

        self._memo = _Lru(record_cache)
        self._memory = memory
        self._local = threading.local()
        self._hot_lock = threading.Lock()
        self._hot_conns: list[tuple[threading.Thread, Any]] = []
        self._dbapi_error: type[Exception] = self._engine.dialect.loaded_dbapi.Error
        prefix = ""
        if self.schema:
            prefix = self._engine.dialect.identifier_preparer.quote_schema(self.schema) + "."
        ph = "?" if self.backend == "sqlite" else "%s"
        self._ph = ph
        self._many: dict[int, str] = {}  # records_for_many's statement by IN-list size
        self._hot_sql = (
            "SELECT c.consent_id, c.terms, e.seq, e.status, e.at_us, e.recorded_us, e.channel, "
            f"e.evidence_ref, e.note, u.uses, c.datasets, c.subject_id FROM {prefix}consent c "
            f"JOIN {prefix}consent_event e ON e.consent_id = c.consent_id "
            f"LEFT OUTER JOIN {prefix}consent_use u ON u.consent_id = c.consent_id "
            f"WHERE c.subject_id = {ph} AND c.subject_kind = {ph} ORDER BY c.consent_id"
            # SQLite reads the events in primary-key order already (no sort step); _record
            # re-sorts by seq anyway if a plan ever returns them otherwise
            + ("" if self.backend == "sqlite" else ", e.seq")
        )
        self._cols = (
            consent_t.c.consent_id,
            consent_t.c.terms,
            event_t.c.seq,
            event_t.c.status,
            event_t.c.at_us,
            event_t.c.recorded_us,
            event_t.c.channel,
            event_t.c.evidence_ref,
            event_t.c.note,
            use_t.c.uses,
            consent_t.c.datasets,
            consent_t.c.subject_id,
        )
        self._from = consent_t.join(event_t, event_t.c.consent_id == consent_t.c.consent_id).outerjoin(
            use_t, use_t.c.consent_id == consent_t.c.consent_id
        )
        self._q_subject = (
            select(*self._cols)
            .select_from(self._from)
            .where(consent_t.c.subject_id == bindparam("sid"), consent_t.c.subject_kind == bindparam("skind"))
            .order_by(consent_t.c.consent_id, event_t.c.seq)
        )
        if create:
            self.create_tables()

    # --- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def for_home(cls, home: Path, **kw: Any) -> ConsentStore:
        """The embedded default: ``HOME/consent.sqlite``."""
        return cls(f"sqlite:///{(home / 'consent.sqlite').resolve()}", **kw)

    @property
    def engine(self) -> Engine:
        return self._engine

    def create_tables(self) -> None:
        """Create the schema, tables, indexes and append-only triggers if they do not exist."""
        try:
            self._retrying(self._create, attempts=10)
        except StoreError:
            raise
        except DBAPIError as exc:
            raise StoreError(f"cannot create consent tables: {_reason(exc)}") from None

    def _create(self, conn: Connection) -> None:
        if self.backend == "postgresql":  # replicas starting together: one creates, the others wait
            conn.execute(text("SELECT pg_advisory_xact_lock(727274101)"))
        if self.schema:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
        metadata.create_all(conn, checkfirst=True)
        if self.backend == "sqlite":
            for table in _APPEND_ONLY:
                for op in ("UPDATE", "DELETE"):
                    conn.execute(
                        text(
                            f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
                            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                        )
                    )
        else:
            prefix = f'"{self.schema}".' if self.schema else ""
            conn.execute(
                text(
                    f"CREATE OR REPLACE FUNCTION {prefix}dsgw_consent_append_only() RETURNS trigger "
                    "LANGUAGE plpgsql AS $$ BEGIN "
                    "RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$"
                )
            )
            for table in _APPEND_ONLY:
                conn.execute(
                    text(
                        f"CREATE OR REPLACE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE "
                        f"ON {prefix}{table} FOR EACH ROW EXECUTE FUNCTION {prefix}dsgw_consent_append_only()"
                    )
                )

    def close(self) -> None:
        with self._hot_lock:
            conns, self._hot_conns = self._hot_conns, []
        for _, conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
        self._hot_engine.dispose()
        self._engine.dispose()

    def __enter__(self) -> ConsentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transactions ---------------------------------------------------------------------------

    def _retrying(
        self, fn: Callable[[Connection], T], *, attempts: int = 60, retry_integrity: bool = True
    ) -> T:
        delay = 0.001
        for attempt in range(attempts):
            try:
                with self._engine.begin() as conn:
                    return fn(conn)
            except DBAPIError as exc:
                again = _is_retryable(exc) and (retry_integrity or not isinstance(exc, IntegrityError))
                if not again or attempt == attempts - 1:
                    if isinstance(exc, OperationalError):
                        raise StoreError(f"consent store unavailable: {_reason(exc)}") from None
                    raise
                time.sleep(random.uniform(0, delay))
                delay = min(delay * 2, 0.05)
        raise StoreError("consent store: too much contention")  # pragma: no cover - loop returns or raises

    def _read(self, fn: Callable[[Connection], T]) -> T:
        try:
            with self._engine.connect() as conn:
                return fn(conn)
        except OperationalError as exc:
            raise StoreError(f"consent store unavailable: {_reason(exc)}") from None

    # --- rows -> models -------------------------------------------------------------------------

    @staticmethod
    def _event(row: Sequence[Any]) -> StatusEvent:
        _, _, seq, status, at_us, rec_us, channel, evidence, note, _, _, _ = row
        at = EPOCH + _TD(0, 0, at_us)  # from_us, inlined; a grant's recorded_at is usually its at
        return _trusted(
            StatusEvent,
            {
                "seq": seq,
                "status": _STATUS[status],
                "at": at,
                "recorded_at": at if rec_us == at_us else EPOCH + _TD(0, 0, rec_us),
                "channel": _CHANNEL[channel] if channel else None,
                "evidence_ref": evidence,
                "note": note,
            },
        )

    @staticmethod
    def _parse_terms(terms_json: str, consent_id: str, subject_id: str) -> ConsentTerms:
        """Stored terms, built without re-running validation: the store validated them before
        writing them, and the tables refuse UPDATE. What is checked is that the JSON is the
        row's (same consent id and subject); anything malformed raises StoreError."""
        try:
            try:
                d, end = _scan_json(terms_json, 0)  # json.loads without its wrapper
                if end != len(terms_json):
                    raise ValueError("trailing data")
            except StopIteration:
                d = json.loads(terms_json)  # raises ValueError
            if d["consent_id"] != consent_id or d["subject_id"] != subject_id or len(d) != _TERMS_FIELDS:
                raise ValueError("terms do not belong to their row")
            items = []
            index: dict[tuple[str, str], frozenset[str]] = {}
            for i in d["scope"]["items"]:
                provider, dataset, fields = i["provider"], i["dataset"], tuple(i["fields"])
                if len(i) != 3:
                    raise ValueError("scope item")
                items.append(
                    _trusted(ScopeItem, {"provider": _AGENCY[provider], "dataset": dataset, "fields": fields})
                )
                index[(provider, dataset)] = frozenset(fields)
            scope = _trusted(Scope, {"items": tuple(items)})
            scope.__dict__["_field_index"] = index  # what Scope.field_index() computes, at hand here
            terms = _trusted(
                ConsentTerms,
                {
                    "consent_id": consent_id,
                    "subject_kind": _KIND[d["subject_kind"]],
                    "subject_id": subject_id,
                    "consumers": tuple([_AGENCY[c] for c in d["consumers"]]),
                    "scope": scope,
                    "purposes": tuple(d["purposes"]),
                    "valid_from": _iso(d["valid_from"]),
                    "valid_to": _iso(d["valid_to"]),
                    "use_limit": d["use_limit"],
                    "separate": d["separate"],
                    "channel": _CHANNEL[d["channel"]],
                    "evidence_ref": d["evidence_ref"],
                    "notice_version": d["notice_version"],
                    "granted_at": _iso(d["granted_at"]),
                },
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise StoreError(f"consent {consent_id!r}: stored terms are damaged") from None
        return terms

    def _record(self, rows: Sequence[Sequence[Any]]) -> ConsentRecord:
        """One consent from its rows (one per event, in ``seq`` order). The terms and the events
        already seen are immutable, so a record assembled before is reused when the database
        returns the same number of events and the same use count, and its prefix otherwise."""
        cid = rows[0][0]
        uses = rows[0][9] or 0
        if len(rows) > 1 and any(row[2] != n for n, row in enumerate(rows, start=1)):
            rows = sorted(rows, key=lambda row: int(row[2]))
        cached = self._memo.get(cid)
        if cached is not None and len(cached.history) == len(rows) and cached.uses == uses:
            return cached
        if cached is not None and len(cached.history) <= len(rows):
            terms = cached.terms
            history = cached.history + tuple(self._event(r) for r in rows[len(cached.history) :])
        else:
            terms = self._parse_terms(rows[0][1], cid, rows[0][11])
            history = (self._event(rows[0]),) if len(rows) == 1 else tuple([self._event(r) for r in rows])
        record = _trusted(ConsentRecord, {"terms": terms, "history": history, "uses": uses})
        self._memo.put(cid, record)
        return record

    def _assemble(
        self, rows: Iterable[Sequence[Any]], only: str | None = None
    ) -> builtins.list[ConsentRecord]:
        """Records from rows ordered by consent and seq; with ``only`` (`` provider.dataset ``),
        just the consents whose scope names that dataset."""
        out: builtins.list[ConsentRecord] = []
        group: builtins.list[Sequence[Any]] = []
        for row in rows:
            if group and row[0] != group[0][0]:
                if only is None or only in group[0][10]:
                    out.append(self._record(group))
                group = []
            group.append(row)
        if group and (only is None or only in group[0][10]):
            out.append(self._record(group))
        return out

    def _load_many(self, conn: Connection, ids: Sequence[str]) -> dict[str, ConsentRecord]:
        out: dict[str, ConsentRecord] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            rows = conn.execute(
                select(*self._cols)
                .select_from(self._from)
                .where(consent_t.c.consent_id.in_(chunk))
                .order_by(consent_t.c.consent_id, event_t.c.seq)
            ).all()
            for record in self._assemble(rows):
                out[record.consent_id] = record
        return out

    def _load(self, conn: Connection, consent_id: str) -> ConsentRecord | None:
        return self._load_many(conn, [consent_id]).get(consent_id)

    # --- reads ----------------------------------------------------------------------------------

    def records_for(
        self, subject_kind: SubjectKind | str, subject_id: str, *, dataset: tuple[str, str] | None = None
    ) -> builtins.list[ConsentRecord]:
        """Every consent of one subject (canonical id), with its full history and use count; with
        ``dataset`` (provider, dataset) only those whose scope names it (the others cannot
        matter to a decision about that dataset).

        The hot path of every check: one indexed query on this thread's own autocommit
        connection (no transaction stays open, so every call sees every committed revocation)."""
        only = f" {dataset[0]}.{dataset[1]} " if dataset is not None else None
        return self._assemble(self._hot_rows(self._hot_sql, (subject_id, str(subject_kind))), only)

    def records_for_many(
        self,
        subject_kind: SubjectKind | str,
        subject_ids: Sequence[str],
        *,
        dataset: tuple[str, str] | None = None,
    ) -> dict[str, builtins.list[ConsentRecord]]:
        """:meth:`records_for` of several subjects of one kind in one query per
        ``MANY_SUBJECTS`` of them (the checks of concurrent calls, decided together): each given
        id maps to its consents, in the order records_for gives them (none: an empty list)."""
        ids = builtins.list(dict.fromkeys(subject_ids))
        out: dict[str, builtins.list[ConsentRecord]] = {i: [] for i in ids}
        only = f" {dataset[0]}.{dataset[1]} " if dataset is not None else None
        for start in range(0, len(ids), MANY_SUBJECTS):
            chunk = ids[start : start + MANY_SUBJECTS]
            size = bucket(len(chunk))
            padded = chunk + [chunk[-1]] * (size - len(chunk))  # a repeated id matches nothing more
            by_subject: dict[str, builtins.list[Sequence[Any]]] = {}
            for row in self._hot_rows(self._many_sql(size), (*padded, str(subject_kind))):
                by_subject.setdefault(row[11], []).append(row)
            for subject_id, rows in by_subject.items():
                if subject_id in out:
                    out[subject_id] = self._assemble(rows, only)
        return out

    def _many_sql(self, size: int) -> str:
        sql = self._many.get(size)
        if sql is None:
            marks = ", ".join([self._ph] * size)
            sql = self._many[size] = self._hot_sql.replace(
                f"c.subject_id = {self._ph}", f"c.subject_id IN ({marks})", 1
            )
        return sql

    def _hot_rows(self, sql: str, params: Sequence[Any]) -> builtins.list[Sequence[Any]]:
        """The rows of a read on this thread's autocommit connection (one retry on a fresh
        connection); StoreError if the store cannot be read."""
        if self._memory:
            with self._engine.connect() as conn:
                return builtins.list(conn.exec_driver_sql(sql, tuple(params)).all())
        for attempt in (0, 1):
            cur = getattr(self._local, "cur", None)
            if cur is None:
                cur = self._hot_connection()
            try:
                rows: builtins.list[Sequence[Any]] = cur.execute(sql, params).fetchall()
            except self._dbapi_error as exc:
                self._drop_hot_connection()
                if attempt == 1:
                    raise StoreError(f"consent store unavailable: {_reason(exc)}") from None
                continue
            return rows
        raise AssertionError("unreachable")  # pragma: no cover

    def _hot_connection(self) -> Any:
        """This thread's cursor on its own autocommit connection (opened on first use; reusing
        the cursor saves a cursor per check)."""
        cur: Any = getattr(self._local, "cur", None)
        if cur is not None:
            return cur
        try:
            proxied = self._hot_engine.raw_connection()
        except DBAPIError as exc:
            raise StoreError(f"consent store unavailable: {_reason(exc)}") from None
        conn: Any = proxied.driver_connection
        if self.backend == "sqlite":
            conn.isolation_level = None  # autocommit: no implicit transaction
            # reads of a store of 100,000s of consents: map the file, keep more pages
            conn.execute("PRAGMA mmap_size=1073741824")
            conn.execute("PRAGMA cache_size=-32768")
        else:
            conn.autocommit = True
        cur = conn.cursor()
        self._local.conn = conn
        self._local.cur = cur
        self._local.proxied = proxied
        with self._hot_lock:
            alive = []
            for thread, other in self._hot_conns:  # close what dead threads left behind
                if thread.is_alive():
                    alive.append((thread, other))
                else:
                    with contextlib.suppress(Exception):
                        other.close()
            alive.append((threading.current_thread(), proxied))
            self._hot_conns = alive
        return cur

    def _drop_hot_connection(self) -> None:
        proxied = getattr(self._local, "proxied", None)
        self._local.conn = self._local.cur = self._local.proxied = None
        if proxied is not None:
            with self._hot_lock:
                self._hot_conns = [(t, c) for t, c in self._hot_conns if c is not proxied]
            with contextlib.suppress(Exception):
                proxied.invalidate()

    def get(self, consent_id: str) -> ConsentRecord | None:
        return self._read(lambda conn: self._load(conn, consent_id))

    def require(self, consent_id: str) -> ConsentRecord:
        record = self.get(consent_id)
        if record is None:
            raise ConsentNotFound(consent_id)
        return record

    def count(self) -> int:
        return int(
            self._read(lambda conn: conn.execute(select(func.count()).select_from(consent_t)).scalar_one())
        )

    def list(
        self,
        *,
        subject: tuple[SubjectKind | str, str] | None = None,
        status: str | None = None,
        now: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[ConsentRecord]:
        """Consents, newest grant first. ``status``: ``granted`` (in force: not revoked, not
        expired, ``valid_to`` not passed), ``revoked`` or ``expired`` (recorded, or past
        ``valid_to``), as of ``now``."""
        when = to_us(now or datetime.now(UTC))
        q = select(consent_t.c.consent_id)
        if subject is not None:
            q = q.where(consent_t.c.subject_id == subject[1], consent_t.c.subject_kind == str(subject[0]))

        def has(statuses: Sequence[str]) -> Any:
            return exists().where(
                event_t.c.consent_id == consent_t.c.consent_id, event_t.c.status.in_(statuses)
            )

        if status == "granted":
            q = q.where(~has(_TERMINAL), consent_t.c.valid_to_us > when)
        elif status == "revoked":
            q = q.where(has(["revoked"]))
        elif status == "expired":
            q = q.where(or_(has(["expired"]), and_(~has(_TERMINAL), consent_t.c.valid_to_us <= when)))
        elif status is not None:
            raise ValueError(f"unknown status filter {status!r}")
        q = q.order_by(consent_t.c.granted_us.desc(), consent_t.c.consent_id).limit(limit).offset(offset)

        def run(conn: Connection) -> builtins.list[ConsentRecord]:
            ids = [r[0] for r in conn.execute(q)]
            loaded = self._load_many(conn, ids)
            return [loaded[i] for i in ids if i in loaded]

        return self._read(run)

    # --- writes ---------------------------------------------------------------------------------

    @staticmethod
    def _terms_row(terms: ConsentTerms) -> dict[str, Any]:
        return {
            "consent_id": terms.consent_id,
            "subject_kind": terms.subject_kind.value,
            "subject_id": terms.subject_id,
            "valid_from_us": to_us(terms.valid_from),
            "valid_to_us": to_us(terms.valid_to),
            "use_limit": terms.use_limit,
            "granted_us": to_us(terms.granted_at),
            "terms": terms.model_dump_json(),
            "datasets": " " + " ".join(terms.scope.datasets()) + " ",
        }

    @staticmethod
    def _event_row(consent_id: str, e: StatusEvent) -> dict[str, Any]:
        return {
            "consent_id": consent_id,
            "seq": e.seq,
            "status": e.status.value,
            "at_us": to_us(e.at),
            "recorded_us": to_us(e.recorded_at),
            "channel": e.channel.value if e.channel else None,
            "evidence_ref": e.evidence_ref,
            "note": e.note,
        }

    def insert(self, record: ConsentRecord, before_commit: EventHook | None = None) -> ConsentRecord:
        """Store a new consent (its terms and its grant event, seq 1). ConsentExists if the id is
        taken. ``before_commit`` runs inside the transaction (raising aborts the grant)."""
        if len(record.history) != 1 or record.history[0].status is not ConsentStatus.GRANTED:
            raise ValueError("a new consent has exactly its grant event")
        terms, grant = record.terms, record.history[0]

        def write(conn: Connection) -> ConsentRecord:
            taken = conn.execute(
                select(consent_t.c.consent_id).where(consent_t.c.consent_id == terms.consent_id)
            ).first()
            if taken is not None:
                raise ConsentExists(terms.consent_id)
            conn.execute(insert(consent_t), [self._terms_row(terms)])
            conn.execute(insert(event_t), [self._event_row(terms.consent_id, grant)])
            if terms.use_limit is not None:
                conn.execute(insert(use_t), [{"consent_id": terms.consent_id, "uses": 0}])
            if before_commit is not None:
                before_commit(record, grant)
            return record

        stored = self._retrying(write)
        return stored

    def insert_many(
        self, records: Sequence[ConsentRecord], before_commit: EventHook | None = None, *, chunk: int = 5000
    ) -> int:
        """The bulk path: store many new consents, ``chunk`` per transaction. An id already taken
        fails its whole chunk (ConsentExists)."""
        done = 0
        for start in range(0, len(records), chunk):
            batch = records[start : start + chunk]
            for r in batch:
                if len(r.history) != 1 or r.history[0].status is not ConsentStatus.GRANTED:
                    raise ValueError("a new consent has exactly its grant event")

            def write(conn: Connection, batch: Sequence[ConsentRecord] = batch) -> int:
                conn.execute(insert(consent_t), [self._terms_row(r.terms) for r in batch])
                conn.execute(insert(event_t), [self._event_row(r.consent_id, r.history[0]) for r in batch])
                limited = [
                    {"consent_id": r.consent_id, "uses": 0} for r in batch if r.terms.use_limit is not None
                ]
                if limited:
                    conn.execute(insert(use_t), limited)
                if before_commit is not None:
                    for r in batch:
                        before_commit(r, r.history[0])
                return len(batch)

            try:
                done += self._retrying(write, retry_integrity=False)
            except IntegrityError:
                raise ConsentExists(f"one of {len(batch)} consents of a batch") from None
        return done

    def append_event(
        self,
        consent_id: str,
        make: Callable[[ConsentRecord], StatusEvent | None],
        before_commit: EventHook | None = None,
    ) -> tuple[ConsentRecord, StatusEvent] | None:
        """Append the next status event of a consent. ``make`` gets the current record (re-read
        inside the transaction) and returns the event to write (its ``seq`` must be the next
        number), None to write nothing, or raises (e.g. ConsentNotActive). A lost race re-runs
        ``make`` on the fresh record. Returns the new record and event, or None."""

        def write(conn: Connection) -> tuple[ConsentRecord, StatusEvent] | None:
            record = self._load(conn, consent_id)
            if record is None:
                raise ConsentNotFound(consent_id)
            new = make(record)
            if new is None:
                return None
            if new.seq != len(record.history) + 1:
                raise ValueError("event is not the next in the consent's sequence")
            conn.execute(insert(event_t), [self._event_row(consent_id, new)])
            updated = ConsentRecord.model_construct(
                terms=record.terms, history=(*record.history, new), uses=record.uses
            )
            if before_commit is not None:
                before_commit(updated, new)
            return updated, new

        return self._retrying(write)

    def expiry_candidates(self, now: datetime, limit: int = 10_000) -> builtins.list[str]:
        """Ids of consents past ``valid_to`` with no revoked / expired event yet."""
        q = (
            select(consent_t.c.consent_id)
            .where(
                consent_t.c.valid_to_us <= to_us(now),
                ~exists().where(
                    event_t.c.consent_id == consent_t.c.consent_id, event_t.c.status.in_(_TERMINAL)
                ),
            )
            .order_by(consent_t.c.valid_to_us, consent_t.c.consent_id)
            .limit(limit)
        )
        return self._read(lambda conn: [r[0] for r in conn.execute(q)])

    def consume(self, consent_id: str, limit: int) -> bool:
        """Count one use of a consent with a use limit; False when no use is left."""

        def write(conn: Connection) -> bool:
            result = conn.execute(
                update(use_t)
                .where(use_t.c.consent_id == consent_id, use_t.c.uses < limit)
                .values(uses=use_t.c.uses + 1)
            )
            return bool(result.rowcount == 1)

        return self._retrying(write)

    def consume_all(self, items: Sequence[tuple[str, int]]) -> bool:
        """Count one use of each ``(consent_id, limit)``, all or none; False when one has no use left."""

        def write(conn: Connection) -> bool:
            for consent_id, limit in items:
                result = conn.execute(
                    update(use_t)
                    .where(use_t.c.consent_id == consent_id, use_t.c.uses < limit)
                    .values(uses=use_t.c.uses + 1)
                )
                if result.rowcount != 1:
                    raise _NoUseLeft
            return True

        try:
            return self._retrying(write)
        except _NoUseLeft:
            return False

    # --- opt-outs ------------------------------------------------------------------------------

    def append_opt_out(
        self,
        subject_kind: SubjectKind,
        subject_id: str,
        target: OptOutTarget,
        value: str,
        refused: bool,
        at: datetime,
        channel: CaptureChannel | None = None,
        evidence_ref: str = "",
    ) -> OptOut:
        """Append the next opt-out event of (subject, target, value)."""
        key = (
            opt_out_t.c.subject_id == subject_id,
            opt_out_t.c.subject_kind == subject_kind.value,
            opt_out_t.c.target == target.value,
            opt_out_t.c.value == value,
        )

        def write(conn: Connection) -> OptOut:
            last = conn.execute(select(func.max(opt_out_t.c.seq)).where(*key)).scalar()
            item = OptOut(
                subject_kind=subject_kind,
                subject_id=subject_id,
                target=target,
                value=value,
                refused=refused,
                seq=int(last or 0) + 1,
                at=at,
                channel=channel,
                evidence_ref=evidence_ref,
            )
            conn.execute(
                insert(opt_out_t),
                [
                    {
                        "subject_id": subject_id,
                        "subject_kind": subject_kind.value,
                        "target": target.value,
                        "value": value,
                        "seq": item.seq,
                        "refused": refused,
                        "at_us": to_us(item.at),
                        "channel": channel.value if channel else None,
                        "evidence_ref": evidence_ref,
                    }
                ],
            )
            return item

        return self._retrying(write)

    def _opt_out_rows(self, where: Any) -> Iterator[OptOut]:
        q = (
            select(opt_out_t)
            .where(where)
            .order_by(
                opt_out_t.c.subject_kind,
                opt_out_t.c.subject_id,
                opt_out_t.c.target,
                opt_out_t.c.value,
                opt_out_t.c.seq,
            )
        )
        rows = self._read(lambda conn: conn.execute(q).all())
        for r in rows:
            yield OptOut.model_construct(
                subject_kind=SubjectKind(r.subject_kind),
                subject_id=r.subject_id,
                target=OptOutTarget(r.target),
                value=r.value,
                refused=bool(r.refused),
                seq=r.seq,
                at=from_us(r.at_us),
                channel=CaptureChannel(r.channel) if r.channel else None,
                evidence_ref=r.evidence_ref,
            )

    def opt_outs(self, subject_kind: SubjectKind, subject_id: str) -> builtins.list[OptOut]:
        """The subject's whole opt-out history, by target and value, oldest first."""
        where = and_(opt_out_t.c.subject_id == subject_id, opt_out_t.c.subject_kind == subject_kind.value)
        return list(self._opt_out_rows(where))

    @staticmethod
    def _fold(items: Iterable[OptOut]) -> dict[tuple[SubjectKind, str], ContactPreferences]:
        last: dict[tuple[SubjectKind, str, OptOutTarget, str], bool] = {}
        for o in items:  # ordered by seq within each key: the last one wins
            last[(o.subject_kind, o.subject_id, o.target, o.value)] = o.refused
        prefs: dict[tuple[SubjectKind, str], tuple[set[str], set[str]]] = {}
        for (kind, sid, target, value), refused in last.items():
            channels, categories = prefs.setdefault((kind, sid), (set(), set()))
            if refused:
                (channels if target is OptOutTarget.CHANNEL else categories).add(value)
        return {
            (kind, sid): ContactPreferences(
                subject_kind=kind,
                subject_id=sid,
                refused_channels=frozenset(ch),
                refused_categories=frozenset(cat),
            )
            for (kind, sid), (ch, cat) in prefs.items()
        }

    def preferences(self, subject_kind: SubjectKind, subject_id: str) -> ContactPreferences:
        """The subject's current refusals of proactive contact."""
        folded = self._fold(self.opt_outs(subject_kind, subject_id))
        return folded.get(
            (subject_kind, subject_id), ContactPreferences(subject_kind=subject_kind, subject_id=subject_id)
        )

    def all_preferences(self) -> dict[tuple[SubjectKind, str], ContactPreferences]:
        """Every subject's current refusals (for a push job: one read, then a lookup per subject).
        Subjects without any refusal may be absent."""
        return self._fold(self._opt_out_rows(text("1=1")))
