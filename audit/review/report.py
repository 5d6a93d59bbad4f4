"""Review reports over decoded audit entries: volumes, denials and unusual patterns.

Everything here is a pure function of the entries it is given (no I/O, no clock, no keys), so a
report is reproducible from the same evidence. Days are calendar days in the report's time zone
(:attr:`ReportConfig.timezone`, ``Asia/Shanghai`` by default), not UTC.

Sections of a :class:`Report`:

* **volumes**: access entries counted per day x calling agency x purpose x decision;
* **kinds**: all entries counted per day and kind (access, consent_change, push_notification);
* **denials**: denied accesses per day x caller x provider x purpose x reason, and totals by reason;
* **anomalies**: the findings of four rules, each an :class:`Anomaly` pointing at the entries
  (log origin and index) that raised it;
* **shredded**: entries whose data key was crypto-shredded at retention, counted per UTC day and
  kind (the fields the log keeps in clear) and per retention period. They count in the report's
  entries and period, never in volumes, denials or anomalies (their details are gone).

Anomaly rules and their thresholds (all in :class:`ReportConfig`):

``volume_spike``
    An agency's access volume on a day (allowed and denied requests it made as caller) is more
    than ``spike_factor`` (default 3) times its trailing median daily volume, and at least
    ``spike_min_count`` (default 10). The trailing window is the ``spike_window_days`` (default
    28) days before the day, starting no earlier than the first day the agency appears in the
    entries given; days without requests count as 0. The rule needs at least
    ``spike_min_history_days`` (default 7) days of history, so an agency's first week is never
    flagged. Give the report the window's history (the CLI loads it) or early days go unjudged.
``off_hours``
    Access outside working hours: working days are ``workdays`` (Monday-Friday by default) minus
    ``holidays``, plus ``extra_workdays`` (make-up working days, 调休); working hours are
    ``work_start`` (inclusive) to ``work_end`` (exclusive), 08:00-18:00 by default, local time.
    One finding per day, caller and operator.
``operator_breadth``
    One operator (of one calling agency) touching more than ``operator_max_subjects`` (default
    50) distinct subjects in a day, allowed and denied requests alike. Entries without an
    operator are not counted.
``no_basis``
    An access that was allowed although its recorded legal basis is ``none`` (neither consent nor
    statutory duty). One finding per day, caller, provider and purpose.

Findings never contain a subject's identifier: they count subjects and point at entries.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from audit.entry import Access, Decision, LegalBasisKind
from audit.review import LATEST, EntryRef, LocatedEntry, ShreddedEntry, shredded_summary, utc_or_bound

__all__ = [
    "MAX_SPIKE_WINDOW_DAYS",
    "RULES",
    "Anomaly",
    "DenialRow",
    "Report",
    "ReportConfig",
    "VolumeRow",
    "anomalies",
    "build_report",
    "daily_volume_by_caller",
    "denials",
    "is_working_time",
    "kinds_per_day",
    "local_day_bounds",
    "no_basis",
    "off_hours",
    "operator_breadth",
    "volume_spikes",
    "volumes",
]

RULES = ("volume_spike", "off_hours", "operator_breadth", "no_basis")
"""The anomaly rules, in the order a report lists them."""

_NO_PURPOSE = ""

MAX_SPIKE_WINDOW_DAYS = 3660
"""The longest trailing window (and history) the ``volume_spike`` rule takes: about ten years."""


@dataclass(frozen=True)
class ReportConfig:
    """The report's time zone and the anomaly thresholds (see the module docstring)."""

    timezone: str = "Asia/Shanghai"
    work_start: time = time(8, 0)
    work_end: time = time(18, 0)
    workdays: frozenset[int] = frozenset(range(5))
    """Working weekdays, ``date.weekday()`` numbers: 0 = Monday ... 6 = Sunday."""
    holidays: frozenset[date] = frozenset()
    extra_workdays: frozenset[date] = frozenset()
    spike_factor: float = 3.0
    spike_min_history_days: int = 7
    spike_window_days: int = 28
    spike_min_count: int = 10
    operator_max_subjects: int = 50
    rules: frozenset[str] = frozenset(RULES)
    """The rules to run (all by default)."""

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None
        if not self.work_start < self.work_end:
            raise ValueError("working hours must start before they end")
        if not self.workdays <= frozenset(range(7)):
            raise ValueError("workdays are weekday numbers 0 (Monday) to 6 (Sunday)")
        if not (math.isfinite(self.spike_factor) and self.spike_factor > 0):
            raise ValueError("spike_factor must be a positive finite number")
        if not 1 <= self.spike_min_history_days <= self.spike_window_days <= MAX_SPIKE_WINDOW_DAYS:
            raise ValueError(
                f"need 1 <= spike_min_history_days <= spike_window_days <= {MAX_SPIKE_WINDOW_DAYS}"
            )
        if self.spike_min_count < 1:
            raise ValueError("spike_min_count must be at least 1")
        if self.operator_max_subjects < 1:
            raise ValueError("operator_max_subjects must be at least 1")
        unknown = self.rules - frozenset(RULES)
        if unknown:
            raise ValueError(f"unknown anomaly rule(s): {', '.join(sorted(unknown))}")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def to_json(self) -> dict[str, Any]:
        return {
            "timezone": self.timezone,
            "work_start": self.work_start.isoformat("minutes"),
            "work_end": self.work_end.isoformat("minutes"),
            "workdays": sorted(self.workdays),
            "holidays": sorted(d.isoformat() for d in self.holidays),
            "extra_workdays": sorted(d.isoformat() for d in self.extra_workdays),
            "spike_factor": self.spike_factor,
            "spike_min_history_days": self.spike_min_history_days,
            "spike_window_days": self.spike_window_days,
            "spike_min_count": self.spike_min_count,
            "operator_max_subjects": self.operator_max_subjects,
            "rules": [rule for rule in RULES if rule in self.rules],
        }


