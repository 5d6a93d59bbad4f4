"""DataExchange over real loopback gRPC with mTLS: allowed queries return only the allowed fields,
masked; every denial reason is reachable, answered with its status and reason, and audited;
argument errors are answered before anything is audited; retried request ids are answered once.

The module's calls are made once (the ``calls`` fixture); the tests check the answers, and the
last tests stop the gateway and read its audit log with the review tools and the CLI."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from adapters.agencies import Agency
from audit.entry import AuditEntry
from dsgw.v1 import common_pb2, exchange_pb2
from gateway.client import GatewayError, QueryResult
from gateway.server.wire import agency_to_wire
from tests.gateway.conftest import (
    Gateway,
    Subjects,
    entries_of,
    exchange_stub,
    grant,
    read_audit,
    revoke,
    run_cli,
)

GRAD = ("education", "graduation")
ALL_GRAD_FIELDS = [(*GRAD, [])]


@dataclass
class Outcome:
    request_id: str
    subject: str
    caller: str
    answer: Any = None
    error: GatewayError | None = None


#: name -> (status code, reason), for the refused calls of ``calls``.
REFUSALS: dict[str, tuple[str, str]] = {
    "NO_AGREEMENT": ("PERMISSION_DENIED", "NO_AGREEMENT"),
    "PURPOSE_NOT_ALLOWED": ("PERMISSION_DENIED", "PURPOSE_NOT_ALLOWED"),
    "FIELD_NOT_ALLOWED": ("PERMISSION_DENIED", "FIELD_NOT_ALLOWED"),
    "AGREEMENT_EXPIRED": ("PERMISSION_DENIED", "AGREEMENT_EXPIRED"),
    "PREDICATE_NOT_ALLOWED": ("PERMISSION_DENIED", "PREDICATE_NOT_ALLOWED"),
    "CONSENT_MISSING": ("PERMISSION_DENIED", "CONSENT_MISSING"),
    "CONSENT_MISSING_VERIFY": ("PERMISSION_DENIED", "CONSENT_MISSING"),
    "CONSENT_REVOKED": ("PERMISSION_DENIED", "CONSENT_REVOKED"),
    "SENSITIVE_WITHOUT_SEPARATE_CONSENT": ("PERMISSION_DENIED", "SENSITIVE_WITHOUT_SEPARATE_CONSENT"),
    "RATE_LIMITED": ("RESOURCE_EXHAUSTED", "RATE_LIMITED"),
    "INVALID_IDENTITY_NUMBER": ("INVALID_ARGUMENT", "INVALID_IDENTITY_NUMBER"),
    "UNKNOWN_FIELD": ("INVALID_ARGUMENT", "UNKNOWN_FIELD"),
    "UNKNOWN_PREDICATE": ("INVALID_ARGUMENT", "UNKNOWN_PREDICATE"),
    "UNKNOWN_PURPOSE": ("INVALID_ARGUMENT", "UNKNOWN_PURPOSE"),
    "NOT_FOUND_STATUTORY": ("NOT_FOUND", "SUBJECT_NOT_FOUND"),
    "NOT_FOUND_CONSENT": ("NOT_FOUND", "SUBJECT_NOT_FOUND"),
    "REPLAY_CONFLICT": ("ALREADY_EXISTS", "REQUEST_ID_CONFLICT"),
}

#: Refusals that are decisions about a valid subject: audited as denied, with the reason.
AUDITED_DENIALS = [
    n for n, (code, _) in REFUSALS.items() if code in ("PERMISSION_DENIED", "RESOURCE_EXHAUSTED")
]
#: Argument errors: answered before the request path audits anything.
NOT_AUDITED = [n for n, (code, _) in REFUSALS.items() if code == "INVALID_ARGUMENT"]


def _broken(number: str) -> str:
    """The number with a wrong check character."""
    last = "0" if number[-1] != "0" else "1"
    return number[:-1] + last


def _flood_rate_limit(gw: Gateway, subject: str, n: int = 200) -> list[tuple[str, grpc.RpcError | None]]:
    """``n`` concurrent Verify calls by education on the 50/s agreement (no consent: the ones
    the limiter lets through are denied CONSENT_MISSING)."""
    stub = exchange_stub(gw, "education")
    futures = []
    for i in range(n):
        rid = f"flood-{i}-{uuid.uuid4().hex[:6]}"
        req = exchange_pb2.VerifyRequest(
            meta=common_pb2.RequestMeta(
                request_id=rid, purpose=common_pb2.Purpose(code="graduate_employment")
            ),
            subject=common_pb2.SubjectRef(id=subject),
            provider=agency_to_wire(Agency.HRSS),
            predicate="currently_insured",
        )
        futures.append((rid, stub.Verify.future(req, timeout=10)))
    out: list[tuple[str, grpc.RpcError | None]] = []
    for rid, fut in futures:
        try:
            fut.result()
            out.append((rid, None))
        except grpc.RpcError as exc:
            out.append((rid, exc))
    return out


@pytest.fixture(scope="module")
def calls(gateway: Gateway, subjects: Subjects) -> dict[str, Outcome]:
    gw = gateway
    clients = {a: gw.client(a) for a in ("hrss", "education", "civil_affairs", "tax")}
    out: dict[str, Outcome] = {}

    def run(name: str, caller: str, subject: str, fn: Callable[[Any, str], Any], rid: str = "") -> None:
        rid = rid or f"{name.lower()}-{uuid.uuid4().hex[:10]}"
        try:
            out[name] = Outcome(rid, subject, caller, answer=fn(clients[caller], rid))
        except GatewayError as exc:
            out[name] = Outcome(rid, subject, caller, error=exc)

    g0, g1, g2, g3 = (s for s, _ in subjects.graduates[:4])
    hard0, hard1 = subjects.hard_to_employ[:2]
    employer = subjects.employers[0]
    unknown0, unknown1 = subjects.unknown[:2]

    def q(subject: str, purpose: str, asks: Any) -> Callable[[Any, str], Any]:
        return lambda c, rid: c.query(subject, purpose, asks, request_id=rid)

    # allowed: consent (masked), statutory duty, a subset of fields
    grant(gw, "hrss", g0, [(*GRAD, [])], ["graduate_employment"])
    run("ALLOWED", "hrss", g0, q(g0, "graduate_employment", ALL_GRAD_FIELDS))
    run("ALLOWED_SUBSET", "hrss", g0, q(g0, "graduate_employment", [(*GRAD, ["level"])]))
    a0 = subjects.assisted[0]
    run(
        "ALLOWED_STATUTORY", "hrss", a0, q(a0, "employment_assistance", [("civil_affairs", "assistance", [])])
    )
    run(
        "ALLOWED_EMPLOYER",
        "hrss",
        employer,
        q(employer, "hiring_subsidy", [("market_regulation", "business_registration", ["name", "status"])]),
    )

    # denials
    run("NO_AGREEMENT", "tax", g1, q(g1, "job_stabilisation_refund", ALL_GRAD_FIELDS))
    run("PURPOSE_NOT_ALLOWED", "hrss", g0, q(g0, "hiring_subsidy", ALL_GRAD_FIELDS))
    run("FIELD_NOT_ALLOWED", "hrss", g0, q(g0, "graduate_employment", [(*GRAD, ["major"])]))
    run(
        "AGREEMENT_EXPIRED",
        "tax",
        employer,
        q(employer, "job_stabilisation_refund", [("hrss", "employer_insurance", [])]),
    )
    run(
        "PREDICATE_NOT_ALLOWED",
        "civil_affairs",
        hard0,
        lambda c, rid: c.verify(
            hard0, "employment_assistance", "hrss", "flexible_employment", request_id=rid
        ),
    )
    run("CONSENT_MISSING", "hrss", g1, q(g1, "graduate_employment", ALL_GRAD_FIELDS))
    run(
        "CONSENT_MISSING_VERIFY",
        "hrss",
        g1,
        lambda c, rid: c.verify(
            g1, "graduate_employment", "education", "graduated_within_years", {"years": 50}, request_id=rid
        ),
    )

    # revoked: grant, allowed, revoke, denied on the next call
    granted = grant(gw, "hrss", g2, [(*GRAD, [])], ["graduate_employment"])
    run("BEFORE_REVOKE", "hrss", g2, q(g2, "graduate_employment", ALL_GRAD_FIELDS))
    revoke(gw, "hrss", granted.consent.consent_id, g2)
    run("CONSENT_REVOKED", "hrss", g2, q(g2, "graduate_employment", ALL_GRAD_FIELDS))

    # sensitive fields: a consent that is not separate does not cover hard_to_employ
    status = ("hrss", "employment_status")
    shared = ["registered_unemployed", "unemployed_since", "hard_to_employ"]
    grant(gw, "civil_affairs", hard0, [(*status, shared)], ["employment_assistance"])
    run(
        "SENSITIVE_WITHOUT_SEPARATE_CONSENT",
        "civil_affairs",
        hard0,
        q(hard0, "employment_assistance", [(*status, [])]),
    )
    run(
        "NOT_SENSITIVE_PART",
        "civil_affairs",
        hard0,
        q(hard0, "employment_assistance", [(*status, ["registered_unemployed", "unemployed_since"])]),
    )
    grant(gw, "civil_affairs", hard1, [(*status, shared)], ["employment_assistance"], separate=True)
    run("SENSITIVE_SEPARATE", "civil_affairs", hard1, q(hard1, "employment_assistance", [(*status, [])]))

    # argument errors
    run("INVALID_IDENTITY_NUMBER", "hrss", g0, q(_broken(g0), "graduate_employment", ALL_GRAD_FIELDS))
    run("UNKNOWN_FIELD", "hrss", g0, q(g0, "graduate_employment", [(*GRAD, ["no_such_field"])]))
    run(
        "UNKNOWN_PREDICATE",
        "hrss",
        g0,
        lambda c, rid: c.verify(g0, "graduate_employment", "education", "no_such_predicate", request_id=rid),
    )
    run("UNKNOWN_PURPOSE", "hrss", g0, q(g0, "no_such_purpose", ALL_GRAD_FIELDS))

    # nobody holds the subject: with a statutory duty, and with consent
    run(
        "NOT_FOUND_STATUTORY",
        "hrss",
        unknown0,
        q(unknown0, "employment_assistance", [("civil_affairs", "assistance", [])]),
    )
    grant(gw, "hrss", unknown1, [(*GRAD, [])], ["graduate_employment"])
    run("NOT_FOUND_CONSENT", "hrss", unknown1, q(unknown1, "graduate_employment", ALL_GRAD_FIELDS))
    run(
        "VERIFY_NO_RECORD",
        "hrss",
        unknown0,
        lambda c, rid: c.verify(
            unknown0,
            "employment_assistance",
            "civil_affairs",
            "receives_subsistence_allowance",
            request_id=rid,
        ),
    )

    # retried request ids: the same answer, replayed; a different request on the same id refused
    grant(gw, "hrss", g3, [(*GRAD, [])], ["graduate_employment"])
    rid = f"retry-{uuid.uuid4().hex}"
    run("REPLAY_FIRST", "hrss", g3, q(g3, "graduate_employment", ALL_GRAD_FIELDS), rid=rid)
    run("REPLAY_SECOND", "hrss", g3, q(g3, "graduate_employment", ALL_GRAD_FIELDS), rid=rid)
    run("REPLAY_CONFLICT", "hrss", g3, q(g3, "graduate_employment", [(*GRAD, ["level"])]), rid=rid)
    g4 = subjects.graduates[4][0]
    grant(gw, "hrss", g4, [(*GRAD, [])], ["graduate_employment"])
    rid = f"concurrent-{uuid.uuid4().hex}"
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda _: clients["hrss"].query(g4, "graduate_employment", ALL_GRAD_FIELDS, request_id=rid),
                range(8),
            )
        )
    out["CONCURRENT"] = Outcome(rid, g4, "hrss", answer=answers)
    denied_rid = f"retry-denied-{uuid.uuid4().hex}"
    run("DENIAL_FIRST", "hrss", g1, q(g1, "graduate_employment", ALL_GRAD_FIELDS), rid=denied_rid)
    run("DENIAL_SECOND", "hrss", g1, q(g1, "graduate_employment", ALL_GRAD_FIELDS), rid=denied_rid)

    # the rate limit of education -> hrss.person_insurance (50/s)
    insured = subjects.insured[0]
    flood = _flood_rate_limit(gw, insured)
    limited = [
        (rid, exc)
        for rid, exc in flood
        if exc is not None and exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    ]
    if limited:
        rid, exc = limited[0]
        out["RATE_LIMITED"] = Outcome(rid, insured, "education", error=GatewayError.of(exc))
    out["_flood"] = Outcome("", insured, "education", answer=flood)
    time.sleep(1.1)  # the bucket refills
    run(
        "AFTER_RATE_LIMIT",
        "education",
        insured,
        lambda c, rid: c.verify(insured, "graduate_employment", "hrss", "currently_insured", request_id=rid),
    )
    return out


# --- allowed -----------------------------------------------------------------------------------


def _first2(text: str) -> str:
    return text[:2] + "*" * (len(text) - 2) if len(text) > 2 else "*" * len(text)


def test_allowed_query_returns_only_the_allowed_fields_masked(
    calls: dict[str, Outcome], subjects: Subjects
) -> None:
    outcome = calls["ALLOWED"]
    assert outcome.error is None, outcome.error
    answer: QueryResult = outcome.answer
    assert answer.request_id == outcome.request_id and not answer.replayed
    (result,) = answer.results
    raw = dict(subjects.graduates[0][1])
    assert (result.provider, result.dataset, result.found) == (Agency.EDUCATION, "graduation", True)
    # the agreement shares level, school_name and graduation_date; major and school_code stay home
    assert set(result.values) == {"level", "school_name", "graduation_date"}
    assert result.values["level"] == raw["level"]
    assert result.values["graduation_date"] == raw["graduation_date"]
    assert result.values["school_name"] == _first2(raw["school_name"]) != raw["school_name"]
    assert result.legal_basis.startswith("consent:cns-")


def test_allowed_query_of_a_subset_and_on_a_statutory_duty(calls: dict[str, Outcome]) -> None:
    subset = calls["ALLOWED_SUBSET"].answer
    assert subset is not None, calls["ALLOWED_SUBSET"].error
    assert set(subset.results[0].values) == {"level"}

    statutory = calls["ALLOWED_STATUTORY"].answer
    assert statutory is not None, calls["ALLOWED_STATUTORY"].error
    (result,) = statutory.results
    assert result.found
    assert set(result.values) == {"household_category", "zero_employment_household"}
    assert result.legal_basis.startswith("statutory_duty:Tianjin employment promotion")

    employer = calls["ALLOWED_EMPLOYER"].answer
    assert employer is not None, calls["ALLOWED_EMPLOYER"].error
    assert set(employer.results[0].values) == {"name", "status"}


def test_separate_consent_covers_sensitive_fields(calls: dict[str, Outcome]) -> None:
    part = calls["NOT_SENSITIVE_PART"]
    assert part.error is None, part.error
    assert set(part.answer.results[0].values) == {"registered_unemployed", "unemployed_since"}
    separate = calls["SENSITIVE_SEPARATE"]
    assert separate.error is None, separate.error
    assert separate.answer.results[0].values["hard_to_employ"] is True


def test_revoked_consent_allowed_before(calls: dict[str, Outcome]) -> None:
    assert calls["BEFORE_REVOKE"].error is None, calls["BEFORE_REVOKE"].error
    assert calls["BEFORE_REVOKE"].answer.results[0].found


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_refusal_code_and_reason(calls: dict[str, Outcome], name: str) -> None:
    outcome = calls.get(name)
    assert outcome is not None, f"{name} was not reached"
    assert outcome.error is not None, f"{name}: answered {outcome.answer!r}"
    code, reason = REFUSALS[name]
    assert (outcome.error.code, outcome.error.reason) == (code, reason), outcome.error
    # no error message carries the identity number
    assert outcome.subject not in str(outcome.error)


def test_rate_limit_tells_when_to_retry_and_recovers(calls: dict[str, Outcome]) -> None:
    flood = calls["_flood"].answer
    limited = [e for _, e in flood if e is not None and e.code() is grpc.StatusCode.RESOURCE_EXHAUSTED]
    other = [e for _, e in flood if e is not None and e.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED]
    # a burst of 50 tokens (plus what refills while the flood lasts) gets through, the rest waits
    assert 40 <= len(flood) - len(limited) < len(flood)
    assert all(GatewayError.of(e).reason == "CONSENT_MISSING" for e in other)
    error = calls["RATE_LIMITED"].error
    assert error is not None and error.retry_after_s is not None
    assert 0 < error.retry_after_s <= 1.0
    after = calls["AFTER_RATE_LIMIT"]
    assert after.error is not None and after.error.reason == "CONSENT_MISSING"


def test_verify_of_a_subject_nobody_holds(calls: dict[str, Outcome], subjects: Subjects) -> None:
    outcome = calls["VERIFY_NO_RECORD"]
    assert outcome.error is None, outcome.error
    # what the provider itself says (for this predicate, no household on record is a "no")
    expected = subjects.answers[("civil_affairs", "receives_subsistence_allowance", outcome.subject)]
    assert outcome.answer.result is expected
    assert outcome.answer.legal_basis.startswith("statutory_duty:")


def test_retried_request_id_gives_the_same_answer(calls: dict[str, Outcome]) -> None:
    first, second = calls["REPLAY_FIRST"].answer, calls["REPLAY_SECOND"].answer
    assert first is not None and second is not None
    assert not first.replayed and second.replayed
    assert first.request_id == second.request_id
    assert first.results == second.results
    d1, d2 = calls["DENIAL_FIRST"].error, calls["DENIAL_SECOND"].error
    assert d1 is not None and d2 is not None
    assert (d1.code, d1.reason) == (d2.code, d2.reason) == ("PERMISSION_DENIED", "CONSENT_MISSING")


def test_concurrent_retries_are_answered_once(calls: dict[str, Outcome]) -> None:
    answers = calls["CONCURRENT"].answer
    assert sum(not a.replayed for a in answers) == 1
    assert all(a.results == answers[0].results for a in answers)


def test_catalogue_lists_the_callers_agreements(gateway: Gateway) -> None:
    resp = gateway.client("hrss").catalogue()
    assert resp.caller == agency_to_wire(Agency.HRSS)
    ids = {e.agreement_id for e in resp.entries}
    assert "hrss-education-graduation" in ids and "tax-hrss-insurance-2025" not in ids
    grad = next(e for e in resp.entries if e.agreement_id == "hrss-education-graduation")
    assert {f.name: f.mask for f in grad.fields} == {
        "level": "",
        "school_name": "first2",
        "graduation_date": "",
    }
    tax = gateway.client("tax").catalogue()
    assert [e.agreement_id for e in tax.entries] == ["tax-hrss-insurance-2025"]
    assert tax.entries[0].valid_to == "2026-01-01"


# --- the audit trail (these stop the module's gateway: keep them last) -------------------------


@pytest.fixture(scope="module")
def audit_entries(gateway: Gateway, calls: dict[str, Outcome]) -> list[AuditEntry]:
    gateway.stop()
    return read_audit(gateway.home, [gateway.audit_dir])


def _access(entries: list[AuditEntry], outcome: Outcome) -> AuditEntry:
    found = [e for e in entries_of(entries, outcome.request_id) if e.body.kind == "access"]
    assert len(found) == 1, f"{len(found)} access entries for {outcome.request_id}"
    entry = found[0]
    assert entry.caller is not None and entry.caller.value == outcome.caller
    assert entry.subject is not None and entry.subject.id == outcome.subject
    return entry


@pytest.mark.parametrize("name", AUDITED_DENIALS)
def test_denial_is_audited_with_its_reason(
    calls: dict[str, Outcome], audit_entries: list[AuditEntry], name: str
) -> None:
    if name == "REPLAY_CONFLICT":  # refused by the idempotency cache: the first call's entry stands
        return
    entry = _access(audit_entries, calls[name])
    assert entry.body.decision.value == "denied"
    assert entry.body.reason == REFUSALS[name][1]


def test_refused_request_id_conflict_leaves_the_first_entry(
    calls: dict[str, Outcome], audit_entries: list[AuditEntry]
) -> None:
    entry = _access(audit_entries, calls["REPLAY_FIRST"])  # exactly one entry for the id
    assert entry.body.decision.value == "allowed"


@pytest.mark.parametrize("name", NOT_AUDITED)
def test_argument_errors_are_not_audited(
    calls: dict[str, Outcome], audit_entries: list[AuditEntry], name: str
) -> None:
    assert entries_of(audit_entries, calls[name].request_id) == []


def test_allowed_and_not_found_are_audited(
    calls: dict[str, Outcome], audit_entries: list[AuditEntry]
) -> None:
    allowed = _access(audit_entries, calls["ALLOWED"])
    assert allowed.body.decision.value == "allowed"
    assert allowed.body.outcome.kind.value == "found"
    assert allowed.body.legal_basis.kind.value == "consent"
    assert set(allowed.body.fields) == {"level", "school_name", "graduation_date"}
    assert allowed.purpose == "graduate_employment"
    statutory = _access(audit_entries, calls["ALLOWED_STATUTORY"])
    assert statutory.body.legal_basis.kind.value == "statutory_duty"
    for name in ("NOT_FOUND_STATUTORY", "NOT_FOUND_CONSENT"):
        entry = _access(audit_entries, calls[name])
        assert entry.body.decision.value == "allowed"
        assert entry.body.outcome.kind.value == "not_found"


def test_retries_leave_one_entry(calls: dict[str, Outcome], audit_entries: list[AuditEntry]) -> None:
    for name in ("REPLAY_SECOND", "DENIAL_SECOND", "CONCURRENT"):
        _access(audit_entries, calls[name])


def test_rate_limited_calls_are_each_audited(
    calls: dict[str, Outcome], audit_entries: list[AuditEntry]
) -> None:
    by_id = {e.request_id: e for e in audit_entries if e.body.kind == "access"}
    for rid, exc in calls["_flood"].answer:
        entry = by_id[rid]
        assert entry.body.decision.value == "denied"
        expected = "RATE_LIMITED" if exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED else "CONSENT_MISSING"
        assert entry.body.reason == expected


def test_consent_changes_are_audited(audit_entries: list[AuditEntry]) -> None:
    changes = [e.body for e in audit_entries if e.body.kind == "consent_change"]
    actions = sorted(c.action.value for c in changes)
    assert actions.count("revoked") == 1
    assert actions.count("granted") == 7


def test_audit_search_cli_finds_the_denials(
    gateway: Gateway, calls: dict[str, Outcome], audit_entries: list[AuditEntry]
) -> None:
    code, out, err = run_cli(
        "audit", "search", "--log", str(gateway.audit_dir), "--home", str(gateway.home),
        "--caller", "tax", "--decision", "denied", "--json",
    )  # fmt: skip
    assert code == 0, err
    found = json.loads(out)["entries"]
    reasons = {e["entry"]["request_id"]: e["entry"]["body"]["reason"] for e in found}
    assert reasons[calls["NO_AGREEMENT"].request_id] == "NO_AGREEMENT"
    assert reasons[calls["AGREEMENT_EXPIRED"].request_id] == "AGREEMENT_EXPIRED"


def test_audit_log_verifies(gateway: Gateway, audit_entries: list[AuditEntry]) -> None:
    code, out, err = run_cli("audit", "verify", "--log", str(gateway.audit_dir))
    assert code == 0, err + out
