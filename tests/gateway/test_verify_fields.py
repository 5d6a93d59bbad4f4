"""A comparison (Verify, BatchVerify) under a consent-based agreement needs a consent to the
fields its predicate reads, not to every field of the dataset: the gateway answers yes or no
from those fields only. ListCatalogue tells the caller which fields each predicate reads, and
ConsentService.Check with a predicate answers what a comparison by it would get."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import pytest

from adapters.agencies import Agency
from dsgw.v1 import consent_pb2
from gateway.client import GatewayError
from gateway.server.wire import agency_to_wire
from tests.gateway.conftest import (
    Gateway,
    Subjects,
    client_grant,
    consent_stub,
    entries_of,
    read_audit,
    subject_ref,
)

PURPOSE = "graduate_employment"


def _grant(gw: Gateway, subject: str, fields: list[str]) -> str:
    return client_grant(gw.client("hrss"), subject, [("education", "graduation", fields)], [PURPOSE])


def test_a_consent_to_the_fields_a_predicate_reads_is_enough(gateway: Gateway, subjects: Subjects) -> None:
    subject, _ = subjects.graduates[8]
    _grant(gateway, subject, ["graduation_date"])
    client = gateway.client("hrss")
    answer = client.verify(subject, PURPOSE, "education", "graduated_within_years", {"years": 80})
    assert answer.result is True and answer.legal_basis.startswith("consent:")
    # another predicate of the dataset reads level, which this consent does not cover
    with pytest.raises(GatewayError) as exc:
        client.verify(subject, PURPOSE, "education", "degree_at_least", {"rank": 1})
    assert (exc.value.code, exc.value.reason) == ("PERMISSION_DENIED", "CONSENT_FIELD_OUT_OF_SCOPE")
    assert "field level" in exc.value.message


def test_batch_verify_needs_the_same_fields(gateway: Gateway, subjects: Subjects) -> None:
    covered, _ = subjects.graduates[9]
    other, _ = subjects.graduates[10]
    _grant(gateway, covered, ["level"])
    _grant(gateway, other, ["school_name"])  # a consent to the dataset, not to the field read
    results = list(
        gateway.client("hrss").batch_verify(
            [("a", covered), ("b", other)], PURPOSE, "education", "degree_at_least", {"rank": 1}
        )
    )
    assert [(r.item_id, r.result, r.error_reason) for r in results] == [
        ("a", True, ""),
        ("b", None, "CONSENT_FIELD_OUT_OF_SCOPE"),
    ]


def _entries(gw: Gateway, request_id: str) -> list[Any]:
    log = gw.background.worker.audit
    assert log is not None and log.flush_index(timeout=30)
    return entries_of(read_audit(gw.home, [gw.audit_dir]), request_id)


def test_comparison_entries_name_the_fields_the_predicate_read(gateway: Gateway, subjects: Subjects) -> None:
    """A comparison's audit entry lists the fields its yes/no rests on (none of them disclosed):
    allowed, refused, and each BatchVerify item alike."""
    subject, _ = subjects.graduates[12]
    other, _ = subjects.graduates[13]
    _grant(gateway, subject, ["graduation_date"])
    client = gateway.client("hrss")
    client.verify(subject, PURPOSE, "education", "graduated_within_years", {"years": 80}, request_id="vf-1")
    with pytest.raises(GatewayError):
        client.verify(subject, PURPOSE, "education", "degree_at_least", {"rank": 1}, request_id="vf-2")
    list(
        client.batch_verify(
            [("a", subject), ("b", other)],
            PURPOSE,
            "education",
            "graduated_within_years",
            {"years": 80},
            request_id="vf-3",
        )
    )
    (allowed,) = _entries(gateway, "vf-1")
    assert allowed.body.decision.value == "allowed" and list(allowed.body.fields) == ["graduation_date"]
    assert allowed.body.predicate is not None and allowed.body.predicate.name == "graduated_within_years"
    (refused,) = _entries(gateway, "vf-2")
    assert refused.body.decision.value == "denied" and list(refused.body.fields) == ["level"]
    items = _entries(gateway, "vf-3")
    assert len(items) == 2
    assert [list(e.body.fields) for e in items] == [["graduation_date"], ["graduation_date"]]
    # a stream refused at its header (a purpose outside the agreement): one entry, no subject
    with pytest.raises(GatewayError) as exc:
        list(
            client.batch_verify(
                [("a", subject)],
                "hiring_subsidy",
                "education",
                "degree_at_least",
                {"rank": 1},
                request_id="vf-4",
            )
        )
    assert exc.value.reason == "PURPOSE_NOT_ALLOWED"
    (header,) = _entries(gateway, "vf-4")
    assert header.subject is None and list(header.body.fields) == ["level"]


def test_the_catalogue_names_the_fields_each_predicate_reads(gateway: Gateway) -> None:
    entries = gateway.client("hrss").catalogue().entries
    (graduation,) = [e for e in entries if e.dataset == "graduation"]
    reads = {p.name: list(p.fields) for p in graduation.predicates}
    assert reads == {"graduated_within_years": ["graduation_date"], "degree_at_least": ["level"]}


def _check(gw: Gateway, subject: str, predicate: str, dataset: str = "", fields: Sequence[str] = ()) -> Any:
    return consent_stub(gw, "hrss").Check(
        consent_pb2.CheckConsentRequest(
            subject=subject_ref(subject),
            provider=agency_to_wire(Agency.EDUCATION),
            dataset=dataset,
            fields=list(fields),
            purpose=PURPOSE,
            predicate=predicate,
        ),
        timeout=5,
    )


def test_check_answers_what_a_comparison_would_get(gateway: Gateway, subjects: Subjects) -> None:
    subject, _ = subjects.graduates[11]
    consent_id = _grant(gateway, subject, ["graduation_date"])
    allowed = _check(gateway, subject, "graduated_within_years")
    assert allowed.allowed and list(allowed.consent_ids) == [consent_id]
    assert _check(gateway, subject, "graduated_within_years", dataset="graduation").allowed
    denied = _check(gateway, subject, "degree_at_least")
    assert (denied.allowed, denied.reason, denied.field) == (False, "CONSENT_FIELD_OUT_OF_SCOPE", "level")
    # as Verify answers them
    client = gateway.client("hrss")
    assert client.verify(subject, PURPOSE, "education", "graduated_within_years", {"years": 80}).result
    with pytest.raises(GatewayError):
        client.verify(subject, PURPOSE, "education", "degree_at_least", {"rank": 1})


@pytest.mark.parametrize(
    ("predicate", "dataset", "fields", "reason"),
    [
        ("no_such_predicate", "", (), "UNKNOWN_PREDICATE"),
        ("degree_at_least", "", ("level",), "INVALID_REQUEST"),  # fields or a predicate
        ("degree_at_least", "disability", (), "INVALID_REQUEST"),  # not the predicate's dataset
    ],
)
def test_check_with_a_predicate_refuses_a_muddled_request(
    gateway: Gateway, subjects: Subjects, predicate: str, dataset: str, fields: tuple[str, ...], reason: str
) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        _check(gateway, subjects.graduates[11][0], predicate, dataset=dataset, fields=fields)
    error = GatewayError.of(exc.value)
    assert (error.code, error.reason) == ("INVALID_ARGUMENT", reason)
