"""A Query over several datasets is decided as a whole: a use of a use-limited consent is counted
only when every dataset is allowed, once per consent however many datasets it covers; a call
refused because one provider failed is audited as giving nothing. Concurrent ones are decided and
fetched in batches, each call answered as alone."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from adapters.agencies import Agency
from adapters.contract import ProviderUnavailable, SubjectKind
from gateway import exchange as exchange_module
from gateway.client import GatewayClient, GatewayError
from gateway.devsetup import DEFAULT_AGREEMENTS, DevHome
from gateway.exchange import CallMeta, DatasetAsk, Exchange, QueryAnswer
from gateway.pipeline.errors import RequestError
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


ASKS = [
    DatasetAsk(Agency.EDUCATION, "graduation", ("level",)),
    DatasetAsk(Agency.TAX, "income_withholding", ("months_withheld_12m",)),
]
BOTH = [("education", "graduation", []), ("tax", "income_withholding", [])]
Call = tuple[CallMeta, str, list[DatasetAsk]]


def _exchange(gw: Gateway) -> Exchange:
    x = gw.background.worker.exchange
    assert x is not None
    return x


def _meta(label: str, left: float = 10.0) -> CallMeta:
    return CallMeta(Agency.HRSS, f"multi-{label}-{next(_ids)}", PURPOSE, time_left=lambda: left)


def _together(gw: Gateway, calls: Sequence[Call]) -> list[Any]:
    """The calls started in one turn of the gateway's loop (so that they meet in one batch)."""
    x = _exchange(gw)

    async def run() -> list[Any]:
        started = [x.query(m, SubjectKind.PERSON, s, asks) for m, s, asks in calls]
        return list(await asyncio.gather(*started, return_exceptions=True))

    return asyncio.run_coroutine_threadsafe(run(), gw.background._loop).result(timeout=30)


