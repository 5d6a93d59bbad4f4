"""Agreement validity dates are Beijing dates whatever the host's zone (on a UTC host the
gateway kept an agreement in force until 08:00 Beijing time on its end date)."""

from __future__ import annotations

import datetime as dt
import inspect

import pytest

from gateway import localtime
from gateway.exchange import Exchange


@pytest.mark.parametrize(
    ("utc", "beijing"),
    [
        (dt.datetime(2026, 12, 31, 15, 59, tzinfo=dt.UTC), dt.date(2026, 12, 31)),
        (dt.datetime(2026, 12, 31, 16, 0, tzinfo=dt.UTC), dt.date(2027, 1, 1)),
    ],
)
def test_today_is_the_beijing_date(
    utc: dt.datetime, beijing: dt.date, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> Frozen:  # type: ignore[override]
            moment = utc.astimezone(tz)
            return cls(*moment.timetuple()[:6], tzinfo=moment.tzinfo)

    monkeypatch.setattr(localtime.dt, "datetime", Frozen)
    assert localtime.today() == beijing


def test_the_exchange_reads_agreements_on_the_beijing_date() -> None:
    assert inspect.signature(Exchange).parameters["today"].default is localtime.today
