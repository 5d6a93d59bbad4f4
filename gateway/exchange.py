"""The request path of DataExchange, over plain data (the gRPC servicer translates the wire).

    authenticate -> agreement -> purpose -> consent -> identity -> fetch -> minimise/mask
    -> audit (fail closed) -> respond

Each step is a small function of :mod:`gateway.pipeline`; this module runs them in order for
Query, Verify and BatchVerify, runs the blocking ones (consent store, adapters) inline when they
touch only embedded SQLite files and on the I/O threads otherwise (bounded by the caller's
deadline), fans a multi-provider Query out concurrently, and writes the audit entry of every
outcome (allowed, denied, not found, provider failed) before the answer leaves. Identifier and
argument errors are checked first, so that a denial names a valid subject.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import functools
import hashlib
import math
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog

from adapters.agencies import Agency
from adapters.contract import (
    MAX_PARAMETER,
    Adapter,
    DatasetDescriptor,
    PredicateDescriptor,
    Subject,
    SubjectKind,
)
from audit.errors import AuditError
from dsgw.v1 import audit_pb2
from gateway import localtime
from gateway.batch_wait import AdaptiveWait
from gateway.config import Agreement, GatewayConfig
from gateway.consent.decision import Basis, BasisKind, CheckRequest, Decision
from gateway.consent.errors import StoreError
from gateway.consent.service import ConsentService
from gateway.idempotency import IdempotencyCache
from gateway.pipeline import consent as consent_step
from gateway.pipeline import fetch as fetch_step
from gateway.pipeline.agreement import AgreementBook, allowed_fields, allowed_predicate
from gateway.pipeline.errors import (
    AuditFailed,
    Conflict,
    ConsentStoreDown,
    InvalidArgument,
    NotFound,
    RequestError,
    Unavailable,
    echo_name,
)
from gateway.pipeline.identity import subject_of
from gateway.pipeline.minimize import minimize
from gateway.pipeline.purpose import check_purpose, known_purpose
from gateway.pipeline.rate import RateLimiter
from gateway.pipeline.record import AccessFacts, Verdict, access_entries, access_entry
from gateway.purposes import PurposeCatalogue

__all__ = [
    "BatchItem",
    "BatchOutcome",
    "CallMeta",
    "DatasetAnswer",
    "DatasetAsk",
    "Exchange",
    "QueryAnswer",
    "VerifyAnswer",
]

_log = structlog.get_logger("gateway.exchange")
T = TypeVar("T")

#: Of the caller's deadline, what is kept to write the audit entry and answer after a provider
#: call is given up (a durable append under load takes a few milliseconds).
ANSWER_RESERVE_S = 0.05

#: The audit reason of a dataset fetched for a Query that another provider's failure refused:
#: its data was not given.
OTHER_PROVIDER_FAILED = "OTHER_PROVIDER_FAILED"

REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}$")
"""A request id (``RequestMeta.request_id``, a Grant's ``request_id``): 1-128 characters of
``A-Z a-z 0-9 . _ : @ / + = -``, a letter or digit first."""
_OPERATOR = re.compile(r"^[^\x00-\x1f\x7f]{0,128}$")


class AuditSink(Protocol):
    async def append_async(self, entry: Any) -> Any: ...

    def append_many(self, entries: Any) -> Any: ...


class Metrics(Protocol):
    def decision(self, method: str, caller: str, provider: str, outcome: str) -> None: ...

    def query_batch(self, size: int) -> None: ...


class _NoMetrics:
    def decision(self, method: str, caller: str, provider: str, outcome: str) -> None:
        return None

    def query_batch(self, size: int) -> None:
        return None


# --- plain requests and answers ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallMeta:
    caller: Agency
    request_id: str
    purpose: str
    operator: str = ""
    #: Seconds left before the caller's deadline (None: no deadline).
    time_left: Callable[[], float | None] = lambda: None


@dataclass(frozen=True, slots=True)
class DatasetAsk:
    provider: Agency | None
    dataset: str
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DatasetAnswer:
    provider: Agency
    dataset: str
    found: bool
    values: Mapping[str, Any]
    legal_basis: str


@dataclass(frozen=True, slots=True)
class QueryAnswer:
    request_id: str
    results: tuple[DatasetAnswer, ...]
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class VerifyAnswer:
    request_id: str
    #: True / False, or None: the provider holds no record of the subject.
    result: bool | None
    legal_basis: str
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class BatchItem:
    item_id: str
    kind: SubjectKind | None
    subject_id: str


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    item_id: str
    result: bool | None = None
    error_reason: str = ""


MAX_ITEM_ID = 128
"""The longest BatchVerify item id (characters); a longer one is answered INVALID_ITEM_ID."""
MAX_REMEMBERED_ITEMS = 100_000
"""Items of one BatchVerify request id remembered for replay; later items are answered (and
audited) but a re-sent one is evaluated again."""


@dataclass(slots=True)
class _BatchMemory:
    """What a BatchVerify request id has answered: when it started, its header's fingerprint, and
    per item id the subject's fingerprint with the outcome."""

    started: float
    header: bytes
    items: dict[str, tuple[bytes, BatchOutcome]] = field(default_factory=dict)


@dataclass(slots=True)
class _Plan:
    """One provider dataset of a request, as the steps resolve it. A Verify's plan names its
    predicate and parameters: step 6 evaluates it instead of fetching ``fields`` (then the
    fields its consent must cover)."""

    agreement: Agreement
    descriptor: DatasetDescriptor
    adapter: Adapter
    fields: tuple[str, ...]
    facts: AccessFacts
    decision: Decision | None = None
    values: Mapping[str, Any] | None = None
    predicate: str | None = None
    params: tuple[tuple[str, int], ...] = ()

    def provider_step(self, subject: Subject, timeout: float | None) -> Any:
        """Step 6 for one subject: the fields' values, or the predicate's answer (None: no
        record)."""
        if self.predicate is not None:
            return fetch_step.evaluate(self.adapter, self.predicate, subject, dict(self.params), timeout)
        return fetch_step.fetch(self.adapter, self.descriptor.name, subject, self.fields, timeout)

    def provider_step_many(self, subjects: Sequence[Subject], timeout: float | None) -> Sequence[Any]:
        """Step 6 for many subjects in one provider query: one answer each, in order; a subject
        that fails alone gets its exception (:func:`fetch_step.fetch_many`)."""
        if self.predicate is not None:
            return fetch_step.evaluate_many(
                self.adapter, self.predicate, subjects, dict(self.params), timeout, isolate=True
            )
        return fetch_step.fetch_many(self.adapter, self.descriptor.name, subjects, self.fields, timeout)


def _pack_answer(answer: QueryAnswer | VerifyAnswer) -> tuple[Any, ...]:
    """A kept answer as nested tuples of atoms (which the garbage collector stops tracking).
    Dates are kept as day numbers, with the names of the fields that held them: pickling a date
    object costs about three times the rest of a three-field answer."""
    if isinstance(answer, VerifyAnswer):
        return ("verify", answer.request_id, answer.result, answer.legal_basis)
    results = []
    for r in answer.results:
        items: list[tuple[str, Any]] = []
        dates: list[str] = []
        for name, value in r.values.items():
            if type(value) is dt.date:
                items.append((name, value.toordinal()))
                dates.append(name)
            else:
                items.append((name, value))
        results.append((r.provider.value, r.dataset, r.found, tuple(items), tuple(dates), r.legal_basis))
    return ("query", answer.request_id, tuple(results))


def _unpack_answer(packed: tuple[Any, ...]) -> QueryAnswer | VerifyAnswer:
    if packed[0] == "verify":
        return VerifyAnswer(packed[1], packed[2], packed[3])
    answers = []
    for provider, dataset, found, items, dates, basis in packed[2]:
        values = dict(items)
        for name in dates:
            values[name] = dt.date.fromordinal(values[name])
        answers.append(DatasetAnswer(Agency(provider), dataset, found, values, basis))
    return QueryAnswer(packed[1], tuple(answers))


def consented_fields(pd: PredicateDescriptor, descriptor: DatasetDescriptor) -> tuple[str, ...]:
    """The fields a consent must cover for a comparison by ``pd``: those it reads; all of the
    dataset's for a predicate that does not say (an adapter of its own: fail closed)."""
    return pd.fields or descriptor.field_names()


def _fingerprint(*parts: object) -> bytes:
    return hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=16).digest()


