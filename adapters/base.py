"""Shared machinery of the SQL adapters: native-format parsers, dataset and predicate specs, and
``SqlAdapter``, which implements the whole ``adapters.contract.Adapter`` protocol from them.

An agency adapter is a subclass that declares

- ``agency``, its ``DATASETS`` (``DatasetSpec``: the descriptor, the *anchor* rows a subject is
  found by, a ``build`` function from anchor keys to canonical records, and the change clause and
  columns for incremental extracts), its ``PREDICATES`` (``PredicateSpec``: a pure test over the
  canonical record) and the format of its change watermark (``WATERMARK_FORMAT``);

and gets fetch / evaluate / extract / health / describe / close, with timeouts, retries and the
circuit breaker of ``adapters.resilience``.

How a subject is found: its canonical identifier's stored forms (``gateway.identity.forms``) go
into one indexed ``anchor.stored_id IN (...)`` query, which yields the anchor keys of all of the
subject's native rows (several when the agency holds duplicates, e.g. two hrss ``aac001``); the
dataset's ``build`` reads the child rows of all those keys with ``IN (keys)`` queries and merges
them. ``fetch``, ``evaluate`` and ``extract`` share that one path, so they cannot disagree.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import structlog
from sqlalchemy import Connection, FromClause, Select, bindparam, func, literal, select
from sqlalchemy.sql.elements import ColumnElement

from adapters.agencies import Agency
from adapters.contract import (
    MAX_PARAMETER,
    CanonicalRecord,
    DatasetDescriptor,
    ExtractChunk,
    ExtractedRecord,
    FetchResult,
    Health,
    HealthState,
    InvalidRequest,
    PredicateDescriptor,
    ProviderDescription,
    ProviderUnavailable,
    Subject,
    SubjectKind,
    SubjectNotFound,
)
from adapters.resilience import (
    DEFAULT_POLICY,
    AgencyCircuit,
    NativeDataError,
    ResiliencePolicy,
    ResilientSource,
    classify,
)
from adapters.sources import SourceConfig
from adapters.statements import IN_BATCH, select_in
from gateway.identity.credit_code import normalize_credit_code
from gateway.identity.errors import InvalidIdentifier
from gateway.identity.forms import credit_code_stored_forms, resident_id_stored_forms
from gateway.identity.resident_id import normalize_resident_id

__all__ = [
    "Anchor",
    "DatasetSpec",
    "NativeDataError",
    "PredicateSpec",
    "SqlAdapter",
]

R = TypeVar("R", bound=CanonicalRecord)
T = TypeVar("T")
Key = int | str
GroupKey = Hashable
Params = Mapping[str, int]
Since = str | int

log = structlog.get_logger("adapters")


# --------------------------------------------------------------------------------------------
# Native formats: small pure functions. Errors name the column, never the value.
# --------------------------------------------------------------------------------------------


def _date(year: int, month: int, day: int, column: str) -> dt.date:
    try:
        return dt.date(year, month, day)
    except ValueError:
        raise NativeDataError(f"{column}: not a calendar date") from None


def parse_yyyymmdd(value: object, column: str = "date") -> dt.date:
    """'20240131' (TEXT YYYYMMDD) -> date."""
    if not isinstance(value, str) or len(value) != 8 or not value.isascii() or not value.isdigit():
        raise NativeDataError(f"{column}: not a YYYYMMDD date")
    return _date(int(value[:4]), int(value[4:6]), int(value[6:]), column)


def _parse_separated(value: object, sep: str, column: str, what: str) -> dt.date:
    if not isinstance(value, str) or len(value) != 10 or value[4] != sep or value[7] != sep:
        raise NativeDataError(f"{column}: not a {what} date")
    y, m, d = value[:4], value[5:7], value[8:]
    if not all(p.isascii() and p.isdigit() for p in (y, m, d)):
        raise NativeDataError(f"{column}: not a {what} date")
    return _date(int(y), int(m), int(d), column)


def parse_iso_date(value: object, column: str = "date") -> dt.date:
    """'2024-01-31' -> date."""
    return _parse_separated(value, "-", column, "YYYY-MM-DD")


def parse_slash_date(value: object, column: str = "date") -> dt.date:
    """'2024/01/31' (civil affairs) -> date."""
    return _parse_separated(value, "/", column, "YYYY/MM/DD")


def parse_int_yyyymmdd(value: object, column: str = "date") -> dt.date:
    """20240131 (INTEGER yyyymmdd, market regulation) -> date."""
    if isinstance(value, bool) or not isinstance(value, int) or not 10000101 <= value <= 99991231:
        raise NativeDataError(f"{column}: not an integer yyyymmdd date")
    return _date(value // 10000, value // 100 % 100, value % 100, column)


def month_index(year: int, month: int) -> int:
    """A month as one integer (year * 12 + month - 1), so that month arithmetic is subtraction."""
    return year * 12 + month - 1


def month_of(day: dt.date) -> int:
    return month_index(day.year, day.month)


def _month(y: str, m: str, column: str, what: str) -> int:
    if not (y.isascii() and y.isdigit() and m.isascii() and m.isdigit()) or not 1 <= int(m) <= 12:
        raise NativeDataError(f"{column}: not a {what} month")
    return month_index(int(y), int(m))


def parse_yyyymm(value: object, column: str = "month") -> int:
    """'202401' (TEXT YYYYMM, hrss) -> month index."""
    if not isinstance(value, str) or len(value) != 6:
        raise NativeDataError(f"{column}: not a YYYYMM month")
    return _month(value[:4], value[4:], column, "YYYYMM")


def parse_dash_month(value: object, column: str = "period") -> int:
    """'2024-01' (TEXT YYYY-MM tax period) -> month index."""
    if not isinstance(value, str) or len(value) != 7 or value[4] != "-":
        raise NativeDataError(f"{column}: not a YYYY-MM period")
    return _month(value[:4], value[5:], column, "YYYY-MM")


def is_open(value: object) -> bool:
    """Whether an end column means "still open": the empty string (hrss) or NULL (civil affairs)."""
    return value is None or (isinstance(value, str) and value.strip() == "")


def open_end_month(value: object, column: str = "end month") -> int | None:
    """An hrss-style YYYYMM end: None while open ('' or NULL), else the month index."""
    return None if is_open(value) else parse_yyyymm(value, column)


def parse_yn(value: object, column: str = "flag") -> bool:
    """'Y' / 'N' -> bool."""
    if value == "Y":
        return True
    if value == "N":
        return False
    raise NativeDataError(f"{column}: not a Y/N flag")


def decode(codes: Mapping[str, str], value: object, column: str) -> str:
    """A code list lookup; an unknown code is a NativeDataError."""
    if isinstance(value, str) and value in codes:
        return codes[value]
    raise NativeDataError(f"{column}: unknown code")


def band_label(bounds: tuple[int, int | None]) -> str:
    """(10, 19) -> '10-19'; (1000, None) -> '1000+'."""
    low, high = bounds
    return f"{low}+" if high is None else f"{low}-{high}"


def band_upper(label: str) -> int | None:
    """The upper bound of a band label ('10-19' -> 19, '1000+' -> None)."""
    if label.endswith("+"):
        return None
    return int(label.split("-", 1)[1])


def months_covered(first: int, last: int | None, window: tuple[int, int]) -> set[int]:
    """Months of the inclusive ``window`` (lo, hi) covered by the inclusive run first..last
    (``last`` None: open, i.e. up to the window's end)."""
    lo, hi = window
    end = hi if last is None else min(last, hi)
    return set(range(max(first, lo), end + 1))


def years_before(day: dt.date, years: int) -> dt.date:
    """``day`` minus whole calendar years (29 February -> 28 February in a common year); before
    the calendar's first day (``date.min``) there is nothing: that day."""
    year = day.year - years
    if year < dt.MINYEAR:
        return dt.date.min
    try:
        return day.replace(year=year)
    except ValueError:
        return day.replace(year=year, day=28)


def normalize_person_id(raw: object) -> str | None:
    """The canonical identity number a stored value normalises to, else None."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    try:
        return normalize_resident_id(raw)
    except InvalidIdentifier:
        return None


def normalize_employer_id(raw: object) -> str | None:
    """The canonical credit code a stored value normalises to, else None."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    try:
        return normalize_credit_code(raw)
    except InvalidIdentifier:
        return None


def stored_forms(kind: SubjectKind, identifier: str) -> list[str]:
    """Every form an agency may have stored ``identifier`` in (indexed IN lookups)."""
    if kind is SubjectKind.PERSON:
        return resident_id_stored_forms(identifier)
    return credit_code_stored_forms(identifier)


def normalizer(kind: SubjectKind) -> Callable[[object], str | None]:
    return normalize_person_id if kind is SubjectKind.PERSON else normalize_employer_id


def batched(items: Sequence[T], size: int = IN_BATCH) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def in_keys(column: ColumnElement[Any]) -> ColumnElement[bool]:
    """``column IN (:keys)``, an expanding parameter: the statement is built once, and compiled
    once per IN-list size bucket (``adapters.statements``), whatever the number of keys."""
    return column.in_(bindparam("keys", expanding=True))


def rows_for_keys(conn: Connection, statement: Select[Any], keys: Iterable[Key]) -> list[Any]:
    """All rows of ``statement`` (written with ``in_keys``) for ``keys``, in batches of IN_BATCH."""
    unique = sorted(set(keys), key=lambda k: (str(type(k)), k))
    rows: list[Any] = []
    for batch in batched(unique):
        rows.extend(select_in(conn, statement, "keys", batch))
    return rows


def group_rows(rows: Iterable[Any], key_index: int = 0) -> dict[Key, list[Any]]:
    """Rows grouped by the value at ``key_index`` (the anchor key)."""
    out: dict[Key, list[Any]] = {}
    for row in rows:
        out.setdefault(row[key_index], []).append(row)
    return out


def rows_of_group(by_key: Mapping[Key, Sequence[Any]], keys: Iterable[Key]) -> list[Any]:
    return [row for k in keys for row in by_key.get(k, ())]


def all_keys(groups: Mapping[GroupKey, Sequence[Key]]) -> list[Key]:
    """Every anchor key of every subject group."""
    return [k for keys in groups.values() for k in keys]


def records_by_group(
    conn: Connection,
    statement: Select[Any],
    groups: Mapping[GroupKey, Sequence[Key]],
    make: Callable[[list[Any]], R | None],
) -> dict[GroupKey, R]:
    """For each subject group, ``make`` over the group's rows of ``statement`` (written with
    ``in_keys``, the anchor key first); groups for which ``make`` gives None are left out."""
    by_key = group_rows(rows_for_keys(conn, statement, all_keys(groups)))
    out: dict[GroupKey, R] = {}
    for group, keys in groups.items():
        record = make(rows_of_group(by_key, keys))
        if record is not None:
            out[group] = record
    return out


# --------------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Anchor:
    """The native rows a dataset's subject is found by: one row per (subject, native record),
    keyed by ``key`` and carrying the identifier as stored. ``where`` restricts them (e.g.
    education's cert_type '1'); ``source`` may be a join (civil affairs: members of currently
    assisted households)."""

    source: FromClause
    key: ColumnElement[Any]
    stored_id: ColumnElement[Any]
    name: ColumnElement[Any] | None = None
    birth_date: ColumnElement[Any] | None = None
    parse_birth: Callable[[object], dt.date] | None = None
    where: ColumnElement[bool] | None = None

    def select(self, *columns: ColumnElement[Any]) -> Select[Any]:
        stmt = select(*columns).select_from(self.source)
        return stmt if self.where is None else stmt.where(self.where)

    @functools.cached_property
    def lookup(self) -> Select[Any]:
        """(key, stored id) of the anchor rows whose stored id is IN (:ids)."""
        return self.select(self.key, self.stored_id).where(
            self.stored_id.in_(bindparam("ids", expanding=True))
        )


#: build(conn, {group: anchor keys}, as_of) -> {group: record}; groups without a record are left out.
Builder = Callable[[Connection, Mapping[GroupKey, Sequence[Key]], dt.date], Mapping[GroupKey, R]]


@dataclass(frozen=True, slots=True)
class DatasetSpec(Generic[R]):
    descriptor: DatasetDescriptor
    anchor: Anchor
    build: Builder[R]
    #: since -> a condition on anchor rows: the subject has rows changed after ``since``.
    changed: Callable[[Since], ColumnElement[bool]]
    #: The change columns of every table the dataset reads (the chunk watermark is their maximum).
    watermark_columns: tuple[ColumnElement[Any], ...]


@dataclass(frozen=True, slots=True)
class PredicateSpec:
    descriptor: PredicateDescriptor
    test: Callable[[Any, Params, dt.date], bool]


def predicate(
    spec: DatasetSpec[R],
    name: str,
    description: str,
    test: Callable[[R, Params, dt.date], bool],
    *,
    reads: tuple[str, ...],
    parameters: tuple[str, ...] = (),
    absent_means_false: bool = True,
) -> PredicateSpec:
    """A predicate over ``spec``'s canonical record. ``reads``: the record's fields ``test``
    reads (a Verify needs consent to those; for a predicate on the presence of a record, the
    field that records the fact), at least one, each a field of the dataset."""
    d = spec.descriptor
    offered = d.field_names()
    unknown = [f for f in reads if f not in offered]
    if not reads or unknown or len(set(reads)) != len(reads):
        raise ValueError(
            f"predicate {name!r}: reads names each of its fields of {d.name} once, at least one"
            + (f" (not fields: {', '.join(unknown)})" if unknown else "")
        )
    descriptor = PredicateDescriptor(
        agency=d.agency,
        name=name,
        subject_kind=d.subject_kind,
        dataset=d.name,
        description=description,
        parameters=parameters,
        absent_means_false=absent_means_false,
        fields=reads,
    )
    return PredicateSpec(descriptor, test)


def check_params(descriptor: PredicateDescriptor, params: Mapping[str, int] | None) -> dict[str, int]:
    """The predicate's parameters: exactly the declared names, each an integer from 0 to
    :data:`MAX_PARAMETER`."""
    given = dict(params or {})
    wanted = set(descriptor.parameters)
    missing = sorted(wanted - set(given))
    extra = sorted(set(given) - wanted)
    if missing:
        raise InvalidRequest(f"predicate {descriptor.name!r} needs parameter(s) {', '.join(missing)}")
    if extra:
        raise InvalidRequest(f"predicate {descriptor.name!r} takes no parameter(s) {', '.join(extra)}")
    for k, v in given.items():
        if isinstance(v, bool) or not isinstance(v, int):
            raise InvalidRequest(f"parameter {k!r} must be an integer")
        if v < 0:
            raise InvalidRequest(f"parameter {k!r} must not be negative")
        if v > MAX_PARAMETER:
            raise InvalidRequest(f"parameter {k!r} must be at most {MAX_PARAMETER:,}")
    return given


# --------------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------------


class SqlAdapter:
    """The Adapter protocol over a SQL source, from a subclass's specs."""

    agency: Agency
    DATASETS: ClassVar[tuple[DatasetSpec[Any], ...]]
    PREDICATES: ClassVar[tuple[PredicateSpec, ...]]
    #: strptime format of a text watermark, or None for integer epoch seconds.
    WATERMARK_FORMAT: ClassVar[str | None]

    def __init__(
        self,
        source: SourceConfig,
        policy: ResiliencePolicy = DEFAULT_POLICY,
        *,
        circuit: AgencyCircuit | None = None,
    ) -> None:
        self.source = ResilientSource(self.agency, source, policy, circuit=circuit)
        self._datasets: dict[str, DatasetSpec[Any]] = {d.descriptor.name: d for d in self.DATASETS}
        self._predicates: dict[str, PredicateSpec] = {p.descriptor.name: p for p in self.PREDICATES}
        self._description = ProviderDescription(
            self.agency,
            tuple(d.descriptor for d in self.DATASETS),
            tuple(p.descriptor for p in self.PREDICATES),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.agency.value})"

    # ---- description ----------------------------------------------------------------------

    def describe(self) -> ProviderDescription:
        return self._description

    def _dataset(self, name: str) -> DatasetSpec[Any]:
        try:
            return self._datasets[name]
        except (KeyError, TypeError):
            raise InvalidRequest(f"{self.agency.value} offers no dataset {name!r}") from None

    def _predicate(self, name: str) -> PredicateSpec:
        try:
            return self._predicates[name]
        except (KeyError, TypeError):
            raise InvalidRequest(f"{self.agency.value} offers no predicate {name!r}") from None

    def _check_subject(self, kind: SubjectKind, what: str, subject: Subject) -> None:
        if not isinstance(subject, Subject):
            raise InvalidRequest("the subject must be an adapters.contract.Subject")
        if subject.kind is not kind:
            raise InvalidRequest(
                f"{self.agency.value} {what} is about a {kind.value}, not a {subject.kind.value}"
            )

    @staticmethod
    def _fields(descriptor: DatasetDescriptor, fields: Sequence[str] | None) -> tuple[str, ...]:
        if fields is None:
            return descriptor.field_names()
        if isinstance(fields, str):
            raise InvalidRequest("fields must be a list of field names")
        names = tuple(dict.fromkeys(fields))
        if not names:
            raise InvalidRequest("no fields requested")
        known = descriptor.field_names()
        unknown = [f for f in names if f not in known]
        if unknown:
            raise InvalidRequest(
                f"dataset {descriptor.name!r} has no field(s) {', '.join(map(repr, unknown))}"
            )
        return names

    # ---- lookup ---------------------------------------------------------------------------

    @staticmethod
    def _resolve(
        conn: Connection, anchor: Anchor, groups: Mapping[GroupKey, Sequence[str]]
    ) -> dict[GroupKey, list[Key]]:
        """Anchor keys of each group's stored forms, with one indexed IN query per batch."""
        lookup: dict[str, list[GroupKey]] = {}  # a form may be several groups' (a subject asked twice)
        for group, forms in groups.items():
            for form in forms:
                owners = lookup.setdefault(form, [])
                if group not in owners:
                    owners.append(group)
        found: dict[GroupKey, set[Key]] = {g: set() for g in groups}
        for batch in batched(list(lookup)):
            for key, stored in select_in(conn, anchor.lookup, "ids", batch):
                for group in lookup[stored]:
                    found[group].add(key)
        return {g: sorted(keys) for g, keys in found.items()}

    def _record(
        self, conn: Connection, spec: DatasetSpec[Any], subject: Subject, as_of: dt.date
    ) -> CanonicalRecord | None:
        forms = stored_forms(spec.descriptor.subject_kind, subject.id)
        keys = self._resolve(conn, spec.anchor, {0: forms})[0]
        if not keys:
            return None
        record: CanonicalRecord | None = spec.build(conn, {0: keys}, as_of).get(0)
        return record

    def _records_of(
        self,
        conn: Connection,
        spec: DatasetSpec[Any],
        subjects: Sequence[Subject],
        day: dt.date,
        *,
        isolate: bool = False,
    ) -> list[CanonicalRecord | Exception | None]:
        """Each subject's record (one identity query and one record query for all), in order:
        None without one, the error a call about it alone gets when its rows are malformed
        (ProviderUnavailable) or, with ``isolate``, when building its record fails in the
        adapter's own code (:meth:`_build_each`)."""
        kind = spec.descriptor.subject_kind
        groups: dict[GroupKey, Sequence[str]] = {i: stored_forms(kind, s.id) for i, s in enumerate(subjects)}
        keys = {g: k for g, k in self._resolve(conn, spec.anchor, groups).items() if k}
        records, failed = self._build_each(conn, spec, keys, day, isolate=isolate)
        return [failed[i] if i in failed else records.get(i) for i in range(len(subjects))]

    def _build_each(
        self,
        conn: Connection,
        spec: DatasetSpec[Any],
        groups: Mapping[GroupKey, Sequence[Key]],
        day: dt.date,
        *,
        event: str = "adapter.call.malformed",
        isolate: bool = False,
    ) -> tuple[dict[GroupKey, CanonicalRecord], dict[GroupKey, Exception]]:
        """The records of many subjects' groups, built at once; if a native value cannot be
        mapped, built one by one: a malformed group gets the error a call about it alone gets
        (ProviderUnavailable, malformed native data), logged as ``event`` by native key only,
        the others their records. With ``isolate``, an error of the adapter's own code (a bug,
        not the source's doing: :func:`classify` calls it internal) is treated alike: the
        group whose record it breaks gets that exception, which a call about it alone raises
        (logged as ``adapter.call.internal_error``), instead of every group failing with it.
        Without, it fails them all (a push extract stops rather than skip people)."""
        if not groups:
            return {}, {}
        try:
            return dict(spec.build(conn, groups, day)), {}
        except NativeDataError:
            pass
        except Exception as exc:
            # isolated even when only one group has rows: the batch's subjects without a record
            # are answered too (not found, or no)
            if not (isolate and classify(exc, timeout=0).internal):
                raise
        records: dict[GroupKey, CanonicalRecord] = {}
        failed: dict[GroupKey, Exception] = {}
        for group, keys in groups.items():
            try:
                records.update(spec.build(conn, {group: keys}, day))
            except NativeDataError as exc:
                failed[group] = ProviderUnavailable(self.agency, classify(exc, timeout=0).cause)
                log.warning(
                    event,
                    agency=self.agency.value,
                    dataset=spec.descriptor.name,
                    native_keys=[str(k) for k in keys],
                    problem=str(exc),
                )
            except Exception as exc:
                if not (isolate and classify(exc, timeout=0).internal):
                    raise
                failed[group] = exc
                log.error(
                    "adapter.call.internal_error",
                    agency=self.agency.value,
                    dataset=spec.descriptor.name,
                    native_keys=[str(k) for k in keys],
                    error=type(exc).__name__,
                )
        return records, failed

    # ---- fetch / evaluate -----------------------------------------------------------------

    def fetch(
        self,
        dataset: str,
        subject: Subject,
        fields: Sequence[str] | None = None,
        *,
        as_of: dt.date | None = None,
        timeout: float | None = None,
    ) -> FetchResult:
        spec = self._dataset(dataset)
        self._check_subject(spec.descriptor.subject_kind, f"dataset {dataset!r}", subject)
        names = self._fields(spec.descriptor, fields)
        day = as_of or dt.date.today()

        def work(conn: Connection) -> CanonicalRecord:
            record = self._record(conn, spec, subject, day)
            if record is None:
                raise SubjectNotFound(self.agency, dataset)
            return record

        record = self.source.run("fetch", work, timeout=timeout, log_fields={"dataset": dataset})
        dumped = record.model_dump()
        return FetchResult(self.agency, dataset, {n: dumped[n] for n in names})

    def fetch_many(
        self,
        dataset: str,
        subjects: Sequence[Subject],
        fields: Sequence[str] | None = None,
        *,
        as_of: dt.date | None = None,
        timeout: float | None = None,
    ) -> list[FetchResult | Exception | None]:
        """:meth:`fetch` for many subjects in one source call (one read transaction, one identity
        query and one record query per batch of keys): one result per subject, in order; None
        where the source holds no record of the subject; for a subject whose own native rows
        cannot be mapped, the ProviderUnavailable a fetch of it alone raises; for one whose
        record breaks the adapter's own code, the exception a fetch of it alone raises (the
        others are answered in both cases)."""
        spec = self._dataset(dataset)
        kind = spec.descriptor.subject_kind
        for subject in subjects:
            self._check_subject(kind, f"dataset {dataset!r}", subject)
        names = self._fields(spec.descriptor, fields)
        day = as_of or dt.date.today()

        def work(conn: Connection) -> list[FetchResult | Exception | None]:
            out: list[FetchResult | Exception | None] = []
            for record in self._records_of(conn, spec, subjects, day, isolate=True):
                if record is None or isinstance(record, Exception):
                    out.append(record)
                else:
                    dumped = record.model_dump()
                    out.append(FetchResult(self.agency, dataset, {n: dumped[n] for n in names}))
            return out

        if not subjects:
            return []
        return self.source.run(
            "fetch_many",
            work,
            timeout=timeout,
            log_fields={"dataset": dataset, "count": str(len(subjects))},
            weight=len(subjects),
        )

    def evaluate(
        self,
        predicate: str,
        subject: Subject,
        params: Mapping[str, int] | None = None,
        *,
        as_of: dt.date | None = None,
        timeout: float | None = None,
    ) -> bool:
        pspec = self._predicate(predicate)
        pd = pspec.descriptor
        self._check_subject(pd.subject_kind, f"predicate {predicate!r}", subject)
        clean = check_params(pd, params)
        spec = self._datasets[pd.dataset]
        day = as_of or dt.date.today()

        def work(conn: Connection) -> bool:
            record = self._record(conn, spec, subject, day)
            if record is None:
                if pd.absent_means_false:
                    return False
                raise SubjectNotFound(self.agency, pd.dataset)
            return bool(pspec.test(record, clean, day))

        return self.source.run("evaluate", work, timeout=timeout, log_fields={"predicate": predicate})

    def evaluate_many(
        self,
        predicate: str,
        subjects: Sequence[Subject],
        params: Mapping[str, int] | None = None,
        *,
        as_of: dt.date | None = None,
        timeout: float | None = None,
        isolate: bool = False,
    ) -> list[bool | Exception | None]:
        """:meth:`evaluate` for many subjects in one source call (bulk comparisons, batched
        Verify calls): one answer per subject, in order; None where the subject has no record
        and absence is not a "no"; for a subject whose own native rows cannot be mapped, the
        ProviderUnavailable an evaluation of it alone raises (the others are answered). With
        ``isolate``, a subject whose record or answer breaks the adapter's own code (a bug:
        :func:`classify` calls it internal) gets the exception an evaluation of it alone raises,
        the others their answers; without, it fails the whole call (a bulk comparison)."""
        pspec = self._predicate(predicate)
        pd = pspec.descriptor
        for subject in subjects:
            self._check_subject(pd.subject_kind, f"predicate {predicate!r}", subject)
        clean = check_params(pd, params)
        spec = self._datasets[pd.dataset]
        day = as_of or dt.date.today()
        absent = False if pd.absent_means_false else None

        def work(conn: Connection) -> list[bool | Exception | None]:
            out: list[bool | Exception | None] = []
            for record in self._records_of(conn, spec, subjects, day, isolate=isolate):
                if record is None:
                    out.append(absent)
                elif isinstance(record, Exception):
                    out.append(record)
                else:
                    try:
                        out.append(bool(pspec.test(record, clean, day)))
                    except Exception as exc:
                        if not (isolate and classify(exc, timeout=0).internal):
                            raise
                        log.error(
                            "adapter.call.internal_error",
                            agency=self.agency.value,
                            predicate=predicate,
                            error=type(exc).__name__,
                        )
                        out.append(exc)
            return out

        if not subjects:
            return []
        return self.source.run(
            "evaluate_many",
            work,
            timeout=timeout,
            log_fields={"predicate": predicate, "count": str(len(subjects))},
            weight=len(subjects),
        )

    # ---- extract --------------------------------------------------------------------------

    def _parse_since(self, since: str | None) -> Since | None:
        if since is None or since == "":
            return None
        if not isinstance(since, str):
            raise InvalidRequest("since must be a watermark string")
        if self.WATERMARK_FORMAT is None:
            if not (since.isascii() and since.isdigit()):
                raise InvalidRequest(f"{self.agency.value} watermarks are integer epoch seconds")
            return int(since)
        try:
            dt.datetime.strptime(since, self.WATERMARK_FORMAT)
        except ValueError:
            raise InvalidRequest(
                f"{self.agency.value} watermarks look like {self.WATERMARK_FORMAT}"
            ) from None
        return since

    def extract(
        self,
        dataset: str,
        *,
        since: str | None = None,
        chunk_size: int = 5000,
        as_of: dt.date | None = None,
    ) -> Iterator[ExtractChunk]:
        """Every subject's canonical record in chunks of at most ``chunk_size`` anchor rows, read
        page by page in key order (keyset pagination: each page is one bounded call).

        Every chunk carries the same watermark: the high-water mark of the dataset's change
        columns when the extract started (never below ``since``). Pass it as ``since`` after the
        stream ends to get the subjects changed since (at least once: a subject changed during an
        extract may come again). Nothing recorded in a row changes when only time passes (windows
        such as "the 24 months before as_of" move), so incremental runs for a later as_of should
        start from a full extract. Deleted rows are not reported."""
        spec = self._dataset(dataset)
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise InvalidRequest("chunk_size must be a positive integer")
        parsed = self._parse_since(since)
        day = as_of or dt.date.today()
        return self._extract(spec, parsed, chunk_size, day)

    def _extract(
        self, spec: DatasetSpec[Any], since: Since | None, size: int, day: dt.date
    ) -> Iterator[ExtractChunk]:
        timeout = self.source.policy.extract_chunk_timeout_s
        fields = {"dataset": spec.descriptor.name}
        watermark = self.source.run(
            "extract.watermark", lambda c: self._watermark(c, spec, since), timeout=timeout, log_fields=fields
        )
        after: Key | None = None
        yielded = False
        while True:
            records, last, count = self.source.run(
                "extract.page",
                functools.partial(self._page, spec=spec, after=after, size=size, since=since, day=day),
                timeout=timeout,
                log_fields=fields,
            )
            if records:
                yielded = True
                yield ExtractChunk(tuple(records), watermark)
            if count < size or last is None:
                break
            after = last
        if not yielded:
            yield ExtractChunk((), watermark)

    def _watermark(self, conn: Connection, spec: DatasetSpec[Any], since: Since | None) -> str:
        values: list[Any] = []
        for column in spec.watermark_columns:
            value = conn.execute(select(func.max(column))).scalar()
            if value is not None:
                values.append(value)
        if since is not None:
            values.append(since)
        if not values:
            return ""
        if self.WATERMARK_FORMAT is None:
            return str(max(int(v) for v in values))
        return str(max(str(v) for v in values))

    def _page(
        self,
        conn: Connection,
        spec: DatasetSpec[Any],
        after: Key | None,
        size: int,
        since: Since | None,
        day: dt.date,
    ) -> tuple[list[ExtractedRecord], Key | None, int]:
        a = spec.anchor
        none = literal(None)
        stmt = a.select(
            a.key,
            a.stored_id,
            a.name if a.name is not None else none,
            a.birth_date if a.birth_date is not None else none,
        )
        if since is not None:
            stmt = stmt.where(spec.changed(since))
        if after is not None:
            stmt = stmt.where(a.key > after)
        rows = conn.execute(stmt.order_by(a.key).limit(size)).all()
        if not rows:
            return [], None, 0

        kind = spec.descriptor.subject_kind
        normalise = normalizer(kind)
        lookups: dict[GroupKey, list[str]] = {}
        placed: list[tuple[Any, GroupKey, str | None]] = []
        for row in rows:
            key, raw = row[0], row[1]
            canonical = normalise(raw)
            group: GroupKey
            if canonical is not None and raw in stored_forms(kind, canonical):
                group = ("forms", canonical)
                lookups[group] = stored_forms(kind, canonical)
            elif isinstance(raw, str) and raw.strip():
                group = ("raw", raw)
                lookups[group] = [raw]
            else:
                group = ("key", key)
            placed.append((row, group, canonical))

        resolved = self._resolve(conn, a, lookups)
        for row, group, _ in placed:
            keys = resolved.setdefault(group, [])
            if row[0] not in keys:
                keys.append(row[0])

        selected: set[Key] | None = None
        if since is not None:
            many = [k for keys in resolved.values() if len(keys) > 1 for k in keys]
            selected = set()
            changed = spec.changed(since)
            for batch in batched(many):
                selected.update(
                    conn.execute(a.select(a.key).where(a.key.in_(batch)).where(changed)).scalars()
                )

        emitting: list[tuple[Any, GroupKey, str | None]] = []
        for row, group, canonical in placed:
            keys = resolved[group]
            candidates = keys if selected is None or len(keys) == 1 else [k for k in keys if k in selected]
            if not candidates or row[0] == min(candidates):
                emitting.append((row, group, canonical))

        wanted = {group: resolved[group] for _, group, _ in emitting}
        built = self._build_tolerant(conn, spec, wanted, day)
        records: list[ExtractedRecord] = []
        for row, group, canonical in emitting:
            record = built.get(group)
            if record is None:
                continue
            birth: dt.date | None = None
            if a.parse_birth is not None and row[3] is not None:
                try:
                    birth = a.parse_birth(row[3])
                except NativeDataError:
                    birth = None
            records.append(
                ExtractedRecord(
                    native_key=str(row[0]),
                    subject_id=canonical,
                    raw_id=row[1] if isinstance(row[1], str) else None,
                    name=row[2] if isinstance(row[2], str) else None,
                    birth_date=birth,
                    record=record,
                )
            )
        return records, rows[-1][0], len(rows)

    def _build_tolerant(
        self, conn: Connection, spec: DatasetSpec[Any], groups: Mapping[GroupKey, Sequence[Key]], day: dt.date
    ) -> dict[GroupKey, CanonicalRecord]:
        """Build all groups at once; if a native value cannot be mapped, build them one by one and
        leave out (and log, by native key only) the subjects whose rows are malformed."""
        return self._build_each(conn, spec, groups, day, event="adapter.extract.skipped")[0]

    # ---- health / close -------------------------------------------------------------------

    def health(self, *, timeout: float | None = None) -> Health:
        table = self.DATASETS[0].anchor.source
        t0 = time.monotonic()
        try:
            self.source.run(
                "health",
                lambda c: c.execute(select(literal(1)).select_from(table).limit(1)).all(),
                timeout=timeout,
                attempts=1,
            )
        except ProviderUnavailable as exc:
            state = HealthState.CIRCUIT_OPEN if exc.circuit_open else HealthState.DOWN
            return Health(self.agency, state, round((time.monotonic() - t0) * 1000, 2), exc.cause)
        return Health(self.agency, HealthState.UP, round((time.monotonic() - t0) * 1000, 2))

    def close(self) -> None:
        self.source.close()
