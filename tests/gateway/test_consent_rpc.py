"""ConsentService over real loopback gRPC (Grant, Revoke, Get, ListBySubject, Check): signed
receipts the CLI verifies, refusals that store nothing, audit entries of every change; and
BatchVerify streams with per-item outcomes, consent checks per item and replayed item ids."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from adapters.agencies import Agency
from audit.entry import AuditEntry
from dsgw.v1 import consent_pb2
from gateway.client import GatewayError
from gateway.consent.decision import DenyReason
from gateway.devsetup import DevHome
from gateway.pipeline.consent import DENY_REASONS
from gateway.server.status import error_info_of
from gateway.server.wire import agency_to_wire, timestamp_to
from tests.gateway.conftest import (
    Gateway,
    Subjects,
    consent_stub,
    entries_of,
    grant,
    grant_request,
    read_audit,
    revoke,
    run_cli,
    subject_ref,
)

GRAD = ("education", "graduation")
INSURANCE = ("hrss", "person_insurance")


def _reason(exc: grpc.RpcError) -> tuple[str, str]:
    error = GatewayError.of(exc)
    return error.code, error.reason


@pytest.fixture(scope="module")
def changes() -> list[tuple[str, str]]:
    """(consent id, action) of the consent changes this module's tests made, in order."""
    return []


@pytest.fixture(scope="module")
def batches() -> dict[str, str]:
    """Request ids of this module's BatchVerify streams, by test."""
    return {}


# --- Grant, Get, ListBySubject, Check, Revoke ------------------------------------------------


def test_grant_get_list_check_revoke(
    gateway: Gateway, subjects: Subjects, tmp_path: Path, changes: list[tuple[str, str]]
) -> None:
    subject = subjects.graduates[0][0]
    stub = consent_stub(gateway, "hrss")
    resp = grant(gateway, "hrss", subject, [(*GRAD, ["level", "graduation_date"])], ["graduate_employment"])
    consent = resp.consent
    changes.append((consent.consent_id, "granted"))
    assert consent.consent_id.startswith("cns-")
    assert consent.status == "granted"
    assert consent.subject.id == subject
    assert list(consent.consumers) == [agency_to_wire(Agency.HRSS)]  # empty: the caller
    assert [(s.dataset, set(s.fields)) for s in consent.scope] == [
        ("graduation", {"level", "graduation_date"})
    ]

    # the signed receipt verifies with the home's receipt key; an altered copy does not
    receipt = json.loads(resp.receipt_json)
    assert receipt["payload"]["consent"]["consent_id"] == consent.consent_id
    good = tmp_path / "receipt.json"
    good.write_bytes(resp.receipt_json)
    code, out, err = run_cli("consent", "verify-receipt", str(good), "--home", str(gateway.home), "--json")
    assert code == 0, err
    assert json.loads(out)["valid"] is True and json.loads(out)["action"] == "granted"
    receipt["payload"]["consent"]["consumers"] = ["tax"]
    bad = tmp_path / "altered.json"
    bad.write_text(json.dumps(receipt))
    assert run_cli("consent", "verify-receipt", str(bad), "--home", str(gateway.home))[0] == 1

    got = stub.Get(consent_pb2.GetConsentRequest(consent_id=consent.consent_id), timeout=5)
    assert got.consent_id == consent.consent_id and got.status == "granted"
    assert [h.status for h in got.history] == ["granted"]
    # another agency does not see it
    with pytest.raises(grpc.RpcError) as other:
        consent_stub(gateway, "tax").Get(
            consent_pb2.GetConsentRequest(consent_id=consent.consent_id), timeout=5
        )
    assert _reason(other.value) == ("NOT_FOUND", "CONSENT_NOT_FOUND")

    listed = stub.ListBySubject(consent_pb2.ListConsentsRequest(subject=subject_ref(subject)), timeout=5)
    assert [c.consent_id for c in listed.consents] == [consent.consent_id]

    def check(fields: list[str], purpose: str = "graduate_employment") -> consent_pb2.CheckConsentResponse:
        resp: consent_pb2.CheckConsentResponse = stub.Check(
            consent_pb2.CheckConsentRequest(
                subject=subject_ref(subject),
                provider=agency_to_wire(Agency.EDUCATION),
                dataset="graduation",
                fields=fields,
                purpose=purpose,
            ),
            timeout=5,
        )
        return resp

    ok = check(["level"])
    assert ok.allowed and ok.basis == "consent" and list(ok.consent_ids) == [consent.consent_id]
    out_of_scope = check(["level", "school_name"])
    # the reasons are ErrorReason names, as Query gives them (not the decision's own names)
    assert not out_of_scope.allowed and out_of_scope.reason == "CONSENT_FIELD_OUT_OF_SCOPE"
    assert out_of_scope.field == "school_name"
    assert check(["level"], "employment_subsidy_review").reason == "CONSENT_PURPOSE_MISMATCH"

    revoked = revoke(gateway, "hrss", consent.consent_id, subject)
    changes.append((consent.consent_id, "revoked"))
    assert revoked.consent.status == "revoked"
    assert [h.status for h in revoked.consent.history] == ["granted", "revoked"]
    rev_file = tmp_path / "revoked.json"
    rev_file.write_bytes(revoked.receipt_json)
    code, out, err = run_cli(
        "consent", "verify-receipt", str(rev_file), "--home", str(gateway.home), "--json"
    )
    assert code == 0 and json.loads(out)["action"] == "revoked", err
    after = check(["level"])
    assert not after.allowed and after.reason == "CONSENT_REVOKED"
    listed = stub.ListBySubject(
        consent_pb2.ListConsentsRequest(subject=subject_ref(subject), status="revoked"), timeout=5
    )
    assert [c.consent_id for c in listed.consents] == [consent.consent_id]
    # another agency is shown none of the consents that do not name it
    others = consent_stub(gateway, "tax").ListBySubject(
        consent_pb2.ListConsentsRequest(subject=subject_ref(subject)), timeout=5
    )
    assert list(others.consents) == []

    # revoking twice is refused as a precondition, not an internal error
    with pytest.raises(grpc.RpcError) as again:
        revoke(gateway, "hrss", consent.consent_id, subject)
    assert _reason(again.value) == ("FAILED_PRECONDITION", "CONSENT_NOT_ACTIVE")
    # a consent of another subject is not found
    with pytest.raises(grpc.RpcError) as wrong:
        revoke(gateway, "hrss", consent.consent_id, subjects.graduates[1][0])
    assert _reason(wrong.value) == ("NOT_FOUND", "CONSENT_NOT_FOUND")


