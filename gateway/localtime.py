"""The city's civil time: Beijing time (UTC+8, no daylight saving). Agreement validity dates,
and times given without a zone, are read in it, whatever the host's time zone."""

from __future__ import annotations

import datetime as dt

__all__ = ["BEIJING", "today"]

BEIJING = dt.timezone(dt.timedelta(hours=8), "UTC+08:00")


def today() -> dt.date:
    """Today's date in Beijing (on a UTC host it turns at 16:00 UTC)."""
    return dt.datetime.now(BEIJING).date()
