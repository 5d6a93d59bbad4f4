"""Validation before storing: bad input is refused with a reason and nothing is stored."""

# ruff: noqa: F811 - the shared fixtures are imported from tests.consent

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from adapters.agencies import Agency
from gateway.consent import ConsentExists, ConsentNotFound, InvalidConsentRequest, ScopeRequest
from gateway.consent.decision import DenyReason
from gateway.consent.service import dataset_infos, parse_subject
from gateway.consent.store import ConsentStore
from gateway.errors import UsageError
from tests.consent import (  # noqa: F401 - fixtures
    T0,
    Backend,
    Clock,
    backend,
    check_args,
    employer,
    grant_request,
    person,
    service_for,
    store,
)

BAD_GRANTS: list[tuple[str, dict[str, Any]]] = [
    ("UNKNOWN_PURPOSE", {"purposes": ["no_such_purpose"]}),
    ("UNKNOWN_PURPOSE", {"purposes": []}),
    ("INVALID_IDENTITY_NUMBER", {"subject": "120101198001011230"}),  # wrong check digit
    ("INVALID_IDENTITY_NUMBER", {"subject": "12345"}),
    ("INVALID_IDENTITY_NUMBER", {"subject": "120101198001011230", "subject_kind": "person"}),
    ("INVALID_CREDIT_CODE", {"subject": "91120101MA05XXXX0X", "subject_kind": "employer"}),
    ("INVALID_VALIDITY", {"valid_from": T0 + timedelta(days=40)}),  # end before start
    ("INVALID_VALIDITY", {"valid_from": T0 + timedelta(days=30)}),  # empty window
    ("INVALID_VALIDITY", {"valid_to": T0 - timedelta(days=1), "valid_from": T0 - timedelta(days=2)}),
    ("INVALID_VALIDITY", {"valid_to": datetime(2025, 7, 1)}),  # naive time
    ("UNKNOWN_AGENCY", {"consumers": ["police"]}),
    ("UNKNOWN_AGENCY", {"consumers": []}),
    ("UNKNOWN_AGENCY", {"scope": [ScopeRequest("police", "register")]}),
    ("UNKNOWN_DATASET", {"scope": [ScopeRequest("hrss", "salaries")]}),
    ("UNKNOWN_DATASET", {"scope": []}),
    ("UNKNOWN_FIELD", {"scope": [ScopeRequest("hrss", "employment_status", ("salary",))]}),
    ("UNKNOWN_FIELD", {"scope": [ScopeRequest("hrss", "employment_status", ())]}),
    ("SUBJECT_KIND_MISMATCH", {"scope": [ScopeRequest("tax", "employer_tax")]}),
    ("UNKNOWN_DATASET", {"scope": [ScopeRequest("hrss", "graduation")]}),  # education's, not hrss's
    ("INVALID_USE_LIMIT", {"use_limit": 0}),
    ("INVALID_USE_LIMIT", {"use_limit": 2**53}),
    ("INVALID_CHANNEL", {"channel": "fax"}),
    ("INVALID_REQUEST", {"evidence_ref": ""}),
    ("INVALID_REQUEST", {"notice_version": "v1\n"}),
    ("INVALID_REQUEST", {"consent_id": "has space"}),
    (
        "INVALID_REQUEST",
        {"scope": [ScopeRequest("hrss", "employment_status"), ScopeRequest("hrss", "employment_status")]},
    ),
]


@pytest.mark.parametrize(("reason", "change"), BAD_GRANTS)
def test_bad_grant_refused_with_a_reason_and_nothing_stored(
    store: ConsentStore, reason: str, change: dict[str, Any]
) -> None:
    events: list[Any] = []
    svc = service_for(store, on_event=lambda r, e: events.append(e))
    with pytest.raises(InvalidConsentRequest) as info:
        svc.grant(grant_request(**change))
    assert info.value.reason == reason
    assert isinstance(info.value, UsageError)
    assert "\n" not in str(info.value)
    assert store.count() == 0 and events == []


def test_error_messages_carry_no_identity_number(store: ConsentStore) -> None:
    svc = service_for(store)
    bad = "120101198001011230"
    with pytest.raises(InvalidConsentRequest) as info:
        svc.grant(grant_request(bad))
    assert bad not in str(info.value) and bad[:10] not in str(info.value)


