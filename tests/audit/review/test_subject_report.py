"""A citizen's view: plain language, own data only, no operator or other person."""

from __future__ import annotations

import json
from datetime import datetime

from adapters.agencies import Agency
from audit.entry import AuditEntry, Subject, SubjectKind
from audit.review.render import render_subject_report
from audit.review.subject_report import agency_label, mask_identifier, subject_report
from tests.audit.review import OTHER, PERSON, access, consent, denied, local, located, push

ME = Subject(kind=SubjectKind.PERSON, id=PERSON)


def _entries() -> list:  # type: ignore[type-arg]
    return located(
        [
            access(local(2026, 11, 3, 14, 5), operator="secret-operator-9", request_id="req-42"),
            access(local(2026, 11, 2, 9, 30), subject=OTHER, operator="op-other", request_id="req-other"),
            denied(local(2026, 11, 4, 10), reason="CONSENT_REVOKED", caller="civil_affairs"),
            access(
                local(2026, 11, 1, 8, 15),
                caller="hrss",
                provider="education",
                basis=("statutory_duty", "duty-7"),
                datasets=("graduation",),
                fields=(),
                predicate={"name": "graduated_within_years", "parameters": {"years": 2}},
                outcome="found",
            ),
            consent(local(2026, 10, 30, 20)),
            consent(local(2026, 11, 5, 20), action="revoked"),
            push(local(2026, 11, 6, 9)),
            consent(local(2026, 11, 5, 21), subject=OTHER, consent_id="consent-of-other"),
        ]
    )


def test_only_the_subjects_own_entries_in_time_order() -> None:
    report = subject_report(ME, _entries())
    assert [i.kind for i in report.items] == [
        "consent_change",
        "access",
        "access",
        "access",
        "consent_change",
        "push_notification",
    ]
    times = [i.time for i in report.items]
    assert times == sorted(times)
    assert report.readers == {"hrss": 1, "tax": 1}
    assert report.denied == 1
    text = json.dumps(report.to_json(), ensure_ascii=False) + render_subject_report(report)
    for secret in (OTHER, "op-other", "req-other", "consent-of-other", "secret-operator-9", "op-1", PERSON):
        assert secret not in text
    assert report.subject_masked == mask_identifier(PERSON)
    assert report.to_json()["subject"] == {"kind": "person", "id": PERSON[:4] + "*" * 10 + PERSON[-4:]}


def test_a_check_names_the_fields_it_read() -> None:
    """Since 0.2.7 a comparison's entry lists the fields its predicate reads: the sentence names
    them (none of them was given); an older entry without them reads as before."""
    check = access(
        local(2026, 11, 5, 9, 0),
        caller="hrss",
        provider="education",
        basis=("consent", "consent-3"),
        datasets=("graduation",),
        fields=("graduation_date",),
        predicate={"name": "graduated_within_years", "parameters": {"years": 2}},
    )
    (item,) = subject_report(ME, located([check])).items
    assert "a check (graduated_within_years) on your graduation data (graduation_date)" in item.text["en"]
    assert "对您的数据（graduation：graduation_date）进行核验（graduated_within_years）" in item.text["zh"]
    assert item.to_json()["fields"] == ["graduation_date"]


def test_plain_language_sentences() -> None:
    report = subject_report(ME, _entries())
    by_ref = {i.reference: i for i in report.items}
    read = by_ref["req-42"]
    assert read.text["en"] == (
        "On 2026-11-03 at 14:05, the Taxation Bureau (税务局) asked the Human Resources and Social "
        "Security Bureau (人力资源和社会保障局) for your person_insurance data (currently_insured) for the "
        "purpose employment_subsidy_review, on the basis of your consent (consent-1). "
        "Allowed; the data was given."
    )
    assert read.text["zh"].startswith(
        "2026年11月3日 14:05，税务局向人力资源和社会保障局请求您的数据（person_insurance："
    )
    assert "依据：您的授权同意（consent-1）" in read.text["zh"]
    assert read.to_json()["basis"] == "consent"
    assert "operator" not in read.to_json()

    refused = next(i for i in report.items if i.decision == "denied")
    assert "you had withdrawn your consent" in refused.text["en"]
    assert "no data was given" in refused.text["en"]
    assert "您已撤回授权同意" in refused.text["zh"]

    check = next(i for i in report.items if i.check)
    assert "a check (graduated_within_years) on your data" in check.text["en"]
    assert "statutory duty (duty-7)" in check.text["en"]
    assert "法定职责（duty-7）" in check.text["zh"]
    assert '"years"' not in json.dumps(check.to_json())

    consents = [i for i in report.items if i.kind == "consent_change"]
    assert consents[0].text["en"].endswith("was granted.")
    assert consents[1].text["en"].endswith("was withdrawn.")
    assert "已撤回" in consents[1].text["zh"]
    notified = report.items[-1]
    assert "you were notified by sms" in notified.text["en"]