def test_check_is_for_the_callers_own_consents(gateway: Gateway, subjects: Subjects) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        consent_stub(gateway, "tax").Check(
            consent_pb2.CheckConsentRequest(
                subject=subject_ref(subjects.graduates[0][0]),
                consumer=agency_to_wire(Agency.HRSS),
                provider=agency_to_wire(Agency.EDUCATION),
                dataset="graduation",
                purpose="graduate_employment",
            ),
            timeout=5,
        )
    assert exc.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_check_needs_an_agreement_for_the_dataset(gateway: Gateway, subjects: Subjects) -> None:
    """Without one, Check would tell an agency whether a subject consented to share a dataset
    with others (a subsistence-assistance record, say)."""

    def check(dataset: str) -> tuple[str, str]:
        with pytest.raises(grpc.RpcError) as exc:
            consent_stub(gateway, "tax").Check(
                consent_pb2.CheckConsentRequest(
                    subject=subject_ref(subjects.assisted[0]),
                    provider=agency_to_wire(Agency.CIVIL_AFFAIRS),
                    dataset=dataset,
                    purpose="employment_assistance",
                ),
                timeout=5,
            )
        return _reason(exc.value)

    assert check("assistance") == ("PERMISSION_DENIED", "NO_AGREEMENT")
    assert check("no_such_dataset") == ("INVALID_ARGUMENT", "UNKNOWN_DATASET")


