"""Concurrent Queries and Verifies whose steps run on the I/O threads (server databases; here
SQLite sources with ``server.inline_local_io`` off, which take the same path) are batched as a
group commit (:class:`gateway.exchange._IoQueries`): the calls that come while a batch runs on a
thread form the next one. Each set of providers has its own lane, so a slow provider holds up
only the calls that ask it; a batch's dataset groups are fetched concurrently; a call that waits
behind a stuck batch keeps its own deadline and spends nothing. (That such batches answer each
call as alone is tested with the "io" gateway of test_query_batch.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy

from adapters.agencies import Agency
from adapters.contract import SubjectKind
from gateway import exchange as exchange_module
from gateway.batch_wait import AdaptiveWait
from gateway.devsetup import DevHome
from gateway.exchange import DatasetAsk, Exchange, QueryAnswer, _IoQueries, _Lane, _Waiting
from gateway.pipeline.errors import RequestError
from tests.gateway.conftest import Gateway, Subjects, entries_of, start_gateway
from tests.gateway.test_query_batch import (
    FIELDS,
    PURPOSE,
    REVIEW,
    VERIFY,
    _ask,
    _audit,
    _batches,
    _exchange,
    _grant,
    _meta,
    _on_gateway,
    _outcome,
)

ASSISTANCE = DatasetAsk(Agency.CIVIL_AFFAIRS, "assistance", ("household_category",))
GRADUATION = DatasetAsk(Agency.EDUCATION, "graduation", FIELDS)


@pytest.fixture(scope="module")
def gw(dev_home: DevHome, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = start_gateway(
        dev_home, tmp_path_factory.mktemp("iobatch") / "home", server={"inline_local_io": False}
    )
    try:
        x = _exchange(g)
        assert x._io_queries is not None and not x._is_local([x.adapters[Agency.EDUCATION]])
        yield g
    finally:
        g.stop()


def _hold(
    monkeypatch: pytest.MonkeyPatch, x: Exchange, agency: Agency, until: Callable[[str], None]
) -> list[tuple[str, int]]:
    """Make ``agency``'s provider call ``until(operation)`` (on its I/O thread) before each
    query; returns the (operation, subjects) it was asked, in order."""
    source = x.adapters[agency].source  # type: ignore[attr-defined]
    real = source.run
    asked: list[tuple[str, int]] = []

    def held(operation: str, work: Any, **kwargs: Any) -> Any:
        asked.append((operation, int((kwargs.get("log_fields") or {}).get("count", "1"))))
        until(operation)
        return real(operation, work, **kwargs)

    monkeypatch.setattr(source, "run", held)
    return asked


class _Gate:
    """An ``until`` for :func:`_hold` (or a store read) that holds each query (with
    ``first_only``, the first) on its thread until the test releases it."""

    def __init__(self, *, first_only: bool = False) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()
        self.first_only = first_only

    def __call__(self, *args: Any) -> None:
        if self.first_only and self.entered.is_set():
            return
        self.entered.set()
        assert self.released.wait(10), "the test did not release the gate"

    async def reached(self) -> None:
        """Once a query is held (polled from the loop; an AssertionError after 10 s)."""
        give_up = time.monotonic() + 10
        while not self.entered.is_set():
            assert time.monotonic() < give_up, "no query reached the gate"
            await asyncio.sleep(0.001)


@pytest.mark.parametrize(
    ("most", "batches", "asked"),
    [
        (64, 2, [("fetch", 1), ("fetch_many", 7)]),  # a batch of 1, then one of 7
        (3, 4, [("fetch", 1), ("fetch_many", 3), ("fetch_many", 3), ("fetch", 1)]),  # 1, 3, 3, 1
    ],
    ids=["group-commit", "query_batch-3"],
)
def test_calls_that_come_while_a_batch_runs_form_the_next_ones(
    gw: Gateway,
    subjects: Subjects,
    monkeypatch: pytest.MonkeyPatch,
    most: int,
    batches: int,
    asked: list[tuple[str, int]],
) -> None:
    """The calls that come while the first call's batch holds the provider form the next batch,
    at most ``server.query_batch`` calls each, in one provider query."""
    x = _exchange(gw)
    assert x._io_queries is not None
    monkeypatch.setattr(x._io_queries, "_most", most)
    chosen = [s for s, _ in subjects.graduates][0:8]
    client = gw.client("hrss")
    for s in chosen:
        _grant(client, s)
    gate = _Gate(first_only=True)
    queries = _hold(monkeypatch, x, Agency.EDUCATION, gate)
    before = _batches(gw)

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(_ask(x, _meta("io-first"), chosen[0]))
        await gate.reached()
        rest = [asyncio.ensure_future(_ask(x, _meta("io-next"), s)) for s in chosen[1:]]
        await asyncio.sleep(0)  # they wait for the lane
        gate.released.set()
        return list(await asyncio.gather(first, *rest, return_exceptions=True))

    results = _on_gateway(gw, scenario())
    after = _batches(gw)
    by_subject = dict(subjects.graduates)
    for s, r in zip(chosen, results, strict=True):
        assert isinstance(r, QueryAnswer), r
        assert r.results[0].values["graduation_date"] == by_subject[s]["graduation_date"]
    assert (after[0] - before[0], after[1] - before[1]) == (8, batches)
    assert queries == asked


def test_a_slow_provider_holds_up_only_the_calls_that_ask_it(
    gw: Gateway, subjects: Subjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = _exchange(gw)
    subject = subjects.graduates[7][0]
    _grant(gw.client("hrss"), subject)
    gate = _Gate()
    _hold(monkeypatch, x, Agency.EDUCATION, gate)

    async def scenario() -> tuple[Any, Any]:
        slow = asyncio.ensure_future(_ask(x, _meta("io-slow"), subject))
        await gate.reached()
        # civil_affairs' lane is free: its call is answered while education still holds
        other = x.query(_meta("io-other", REVIEW), SubjectKind.PERSON, subjects.assisted[0], [ASSISTANCE])
        try:
            answered = await asyncio.wait_for(other, 5)
        finally:
            gate.released.set()
        return answered, await slow

    answered, slow = _on_gateway(gw, scenario())
    assert isinstance(answered, QueryAnswer) and answered.results[0].found
    assert isinstance(slow, QueryAnswer) and slow.results[0].found


def test_the_datasets_of_a_batch_are_fetched_concurrently(
    gw: Gateway, subjects: Subjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Query over two providers fans out on the I/O threads, as alone: each provider's query
    waits here until the other's has started."""
    x = _exchange(gw)
    subject = subjects.assisted[1]
    graduates = {s for s, _ in subjects.graduates}
    _grant(gw.client("hrss"), subject, purpose=REVIEW)
    both = threading.Barrier(2, timeout=5)

    def until(operation: str) -> None:
        both.wait()  # BrokenBarrierError (the call fails) unless the other provider is asked too

    _hold(monkeypatch, x, Agency.EDUCATION, until)
    _hold(monkeypatch, x, Agency.CIVIL_AFFAIRS, until)
    answer = _on_gateway(
        gw, x.query(_meta("io-fan-out", REVIEW), SubjectKind.PERSON, subject, [GRADUATION, ASSISTANCE])
    )
    assert isinstance(answer, QueryAnswer)
    assert [r.found for r in answer.results] == [subject in graduates, True]