def _unbatched(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls from now on take the path of a gateway that does not batch (server.query_batch 1)."""
    monkeypatch.setattr(_exchange(gw), "_local_queries", None)


def _batches(gw: Gateway) -> tuple[float, float]:
    registry = _exchange(gw).metrics.registry  # type: ignore[attr-defined]
    return (
        registry.get_sample_value("dsgw_query_batch_size_sum") or 0.0,
        registry.get_sample_value("dsgw_query_batch_size_count") or 0.0,
    )


def _answer(result: Any) -> Any:
    if isinstance(result, RequestError):
        return (result.code, result.reason)
    assert isinstance(result, QueryAnswer), result
    return [(r.dataset, r.found, dict(r.values), r.legal_basis) for r in result.results]


def _entries(gw: Gateway) -> list[Any]:
    log = gw.background.worker.audit
    assert log is not None and log.flush_index(timeout=30)
    return read_audit(gw.home, [gw.audit_dir])


def _facts(entries: list[Any], request_id: str) -> list[Any]:
    """What a call's access entries say, but their request id and time, one per dataset."""
    return sorted(
        (b.datasets, b.fields, b.legal_basis.kind, b.decision, b.reason, b.outcome.kind)
        for b in (e.body for e in entries_of(entries, request_id))
    )


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_a_query_refused_for_one_failed_provider_is_audited_as_giving_nothing(
    gw: Gateway, subjects: Subjects, monkeypatch: pytest.MonkeyPatch, batched: bool
) -> None:
    """Batched or not: the call is refused whole, its healthy dataset audited as
    OTHER_PROVIDER_FAILED; a one-dataset call on the healthy dataset in the same batch is
    answered."""
    client = gw.client("hrss")
    subject, other = subjects.graduates[2][0], subjects.graduates[8][0]
    _grant(client, subject, BOTH, uses=10)
    _grant(client, other, [("education", "graduation", [])], uses=0)
    tax = _exchange(gw).adapters[Agency.TAX]

    def down(*_args: object, **_kwargs: object) -> object:
        raise ProviderUnavailable(Agency.TAX, "connection refused")

    monkeypatch.setattr(tax, "fetch", down)
    monkeypatch.setattr(tax, "fetch_many", down)
    if not batched:
        _unbatched(gw, monkeypatch)
    meta = _meta("fail")
    failed, healthy = _together(gw, [(meta, subject, ASKS), (_meta("healthy"), other, ASKS[:1])])
    assert _answer(failed) == ("UNAVAILABLE", "PROVIDER_UNAVAILABLE")
    assert isinstance(healthy, QueryAnswer) and healthy.results[0].found
    entries = entries_of(_entries(gw), meta.request_id)
    outcomes = {e.body.datasets[0]: (e.body.outcome.kind.value, e.body.reason) for e in entries}
    assert outcomes == {
        "graduation": ("failed", "OTHER_PROVIDER_FAILED"),
        "income_withholding": ("failed", "PROVIDER_UNAVAILABLE"),
    }


def test_concurrent_multi_dataset_queries_are_batched_and_answered_as_alone(
    gw: Gateway, subjects: Subjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two-dataset Queries at once, with a one-dataset one: one batch, one provider query per
    dataset (the one-dataset call's dataset, second in the others, shares theirs); each call
    gets what it gets unbatched: a consent over both datasets with one use counted for one call
    only, a call refused for one dataset fetches nothing, a call out of time spends no use, and
    each call's entries say what its entries unbatched say."""
    client = gw.client("hrss")
    graduates = [s for s, _ in subjects.graduates]
    chosen, limited, partial, late = graduates[3:6], graduates[6], graduates[7], graduates[9]
    for s in chosen:
        _grant(client, s, BOTH, uses=0)
    _grant(client, limited, BOTH, uses=1)
    _grant(client, late, BOTH, uses=1)
    _grant(client, partial, [("education", "graduation", [])], uses=0)  # nothing for tax
    x = _exchange(gw)
    queries: dict[Agency, int] = {}
    for agency in (Agency.EDUCATION, Agency.TAX):
        adapter = x.adapters[agency]

        def counted(
            *args: Any, _real: Any = adapter.fetch_many, _agency: Agency = agency, **kwargs: Any
        ) -> Any:
            queries[_agency] = queries.get(_agency, 0) + 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(adapter, "fetch_many", counted)
    calls: list[Call] = [
        *((_meta("both"), s, ASKS) for s in chosen),
        (_meta("limited-a"), limited, ASKS),
        (_meta("limited-b"), limited, ASKS),
        (_meta("partial"), partial, ASKS),
        (_meta("tax-only"), chosen[0], ASKS[1:]),
        (_meta("late", left=0.01), late, ASKS),  # under the 50 ms kept to audit and answer
    ]
    before = _batches(gw)
    results = _together(gw, calls)
    after = _batches(gw)
    assert (after[0] - before[0], after[1] - before[1]) == (len(calls), 1)  # one batch of them all
    assert queries == {Agency.EDUCATION: 1, Agency.TAX: 1}  # one provider query per dataset

    _unbatched(gw, monkeypatch)
    comparable = [0, 1, 2, 5, 6, 7]  # all but the two calls sharing one use
    alone_calls: list[Call] = [(_meta("alone"), calls[k][1], calls[k][2]) for k in comparable[:-1]]
    alone = [_together(gw, [c])[0] for c in alone_calls]
    assert [_answer(results[k]) for k in comparable[:-1]] == [_answer(r) for r in alone]
    assert all(isinstance(r, QueryAnswer) and r.results[0].found for r in results[:3])
    assert _answer(results[5]) == ("PERMISSION_DENIED", "CONSENT_MISSING")
    assert _answer(results[6]) == ("NOT_FOUND", "SUBJECT_NOT_FOUND")  # tax holds no record of them
    spent = sorted(str(_answer(r)) for r in results[3:5])  # one use: one of the two calls
    assert spent[0] == str(("PERMISSION_DENIED", "CONSENT_USE_LIMIT_REACHED"))
    assert isinstance(results[3], QueryAnswer) != isinstance(results[4], QueryAnswer)
    assert _answer(results[7]) == ("UNAVAILABLE", "PROVIDER_TIMEOUT")
    assert isinstance(_together(gw, [(_meta("late-again"), late, ASKS)])[0], QueryAnswer)  # use kept

    entries = _entries(gw)
    for k, (a, _, _) in zip(comparable[:-1], alone_calls, strict=True):
        assert _facts(entries, calls[k][0].request_id) == _facts(entries, a.request_id)
    assert all(len(_facts(entries, m.request_id)) == 2 for m, _, _ in calls[:3])  # one per dataset


def test_a_bug_in_one_dataset_group_fails_only_the_calls_that_ask_it(
    gw: Gateway, subjects: Subjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug while fetching one dataset for a batch: the calls that ask that dataset get it (as
    a gather of their fetches would), the batch's calls of other datasets are answered."""
    client = gw.client("hrss")
    subject, other = subjects.graduates[10][0], subjects.graduates[11][0]
    _grant(client, subject, BOTH, uses=0)
    _grant(client, other, [("education", "graduation", [])], uses=0)
    real = exchange_module._fetch_group

    def broken(x: Any, members: Any) -> Any:
        call, index = members[0]
        if call.plans[index].descriptor.name == "income_withholding":
            raise KeyError("a bug")
        return real(x, members)

    monkeypatch.setattr(exchange_module, "_fetch_group", broken)
    meta = _meta("bug")
    failed, healthy = _together(gw, [(meta, subject, ASKS), (_meta("beside-bug"), other, ASKS[:1])])
    assert isinstance(failed, KeyError)
    assert isinstance(healthy, QueryAnswer) and healthy.results[0].found
    assert entries_of(_entries(gw), meta.request_id) == []  # nothing disclosed, INTERNAL