def test_grant_with_a_request_id_is_idempotent(
    gateway: Gateway, subjects: Subjects, changes: list[tuple[str, str]]
) -> None:
    subject = subjects.graduates[2][0]
    rid = f"grant-{uuid.uuid4().hex}"
    stub = consent_stub(gateway, "hrss")
    request = grant_request(subject, [(*GRAD, [])], ["graduate_employment"], request_id=rid)
    first = stub.Grant(request, timeout=5)
    second = stub.Grant(request, timeout=5)  # a retry: the same request again
    changes.append((first.consent.consent_id, "granted"))
    assert first.consent.consent_id == second.consent.consent_id
    assert first.consent.history[0].recorded_at == second.consent.history[0].recorded_at
    assert first.receipt_json == second.receipt_json
    listed = stub.ListBySubject(consent_pb2.ListConsentsRequest(subject=subject_ref(subject)), timeout=5)
    assert len(listed.consents) == 1
    # the same request id for a different grant is refused, and stores nothing
    other = grant_request(subject, [(*GRAD, [])], ["employment_subsidy_review"], request_id=rid)
    with pytest.raises(grpc.RpcError) as exc:
        stub.Grant(other, timeout=5)
    assert exc.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert error_info_of(exc.value)[0] == "REQUEST_ID_CONFLICT"
    listed = stub.ListBySubject(consent_pb2.ListConsentsRequest(subject=subject_ref(subject)), timeout=5)
    assert len(listed.consents) == 1


def test_a_client_retry_with_valid_days_is_the_same_grant(
    gateway: Gateway, subjects: Subjects, changes: list[tuple[str, str]]
) -> None:
    """The days run from the gateway's first recording of the grant: a retry sent later with the
    same request id is the same grant (a client-computed valid_to would differ and conflict)."""
    subject = subjects.graduates[11][0]  # no other test's subject
    client = gateway.client("hrss")
    rid = f"grant-{uuid.uuid4().hex}"
    ask = {
        "valid_days": 30,
        "channel": "counter",
        "evidence_ref": "form-days",
        "notice_version": "v1",
        "request_id": rid,
    }
    first, receipt = client.grant_consent(subject, [(*GRAD, ["level"])], ["graduate_employment"], **ask)
    time.sleep(1.1)  # a retry a second later: timestamps have whole-second precision or better
    second, again = client.grant_consent(subject, [(*GRAD, ["level"])], ["graduate_employment"], **ask)
    changes.append((first.consent_id, "granted"))
    assert second.consent_id == first.consent_id
    assert second.valid_to == first.valid_to
    assert again == receipt
    span = first.valid_to.ToDatetime() - first.valid_from.ToDatetime()
    assert span == dt.timedelta(days=30)
    with pytest.raises(GatewayError) as exc:  # the same id for other days is another grant
        client.grant_consent(
            subject, [(*GRAD, ["level"])], ["graduate_employment"], **{**ask, "valid_days": 31}
        )
    assert exc.value.reason == "REQUEST_ID_CONFLICT"
    stub = consent_stub(gateway, "hrss")
    both = grant_request(subject, [(*GRAD, [])], ["graduate_employment"])
    both.valid_days = 30
    too_long = grant_request(subject, [(*GRAD, [])], ["graduate_employment"])
    too_long.ClearField("valid_to")
    too_long.valid_days = 36_526
    neither = grant_request(subject, [(*GRAD, [])], ["graduate_employment"])
    neither.ClearField("valid_to")
    for request in (both, too_long, neither):
        with pytest.raises(grpc.RpcError) as rpc:
            stub.Grant(request, timeout=5)
        assert rpc.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert error_info_of(rpc.value)[0] == "INVALID_VALIDITY"
    with pytest.raises(ValueError, match="exactly one"):
        client.grant_consent(subject, [(*GRAD, [])], ["graduate_employment"], **{**ask, "valid_days": None})


@pytest.mark.parametrize(
    ("subject_of", "purposes", "reason"),
    [
        (lambda s: s, ["no_such_purpose"], "UNKNOWN_PURPOSE"),
        (
            lambda s: s[:-1] + ("0" if s[-1] != "0" else "1"),
            ["graduate_employment"],
            "INVALID_IDENTITY_NUMBER",
        ),
        (lambda s: s[:10], ["graduate_employment"], "INVALID_IDENTITY_NUMBER"),
    ],
    ids=["bad-purpose", "bad-check-character", "too-short"],
)
def test_invalid_grant_is_refused_and_stores_nothing(
    gateway: Gateway, subjects: Subjects, subject_of: object, purposes: list[str], reason: str
) -> None:
    from gateway.consent.store import ConsentStore

    valid = subjects.graduates[3][0]
    store = ConsentStore(gateway.config.consent_store_url(), create=False)
    try:
        before = store.count()
    finally:
        store.close()
    subject = subject_of(valid)  # type: ignore[operator]
    with pytest.raises(grpc.RpcError) as exc:
        grant(gateway, "hrss", subject, [(*GRAD, [])], purposes)
    assert _reason(exc.value) == ("INVALID_ARGUMENT", reason)
    assert valid not in (exc.value.details() or "")
    store = ConsentStore(gateway.config.consent_store_url(), create=False)
    try:
        assert store.count() == before
    finally:
        store.close()