@dataclass(frozen=True, order=True)
class VolumeRow:
    day: date
    caller: str
    purpose: str
    decision: str
    count: int

    def to_json(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "caller": self.caller,
            "purpose": self.purpose,
            "decision": self.decision,
            "count": self.count,
        }


@dataclass(frozen=True, order=True)
class DenialRow:
    day: date
    caller: str
    provider: str
    purpose: str
    reason: str
    count: int

    def to_json(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "caller": self.caller,
            "provider": self.provider,
            "purpose": self.purpose,
            "reason": self.reason,
            "count": self.count,
        }


@dataclass(frozen=True)
class Anomaly:
    """One finding of an anomaly rule. ``detail`` holds the figures that triggered it (never a
    subject's identifier); ``refs`` the entries involved, in log order."""

    rule: str
    day: date
    caller: str
    operator: str
    count: int
    message: str
    detail: dict[str, Any] = field(default_factory=dict)
    refs: tuple[EntryRef, ...] = ()

    def sort_key(self) -> tuple[date, int, str, str, str]:
        return (self.day, RULES.index(self.rule), self.caller, self.operator, self.message)

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "day": self.day.isoformat(),
            "caller": self.caller,
            "operator": self.operator,
            "count": self.count,
            "message": self.message,
            "detail": dict(self.detail),
            "entries": [ref.to_json() for ref in self.refs],
        }


@dataclass(frozen=True)
class Report:
    since: date | None
    until: date | None
    config: ReportConfig
    entries: int
    kinds: dict[date, dict[str, int]]
    volumes: tuple[VolumeRow, ...]
    denials: tuple[DenialRow, ...]
    denial_reasons: dict[str, int]
    anomalies: tuple[Anomaly, ...]
    shredded: tuple[ShreddedEntry, ...] = ()
    """Entries of the period whose data key was shredded (counted in ``entries``)."""

    @property
    def readable(self) -> int:
        """The entries of the period that were read (``entries`` minus the shredded ones)."""
        return self.entries - len(self.shredded)

    def shredded_per_day(self) -> dict[date, dict[str, int]]:
        """Shredded entries per UTC day and kind."""
        out: dict[date, Counter[str]] = defaultdict(Counter)
        for item in self.shredded:
            out[item.day][item.kind] += 1
        return {day: dict(sorted(counter.items())) for day, counter in sorted(out.items())}

    def first_and_last_day(self) -> tuple[date | None, date | None]:
        """The first and last day with entries: local days of the entries read, UTC days of the
        shredded ones."""
        days = sorted({*self.kinds, *(item.day for item in self.shredded)})
        return (days[0], days[-1]) if days else (None, None)

    def to_json(self) -> dict[str, Any]:
        shredded = shredded_summary(self.shredded, with_entries=False)
        shredded["days"] = {day.isoformat(): kinds for day, kinds in self.shredded_per_day().items()}
        shredded["day_basis"] = "UTC"
        return {
            "period": {
                "since": self.since.isoformat() if self.since else None,
                "until": self.until.isoformat() if self.until else None,
                "timezone": self.config.timezone,
            },
            "entries": self.entries,
            "readable": self.readable,
            "shredded": shredded,
            "kinds": {day.isoformat(): dict(sorted(k.items())) for day, k in sorted(self.kinds.items())},
            "volumes": [row.to_json() for row in self.volumes],
            "denials": [row.to_json() for row in self.denials],
            "denial_reasons": dict(sorted(self.denial_reasons.items())),
            "anomalies": [a.to_json() for a in self.anomalies],
            "thresholds": self.config.to_json(),
        }


