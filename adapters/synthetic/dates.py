"""Vectorised calendar arithmetic: dates as int64 day numbers since 1970-01-01, months as
``year * 12 + month - 1``, instants as epoch seconds; formatting through lookup tables so that a
million dates cost one fancy index, not a million strftime calls."""

from __future__ import annotations

import datetime as dt

import numpy as np
from numpy.typing import NDArray

EPOCH = dt.date(1970, 1, 1)
I64 = NDArray[np.int64]
Strs = NDArray[np.str_]


def day_number(d: dt.date) -> int:
    return (d - EPOCH).days


def to_date(day: int) -> dt.date:
    return EPOCH + dt.timedelta(days=int(day))


def ymd(days: I64) -> tuple[I64, I64, I64]:
    """Year, month (1-12), day (1-31) of each day number."""
    d = days.astype("datetime64[D]")
    months = d.astype("datetime64[M]")
    year = months.astype("datetime64[Y]").astype(np.int64) + 1970
    month = months.astype(np.int64) % 12 + 1
    day = (d - months.astype("datetime64[D]")).astype(np.int64) + 1
    return year, month, day


def month_of(days: I64) -> I64:
    """Month index (year * 12 + month - 1) of each day number."""
    return days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) + 1970 * 12


def month_of_day(day: int) -> int:
    d = to_date(day)
    return d.year * 12 + d.month - 1


def first_day(months: I64) -> I64:
    """Day number of the first day of each month index."""
    return (months - 1970 * 12).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)


def first_day_of_month(month: int) -> int:
    return day_number(dt.date(month // 12, month % 12 + 1, 1))


def add_years(day: int, years: int) -> int:
    d = to_date(day)
    try:
        return day_number(d.replace(year=d.year + years))
    except ValueError:  # 29 February
        return day_number(d.replace(year=d.year + years, day=28))


def format_days(days: I64, fmt: str) -> Strs:
    """Each day number formatted with strftime ``fmt`` (e.g. '%Y%m%d', '%Y-%m-%d', '%Y/%m/%d')."""
    if days.size == 0:
        return np.array([], dtype="U10")
    lo, hi = int(days.min()), int(days.max())
    table = np.array([(EPOCH + dt.timedelta(days=d)).strftime(fmt) for d in range(lo, hi + 1)])
    return table[days - lo]


def format_open_days(days: I64, fmt: str) -> Strs:
    """Like format_days, but '' where the day is negative (an open end: not cancelled, not exited)."""
    out = np.full(len(days), "", dtype="U10")
    closed = days >= 0
    out[closed] = format_days(days[closed], fmt)
    return out


def format_months(months: I64, sep: str) -> Strs:
    """Each month index as 'YYYY' + sep + 'MM'."""
    if months.size == 0:
        return np.array([], dtype="U7")
    lo, hi = int(months.min()), int(months.max())
    table = np.array([f"{m // 12:04d}{sep}{m % 12 + 1:02d}" for m in range(lo, hi + 1)])
    return table[months - lo]


_TIMES: Strs | None = None


def _times() -> Strs:
    global _TIMES
    if _TIMES is None:
        _TIMES = np.array([f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86400)])
    return _TIMES


def format_instants(seconds: I64, date_fmt: str, joiner: str) -> Strs:
    """Each epoch second as date (strftime ``date_fmt``) + ``joiner`` + 'HH:MM:SS'."""
    days = seconds // 86400
    date_part = np.strings.add(format_days(days, date_fmt), joiner)
    return np.strings.add(date_part, _times()[seconds - days * 86400])
