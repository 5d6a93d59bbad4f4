"""A consent store that cannot be read: Query, Verify and BatchVerify are refused UNAVAILABLE
CONSENT_STORE_UNAVAILABLE with a retry hint (it was INVALID_ARGUMENT, as if the caller had erred,
and unaudited), and each refusal is audited."""

from __future__ import annotations

import itertools

import pytest

from gateway.client import GatewayError
from gateway.consent.errors import StoreError
from tests.gateway.conftest import Gateway, Subjects, entries_of, read_audit

_ids = itertools.count()


@pytest.fixture
def store_down(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    store = gateway.background.worker.store
    assert store is not None

    def down(*_args: object, **_kwargs: object) -> object:
        raise StoreError("consent store unavailable: disk I/O error")

    monkeypatch.setattr(store, "records_for", down)


def _audited(gateway: Gateway, request_id: str) -> list[tuple[str, str]]:
    log = gateway.background.worker.audit
    assert log is not None and log.flush_index(timeout=30)
    entries = entries_of(read_audit(gateway.home, [gateway.audit_dir]), request_id)
    return [(e.body.decision.value, e.body.reason) for e in entries if e.body.kind == "access"]


@pytest.mark.usefixtures("store_down")
def test_query_and_verify_are_unavailable_and_audited(gateway: Gateway, subjects: Subjects) -> None:
    client = gateway.client("hrss")
    subject = subjects.graduates[3][0]
    rid = f"store-down-q-{next(_ids)}"
    with pytest.raises(GatewayError) as query:
        client.query(subject, "graduate_employment", [("education", "graduation", ["level"])], request_id=rid)
    assert (query.value.code, query.value.reason) == ("UNAVAILABLE", "CONSENT_STORE_UNAVAILABLE")
    assert query.value.retry_after_s is not None and query.value.retry_after_s > 0
    assert "disk" not in str(query.value)  # the store's own message stays in the gateway
    assert _audited(gateway, rid) == [("denied", "CONSENT_STORE_UNAVAILABLE")]

    education = gateway.client("education")  # reads hrss's insurance with consent
    rid = f"store-down-v-{next(_ids)}"
    with pytest.raises(GatewayError) as verify:
        education.verify(
            subjects.insured[0], "graduate_employment", "hrss", "currently_insured", request_id=rid
        )
    assert (verify.value.code, verify.value.reason) == ("UNAVAILABLE", "CONSENT_STORE_UNAVAILABLE")
    assert _audited(gateway, rid) == [("denied", "CONSENT_STORE_UNAVAILABLE")]


@pytest.mark.usefixtures("store_down")
def test_batch_items_are_refused_and_audited(gateway: Gateway, subjects: Subjects) -> None:
    education = gateway.client("education")
    rid = f"store-down-b-{next(_ids)}"
    items = [("1", subjects.insured[1]), ("2", subjects.insured[2])]
    out = list(
        education.batch_verify(items, "graduate_employment", "hrss", "currently_insured", request_id=rid)
    )
    assert [(r.item_id, r.result, r.error_reason) for r in out] == [
        ("1", None, "CONSENT_STORE_UNAVAILABLE"),
        ("2", None, "CONSENT_STORE_UNAVAILABLE"),
    ]
    assert _audited(gateway, rid) == [("denied", "CONSENT_STORE_UNAVAILABLE")] * 2