def test_grant_without_validity_end_is_refused(gateway: Gateway, subjects: Subjects) -> None:
    req = grant_request(subjects.graduates[3][0], [(*GRAD, [])], ["graduate_employment"])
    req.ClearField("valid_to")
    with pytest.raises(grpc.RpcError) as exc:
        consent_stub(gateway, "hrss").Grant(req, timeout=5)
    assert _reason(exc.value) == ("INVALID_ARGUMENT", "INVALID_VALIDITY")


def test_revoke_is_for_the_consents_consumers(
    gateway: Gateway, subjects: Subjects, changes: list[tuple[str, str]]
) -> None:
    """An agency revokes only the consents it may Get (those naming it as a consumer): another
    consent is NOT_FOUND, word for word as an id that does not exist, and is not changed."""
    subject = subjects.graduates[4][0]  # no other test's subject in this module
    mine = grant(gateway, "hrss", subject, [(*GRAD, ["level"])], ["graduate_employment"]).consent
    changes.append((mine.consent_id, "granted"))
    # recorded by hrss for education: hrss is not a consumer of it
    for_education = grant(
        gateway, "hrss", subject, [(*GRAD, [])], ["graduate_employment"], consumers=["education"]
    ).consent
    changes.append((for_education.consent_id, "granted"))

    def refused(agency: str, consent_id: str) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as exc:
            revoke(gateway, agency, consent_id, subject)
        assert _reason(exc.value) == ("NOT_FOUND", "CONSENT_NOT_FOUND")
        return exc.value

    missing = "cns-" + "0" * 32
    for agency, consent_id in (("education", mine.consent_id), ("hrss", for_education.consent_id)):
        error = refused(agency, consent_id)
        with pytest.raises(grpc.RpcError) as get:
            consent_stub(gateway, agency).Get(consent_pb2.GetConsentRequest(consent_id=consent_id), timeout=5)
        assert error.details() == get.value.details()  # the same answer as Get
        unknown = refused(agency, missing)
        assert error.details() == (unknown.details() or "").replace(missing, consent_id)
        assert error.trailing_metadata() is not None
        assert b"graduate_employment" not in b"".join(
            v if isinstance(v, bytes) else v.encode() for _, v in error.trailing_metadata() or ()
        )
    # nothing changed: both are still granted, with their one event
    for agency, consent in (("hrss", mine), ("education", for_education)):
        got = consent_stub(gateway, agency).Get(
            consent_pb2.GetConsentRequest(consent_id=consent.consent_id), timeout=5
        )
        assert got.status == "granted" and [h.status for h in got.history] == ["granted"]
    # each consumer revokes its own
    for agency, consent in (("hrss", mine), ("education", for_education)):
        revoked = revoke(gateway, agency, consent.consent_id, subject)
        changes.append((consent.consent_id, "revoked"))
        assert revoked.consent.status == "revoked"


def _grant_with(subject: str, **validity: object) -> consent_pb2.GrantConsentRequest:
    req = grant_request(subject, [(*GRAD, [])], ["graduate_employment"])
    req.ClearField("valid_to")
    for name, value in validity.items():
        if isinstance(value, int):
            setattr(req, name, value)
        else:
            getattr(req, name).CopyFrom(value)
    return req


_Y9999 = int(dt.datetime(9999, 12, 31, tzinfo=dt.UTC).timestamp())


