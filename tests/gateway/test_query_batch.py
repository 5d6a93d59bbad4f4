"""Concurrent one-dataset Queries and Verifies over local sources are decided and fetched (or
evaluated) together (one consent store read, one provider query per dataset and field list or
predicate): each call still gets exactly the answer, the denial and the audit entry it would get
alone, and a failure of the store or of the provider fails each call of the batch as it would have
failed it alone."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest

from adapters.agencies import Agency
from adapters.base import years_before
from adapters.contract import ProviderUnavailable, SubjectKind
from gateway import exchange as exchange_module
from gateway.batch_wait import AdaptiveWait
from gateway.client import GatewayClient
from gateway.consent.errors import StoreError
from gateway.devsetup import DevHome
from gateway.exchange import (
    CallMeta,
    DatasetAsk,
    Exchange,
    QueryAnswer,
    VerifyAnswer,
    _IoQueries,
    _Lane,
    _LocalQueries,
    _settle,
    _Waiting,
    batch_step,
    expected_gap,
)
from gateway.identity.resident_id import make_resident_id
from gateway.pipeline.errors import RequestError
from tests.gateway.conftest import Gateway, Subjects, client_grant, entries_of, read_audit, start_gateway

T = TypeVar("T")
PURPOSE = "graduate_employment"
REVIEW = "employment_subsidy_review"  # the agreement's other purpose: only use-limited consents name it
FIELDS = ("level", "school_name", "graduation_date")
_ids = itertools.count()


@pytest.fixture(scope="module", params=["uvloop", "asyncio", "io"])
def gw(
    request: pytest.FixtureRequest, dev_home: DevHome, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """A gateway on each event loop: batches wait differently on each (asyncio's ready queue is
    visible, uvloop's is not), and every call must get the same answers on both. "io": the
    calls' steps on the I/O threads (``inline_local_io`` off, as over server databases), where
    batches are group commits (_IoQueries): the same answers again."""
    loop = "asyncio" if request.param == "io" else request.param
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    server: dict[str, Any] = {"event_loop": loop}
    if request.param == "io":
        server["inline_local_io"] = False
    g = start_gateway(dev_home, tmp_path_factory.mktemp("batch") / "home", server=server)
    try:
        assert _loop_kind(g) == loop
        yield g
    finally:
        g.stop()


def _on_the_loop(gw: Gateway) -> None:
    """Skip a test of how batches wait on the event loop (_LocalQueries) for the "io" gateway."""
    if not _exchange(gw)._is_local([_exchange(gw).adapters[Agency.EDUCATION]]):
        pytest.skip("batches on the I/O threads do not wait on the loop")


def _loop_kind(gw: Gateway) -> str:
    return type(gw.background._loop).__module__.split(".")[0]


def _exchange(gw: Gateway) -> Exchange:
    x = gw.background.worker.exchange
    assert x is not None
    return x


def _on_gateway(gw: Gateway, coro: Awaitable[T]) -> T:
    """Run ``coro`` on the gateway's own event loop (where its calls run)."""

    async def wrapped() -> T:
        return await coro

    return asyncio.run_coroutine_threadsafe(wrapped(), gw.background._loop).result(timeout=30)


def _meta(label: str, purpose: str = PURPOSE) -> CallMeta:
    return CallMeta(
        caller=Agency.HRSS, request_id=f"qb-{label}-{next(_ids)}", purpose=purpose, time_left=lambda: 10.0
    )


def _ask(x: Exchange, meta: CallMeta, subject: str) -> Awaitable[QueryAnswer]:
    return x.query(meta, SubjectKind.PERSON, subject, [DatasetAsk(Agency.EDUCATION, "graduation", FIELDS)])


def _together(gw: Gateway, calls: Sequence[tuple[CallMeta, str]]) -> list[Any]:
    """The calls started in one turn of the gateway's loop (so they reach step 4 together)."""
    x = _exchange(gw)

    async def run() -> list[Any]:
        return list(await asyncio.gather(*(_ask(x, m, s) for m, s in calls), return_exceptions=True))

    return _on_gateway(gw, run())


def _batches(gw: Gateway) -> tuple[float, float]:
    """(Queries, batches) counted by the worker's dsgw_query_batch_size histogram."""
    registry = gw.background.worker.exchange.metrics.registry  # type: ignore[union-attr]
    return (
        registry.get_sample_value("dsgw_query_batch_size_sum") or 0.0,
        registry.get_sample_value("dsgw_query_batch_size_count") or 0.0,
    )


def _audit(gw: Gateway) -> list[Any]:
    log = gw.background.worker.audit
    assert log is not None and log.flush_index(timeout=30)
    return read_audit(gw.home, [gw.audit_dir])


def _grant(client: GatewayClient, subject: str, *, uses: int = 0, purpose: str = PURPOSE) -> str:
    return client_grant(client, subject, [("education", "graduation", list(FIELDS))], [purpose], uses=uses)


def _consenting(gw: Gateway, subjects: Subjects, start: int, stop: int) -> list[str]:
    """Graduates ``start:stop``, each with a consent to hrss reading the graduation record."""
    client = gw.client("hrss")
    chosen = [s for s, _ in subjects.graduates][start:stop]
    for s in chosen:
        _grant(client, s)
    return chosen


def _outcome(result: Any) -> Any:
    if isinstance(result, RequestError):
        return (result.code, result.reason)
    assert isinstance(result, QueryAnswer), result
    return [(r.provider, r.dataset, r.found, dict(r.values), r.legal_basis) for r in result.results]


VERIFY = ("graduated_within_years", {"years": 3})
Call = tuple[CallMeta, str, tuple[str, dict[str, int]] | None]  # a Verify's predicate, or a Query


def _check(
    x: Exchange, meta: CallMeta, subject: str, ask: tuple[str, dict[str, int]] = VERIFY
) -> Awaitable[VerifyAnswer]:
    predicate, params = ask
    return x.verify(meta, SubjectKind.PERSON, subject, Agency.EDUCATION, predicate, params)


def _mixed(gw: Gateway, calls: Sequence[Call]) -> list[Any]:
    """Queries and Verifies started in one turn of the gateway's loop."""
    x = _exchange(gw)

    async def run() -> list[Any]:
        started = [_ask(x, m, s) if ask is None else _check(x, m, s, ask) for m, s, ask in calls]
        return list(await asyncio.gather(*started, return_exceptions=True))

    return _on_gateway(gw, run())


def _verdict(result: Any) -> Any:
    if isinstance(result, VerifyAnswer):
        return (result.result, result.legal_basis)
    if isinstance(result, BaseException) and not isinstance(result, RequestError):
        return type(result).__name__
    return _outcome(result)


def test_a_batch_answers_each_call_as_it_would_be_answered_alone(gw: Gateway, subjects: Subjects) -> None:
    client = gw.client("hrss")
    graduates = [s for s, _ in subjects.graduates]
    consenting, refusing, limited = graduates[:5], graduates[5:7], graduates[7]
    for s in consenting:
        _grant(client, s)
    _grant(client, limited, uses=1)
    unknown = subjects.unknown[0]
    _grant(client, unknown)  # a consent, but no provider holds a record of the subject
    calls = [
        *((_meta("ok"), s) for s in consenting),
        (_meta("twice"), consenting[0]),  # the same subject twice in one batch
        *((_meta("no-consent"), s) for s in refusing),
        (_meta("unknown"), unknown),
        (_meta("limited-a"), limited),
        (_meta("limited-b"), limited),  # its one use is spent by one of the two only
    ]
    before = _batches(gw)
    together = _together(gw, calls)
    after = _batches(gw)
    assert after[0] - before[0] == len(calls)
    assert after[1] - before[1] < len(calls)  # they were decided and fetched together

    # each call alone (a batch of one): the same answers, except the spent limited consent
    alone = [_together(gw, [(_meta("alone"), s)])[0] for _, s in calls[: len(calls) - 2]]
    assert [_outcome(r) for r in together[: len(calls) - 2]] == [_outcome(r) for r in alone]
    assert all(isinstance(r, QueryAnswer) and r.results[0].found for r in together[:6])
    by_subject = {s: v for s, v in subjects.graduates}
    for (_, s), r in zip(calls[:6], together[:6], strict=True):
        values = r.results[0].values
        assert values["level"] == by_subject[s]["level"]
        assert values["graduation_date"] == by_subject[s]["graduation_date"]
    assert [_outcome(r) for r in together[6:8]] == [("PERMISSION_DENIED", "CONSENT_MISSING")] * 2
    assert _outcome(together[8]) == ("NOT_FOUND", "SUBJECT_NOT_FOUND")
    limited_outcomes = sorted(str(_outcome(r)) for r in together[9:])
    assert limited_outcomes[0] == str(("PERMISSION_DENIED", "CONSENT_USE_LIMIT_REACHED"))
    assert isinstance(together[9], QueryAnswer) != isinstance(together[10], QueryAnswer)

    # one audit entry per call, about its own subject, with its own outcome
    entries = _audit(gw)
    for (meta, subject), result in zip(calls, together, strict=True):
        mine = entries_of(entries, meta.request_id)
        assert len(mine) == 1, meta.request_id
        entry = mine[0]
        assert entry.subject is not None and entry.subject.id == subject
        if isinstance(result, QueryAnswer):
            assert entry.body.outcome.kind.value == "found"
        elif result.reason == "SUBJECT_NOT_FOUND":
            assert entry.body.outcome.kind.value == "not_found"
        else:
            assert entry.body.reason == result.reason


def test_a_store_outage_refuses_every_call_of_the_batch(
    gw: Gateway, subjects: Subjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = _consenting(gw, subjects, 8, 11)
    store = _exchange(gw).consent.store

    def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("consent store unavailable: disk I/O error")

    monkeypatch.setattr(store, "records_for_many", down)
    monkeypatch.setattr(store, "records_for", down)  # down for a call alone too
    calls = [(_meta("store-down"), s) for s in chosen]
    results = _together(gw, calls)
    assert [_outcome(r) for r in results] == [("UNAVAILABLE", "CONSENT_STORE_UNAVAILABLE")] * 3
    entries = _audit(gw)
    for meta, _ in calls:
        (entry,) = entries_of(entries, meta.request_id)
        assert entry.body.reason == "CONSENT_STORE_UNAVAILABLE"


def test_a_provider_failure_fails_every_allowed_call_of_the_batch(
    gw: Gateway, subjects: Subjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = _consenting(gw, subjects, 9, 12)
    adapter = _exchange(gw).adapters[Agency.EDUCATION]

    def down(*args: Any, **kwargs: Any) -> Any:
        raise ProviderUnavailable(Agency.EDUCATION, "connection refused")

    for method in ("fetch_many", "evaluate_many", "evaluate"):
        monkeypatch.setattr(adapter, method, down)
    calls: list[Call] = [
        *((_meta("provider-down"), s, None) for s in chosen),
        *((_meta("v-provider-down"), s, VERIFY) for s in chosen),
        (_meta("no-consent"), subjects.insured[0], None),
    ]
    results = _mixed(gw, calls)
    assert [_verdict(r) for r in results[:6]] == [("UNAVAILABLE", "PROVIDER_UNAVAILABLE")] * 6
    assert _verdict(results[6]) == ("PERMISSION_DENIED", "CONSENT_MISSING")
    entries = _audit(gw)
    for meta, _, _ in calls[:6]:
        (entry,) = entries_of(entries, meta.request_id)
        assert (entry.body.outcome.kind.value, entry.body.reason) == ("failed", "PROVIDER_UNAVAILABLE")


def test_a_subject_whose_consent_cannot_be_read_fails_alone(
    gw: Gateway, subjects: Subjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One subject's damaged consent fails the batch's read: the calls then go one by one, and
    only that subject's is refused (it used to refuse the whole batch)."""
    chosen = _consenting(gw, subjects, 0, 3)
    store = _exchange(gw).consent.store
    real = store.records_for

    def many(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("consent x: stored terms are damaged")

    def one(kind: Any, subject_id: str, **kwargs: Any) -> Any:
        if subject_id == chosen[1]:
            raise StoreError("consent x: stored terms are damaged")
        return real(kind, subject_id, **kwargs)

    monkeypatch.setattr(store, "records_for_many", many)
    monkeypatch.setattr(store, "records_for", one)
    results = _together(gw, [(_meta("damaged"), s) for s in chosen])
    assert isinstance(results[0], QueryAnswer) and isinstance(results[2], QueryAnswer)
    assert _outcome(results[1]) == ("UNAVAILABLE", "CONSENT_STORE_UNAVAILABLE")


@pytest.mark.parametrize("verify", [False, True], ids=["query", "verify"])
def test_a_subject_the_provider_cannot_map_fails_alone(
    gw: Gateway, subjects: Subjects, monkeypatch: pytest.MonkeyPatch, verify: bool
) -> None:
    """The provider answers a batched query (or evaluation) with one subject's records
    malformed: that call is PROVIDER_UNAVAILABLE (as alone), the others are answered."""
    chosen = _consenting(gw, subjects, 0, 3)
    adapter = _exchange(gw).adapters[Agency.EDUCATION]
    many = "evaluate_many" if verify else "fetch_many"
    real = getattr(adapter, many)

    def one_malformed(what: str, subjects_: Any, *args: Any, **kwargs: Any) -> Any:
        out = real(what, subjects_, *args, **kwargs)
        return [
            ProviderUnavailable(Agency.EDUCATION, "malformed native data (education_level: unknown code)")
            if s.id == chosen[1]
            else r
            for s, r in zip(subjects_, out, strict=True)
        ]

    monkeypatch.setattr(adapter, many, one_malformed)
    calls: list[Call] = [(_meta("malformed"), s, VERIFY if verify else None) for s in chosen]
    results = _mixed(gw, calls)
    answered = VerifyAnswer if verify else QueryAnswer
    assert isinstance(results[0], answered) and isinstance(results[2], answered)
    assert _verdict(results[1]) == ("UNAVAILABLE", "PROVIDER_UNAVAILABLE")
    (entry,) = entries_of(_audit(gw), calls[1][0].request_id)
    assert (entry.body.outcome.kind.value, entry.body.reason) == ("failed", "PROVIDER_UNAVAILABLE")


def _three_apart(gw: Gateway, subjects: Subjects) -> list[str]:
    """Three consenting graduates, each graduated on another day (so a record can be told
    apart by its date)."""
    by_subject = dict(subjects.graduates)
    chosen: list[str] = []
    for s in _consenting(gw, subjects, 7, 14):
        if all(by_subject[s]["graduation_date"] != by_subject[c]["graduation_date"] for c in chosen):
            chosen.append(s)
    assert len(chosen) >= 3
    return chosen[:3]


@pytest.mark.parametrize(
    ("verify", "where"),
    [(False, "record"), (True, "record"), (True, "predicate")],
    ids=["query-record", "verify-record", "verify-predicate"],
)
def test_a_subject_whose_record_breaks_the_adapter_fails_alone(
    gw: Gateway, subjects: Subjects, monkeypatch: pytest.MonkeyPatch, verify: bool, where: str
) -> None:
    """A bug in the adapter's own code for one subject (a KeyError building its record, or in
    the predicate's test of it) fails that call as it fails alone (the exception, INTERNAL over
    gRPC, no entry: nothing was disclosed); the batch's other calls are answered. It used to
    fail every call of the batch."""
    chosen = _three_apart(gw, subjects)
    broken_date = dict(subjects.graduates)[chosen[1]]["graduation_date"]
    adapter = _exchange(gw).adapters[Agency.EDUCATION]
    if where == "record":
        spec = adapter._datasets["graduation"]  # type: ignore[attr-defined]

        def breaks_on_one(conn: Any, groups: Any, day: dt.date) -> Any:
            built = spec.build(conn, groups, day)
            if any(r.model_dump()["graduation_date"] == broken_date for r in built.values()):
                raise KeyError("a code the adapter does not know")
            return built

        monkeypatch.setitem(adapter._datasets, "graduation", dataclasses.replace(spec, build=breaks_on_one))  # type: ignore[attr-defined]
    else:
        pspec = adapter._predicates[VERIFY[0]]  # type: ignore[attr-defined]

        def test_breaks_on_one(record: Any, params: Any, day: dt.date) -> bool:
            if record.graduation_date == broken_date:
                raise KeyError("a code the adapter does not know")
            return bool(pspec.test(record, params, day))

        monkeypatch.setitem(
            adapter._predicates, VERIFY[0], dataclasses.replace(pspec, test=test_breaks_on_one)
        )  # type: ignore[attr-defined]
    ask = VERIFY if verify else None
    assert _verdict(_mixed(gw, [(_meta("broken-alone"), chosen[1], ask)])[0]) == "KeyError"
    before = _batches(gw)
    calls: list[Call] = [(_meta("broken"), s, ask) for s in chosen]
    results = _mixed(gw, calls)
    assert _batches(gw)[1] - before[1] == 1  # one batch of three
    answered = VerifyAnswer if verify else QueryAnswer
    assert isinstance(results[0], answered) and isinstance(results[2], answered)
    assert _verdict(results[1]) == "KeyError"
    entries = _audit(gw)
    assert entries_of(entries, calls[1][0].request_id) == []
    assert len(entries_of(entries, calls[0][0].request_id)) == 1


@pytest.mark.parametrize("verify", [False, True], ids=["query", "verify"])
def test_a_short_deadline_does_not_bound_the_other_calls(
    gw: Gateway, subjects: Subjects, monkeypatch: pytest.MonkeyPatch, verify: bool
) -> None:
    """A call with almost no time left in a batch: it alone is PROVIDER_TIMEOUT (audited as
    failed); the others, with their own long deadlines, are answered (the whole group used to
    get the shortest deadline)."""
    chosen = _consenting(gw, subjects, 0, 3)
    consent = _exchange(gw).consent
    real = consent.decide_many

    def slow(*args: Any, **kwargs: Any) -> Any:  # a store write under the lock takes a while
        out = real(*args, **kwargs)
        time.sleep(0.03)
        return out

    monkeypatch.setattr(consent, "decide_many", slow)
    short = CallMeta(caller=Agency.HRSS, request_id=f"qb-short-{next(_ids)}", purpose=PURPOSE)
    end = time.monotonic() + 0.075  # 25 ms once the 50 ms answer reserve is kept
    short = dataclasses.replace(short, time_left=lambda: end - time.monotonic())
    ask = VERIFY if verify else None
    results = _mixed(
        gw, [(_meta("long"), chosen[0], ask), (short, chosen[1], ask), (_meta("long"), chosen[2], ask)]
    )
    answered = VerifyAnswer if verify else QueryAnswer
    assert isinstance(results[0], answered) and isinstance(results[2], answered)
    assert _verdict(results[1]) == ("UNAVAILABLE", "PROVIDER_TIMEOUT")
    (entry,) = entries_of(_audit(gw), short.request_id)
    assert (entry.body.outcome.kind.value, entry.body.reason) == ("failed", "PROVIDER_TIMEOUT")


def test_each_call_of_a_slow_provider_query_keeps_its_own_deadline(
    gw: Gateway, subjects: Subjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batched provider query runs with the longest time left among its calls (not the
    shortest: that failed them all); a call whose own time ran out before the answer came is
    PROVIDER_TIMEOUT, audited as such; the others are answered."""
    chosen = _consenting(gw, subjects, 0, 3)
    source = _exchange(gw).adapters[Agency.EDUCATION].source  # type: ignore[attr-defined]
    real = source.run

    def slow(operation: str, fn: Any, **kwargs: Any) -> Any:
        def work(conn: Any) -> Any:
            time.sleep(0.04)  # the provider takes 40 ms, inside the call's time limit
            return fn(conn)

        return real(operation, work, **kwargs)

    monkeypatch.setattr(source, "run", slow)
    end = time.monotonic() + 0.075  # 25 ms once the 50 ms answer reserve is kept
    short = dataclasses.replace(_meta("short-slow"), time_left=lambda: end - time.monotonic())
    calls = [(_meta("long-slow"), chosen[0]), (short, chosen[1]), (_meta("long-slow"), chosen[2])]
    results = _together(gw, calls)
    assert isinstance(results[0], QueryAnswer) and isinstance(results[2], QueryAnswer)
    assert _outcome(results[1]) == ("UNAVAILABLE", "PROVIDER_TIMEOUT")
    (entry,) = entries_of(_audit(gw), short.request_id)
    assert (entry.body.outcome.kind.value, entry.body.reason) == ("failed", "PROVIDER_TIMEOUT")


def test_a_batch_that_breaks_settles_every_call() -> None:
    """Whatever a bug raises, every waiting call gets an error (none hangs), each its own."""
    loop = asyncio.new_event_loop()
    try:
        futures = [loop.create_future() for _ in range(3)]
        for f in futures[:2]:
            _settle(f, error=StopIteration())  # a future refuses StopIteration itself
        _settle(futures[2], error=ValueError("bug"))
        assert all(f.done() for f in futures)
        assert isinstance(futures[0].exception(), RuntimeError)
        assert futures[0].exception() is not futures[1].exception()
    finally:
        loop.close()


class _Uncopyable(Exception):
    def __init__(self, reason: str, *, detail: str) -> None:  # copy.copy calls cls(*args): fails
        super().__init__(f"{reason}: {detail}")


@pytest.mark.parametrize("where", ["loop", "io"])
def test_a_batch_broken_by_an_exception_that_cannot_be_copied_settles_every_call(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each waiting call gets its own copy of a bug's exception; one whose class cannot be
    copied is given as is, and the batch's other calls are still settled (they used to hang),
    on the loop (_LocalQueries) as on the I/O threads (_IoQueries)."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise _Uncopyable("INTERNAL", detail="a bug")

    monkeypatch.setattr(exchange_module, "_batch_steps", broken)
    monkeypatch.setattr(exchange_module, "_io_batch_steps", broken)

    async def scenario(pool: ThreadPoolExecutor) -> list[asyncio.Future[Any]]:
        exchange: Any = SimpleNamespace(metrics=SimpleNamespace(query_batch=lambda n: None), executor=pool)
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(3)]
        waiting = [_Waiting(_meta("bug"), None, None, f) for f in futures]  # type: ignore[arg-type]
        if where == "loop":
            batches = _LocalQueries(exchange, 64, 0.004)
            batches._waiting = waiting
            batches._run_now()
        else:
            lane = _Lane(waiting=waiting, busy=True)
            _IoQueries(exchange, 64, AdaptiveWait(0.004))._start(lane)
            await asyncio.wait(futures, timeout=10)
            assert not lane.busy and not lane.waiting
        return futures

    with ThreadPoolExecutor(1) as pool:
        futures = asyncio.run(scenario(pool))
    assert all(isinstance(f.exception(), _Uncopyable) for f in futures)


def test_a_lone_call_after_a_quiet_spell_is_not_held_long() -> None:
    # steady calls every 0.5 ms: a batch waits for the next one
    assert batch_step(0.002, False, expected_gap(0.0005, 0.0001)) == 0.0005
    # none for 15 ms: it does not wait
    assert batch_step(0.002, False, expected_gap(0.0005, 0.015)) is None
    # a lone call never waits longer than the batch's wait, whatever the average said
    assert batch_step(0.0, False, expected_gap(0.0005, 0.0)) is None


def _cancel(
    gw: Gateway,
    subject: str,
    label: str,
    *,
    before_the_batch: bool,
    verify: bool = False,
    monkeypatch: pytest.MonkeyPatch | None = None,
) -> CallMeta:
    """A call (a Query, or with ``verify`` a Verify) about ``subject`` (one use-limited consent)
    cancelled while it waits in a batch, before or after the batch runs; returns its meta. On
    the I/O threads (the "io" gateway), "after" is once its batch's thread is done and the call
    is settled, before it resumes (``monkeypatch`` required)."""
    _grant(gw.client("hrss"), subject, uses=1, purpose=REVIEW)
    x = _exchange(gw)
    meta = _meta(label, REVIEW)
    on_the_loop = x._is_local([x.adapters[Agency.EDUCATION]])
    task: asyncio.Task[Any] | None = None
    if not on_the_loop and not before_the_batch:
        assert monkeypatch is not None
        settle = exchange_module._settle_with

        def then_cancel(future: Any, outcome: Any) -> None:
            settle(future, outcome)
            assert task is not None
            task.cancel()  # in the same callback: before the call resumes

        monkeypatch.setattr(exchange_module, "_settle_with", then_cancel)

    async def scenario() -> None:
        nonlocal task
        call = _check(x, meta, subject) if verify else _ask(x, meta, subject)
        task = asyncio.get_running_loop().create_task(call)
        await asyncio.sleep(0)  # the call waits in a batch
        if before_the_batch:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if on_the_loop:
                assert x._local_queries is not None
                x._local_queries._run_now()  # the batch runs without it
            else:
                await asyncio.sleep(0.05)  # the I/O threads' lane started without it
            return
        if on_the_loop:
            assert x._local_queries is not None
            x._local_queries._run_now()  # its steps run: the use is spent, the provider read
            task.cancel()  # before the call resumes
        with pytest.raises(asyncio.CancelledError):
            await task

    _on_gateway(gw, scenario())
    return meta


def test_a_call_cancelled_while_it_waits_spends_nothing(gw: Gateway, subjects: Subjects) -> None:
    subject = subjects.graduates[3][0]
    meta = _cancel(gw, subject, "cancel-early", before_the_batch=True)
    assert entries_of(_audit(gw), meta.request_id) == []
    # its one use was not spent: a new call gets the data
    assert isinstance(_together(gw, [(_meta("after", REVIEW), subject)])[0], QueryAnswer)


@pytest.mark.parametrize("verify", [False, True], ids=["query", "verify"])
def test_a_call_cancelled_after_its_steps_ran_is_still_audited(
    gw: Gateway, subjects: Subjects, verify: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch decided (spending the consent's one use) and fetched (or evaluated) for the
    call, then its caller went away before the call went on: its audit entry is still written,
    and its answer kept: a retry of its request id replays it, with no second entry (it used to
    be decided again, refused for the spent use and audited twice)."""
    subject = subjects.graduates[12 if verify else 4][0]
    ask = VERIFY if verify else None
    meta = _cancel(gw, subject, "cancel-late", before_the_batch=False, verify=verify, monkeypatch=monkeypatch)
    (entry,) = entries_of(_audit(gw), meta.request_id)
    assert entry.body.outcome.kind.value == "found"
    retried = _mixed(gw, [(meta, subject, ask)])[0]
    assert isinstance(retried, VerifyAnswer if verify else QueryAnswer) and retried.replayed
    assert len(entries_of(_audit(gw), meta.request_id)) == 1
    assert _verdict(_mixed(gw, [(_meta("after", REVIEW), subject, ask)])[0]) == (
        "PERMISSION_DENIED",
        "CONSENT_USE_LIMIT_REACHED",
    )


def _lone_call(
    gw: Gateway,
    chosen: str,
    label: str,
    *,
    others: int,
    load: AdaptiveWait | None = None,
    before: Callable[[], Awaitable[None]] | None = None,
) -> tuple[Any, int]:
    """A call about ``chosen`` after calls have been coming every 0.5 ms, with ``others`` other
    Queries in progress in the worker: (its answer, how often the batcher checked its batch).
    The batch waits the whole configured time (4 ms), or follows ``load`` if given (after
    ``before`` ran on the loop)."""
    x = _exchange(gw)
    lq = x._local_queries
    assert lq is not None
    checks = 0
    run = lq._run

    def counted() -> None:
        nonlocal checks
        checks += 1
        run()

    async def lone() -> Any:
        saved = lq._gap, lq._last, lq.load
        lq.load = load or AdaptiveWait(x.config.server.query_batch_wait_ms / 1000, follow=False)
        lq.load.observe(asyncio.get_running_loop().time())
        if before is not None:
            await before()
        lq._gap, lq._last = 0.0005, asyncio.get_running_loop().time()
        lq._run = counted  # type: ignore[method-assign]
        x._calls_in_progress += others
        try:
            return await _ask(x, _meta(label), chosen)
        finally:
            x._calls_in_progress -= others
            del lq._run
            lq._gap, lq._last, lq.load = saved

    return _on_gateway(gw, lone()), checks


def test_a_waiting_batch_does_not_spin_the_loop(gw: Gateway, subjects: Subjects) -> None:
    _on_the_loop(gw)
    # calls have been coming every 0.5 ms and another call is in progress, so a lone call waits
    # for more (the default 4 ms at most); on uvloop, whose timers count whole milliseconds, a
    # wait per expected call (0.5 ms: at once) checked the batch again and again until its time
    # was over
    (chosen,) = _consenting(gw, subjects, 0, 1)
    answer, checks = _lone_call(gw, chosen, "spin", others=1)
    assert isinstance(answer, QueryAnswer)
    # uvloop: one timer for the wait (and a check or two around it); asyncio checks again after
    # each turn with other callbacks ready, a handful on an idle gateway
    assert 1 <= checks <= (12 if _loop_kind(gw) == "uvloop" else 60), checks


def test_a_batch_holding_every_call_in_progress_does_not_wait(gw: Gateway, subjects: Subjects) -> None:
    """Calls have been coming every 0.5 ms, but no other Query is in progress in the worker (a
    caller that sends its next call once this one is answered): the lone call runs at the end of
    its turn instead of waiting out server.query_batch_wait_ms on a timer."""
    _on_the_loop(gw)
    (chosen,) = _consenting(gw, subjects, 1, 2)
    assert _exchange(gw)._calls_in_progress == 0
    answer, checks = _lone_call(gw, chosen, "alone", others=0)
    assert isinstance(answer, QueryAnswer)
    assert _exchange(gw)._calls_in_progress == 0
    # uvloop: checked once and run (a wait would take a timer and a second check); asyncio: only
    # the rounds while other callbacks are ready on the loop
    assert checks == 1 if _loop_kind(gw) == "uvloop" else 1 <= checks <= 12, checks


async def _quiet() -> None:
    await asyncio.sleep(0.2)  # the loop idle


async def _busy() -> None:
    """The loop's thread on the CPU for 0.2 s (nothing awaited)."""
    end = time.thread_time() + 0.2
    while time.thread_time() < end:
        pass


def test_a_quiet_loop_does_not_hold_a_call_for_more(gw: Gateway, subjects: Subjects) -> None:
    """Another Query is in progress and calls have been coming every 0.5 ms, but the loop was
    idle: the batch runs at the end of the call's turn instead of waiting 4 ms for a partner
    (with a fixed wait, two closed-loop callers got fewer answers per second than one)."""
    _on_the_loop(gw)
    (chosen,) = _consenting(gw, subjects, 5, 6)
    load = AdaptiveWait(0.004, window=0.01, tau_up=0.01, tau_down=0.01)
    answer, checks = _lone_call(gw, chosen, "quiet", others=1, load=load, before=_quiet)
    assert isinstance(answer, QueryAnswer)
    assert checks == 1, checks  # run at the end of its turn: no timer, no second look
    assert load.busy < 0.4 and load.wait < 0.0001


def test_a_busy_loop_still_waits_for_more(gw: Gateway, subjects: Subjects) -> None:
    _on_the_loop(gw)
    (chosen,) = _consenting(gw, subjects, 6, 7)
    load = AdaptiveWait(0.004, window=0.01, tau_up=0.01, tau_down=0.01)
    answer, checks = _lone_call(gw, chosen, "busy", others=1, load=load, before=_busy)
    assert isinstance(answer, QueryAnswer)
    assert checks >= 2, checks  # it waited (a timer, or the turns with callbacks ready)
    assert load.busy > 0.7 and load.wait == pytest.approx(0.004, rel=0.01)


def test_the_batch_wait_follows_the_load_by_default(
    gw: Gateway, dev_home: DevHome, tmp_path_factory: pytest.TempPathFactory
) -> None:
    lq = _exchange(gw)._local_queries
    assert lq is not None and lq.load.follow and lq.load.most == 0.004
    registry = gw.background.worker.exchange.metrics.registry  # type: ignore[union-attr]
    assert registry.get_sample_value("dsgw_query_batch_wait_seconds") == lq.load.wait
    assert registry.get_sample_value("dsgw_event_loop_busy_ratio") == lq.load.busy
    g = start_gateway(
        dev_home, tmp_path_factory.mktemp("fixedwait") / "home", server={"query_batch_adaptive": False}
    )
    try:
        lq = _exchange(g)._local_queries
        assert lq is not None and not lq.load.follow
        _together(g, [(_meta("fixed"), s) for s in dev_unknowns(g)])
        time.sleep(0.3)  # a quiet spell: an adaptive wait would fall
        _together(g, [(_meta("fixed"), s) for s in dev_unknowns(g)])
        assert lq.load.busy > 0 and lq.load.wait == 0.004  # the load measured, the wait never moved
    finally:
        g.stop()


def test_a_full_batch_runs_at_once(
    dev_home: DevHome, subjects: Subjects, tmp_path_factory: pytest.TempPathFactory
) -> None:
    g = start_gateway(dev_home, tmp_path_factory.mktemp("fullbatch") / "home", server={"query_batch": 3})
    try:
        chosen = _consenting(g, subjects, 0, 7)
        before = _batches(g)
        results = _together(g, [(_meta("full"), s) for s in chosen])
        after = _batches(g)
        assert after[0] - before[0] == 7 and after[1] - before[1] == 3  # 3 + 3 + 1
        by_subject = dict(subjects.graduates)
        for s, r in zip(chosen, results, strict=True):
            assert isinstance(r, QueryAnswer)
            assert r.results[0].values["graduation_date"] == by_subject[s]["graduation_date"]
    finally:
        g.stop()


def test_query_batch_1_turns_batching_off(
    dev_home: DevHome, tmp_path_factory: pytest.TempPathFactory
) -> None:
    g = start_gateway(dev_home, tmp_path_factory.mktemp("nobatch") / "home", server={"query_batch": 1})
    try:
        assert _exchange(g)._local_queries is None
        before = _batches(g)
        results = _together(g, [(_meta("off"), s) for s in dev_unknowns(g)])
        assert all(_outcome(r) == ("PERMISSION_DENIED", "CONSENT_MISSING") for r in results)
        verdicts = _mixed(g, [(_meta("off"), s, VERIFY) for s in dev_unknowns(g)])
        assert all(_verdict(r) == ("PERMISSION_DENIED", "CONSENT_MISSING") for r in verdicts)
        assert _batches(g) == before
        registry = g.background.worker.exchange.metrics.registry  # type: ignore[union-attr]
        assert registry.get_sample_value("dsgw_query_batch_wait_seconds") is None  # no batch, no wait
    finally:
        g.stop()


def dev_unknowns(g: Gateway) -> list[str]:
    """Valid identity numbers (no consent anywhere in a fresh home)."""
    return [make_resident_id("120101", dt.date(1970, 1, 1), n) for n in (11, 12, 13)]


def test_when_a_batch_runs() -> None:
    # the wait is over: now, whatever else is going on
    assert batch_step(0.0, True, 0.0001) is None
    assert batch_step(-1.0, False, 0.0001) is None
    # other callbacks ready on the loop (they may bring more calls): after them
    assert batch_step(0.001, True, 1.0) == 0.0
    # nothing ready, the next call due within the wait: then
    assert batch_step(0.002, False, 0.0005) == 0.0005
    # nothing ready, no call due before the wait is over (an idle worker): now
    assert batch_step(0.002, False, 0.5) is None


def test_a_batch_alone_in_the_worker_waits_on_no_timer() -> None:
    assert batch_step(0.004, None, 0.0005, 0.001) == pytest.approx(0.004)
    assert batch_step(0.004, None, 0.0005, 0.001, alone=True) is None
    assert batch_step(0.004, False, 0.0005) == 0.0005
    assert batch_step(0.004, False, 0.0005, alone=True) is None
    assert batch_step(0.004, True, 0.0005, alone=True) == 0.0  # the turn's other calls still join


def test_when_a_batch_runs_on_a_loop_that_does_not_show_its_ready_queue() -> None:
    # uvloop: a batch that expects more calls waits out its time in one step (not one wake-up
    # per expected call: its timers count whole milliseconds, so short ones would spin)
    assert batch_step(0.002, None, 0.0005, 0.001) == pytest.approx(0.002)
    # in whole ticks, never past the wait: 1.6 ms left is a 1 ms timer, under a tick is now
    assert batch_step(0.0016, None, 0.0005, 0.001) == pytest.approx(0.001)
    assert batch_step(0.0009, None, 0.0001, 0.001) is None
    # no call due before the wait is over, or the wait is over: now
    assert batch_step(0.002, None, 0.5, 0.001) is None
    assert batch_step(0.0, None, 0.0001, 0.001) is None


# --- Verify calls join the batches ---------------------------------------------------------------


def test_verify_calls_join_a_batch_and_are_answered_as_alone(gw: Gateway, subjects: Subjects) -> None:
    """Verifies of two predicates and a Query, concurrent: decided in one batch, each answered
    (and audited) exactly as alone; a Verify never carries the data, only its yes/no."""
    chosen = _consenting(gw, subjects, 0, 4)
    unknown = subjects.unknown[1]
    _grant(gw.client("hrss"), unknown)  # a consent, but no record: the predicate says no
    (no_consent,) = dev_unknowns(gw)[:1]
    degree = ("degree_at_least", {"rank": 2})
    calls: list[Call] = [
        *((_meta("verify"), s, VERIFY) for s in chosen),
        (_meta("degree"), chosen[0], degree),
        (_meta("within-1"), chosen[2], ("graduated_within_years", {"years": 1})),  # other parameters
        (_meta("within-40"), chosen[3], ("graduated_within_years", {"years": 40})),
        (_meta("query"), chosen[1], None),
        (_meta("verify-unknown"), unknown, VERIFY),
        (_meta("verify-no-consent"), no_consent, VERIFY),
    ]
    before = _batches(gw)
    together = _mixed(gw, calls)
    after = _batches(gw)
    assert after[0] - before[0] == len(calls)  # every call went through a batch
    assert after[1] - before[1] < len(calls)  # decided and evaluated together

    alone_calls: list[Call] = [(_meta("alone"), s, ask) for _, s, ask in calls]
    alone = [_mixed(gw, [call])[0] for call in alone_calls]
    assert [_verdict(r) for r in together] == [_verdict(r) for r in alone]
    today = _exchange(gw).today()
    by_subject = dict(subjects.graduates)
    for s, r in zip(chosen, together[: len(chosen)], strict=True):
        assert isinstance(r, VerifyAnswer) and r.legal_basis
        assert r.result is (by_subject[s]["graduation_date"] >= years_before(today, 3))
    assert _verdict(together[len(chosen) + 2])[0] is (
        by_subject[chosen[3]]["graduation_date"] >= years_before(today, 40)
    )
    assert isinstance(together[len(chosen) + 3], QueryAnswer)
    assert _verdict(together[-2])[0] is False  # no record: no
    assert _verdict(together[-1]) == ("PERMISSION_DENIED", "CONSENT_MISSING")

    # one entry per call, about its subject, saying what the call alone's entry says
    entries = _audit(gw)
    for (meta, subject, ask), (alone_meta, _, _) in zip(calls, alone_calls, strict=True):
        (entry,) = entries_of(entries, meta.request_id)
        (alone_entry,) = entries_of(entries, alone_meta.request_id)
        assert entry.subject is not None and entry.subject.id == subject
        assert _entry_facts(entry) == _entry_facts(alone_entry)
        if ask is not None:
            assert entry.body.predicate is not None and entry.body.predicate.name == ask[0]
            assert dict(entry.body.predicate.parameters) == ask[1]
    denied = entries_of(entries, calls[-1][0].request_id)[0]
    assert denied.body.reason == "CONSENT_MISSING"


def _entry_facts(entry: Any) -> tuple[Any, ...]:
    """What an access entry says of its call, but its request id and time."""
    b = entry.body
    return (
        b.provider,
        b.datasets,
        b.fields,
        b.predicate,
        b.legal_basis,
        b.decision,
        b.reason,
        b.outcome.kind,
    )


@pytest.mark.parametrize("verify", [False, True], ids=["query", "verify"])
def test_a_broken_record_alone_with_rows_in_its_batch_fails_alone(
    gw: Gateway, subjects: Subjects, monkeypatch: pytest.MonkeyPatch, verify: bool
) -> None:
    """The only subject of a batch with native rows breaks the adapter's own code building its
    record: that call fails (INTERNAL, no entry); the other, about a subject without a record,
    is answered and audited as alone (it used to get the same exception)."""
    broken = _three_apart(gw, subjects)[0]
    unknown = subjects.unknown[2]
    _grant(gw.client("hrss"), unknown)
    ask = VERIFY if verify else None
    alone = _verdict(_mixed(gw, [(_meta("unknown-alone"), unknown, ask)])[0])
    adapter = _exchange(gw).adapters[Agency.EDUCATION]
    spec = adapter._datasets["graduation"]  # type: ignore[attr-defined]

    def breaks(conn: Any, groups: Any, day: dt.date) -> Any:
        if spec.build(conn, groups, day):  # any record at all: the broken subject's
            raise KeyError("a code the adapter does not know")
        return {}

    monkeypatch.setitem(adapter._datasets, "graduation", dataclasses.replace(spec, build=breaks))  # type: ignore[attr-defined]
    before = _batches(gw)
    calls: list[Call] = [(_meta("broken-only"), broken, ask), (_meta("unknown"), unknown, ask)]
    results = _mixed(gw, calls)
    assert _batches(gw)[1] - before[1] == 1
    assert _verdict(results[0]) == "KeyError"
    assert _verdict(results[1]) == alone
    entries = _audit(gw)
    assert entries_of(entries, calls[0][0].request_id) == []
    assert len(entries_of(entries, calls[1][0].request_id)) == 1


def test_a_verify_cancelled_while_it_waits_spends_nothing(gw: Gateway, subjects: Subjects) -> None:
    subject = subjects.graduates[13][0]
    meta = _cancel(gw, subject, "v-cancel-early", before_the_batch=True, verify=True)
    assert entries_of(_audit(gw), meta.request_id) == []
    assert isinstance(_mixed(gw, [(_meta("v-after", REVIEW), subject, VERIFY)])[0], VerifyAnswer)