def test_a_call_waiting_behind_a_stuck_batch_keeps_its_deadline_and_spends_nothing(
    gw: Gateway, subjects: Subjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = _exchange(gw)
    client = gw.client("hrss")
    stuck_subject, subject = subjects.graduates[8][0], subjects.graduates[9][0]
    _grant(client, stuck_subject)
    _grant(client, subject, uses=1, purpose=REVIEW)
    gate = _Gate(first_only=True)
    _hold(monkeypatch, x, Agency.EDUCATION, gate)
    end = time.monotonic() + 0.25  # 200 ms once the 50 ms answer reserve is kept
    short = dataclasses.replace(_meta("io-short", REVIEW), time_left=lambda: end - time.monotonic())

    async def scenario() -> tuple[Any, Any]:
        stuck = asyncio.ensure_future(_ask(x, _meta("io-stuck"), stuck_subject))
        await gate.reached()
        try:
            waited = await asyncio.gather(_ask(x, short, subject), return_exceptions=True)
        finally:
            gate.released.set()
        return waited[0], await stuck

    waited, stuck = _on_gateway(gw, scenario())
    assert isinstance(waited, RequestError)
    assert _outcome(waited) == ("UNAVAILABLE", "PROVIDER_TIMEOUT")
    assert isinstance(stuck, QueryAnswer)
    (entry,) = entries_of(_audit(gw), short.request_id)
    assert (entry.body.outcome.kind.value, entry.body.reason) == ("failed", "PROVIDER_TIMEOUT")
    # its consent's one use was not spent: the next call gets the data
    again = _on_gateway(gw, _ask(x, _meta("io-after", REVIEW), subject))
    assert isinstance(again, QueryAnswer) and again.results[0].found


@pytest.mark.postgres
def test_a_batch_over_a_postgresql_consent_store_answers_each_call_as_alone(
    dev_home: DevHome, subjects: Subjects, tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consent store on the PostgreSQL server (a server database: the I/O threads' path,
    with inline_local_io on): concurrent calls are decided with one store read, a use-limited
    consent asked twice is spent once, and each call is answered and audited as alone."""
    schema = f"iobatch_{uuid.uuid4().hex[:10]}"
    g = start_gateway(
        dev_home, tmp_path / "home", extra={"consent": {"store": pg_url, "store_schema": schema}}
    )
    try:
        x = _exchange(g)
        assert x._is_local([x.adapters[Agency.EDUCATION]]) is False
        client = g.client("hrss")
        graduates = [s for s, _ in subjects.graduates]
        consenting, limited, refusing = graduates[:4], graduates[4], graduates[5]
        for s in consenting:
            _grant(client, s)
        _grant(client, limited, uses=1, purpose=REVIEW)
        store = x.consent.store
        real = store.records_for_many
        reads: list[int] = []

        def counted(kind: Any, ids: Any, **kwargs: Any) -> Any:
            reads.append(len(ids))
            return real(kind, ids, **kwargs)

        monkeypatch.setattr(store, "records_for_many", counted)
        calls = [
            *((_meta("pg"), s, PURPOSE) for s in consenting),
            (_meta("pg-limited-a", REVIEW), limited, REVIEW),
            (_meta("pg-limited-b", REVIEW), limited, REVIEW),
            (_meta("pg-refused"), refusing, PURPOSE),
        ]
        before = _batches(g)

        async def together() -> list[Any]:
            return list(await asyncio.gather(*(_ask(x, m, s) for m, s, _ in calls), return_exceptions=True))

        results = _on_gateway(g, together())
        after = _batches(g)
        assert (after[0] - before[0], after[1] - before[1]) == (len(calls), 1)
        # one read of the store for the whole batch; spending the limited consent's use makes
        # the calls decided on it decided again on a fresh read (ConsentService.decide_many)
        assert reads == [len(calls), 5]
        by_subject = dict(subjects.graduates)
        for (_, s, _), r in zip(calls[:4], results[:4], strict=True):
            assert isinstance(r, QueryAnswer)
            assert r.results[0].values["graduation_date"] == by_subject[s]["graduation_date"]
        limited_outcomes = sorted(str(_outcome(r)) for r in results[4:6])
        assert limited_outcomes[0] == str(("PERMISSION_DENIED", "CONSENT_USE_LIMIT_REACHED"))
        assert isinstance(results[4], QueryAnswer) != isinstance(results[5], QueryAnswer)
        assert _outcome(results[6]) == ("PERMISSION_DENIED", "CONSENT_MISSING")
        entries = _audit(g)
        for meta, _, _ in calls:
            assert len(entries_of(entries, meta.request_id)) == 1
    finally:
        g.stop()
        engine = sqlalchemy.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def test_the_event_loop_busy_ratio_is_measured_on_the_io_path(gw: Gateway, subjects: Subjects) -> None:
    """dsgw_event_loop_busy_ratio (and the wait it sets) follows the loop whichever path the
    calls take: it stayed at 0 when every call went to the I/O threads."""
    x = _exchange(gw)
    subject = subjects.graduates[10][0]
    _grant(gw.client("hrss"), subject)
    registry = x.metrics.registry  # type: ignore[attr-defined]
    for _ in range(3):  # the load is measured over windows of 0.1 s
        assert isinstance(_on_gateway(gw, _ask(x, _meta("io-busy"), subject)), QueryAnswer)
        time.sleep(0.12)
    assert (registry.get_sample_value("dsgw_event_loop_busy_ratio") or 0.0) > 0.0


def test_a_refused_call_is_not_held_up_by_the_others_fetch(
    gw: Gateway, subjects: Subjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call step 4 refuses is answered (and audited as refused) once the batch's decisions
    are made, while the provider still holds the batch's other calls; it used to wait for their
    fetch, and past its deadline be audited as an allowed access that timed out."""
    x = _exchange(gw)
    allowed, refused = subjects.graduates[11][0], subjects.graduates[12][0]
    _grant(gw.client("hrss"), allowed)  # none for ``refused``
    gate = _Gate()
    _hold(monkeypatch, x, Agency.EDUCATION, gate)
    no = _meta("io-refused")

    async def scenario() -> tuple[Any, Any]:
        calls = [_ask(x, _meta("io-held"), allowed), _ask(x, no, refused)]
        started = [asyncio.ensure_future(c) for c in calls]  # one batch: the same turn
        try:
            refusal = await asyncio.wait_for(asyncio.shield(started[1]), 5)
        except RequestError as exc:
            refusal = exc
        finally:
            gate.released.set()
        return refusal, await started[0]

    refusal, answer = _on_gateway(gw, scenario())
    assert gate.entered.is_set()
    assert _outcome(refusal) == ("PERMISSION_DENIED", "CONSENT_MISSING")
    assert isinstance(answer, QueryAnswer) and answer.results[0].found
    (entry,) = entries_of(_audit(gw), no.request_id)
    assert entry.body.reason == "CONSENT_MISSING"


def _facts_of(entries: list[Any], request_id: str) -> list[tuple[Any, ...]]:
    return sorted(
        (
            e.body.provider.value,
            e.body.outcome.kind.value,
            e.body.reason,
            e.body.legal_basis.model_dump_json(),
        )
        for e in entries_of(entries, request_id)
    )


def test_a_deadline_after_step_4_is_audited_as_alone(
    gw: Gateway, subjects: Subjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A two-provider Query whose second provider answers after the deadline: the slow dataset
    is PROVIDER_TIMEOUT, the other OTHER_PROVIDER_FAILED, each entry with the basis step 4
    found, as unbatched (where the decisions come back before the fetches)."""
    x = _exchange(gw)
    subject = subjects.assisted[2]
    _grant(gw.client("hrss"), subject, purpose=REVIEW)
    gate = _Gate()
    _hold(monkeypatch, x, Agency.CIVIL_AFFAIRS, gate)

    def one(label: str) -> tuple[Any, str]:
        end = time.monotonic() + 1.0  # 950 ms once the answer reserve is kept: time for all but the held
        meta = dataclasses.replace(_meta(label, REVIEW), time_left=lambda: end - time.monotonic())

        async def ask() -> Any:
            try:
                return await x.query(meta, SubjectKind.PERSON, subject, [GRADUATION, ASSISTANCE])
            except RequestError as exc:
                return exc

        return _on_gateway(gw, ask()), meta.request_id

    try:
        batched, batched_id = one("io-late")
        monkeypatch.setattr(x, "_io_queries", None)  # the unbatched path, for comparison
        alone, alone_id = one("io-late-alone")
    finally:
        gate.released.set()
    assert _outcome(batched) == _outcome(alone) == ("UNAVAILABLE", "PROVIDER_TIMEOUT")
    entries = _audit(gw)
    facts = _facts_of(entries, batched_id)
    assert facts == _facts_of(entries, alone_id)
    assert [(f[2], bool(f[3])) for f in facts] == [
        ("PROVIDER_TIMEOUT", True),
        ("OTHER_PROVIDER_FAILED", True),
    ]


def test_a_bug_in_one_concurrent_group_fails_only_its_calls(
    gw: Gateway, subjects: Subjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of one lane with two dataset groups (a Query and a Verify of education), fetched
    on two threads: a bug in the Verify's group fails the Verify alone."""
    x = _exchange(gw)
    subject = subjects.graduates[13][0]
    _grant(gw.client("hrss"), subject)
    real = exchange_module._fetch_group

    def broken(x: Any, members: Any) -> Any:
        call, index = members[0]
        if call.plans[index].predicate is not None:
            raise KeyError("a bug")
        return real(x, members)

    monkeypatch.setattr(exchange_module, "_fetch_group", broken)
    check = _meta("io-bug-verify")

    async def scenario() -> list[Any]:
        return list(
            await asyncio.gather(
                _ask(x, _meta("io-bug-query"), subject),
                x.verify(check, SubjectKind.PERSON, subject, Agency.EDUCATION, *VERIFY),
                return_exceptions=True,
            )
        )

    answer, failed = _on_gateway(gw, scenario())
    assert isinstance(answer, QueryAnswer) and answer.results[0].found
    assert isinstance(failed, KeyError)
    assert entries_of(_audit(gw), check.request_id) == []  # nothing disclosed: INTERNAL


def test_a_call_cancelled_while_its_batch_decides_spends_nothing(
    gw: Gateway, subjects: Subjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller goes away while its batch's thread reads the consent store: the batch
    decides the others, spends nothing for it and writes no entry."""
    x = _exchange(gw)
    kept, gone = subjects.graduates[3][0], subjects.graduates[4][0]
    client = gw.client("hrss")
    for s in (kept, gone):
        _grant(client, s, uses=1, purpose=REVIEW)
    store = x.consent.store
    real = store.records_for_many
    gate = _Gate()

    def held(*args: Any, **kwargs: Any) -> Any:
        gate()
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "records_for_many", held)
    cancelled = _meta("io-gone", REVIEW)

    async def scenario() -> Any:
        first = asyncio.ensure_future(_ask(x, _meta("io-kept", REVIEW), kept))
        second = asyncio.ensure_future(_ask(x, cancelled, gone))
        await gate.reached()
        second.cancel()
        gate.released.set()
        with contextlib.suppress(asyncio.CancelledError):
            await second
        return await first

    answer = _on_gateway(gw, scenario())
    assert isinstance(answer, QueryAnswer)
    monkeypatch.setattr(store, "records_for_many", real)
    assert entries_of(_audit(gw), cancelled.request_id) == []
    again = _on_gateway(gw, _ask(x, _meta("io-gone-after", REVIEW), gone))  # its one use is there
    assert isinstance(again, QueryAnswer), again


def test_at_the_deadline_a_decided_call_keeps_its_decision(
    gw: Gateway, subjects: Subjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline passes after step 4 decided but before the call was answered (here its
    answer never comes): a refused call is still refused (CONSENT_MISSING, audited so; it used
    to be PROVIDER_TIMEOUT audited as an allowed access when the deadline won the race with
    the refusal), an allowed one is PROVIDER_TIMEOUT with the basis step 4 found."""
    x = _exchange(gw)
    allowed, refused = subjects.graduates[5][0], subjects.graduates[6][0]
    _grant(gw.client("hrss"), allowed, purpose=REVIEW)  # none for ``refused`` under REVIEW

    def decided_only(x: Any, waiting: Any, early: Any) -> Any:
        exchange_module._decide_batch(x, waiting)  # decisions made, answers never given
        return exchange_module._BatchRound()

    monkeypatch.setattr(exchange_module, "_io_batch_steps", decided_only)
    end = time.monotonic() + 0.5
    metas = [
        dataclasses.replace(_meta(label, REVIEW), time_left=lambda: end - time.monotonic())
        for label in ("io-deadline-allowed", "io-deadline-refused")
    ]

    async def scenario() -> list[Any]:
        calls = [_ask(x, metas[0], allowed), _ask(x, metas[1], refused)]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    timed_out, refusal = _on_gateway(gw, scenario())
    assert _outcome(timed_out) == ("UNAVAILABLE", "PROVIDER_TIMEOUT")
    code, reason = _outcome(refusal)
    assert code == "PERMISSION_DENIED" and reason.startswith("CONSENT_")  # no consent for REVIEW
    entries = _audit(gw)
    (late,) = entries_of(entries, metas[0].request_id)
    assert (late.body.reason, late.body.legal_basis.kind.value) == ("PROVIDER_TIMEOUT", "consent")
    (no,) = entries_of(entries, metas[1].request_id)
    assert no.body.reason == reason


def test_a_batch_whose_groups_cannot_all_be_dispatched_settles_every_call_and_moves_on_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The I/O threads shut down while a batch's second dataset group is handed to them: that
    group's calls fail at once, the first group's are answered, and the lane starts its next
    batch once (it used to count the groups per lane and could start two)."""

    def fetched(x: Any, members: Any) -> Any:
        return [(w, i, {"ok": True}) for w, i in members]

    monkeypatch.setattr(exchange_module, "_fetch_group", fetched)

    class ShutDownAfterOne(ThreadPoolExecutor):
        def submit(self, *args: Any, **kwargs: Any) -> Any:
            if getattr(self, "_given", False):
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._given = True
            return super().submit(*args, **kwargs)

    async def scenario(pool: ThreadPoolExecutor) -> tuple[list[Any], int]:
        loop = asyncio.get_running_loop()
        exchange: Any = SimpleNamespace(executor=pool)
        calls = []
        for _ in range(2):
            w = _Waiting(_meta("io-shutdown"), [None], None, loop.create_future())  # type: ignore[list-item, arg-type]
            w.decisions, w.values = [], [exchange_module._PENDING]
            calls.append(w)
        batch = exchange_module._BatchRound(allowed=calls, groups=[[(calls[0], 0)], [(calls[1], 0)]])
        batches = _IoQueries(exchange, 64, AdaptiveWait(0.004))
        nexts = []
        monkeypatch.setattr(batches, "_next", lambda lane: nexts.append(lane))
        job = loop.create_future()
        job.set_result(batch)
        batches._stepped(_Lane(busy=True), calls, job)
        await asyncio.wait([w.future for w in calls], timeout=10)
        await asyncio.sleep(0.01)  # the first group's callback has run
        return [w.future for w in calls], len(nexts)

    with ShutDownAfterOne(1) as pool:
        futures, nexts = asyncio.run(scenario(pool))
    assert futures[0].result() == ([], [{"ok": True}])
    assert isinstance(futures[1].exception(), RuntimeError)
    assert nexts == 1