# --- concurrent Queries and Verifies over local sources, decided and fetched together ------------

_Steps = tuple[list[Decision], list[Any] | None]

LIBUV_TICK_S = 0.001
"""The resolution of uvloop's timers (libuv counts milliseconds)."""


def expected_gap(average: float, since_last: float) -> float:
    """How long until the next call, for a waiting batch: the recent average time between calls,
    unless none came for longer than that: then that time. (The last gap alone is no guide:
    gRPC hands calls over in bursts, and batches that ran at every long gap were a quarter
    smaller at the peak.)"""
    return max(average, since_last)


def batch_step(
    left: float, ready: bool | None, gap: float, tick: float = 0.0, *, alone: bool = False
) -> float | None:
    """When a waiting batch of Queries and Verifies runs: None now; 0 after the callbacks ready
    on the loop (they may bring more calls); else in this many seconds, when the next call is
    due.

    ``left``: seconds left of the batch's wait; ``ready``: other callbacks are ready on the
    loop, None if the loop does not tell (uvloop): then a batch that expects more calls waits
    out what is left of its time in one step, in whole ``tick`` (the loop's timer resolution:
    a shorter timer fires at once, a longer one would overrun the wait), and runs now when less
    than a tick is left; ``gap``: the recent average time between calls; ``alone``: the batch
    holds every Query and Verify in progress in the worker. Such a batch does not wait on a
    timer: a caller that sends its next call once this one is answered cannot add to it, and
    calls that come this seldom need no batching (under load, calls writing their audit entries
    are in progress too)."""
    if left <= 0:
        return None
    if ready:
        return 0.0
    if gap >= left or alone:
        return None
    if ready is not None:
        return gap
    step = math.floor(left / tick + 1e-9) * tick if tick > 0 else left
    return step if step > 0 else None


@dataclass(slots=True)
class _Waiting:
    meta: CallMeta
    plans: Sequence[_Plan]  # one per dataset of the call (a Verify: one)
    subject: Subject
    future: asyncio.Future[_Steps]
    #: once step 4 decided: the decisions; once it allowed every dataset, also each dataset's
    #: values (or answer, or error) as its group comes in, _PENDING until then (written on the
    #: batch's thread, or on the loop for groups fetched concurrently; read at the deadline)
    decisions: list[Decision] | None = None
    values: list[Any] | None = None


_PENDING: Any = object()
"""A dataset of an allowed call whose group is not fetched yet."""


class _LocalQueries:
    """The consent and provider steps of concurrent Queries and Verifies over local sources,
    run together (they run on the event loop anyway). One consent-store read decides them all
    (:meth:`ConsentService.decide_many`; a Query's datasets together, as alone) and one
    provider query per dataset and field list fetches the allowed Queries' datasets
    (:func:`fetch_step.fetch_many`), one per predicate and parameters evaluates the allowed
    Verifies (:func:`fetch_step.evaluate_many`), instead of one of each per call. Each call
    gets the decisions, values and errors :meth:`Exchange._consent_then_fetch` and its fetches
    would give it; everything after (audit, answer) stays per call.

    gRPC hands a worker one new call per turn of its event loop, so calls rarely reach the
    consent step in the same turn. A batch therefore runs once nothing else is ready on the loop
    and no call is due (by the recent arrival rate) before its wait is over
    (:func:`batch_step`): under load it gathers the calls of a few turns, at most ``wait_s``
    after its first call; when calls come slower than one per ``wait_s``, or the batch holds
    every Query and Verify in progress in the worker, its calls run at the end of their turn.
    With ``adaptive``, ``wait_s`` is the longest wait: on a quiet loop there is none
    (:mod:`gateway.batch_wait`)."""

    def __init__(self, exchange: Exchange, most: int, wait_s: float, *, adaptive: bool = False) -> None:
        self._x = exchange
        self._most = most
        #: the loop's load, and with ``adaptive`` (``server.query_batch_adaptive``) the wait that
        #: follows it: none on a quiet loop, ``wait_s`` on a busy one (gateway/batch_wait.py)
        self.load = AdaptiveWait(wait_s, follow=adaptive)
        self._waiting: list[_Waiting] = []
        self._since = 0.0  # when the batch's first call arrived (loop time)
        self._last = -math.inf  # when the last call arrived
        self._gap = 1.0  # moving average of the time between arrivals (seconds)
        self._scheduled = False

    def submit(self, meta: CallMeta, plans: Sequence[_Plan], subject: Subject) -> asyncio.Future[_Steps]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.load.observe(now)
        self._gap = 0.9 * self._gap + 0.1 * min(now - self._last, 1.0)
        self._last = now
        future: asyncio.Future[_Steps] = loop.create_future()
        if not self._waiting:
            self._since = now
        self._waiting.append(_Waiting(meta, plans, subject, future))
        if len(self._waiting) >= self._most:
            self._run_now()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._run)
        return future

    def _run(self) -> None:
        self._scheduled = False
        if not self._waiting:  # run already: the batch filled up
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        # asyncio's queue of ready callbacks (uvloop's is not visible: None)
        queue = getattr(loop, "_ready", None)
        gap = expected_gap(self._gap, now - self._last)
        left = self.load.wait - (now - self._since)
        alone = self._x._calls_in_progress <= len(self._waiting)
        if queue is None:  # uvloop: its timers count whole milliseconds
            step = batch_step(left, None, gap, LIBUV_TICK_S, alone=alone)
        else:
            step = batch_step(left, bool(queue), gap, alone=alone)
        if step is None:
            self._run_now()
            return
        self._scheduled = True
        if step == 0:
            loop.call_soon(self._run)
        else:
            loop.call_later(step, self._run)

    def _run_now(self) -> None:
        # the calls whose caller went away while they waited: nothing is decided or spent for them
        waiting = [w for w in self._waiting if not w.future.done()]
        self._waiting = []
        if not waiting:
            return
        try:
            self._x.metrics.query_batch(len(waiting))
            batch = _batch_steps(self._x, waiting)
            _settle_all(batch.settled)
            _settle_all(batch.outcomes())
        except BaseException as exc:  # a bug: every call of the batch fails (none hangs)
            for w in waiting:
                _settle(w.future, error=_own_copy(exc))  # one instance each: tracebacks apart
            if not isinstance(exc, Exception):
                raise


@dataclass(slots=True)
class _Lane:
    """The calls waiting for one set of providers' batch on the I/O threads, and whether one runs."""

    waiting: list[_Waiting] = field(default_factory=list)
    busy: bool = False


