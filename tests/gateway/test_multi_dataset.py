"""A Query over several datasets is decided as a whole: a use of a use-limited consent is counted
only when every dataset is allowed, once per consent however many datasets it covers; a call
refused because one provider failed is audited as giving nothing."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from adapters.agencies import Agency
from adapters.contract import ProviderUnavailable
from gateway.client import GatewayClient, GatewayError
from gateway.devsetup import DEFAULT_AGREEMENTS, DevHome
from tests.gateway.conftest import Gateway, Subjects, client_grant, entries_of, read_audit, start_gateway

PURPOSE = "graduate_employment"
GRADUATION = ("education", "graduation", ["level"])
WITHHOLDING = ("tax", "income_withholding", [])
_ids = itertools.count()


@pytest.fixture(scope="module")
def gw(dev_home: DevHome, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The development catalogue plus a consent agreement hrss -> tax.income_withholding, so
    that hrss can ask two consent-based person datasets in one Query."""
    agreements = [
        *DEFAULT_AGREEMENTS,
        {
            "id": "hrss-tax-withholding",
            "consumer": "hrss",
            "provider": "tax",
            "dataset": "income_withholding",
            "fields": ["months_withheld_12m"],
            "predicates": [],
            "purposes": [PURPOSE],
            "legal_basis": "consent",
        },
    ]
    g = start_gateway(dev_home, tmp_path_factory.mktemp("multi") / "home", agreements=agreements)
    try:
        yield g
    finally:
        g.stop()


def _grant(client: GatewayClient, subject: str, datasets: list[tuple[str, str, list[str]]], uses: int) -> str:
    return client_grant(client, subject, datasets, [PURPOSE], uses=uses)


def test_a_refused_multi_dataset_query_spends_no_consent_use(gw: Gateway, subjects: Subjects) -> None:
    client = gw.client("hrss")
    subject = subjects.graduates[0][0]
    _grant(client, subject, [("education", "graduation", [])], uses=2)  # nothing for tax
    for _ in range(2):
        with pytest.raises(GatewayError) as refused:
            client.query(subject, PURPOSE, [GRADUATION, WITHHOLDING])
        assert refused.value.reason == "CONSENT_MISSING"
    for _ in range(2):  # both uses are still there
        assert client.query(subject, PURPOSE, [GRADUATION]).results[0].found
    with pytest.raises(GatewayError) as spent:
        client.query(subject, PURPOSE, [GRADUATION])
    assert spent.value.reason == "CONSENT_USE_LIMIT_REACHED"


def test_one_consent_over_two_datasets_counts_one_use_per_query(gw: Gateway, subjects: Subjects) -> None:
    client = gw.client("hrss")
    subject = subjects.graduates[1][0]
    _grant(client, subject, [("education", "graduation", []), ("tax", "income_withholding", [])], uses=1)
    answer = client.query(subject, PURPOSE, [GRADUATION, WITHHOLDING])
    assert [r.dataset for r in answer.results] == ["graduation", "income_withholding"]
    assert answer.results[0].found
    with pytest.raises(GatewayError) as spent:
        client.query(subject, PURPOSE, [GRADUATION, WITHHOLDING])
    assert spent.value.reason == "CONSENT_USE_LIMIT_REACHED"


def test_a_query_refused_for_one_failed_provider_is_audited_as_giving_nothing(
    gw: Gateway, subjects: Subjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = gw.client("hrss")
    subject = subjects.graduates[2][0]
    _grant(client, subject, [("education", "graduation", []), ("tax", "income_withholding", [])], uses=10)
    exchange = gw.background.worker.exchange
    assert exchange is not None
    tax = exchange.adapters[Agency.TAX]

    def down(*_args: object, **_kwargs: object) -> object:
        raise ProviderUnavailable(Agency.TAX, "connection refused")

    monkeypatch.setattr(tax, "fetch", down)
    request_id = f"multi-fail-{next(_ids)}"
    with pytest.raises(GatewayError) as failed:
        client.query(subject, PURPOSE, [GRADUATION, WITHHOLDING], request_id=request_id)
    assert failed.value.code == "UNAVAILABLE"
    log = gw.background.worker.audit
    assert log is not None and log.flush_index(timeout=30)
    entries = entries_of(read_audit(gw.home, [gw.audit_dir]), request_id)
    outcomes = {e.body.datasets[0]: (e.body.outcome.kind.value, e.body.reason) for e in entries}
    assert outcomes == {
        "graduation": ("failed", "OTHER_PROVIDER_FAILED"),
        "income_withholding": ("failed", "PROVIDER_UNAVAILABLE"),
    }