def test_bad_checks_refused(store: ConsentStore) -> None:
    svc = service_for(store)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("UNKNOWN_PURPOSE", {"purpose": "nope"}),
        ("INVALID_IDENTITY_NUMBER", {"subject": "1"}),
        ("UNKNOWN_AGENCY", {"consumer": "army"}),
        ("UNKNOWN_DATASET", {"dataset": "nope"}),
        ("UNKNOWN_FIELD", {"fields": ["nope"]}),
        ("SUBJECT_KIND_MISMATCH", {"provider": "market_regulation", "dataset": "business_registration"}),
    ]
    for reason, change in cases:
        with pytest.raises(InvalidConsentRequest) as info:
            svc.check(**check_args(**change))
        assert info.value.reason == reason


def test_identifiers_are_stored_canonical(store: ConsentStore) -> None:
    svc = service_for(store)
    pid = person(4)
    record = svc.grant(grant_request(" " + pid.lower() + " ")).record
    assert record.terms.subject_id == pid
    assert parse_subject(employer(2).lower()).id == employer(2)
    assert svc.check(**check_args(pid)).allowed


def test_defaults_and_dedup(store: ConsentStore) -> None:
    clock = Clock()
    svc = service_for(store, clock)
    record = svc.grant(
        grant_request(
            consumers=["education", "education", "tax"],
            purposes=["startup_loan", "employment_subsidy_review", "startup_loan"],
            scope=[ScopeRequest("hrss", "person_insurance")],
        )
    ).record
    t = record.terms
    assert t.valid_from == clock.now and t.granted_at == clock.now
    assert [c.value for c in t.consumers] == ["education", "tax"]
    assert t.purposes == ("employment_subsidy_review", "startup_loan")
    assert t.scope.items[0].fields == tuple(
        sorted(dataset_infos()[(t.scope.items[0].provider, "person_insurance")].fields)
    )
    assert not t.separate


def test_duplicate_consent_id_and_unknown_ids(store: ConsentStore) -> None:
    svc = service_for(store)
    svc.grant(grant_request(consent_id="fixed-1"))
    with pytest.raises(ConsentExists):
        svc.grant(grant_request(person(2), consent_id="fixed-1"))
    assert store.count() == 1
    with pytest.raises(ConsentNotFound):
        svc.revoke("nope")
    # a revocation naming another subject does not reveal the consent
    with pytest.raises(ConsentNotFound):
        svc.revoke("fixed-1", subject=person(2))
    # nor does one by an agency the consent does not name as a consumer (the default grant names
    # education only): the same error as for an id that does not exist, and nothing changes
    with pytest.raises(ConsentNotFound) as hidden:
        svc.revoke("fixed-1", consumer=Agency.TAX)
    assert str(hidden.value) == str(ConsentNotFound("fixed-1"))
    assert svc.get("fixed-1").status.value == "granted"
    assert svc.revoke("fixed-1", consumer=Agency.EDUCATION).record.status.value == "revoked"


def test_bulk_grant(store: ConsentStore) -> None:
    calls: list[str] = []
    svc = service_for(store, on_event=lambda r, e: calls.append(r.consent_id))
    records = svc.grant_many([grant_request(person(i)) for i in range(20)])
    assert store.count() == 20 and len(calls) == 20
    assert svc.check(**check_args(person(13))).allowed
    with pytest.raises(InvalidConsentRequest):
        svc.grant_many([grant_request(person(30)), grant_request(person(31), purposes=["x"])])
    assert store.count() == 20
    assert {r.consent_id for r in records} == set(calls)


def test_opt_out_validation(store: ConsentStore) -> None:
    svc = service_for(store)
    opt_cases: list[tuple[str, dict[str, Any]]] = [
        ("INVALID_CHANNEL", {"channel": "pigeon"}),
        ("UNKNOWN_CATEGORY", {"category": "lottery"}),
        ("INVALID_REQUEST", {}),
        ("INVALID_REQUEST", {"channel": "sms", "category": "training"}),
    ]
    for reason, kw in opt_cases:
        with pytest.raises(InvalidConsentRequest) as info:
            svc.opt_out(person(), **kw)
        assert info.value.reason == reason
    assert svc.opt_outs(person()) == []