class _IoQueries:
    """The consent and provider steps of concurrent Queries and Verifies that run on the I/O
    threads (a server database: a PostgreSQL provider or consent store; or any source with
    ``server.inline_local_io`` off), taken together as :class:`_LocalQueries` takes those over
    local sources: one consent-store read and one provider query per dataset and field list (or
    predicate and parameters) for a batch, each call answered as alone.

    Such calls barely load the event loop, so a batch does not wait on a timer: it is a group
    commit. A call to an idle lane starts a batch at the end of its turn of the loop; the calls
    that come while it runs on a thread wait, and form the next batch (at most ``most`` calls)
    when it is done. Under load the batches grow with the store's and the providers' round
    trips; on a quiet worker a call runs at once, alone, as unbatched.

    Each set of providers has its own lane, so a slow provider holds up only the calls that ask
    it (as alone, each call waits for its own providers only). A call refused by step 4 is
    answered as soon as the batch's decisions are made, not after the others' fetches; the
    datasets of a batch are fetched concurrently, one I/O thread per dataset group, when there
    are several (a Query over several providers fans out, as alone), and a call is answered once
    its own datasets are in. Each call keeps its own deadline (:meth:`Exchange._io_steps`)."""

    def __init__(self, exchange: Exchange, most: int, load: AdaptiveWait) -> None:
        self._x = exchange
        self._most = most
        #: the event loop's load (the busy-ratio metric), observed at each call as _LocalQueries does
        self._load = load
        self._lanes: dict[tuple[str, ...], _Lane] = {}

    def submit(self, meta: CallMeta, plans: Sequence[_Plan], subject: Subject) -> _Waiting:
        loop = asyncio.get_running_loop()
        self._load.observe(loop.time())
        key = tuple(sorted({p.adapter.agency.value for p in plans}))
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        waiting = _Waiting(meta, plans, subject, loop.create_future())
        lane.waiting.append(waiting)
        if not lane.busy:
            lane.busy = True
            loop.call_soon(self._start, lane)  # the calls of this turn join it
        return waiting

    def _start(self, lane: _Lane) -> None:
        # the calls whose caller went away (or whose time ran out) while they waited: nothing
        # is decided or spent for them
        lane.waiting = [w for w in lane.waiting if not w.future.done()]
        waiting, lane.waiting = lane.waiting[: self._most], lane.waiting[self._most :]
        if not waiting:
            lane.busy = False
            return
        x = self._x
        try:
            x.metrics.query_batch(len(waiting))
            loop = asyncio.get_running_loop()
            job = loop.run_in_executor(x.executor, _io_batch_steps, x, waiting, self._early(loop))
        except BaseException as exc:  # say, the I/O threads were shut down: none hangs
            self._failed(lane, waiting, exc)
            return
        job.add_done_callback(functools.partial(self._stepped, lane, waiting))

    @staticmethod
    def _early(loop: asyncio.AbstractEventLoop) -> Callable[[list[tuple[_Waiting, Any]]], None]:
        """How the batch's thread hands the loop the calls it settled before fetching."""

        def hand(settled: list[tuple[_Waiting, Any]]) -> None:
            loop.call_soon_threadsafe(_settle_all, settled)

        return hand

    def _stepped(self, lane: _Lane, waiting: list[_Waiting], job: asyncio.Future[_BatchRound]) -> None:
        try:
            batch = job.result()
            _settle_all(batch.settled)
            if not batch.groups:  # fetched on the batch's thread (one group, or none)
                _settle_all(batch.outcomes())
                self._next(lane)
                return
        except BaseException as exc:  # a bug: every call of the batch fails (none hangs)
            self._failed(lane, waiting, exc)
            return
        # several dataset groups: each on its own I/O thread, concurrently; a call is answered
        # once its own groups are in, the lane moves on once all of this batch's are
        loop = asyncio.get_running_loop()
        out = [len(batch.groups)]  # this batch's groups still out
        for k, members in enumerate(batch.groups):
            try:
                fetch = loop.run_in_executor(self._x.executor, _fetch_group, self._x, members)
            except BaseException as exc:  # the I/O threads were shut down: the rest fail now
                for rest in batch.groups[k:]:
                    for w, _ in rest:
                        _settle(w.future, error=_own_copy(exc))
                out[0] -= len(batch.groups) - k
                if out[0] == 0:
                    self._next(lane)
                return
            fetch.add_done_callback(functools.partial(self._fetched, lane, members, out))

    def _fetched(
        self,
        lane: _Lane,
        members: list[tuple[_Waiting, int]],
        out: list[int],
        fetch: asyncio.Future[list[Any]],
    ) -> None:
        try:
            try:
                answers = fetch.result()
            except BaseException as exc:  # a bug in one group: its members get it, as gather would
                answers = [(w, i, _own_copy(exc)) for w, i in members]
            for w, i, value in answers:
                assert w.values is not None and w.decisions is not None
                w.values[i] = value
                if all(v is not _PENDING for v in w.values):
                    _settle(w.future, result=(w.decisions, w.values))
        except BaseException as exc:  # a bug here: the group's calls fail, none hangs
            for w, _ in members:
                _settle(w.future, error=_own_copy(exc))
        finally:
            out[0] -= 1
            if out[0] == 0:
                self._next(lane)

    def _failed(self, lane: _Lane, waiting: list[_Waiting], exc: BaseException) -> None:
        for w in waiting:
            _settle(w.future, error=_own_copy(exc))
        self._next(lane)

    def _next(self, lane: _Lane) -> None:
        """The lane's batch is done: the calls that came meanwhile form the next one, now."""
        lane.busy = False
        if lane.waiting:
            lane.busy = True
            self._start(lane)


@dataclass(slots=True)
class _BatchRound:
    """Steps 4 and 6 of one batch, as plain data: the calls settled already (refused, failed,
    or answered by the single-call path) with their outcome, the allowed calls (their
    decisions, and their values as their groups come in: :attr:`_Waiting.values`), and the
    dataset groups still to fetch (each a list of (call, plan index))."""

    settled: list[tuple[_Waiting, _Steps | BaseException]] = field(default_factory=list)
    allowed: list[_Waiting] = field(default_factory=list)
    groups: list[list[tuple[_Waiting, int]]] = field(default_factory=list)

    def fill(self, answers: Sequence[tuple[_Waiting, int, Any]]) -> None:
        for w, i, value in answers:
            assert w.values is not None
            w.values[i] = value

    def fetch_here(self, x: Exchange) -> None:
        """Fetch every group now, one after another (blocking)."""
        for members in self.groups:
            try:
                answers = _fetch_group(x, members)
            except Exception as exc:  # a bug in one group: its members get it, as gather would
                answers = [(w, i, _own_copy(exc)) for w, i in members]
            self.fill(answers)
        self.groups = []

    def outcomes(self) -> list[tuple[_Waiting, _Steps | BaseException]]:
        """The allowed calls' steps (decisions and values), once their groups are in."""
        assert not self.groups, "fetch the groups first"
        out: list[tuple[_Waiting, _Steps | BaseException]] = []
        for w in self.allowed:
            assert w.decisions is not None and w.values is not None
            out.append((w, (w.decisions, w.values)))
        return out


def _settle_all(outcomes: Sequence[tuple[_Waiting, _Steps | BaseException]]) -> None:
    for w, outcome in outcomes:
        _settle_with(w.future, outcome)


def _batch_steps(x: Exchange, waiting: list[_Waiting]) -> _BatchRound:
    """Steps 4 and 6 of a batch of calls (blocking), every group fetched: one call of one
    dataset goes the way of a call alone (:meth:`Exchange._consent_then_fetch`); otherwise
    :func:`_decide_batch`, then the groups one after another."""
    alone = _alone(x, waiting)
    if alone is not None:
        return alone
    batch = _decide_batch(x, waiting)
    batch.fetch_here(x)
    return batch


def _io_batch_steps(
    x: Exchange, waiting: list[_Waiting], early: Callable[[list[tuple[_Waiting, Any]]], None]
) -> _BatchRound:
    """:func:`_batch_steps` on an I/O thread: the calls settled by step 4 are handed to the
    loop (``early``) before any fetch; one dataset group is fetched here, several are left to
    the loop (each on its own thread)."""
    alone = _alone(x, waiting)
    if alone is not None:
        return alone
    batch = _decide_batch(x, waiting)
    if batch.settled and batch.groups:  # a refusal is not held up by the others' fetch
        early(batch.settled)
        batch.settled = []
    if len(batch.groups) == 1:
        batch.fetch_here(x)
    return batch


def _alone(x: Exchange, waiting: list[_Waiting]) -> _BatchRound | None:
    """A batch of one call of one dataset, the way of a call alone; None for any other."""
    if len(waiting) != 1 or len(waiting[0].plans) != 1:
        return None
    w = waiting[0]
    if w.future.done():  # its caller went away meanwhile: nothing is decided or spent
        return _BatchRound()
    try:
        steps: _Steps | BaseException = x._consent_then_fetch(w.meta, w.plans, w.subject)
    except Exception as exc:  # the caller's to handle, as from _blocking
        steps = exc
    return _BatchRound(settled=[(w, steps)])