# --- helpers ----------------------------------------------------------------------------------


def _local(when: datetime, zone: ZoneInfo) -> datetime:
    return when.astimezone(zone)


def _day(item: LocatedEntry, zone: ZoneInfo) -> date:
    return item.entry.time.astimezone(zone).date()


def _accesses(entries: Iterable[LocatedEntry]) -> Iterable[tuple[LocatedEntry, Access]]:
    for item in entries:
        body = item.entry.body
        if isinstance(body, Access):
            yield item, body


def _caller(item: LocatedEntry) -> str:
    caller = item.entry.caller
    return caller.value if caller is not None else ""


def _purpose(item: LocatedEntry) -> str:
    return item.entry.purpose or _NO_PURPOSE


def _in_days(day: date, since: date | None, until: date | None) -> bool:
    return (since is None or day >= since) and (until is None or day <= until)


def _refs(items: Iterable[LocatedEntry]) -> tuple[EntryRef, ...]:
    return tuple(sorted(item.ref for item in items))


# --- sections ---------------------------------------------------------------------------------


def volumes(entries: Iterable[LocatedEntry], config: ReportConfig = ReportConfig()) -> tuple[VolumeRow, ...]:
    """Access entries per day x caller x purpose x decision, sorted."""
    zone = config.zone
    counts: Counter[tuple[date, str, str, str]] = Counter()
    for item, body in _accesses(entries):
        counts[(_day(item, zone), _caller(item), _purpose(item), body.decision.value)] += 1
    return tuple(sorted(VolumeRow(*key, count) for key, count in counts.items()))


def kinds_per_day(
    entries: Iterable[LocatedEntry], config: ReportConfig = ReportConfig()
) -> dict[date, dict[str, int]]:
    """All entries per day and kind."""
    zone = config.zone
    out: dict[date, Counter[str]] = defaultdict(Counter)
    for item in entries:
        out[_day(item, zone)][item.entry.body.kind] += 1
    return {day: dict(counter) for day, counter in sorted(out.items())}


def denials(
    entries: Iterable[LocatedEntry], config: ReportConfig = ReportConfig()
) -> tuple[tuple[DenialRow, ...], dict[str, int]]:
    """Denied accesses per day x caller x provider x purpose x reason (sorted), and totals by reason."""
    zone = config.zone
    counts: Counter[tuple[date, str, str, str, str]] = Counter()
    reasons: Counter[str] = Counter()
    for item, body in _accesses(entries):
        if body.decision != Decision.DENIED:
            continue
        counts[(_day(item, zone), _caller(item), body.provider.value, _purpose(item), body.reason)] += 1
        reasons[body.reason] += 1
    rows = tuple(sorted(DenialRow(*key, count) for key, count in counts.items()))
    return rows, dict(reasons)


def daily_volume_by_caller(
    entries: Iterable[LocatedEntry], config: ReportConfig = ReportConfig()
) -> dict[str, dict[date, list[LocatedEntry]]]:
    """Access entries grouped by caller, then by local day."""
    zone = config.zone
    out: dict[str, dict[date, list[LocatedEntry]]] = defaultdict(lambda: defaultdict(list))
    for item, _ in _accesses(entries):
        out[_caller(item)][_day(item, zone)].append(item)
    return {caller: dict(days) for caller, days in out.items()}


