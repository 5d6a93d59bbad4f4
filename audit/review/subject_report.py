"""What one citizen (or employer) may see about their own data: a plain-language access report.

:func:`subject_report` takes the decoded entries found for a subject and keeps only those whose
subject is exactly that subject: whatever else it is given is dropped, so a report never shows
another person's data. Each remaining entry becomes one :class:`SubjectItem`: when (local time),
which agency asked (``caller``), which agency's data (``provider``), which datasets and fields
(names only: values are never in the log), why (the purpose code), on which basis (the subject's
consent, a statutory duty, or none), the decision and what the provider answered. Consent
changes and push notifications about the subject appear too.

Left out on purpose: the operator (a staff member's identifier is another person's data), the
gateway node, and the predicate's parameters beyond its name. The request id is kept as a
reference the citizen can quote in a complaint.

Events whose data key was crypto-shredded at the end of their retention period cannot be read:
the report still tells the subject they happened (their kind and UTC day, which the log keeps in
clear) and that their details were destroyed (:attr:`SubjectReport.shredded`).

Sentences are in English, Chinese or both (``languages``); agency names come with their Chinese
names (:data:`adapters.agencies.AGENCY_NAMES_ZH`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from adapters.agencies import AGENCY_NAMES_ZH, Agency
from audit.entry import (
    Access,
    ConsentAction,
    ConsentChange,
    Decision,
    LegalBasisKind,
    OutcomeKind,
    PushNotification,
    PushOutcome,
    Subject,
)
from audit.review import LocatedEntry, ShreddedEntry, shredded_summary

__all__ = [
    "AGENCY_NAMES_EN",
    "Language",
    "SubjectItem",
    "SubjectReport",
    "agency_label",
    "mask_identifier",
    "subject_report",
]

Language = Literal["en", "zh"]

AGENCY_NAMES_EN: dict[Agency, str] = {
    Agency.HRSS: "the Human Resources and Social Security Bureau",
    Agency.EDUCATION: "the Education Commission",
    Agency.CIVIL_AFFAIRS: "the Civil Affairs Bureau",
    Agency.TAX: "the Taxation Bureau",
    Agency.MARKET_REGULATION: "the Market Regulation Commission",
}

_REASONS_EN: dict[str, str] = {
    "INVALID_IDENTITY_NUMBER": "the identity number given was not valid",
    "INVALID_CREDIT_CODE": "the credit code given was not valid",
    "UNKNOWN_FIELD": "it asked for data that does not exist",
    "UNKNOWN_PREDICATE": "it asked for a check that does not exist",
    "UNKNOWN_PURPOSE": "it gave no recognised purpose",
    "UNKNOWN_DATASET": "it asked for data that does not exist",
    "NO_AGREEMENT": "the agencies have no data-sharing agreement",
    "PURPOSE_NOT_ALLOWED": "that purpose is not allowed",
    "FIELD_NOT_ALLOWED": "it asked for data it may not see",
    "AGREEMENT_EXPIRED": "the data-sharing agreement has expired",
    "CONSENT_MISSING": "you had not given your consent",
    "CONSENT_REVOKED": "you had withdrawn your consent",
    "CONSENT_EXPIRED": "your consent had expired",
    "SENSITIVE_WITHOUT_SEPARATE_CONSENT": "sensitive data needs your separate consent",
    "RATE_LIMITED": "the agency made too many requests",
    "SUBJECT_NOT_FOUND": "no record about you was found",
    "PROVIDER_UNAVAILABLE": "the agency holding the data was unavailable",
    "PROVIDER_TIMEOUT": "the agency holding the data did not answer in time",
    "OTHER_PROVIDER_FAILED": "another agency asked in the same request was unavailable",
    "CIRCUIT_OPEN": "the agency holding the data was unavailable",
    "AUDIT_UNAVAILABLE": "the request could not be recorded",
    "CONSENT_STORE_UNAVAILABLE": "your consents could not be read at the time",
}
_REASONS_ZH: dict[str, str] = {
    "INVALID_IDENTITY_NUMBER": "提供的身份证号码无效",
    "INVALID_CREDIT_CODE": "提供的统一社会信用代码无效",
    "UNKNOWN_FIELD": "所查询的数据项不存在",
    "UNKNOWN_PREDICATE": "所请求的核验不存在",
    "UNKNOWN_PURPOSE": "未说明有效用途",
    "UNKNOWN_DATASET": "所查询的数据不存在",
    "NO_AGREEMENT": "双方没有数据共享协议",
    "PURPOSE_NOT_ALLOWED": "该用途不被允许",
    "FIELD_NOT_ALLOWED": "所查询的数据项超出授权范围",
    "AGREEMENT_EXPIRED": "数据共享协议已过期",
    "CONSENT_MISSING": "您尚未授权同意",
    "CONSENT_REVOKED": "您已撤回授权同意",
    "CONSENT_EXPIRED": "您的授权同意已过期",
    "SENSITIVE_WITHOUT_SEPARATE_CONSENT": "敏感信息需要您单独授权同意",
    "RATE_LIMITED": "该部门请求过于频繁",
    "SUBJECT_NOT_FOUND": "未找到您的记录",
    "PROVIDER_UNAVAILABLE": "数据提供部门暂不可用",
    "PROVIDER_TIMEOUT": "数据提供部门响应超时",
    "OTHER_PROVIDER_FAILED": "同一请求中的另一数据提供部门暂不可用",
    "CIRCUIT_OPEN": "数据提供部门暂不可用",
    "AUDIT_UNAVAILABLE": "该请求无法被记录",
    "CONSENT_STORE_UNAVAILABLE": "当时无法读取您的授权同意记录",
}


def _reason(code: str, language: Language) -> str:
    table = _REASONS_ZH if language == "zh" else _REASONS_EN
    return table.get(code, code)


def agency_label(agency: Agency | None, language: Language = "en") -> str:
    """An agency's name in plain language (English with the Chinese name, or Chinese)."""
    if agency is None:
        return "an unidentified agency" if language == "en" else "未识别的部门"
    zh = AGENCY_NAMES_ZH.get(agency, agency.value)
    if language == "zh":
        return zh
    return f"{AGENCY_NAMES_EN.get(agency, agency.value)} ({zh})"