def _decide_batch(x: Exchange, waiting: list[_Waiting]) -> _BatchRound:
    """Step 4 for a batch (blocking): the calls refused or failed with their outcome, and for the
    calls whose every dataset is allowed, their decisions and the dataset groups to fetch (each
    dataset joins the others' of the same provider dataset and field list, or predicate and
    parameters). A call whose caller went away meanwhile (its future is done: only its caller
    cancels it before the batch settles it) is skipped: nothing is decided or spent for it."""
    batch = _BatchRound()
    live: list[_Waiting] = []
    for w in waiting:
        if w.future.done():
            continue
        try:  # no time for the providers: no consent use is spent
            left = x._time_left(w.meta)
            for p in w.plans:
                fetch_step.require_time(p.adapter, left)
        except RequestError as exc:
            batch.settled.append((w, exc))
            continue
        live.append(w)
    calls = [
        [
            x._check(w.meta.caller, p.agreement, p.descriptor, p.fields, w.subject, w.meta.purpose)
            for p in w.plans
        ]
        for w in live
    ]

    def proceed(i: int) -> bool:
        # a call whose time ran out meanwhile (others' consent writes), or whose caller went
        # away, spends no use: as alone, it is PROVIDER_TIMEOUT before its consent step
        return not live[i].future.done() and fetch_step.has_time(x._time_left(live[i].meta))

    decided = x.consent.decide_many(calls, consume=True, proceed=proceed)
    groups: dict[tuple[Any, ...], list[tuple[_Waiting, int]]] = {}
    for w, outcome in zip(live, decided, strict=True):
        if outcome is None:  # not decided: its time ran out
            batch.settled.append((w, fetch_step.no_time(w.plans[0].adapter)))
        elif isinstance(outcome, StoreError):
            batch.settled.append((w, outcome))
        elif not all(d.allowed for d in outcome):  # refused: nothing is fetched
            w.decisions = outcome  # (values stay None: at the deadline, still a refusal)
            batch.settled.append((w, (outcome, None)))
        else:
            w.values = [_PENDING] * len(w.plans)
            w.decisions = outcome
            batch.allowed.append(w)
            for i, p in enumerate(w.plans):
                key = (id(p.adapter), p.descriptor.name, p.fields, p.predicate, p.params)
                groups.setdefault(key, []).append((w, i))
    batch.groups = list(groups.values())
    return batch


def _timed_out(adapters: Sequence[Adapter]) -> Unavailable:
    """The PROVIDER_TIMEOUT of a blocking step given up at the caller's deadline."""
    names = ", ".join(sorted({a.agency.value for a in adapters})) or "the consent store"
    return Unavailable("PROVIDER_TIMEOUT", f"{names} did not answer before the deadline", retry_after_s=1.0)


def _late(adapter: Adapter) -> Unavailable:
    """The PROVIDER_TIMEOUT of a dataset whose provider did not answer within the call's time."""
    return Unavailable(
        "PROVIDER_TIMEOUT",
        f"provider {adapter.agency.value} did not answer within the call's deadline",
        retry_after_s=1.0,
        provider=adapter.agency.value,
    )


def _fetch_group(x: Exchange, members: list[tuple[_Waiting, int]]) -> list[tuple[_Waiting, int, Any]]:
    """Step 6 for the allowed calls of one dataset and field list (or one predicate and its
    parameters), in one provider query: each member (a call and the index of its plan) with
    its values, answer or error.
    Each call keeps its own deadline: one with no time left now is PROVIDER_TIMEOUT (as a
    fetch of it alone would be), the query runs with the longest time left among the others,
    and a call whose own time ran out before the answer came is PROVIDER_TIMEOUT."""
    first, index = members[0]
    plan = first.plans[index]
    out: list[tuple[_Waiting, int, Any]] = []
    asking: list[tuple[_Waiting, int, float | None]] = []
    for w, i in members:
        left = x._time_left(w.meta)
        try:
            fetch_step.require_time(plan.adapter, left)
        except RequestError as exc:
            out.append((w, i, exc))
            continue
        asking.append((w, i, left))
    if not asking:
        return out
    lefts = [left for _, _, left in asking]
    timeout = None if any(t is None for t in lefts) else max(t for t in lefts if t is not None)
    started = time.monotonic()
    values: list[Any]
    try:
        values = list(plan.provider_step_many([w.subject for w, _, _ in asking], timeout))
    except Exception as exc:  # the provider failed the query: each call as it would alone
        values = [_own_copy(exc) for _ in asking]  # one instance each: tracebacks apart
    took = time.monotonic() - started
    for (w, i, left), value in zip(asking, values, strict=True):
        if left is not None and took > left and not isinstance(value, BaseException):
            value = _late(plan.adapter)
        out.append((w, i, value))
    return out


async def _steps_of(future: asyncio.Future[_Steps]) -> _Steps:
    """A batched call's consent and fetch steps. A cancellation before they run cancels the
    call (the batch skips it: nothing decided or spent); one after (a consent use may be spent,
    the provider was read) lets the call go on to its audit entry, as the unbatched path, which
    has no pause between them, would: the task stays cancelling, and
    :meth:`Exchange._answer_once` raises the cancellation once the answer is kept."""
    try:
        return await future
    except asyncio.CancelledError:
        if not future.done() or future.cancelled():
            raise
        return future.result()  # an error of the steps is raised, and handled, as usual


def _own_copy(exc: BaseException) -> BaseException:
    """A copy of ``exc`` for one more waiting call (tracebacks apart), or ``exc`` itself when it
    cannot be copied (its constructor wants arguments it does not keep): a copy that fails must
    not leave the other calls of the batch unsettled."""
    try:
        return copy.copy(exc)
    except Exception:
        return exc


def _settle_with(future: asyncio.Future[_Steps], outcome: _Steps | BaseException) -> None:
    if isinstance(outcome, BaseException):
        _settle(future, error=outcome)
    else:
        _settle(future, result=outcome)


def _settle(
    future: asyncio.Future[_Steps], *, result: _Steps | None = None, error: BaseException | None = None
) -> None:
    if future.done():
        return
    if error is not None:
        if isinstance(error, StopIteration | StopAsyncIteration):  # a future refuses these
            wrapped = RuntimeError(f"{type(error).__name__} in a query batch")
            wrapped.__cause__ = error
            error = wrapped
        future.set_exception(error)
    else:
        assert result is not None
        future.set_result(result)


# --- the exchange --------------------------------------------------------------------------------


