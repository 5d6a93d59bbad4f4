"""A Query over several datasets is decided as a whole: a use of a use-limited consent is counted
only when every dataset is allowed, once per consent however many datasets it covers; a call
refused because one provider failed is audited as giving nothing. Concurrent ones are decided and
fetched in batches, each call answered as alone."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

import pytest

from adapters.agencies import Agency
from adapters.contract import ProviderUnavailable, SubjectKind
from gateway.client import GatewayClient, GatewayError
from gateway.devsetup import DEFAULT_AGREEMENTS, DevHome
from gateway.exchange import CallMeta, DatasetAsk, QueryAnswer
from gateway.pipeline.errors import RequestError
from tests.gateway.conftest import Gateway, Subjects, client_grant, entries_of, read_audit, start_gateway

PURPOSE = "graduate_employment"
GRADUATION = ("education", "graduation", ["level"])
WITHHOLDING = ("tax", "income_withholding", [])
_ids = itertools.count()
T = TypeVar("T")


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
    monkeypatch.setattr(tax, "fetch_many", down)  # a multi-dataset Query is batched too
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


def _on_gateway(gw: Gateway, coro: Awaitable[T]) -> T:
    async def wrapped() -> T:
        return await coro

    return asyncio.run_coroutine_threadsafe(wrapped(), gw.background._loop).result(timeout=30)


def _answer(result: Any) -> Any:
    if isinstance(result, RequestError):
        return (result.code, result.reason)
    assert isinstance(result, QueryAnswer), result
    return [(r.dataset, r.found, dict(r.values), r.legal_basis) for r in result.results]


def test_concurrent_multi_dataset_queries_are_batched_and_answered_as_alone(
    gw: Gateway, subjects: Subjects
) -> None:
    """Two-dataset Queries at once: decided with one store read and fetched with one provider
    query per dataset (fewer batches than calls); each call gets what it gets alone, a consent
    over both datasets with one use counted once for one call only, a call refused for one
    dataset fetches nothing, and each call's entries say what its entries alone say."""
    client = gw.client("hrss")
    graduates = [s for s, _ in subjects.graduates]
    both = [("education", "graduation", []), ("tax", "income_withholding", [])]
    chosen, limited, partial = graduates[3:6], graduates[6], graduates[7]
    for s in chosen:
        _grant(client, s, both, uses=0)
    _grant(client, limited, both, uses=1)
    _grant(client, partial, [("education", "graduation", [])], uses=0)  # nothing for tax
    x = gw.background.worker.exchange
    assert x is not None
    asks = [
        DatasetAsk(Agency.EDUCATION, "graduation", ("level",)),
        DatasetAsk(Agency.TAX, "income_withholding", ("months_withheld_12m",)),
    ]

    def meta(label: str) -> CallMeta:
        return CallMeta(Agency.HRSS, f"multi-batch-{label}-{next(_ids)}", PURPOSE, time_left=lambda: 10.0)

    def together(calls: list[tuple[CallMeta, str]]) -> list[Any]:
        async def run() -> list[Any]:
            started = [x.query(m, SubjectKind.PERSON, s, asks) for m, s in calls]
            return list(await asyncio.gather(*started, return_exceptions=True))

        return _on_gateway(gw, run())

    registry = x.metrics.registry  # type: ignore[attr-defined]

    def batches() -> tuple[float, float]:
        return (
            registry.get_sample_value("dsgw_query_batch_size_sum") or 0.0,
            registry.get_sample_value("dsgw_query_batch_size_count") or 0.0,
        )

    calls = [(meta("both"), s) for s in chosen] + [
        (meta("limited-a"), limited),
        (meta("limited-b"), limited),
        (meta("partial"), partial),
    ]
    before = batches()
    results = together(calls)
    after = batches()
    assert after[0] - before[0] == len(calls) and after[1] - before[1] < len(calls)

    alone_calls = [(meta("alone"), s) for _, s in calls[:3]] + [(meta("alone"), partial)]
    alone = [together([c])[0] for c in alone_calls]
    assert [_answer(r) for r in results[:3] + results[5:]] == [_answer(r) for r in alone]
    assert all(isinstance(r, QueryAnswer) and r.results[0].found for r in results[:3])
    assert _answer(results[5]) == ("PERMISSION_DENIED", "CONSENT_MISSING")
    spent = sorted(str(_answer(r)) for r in results[3:5])  # one use: one of the two calls
    assert spent[0] == str(("PERMISSION_DENIED", "CONSENT_USE_LIMIT_REACHED"))
    assert isinstance(results[3], QueryAnswer) != isinstance(results[4], QueryAnswer)

    log = gw.background.worker.audit
    assert log is not None and log.flush_index(timeout=30)
    entries = read_audit(gw.home, [gw.audit_dir])

    def facts(request_id: str) -> list[Any]:
        return sorted(
            (
                e.body.datasets,
                e.body.fields,
                e.body.legal_basis.kind,
                e.body.decision,
                e.body.reason,
                e.body.outcome.kind,
            )
            for e in entries_of(entries, request_id)
        )

    for (m, _), (a, _) in zip(calls[:3] + calls[5:], alone_calls, strict=True):
        assert facts(m.request_id) == facts(a.request_id)
    assert all(len(facts(m.request_id)) == 2 for m, _ in calls[:3])  # one entry per dataset