def volume_spikes(
    entries: Iterable[LocatedEntry],
    config: ReportConfig = ReportConfig(),
    *,
    since: date | None = None,
    until: date | None = None,
) -> list[Anomaly]:
    """The ``volume_spike`` rule, judging only days in [since, until] (all days by default); the
    entries before ``since`` serve as history."""
    found: list[Anomaly] = []
    window = timedelta(days=config.spike_window_days)
    for caller, by_day in daily_volume_by_caller(entries, config).items():
        first = min(by_day)
        for day, items in sorted(by_day.items()):
            count = len(items)
            if not _in_days(day, since, until) or count < config.spike_min_count:
                continue
            # the window's start, no earlier than the caller's first day (nor before year 1)
            start = first if (day - first).days <= config.spike_window_days else day - window
            history_days = (day - start).days
            if history_days < config.spike_min_history_days:
                continue
            history = [len(by_day.get(start + timedelta(days=i), ())) for i in range(history_days)]
            median = statistics.median(history)
            if count <= config.spike_factor * median:
                continue
            ratio = "no usual volume" if median == 0 else f"{count / median:.1f} x its median {median:g}"
            found.append(
                Anomaly(
                    rule="volume_spike",
                    day=day,
                    caller=caller,
                    operator="",
                    count=count,
                    message=(
                        f"{caller} made {count} requests, {ratio} over the previous {history_days} days "
                        f"(threshold {config.spike_factor:g} x)"
                    ),
                    detail={
                        "median": median,
                        "history_days": history_days,
                        "factor": config.spike_factor,
                        "threshold": config.spike_factor * median,
                    },
                    refs=_refs(items),
                )
            )
    return found


def is_working_time(when: datetime, config: ReportConfig = ReportConfig()) -> bool:
    """Whether ``when`` (aware) falls within working hours in the report's time zone."""
    local = _local(when, config.zone)
    day = local.date()
    if day in config.extra_workdays:
        working_day = True
    else:
        working_day = local.weekday() in config.workdays and day not in config.holidays
    return working_day and config.work_start <= local.time().replace(tzinfo=None) < config.work_end


def off_hours(
    entries: Iterable[LocatedEntry],
    config: ReportConfig = ReportConfig(),
    *,
    since: date | None = None,
    until: date | None = None,
) -> list[Anomaly]:
    """The ``off_hours`` rule: accesses outside working hours, one finding per day, caller, operator."""
    zone = config.zone
    groups: dict[tuple[date, str, str], list[LocatedEntry]] = defaultdict(list)
    for item, _ in _accesses(entries):
        day = _day(item, zone)
        if _in_days(day, since, until) and not is_working_time(item.entry.time, config):
            groups[(day, _caller(item), item.entry.operator)].append(item)
    found = []
    for (day, caller, operator), items in groups.items():
        times = sorted(_local(i.entry.time, zone).strftime("%H:%M") for i in items)
        who = f"{caller} operator {operator}" if operator else f"{caller} (no operator recorded)"
        span = times[0] if times[0] == times[-1] else f"{times[0]}-{times[-1]}"
        allowed = sum(1 for _, body in _accesses(items) if body.decision == Decision.ALLOWED)
        found.append(
            Anomaly(
                rule="off_hours",
                day=day,
                caller=caller,
                operator=operator,
                count=len(items),
                message=(
                    f"{who}: {len(items)} request(s) outside working hours "
                    f"({config.work_start:%H:%M}-{config.work_end:%H:%M} {config.timezone} on working days), "
                    f"at {span}"
                ),
                detail={
                    "allowed": allowed,
                    "denied": len(items) - allowed,
                    "first": times[0],
                    "last": times[-1],
                },
                refs=_refs(items),
            )
        )
    return found


def operator_breadth(
    entries: Iterable[LocatedEntry],
    config: ReportConfig = ReportConfig(),
    *,
    since: date | None = None,
    until: date | None = None,
) -> list[Anomaly]:
    """The ``operator_breadth`` rule: an operator touching more than N distinct subjects a day."""
    zone = config.zone
    groups: dict[tuple[date, str, str], list[LocatedEntry]] = defaultdict(list)
    for item, _ in _accesses(entries):
        if not item.entry.operator:
            continue
        day = _day(item, zone)
        if _in_days(day, since, until):
            groups[(day, _caller(item), item.entry.operator)].append(item)
    found = []
    limit = config.operator_max_subjects
    for (day, caller, operator), items in groups.items():
        subjects = {i.entry.subject.term for i in items if i.entry.subject is not None}
        if len(subjects) <= limit:
            continue
        found.append(
            Anomaly(
                rule="operator_breadth",
                day=day,
                caller=caller,
                operator=operator,
                count=len(subjects),
                message=(
                    f"{caller} operator {operator} touched {len(subjects)} distinct subjects "
                    f"in {len(items)} requests (threshold {limit})"
                ),
                detail={"subjects": len(subjects), "requests": len(items), "threshold": limit},
                refs=_refs(items),
            )
        )
    return found