class Exchange:
    """The request path over one process's runtime: agreements, adapters, consent service, audit
    log, rate limiter, idempotency cache and I/O threads."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        adapters: Mapping[Agency, Adapter],
        consent: ConsentService,
        audit: AuditSink,
        executor: ThreadPoolExecutor,
        catalogue: PurposeCatalogue | None = None,
        metrics: Metrics | None = None,
        today: Callable[[], dt.date] = localtime.today,
    ) -> None:
        self.config = config
        self.node = config.node
        self.book = AgreementBook(config.agreements)
        self.catalogue = catalogue or config.catalogue
        self.adapters = dict(adapters)
        self.consent = consent
        self.audit = audit
        self.executor = executor
        self.metrics: Metrics = metrics or _NoMetrics()
        self.today = today
        self.limiter = RateLimiter()
        self.answers: IdempotencyCache[Any] = IdempotencyCache(
            config.server.idempotency_ttl_s, pack=_pack_answer, unpack=_unpack_answer
        )
        most = config.server.query_batch
        wait = config.server.query_batch_wait_ms / 1000
        self._local_queries = (
            _LocalQueries(self, most, wait, adaptive=config.server.query_batch_adaptive) if most > 1 else None
        )
        #: batches on the I/O threads observe the same load as _LocalQueries (one event loop),
        #: so the busy-ratio metric is measured whichever path the calls take
        self._io_queries = (
            _IoQueries(self, most, self._local_queries.load) if self._local_queries is not None else None
        )
        #: Queries and Verifies between their start and their answer (a batch holding all of
        #: them waits for no more: batch_step's ``alone``)
        self._calls_in_progress = 0
        self._batches: OrderedDict[tuple[str, str], _BatchMemory] = OrderedDict()
        inline = config.server.inline_local_io
        self._inline_store = inline and getattr(consent.store, "backend", "") == "sqlite"
        self._local_adapters = {
            id(a)
            for a in self.adapters.values()
            if inline and getattr(getattr(getattr(a, "source", None), "config", None), "is_sqlite", False)
        }
        self.datasets: dict[tuple[Agency, str], DatasetDescriptor] = {}
        #: the SENSITIVE fields of each dataset (derived once: every consent check needs them)
        self._sensitive: dict[tuple[Agency, str], frozenset[str]] = {}
        self.predicates: dict[tuple[Agency, str], PredicateDescriptor] = {}
        for agency, adapter in self.adapters.items():
            description = adapter.describe()
            for d in description.datasets:
                self.datasets[(agency, d.name)] = d
                self._sensitive[(agency, d.name)] = frozenset(
                    f.name for f in d.fields if f.sensitivity.value == "sensitive"
                )
            for p in description.predicates:
                self.predicates[(agency, p.name)] = p

    @property
    def batch_load(self) -> AdaptiveWait | None:
        """The Query and Verify batches' wait and the loop's load it follows (None: they are not
        batched)."""
        return self._local_queries.load if self._local_queries is not None else None

    # -- helpers ---------------------------------------------------------------------------------

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _is_local(self, adapters: Sequence[Adapter]) -> bool:
        """Whether a step reads only embedded (SQLite) sources and store: those run inline on
        the event loop when ``server.inline_local_io`` is on (no thread hand-off; each call is
        still bounded by its deadline inside the adapter)."""
        return self._inline_store and all(id(a) in self._local_adapters for a in adapters)

    async def _blocking(
        self, fn: Callable[..., T], *args: Any, adapters: Sequence[Adapter], timeout: float | None
    ) -> T:
        """Run a blocking step (consent store, providers): inline when everything it touches is
        local, else on the I/O threads, and never past ``timeout`` (the caller's deadline less
        the time kept to audit and answer): PROVIDER_TIMEOUT then, whatever the thread does."""
        if self._is_local(adapters):
            return fn(*args)
        future = asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        if timeout is None:
            return await future
        try:
            return await asyncio.wait_for(future, max(timeout, fetch_step.MIN_CALL_S))
        except TimeoutError:
            raise _timed_out(adapters) from None

    def _check_meta(self, meta: CallMeta) -> None:
        if not REQUEST_ID.fullmatch(meta.request_id or ""):
            raise InvalidArgument(
                "INVALID_REQUEST",
                "meta.request_id is required: 1-128 characters of letters, digits and ._:@/+=-",
            )
        if not _OPERATOR.match(meta.operator):
            raise InvalidArgument("INVALID_REQUEST", "meta.operator: at most 128 printable characters")
        known_purpose(meta.purpose, self.catalogue)

    def _adapter(self, provider: Agency) -> Adapter:
        adapter = self.adapters.get(provider)
        if adapter is None:
            raise InvalidArgument("UNKNOWN_AGENCY", f"the gateway does not reach provider {provider.value}")
        return adapter

    def _facts(self, meta: CallMeta, subject: Subject | None, provider: Agency) -> AccessFacts:
        purpose = meta.purpose if meta.purpose in self.catalogue else None
        return AccessFacts(
            node=self.node,
            request_id=meta.request_id,
            caller=meta.caller,
            operator=meta.operator,
            subject=subject,
            purpose=purpose,
            provider=provider,
        )

    def comparison_fields(self, pd: PredicateDescriptor) -> tuple[str, ...]:
        """:func:`consented_fields` of ``pd`` over its dataset here; for a dataset its adapter
        does not describe (refused later, UNKNOWN_DATASET), the fields ``pd`` names."""
        descriptor = self.datasets.get((pd.agency, pd.dataset))
        return consented_fields(pd, descriptor) if descriptor is not None else pd.fields

    def _comparison_facts(
        self, meta: CallMeta, subject: Subject | None, pd: PredicateDescriptor, params: Mapping[str, int]
    ) -> AccessFacts:
        """The facts of a comparison's access: its dataset, predicate and parameters, and as its
        fields those the predicate reads (what a consent must cover: the entry says what the
        yes/no rests on, though none of it is disclosed)."""
        facts = self._facts(meta, subject, pd.agency)
        facts.datasets = (pd.dataset,)
        facts.fields = self.comparison_fields(pd)
        facts.predicate = pd.name
        facts.parameters = params
        return facts

    async def _write(self, facts: Sequence[AccessFacts]) -> None:
        """Append the entries (concurrently) and wait until all are on disk; AuditFailed
        otherwise. Nothing is answered before this returns."""
        try:
            if len(facts) == 1:  # the common case: no task for gather to wrap
                await self.audit.append_async(access_entry(facts[0]))
            else:
                await asyncio.gather(*(self.audit.append_async(access_entry(f)) for f in facts))
        except AuditError as exc:
            _log.error("audit.append_failed", error=type(exc).__name__)
            raise AuditFailed() from None

    async def _write_many(self, entries: Sequence[audit_pb2.AuditEntry]) -> None:
        """Append many entries as one batch (one hand-off to the I/O threads, where the append
        waits for the disk); AuditFailed otherwise."""
        try:
            await self._io(self.audit.append_many, entries)
        except AuditError as exc:
            _log.error("audit.append_failed", error=type(exc).__name__)
            raise AuditFailed() from None

    async def _denied(self, method: str, facts: AccessFacts, error: RequestError) -> RequestError:
        """Audit a refusal (decision denied, or a failed provider call), then return the error
        for the caller to raise."""
        facts.reason = error.reason
        if error.code == "UNAVAILABLE":
            facts.allowed = True
            facts.outcome = "failed"
        await self._write([facts])
        self.metrics.decision(method, facts.caller.value, facts.provider.value, error.reason.lower())
        return error

    async def _store_down(self, method: str, facts: Sequence[AccessFacts]) -> RequestError:
        """Audit the accesses of a call whose consent decision could not be made (the consent
        store failed) as refused, then return CONSENT_STORE_UNAVAILABLE for the caller to raise."""
        _log.error("consent.store_unavailable", method=method)
        error = ConsentStoreDown()
        for f in facts:
            f.reason, f.allowed, f.outcome = error.reason, False, ""
        await self._write(facts)
        for f in facts:
            self.metrics.decision(method, f.caller.value, f.provider.value, error.reason.lower())
        return error

    def _time_left(self, meta: CallMeta) -> float | None:
        left = meta.time_left()
        return None if left is None else max(0.0, left - ANSWER_RESERVE_S)

    def _check(
        self,
        caller: Agency,
        agreement: Agreement,
        descriptor: DatasetDescriptor,
        fields: tuple[str, ...],
        subject: Subject,
        purpose: str,
    ) -> tuple[CheckRequest, Basis]:
        """Step 4's question about one dataset: the disclosure and its basis under the agreement."""
        sensitive = self._sensitive[(descriptor.agency, descriptor.name)]
        request = CheckRequest(
            subject=subject,
            consumer=caller,
            provider=descriptor.agency,
            dataset=descriptor.name,
            fields=fields,
            purpose=purpose,
            sensitive_fields=sensitive.intersection(fields),
        )
        return request, consent_step.basis_of(agreement)

    def _decide(self, request: CheckRequest, basis: Basis, *, consume: bool = True) -> Decision:
        """Step 4 on :meth:`_check`'s question (blocking: reads the consent store, except under a
        statutory duty; counts a use of a limited consent unless ``consume`` is off)."""
        return self.consent.decide(request, basis=basis, consume=consume)

    def _plan(
        self, meta: CallMeta, subject: Subject, provider: Agency, dataset: str
    ) -> tuple[Agreement, DatasetDescriptor, Adapter]:
        adapter = self._adapter(provider)
        descriptor = self.datasets.get((provider, dataset))
        if descriptor is None:
            raise InvalidArgument(
                "UNKNOWN_DATASET", f"{provider.value} offers no dataset {echo_name(dataset)!r}"
            )
        if descriptor.subject_kind is not subject.kind:
            raise InvalidArgument(
                "SUBJECT_KIND_MISMATCH",
                f"{provider.value}.{dataset} is about {descriptor.subject_kind.value}s, "
                f"the subject is a {subject.kind.value}",
            )
        agreement = self.book.find(meta.caller, provider, dataset, self.today())  # step 2
        return agreement, descriptor, adapter

    def _rate(self, meta: CallMeta, agreement: Agreement) -> None:
        self.limiter.take(
            f"{meta.caller.value}:{agreement.id}", agreement.rate_limit_per_s, agreement.rate_burst
        )

    def batch_answers(self, caller: Agency, request_id: str, header: bytes) -> _BatchMemory:
        """The answers given so far on a BatchVerify request id, by item id (kept like other
        answers: a re-sent item is replayed, not audited again). ``header`` fingerprints the
        stream's purpose, operator, provider, predicate and parameters: the same request id with
        another header is REQUEST_ID_CONFLICT (it must never replay answers about other data)."""
        key = (caller.value, request_id)
        now = time.monotonic()
        ttl = self.config.server.idempotency_ttl_s
        while self._batches and (
            len(self._batches) > 10_000 or now - next(iter(self._batches.values())).started > ttl
        ):
            self._batches.popitem(last=False)
        held = self._batches.get(key)
        if held is None:
            held = self._batches[key] = _BatchMemory(now, header)
        elif held.header != header:
            raise Conflict("REQUEST_ID_CONFLICT", "this request id was used for a different BatchVerify")
        return held

    def _consent_then_fetch(
        self, meta: CallMeta, plans: Sequence[_Plan], subject: Subject
    ) -> tuple[list[Decision], list[Any] | None]:
        """Steps 4 and (with one dataset, when allowed) 6 of a Query or a Verify, blocking: the
        decisions, and the one fetch's values or evaluation's answer (or the exception it
        raised, handled by the caller as ``gather(return_exceptions=True)`` would be); None when
        step 6 is left to the caller."""
        left = self._time_left(meta)
        for p in plans:  # no time for the providers: no consent use is spent
            fetch_step.require_time(p.adapter, left)
        # all datasets decided together: a use of a limited consent is counted only when
        # every dataset is allowed, and once per consent however many datasets it covers
        checks = [
            self._check(meta.caller, p.agreement, p.descriptor, p.fields, subject, meta.purpose)
            for p in plans
        ]
        decisions = self.consent.decide_all(checks, consume=True)
        if len(plans) != 1 or not decisions[0].allowed:
            return decisions, None
        try:
            fetched: Any = plans[0].provider_step(subject, self._time_left(meta))
        except Exception as exc:
            fetched = exc
        return decisions, [fetched]

    async def _steps(self, meta: CallMeta, plans: Sequence[_Plan], subject: Subject) -> _Steps:
        """:meth:`_consent_then_fetch`, in a batch of concurrent calls that also fetches every
        dataset of an allowed call: on the event loop over local sources (:class:`_LocalQueries`),
        on the I/O threads otherwise (:class:`_IoQueries`, bounded by the caller's deadline); see
        :func:`_steps_of` for a caller cancelled meanwhile. With batching off, on its own (inline
        or on the I/O threads)."""
        adapters = [p.adapter for p in plans]
        if self._local_queries is not None and self._is_local(adapters):
            return await _steps_of(self._local_queries.submit(meta, plans, subject))
        if self._io_queries is not None:
            return await self._io_steps(meta, plans, subject)
        return await self._blocking(
            self._consent_then_fetch, meta, plans, subject, adapters=adapters, timeout=self._time_left(meta)
        )

    async def _io_steps(self, meta: CallMeta, plans: Sequence[_Plan], subject: Subject) -> _Steps:
        """:meth:`_steps` in a batch on the I/O threads (:class:`_IoQueries`), never past the
        caller's deadline. When it passes before step 4 is done: PROVIDER_TIMEOUT, nothing
        disclosed; after step 4 refused the call: the refusal; after step 4 allowed it: its
        decisions, with PROVIDER_TIMEOUT for each dataset not fetched yet (as a fetch of it alone
        would end), so that its audit entries still name the basis the consent step found."""
        assert self._io_queries is not None
        waiting = self._io_queries.submit(meta, plans, subject)
        timeout = self._time_left(meta)
        if timeout is None:
            return await _steps_of(waiting.future)
        try:
            async with asyncio.timeout(max(timeout, fetch_step.MIN_CALL_S)):
                return await _steps_of(waiting.future)
        except TimeoutError:
            decisions, values = waiting.decisions, waiting.values
            if decisions is None:
                raise _timed_out([p.adapter for p in plans]) from None
            if values is None:  # refused, its answer on its way: the refusal
                return decisions, None
            return decisions, [
                v if v is not _PENDING else _late(p.adapter) for v, p in zip(values, plans, strict=True)
            ]

    async def _answer_once(
        self, meta: CallMeta, fingerprint: bytes, make: Callable[[], Awaitable[T]]
    ) -> tuple[T, bool]:
        """(answer, replayed): the answer kept for the request id (``answers``) or the one
        ``make`` gives now, the call counted as in progress meanwhile (batch_step's ``alone``).
        A caller cancelled once a batch had run its steps (:func:`_steps_of`) gets its
        cancellation only now, its access audited and its answer kept: a retry of the request id
        replays it instead of deciding (and spending a consent use) again."""
        self._calls_in_progress += 1
        try:
            result, replayed = await self.answers.run(meta.caller.value, meta.request_id, fingerprint, make)
        finally:
            self._calls_in_progress -= 1
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
        return result, replayed

    # -- Query -----------------------------------------------------------------------------------

    async def query(
        self, meta: CallMeta, kind: SubjectKind | None, subject_id: str, asks: Sequence[DatasetAsk]
    ) -> QueryAnswer:
        self._check_meta(meta)
        if not asks:
            raise InvalidArgument("INVALID_REQUEST", "name at least one dataset")
        if len(asks) > 16:
            raise InvalidArgument("INVALID_REQUEST", "at most 16 datasets per query")
        named = [(a.provider, a.dataset) for a in asks]
        if len(set(named)) != len(named):
            provider, dataset = next(n for i, n in enumerate(named) if n in named[:i])
            where = f"{provider.value}.{dataset}" if provider is not None else dataset
            raise InvalidArgument("INVALID_REQUEST", f"{where} is named twice (name each dataset once)")
        fp = _fingerprint(
            "query",
            meta.purpose,
            meta.operator,
            kind.value if kind is not None else None,
            subject_id,
            tuple((a.provider.value if a.provider is not None else None, a.dataset, a.fields) for a in asks),
        )
        result, replayed = await self._answer_once(
            meta, fp, lambda: self._query(meta, kind, subject_id, asks)
        )
        answer: QueryAnswer = result
        return QueryAnswer(answer.request_id, answer.results, replayed) if replayed else answer

    async def _query(
        self, meta: CallMeta, kind: SubjectKind | None, subject_id: str, asks: Sequence[DatasetAsk]
    ) -> QueryAnswer:
        subject = subject_of(kind, subject_id)  # step 5's validation, before anything is audited
        plans: list[_Plan] = []
        for ask in asks:
            if ask.provider is None:
                raise InvalidArgument("UNKNOWN_AGENCY", "each dataset names its provider")
            facts = self._facts(meta, subject, ask.provider)
            facts.datasets = (ask.dataset,)
            facts.fields = tuple(ask.fields)
            try:
                agreement, descriptor, adapter = self._plan(meta, subject, ask.provider, ask.dataset)
                fields = allowed_fields(agreement, ask.fields, descriptor.field_names())
                facts.fields = fields
                check_purpose(meta.purpose, agreement)  # step 3
                self._rate(meta, agreement)
            except RequestError as exc:
                if exc.code == "INVALID_ARGUMENT":
                    raise
                raise await self._denied("query", facts, exc) from None
            plans.append(_Plan(agreement, descriptor, adapter, fields, facts))

        # step 4, consent (one blocking step for every dataset); with one dataset, step 6 rides
        # on the same step when the decision allows it (one thread hand-off less when not inline).
        # A Query over local sources joins the calls that reach this point within the batch's
        # wait (_LocalQueries: one store read for all of them, one provider query per dataset
        # and field list; step 6 of every dataset rides on the batch).
        try:
            decisions, fetched = await self._steps(meta, plans, subject)
        except RequestError as exc:  # the hop timed out: nothing was disclosed
            for p in plans:
                p.facts.reason, p.facts.outcome, p.facts.allowed = exc.reason, "failed", True
            await self._write([p.facts for p in plans])
            raise exc from None
        except StoreError:  # no consent decision could be made: refused, nothing disclosed
            raise await self._store_down("query", [p.facts for p in plans]) from None
        for plan, decision in zip(plans, decisions, strict=True):
            plan.decision = decision
            plan.facts.basis = decision.basis.value
            plan.facts.basis_reference = decision.legal_basis_reference
            try:
                consent_step.require_basis(decision)
            except RequestError as exc:
                raise await self._denied("query", plan.facts, exc) from None

        # step 6, fetch: concurrently across datasets, under the caller's deadline
        outcomes: Sequence[Any]
        if fetched is not None:
            outcomes = fetched
        else:
            timeout = self._time_left(meta)
            outcomes = await asyncio.gather(
                *(
                    self._blocking(
                        fetch_step.fetch,
                        p.adapter,
                        p.descriptor.name,
                        subject,
                        p.fields,
                        timeout,
                        adapters=[p.adapter],
                        timeout=timeout,
                    )
                    for p in plans
                ),
                return_exceptions=True,
            )
        failure: RequestError | None = None
        for plan, outcome in zip(plans, outcomes, strict=True):
            if isinstance(outcome, RequestError):
                plan.facts.reason = outcome.reason
                plan.facts.outcome = "failed"
                failure = failure or outcome
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                plan.values = outcome
                plan.facts.outcome = "found" if outcome is not None else "not_found"
            plan.facts.allowed = True
        if failure is not None:  # the call is refused as a whole: no dataset of it is disclosed
            for plan in plans:
                if plan.facts.outcome != "failed":
                    plan.facts.outcome, plan.facts.reason = "failed", OTHER_PROVIDER_FAILED
        # step 8, audit every provider access before answering
        await self._write([p.facts for p in plans])
        for p in plans:
            self.metrics.decision(
                "query", meta.caller.value, p.facts.provider.value, p.facts.reason.lower() or p.facts.outcome
            )
        if failure is not None:
            raise failure
        if all(p.values is None for p in plans):
            raise NotFound("SUBJECT_NOT_FOUND", "no provider holds a record of the subject")
        # step 7, minimise and mask
        results = tuple(
            DatasetAnswer(
                provider=p.descriptor.agency,
                dataset=p.descriptor.name,
                found=p.values is not None,
                values=minimize(p.values, p.fields, p.agreement.mask) if p.values is not None else {},
                legal_basis=consent_step.legal_basis_label(p.decision) if p.decision else "",
            )
            for p in plans
        )
        return QueryAnswer(meta.request_id, results)

    # -- Verify ----------------------------------------------------------------------------------

    def _predicate_plan(
        self,
        meta: CallMeta,
        subject_kind: SubjectKind | None,
        provider: Agency | None,
        predicate: str,
        params: Mapping[str, int],
    ) -> tuple[PredicateDescriptor, Adapter]:
        if provider is None:
            raise InvalidArgument("UNKNOWN_AGENCY", "the request names no provider")
        adapter = self._adapter(provider)
        pd = self.predicates.get((provider, predicate))
        if pd is None:
            raise InvalidArgument(
                "UNKNOWN_PREDICATE", f"{provider.value} offers no predicate {echo_name(predicate)!r}"
            )
        if set(params) != set(pd.parameters) or any(not 0 <= v <= MAX_PARAMETER for v in params.values()):
            raise InvalidArgument(
                "INVALID_REQUEST",
                f"predicate {predicate!r} takes parameters ({', '.join(pd.parameters) or 'none'}), "
                f"integers from 0 to {MAX_PARAMETER:,}",
            )
        if subject_kind is not None and subject_kind is not pd.subject_kind:
            raise InvalidArgument("SUBJECT_KIND_MISMATCH", f"{predicate!r} is about {pd.subject_kind.value}s")
        return pd, adapter

    async def verify(
        self,
        meta: CallMeta,
        kind: SubjectKind | None,
        subject_id: str,
        provider: Agency | None,
        predicate: str,
        params: Mapping[str, int],
    ) -> VerifyAnswer:
        self._check_meta(meta)
        fp = _fingerprint(
            "verify",
            meta.purpose,
            meta.operator,
            kind,
            subject_id,
            provider,
            predicate,
            sorted(params.items()),
        )
        result, replayed = await self._answer_once(
            meta, fp, lambda: self._verify(meta, kind, subject_id, provider, predicate, params)
        )
        answer: VerifyAnswer = result
        return (
            VerifyAnswer(answer.request_id, answer.result, answer.legal_basis, replayed)
            if replayed
            else answer
        )

    async def _verify(
        self,
        meta: CallMeta,
        kind: SubjectKind | None,
        subject_id: str,
        provider: Agency | None,
        predicate: str,
        params: Mapping[str, int],
    ) -> VerifyAnswer:
        pd, adapter = self._predicate_plan(meta, kind, provider, predicate, params)
        subject = subject_of(kind or pd.subject_kind, subject_id)
        facts = self._comparison_facts(meta, subject, pd, dict(params))
        try:
            agreement, descriptor, _ = self._plan(meta, subject, pd.agency, pd.dataset)
            allowed_predicate(agreement, predicate)
            check_purpose(meta.purpose, agreement)
            self._rate(meta, agreement)
        except RequestError as exc:
            if exc.code == "INVALID_ARGUMENT":
                raise
            raise await self._denied("verify", facts, exc) from None
        plan = _Plan(
            agreement,
            descriptor,
            adapter,
            consented_fields(pd, descriptor),
            facts,
            predicate=predicate,
            params=tuple(sorted(params.items())),
        )
        # steps 4 and 6 as a Query's: over local sources in a batch with the concurrent calls
        try:
            decisions, fetched = await self._steps(meta, [plan], subject)
        except RequestError as exc:  # no time for the provider, or the hop timed out
            raise await self._denied("verify", facts, exc) from None
        except StoreError:  # no consent decision could be made: refused, nothing disclosed
            raise await self._store_down("verify", [facts]) from None
        (decision,) = decisions
        # the basis and its reference (consent ids, duty) also go into the entry of a failed call
        facts.basis = decision.basis.value
        facts.basis_reference = decision.legal_basis_reference
        try:
            consent_step.require_basis(decision)
        except RequestError as exc:
            raise await self._denied("verify", facts, exc) from None
        assert fetched is not None
        (answer,) = fetched
        if isinstance(answer, RequestError):  # provider failed: audited as an allowed access that failed
            raise await self._denied("verify", facts, answer) from None
        if isinstance(answer, BaseException):  # a bug: INTERNAL, nothing disclosed, no entry
            raise answer
        facts.allowed = True
        facts.outcome = "not_found" if answer is None else "found"
        await self._write([facts])
        self.metrics.decision("verify", meta.caller.value, pd.agency.value, facts.outcome)
        return VerifyAnswer(meta.request_id, answer, consent_step.legal_basis_label(decision))

    # -- BatchVerify -----------------------------------------------------------------------------

    async def batch_header(
        self,
        meta: CallMeta,
        provider: Agency | None,
        predicate: str,
        params: Mapping[str, int],
    ) -> BatchVerifier:
        """Check the stream's header (agreement, predicate, purpose) once; denials are audited
        (without a subject) and end the stream."""
        self._check_meta(meta)
        pd, adapter = self._predicate_plan(meta, None, provider, predicate, params)
        facts = self._comparison_facts(meta, None, pd, dict(params))
        try:
            agreement = self.book.find(meta.caller, pd.agency, pd.dataset, self.today())
            allowed_predicate(agreement, predicate)
            check_purpose(meta.purpose, agreement)
        except RequestError as exc:
            raise await self._denied("batch_verify", facts, exc) from None
        descriptor = self.datasets[(pd.agency, pd.dataset)]
        return BatchVerifier(self, meta, pd, adapter, agreement, descriptor, dict(params))