def test_on_event_maps_onto_audit_entries(store: ConsentStore) -> None:
    from audit.entry import AuditEntry, ConsentAction, ConsentChange, decode, encode
    from gateway.consent.service import audit_fields

    entries: list[AuditEntry] = []

    def hook(record: Any, event: Any) -> None:
        f = audit_fields(record, event)
        entries.append(
            AuditEntry(time=f["time"], node="gw-1", subject=f["subject"], body=ConsentChange(**f["change"]))
        )

    clock = Clock()
    svc = service_for(store, clock, on_event=hook)
    short = svc.grant(grant_request(valid_to=T0 + timedelta(hours=1))).record
    other = svc.grant(grant_request(person(2))).record
    svc.revoke(other.consent_id)
    clock.advance(hours=2)
    svc.expire()
    actions = [(e.body.consent_id, e.body.action) for e in entries if isinstance(e.body, ConsentChange)]
    assert actions == [
        (short.consent_id, ConsentAction.GRANTED),
        (other.consent_id, ConsentAction.GRANTED),
        (other.consent_id, ConsentAction.REVOKED),
        (short.consent_id, ConsentAction.EXPIRED),
    ]
    assert all(decode(encode(e)) == e for e in entries)


# --- review fixes ------------------------------------------------------------------------------


def test_expire_refuses_a_time_ahead_of_the_clock(store: ConsentStore) -> None:
    """An expiry is final: one recorded ahead of the clock would end a consent in force for good."""
    clock = Clock()
    svc = service_for(store, clock)
    cid = svc.grant(grant_request()).record.consent_id  # valid to T0 + 30 days
    with pytest.raises(InvalidConsentRequest, match="future") as caught:
        svc.expire(now=T0 + timedelta(days=365))
    assert isinstance(caught.value, UsageError) and caught.value.reason == "INVALID_REQUEST"
    assert store.require(cid).status.value == "granted"  # nothing recorded
    assert svc.expire(now=T0 + timedelta(seconds=30)) == []  # within the clock tolerance
    assert svc.revoke(cid).record.status.value == "revoked"  # still in force, so revocable
    clock.advance(days=40)
    assert svc.expire(now=T0 + timedelta(days=40)) == []  # the clock moved: allowed (nothing left)


def test_revoke_refuses_a_time_ahead_of_the_clock(store: ConsentStore) -> None:
    clock = Clock()
    svc = service_for(store, clock)
    cid = svc.grant(grant_request()).record.consent_id
    with pytest.raises(InvalidConsentRequest, match="cannot revoke as of a time in the future"):
        svc.revoke(cid, now=T0 + timedelta(days=3))
    assert store.require(cid).status.value == "granted" and len(store.require(cid).history) == 1
    assert svc.revoke(cid, now=T0 + timedelta(seconds=30)).record.status.value == "revoked"


def test_scope_with_a_colon_and_no_fields_is_not_every_field(store: ConsentStore) -> None:
    assert ScopeRequest.parse("hrss.employment_status").fields is None  # no colon: every field
    assert ScopeRequest.parse("hrss.employment_status:").fields == ()
    assert ScopeRequest.parse("hrss.employment_status: ").fields == ()
    svc = service_for(store)
    for text in ("hrss.employment_status:", "hrss.employment_status: ", "hrss.employment_status:,"):
        with pytest.raises(InvalidConsentRequest, match="no fields named") as caught:
            svc.grant(grant_request(scope=[ScopeRequest.parse(text)]))
        assert caught.value.reason == "UNKNOWN_FIELD"
    assert store.count() == 0


def test_own_only_leaves_other_agencies_consents_unseen(store: ConsentStore) -> None:
    """Check over gRPC decides against the caller's own consents only: another agency's consent
    is neither named nor hinted at (CONSENT_CONSUMER_MISMATCH named it and its id)."""
    svc = service_for(store)
    pid = person(6)
    svc.grant(grant_request(pid))  # names education only
    other = check_args(pid, consumer="tax")
    mismatch = svc.check(**other)
    assert mismatch.reason is DenyReason.CONSUMER_MISMATCH
    unseen = svc.check(**other, own_only=True)
    assert not unseen.allowed and unseen.reason is DenyReason.NO_CONSENT
    assert unseen.consent_ids == () and "cns" not in unseen.detail
    assert svc.check(**check_args(pid), own_only=True).allowed
