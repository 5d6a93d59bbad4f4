"""The review report over hand-built entries: volumes, denials and the four anomaly rules."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta

import pytest

from audit.review import EntryRef, LocatedEntry
from audit.review.report import (
    ReportConfig,
    anomalies,
    build_report,
    denials,
    is_working_time,
    kinds_per_day,
    local_day_bounds,
    no_basis,
    off_hours,
    operator_breadth,
    volume_spikes,
    volumes,
)
from tests.audit.review import PERSON, access, consent, daily, denied, local, located, person, push

MONDAY = date(2026, 11, 2)  # a Monday


# --- volumes, kinds, denials ------------------------------------------------------------------


def test_volumes_group_by_local_day_caller_purpose_decision() -> None:
    entries = located(
        [
            access(local(2026, 11, 2, 9)),
            access(local(2026, 11, 2, 10)),
            access(local(2026, 11, 2, 11), caller="civil_affairs"),
            denied(local(2026, 11, 2, 12)),
            access(local(2026, 11, 2, 13), purpose="benefit_review"),
            # 23:30 UTC on the 2nd is 07:30 on the 3rd in Shanghai
            access(datetime(2026, 11, 2, 23, 30, tzinfo=UTC)),
            consent(local(2026, 11, 2, 9)),
        ]
    )
    rows = [(r.day.isoformat(), r.caller, r.purpose, r.decision, r.count) for r in volumes(entries)]
    assert rows == [
        ("2026-11-02", "civil_affairs", "employment_subsidy_review", "allowed", 1),
        ("2026-11-02", "tax", "benefit_review", "allowed", 1),
        ("2026-11-02", "tax", "employment_subsidy_review", "allowed", 2),
        ("2026-11-02", "tax", "employment_subsidy_review", "denied", 1),
        ("2026-11-03", "tax", "employment_subsidy_review", "allowed", 1),
    ]
    utc_rows = volumes(entries, ReportConfig(timezone="UTC"))
    assert {r.day for r in utc_rows} == {date(2026, 11, 2)}


def test_kinds_per_day_counts_every_kind() -> None:
    entries = located([access(local(2026, 11, 2)), consent(local(2026, 11, 2)), push(local(2026, 11, 3))])
    assert kinds_per_day(entries) == {
        date(2026, 11, 2): {"access": 1, "consent_change": 1},
        date(2026, 11, 3): {"push_notification": 1},
    }


def test_denials_per_reason() -> None:
    entries = located(
        [
            denied(local(2026, 11, 2, 9)),
            denied(local(2026, 11, 2, 10)),
            denied(local(2026, 11, 2, 11), reason="PURPOSE_NOT_ALLOWED", provider="tax", caller="hrss"),
            denied(local(2026, 11, 2, 12), subject=None, purpose=None, reason="INVALID_IDENTITY_NUMBER"),
            access(local(2026, 11, 2, 13)),
        ]
    )
    rows, reasons = denials(entries)
    assert [(r.caller, r.provider, r.purpose, r.reason, r.count) for r in rows] == [
        ("hrss", "tax", "employment_subsidy_review", "PURPOSE_NOT_ALLOWED", 1),
        ("tax", "hrss", "", "INVALID_IDENTITY_NUMBER", 1),
        ("tax", "hrss", "employment_subsidy_review", "CONSENT_MISSING", 2),
    ]
    assert reasons == {"CONSENT_MISSING": 2, "PURPOSE_NOT_ALLOWED": 1, "INVALID_IDENTITY_NUMBER": 1}


# --- volume_spike -----------------------------------------------------------------------------


def _history_then(day_count: int, usual: int, spike: int, **kw: object) -> list:  # type: ignore[type-arg]
    history = daily(MONDAY, day_count, usual, **kw)  # type: ignore[arg-type]
    last = MONDAY + timedelta(days=day_count)
    return located(history + daily(last, 1, spike, **kw))  # type: ignore[arg-type]


def test_volume_spike_over_three_times_the_median() -> None:
    entries = _history_then(10, 5, 16)
    found = volume_spikes(entries)
    assert len(found) == 1
    spike = found[0]
    assert spike.rule == "volume_spike"
    assert spike.day == MONDAY + timedelta(days=10)
    assert spike.caller == "tax" and spike.count == 16
    assert spike.detail["median"] == 5 and spike.detail["history_days"] == 10
    assert len(spike.refs) == 16 and spike.refs == tuple(sorted(spike.refs))
    assert "16 requests" in spike.message


def test_volume_at_exactly_three_times_is_not_a_spike() -> None:
    assert volume_spikes(_history_then(10, 5, 15)) == []


def test_volume_spike_needs_seven_days_of_history() -> None:
    assert volume_spikes(_history_then(6, 5, 40)) == []
    assert len(volume_spikes(_history_then(7, 5, 40))) == 1


def test_volume_spike_needs_a_minimum_count() -> None:
    assert volume_spikes(_history_then(10, 1, 9)) == []
    assert len(volume_spikes(_history_then(10, 1, 10))) == 1
    assert volume_spikes(_history_then(10, 1, 10), ReportConfig(spike_min_count=11)) == []


def test_volume_spike_counts_quiet_days_as_zero() -> None:
    # busy on two days only, then ten quiet days: the median is 0, any volume >= min_count is a spike
    entries = located(daily(MONDAY, 2, 20) + daily(MONDAY + timedelta(days=12), 1, 10))
    found = volume_spikes(entries)
    assert [(a.day, a.detail["median"]) for a in found] == [(MONDAY + timedelta(days=12), 0)]
    assert "no usual volume" in found[0].message


def test_volume_spike_window_is_trailing_and_per_agency() -> None:
    # 40 quiet days at 1/day, then busy at 20/day for 30 days: the first busy days are spikes,
    # then the trailing median catches up and the volume is usual again
    entries = located(
        daily(MONDAY, 40, 1)
        + daily(MONDAY + timedelta(days=40), 30, 20)
        + daily(MONDAY, 70, 20, caller="civil_affairs")
    )
    found = volume_spikes(entries)
    assert {a.caller for a in found} == {"tax"}
    days = sorted((a.day - MONDAY).days for a in found)
    assert days[0] == 40
    assert days[-1] < 70
    assert days == list(range(40, 40 + len(days)))


def test_volume_spike_factor_is_configurable_and_history_before_since_is_used() -> None:
    entries = _history_then(10, 5, 12)
    assert volume_spikes(entries) == []
    assert len(volume_spikes(entries, ReportConfig(spike_factor=2))) == 1
    spike_day = MONDAY + timedelta(days=10)
    found = volume_spikes(entries, ReportConfig(spike_factor=2), since=spike_day, until=spike_day)
    assert len(found) == 1
    assert volume_spikes(entries, ReportConfig(spike_factor=2), until=spike_day - timedelta(days=1)) == []


# --- off_hours --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "working"),
    [
        (local(2026, 11, 2, 7, 59), False),
        (local(2026, 11, 2, 8, 0), True),
        (local(2026, 11, 2, 17, 59), True),
        (local(2026, 11, 2, 18, 0), False),
        (local(2026, 11, 6, 12), True),  # Friday
        (local(2026, 11, 7, 12), False),  # Saturday
        (local(2026, 11, 8, 12), False),  # Sunday
        (datetime(2026, 11, 2, 1, 0, tzinfo=UTC), True),  # 09:00 in Shanghai
        (datetime(2026, 11, 2, 12, 0, tzinfo=UTC), False),  # 20:00 in Shanghai
    ],
)
def test_working_time_defaults(when: datetime, working: bool) -> None:
    assert is_working_time(when) is working


def test_working_time_holidays_and_make_up_days() -> None:
    config = ReportConfig(
        holidays=frozenset({date(2026, 10, 1)}), extra_workdays=frozenset({date(2026, 10, 10)})
    )
    assert not is_working_time(local(2026, 10, 1, 10), config)  # a Thursday, National Day
    assert is_working_time(local(2026, 10, 10, 10), config)  # a Saturday, a make-up working day
    assert not is_working_time(local(2026, 10, 10, 19), config)
    custom = ReportConfig(
        timezone="UTC", work_start=time(0), work_end=time(23, 59), workdays=frozenset(range(7))
    )
    assert is_working_time(local(2026, 11, 7, 12), custom)


def test_off_hours_groups_per_day_caller_operator() -> None:
    entries = located(
        [
            access(local(2026, 11, 2, 22, 15)),
            denied(local(2026, 11, 2, 23, 40)),
            access(local(2026, 11, 2, 22, 0), operator="op-2"),
            access(local(2026, 11, 2, 10)),  # working hours
            access(local(2026, 11, 7, 10), caller="civil_affairs", operator=""),  # Saturday
            consent(local(2026, 11, 2, 23)),  # not an access
            push(local(2026, 11, 2, 23)),
        ]
    )
    found = off_hours(entries)
    summary = sorted((a.day.isoformat(), a.caller, a.operator, a.count) for a in found)
    assert summary == [
        ("2026-11-02", "tax", "op-1", 2),
        ("2026-11-02", "tax", "op-2", 1),
        ("2026-11-07", "civil_affairs", "", 1),
    ]
    op1 = next(a for a in found if a.operator == "op-1")
    assert op1.detail == {"allowed": 1, "denied": 1, "first": "22:15", "last": "23:40"}
    assert op1.refs == (EntryRef("gw-a", 0), EntryRef("gw-a", 1))
    assert "no operator recorded" in next(a for a in found if a.caller == "civil_affairs").message


# --- operator_breadth -------------------------------------------------------------------------


def test_operator_touching_many_subjects() -> None:
    many = [access(local(2026, 11, 2, 9, i % 60), subject=person(i)) for i in range(51)]
    repeat = [access(local(2026, 11, 2, 11), subject=person(0))] * 5
    entries = located(many + repeat)
    found = operator_breadth(entries)
    assert len(found) == 1
    assert found[0].count == 51
    assert found[0].detail == {"subjects": 51, "requests": 56, "threshold": 50}
    assert operator_breadth(located(many[:50] + repeat)) == []
    assert operator_breadth(entries, ReportConfig(operator_max_subjects=51)) == []


def test_operator_breadth_is_per_operator_caller_and_day() -> None:
    a = [access(local(2026, 11, 2, 9), subject=person(i), operator="op-1") for i in range(30)]
    b = [access(local(2026, 11, 2, 9), subject=person(i + 30), operator="op-2") for i in range(30)]
    c = [access(local(2026, 11, 3, 9), subject=person(i + 60), operator="op-1") for i in range(30)]
    d = [
        access(local(2026, 11, 2, 9), subject=person(i + 90), operator="op-1", caller="hrss")
        for i in range(30)
    ]
    none = [access(local(2026, 11, 2, 9), subject=person(i + 200), operator="") for i in range(80)]
    config = ReportConfig(operator_max_subjects=30)
    assert operator_breadth(located(a + b + c + d + none), config) == []
    assert len(operator_breadth(located(a + b + c + d + none), ReportConfig(operator_max_subjects=29))) == 4


# --- no_basis ---------------------------------------------------------------------------------


def test_allowed_access_without_basis() -> None:
    entries = located(
        [
            access(local(2026, 11, 2), basis=("none", "")),
            access(local(2026, 11, 2, 11), basis=("none", "")),
            access(local(2026, 11, 2, 12), basis=("none", ""), provider="tax", caller="hrss"),
            denied(local(2026, 11, 2), basis=("none", "")),
            access(local(2026, 11, 2), basis=("statutory_duty", "duty-12")),
            access(local(2026, 11, 2), basis=("consent", "c-1")),
        ]
    )
    found = no_basis(entries)
    assert sorted((a.caller, a.detail["provider"], a.count) for a in found) == [
        ("hrss", "tax", 1),
        ("tax", "hrss", 2),
    ]


# --- whole report -----------------------------------------------------------------------------


def test_report_period_rules_and_json() -> None:
    history = daily(MONDAY, 10, 3)
    day = MONDAY + timedelta(days=10)
    busy = daily(day, 1, 12)
    night = [access(local(2026, 11, 13, 23), basis=("none", ""))]
    entries = located(history + busy + night)
    report = build_report(entries, since=day, until=day + timedelta(days=1))
    assert report.entries == 13
    assert {r.day for r in report.volumes} == {day, day + timedelta(days=1)}
    rules = [a.rule for a in report.anomalies]
    assert rules == ["volume_spike", "off_hours", "no_basis"]
    data = report.to_json()
    text = json.dumps(data)
    assert PERSON not in text
    assert data["period"] == {"since": "2026-11-12", "until": "2026-11-13", "timezone": "Asia/Shanghai"}
    assert data["thresholds"]["spike_factor"] == 3.0
    assert data["anomalies"][0]["entries"][0] == {"log": "gw-a", "index": 30}

    only = build_report(entries, ReportConfig(rules=frozenset({"no_basis"})), since=day)
    assert [a.rule for a in only.anomalies] == ["no_basis"]
    assert anomalies(entries, ReportConfig(rules=frozenset())) == ()


def test_report_validates_its_period_and_config() -> None:
    with pytest.raises(ValueError, match="ends before"):
        build_report([], since=date(2026, 11, 2), until=date(2026, 11, 1))
    for bad in (
        {"timezone": "Mars/Olympus"},
        {"work_start": time(18), "work_end": time(8)},
        {"workdays": frozenset({7})},
        {"spike_factor": 0},
        {"spike_min_history_days": 10, "spike_window_days": 5},
        {"spike_min_count": 0},
        {"operator_max_subjects": 0},
        {"rules": frozenset({"bogus"})},
    ):
        with pytest.raises(ValueError):
            ReportConfig(**bad)


def test_empty_report() -> None:
    report = build_report([])
    assert report.entries == 0 and report.anomalies == () and report.volumes == ()
    assert report.to_json()["period"]["since"] is None


def test_local_day_bounds() -> None:
    start, end = local_day_bounds(date(2026, 11, 2))
    assert start == datetime(2026, 11, 1, 16, tzinfo=UTC)
    assert end - start == timedelta(days=1)


def test_report_header_names_the_days_of_the_entries() -> None:
    """Without a range the header shows the first and last day of the entries, never 'start .. end'."""
    from audit.review.render import render_report

    entries = located(
        [access(local(2026, 11, 2, 9)), access(local(2026, 11, 5, 23, 30)), consent(local(2026, 11, 3))]
    )
    header = render_report(build_report(entries)).splitlines()[0]
    assert header == "Audit report 2026-11-02 .. 2026-11-05 (Asia/Shanghai): 3 entries"
    header = render_report(build_report(entries, since=date(2026, 11, 3))).splitlines()[0]
    assert header.startswith("Audit report 2026-11-03 .. 2026-11-05 ")
    header = render_report(build_report(entries, until=date(2026, 11, 4))).splitlines()[0]
    assert header.startswith("Audit report 2026-11-02 .. 2026-11-04 ")
    assert render_report(build_report([])).startswith("Audit report all (Asia/Shanghai): 0 entries")
    assert render_report(build_report([], since=date(2026, 11, 3))).startswith(
        "Audit report from 2026-11-03 "
    )
    for since, until in ((None, None), (date(2026, 11, 3), None)):
        assert "start" not in render_report(build_report(entries, since=since, until=until)).splitlines()[0]


def _off_hours_row(entries: list[LocatedEntry]) -> tuple[str, str]:
    from audit.review.render import render_report

    text = render_report(build_report(entries, ReportConfig(rules=frozenset({"off_hours"}))))
    return next(line for line in text.splitlines() if "off_hours" in line), text


def test_anomaly_entries_are_shown_compactly_each_log_once() -> None:
    """The table names each log once (by its node) and runs of indices; --json keeps every ref."""
    a = "dsgw.audit/gw1/0c454a3b-7d4e-4a55-9a6c-1f2e3d4c5b6a"
    b = "dsgw.audit/gw2/9f8e7d6c-0000-4000-8000-000000000000"
    night = [access(local(2026, 11, 2, 23, i % 60)) for i in range(220)]
    # log a: #0-#4, then (a gap) #17-#221; log b: #3-#12
    entries = [LocatedEntry(a, i if i < 5 else i + 12, e) for i, e in enumerate(night[:210])]
    entries += located(night[210:], b, start=3)
    row, text = _off_hours_row(entries)
    assert row.endswith("gw1 #0-#4, #17-#221; gw2 #3-#12")
    assert a not in row and len(row) < 250
    assert f"gw1 = {a}" in text and f"gw2 = {b}" in text
    report = build_report(entries, ReportConfig(rules=frozenset({"off_hours"})))
    assert len(report.to_json()["anomalies"][0]["entries"]) == 220

    scattered = [LocatedEntry(a, 3 * i, access(local(2026, 11, 2, 23, i))) for i in range(12)]
    row, _ = _off_hours_row(scattered)
    assert row.endswith("gw1 #0, #3, #6, #9, #12 (+7 more)")
    # two logs of the same node keep their whole origins
    twin = "dsgw.audit/gw1/11111111-2222-4333-8444-555555555555"
    row, text = _off_hours_row([*scattered[:1], LocatedEntry(twin, 0, night[0])])
    assert row.endswith(f"{a} #0; {twin} #0") and "logs:" not in text
