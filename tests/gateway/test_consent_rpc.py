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

from adapters.agencies import Agency
from audit.entry import AuditEntry
from dsgw.v1 import consent_pb2
from gateway.client import GatewayError
from gateway.server.status import error_info_of
from gateway.server.wire import agency_to_wire
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
    assert not out_of_scope.allowed and out_of_scope.reason == "FIELD_OUT_OF_SCOPE"
    assert out_of_scope.field == "school_name"
    assert check(["level"], "employment_subsidy_review").reason == "PURPOSE_MISMATCH"

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
