"""Properties of the pure report functions over random entry lists (hypothesis)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from audit.entry import Access, AuditEntry, Decision, LegalBasisKind
from audit.review import LocatedEntry
from audit.review.report import (
    ReportConfig,
    build_report,
    denials,
    is_working_time,
    kinds_per_day,
    off_hours,
    operator_breadth,
    volume_spikes,
    volumes,
)
from tests.audit.review import access, consent, denied, person, push

START = datetime(2026, 10, 1, tzinfo=UTC)
AGENCIES = ["hrss", "education", "civil_affairs", "tax", "market_regulation"]
SUBJECTS = [person(i) for i in range(12)]


@st.composite
def entries(draw: st.DrawFn) -> AuditEntry:
    when = START + timedelta(minutes=draw(st.integers(0, 30 * 24 * 60)))
    subject = draw(st.sampled_from(SUBJECTS))
    kind = draw(st.sampled_from(["access"] * 6 + ["denied"] * 2 + ["consent", "push"]))
    if kind == "consent":
        return consent(when, subject=subject)
    if kind == "push":
        return push(when, subject=subject)
    common: dict[str, Any] = {
        "caller": draw(st.sampled_from(AGENCIES)),
        "provider": draw(st.sampled_from(AGENCIES)),
        "subject": subject,
        "operator": draw(st.sampled_from(["", "op-1", "op-2"])),
        "purpose": draw(st.sampled_from(["employment_subsidy_review", "benefit_review"])),
        "basis": draw(st.sampled_from([("consent", "c-1"), ("statutory_duty", "d-1"), ("none", "")])),
    }
    if kind == "denied":
        return denied(when, reason=draw(st.sampled_from(["CONSENT_MISSING", "NO_AGREEMENT"])), **common)
    return access(when, **common)


logs = st.lists(entries(), max_size=60).map(
    lambda items: [LocatedEntry(f"gw-{i % 2}", i // 2, e) for i, e in enumerate(items)]
)
configs = st.builds(
    ReportConfig,
    timezone=st.sampled_from(["Asia/Shanghai", "UTC", "America/New_York"]),
    spike_factor=st.sampled_from([1.0, 1.5, 3.0]),
    spike_min_history_days=st.integers(1, 7),
    spike_window_days=st.integers(7, 28),
    spike_min_count=st.integers(1, 4),
    operator_max_subjects=st.integers(1, 6),
)

COMMON = settings(max_examples=60, deadline=None)


def _accesses(items: list[LocatedEntry]) -> list[tuple[LocatedEntry, Access]]:
    return [(i, i.entry.body) for i in items if isinstance(i.entry.body, Access)]


@COMMON
@given(logs, configs)
def test_counts_add_up(items: list[LocatedEntry], config: ReportConfig) -> None:
    accesses = _accesses(items)
    refused = [a for a in accesses if a[1].decision == Decision.DENIED]
    assert sum(r.count for r in volumes(items, config)) == len(accesses)
    rows, reasons = denials(items, config)
    assert sum(r.count for r in rows) == len(refused) == sum(reasons.values())
    assert sum(sum(k.values()) for k in kinds_per_day(items, config).values()) == len(items)


@COMMON
@given(logs, configs, st.randoms(use_true_random=False))
def test_report_does_not_depend_on_input_order(items: list[LocatedEntry], config: ReportConfig, rnd) -> None:  # type: ignore[no-untyped-def]
    shuffled = list(items)
    rnd.shuffle(shuffled)
    assert build_report(items, config).to_json() == build_report(shuffled, config).to_json()


@COMMON
@given(logs, configs)
def test_findings_point_at_matching_entries(items: list[LocatedEntry], config: ReportConfig) -> None:
    by_ref = {i.ref: i for i in items}
    report = build_report(items, config)
    text = json.dumps(report.to_json())
    assert not any(s in text for s in SUBJECTS)
    for anomaly in report.anomalies:
        assert anomaly.refs and set(anomaly.refs) <= set(by_ref)
        assert list(anomaly.refs) == sorted(anomaly.refs)
        found = [by_ref[r] for r in anomaly.refs]
        assert all(isinstance(f.entry.body, Access) for f in found)
        if anomaly.rule == "no_basis":
            assert anomaly.count == len(found)
            for f in found:
                body = f.entry.body
                assert isinstance(body, Access)
                assert body.decision == Decision.ALLOWED and body.legal_basis.kind == LegalBasisKind.NONE
        elif anomaly.rule == "operator_breadth":
            assert anomaly.count > config.operator_max_subjects
            assert anomaly.count == len({f.entry.subject for f in found})
            assert {f.entry.operator for f in found} == {anomaly.operator}
        elif anomaly.rule == "volume_spike":
            assert anomaly.count == len(found) >= config.spike_min_count
            assert anomaly.count > config.spike_factor * anomaly.detail["median"]
            assert anomaly.detail["history_days"] >= config.spike_min_history_days


@COMMON
@given(logs, configs)
def test_off_hours_flags_exactly_the_accesses_outside_working_time(
    items: list[LocatedEntry], config: ReportConfig
) -> None:
    flagged = {ref for a in off_hours(items, config) for ref in a.refs}
    expected = {i.ref for i, _ in _accesses(items) if not is_working_time(i.entry.time, config)}
    assert flagged == expected


@COMMON
@given(logs, configs, st.integers(0, 5))
def test_thresholds_are_monotone(items: list[LocatedEntry], config: ReportConfig, more: int) -> None:
    def keys(found: list) -> set:  # type: ignore[type-arg]
        return {(a.day, a.caller, a.operator) for a in found}

    stricter = ReportConfig(
        timezone=config.timezone,
        spike_factor=config.spike_factor + more,
        spike_min_history_days=config.spike_min_history_days,
        spike_window_days=config.spike_window_days,
        spike_min_count=config.spike_min_count + more,
        operator_max_subjects=config.operator_max_subjects + more,
    )
    assert keys(volume_spikes(items, stricter)) <= keys(volume_spikes(items, config))
    assert keys(operator_breadth(items, stricter)) <= keys(operator_breadth(items, config))


@COMMON
@given(logs, configs)
def test_period_restriction_keeps_only_its_days(items: list[LocatedEntry], config: ReportConfig) -> None:
    full = build_report(items, config)
    days = sorted({r.day for r in full.volumes})
    if not days:
        return
    middle = days[len(days) // 2]
    part = build_report(items, config, since=middle, until=middle)
    assert all(r.day == middle for r in part.volumes)
    assert all(a.day == middle for a in part.anomalies)
    assert [r for r in full.volumes if r.day == middle] == list(part.volumes)
    full_on_day = [a.to_json() for a in full.anomalies if a.day == middle]
    assert full_on_day == [a.to_json() for a in part.anomalies]