def test_language_choice_and_rendering() -> None:
    report = subject_report(ME, _entries(), languages=("zh",))
    assert all(set(i.text) == {"zh"} for i in report.items)
    rendered = render_subject_report(report, languages=("zh",))
    assert "的数据使用记录：共 6 条，允许查询 2 次，拒绝 1 次" in rendered
    assert "ref: req-42" in rendered
    english = render_subject_report(subject_report(ME, _entries(), languages=("en",)), languages=("en",))
    assert "6 event(s), 2 allowed read(s), 1 refused request(s)" in english


def test_timezone_and_empty_report() -> None:
    report = subject_report(ME, _entries(), timezone="UTC")
    assert report.items[1].text["en"].startswith("On 2026-11-01 at 00:15")
    empty = subject_report(ME, [])
    assert empty.items == () and empty.readers == {}
    assert "No agency accessed your data" in render_subject_report(empty)


def test_labels_and_masks() -> None:
    assert agency_label(Agency.TAX, "zh") == "税务局"
    assert agency_label(None) == "an unidentified agency"
    assert mask_identifier("12345678") == "********"
    assert mask_identifier("91120116MA05ABCDXX") == "9112**********CDXX"


def test_failed_requests_are_not_counted_as_reads() -> None:
    """Allowed requests that failed gave no data: counted apart from the reads, in table and JSON."""

    def unavailable(when: datetime, request_id: str, caller: str = "tax") -> AuditEntry:
        return access(
            when, caller=caller, request_id=request_id, outcome="failed", reason="PROVIDER_UNAVAILABLE"
        )

    entries = located(
        [
            access(local(2026, 11, 3, 9), request_id="read"),
            *(unavailable(local(2026, 11, 3, 10 + i), f"failed-{i}") for i in range(2)),
            unavailable(local(2026, 11, 3, 13), "failed-hrss", caller="hrss"),
            denied(local(2026, 11, 4, 10)),
        ]
    )
    report = subject_report(ME, entries)
    assert report.readers == {"tax": 1}
    assert report.failed == {"hrss": 1, "tax": 2}
    data = report.to_json()
    assert data["reads_by_agency"] == {"tax": 1}
    assert data["failed_by_agency"] == {"hrss": 1, "tax": 2}
    assert data["denied"] == 1
    english = render_subject_report(report, languages=("en",))
    assert (
        "5 event(s), 1 allowed read(s), 3 failed request(s) (no data given), 1 refused request(s)" in english
    )
    assert "允许查询 1 次，查询失败 3 次（未提供数据），拒绝 1 次" in render_subject_report(report)
    failed = next(i for i in report.items if i.reference == "failed-0")
    assert "no data was given" in failed.text["en"] and "the data was given" not in failed.text["en"]


def test_a_check_gives_only_a_yes_or_no() -> None:
    report = subject_report(ME, _entries())
    check = next(i for i in report.items if i.check)
    assert check.text["en"].endswith("Allowed; only a yes/no answer was given, not your data itself.")
    assert "the data was given" not in check.text["en"]
    assert "“是/否”" in check.text["zh"] and "提供了数据" not in check.text["zh"]
    read = next(i for i in report.items if i.reference == "req-42")
    assert read.text["en"].endswith("Allowed; the data was given.")
    assert report.to_json()["failed_by_agency"] == {}