class BatchVerifier:
    """One BatchVerify stream after its header was allowed: answers chunks of items."""

    def __init__(
        self,
        exchange: Exchange,
        meta: CallMeta,
        pd: PredicateDescriptor,
        adapter: Adapter,
        agreement: Agreement,
        descriptor: DatasetDescriptor,
        params: dict[str, int],
    ) -> None:
        self.x = exchange
        self.meta = meta
        self.pd = pd
        self.adapter = adapter
        self.agreement = agreement
        self.descriptor = descriptor
        self.params = params
        header = _fingerprint(meta.purpose, meta.operator, pd.agency, pd.name, sorted(params.items()))
        self._seen = exchange.batch_answers(meta.caller, meta.request_id, header)

    def _facts(self, subject: Subject) -> AccessFacts:
        return self.x._comparison_facts(self.meta, subject, self.pd, self.params)

    def _refused(self, items: Sequence[tuple[int, Subject]], reason: str) -> list[audit_pb2.AuditEntry]:
        """The entries of subjects refused before any consent decision (no legal basis found)."""
        none = BasisKind.NONE.value
        verdicts = [Verdict(s, none, "", False, reason, "") for _, s in items]
        return access_entries(self._facts(items[0][1]), verdicts)

    def _run_chunk(
        self, items: Sequence[tuple[int, Subject]], timeout: float | None
    ) -> tuple[list[tuple[int, str, bool | None]], list[audit_pb2.AuditEntry]]:
        """Blocking: the legal basis per subject (under a statutory duty one decision serves
        all: the store is not read), one provider query for the allowed ones, and every
        subject's audit entry, built (the caller appends them before answering)."""
        x = self.x
        fields = consented_fields(self.pd, self.descriptor)
        caller, purpose = self.meta.caller, self.meta.purpose
        decisions: list[Decision]
        try:
            if consent_step.basis_of(self.agreement).statutory_duty:
                one = x._decide(
                    *x._check(caller, self.agreement, self.descriptor, fields, items[0][1], purpose)
                )
                decisions = [one] * len(items)
            else:
                # no time left to ask the provider: the items fail PROVIDER_TIMEOUT below, and no
                # use of a use-limited consent is spent on them
                consume = fetch_step.has_time(timeout)
                decisions = [
                    x._decide(
                        *x._check(caller, self.agreement, self.descriptor, fields, s, purpose),
                        consume=consume,
                    )
                    for _, s in items
                ]
        except StoreError:  # no consent decision could be made: each item refused, audited
            _log.error("consent.store_unavailable", method="batch_verify")
            reason = ConsentStoreDown().reason
            return [(pos, reason, None) for pos, _ in items], self._refused(items, reason)
        allowed = [s for (_, s), d in zip(items, decisions, strict=True) if d.allowed]
        answers: list[bool | Exception | None] = []
        failure: RequestError | None = None
        if allowed:
            try:
                answers = fetch_step.evaluate_many(self.adapter, self.pd.name, allowed, self.params, timeout)
            except RequestError as exc:
                failure = exc
        results: list[tuple[int, str, bool | None]] = []
        verdicts: list[Verdict] = []
        next_answer = iter(answers)
        for (pos, subject), decision in zip(items, decisions, strict=True):
            basis, ref = decision.basis.value, decision.legal_basis_reference
            if not decision.allowed:
                assert decision.reason is not None
                reason = consent_step.DENY_REASONS[decision.reason]
                verdicts.append(Verdict(subject, basis, ref, False, reason, ""))
                results.append((pos, reason, None))
            elif failure is not None:
                verdicts.append(Verdict(subject, basis, ref, True, failure.reason, "failed"))
                results.append((pos, failure.reason, None))
            else:
                answer = next(next_answer)
                if isinstance(answer, Unavailable):  # this subject's own records: as if asked alone
                    verdicts.append(Verdict(subject, basis, ref, True, answer.reason, "failed"))
                    results.append((pos, answer.reason, None))
                    continue
                if isinstance(answer, Exception):  # not isolated: evaluate_many raised it instead
                    raise answer
                verdicts.append(
                    Verdict(subject, basis, ref, True, "", "not_found" if answer is None else "found")
                )
                results.append((pos, "", answer))
        template = self._facts(items[0][1])
        return results, access_entries(template, verdicts)

    async def answer(self, items: Sequence[BatchItem]) -> list[BatchOutcome]:
        """Outcomes of ``items`` in order. Invalid identifiers are answered per item
        (INVALID_IDENTITY_NUMBER, ...); an item id answered before on this request id is
        replayed without a new audit entry."""
        out: list[BatchOutcome | None] = [None] * len(items)
        todo: list[tuple[int, Subject]] = []
        marks: dict[int, bytes] = {}
        first: dict[str, int] = {}  # item id -> its first position in this message
        copies: list[tuple[int, int]] = []  # (position, first position) of a repeated item id
        remembered = self._seen.items
        for pos, item in enumerate(items):
            if len(item.item_id) > MAX_ITEM_ID:
                out[pos] = BatchOutcome(item.item_id[:MAX_ITEM_ID], None, "INVALID_ITEM_ID")
                continue
            try:
                subject = subject_of(item.kind or self.pd.subject_kind, item.subject_id)
                if subject.kind is not self.pd.subject_kind:
                    raise InvalidArgument("SUBJECT_KIND_MISMATCH", "subject kind")
            except RequestError as exc:
                out[pos] = BatchOutcome(item.item_id, None, exc.reason)
                continue
            if item.item_id:
                mark = _fingerprint(subject.kind, subject.id)
                seen = remembered.get(item.item_id)
                if seen is not None:  # a re-sent item: the same subject replays, another conflicts
                    out[pos] = (
                        seen[1]
                        if seen[0] == mark
                        else BatchOutcome(item.item_id, None, "REQUEST_ID_CONFLICT")
                    )
                    continue
                earlier = first.get(item.item_id)
                if earlier is not None:  # sent twice in one message: answered (and audited) once
                    if marks[earlier] == mark:
                        copies.append((pos, earlier))
                    else:
                        out[pos] = BatchOutcome(item.item_id, None, "REQUEST_ID_CONFLICT")
                    continue
                first[item.item_id] = pos
                marks[pos] = mark
            todo.append((pos, subject))
        if todo:
            try:
                self.x._rate(self.meta, self.agreement)  # a message counts as one call
            except RequestError as exc:  # refused: every subject of the message is audited
                await self.x._write_many(self._refused(todo, exc.reason))
                self.x.metrics.decision(
                    "batch_verify", self.meta.caller.value, self.pd.agency.value, exc.reason.lower()
                )
                raise
            chunk = self.x.config.server.batch_chunk
            for start in range(0, len(todo), chunk):
                part = todo[start : start + chunk]
                left = self.x._time_left(self.meta)
                results, entries = await self.x._blocking(
                    self._run_chunk, part, left, adapters=[self.adapter], timeout=left
                )
                await self.x._write_many(entries)  # every subject's entry on disk before any answer
                for pos, reason, answer in results:
                    outcome = BatchOutcome(items[pos].item_id, answer, reason)
                    out[pos] = outcome
                    if (
                        pos in marks
                        and reason not in ("PROVIDER_UNAVAILABLE", "PROVIDER_TIMEOUT", "CIRCUIT_OPEN")
                        and len(remembered) < MAX_REMEMBERED_ITEMS
                    ):
                        remembered[items[pos].item_id] = (marks[pos], outcome)
                self.x.metrics.decision("batch_verify", self.meta.caller.value, self.pd.agency.value, "items")
        for pos, earlier in copies:
            out[pos] = out[earlier]
        return [o for o in out if o is not None]
