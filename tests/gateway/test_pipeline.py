"""The request path's pure steps (gateway.pipeline): authenticate, agreement, purpose, consent,
identity, fetch (over a fake adapter), rate limits (injected clock) and the audit record."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from adapters.agencies import Agency
from adapters.contract import (
    InvalidRequest,
    ProviderUnavailable,
    Subject,
    SubjectKind,
    SubjectNotFound,
)
from dsgw.v1 import audit_pb2, common_pb2
from gateway.config import Agreement
from gateway.consent.decision import CONSENT_REQUIRED, Basis, BasisKind, Decision, DenyReason
from gateway.pipeline import fetch as fetch_mod
from gateway.pipeline.agreement import AgreementBook, allowed_fields, allowed_predicate
from gateway.pipeline.authenticate import authenticate
from gateway.pipeline.consent import DENY_REASONS, basis_of, legal_basis_label, require_basis
from gateway.pipeline.errors import (
    AuditFailed,
    InvalidArgument,
    PermissionDenied,
    RateLimited,
    RequestError,
    Unauthenticated,
    Unavailable,
)
from gateway.pipeline.identity import subject_of
from gateway.pipeline.purpose import check_purpose, known_purpose
from gateway.pipeline.rate import RateLimiter
from gateway.pipeline.record import AccessFacts, access_entry, consent_change_entry
from gateway.purposes import DEFAULT_CATALOGUE

ERROR_REASONS = set(common_pb2.ErrorReason.keys())
OFFERED = ("level", "school_code", "school_name", "major", "graduation_date")
PERSON = "11010519491231002X"


def agreement(**changes: Any) -> Agreement:
    data: dict[str, Any] = {
        "id": "hrss-education-graduation",
        "consumer": Agency.HRSS,
        "provider": Agency.EDUCATION,
        "dataset": "graduation",
        "fields": ("level", "school_name", "graduation_date"),
        "predicates": ("graduated_within_years",),
        "purposes": ("graduate_employment",),
        "valid_from": dt.date(2026, 1, 1),
    }
    data.update(changes)
    return Agreement(**data)


def reason_of(exc: pytest.ExceptionInfo[RequestError]) -> tuple[str, str]:
    assert exc.value.reason in ERROR_REASONS
    return exc.value.code, exc.value.reason


# --- authenticate ---------------------------------------------------------------------------------


def _agency_of(pem: bytes) -> Agency:
    return Agency(pem.decode())


def _never_revoked(pem: bytes) -> bool:
    return False


def test_authenticate_returns_the_agency() -> None:
    assert authenticate(b"tax", agency_of=_agency_of, is_revoked=_never_revoked) is Agency.TAX


@pytest.mark.parametrize("pem", [None, b""])
def test_authenticate_needs_a_certificate(pem: bytes | None) -> None:
    with pytest.raises(Unauthenticated) as exc:
        authenticate(pem, agency_of=_agency_of, is_revoked=_never_revoked)
    assert reason_of(exc) == ("UNAUTHENTICATED", "CERTIFICATE_INVALID")


def test_authenticate_refuses_a_revoked_certificate() -> None:
    with pytest.raises(Unauthenticated) as exc:
        authenticate(b"tax", agency_of=_agency_of, is_revoked=lambda pem: True)
    assert reason_of(exc) == ("UNAUTHENTICATED", "CERTIFICATE_REVOKED")


def test_authenticate_refuses_an_unknown_agency() -> None:
    with pytest.raises(Unauthenticated) as exc:
        authenticate(b"police", agency_of=_agency_of, is_revoked=_never_revoked)
    assert reason_of(exc) == ("UNAUTHENTICATED", "CERTIFICATE_INVALID")
    assert exc.value.__cause__ is None and exc.value.__suppress_context__


@pytest.mark.parametrize("error", [OSError("crl unreadable"), ValueError("bad signature"), RuntimeError()])
def test_authenticate_fails_closed_when_the_revocation_check_fails(error: Exception) -> None:
    def broken(pem: bytes) -> bool:
        raise error

    with pytest.raises(Unauthenticated) as exc:
        authenticate(b"tax", agency_of=_agency_of, is_revoked=broken)
    assert reason_of(exc) == ("UNAUTHENTICATED", "CERTIFICATE_INVALID")


# --- agreement ------------------------------------------------------------------------------------

days = st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2100, 1, 1))


@st.composite
def periods(draw: st.DrawFn) -> list[tuple[dt.date, dt.date | None]]:
    """Disjoint validity periods (as the configuration checks guarantee), the last maybe open."""
    bounds = sorted(draw(st.sets(days, min_size=2, max_size=8)))
    if len(bounds) % 2:
        bounds = bounds[:-1]
    result: list[tuple[dt.date, dt.date | None]] = [
        (bounds[i], bounds[i + 1]) for i in range(0, len(bounds), 2)
    ]
    if draw(st.booleans()):
        result[-1] = (result[-1][0], None)
    return result


@given(periods(), days)
def test_find_picks_the_agreement_valid_on_the_day(
    spans: list[tuple[dt.date, dt.date | None]], today: dt.date
) -> None:
    agreements = [agreement(id=f"a{i}", valid_from=f, valid_to=t) for i, (f, t) in enumerate(spans)]
    other = agreement(id="other", consumer=Agency.TAX, valid_from=dt.date(2000, 1, 1))
    book = AgreementBook([*agreements, other])
    valid = [a for a in agreements if a.valid_from <= today and (a.valid_to is None or today < a.valid_to)]
    if valid:
        assert book.find(Agency.HRSS, Agency.EDUCATION, "graduation", today) == valid[0]
        return
    with pytest.raises(PermissionDenied) as exc:
        book.find(Agency.HRSS, Agency.EDUCATION, "graduation", today)
    if today < min(a.valid_from for a in agreements):
        assert reason_of(exc) == ("PERMISSION_DENIED", "AGREEMENT_NOT_YET_VALID")
    else:
        assert reason_of(exc) == ("PERMISSION_DENIED", "AGREEMENT_EXPIRED")


@given(periods(), days)
def test_find_boundaries(spans: list[tuple[dt.date, dt.date | None]], today: dt.date) -> None:
    agreements = [agreement(id=f"a{i}", valid_from=f, valid_to=t) for i, (f, t) in enumerate(spans)]
    book = AgreementBook(agreements)
    for a in agreements:  # valid_from is inclusive, valid_to exclusive
        assert book.find(Agency.HRSS, Agency.EDUCATION, "graduation", a.valid_from) == a
        if a.valid_to is not None:
            assume(a.valid_to not in {b.valid_from for b in agreements})
            with pytest.raises(PermissionDenied) as exc:
                book.find(Agency.HRSS, Agency.EDUCATION, "graduation", a.valid_to)
            assert exc.value.reason == "AGREEMENT_EXPIRED"


@given(days)
def test_find_without_agreement(today: dt.date) -> None:
    book = AgreementBook([agreement(), agreement(id="tax", consumer=Agency.TAX)])
    for consumer, provider, dataset in [
        (Agency.CIVIL_AFFAIRS, Agency.EDUCATION, "graduation"),
        (Agency.HRSS, Agency.TAX, "graduation"),
        (Agency.HRSS, Agency.EDUCATION, "other"),
    ]:
        with pytest.raises(PermissionDenied) as exc:
            book.find(consumer, provider, dataset, today)
        assert reason_of(exc) == ("PERMISSION_DENIED", "NO_AGREEMENT")


def test_for_consumer() -> None:
    a, b = agreement(), agreement(id="tax", consumer=Agency.TAX)
    book = AgreementBook([a, b])
    assert book.for_consumer(Agency.HRSS) == (a,)
    assert book.for_consumer(Agency.TAX) == (b,)
    assert book.for_consumer(Agency.EDUCATION) == ()


def test_allowed_fields_empty_request_means_the_agreement_fields() -> None:
    a = agreement()
    assert allowed_fields(a, [], OFFERED) == a.fields
    with pytest.raises(PermissionDenied) as exc:
        allowed_fields(agreement(fields=()), [], OFFERED)
    assert reason_of(exc) == ("PERMISSION_DENIED", "FIELD_NOT_ALLOWED")


def test_allowed_fields_unknown_and_not_allowed() -> None:
    a = agreement()
    with pytest.raises(InvalidArgument) as exc:
        allowed_fields(a, ["level", "shoe_size"], OFFERED)
    assert reason_of(exc) == ("INVALID_ARGUMENT", "UNKNOWN_FIELD")
    with pytest.raises(PermissionDenied) as denied:
        allowed_fields(a, ["level", "major"], OFFERED)
    assert reason_of(denied) == ("PERMISSION_DENIED", "FIELD_NOT_ALLOWED")
    assert denied.value.metadata == {"field": "major"}
    # An unknown field is reported before a field the agreement does not share.
    with pytest.raises(InvalidArgument):
        allowed_fields(a, ["major", "shoe_size"], OFFERED)


def test_allowed_fields_hides_unprintable_names() -> None:
    with pytest.raises(InvalidArgument) as exc:
        allowed_fields(agreement(), ["x\n" + "y" * 100], OFFERED)
    assert "(invalid)" in str(exc.value)
    assert "\n" not in str(exc.value)


names = st.sampled_from([*OFFERED, "shoe_size", "", "Level"])


@given(st.lists(names, max_size=6))
def test_allowed_fields_property(requested: list[str]) -> None:
    a = agreement()
    try:
        got = allowed_fields(a, requested, OFFERED)
    except InvalidArgument as exc:
        assert exc.reason == "UNKNOWN_FIELD"
        assert any(n not in OFFERED for n in requested)
    except PermissionDenied as exc:
        assert exc.reason == "FIELD_NOT_ALLOWED"
        assert all(n in OFFERED for n in requested)
        assert any(n not in a.fields for n in requested)
    else:
        assert set(got) <= set(a.fields)
        assert len(got) == len(set(got))
        assert list(got) == (list(dict.fromkeys(requested)) if requested else list(a.fields))


def test_allowed_predicate() -> None:
    allowed_predicate(agreement(), "graduated_within_years")
    with pytest.raises(PermissionDenied) as exc:
        allowed_predicate(agreement(), "degree_at_least")
    assert reason_of(exc) == ("PERMISSION_DENIED", "PREDICATE_NOT_ALLOWED")


# --- purpose --------------------------------------------------------------------------------------


def test_known_purpose() -> None:
    assert known_purpose("graduate_employment", DEFAULT_CATALOGUE) == "graduate_employment"
    for code in ["", "no_such_purpose", "x" * 200]:
        with pytest.raises(InvalidArgument) as exc:
            known_purpose(code, DEFAULT_CATALOGUE)
        assert reason_of(exc) == ("INVALID_ARGUMENT", "UNKNOWN_PURPOSE")
        assert len(str(exc.value)) < 120


def test_check_purpose() -> None:
    check_purpose("graduate_employment", agreement())
    with pytest.raises(PermissionDenied) as exc:
        check_purpose("hiring_subsidy", agreement())
    assert reason_of(exc) == ("PERMISSION_DENIED", "PURPOSE_NOT_ALLOWED")


# --- consent --------------------------------------------------------------------------------------


def test_deny_reasons_cover_every_reason_with_an_error_reason_name() -> None:
    assert set(DENY_REASONS) == set(DenyReason)
    for name in DENY_REASONS.values():
        assert name in ERROR_REASONS
    assert len(set(DENY_REASONS.values())) == len(DENY_REASONS)


@pytest.mark.parametrize("reason", list(DenyReason))
def test_require_basis_denies_with_the_reason(reason: DenyReason) -> None:
    decision = Decision(allowed=False, basis=BasisKind.NONE, reason=reason, detail="one line")
    with pytest.raises(PermissionDenied) as exc:
        require_basis(decision)
    assert reason_of(exc) == ("PERMISSION_DENIED", DENY_REASONS[reason])
    assert str(exc.value) == "one line"


def test_require_basis_passes_an_allowed_decision() -> None:
    decision = Decision(allowed=True, basis=BasisKind.CONSENT, consent_ids=("c1", "c2"))
    assert require_basis(decision) is decision
    assert legal_basis_label(decision) == "consent:c1,c2"
    duty = Decision(allowed=True, basis=BasisKind.STATUTORY_DUTY, reference="art. 19")
    assert legal_basis_label(duty) == "statutory_duty:art. 19"


def test_basis_of() -> None:
    assert basis_of(agreement()) == CONSENT_REQUIRED
    duty = agreement(legal_basis="statutory_duty", duty_reference="art. 19")
    assert basis_of(duty) == Basis(statutory_duty=True, reference="art. 19")


# --- identity -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        (None, PERSON),
        (SubjectKind.PERSON, "11010519491231002x"),
        (None, "１１０１０５１９４９１２３１００２Ｘ"),
    ],
)
def test_subject_of_normalises(kind: SubjectKind | None, raw: str) -> None:
    assert subject_of(kind, raw) == Subject(SubjectKind.PERSON, PERSON)


@pytest.mark.parametrize(
    ("kind", "raw", "reason"),
    [
        (None, "", "INVALID_REQUEST"),
        (SubjectKind.PERSON, "110105194912310021", "INVALID_IDENTITY_NUMBER"),
        (SubjectKind.EMPLOYER, "91120000MA05K1234Q", "INVALID_CREDIT_CODE"),
        (SubjectKind.EMPLOYER, PERSON, "INVALID_CREDIT_CODE"),
    ],
)
def test_subject_of_refuses_without_echoing_the_number(
    kind: SubjectKind | None, raw: str, reason: str
) -> None:
    with pytest.raises(InvalidArgument) as exc:
        subject_of(kind, raw)
    assert reason_of(exc) == ("INVALID_ARGUMENT", reason)
    if raw:
        assert raw not in str(exc.value)


@given(st.one_of(st.text(max_size=25), st.text(alphabet="0123456789Xx", min_size=6, max_size=20)))
def test_subject_of_never_raises_anything_else(raw: str) -> None:
    try:
        subject = subject_of(None, raw)
    except InvalidArgument as exc:
        assert exc.reason in ERROR_REASONS
        assert "\n" not in str(exc)
        if len(raw) >= 6 and raw.isalnum():
            assert raw not in str(exc)
    else:
        assert len(subject.id) == 18


# --- fetch ----------------------------------------------------------------------------------------


class FakeAdapter:
    agency = Agency.TAX

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.timeouts: list[float | None] = []

    def _maybe_fail(self, timeout: float | None) -> None:
        self.timeouts.append(timeout)
        if self.error is not None:
            raise self.error

    def fetch(self, dataset: str, subject: Subject, fields: Sequence[str], *, timeout: float | None) -> Any:
        self._maybe_fail(timeout)

        return SimpleNamespace(values={f: f.upper() for f in fields})

    def evaluate(
        self, predicate: str, subject: Subject, params: Mapping[str, int], *, timeout: float | None
    ) -> bool:
        self._maybe_fail(timeout)
        return True

    def evaluate_many(
        self, predicate: str, subjects: Sequence[Subject], params: Mapping[str, int], *, timeout: float | None
    ) -> list[bool | None]:
        self._maybe_fail(timeout)
        return [True] * len(subjects)


SUBJECT = Subject(SubjectKind.PERSON, PERSON)


def test_fetch_and_evaluate_answer() -> None:
    adapter: Any = FakeAdapter()
    assert fetch_mod.fetch(adapter, "employer_tax", SUBJECT, ["a", "b"], 1.5) == {"a": "A", "b": "B"}
    assert fetch_mod.evaluate(adapter, "p", SUBJECT, {}, None) is True
    assert fetch_mod.evaluate_many(adapter, "p", [SUBJECT, SUBJECT], {}, 2.0) == [True, True]
    assert adapter.timeouts == [1.5, None, 2.0]


def test_subject_not_found_is_none() -> None:
    adapter: Any = FakeAdapter(SubjectNotFound(Agency.TAX, "employer_tax"))
    assert fetch_mod.fetch(adapter, "employer_tax", SUBJECT, ["a"], 1.0) is None
    assert fetch_mod.evaluate(adapter, "p", SUBJECT, {}, 1.0) is None


@pytest.mark.parametrize(
    ("error", "reason", "retry"),
    [
        (ProviderUnavailable(Agency.TAX, "circuit open", circuit_open=True), "CIRCUIT_OPEN", 5.0),
        (ProviderUnavailable(Agency.TAX, "timeout", timed_out=True), "PROVIDER_TIMEOUT", 1.0),
        (ProviderUnavailable(Agency.TAX, "refused"), "PROVIDER_UNAVAILABLE", 1.0),
    ],
)
def test_provider_unavailable(error: Exception, reason: str, retry: float) -> None:
    adapter: Any = FakeAdapter(error)
    for call in (
        lambda: fetch_mod.fetch(adapter, "employer_tax", SUBJECT, ["a"], 1.0),
        lambda: fetch_mod.evaluate(adapter, "p", SUBJECT, {}, 1.0),
        lambda: fetch_mod.evaluate_many(adapter, "p", [SUBJECT], {}, 1.0),
    ):
        with pytest.raises(Unavailable) as exc:
            call()
        assert reason_of(exc) == ("UNAVAILABLE", reason)
        assert exc.value.retry_after_s == retry
        assert exc.value.metadata == {"provider": "tax"}


def test_invalid_request_is_invalid_argument() -> None:
    adapter: Any = FakeAdapter(InvalidRequest("bad parameter"))
    with pytest.raises(InvalidArgument) as exc:
        fetch_mod.evaluate(adapter, "p", SUBJECT, {"years": -1}, 1.0)
    assert reason_of(exc) == ("INVALID_ARGUMENT", "INVALID_REQUEST")


def test_no_time_left_calls_nobody() -> None:
    adapter: Any = FakeAdapter()
    with pytest.raises(Unavailable) as exc:
        fetch_mod.fetch(adapter, "employer_tax", SUBJECT, ["a"], fetch_mod.MIN_CALL_S / 2)
    assert reason_of(exc) == ("UNAVAILABLE", "PROVIDER_TIMEOUT")
    with pytest.raises(Unavailable):
        fetch_mod.evaluate(adapter, "p", SUBJECT, {}, -1.0)
    assert adapter.timeouts == []


# --- rate -----------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@given(
    rate=st.floats(min_value=0.01, max_value=1000),
    burst=st.integers(min_value=0, max_value=50),
    gaps=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=200),
)
def test_rate_limiter_never_admits_more_than_burst_plus_rate(
    rate: float, burst: int, gaps: list[float]
) -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    capacity = burst if burst > 0 else max(rate, 1.0)
    admitted = 0
    start = None
    for gap in gaps:
        clock.now += gap
        if start is None:
            start = clock.now
        try:
            limiter.take("k", rate, burst)
        except RateLimited as exc:
            assert exc.reason == "RATE_LIMITED"
            assert exc.retry_after_s is not None and 0 < exc.retry_after_s <= 1 / rate + 1e-9
        else:
            admitted += 1
        assert admitted <= capacity + rate * (clock.now - start) + 1e-6


@given(rate=st.floats(min_value=0.5, max_value=100), burst=st.integers(min_value=0, max_value=20))
def test_rate_limiter_retry_after_is_enough(rate: float, burst: int) -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    admitted = 0
    while True:
        try:
            limiter.take("k", rate, burst)
        except RateLimited as exc:
            assert exc.retry_after_s is not None
            clock.now += exc.retry_after_s * (1 + 1e-9) + 1e-12
            limiter.take("k", rate, burst)  # a token is back
            break
        admitted += 1
    assert admitted == (burst if burst > 0 else int(max(rate, 1.0)))


def test_rate_limiter_keys_and_unlimited() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    for _ in range(1000):
        limiter.take("free", 0)
    limiter.take("a", 1)
    limiter.take("b", 1)
    with pytest.raises(RateLimited):
        limiter.take("a", 1)
    clock.now += 1.0
    limiter.take("a", 1)


# --- record ---------------------------------------------------------------------------------------


def test_access_entry() -> None:
    facts = AccessFacts(
        node="gw1",
        request_id="r1",
        caller=Agency.HRSS,
        operator="clerk-7",
        subject=SUBJECT,
        purpose="graduate_employment",
        provider=Agency.EDUCATION,
        datasets=["graduation"],
        fields=["level"],
        predicate="graduated_within_years",
        parameters={"years": 2},
        basis="consent",
        basis_reference="c1",
        allowed=True,
        outcome="found",
        time_ns=1_700_000_000_123_456_789,
    )
    entry = access_entry(facts)
    assert entry.node == "gw1" and entry.request_id == "r1"
    assert entry.caller == common_pb2.AGENCY_CODE_HRSS
    assert entry.subject.id == PERSON and entry.subject.kind == common_pb2.SUBJECT_KIND_PERSON
    assert (entry.time.seconds, entry.time.nanos) == (1_700_000_000, 123_456_000)
    a = entry.access
    assert a.provider == common_pb2.AGENCY_CODE_EDUCATION
    assert list(a.fields) == ["level"] and dict(a.predicate.parameters) == {"years": 2}
    assert a.legal_basis.kind == audit_pb2.LEGAL_BASIS_KIND_CONSENT
    assert a.decision == audit_pb2.AUDIT_DECISION_ALLOWED
    assert a.outcome.kind == audit_pb2.ACCESS_OUTCOME_KIND_FOUND
    assert a.latency_us >= 0


def test_access_entry_of_a_denial_without_subject() -> None:
    facts = AccessFacts(
        node="gw1",
        request_id="r2",
        caller=Agency.TAX,
        operator="",
        subject=None,
        purpose=None,
        provider=Agency.HRSS,
        reason="NO_AGREEMENT",
        basis_reference="x" * 500,
    )
    entry = access_entry(facts)
    assert not entry.HasField("subject") and not entry.HasField("purpose")
    assert entry.access.decision == audit_pb2.AUDIT_DECISION_DENIED
    assert entry.access.reason == "NO_AGREEMENT"
    assert len(entry.access.legal_basis.reference) == 128


def test_consent_change_entry() -> None:
    entry = consent_change_entry(
        node="gw1",
        request_id="r3",
        caller=None,
        subject=SUBJECT,
        consent_id="c1",
        action="revoked",
        consumers=[Agency.HRSS],
        datasets=["education.graduation"],
        purposes=["graduate_employment"],
        time_ns=0,
    )
    assert entry.consent_change.action == audit_pb2.CONSENT_ACTION_REVOKED
    assert list(entry.consent_change.consumers) == [common_pb2.AGENCY_CODE_HRSS]


# --- errors ---------------------------------------------------------------------------------------


def test_audit_failed_is_unavailable_with_a_retry() -> None:
    error = AuditFailed()
    assert isinstance(error, Unavailable)
    assert (error.code, error.reason, error.retry_after_s) == ("UNAVAILABLE", "AUDIT_UNAVAILABLE", 5.0)
