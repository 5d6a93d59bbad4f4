"""The pure decision function: every reason, the most specific one, combination, statutory duty."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.agencies import Agency
from adapters.contract import Subject, SubjectKind
from gateway.consent.decision import CONSENT_REQUIRED, Basis, BasisKind, CheckRequest, DenyReason, decide
from gateway.consent.model import (
    CaptureChannel,
    ConsentRecord,
    ConsentStatus,
    ConsentTerms,
    Scope,
    ScopeItem,
    StatusEvent,
)
from tests.consent import T0, person
from tests.consent.reference_decision import reference_decide

PID = person(7)
SUBJECT = Subject(SubjectKind.PERSON, PID)
ES = ("registered_unemployed", "unemployed_since", "hard_to_employ", "hard_to_employ_category")
SENSITIVE = frozenset({"hard_to_employ", "hard_to_employ_category"})


def record(
    cid: str = "c1",
    *,
    fields: tuple[str, ...] = ("registered_unemployed", "unemployed_since"),
    consumers: tuple[Agency, ...] = (Agency.EDUCATION,),
    purposes: tuple[str, ...] = ("employment_subsidy_review",),
    valid_from: datetime = T0,
    valid_to: datetime = T0 + timedelta(days=30),
    granted_at: datetime = T0,
    separate: bool = False,
    use_limit: int | None = None,
    uses: int = 0,
    then: tuple[ConsentStatus, datetime] | None = None,
    subject_id: str = PID,
    dataset: str = "employment_status",
) -> ConsentRecord:
    terms = ConsentTerms(
        consent_id=cid,
        subject_kind=SubjectKind.PERSON,
        subject_id=subject_id,
        consumers=consumers,
        scope=Scope(items=(ScopeItem(provider=Agency.HRSS, dataset=dataset, fields=fields),)),
        purposes=purposes,
        valid_from=valid_from,
        valid_to=valid_to,
        use_limit=use_limit,
        separate=separate,
        channel=CaptureChannel.COUNTER,
        evidence_ref="f",
        notice_version="v1",
        granted_at=granted_at,
    )
    history = [StatusEvent(seq=1, status=ConsentStatus.GRANTED, at=granted_at, recorded_at=granted_at)]
    if then is not None:
        history.append(StatusEvent(seq=2, status=then[0], at=then[1], recorded_at=then[1]))
    return ConsentRecord(terms=terms, history=tuple(history), uses=uses)


def request(**kw: Any) -> CheckRequest:
    base: dict[str, Any] = {
        "subject": SUBJECT,
        "consumer": Agency.EDUCATION,
        "provider": Agency.HRSS,
        "dataset": "employment_status",
        "fields": ("registered_unemployed",),
        "purpose": "employment_subsidy_review",
    }
    base.update(kw)
    fields = base["fields"]
    base.setdefault("sensitive_fields", SENSITIVE.intersection(fields))
    return CheckRequest(**base)


NOW = T0 + timedelta(days=1)


def test_allowed_with_the_consent_id() -> None:
    d = decide([record()], request(), NOW)
    assert d.allowed and d.basis is BasisKind.CONSENT
    assert d.consent_id == "c1" and d.consent_ids == ("c1",) and d.reason is None
    assert d.legal_basis_reference == "c1"


def test_no_records_no_consent() -> None:
    d = decide([], request(), NOW)
    assert not d.allowed and d.reason is DenyReason.NO_CONSENT and d.basis is BasisKind.NONE
    assert d.consent_id is None


def test_consent_for_another_dataset_is_no_consent() -> None:
    d = decide([record(dataset="person_insurance", fields=("currently_insured",))], request(), NOW)
    assert d.reason is DenyReason.NO_CONSENT


def test_another_subjects_consent_does_not_count() -> None:
    d = decide([record(subject_id=person(8))], request(), NOW)
    assert d.reason is DenyReason.NO_CONSENT


def test_revoked_denied_from_the_revocation_on() -> None:
    revoked_at = T0 + timedelta(hours=5)
    r = record(then=(ConsentStatus.REVOKED, revoked_at))
    assert decide([r], request(), revoked_at - timedelta(microseconds=1)).allowed
    d = decide([r], request(), revoked_at)
    assert not d.allowed and d.reason is DenyReason.CONSENT_REVOKED and d.consent_id == "c1"


def test_expired_by_time_even_without_an_event() -> None:
    r = record(valid_to=T0 + timedelta(days=2))
    assert decide([r], request(), T0 + timedelta(days=2) - timedelta(microseconds=1)).allowed
    d = decide([r], request(), T0 + timedelta(days=2))
    assert d.reason is DenyReason.CONSENT_EXPIRED


def test_expired_event() -> None:
    end = T0 + timedelta(days=2)
    r = record(valid_to=end, then=(ConsentStatus.EXPIRED, end))
    assert decide([r], request(), end + timedelta(days=1)).reason is DenyReason.CONSENT_EXPIRED


def test_not_yet_valid() -> None:
    r = record(valid_from=T0 + timedelta(days=3))
    assert decide([r], request(), NOW).reason is DenyReason.CONSENT_NOT_YET_VALID


def test_before_the_grant_was_recorded_there_is_no_consent() -> None:
    r = record(granted_at=T0 + timedelta(days=2), valid_from=T0)
    assert decide([r], request(), NOW).reason is DenyReason.NO_CONSENT


def test_purpose_mismatch() -> None:
    d = decide([record()], request(purpose="startup_loan"), NOW)
    assert d.reason is DenyReason.PURPOSE_MISMATCH and d.consent_id == "c1"


def test_consumer_mismatch() -> None:
    d = decide([record()], request(consumer=Agency.TAX), NOW)
    assert d.reason is DenyReason.CONSUMER_MISMATCH


def test_field_out_of_scope() -> None:
    d = decide([record()], request(fields=("registered_unemployed", "flexible_employment")), NOW)
    assert d.reason is DenyReason.FIELD_OUT_OF_SCOPE and d.field == "flexible_employment"


def test_sensitive_without_separate_consent() -> None:
    r = record(fields=ES)
    d = decide([r], request(fields=("hard_to_employ",)), NOW)
    assert d.reason is DenyReason.SENSITIVE_WITHOUT_SEPARATE_CONSENT and d.field == "hard_to_employ"
    # the non-sensitive fields of the same consent are fine
    assert decide([r], request(fields=("registered_unemployed",)), NOW).allowed


def test_separate_consent_covers_sensitive_fields() -> None:
    r = record(fields=ES, separate=True)
    assert decide([r], request(fields=("hard_to_employ", "registered_unemployed")), NOW).allowed


def test_general_and_separate_consents_combine() -> None:
    general = record("general", fields=("registered_unemployed", "unemployed_since"))
    sensitive = record("sep", fields=("hard_to_employ", "hard_to_employ_category"), separate=True)
    d = decide([general, sensitive], request(fields=ES), NOW)
    assert d.allowed and set(d.consent_ids) == {"general", "sep"}
    # the separate consent revoked: the sensitive part is denied as revoked, not "not separate"
    revoked = record(
        "sep",
        fields=("hard_to_employ", "hard_to_employ_category"),
        separate=True,
        then=(ConsentStatus.REVOKED, T0 + timedelta(hours=1)),
    )
    d = decide([general, revoked], request(fields=ES), NOW)
    assert d.reason is DenyReason.CONSENT_REVOKED and d.consent_id == "sep"


def test_fewest_consents_are_listed() -> None:
    wide = record("wide", fields=ES[:2], granted_at=T0 - timedelta(days=1), valid_from=T0 - timedelta(days=1))
    narrow = record("narrow", fields=("registered_unemployed",))
    d = decide([narrow, wide], request(fields=ES[:2]), NOW)
    assert d.consent_ids == ("wide",)
    # for one field both cover: the one without a use limit first, then the latest grant
    limited = record("limited", use_limit=3)
    d = decide([limited, narrow, wide], request(), NOW)
    assert d.consent_ids == ("narrow",)


def test_most_specific_reason_wins() -> None:
    revoked = record("rev", then=(ConsentStatus.REVOKED, T0 + timedelta(hours=1)))
    other_purpose = record("other", purposes=("startup_loan",))
    for order in itertools.permutations([revoked, other_purpose]):
        d = decide(list(order), request(), NOW)
        assert d.reason is DenyReason.CONSENT_REVOKED and d.consent_id == "rev"


def test_binding_obstacle_across_fields() -> None:
    # one field out of scope of a live consent, another covered only by a revoked one
    live = record("live", fields=("registered_unemployed",))
    revoked = record(
        "rev", fields=("unemployed_since",), then=(ConsentStatus.REVOKED, T0 + timedelta(hours=1))
    )
    d = decide([live, revoked], request(fields=("registered_unemployed", "unemployed_since")), NOW)
    assert not d.allowed
    assert d.reason is DenyReason.CONSENT_REVOKED and d.field == "unemployed_since"
    d = decide([live], request(fields=("registered_unemployed", "flexible_employment")), NOW)
    assert d.reason is DenyReason.FIELD_OUT_OF_SCOPE


def test_use_limit() -> None:
    assert decide([record(use_limit=2, uses=1)], request(), NOW).allowed
    d = decide([record(use_limit=2, uses=2)], request(), NOW)
    assert d.reason is DenyReason.USE_LIMIT_REACHED


def test_statutory_duty_bypasses_consent_and_says_so() -> None:
    basis = Basis(statutory_duty=True, reference="《失业保险条例》第十六条")
    d = decide([], request(), NOW, basis)
    assert d.allowed and d.basis is BasisKind.STATUTORY_DUTY and d.consent_ids == ()
    assert d.reference == basis.reference and d.legal_basis_reference == basis.reference
    assert "statutory duty" in d.detail
    # even when a consent was revoked
    revoked = record(then=(ConsentStatus.REVOKED, T0))
    assert decide([revoked], request(), NOW, basis).basis is BasisKind.STATUTORY_DUTY
    with pytest.raises(ValueError):
        Basis(statutory_duty=True)


def test_decision_json() -> None:
    d = decide([record()], request(purpose="startup_loan"), NOW, CONSENT_REQUIRED)
    j = d.to_json()
    assert j["allowed"] is False and j["reason"] == "PURPOSE_MISMATCH" and j["consent_id"] == "c1"
    assert PID not in str(j)


_statuses = st.sampled_from([None, ConsentStatus.REVOKED, ConsentStatus.EXPIRED])


@st.composite
def _records(draw: st.DrawFn) -> list[ConsentRecord]:
    out = []
    for i in range(draw(st.integers(0, 4))):
        fields = tuple(draw(st.sets(st.sampled_from(ES), min_size=1)))
        status = draw(_statuses)
        out.append(
            record(
                f"c{i}",
                fields=fields,
                consumers=tuple(draw(st.sets(st.sampled_from([Agency.EDUCATION, Agency.TAX]), min_size=1))),
                purposes=tuple(
                    draw(st.sets(st.sampled_from(["employment_subsidy_review", "startup_loan"]), min_size=1))
                ),
                separate=draw(st.booleans()),
                use_limit=draw(st.sampled_from([None, 1, 5])),
                uses=draw(st.integers(0, 5)),
                granted_at=T0 + timedelta(minutes=i),
                then=None if status is None else (status, T0 + timedelta(hours=2)),
            )
        )
    return out


@settings(max_examples=200, deadline=None)
@given(_records(), st.sets(st.sampled_from(ES), min_size=1), st.permutations(range(4)))
def test_decision_does_not_depend_on_record_order(
    records: list[ConsentRecord], fields: set[str], perm: list[int]
) -> None:
    req = request(fields=tuple(sorted(fields)))
    a = decide(records, req, NOW)
    shuffled = [records[i] for i in perm if i < len(records)]
    b = decide(shuffled, req, NOW)
    assert (a.allowed, a.reason, a.field, a.consent_id) == (b.allowed, b.reason, b.field, b.consent_id)
    if a.allowed:
        # every requested field is covered by a listed consent that is active and in scope
        by_id = {r.consent_id: r for r in records}
        for f in fields:
            assert any(
                f in (by_id[c].terms.scope.fields_for("hrss", "employment_status") or ())
                and (f not in SENSITIVE or by_id[c].terms.separate)
                and by_id[c].active_at(NOW)
                for c in a.consent_ids
            )


_times = st.integers(-3, 40).map(lambda d: T0 + timedelta(days=d))


@st.composite
def _any_records(draw: st.DrawFn) -> list[ConsentRecord]:
    """Anything the store can hold: other datasets and subjects, windows around ``now``, grants
    after ``now``, revocations and expiries before or after it, use limits used up or not, ties."""
    out = []
    for i in range(draw(st.integers(0, 5))):
        granted = draw(_times)
        valid_from = draw(
            st.sampled_from([granted, granted - timedelta(days=2), granted + timedelta(days=3)])
        )
        valid_to = valid_from + timedelta(days=draw(st.integers(1, 30)))
        status = draw(_statuses)
        then_at = max(granted, draw(_times))
        limit = draw(st.sampled_from([None, 1, 3]))
        out.append(
            record(
                draw(st.sampled_from([f"c{i}", f"d{i}", "c0"])) if i else "c0",
                fields=tuple(draw(st.sets(st.sampled_from(ES), min_size=1))),
                consumers=tuple(draw(st.sets(st.sampled_from([Agency.EDUCATION, Agency.TAX]), min_size=1))),
                purposes=tuple(
                    draw(st.sets(st.sampled_from(["employment_subsidy_review", "startup_loan"]), min_size=1))
                ),
                valid_from=valid_from,
                valid_to=valid_to,
                granted_at=granted,
                separate=draw(st.booleans()),
                use_limit=limit,
                uses=draw(st.integers(0, 4)),
                then=None if status is None else (status, then_at),
                subject_id=draw(st.sampled_from([PID, PID, PID, person(8)])),
                dataset=draw(st.sampled_from(["employment_status", "employment_status", "person_insurance"])),
            )
        )
    return out


@settings(max_examples=600, deadline=None)
@given(
    _any_records(),
    st.lists(st.sampled_from((*ES, "flexible_employment")), min_size=1, max_size=6),
    st.sampled_from([Agency.EDUCATION, Agency.TAX]),
    st.sampled_from(["employment_subsidy_review", "startup_loan"]),
    _times,
    st.booleans(),
)
def test_decision_equals_the_reference(
    records: list[ConsentRecord],
    fields: list[str],
    consumer: Agency,
    purpose: str,
    now: datetime,
    statutory: bool,
) -> None:
    """The rewritten hot path decides exactly as the original function: the same Decision, detail
    and consent order included."""
    req = request(fields=tuple(fields), consumer=consumer, purpose=purpose)
    basis = Basis(statutory_duty=True, reference="ref") if statutory else CONSENT_REQUIRED
    assert decide(records, req, now, basis) == reference_decide(records, req, now, basis)
    assert decide(iter(records), req, now) == reference_decide(records, req, now)
