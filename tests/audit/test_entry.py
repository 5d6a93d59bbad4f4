"""Audit entries: validation, the proto payload (round trips, determinism) and index terms."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from adapters.agencies import Agency
from audit.entry import (
    Access,
    AuditEntry,
    ConsentAction,
    ConsentChange,
    InvalidEntry,
    PushNotification,
    PushOutcome,
    Subject,
    SubjectKind,
    decode,
    decode_proto,
    encode,
    from_proto,
    index_terms,
)
from audit.errors import AuditError
from dsgw.v1 import audit_pb2, common_pb2
from gateway.identity import TIANJIN_DISTRICTS, make_credit_code, make_resident_id
from gateway.identity.checksums import CREDIT_CHARSET

PERSON_ID = make_resident_id("120116", date(1985, 5, 5), 7)  # 120116198505050071
BAD_PERSON_ID = PERSON_ID[:-1] + ("0" if PERSON_ID[-1] != "0" else "1")
EMPLOYER_ID = make_credit_code("91", "120116", "MA05ABCD")
WHEN = datetime(2026, 11, 3, 12, 30, 1, 123456, tzinfo=UTC)


def access_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "time": WHEN,
        "node": "gw-1",
        "request_id": "req-1",
        "caller": "tax",
        "operator": "op-77",
        "subject": {"kind": "person", "id": PERSON_ID},
        "purpose": "employment_subsidy_review",
        "body": {
            "kind": "access",
            "provider": "hrss",
            "datasets": ["person_insurance"],
            "fields": ["currently_insured", "current_employer"],
            "legal_basis": {"kind": "consent", "reference": "consent-123"},
            "decision": "allowed",
            "outcome": {"kind": "found"},
            "latency_us": 1234,
        },
    }
    data.update(overrides)
    return data


def access_entry(**overrides: Any) -> AuditEntry:
    return AuditEntry.model_validate(access_data(**overrides))


# --- strategies ---------------------------------------------------------------------------------

names = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
codes = st.from_regex(r"[A-Z][A-Z0-9_]{0,20}", fullmatch=True)
tokens = st.text(
    alphabet=st.characters(
        blacklist_categories=["Cs"], blacklist_characters="".join(map(chr, [*range(32), 127]))
    ),
    min_size=1,
    max_size=40,
)
agencies = st.sampled_from(list(Agency))
times = st.builds(
    lambda dt, offset: dt.replace(tzinfo=UTC).astimezone(timezone(timedelta(minutes=offset))),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 31)),
    st.integers(min_value=-12 * 60, max_value=14 * 60),
)
persons = st.builds(
    make_resident_id,
    st.sampled_from(sorted(TIANJIN_DISTRICTS)),
    st.dates(min_value=date(1920, 1, 1), max_value=date(2020, 12, 31)),
    st.integers(min_value=0, max_value=999),
).map(lambda n: Subject(kind=SubjectKind.PERSON, id=n))
employers = st.builds(
    make_credit_code,
    st.sampled_from(["91", "92", "52", "11"]),
    st.sampled_from(sorted(TIANJIN_DISTRICTS)),
    st.text(alphabet=CREDIT_CHARSET, min_size=8, max_size=8),
).map(lambda c: Subject(kind=SubjectKind.EMPLOYER, id=c))
subjects = st.one_of(persons, employers)


@st.composite
def access_bodies(draw: st.DrawFn) -> Access:
    decision = draw(st.sampled_from(["allowed", "denied"]))
    if decision == "denied":
        outcome: dict[str, Any] = {"kind": "none"}
        reason = draw(st.sampled_from(common_pb2.ErrorReason.keys()[1:]))
    else:
        kind = draw(st.sampled_from(["found", "not_found", "count", "failed"]))
        outcome = {"kind": kind, "count": draw(st.integers(0, 2**64 - 1)) if kind == "count" else 0}
        reason = draw(codes) if kind == "failed" else ""
    basis_kind = draw(st.sampled_from(["consent", "statutory_duty", "none"]))
    predicate = draw(
        st.none()
        | st.builds(
            lambda n, p: {"name": n, "parameters": p},
            names,
            st.dictionaries(names, st.integers(-(2**63), 2**63 - 1), max_size=3),
        )
    )
    return Access.model_validate(
        {
            "provider": draw(agencies),
            "datasets": draw(st.lists(names, max_size=3)),
            "fields": draw(st.lists(names, max_size=5)),
            "predicate": predicate,
            "legal_basis": {"kind": basis_kind, "reference": "" if basis_kind == "none" else draw(tokens)},
            "decision": decision,
            "reason": reason,
            "outcome": outcome,
            "latency_us": draw(st.integers(0, 2**64 - 1)),
        }
    )


consent_bodies = st.builds(
    ConsentChange,
    consent_id=tokens,
    action=st.sampled_from(["granted", "revoked", "expired"]),
    consumers=st.lists(agencies, max_size=3).map(tuple),
    datasets=st.lists(names, max_size=3).map(tuple),
    purposes=st.lists(names, max_size=3).map(tuple),
)


@st.composite
def push_bodies(draw: st.DrawFn) -> PushNotification:
    outcome = draw(st.sampled_from(["queued", "delivered", "failed", "suppressed"]))
    return PushNotification.model_validate(
        {
            "policy_id": draw(tokens),
            "channel": draw(names),
            "notification_id": draw(tokens),
            "outcome": outcome,
            "reason": draw(codes) if outcome in ("failed", "suppressed") else "",
        }
    )


@st.composite
def entries(draw: st.DrawFn) -> AuditEntry:
    body = draw(st.one_of(access_bodies(), consent_bodies, push_bodies()))
    needs_header = isinstance(body, Access) and body.decision == "allowed"
    return AuditEntry.model_validate(
        {
            "time": draw(times),
            "node": draw(tokens),
            "request_id": draw(st.just("") | tokens),
            "caller": draw(agencies) if isinstance(body, Access) else draw(st.none() | agencies),
            "operator": draw(st.just("") | tokens),
            "subject": draw(subjects)
            if needs_header or not isinstance(body, Access)
            else draw(st.none() | subjects),
            "purpose": draw(names) if needs_header else draw(st.none() | names),
            "body": body,
        }
    )


# --- round trips --------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(entries())
def test_encode_decode_round_trip(entry: AuditEntry) -> None:
    payload = encode(entry)
    back = decode(payload)
    assert back == entry
    assert encode(back) == payload  # deterministic
    assert from_proto(entry.to_proto()) == entry
    assert encode(entry.to_proto()) == payload
    assert entry.to_proto().SerializeToString(deterministic=True) == payload


@settings(max_examples=200, deadline=None)
@given(entries())
def test_index_terms_agree_for_model_and_proto(entry: AuditEntry) -> None:
    terms = index_terms(entry)
    assert index_terms(entry.to_proto()) == terms
    assert terms["day"] == entry.time.astimezone(UTC).date().isoformat()
    assert terms["kind"] == entry.body.kind
    if entry.subject is not None:
        assert terms["subject"] == f"{entry.subject.kind.value}:{entry.subject.id}"


def test_access_entry_terms() -> None:
    assert index_terms(access_entry()) == {
        "kind": "access",
        "day": "2026-11-03",
        "subject": f"person:{PERSON_ID}",
        "caller": "tax",
        "purpose": "employment_subsidy_review",
        "provider": "hrss",
        "decision": "allowed",
    }


def test_consent_and_push_terms() -> None:
    consent = AuditEntry(
        time=WHEN,
        node="gw-1",
        subject=Subject(kind=SubjectKind.EMPLOYER, id=EMPLOYER_ID.lower()),
        body=ConsentChange(consent_id="c-9", action=ConsentAction.REVOKED, consumers=(Agency.TAX,)),
    )
    assert index_terms(consent) == {
        "kind": "consent_change",
        "day": "2026-11-03",
        "subject": f"employer:{EMPLOYER_ID}",
        "consent": "c-9",
    }
    push = AuditEntry(
        time=WHEN,
        node="gw-1",
        subject=Subject(kind=SubjectKind.PERSON, id=PERSON_ID),
        purpose="employment_subsidy_review",
        body=PushNotification(
            policy_id="p-1", channel="sms", notification_id="n-1", outcome=PushOutcome.DELIVERED
        ),
    )
    assert index_terms(push)["policy"] == "p-1"
    assert index_terms(push)["purpose"] == "employment_subsidy_review"


def test_encoding_is_proto_and_times_are_utc() -> None:
    entry = access_entry(time=datetime(2026, 11, 3, 20, 30, 1, 5, tzinfo=timezone(timedelta(hours=8))))
    assert entry.time == datetime(2026, 11, 3, 12, 30, 1, 5, tzinfo=UTC)
    assert entry.time.tzinfo is UTC
    message = audit_pb2.AuditEntry.FromString(encode(entry))
    assert message.time.seconds == int(entry.time.timestamp())
    assert message.time.nanos == 5000
    assert message.caller == common_pb2.AGENCY_CODE_TAX
    assert message.access.provider == common_pb2.AGENCY_CODE_HRSS
    assert message.access.decision == audit_pb2.AUDIT_DECISION_ALLOWED
    assert message.subject.kind == common_pb2.SUBJECT_KIND_PERSON
    assert list(message.access.fields) == ["currently_insured", "current_employer"]


def test_sub_microsecond_nanos_are_truncated() -> None:
    message = access_entry().to_proto()
    message.time.nanos = 123_456_789
    assert from_proto(message).time.microsecond == 123_456


def test_predicate_parameters_round_trip_deterministically() -> None:
    body = access_data()["body"] | {
        "predicate": {"name": "insured_months_at_least", "parameters": {"z": 1, "a": 2}}
    }
    entry = access_entry(body=body)
    other = access_entry(
        body=body | {"predicate": {"name": "insured_months_at_least", "parameters": {"a": 2, "z": 1}}}
    )
    assert encode(entry) == encode(other)
    assert decode(encode(entry)) == entry
    assert hash(entry) == hash(other) and entry == other  # entries hash, predicates included


def test_subject_ids_are_normalised() -> None:
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in PERSON_ID)
    assert access_entry(subject={"kind": "person", "id": fullwidth}).subject == Subject(
        kind=SubjectKind.PERSON, id=PERSON_ID
    )
    legacy = make_resident_id("120116", date(1965, 5, 5), 7)
    legacy15 = legacy[:6] + legacy[8:17]
    assert Subject(kind=SubjectKind.PERSON, id=legacy15).id == legacy
    assert Subject(kind=SubjectKind.EMPLOYER, id=EMPLOYER_ID.lower()).id == EMPLOYER_ID


def test_repr_masks_the_identifier() -> None:
    entry = access_entry()
    assert PERSON_ID not in repr(entry)
    assert PERSON_ID not in str(entry)
    assert "***" + PERSON_ID[-2:] in repr(entry.subject)


# --- validation ---------------------------------------------------------------------------------


def test_unknown_agency_is_refused_clearly() -> None:
    with pytest.raises(ValidationError) as info:
        access_entry(caller="police")
    text = str(info.value)
    assert "caller" in text and "'hrss'" in text and "'tax'" in text
    assert "police" not in text  # inputs are never echoed
    with pytest.raises(ValidationError, match=r"body\.access\.provider"):
        access_entry(body=access_data()["body"] | {"provider": "nowhere"})


def test_bad_subject_id_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as info:
        access_entry(subject={"kind": "person", "id": BAD_PERSON_ID})
    text = str(info.value)
    assert "subject.id" in text and "invalid identity number" in text and "check character" in text
    assert BAD_PERSON_ID not in text
    with pytest.raises(ValidationError, match="invalid credit code"):
        access_entry(subject={"kind": "employer", "id": EMPLOYER_ID[:-1] + "0"})
    with pytest.raises(ValidationError, match="kind"):
        access_entry(subject={"kind": "alien", "id": PERSON_ID})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"time": datetime(2026, 11, 3, 12, 0)}, "timezone"),
        ({"caller": None}, "needs a caller"),
        ({"subject": None}, "needs a subject and a purpose"),
        ({"purpose": "Free text purpose"}, "purpose"),
        ({"node": ""}, "node"),
        ({"operator": "a\nb"}, "operator"),
        ({"extra": 1}, "extra"),
    ],
)
def test_header_rules(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        access_entry(**overrides)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"decision": "denied"}, "denied access needs a reason"),
        ({"decision": "denied", "reason": "CONSENT_REVOKED"}, "outcome none"),
        ({"outcome": {"kind": "none"}}, "needs an outcome"),
        ({"outcome": {"kind": "failed"}}, "failed access needs a reason"),
        ({"reason": "CONSENT_REVOKED"}, "has no reason"),
        ({"outcome": {"kind": "found", "count": 3}}, "no count"),
        ({"legal_basis": {"kind": "consent"}}, "needs a reference"),
        ({"legal_basis": {"kind": "none", "reference": "x"}}, "has no reference"),
        ({"fields": ["Name With Spaces"]}, "fields"),
        ({"reason": "not a code", "decision": "denied", "outcome": {"kind": "none"}}, "reason"),
    ],
)
def test_access_rules(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        access_entry(body=access_data()["body"] | body)


def test_denied_access_may_lack_subject_and_purpose() -> None:
    body = access_data()["body"] | {
        "decision": "denied",
        "reason": "INVALID_IDENTITY_NUMBER",
        "outcome": {"kind": "none"},
    }
    entry = access_entry(subject=None, purpose=None, body=body)
    assert decode(encode(entry)) == entry
    assert "subject" not in index_terms(entry)


def test_consent_and_push_need_a_subject() -> None:
    with pytest.raises(ValidationError, match="consent_change entry needs a subject"):
        AuditEntry(time=WHEN, node="n", body=ConsentChange(consent_id="c", action=ConsentAction.GRANTED))
    with pytest.raises(ValidationError, match="suppressed notification needs a reason"):
        PushNotification(policy_id="p", channel="sms", notification_id="n", outcome=PushOutcome.SUPPRESSED)


def test_models_are_frozen() -> None:
    entry = access_entry()
    with pytest.raises(ValidationError):
        entry.node = "other"


# --- decoding untrusted payloads ----------------------------------------------------------------


def test_garbage_payload_is_invalid_entry() -> None:
    with pytest.raises(InvalidEntry, match="not a serialised"):
        decode(b"\xff\xff\xff")
    with pytest.raises(InvalidEntry, match="time: missing"):
        decode(b"")
    assert issubclass(InvalidEntry, AuditError)


def test_unknown_fields_are_refused() -> None:
    payload = encode(access_entry()) + bytes([0x98, 0x06, 0x01])  # field 99, varint 1
    assert decode_proto(payload).node == "gw-1"
    with pytest.raises(InvalidEntry, match="unknown fields"):
        decode(payload)
    message = access_entry().to_proto()
    nested = audit_pb2.AccessOutcome.FromString(bytes([0x08, 0x01, 0x18, 0x05]))  # unknown field 3
    message.access.outcome.CopyFrom(nested)
    with pytest.raises(InvalidEntry, match="unknown fields"):
        from_proto(message)
    assert message.access.outcome.ByteSize() == 4  # from_proto did not modify the caller's message


def test_invalid_proto_values_are_refused_without_echoing() -> None:
    message = access_entry().to_proto()
    message.subject.id = BAD_PERSON_ID
    with pytest.raises(InvalidEntry) as info:
        from_proto(message)
    assert "subject.id" in str(info.value) and BAD_PERSON_ID not in str(info.value)
    message = access_entry().to_proto()
    message.caller = common_pb2.AGENCY_CODE_PUBLIC_SECURITY  # not (yet) an agency of the contract
    with pytest.raises(InvalidEntry, match="caller: unknown or unspecified"):
        from_proto(message)
    message = access_entry().to_proto()
    message.access.decision = audit_pb2.AUDIT_DECISION_UNSPECIFIED
    with pytest.raises(InvalidEntry, match="decision"):
        from_proto(message)
    message.ClearField("access")
    with pytest.raises(InvalidEntry, match="body: missing"):
        from_proto(message)