def mask_identifier(identifier: str) -> str:
    """An identifier with all but its first 4 and last 4 characters masked."""
    if len(identifier) <= 8:
        return "*" * len(identifier)
    return identifier[:4] + "*" * (len(identifier) - 8) + identifier[-4:]


@dataclass(frozen=True)
class SubjectItem:
    """One event about the subject, structured and as sentences (``text`` by language)."""

    time: datetime
    kind: str
    caller: str | None = None
    provider: str | None = None
    datasets: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    check: str | None = None
    purpose: str | None = None
    basis: str | None = None
    basis_reference: str = ""
    decision: str | None = None
    reason: str = ""
    outcome: str | None = None
    reference: str = ""
    text: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"time": self.time.isoformat(), "kind": self.kind}
        for name in ("caller", "provider", "check", "purpose", "basis", "decision", "outcome"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        for name in ("datasets", "fields"):
            if getattr(self, name):
                data[name] = list(getattr(self, name))
        for name in ("basis_reference", "reason", "reference"):
            if getattr(self, name):
                data[name] = getattr(self, name)
        data["text"] = dict(self.text)
        return data


@dataclass(frozen=True)
class SubjectReport:
    """A subject's report: the masked identifier, events in time order, and counts."""

    subject_kind: str
    subject_masked: str
    timezone: str
    items: tuple[SubjectItem, ...]
    readers: dict[str, int]
    """Reads of the subject's data per calling agency: allowed requests the provider answered
    (data, a count, a yes/no answer or "no record"); failed ones are in ``failed``."""
    denied: int
    failed: dict[str, int] = field(default_factory=dict)
    """Allowed requests that failed (the provider unavailable, ...) per calling agency: no data given."""
    shredded: tuple[ShreddedEntry, ...] = ()
    """Events about the subject whose details were destroyed at retention (not in ``items``)."""
    shredded_text: dict[str, str] = field(default_factory=dict)
    """What ``shredded`` means for the subject, by language ("" when there are none)."""

    def to_json(self) -> dict[str, Any]:
        shredded = shredded_summary(self.shredded)
        if self.shredded_text:
            shredded["text"] = dict(self.shredded_text)
        return {
            "subject": {"kind": self.subject_kind, "id": self.subject_masked},
            "timezone": self.timezone,
            "events": len(self.items),
            "reads_by_agency": dict(sorted(self.readers.items())),
            "failed_by_agency": dict(sorted(self.failed.items())),
            "denied": self.denied,
            "shredded": shredded,
            "items": [item.to_json() for item in self.items],
        }


def _when(local: datetime, language: Language) -> str:
    if language == "zh":
        return f"{local.year}年{local.month}月{local.day}日 {local:%H:%M}"
    return f"On {local:%Y-%m-%d} at {local:%H:%M}"


def _data_words(body: Access, language: Language) -> str:
    if body.predicate is not None:
        name = body.predicate.name
        # entries since 0.2.7 name the fields the check reads (none of them is given)
        plain = "your data" if language == "en" else "您的数据"
        data = _read_words(body, language) if body.fields else plain
        return f"a check ({name}) on {data}" if language == "en" else f"对{data}进行核验（{name}）"
    return _read_words(body, language)


def _read_words(body: Access, language: Language) -> str:
    datasets, fields = ", ".join(body.datasets), ", ".join(body.fields)
    if language == "zh":
        if datasets and fields:
            return f"您的数据（{datasets}：{fields}）"
        return f"您的数据（{datasets or fields}）" if datasets or fields else "您的数据"
    if datasets and fields:
        return f"your {datasets} data ({fields})"
    if datasets:
        return f"your {datasets} data"
    return f"your data ({fields})" if fields else "your data"


def _basis_words(body: Access, language: Language) -> str:
    basis = body.legal_basis
    if language == "zh":
        if basis.kind == LegalBasisKind.CONSENT:
            return f"依据：您的授权同意（{basis.reference}）"
        if basis.kind == LegalBasisKind.STATUTORY_DUTY:
            return f"依据：法定职责（{basis.reference}）"
        return "未记录法律依据"
    if basis.kind == LegalBasisKind.CONSENT:
        return f"on the basis of your consent ({basis.reference})"
    if basis.kind == LegalBasisKind.STATUTORY_DUTY:
        return f"on the basis of a statutory duty ({basis.reference})"
    return "with no legal basis recorded"


def _outcome_words(body: Access, language: Language) -> str:
    if body.decision == Decision.DENIED:
        if language == "zh":
            why = _REASONS_ZH.get(body.reason, body.reason)
            return f"该请求被拒绝（{why}），未提供任何数据。"
        why = _REASONS_EN.get(body.reason, body.reason)
        return f"The request was refused ({why}); no data was given."
    kind = body.outcome.kind
    if kind == OutcomeKind.FOUND and body.predicate is not None:  # a comparison: its result only
        if language == "zh":
            return "已允许，仅给出了“是/否”的核验结果，未提供您的数据本身。"
        return "Allowed; only a yes/no answer was given, not your data itself."
    if language == "zh":
        return {
            OutcomeKind.FOUND: "已允许，提供了数据。",
            OutcomeKind.NOT_FOUND: "已允许，但未找到您的记录。",
            OutcomeKind.COUNT: f"已允许，返回了一个计数（{body.outcome.count}）。",
            OutcomeKind.FAILED: f"已允许，但查询失败（{_reason(body.reason, 'zh')}），未提供数据。",
        }.get(kind, "已允许。")
    return {
        OutcomeKind.FOUND: "Allowed; the data was given.",
        OutcomeKind.NOT_FOUND: "Allowed; no record about you was found.",
        OutcomeKind.COUNT: f"Allowed; a count was given ({body.outcome.count}).",
        OutcomeKind.FAILED: (
            f"Allowed, but it failed ({_REASONS_EN.get(body.reason, body.reason)}); no data was given."
        ),
    }.get(kind, "Allowed.")


def _access_text(
    local: datetime, caller: Agency | None, purpose: str | None, body: Access, language: Language
) -> str:
    who = agency_label(caller, language)
    holder = agency_label(body.provider, language)
    if language == "zh":
        why = f"用途：{purpose}" if purpose else "未说明用途"
        return (
            f"{_when(local, language)}，{who}向{holder}请求{_data_words(body, language)}，"
            f"{why}，{_basis_words(body, language)}。{_outcome_words(body, language)}"
        )
    why = f"for the purpose {purpose}" if purpose else "without a stated purpose"
    return (
        f"{_when(local, language)}, {who} asked {holder} for {_data_words(body, language)} {why}, "
        f"{_basis_words(body, language)}. {_outcome_words(body, language)}"
    )


_ACTION_EN = {
    ConsentAction.GRANTED: "granted",
    ConsentAction.REVOKED: "withdrawn",
    ConsentAction.EXPIRED: "expired",
}
_ACTION_ZH = {ConsentAction.GRANTED: "授予", ConsentAction.REVOKED: "撤回", ConsentAction.EXPIRED: "到期失效"}


def _consent_text(local: datetime, body: ConsentChange, language: Language) -> str:
    readers = [agency_label(a, language) for a in body.consumers]
    if language == "zh":
        who = "、".join(readers) or "相关部门"
        scope = f"，数据：{', '.join(body.datasets)}" if body.datasets else ""
        purposes = f"，用途：{', '.join(body.purposes)}" if body.purposes else ""
        return (
            f"{_when(local, language)}，您对{who}的授权同意（{body.consent_id}）已{_ACTION_ZH[body.action]}"
            f"{scope}{purposes}。"
        )
    who = ", ".join(readers) or "the agencies named in it"
    scope = f" for {', '.join(body.datasets)}" if body.datasets else ""
    purposes = f" (purposes: {', '.join(body.purposes)})" if body.purposes else ""
    return (
        f"{_when(local, language)}, your consent {body.consent_id} letting {who} read your data{scope}"
        f"{purposes} was {_ACTION_EN[body.action]}."
    )


_PUSH_EN = {
    PushOutcome.QUEUED: "a notification to you was queued",
    PushOutcome.DELIVERED: "you were notified",
    PushOutcome.FAILED: "a notification to you failed",
    PushOutcome.SUPPRESSED: "a notification to you was not sent",
}
_PUSH_ZH = {
    PushOutcome.QUEUED: "向您发送的通知已排队",
    PushOutcome.DELIVERED: "已向您发送通知",
    PushOutcome.FAILED: "向您发送通知失败",
    PushOutcome.SUPPRESSED: "未向您发送通知",
}


def _push_text(local: datetime, body: PushNotification, language: Language) -> str:
    if language == "zh":
        what = _PUSH_ZH[body.outcome]
        return f"{_when(local, language)}，根据政策 {body.policy_id}，通过 {body.channel} {what}。"
    what = _PUSH_EN[body.outcome]
    return f"{_when(local, language)}, under policy {body.policy_id}, {what} by {body.channel}."


_KIND_EN = {
    "access": "a request for your data",
    "consent_change": "a consent change",
    "push_notification": "a notification",
}
_KIND_ZH = {"access": "数据查询", "consent_change": "授权同意变更", "push_notification": "通知"}


def _shredded_text(shredded: Sequence[ShreddedEntry], language: Language) -> str:
    """The subject's sentence about events whose details were destroyed at retention."""
    if not shredded:
        return ""
    periods = sorted({s.period or "?" for s in shredded})
    days = sorted({s.day.isoformat() for s in shredded})
    span = days[0] if len(days) == 1 else f"{days[0]} .. {days[-1]}"
    if language == "zh":
        kinds = "、".join(sorted({_KIND_ZH.get(s.kind, s.kind) for s in shredded}))
        return (
            f"另有 {len(shredded)} 条记录（{kinds}，UTC 日期 {span}）的详细内容已在保存期限"
            f"（{', '.join(periods)}）届满时销毁，无法再读取；日志仍能证明这些记录存在。"
        )
    kinds = ", ".join(sorted({_KIND_EN.get(s.kind, s.kind) for s in shredded}))
    count = "1 more event" if len(shredded) == 1 else f"{len(shredded)} more events"
    one = len(shredded) == 1
    return (
        f"{count} ({kinds}; UTC day {span}) about you {'was' if one else 'were'} recorded, but "
        f"{'its' if one else 'their'} details were destroyed when "
        f"{'its' if one else 'their'} retention period ({', '.join(periods)}) ended and can no longer be "
        f"read; the log still proves {'it' if one else 'they'} happened."
    )


def subject_report(
    subject: Subject,
    entries: Iterable[LocatedEntry],
    *,
    timezone: str = "Asia/Shanghai",
    languages: Sequence[Language] = ("en", "zh"),
    shredded: Iterable[ShreddedEntry] = (),
) -> SubjectReport:
    """The report of ``subject`` from ``entries`` (entries about anyone else are dropped).
    ``shredded``: the subject's entries whose data key was destroyed at retention (found by the
    subject's blind term, as the search found them), counted and explained, never described."""
    zone = ZoneInfo(timezone)
    mine = sorted(
        (item for item in entries if item.entry.subject == subject),
        key=lambda item: (item.entry.time, item.origin, item.index),
    )
    items: list[SubjectItem] = []
    readers: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    denied = 0
    for item in mine:
        entry = item.entry
        local = entry.time.astimezone(zone)
        body = entry.body
        if isinstance(body, Access):
            caller = entry.caller.value if entry.caller else ""
            if body.decision == Decision.DENIED:
                denied += 1
            elif body.outcome.kind == OutcomeKind.FAILED:
                failed[caller] += 1
            else:
                readers[caller] += 1
            items.append(
                SubjectItem(
                    time=local,
                    kind=body.kind,
                    caller=entry.caller.value if entry.caller else None,
                    provider=body.provider.value,
                    datasets=body.datasets,
                    fields=body.fields,
                    check=body.predicate.name if body.predicate else None,
                    purpose=entry.purpose,
                    basis=body.legal_basis.kind.value,
                    basis_reference=body.legal_basis.reference,
                    decision=body.decision.value,
                    reason=body.reason,
                    outcome=body.outcome.kind.value,
                    reference=entry.request_id,
                    text={
                        lang: _access_text(local, entry.caller, entry.purpose, body, lang)
                        for lang in languages
                    },
                )
            )
        elif isinstance(body, ConsentChange):
            items.append(
                SubjectItem(
                    time=local,
                    kind=body.kind,
                    datasets=body.datasets,
                    purpose=", ".join(body.purposes) or None,
                    basis="consent",
                    basis_reference=body.consent_id,
                    outcome=body.action.value,
                    reference=entry.request_id,
                    text={lang: _consent_text(local, body, lang) for lang in languages},
                )
            )
        else:
            items.append(
                SubjectItem(
                    time=local,
                    kind=body.kind,
                    purpose=entry.purpose,
                    outcome=body.outcome.value,
                    reason=body.reason,
                    reference=body.notification_id,
                    text={lang: _push_text(local, body, lang) for lang in languages},
                )
            )
    gone = tuple(sorted(shredded, key=lambda s: (s.day, s.origin, s.index)))
    return SubjectReport(
        subject_kind=subject.kind.value,
        subject_masked=mask_identifier(subject.id),
        timezone=timezone,
        items=tuple(items),
        readers=dict(readers),
        denied=denied,
        failed=dict(failed),
        shredded=gone,
        shredded_text={lang: _shredded_text(gone, lang) for lang in languages} if gone else {},
    )
