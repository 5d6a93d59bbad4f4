"""A comparison (Verify, BatchVerify) under a consent-based agreement needs a consent to the
fields its predicate reads, not to every field of the dataset: the gateway answers yes or no
from those fields only. ListCatalogue tells the caller which fields each predicate reads."""

from __future__ import annotations

import pytest

from gateway.client import GatewayError
from tests.gateway.conftest import Gateway, Subjects, client_grant

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


def test_the_catalogue_names_the_fields_each_predicate_reads(gateway: Gateway) -> None:
    entries = gateway.client("hrss").catalogue().entries
    (graduation,) = [e for e in entries if e.dataset == "graduation"]
    reads = {p.name: list(p.fields) for p in graduation.predicates}
    assert reads == {"graduated_within_years": ["graduation_date"], "degree_at_least": ["level"]}