@pytest.mark.parametrize(
    "validity",
    [
        {"valid_to": Timestamp(seconds=2_534_023_008_000)},
        {"valid_to": Timestamp(seconds=-(10**12))},
        {"valid_to": Timestamp(seconds=int(time.time()) + 86_400, nanos=2 * 10**9)},
        {"valid_to": Timestamp(seconds=int(time.time()) + 86_400, nanos=-1)},
        {"valid_from": Timestamp(seconds=-(10**12)), "valid_days": 3},
        {"valid_from": Timestamp(seconds=_Y9999), "valid_days": 30},
        {"valid_to": Timestamp(seconds=int(time.time()) + 36_526 * 86_400)},
        {
            "valid_from": Timestamp(seconds=int(time.time())),
            "valid_to": Timestamp(seconds=int(time.time()) + 36_525 * 86_400 + 1),
        },
    ],
    ids=[
        "to-after-9999",
        "to-before-0001",
        "to-nanos-too-big",
        "to-nanos-negative",
        "from-before-0001",
        "from-9999-plus-days",
        "to-more-than-36525-days-from-now",
        "to-more-than-36525-days-from-from",
    ],
)
def test_grant_with_an_out_of_range_validity_is_invalid_validity(
    gateway: Gateway, subjects: Subjects, validity: dict[str, object]
) -> None:
    subject = subjects.graduates[5][0]
    stub = consent_stub(gateway, "hrss")
    with pytest.raises(grpc.RpcError) as exc:
        stub.Grant(_grant_with(subject, **validity), timeout=5)
    assert _reason(exc.value) == ("INVALID_ARGUMENT", "INVALID_VALIDITY")
    details = exc.value.details() or ""
    assert "\n" not in details and 0 < len(details) < 120
    listed = stub.ListBySubject(consent_pb2.ListConsentsRequest(subject=subject_ref(subject)), timeout=5)
    assert list(listed.consents) == []


def test_valid_to_and_valid_days_have_the_same_bound(
    gateway: Gateway, subjects: Subjects, changes: list[tuple[str, str]]
) -> None:
    subject = subjects.graduates[6][0]
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=1)
    longest = _grant_with(
        subject,
        valid_from=timestamp_to(start),
        valid_to=timestamp_to(start + dt.timedelta(days=36_525)),
    )
    consent = consent_stub(gateway, "hrss").Grant(longest, timeout=5).consent
    changes.append((consent.consent_id, "granted"))
    assert consent.valid_to.ToDatetime(tzinfo=dt.UTC) - consent.valid_from.ToDatetime(
        tzinfo=dt.UTC
    ) == dt.timedelta(days=36_525)


@pytest.mark.parametrize("method", ["Get", "Revoke"])
@pytest.mark.parametrize(
    "consent_id",
    ["x" * 1_000_000, "c" * 65, "", "-cns", "cns 1", "cns/1", "cns-\u00e9", "cns-1\n"],
    ids=["million", "65-chars", "empty", "dash-first", "space", "slash", "non-ascii", "trailing-newline"],
)
def test_malformed_consent_ids_are_refused_without_echo(
    gateway: Gateway, subjects: Subjects, method: str, consent_id: str
) -> None:
    stub = consent_stub(gateway, "hrss")
    with pytest.raises(grpc.RpcError) as exc:
        if method == "Get":
            stub.Get(consent_pb2.GetConsentRequest(consent_id=consent_id), timeout=5)
        else:
            stub.Revoke(
                consent_pb2.RevokeConsentRequest(
                    consent_id=consent_id, subject=subject_ref(subjects.graduates[7][0]), channel="counter"
                ),
                timeout=5,
            )
    assert _reason(exc.value) == ("INVALID_ARGUMENT", "INVALID_REQUEST")  # with its ErrorInfo
    details = exc.value.details() or ""
    assert len(details) < 120 and (not consent_id or consent_id not in details)


@pytest.mark.parametrize(
    "request_id",
    ["r" * 129, "r" * 1_000_000, "-grant", "grant 1", "grant\n1", "grant-1\n", "grant-\u00e9", "grant,1"],
)
def test_grant_request_ids_follow_the_request_meta_rule(
    gateway: Gateway, subjects: Subjects, request_id: str
) -> None:
    subject = subjects.graduates[8][0]
    stub = consent_stub(gateway, "hrss")
    request = grant_request(subject, [(*GRAD, [])], ["graduate_employment"], request_id=request_id)
    with pytest.raises(grpc.RpcError) as exc:
        stub.Grant(request, timeout=5)
    assert _reason(exc.value) == ("INVALID_ARGUMENT", "INVALID_REQUEST")
    assert len(exc.value.details() or "") < 160
    listed = stub.ListBySubject(consent_pb2.ListConsentsRequest(subject=subject_ref(subject)), timeout=5)
    assert list(listed.consents) == []


