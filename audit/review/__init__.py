"""Review tools over one or several audit logs: search, reports, a citizen's view, signed exports.

* :mod:`audit.review.query`: search criteria -> blind-index terms -> matching entry indices, across
  several logs, decrypting only the matched entries (needs the auditor key);
* :mod:`audit.review.report`: volumes, denials and anomaly rules over decoded entries (pure);
* :mod:`audit.review.subject_report`: what one citizen may see about their own data (pure);
* :mod:`audit.review.export`: signed bundles of selected entries with inclusion proofs, and their
  offline verification;
* :mod:`audit.review.render`: human-readable tables.

An entry found in a log is a :class:`LocatedEntry`: the entry plus where it is (the log's origin
and the entry's index), so that every finding points back at evidence that can be proved.

An entry whose data key was crypto-shredded at the end of its retention period can no longer be
read, but it is still in the log and still proved by it. The review tools never drop such an
entry silently: it is a :class:`ShreddedEntry` (where it is, its kind and UTC day, which the log
keeps in clear, and the period whose key was destroyed), and every output counts them
(:func:`shredded_summary`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from audit.entry import AuditEntry

__all__ = [
    "EARLIEST",
    "LATEST",
    "EntryRef",
    "LocatedEntry",
    "ShreddedEntry",
    "shredded_sentence",
    "shredded_summary",
    "utc_or_bound",
]

EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)
"""The bounds of a time range: the first and last instants a UTC time can hold."""


def utc_or_bound(when: datetime) -> datetime:
    """``when`` in UTC, or :data:`EARLIEST` / :data:`LATEST` when it lies beyond what a UTC time can
    hold (the first day of year 1 in a zone east of UTC, the last of year 9999 west of it)."""
    try:
        return when.astimezone(UTC)
    except OverflowError:
        return EARLIEST if when.year == 1 else LATEST


@dataclass(frozen=True, slots=True, order=True)
class EntryRef:
    """Where an entry is: the origin (name) of its log and its index there."""

    origin: str
    index: int

    def __str__(self) -> str:
        return f"{self.origin}#{self.index}"

    def to_json(self) -> dict[str, str | int]:
        return {"log": self.origin, "index": self.index}


@dataclass(frozen=True, slots=True)
class LocatedEntry:
    """A decoded entry and where it is."""

    origin: str
    index: int
    entry: AuditEntry

    @property
    def ref(self) -> EntryRef:
        return EntryRef(self.origin, self.index)


@dataclass(frozen=True, slots=True)
class ShreddedEntry:
    """An entry whose data key was destroyed at retention: its details are gone, the log still
    proves it existed. ``day`` (UTC) and ``kind`` are the clear fields the log keeps next to the
    sealed entry; ``period`` is the retention period whose key was shredded (``None`` if the
    keyring does not say); ``certain`` is false when the entry was matched by its UTC day alone
    and that day is only partly inside the time range asked for (it may lie outside it)."""

    origin: str
    index: int
    day: date
    kind: str
    period: str | None
    shredded_at: str | None = None
    certain: bool = True

    @property
    def ref(self) -> EntryRef:
        return EntryRef(self.origin, self.index)

    def day_span(self) -> tuple[datetime, datetime]:
        """The UTC instants [start, end) of the entry's UTC day."""
        start = datetime.combine(self.day, time(0), UTC)
        return start, start + timedelta(days=1)

    def within(self, since: datetime | None, until: datetime | None) -> ShreddedEntry | None:
        """This entry if its UTC day overlaps [since, until) (``None``: no bound), marked
        uncertain when the day is only partly inside (its exact time is gone); else ``None``."""
        first, last = self.day_span()
        if (since is not None and last <= since) or (until is not None and first >= until):
            return None
        inside = (since is None or first >= since) and (until is None or last <= until)
        return self if inside or not self.certain else replace(self, certain=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "log": self.origin,
            "index": self.index,
            "day": self.day.isoformat(),
            "kind": self.kind,
            "period": self.period,
            "shredded_at": self.shredded_at,
            "certain": self.certain,
        }


def _period_name(period: str | None) -> str:
    return period if period is not None else "an unknown period"


def shredded_summary(entries: Iterable[ShreddedEntry], *, with_entries: bool = True) -> dict[str, Any]:
    """The JSON form of the shredded entries of an output: how many, per retention period, how
    many may lie outside the time range asked for (``uncertain``) and, with ``with_entries``,
    each one."""
    items = sorted(entries, key=lambda s: (s.origin, s.index))
    periods = Counter(_period_name(s.period) for s in items)
    out: dict[str, Any] = {
        "count": len(items),
        "periods": dict(sorted(periods.items())),
        "uncertain": sum(1 for s in items if not s.certain),
    }
    if with_entries:
        out["entries"] = [s.to_json() for s in items]
    return out


def shredded_sentence(
    entries: Iterable[ShreddedEntry], *, noun: tuple[str, str] = ("entry", "entries")
) -> str:
    """One line per retention period, e.g. ``20 entries of 2026-10 were shredded at retention:
    their details are gone; the log still proves they existed.`` ("" when there are none)."""
    items = list(entries)
    if not items:
        return ""
    periods = Counter(_period_name(s.period) for s in items)
    lines = []
    for period, count in sorted(periods.items()):
        word = noun[0] if count == 1 else noun[1]
        verb = "were" if count != 1 else "was"
        them = "they" if count != 1 else "it"
        lines.append(
            f"{count} {word} of {period} {verb} shredded at retention: "
            f"{'its' if count == 1 else 'their'} details are gone; the log still proves {them} existed."
        )
    uncertain = sum(1 for s in items if not s.certain)
    if uncertain:
        lines.append(
            f"({uncertain} of them matched by their UTC day alone, a day only partly inside the time range: "
            "they may lie outside it.)"
        )
    return "\n".join(lines)