def no_basis(
    entries: Iterable[LocatedEntry],
    config: ReportConfig = ReportConfig(),
    *,
    since: date | None = None,
    until: date | None = None,
) -> list[Anomaly]:
    """The ``no_basis`` rule: allowed accesses whose legal basis is ``none``."""
    zone = config.zone
    groups: dict[tuple[date, str, str, str], list[LocatedEntry]] = defaultdict(list)
    for item, body in _accesses(entries):
        if body.decision != Decision.ALLOWED or body.legal_basis.kind != LegalBasisKind.NONE:
            continue
        day = _day(item, zone)
        if _in_days(day, since, until):
            groups[(day, _caller(item), body.provider.value, _purpose(item))].append(item)
    found = []
    for (day, caller, provider, purpose), items in groups.items():
        found.append(
            Anomaly(
                rule="no_basis",
                day=day,
                caller=caller,
                operator="",
                count=len(items),
                message=(
                    f"{len(items)} allowed request(s) by {caller} to {provider} "
                    f"for {purpose or '(no purpose)'} with neither consent nor a statutory duty recorded"
                ),
                detail={"provider": provider, "purpose": purpose},
                refs=_refs(items),
            )
        )
    return found


def anomalies(
    entries: Sequence[LocatedEntry],
    config: ReportConfig = ReportConfig(),
    *,
    since: date | None = None,
    until: date | None = None,
) -> tuple[Anomaly, ...]:
    """The findings of the configured rules, sorted by day, rule, caller and operator."""
    found: list[Anomaly] = []
    if "volume_spike" in config.rules:
        found += volume_spikes(entries, config, since=since, until=until)
    if "off_hours" in config.rules:
        found += off_hours(entries, config, since=since, until=until)
    if "operator_breadth" in config.rules:
        found += operator_breadth(entries, config, since=since, until=until)
    if "no_basis" in config.rules:
        found += no_basis(entries, config, since=since, until=until)
    return tuple(sorted(found, key=Anomaly.sort_key))


def _shredded_in_period(
    shredded: Iterable[ShreddedEntry], config: ReportConfig, since: date | None, until: date | None
) -> tuple[ShreddedEntry, ...]:
    """The shredded entries whose UTC day overlaps the local days [since, until]; one whose UTC
    day is only partly inside is kept, marked uncertain (its exact time is gone)."""
    start = local_day_bounds(since, config)[0] if since is not None else None
    end = local_day_bounds(until, config)[1] if until is not None else None
    kept = (item.within(start, end) for item in shredded)
    return tuple(sorted((s for s in kept if s is not None), key=lambda s: (s.day, s.origin, s.index)))


def build_report(
    entries: Iterable[LocatedEntry],
    config: ReportConfig = ReportConfig(),
    *,
    since: date | None = None,
    until: date | None = None,
    shredded: Iterable[ShreddedEntry] = (),
) -> Report:
    """The full report over the local days [since, until] (inclusive; open ends by default).
    Entries before ``since`` are not counted, but serve as history for ``volume_spike``.
    ``shredded`` entries (data key destroyed at retention) whose UTC day overlaps the period are
    counted in ``entries`` and in the report's own section, by UTC day and kind."""
    if since is not None and until is not None and until < since:
        raise ValueError("the report period ends before it starts")
    everything = list(entries)
    zone = config.zone
    period = [item for item in everything if _in_days(_day(item, zone), since, until)]
    gone = _shredded_in_period(shredded, config, since, until)
    denial_rows, reasons = denials(period, config)
    return Report(
        since=since,
        until=until,
        config=config,
        entries=len(period) + len(gone),
        shredded=gone,
        kinds=kinds_per_day(period, config),
        volumes=volumes(period, config),
        denials=denial_rows,
        denial_reasons=reasons,
        anomalies=anomalies(everything, config, since=since, until=until),
    )


def local_day_bounds(day: date, config: ReportConfig = ReportConfig()) -> tuple[datetime, datetime]:
    """The UTC instants [start, end) of a local day in the report's time zone (clamped to the
    first and last UTC instants at the ends of the calendar: 0001-01-01, 9999-12-31)."""
    zone = config.zone

    def utc(when: date) -> datetime:
        return utc_or_bound(datetime.combine(when, time(0), zone))

    if day == date.max:
        return utc(day), LATEST
    return utc(day), utc(day + timedelta(days=1))