def test_grant_request_id_of_128_allowed_characters_is_accepted(
    gateway: Gateway, subjects: Subjects, changes: list[tuple[str, str]]
) -> None:
    rid = ("G0._:@/+=-" + uuid.uuid4().hex * 4)[:128]
    resp = grant(
        gateway, "hrss", subjects.graduates[9][0], [(*GRAD, [])], ["graduate_employment"], request_id=rid
    )
    changes.append((resp.consent.consent_id, "granted"))


def test_check_reasons_are_the_error_reasons_query_gives(
    gateway: Gateway, subjects: Subjects, changes: list[tuple[str, str]]
) -> None:
    """Check answers a denial with the ErrorReason Query refuses the same request with."""
    subject = subjects.graduates[10][0]
    client = gateway.client("hrss")
    stub = consent_stub(gateway, "hrss")

    def both(fields: list[str]) -> tuple[str, str]:
        check = stub.Check(
            consent_pb2.CheckConsentRequest(
                subject=subject_ref(subject),
                provider=agency_to_wire(Agency.EDUCATION),
                dataset="graduation",
                fields=fields,
                purpose="graduate_employment",
            ),
            timeout=5,
        )
        assert not check.allowed
        with pytest.raises(GatewayError) as query:
            client.query(subject, "graduate_employment", [(*GRAD, fields)])
        assert query.value.code == "PERMISSION_DENIED"
        return check.reason, query.value.reason

    assert both(["level"]) == ("CONSENT_MISSING", "CONSENT_MISSING")
    consent = grant(gateway, "hrss", subject, [(*GRAD, ["level"])], ["graduate_employment"]).consent
    changes.append((consent.consent_id, "granted"))
    reason = DENY_REASONS[DenyReason.FIELD_OUT_OF_SCOPE]
    assert both(["level", "school_name"]) == (reason, reason)
    revoke(gateway, "hrss", consent.consent_id, subject)
    changes.append((consent.consent_id, "revoked"))
    assert both(["level"]) == ("CONSENT_REVOKED", "CONSENT_REVOKED")


# --- BatchVerify -------------------------------------------------------------------------------


def _broken(number: str) -> str:
    return number[:-1] + ("0" if number[-1] != "0" else "1")


def test_batch_verify_answers_each_item_in_order(gateway: Gateway, subjects: Subjects) -> None:
    client = gateway.client("hrss")
    persons = subjects.assisted[:4] + subjects.unknown[:1]
    items = []
    expected = []
    for i, p in enumerate(persons):
        items.append((f"ok-{i}", p))
        expected.append(
            (f"ok-{i}", subjects.answers[("civil_affairs", "receives_subsistence_allowance", p)], "")
        )
        items.append((f"bad-{i}", _broken(p)))
        expected.append((f"bad-{i}", None, "INVALID_IDENTITY_NUMBER"))
    items.append(("empty-ish", "12345"))
    expected.append(("empty-ish", None, "INVALID_IDENTITY_NUMBER"))
    got = list(
        client.batch_verify(
            items, "employment_assistance", "civil_affairs", "receives_subsistence_allowance", chunk=3
        )
    )
    assert [(r.item_id, r.result, r.error_reason) for r in got] == expected
    assert any(r.result is True for r in got)


def test_batch_verify_with_consent_basis_and_replayed_items(
    gateway: Gateway, subjects: Subjects, changes: list[tuple[str, str]], batches: dict[str, str]
) -> None:
    """education -> hrss.currently_insured needs each subject's consent; a re-sent item id on the
    same request id is answered from memory (and not audited again)."""
    insured = subjects.insured[:6]
    with_consent = insured[:3]
    for p in with_consent:
        resp = grant(gateway, "education", p, [(*INSURANCE, [])], ["graduate_employment"])
        changes.append((resp.consent.consent_id, "granted"))
    client = gateway.client("education")
    rid = f"batch-{uuid.uuid4().hex}"
    items = [(f"item-{i}", p) for i, p in enumerate(insured)]
    first = list(
        client.batch_verify(
            items, "graduate_employment", "hrss", "currently_insured", request_id=rid, chunk=2
        )
    )
    expected = [
        (f"item-{i}", subjects.answers[("hrss", "currently_insured", p)] if p in with_consent else None,
         "" if p in with_consent else "CONSENT_MISSING")
        for i, p in enumerate(insured)
    ]  # fmt: skip
    assert [(r.item_id, r.result, r.error_reason) for r in first] == expected

    again = list(
        client.batch_verify(items[:4], "graduate_employment", "hrss", "currently_insured", request_id=rid)
    )
    assert again == first[:4]
    batches["replayed"] = rid


def test_batch_verify_header_refusals_end_the_stream(gateway: Gateway, subjects: Subjects) -> None:
    client = gateway.client("tax")
    with pytest.raises(GatewayError) as exc:
        list(
            client.batch_verify(
                [("a", subjects.insured[0])], "graduate_employment", "hrss", "currently_insured"
            )
        )
    assert (exc.value.code, exc.value.reason) == ("PERMISSION_DENIED", "NO_AGREEMENT")
    with pytest.raises(GatewayError) as exc:
        list(
            gateway.client("hrss").batch_verify(
                [("a", subjects.assisted[0])], "no_such_purpose", "civil_affairs", "near_subsistence"
            )
        )
    assert (exc.value.code, exc.value.reason) == ("INVALID_ARGUMENT", "UNKNOWN_PURPOSE")


# --- the audit trail (stops the gateway: keep last) --------------------------------------------


@pytest.fixture(scope="module")
def audit_entries(gateway: Gateway) -> list[AuditEntry]:
    gateway.stop()
    return read_audit(gateway.home, [gateway.audit_dir])


def test_consent_changes_are_audited(audit_entries: list[AuditEntry], changes: list[tuple[str, str]]) -> None:
    found = [
        (e.body.consent_id, e.body.action.value) for e in audit_entries if e.body.kind == "consent_change"
    ]
    assert changes, "run with the tests above"
    # each successful change once (the idempotent re-grant and the refusals add nothing)
    assert sorted(found) == sorted(changes)
    entry = next(e for e in audit_entries if e.body.kind == "consent_change")
    assert entry.subject is not None and entry.body.purposes == ("graduate_employment",)
    # every change here was made over gRPC: the entry names the agency that made it
    makers = {e.caller for e in audit_entries if e.body.kind == "consent_change"}
    assert None not in makers and Agency.HRSS in makers


def test_replayed_batch_items_are_audited_once(
    batches: dict[str, str], audit_entries: list[AuditEntry]
) -> None:
    rid = batches.get("replayed")
    if rid is None:
        pytest.skip("run with test_batch_verify_with_consent_basis_and_replayed_items")
    batch = entries_of(audit_entries, rid)
    assert len(batch) == 6
    reasons = sorted(e.body.reason for e in batch)
    assert reasons == ["", "", "", "CONSENT_MISSING", "CONSENT_MISSING", "CONSENT_MISSING"]


def test_audit_log_verifies(gateway: Gateway, audit_entries: list[AuditEntry]) -> None:
    code, out, err = run_cli("audit", "verify", "--log", str(gateway.audit_dir))
    assert code == 0, err + out


def test_a_gateway_keeps_its_consents_in_the_configured_postgresql_schema(
    dev_home: DevHome, subjects: Subjects, tmp_path: Path, pg_url: str
) -> None:
    """consent.store_schema: the gateway and ``dsgw consent --store-schema`` share one store."""
    import sqlalchemy

    from gateway.config import load_config
    from gateway.server.app import BackgroundGateway
    from tests.gateway.conftest import write_gateway_config

    schema = f"gwconsent_{uuid.uuid4().hex[:10]}"
    path = write_gateway_config(
        dev_home, tmp_path / "home", extra={"consent": {"store": pg_url, "store_schema": schema}}
    )
    config = load_config(path)
    subject = subjects.graduates[9][0]
    try:
        with BackgroundGateway(config) as gw:
            ca, cert, key = dev_home.agency_credentials("hrss")
            from gateway.client import GatewayClient

            with GatewayClient(f"127.0.0.1:{gw.port}", ca=ca, cert=cert, key=key) as client:
                consent, _ = client.grant_consent(
                    subject,
                    [(*GRAD, [])],
                    ["graduate_employment"],
                    valid_days=30,
                    channel="app",
                    evidence_ref="APP-SCHEMA",
                    notice_version="v1",
                )
        code, out, _err = run_cli(
            "consent", "list", "--store", pg_url, "--store-schema", schema, "--subject", subject, "--json"
        )
        assert code == 0 and consent.consent_id in out
    finally:
        engine = sqlalchemy.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()
