"""Request ids (gateway.idempotency.IdempotencyCache): a retry gets the first answer, a reused id
for another request is refused, only final answers are kept, and answers expire (injected clock)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.idempotency import IdempotencyCache
from gateway.pipeline.errors import (
    Conflict,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RateLimited,
    RequestError,
    Unavailable,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Maker:
    """A request handler that counts its calls and answers ``answer`` (or raises it)."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls = 0

    async def __call__(self) -> Any:
        self.calls += 1
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


def run(coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())


def test_same_id_same_answer_replayed() -> None:
    async def go() -> None:
        cache: IdempotencyCache[str] = IdempotencyCache(ttl_s=60, clock=Clock())
        make = Maker("answer-1")
        assert await cache.run("hrss", "r1", b"fp", make) == ("answer-1", False)
        make.answer = "answer-2"
        assert await cache.run("hrss", "r1", b"fp", make) == ("answer-1", True)
        assert make.calls == 1
        # Another request id, or the same id of another caller, is a new request.
        assert await cache.run("hrss", "r2", b"fp", make) == ("answer-2", False)
        assert await cache.run("tax", "r1", b"fp", make) == ("answer-2", False)
        assert make.calls == 3

    run(go())


def test_different_fingerprint_conflicts() -> None:
    async def go() -> None:
        cache: IdempotencyCache[str] = IdempotencyCache(ttl_s=60, clock=Clock())
        make = Maker("a")
        await cache.run("hrss", "r1", b"fp1", make)
        with pytest.raises(Conflict) as info:
            await cache.run("hrss", "r1", b"fp2", make)
        assert info.value.reason == "REQUEST_ID_CONFLICT"
        assert info.value.code == "ALREADY_EXISTS"
        assert make.calls == 1

    run(go())


@pytest.mark.parametrize(
    "error",
    [
        PermissionDenied("CONSENT_MISSING", "no consent"),
        NotFound("SUBJECT_NOT_FOUND", "none"),
        InvalidArgument("UNKNOWN_FIELD", "bad"),
    ],
)
def test_final_errors_are_kept(error: RequestError) -> None:
    async def go() -> None:
        cache: IdempotencyCache[str] = IdempotencyCache(ttl_s=60, clock=Clock())
        make = Maker(error)
        for _ in range(3):
            with pytest.raises(type(error)) as info:
                await cache.run("hrss", "r1", b"fp", make)
            assert info.value.reason == error.reason
        assert make.calls == 1
        assert len(cache) == 1

    run(go())


@pytest.mark.parametrize(
    "error",
    [
        Unavailable("PROVIDER_UNAVAILABLE", "down", retry_after_s=1.0),
        RateLimited("RATE_LIMITED", "slow", retry_after_s=1.0),
        RuntimeError("bug"),
    ],
)
def test_retryable_errors_are_not_kept(error: BaseException) -> None:
    async def go() -> None:
        cache: IdempotencyCache[str] = IdempotencyCache(ttl_s=60, clock=Clock())
        make = Maker(error)
        with pytest.raises(type(error)):
            await cache.run("hrss", "r1", b"fp", make)
        assert len(cache) == 0
        make.answer = "ok"
        assert await cache.run("hrss", "r1", b"fp", make) == ("ok", False)
        assert make.calls == 2

    run(go())


def test_concurrent_retry_waits_for_the_first() -> None:
    async def go() -> None:
        cache: IdempotencyCache[str] = IdempotencyCache(ttl_s=60, clock=Clock())
        release = asyncio.Event()
        calls = 0

        async def slow() -> str:
            nonlocal calls
            calls += 1
            await release.wait()
            return "first"

        first = asyncio.create_task(cache.run("hrss", "r1", b"fp", slow))
        await asyncio.sleep(0)
        retry = asyncio.create_task(cache.run("hrss", "r1", b"fp", slow))
        await asyncio.sleep(0.01)
        assert not retry.done()
        release.set()
        assert await first == ("first", False)
        assert await retry == ("first", True)
        assert calls == 1

    run(go())


def test_concurrent_retry_of_a_failing_call_gets_the_failure_and_may_retry() -> None:
    async def go() -> None:
        cache: IdempotencyCache[str] = IdempotencyCache(ttl_s=60, clock=Clock())
        release = asyncio.Event()

        async def failing() -> str:
            await release.wait()
            raise Unavailable("PROVIDER_TIMEOUT", "late", retry_after_s=1.0)

        first = asyncio.create_task(cache.run("hrss", "r1", b"fp", failing))
        await asyncio.sleep(0)
        retry = asyncio.create_task(cache.run("hrss", "r1", b"fp", failing))
        await asyncio.sleep(0)
        release.set()
        for task in (first, retry):
            with pytest.raises(Unavailable):
                await task
        assert await cache.run("hrss", "r1", b"fp", Maker("again")) == ("again", False)

    run(go())


def test_cancelled_first_call_is_forgotten() -> None:
    async def go() -> None:
        cache: IdempotencyCache[str] = IdempotencyCache(ttl_s=60, clock=Clock())

        async def forever() -> str:
            await asyncio.Event().wait()
            return "never"

        first = asyncio.create_task(cache.run("hrss", "r1", b"fp", forever))
        await asyncio.sleep(0)
        retry = asyncio.create_task(cache.run("hrss", "r1", b"fp", forever))
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        with pytest.raises(Unavailable):
            await retry
        assert len(cache) == 0

    run(go())


def test_ttl_eviction() -> None:
    async def go() -> None:
        clock = Clock()
        cache: IdempotencyCache[str] = IdempotencyCache(ttl_s=10, clock=clock)
        make = Maker("a")
        await cache.run("hrss", "r1", b"fp", make)
        clock.now += 9.9
        assert await cache.run("hrss", "r1", b"fp", make) == ("a", True)
        clock.now += 0.1
        make.answer = "b"
        # Expired: the id may be used again, even for another request.
        assert await cache.run("hrss", "r1", b"other", make) == ("b", False)
        assert make.calls == 2
        assert len(cache) == 1

    run(go())


def test_expired_answer_behind_a_running_call_is_not_replayed() -> None:
    async def go() -> None:
        clock = Clock()
        cache: IdempotencyCache[str] = IdempotencyCache(ttl_s=10, clock=clock)
        release = asyncio.Event()

        async def slow() -> str:
            await release.wait()
            return "slow"

        running = asyncio.create_task(cache.run("hrss", "r0", b"fp", slow))
        await asyncio.sleep(0)
        await cache.run("hrss", "r1", b"fp", Maker("old"))
        clock.now += 60
        assert await cache.run("hrss", "r1", b"new", Maker("new")) == ("new", False)
        release.set()
        await running

    run(go())


def test_max_entries_bounds_the_cache() -> None:
    async def go() -> None:
        clock = Clock()
        cache: IdempotencyCache[int] = IdempotencyCache(ttl_s=600, max_entries=5, clock=clock)
        for i in range(50):
            clock.now += 0.001
            await cache.run("hrss", f"r{i}", b"fp", Maker(i))
            assert len(cache) <= 6
        # The newest answers are still there.
        assert await cache.run("hrss", "r49", b"fp", Maker(-1)) == (49, True)

    run(go())


def test_make_is_called_lazily() -> None:
    async def go() -> None:
        cache: IdempotencyCache[str] = IdempotencyCache(ttl_s=60, clock=Clock())
        made: list[str] = []

        def factory(tag: str) -> Callable[[], Awaitable[str]]:
            async def make() -> str:
                made.append(tag)
                return tag

            return make

        await cache.run("hrss", "r1", b"fp", factory("one"))
        await cache.run("hrss", "r1", b"fp", factory("two"))
        assert made == ["one"]

    run(go())


def test_kept_answers_are_no_work_for_the_garbage_collector() -> None:
    """Kept answers are bytes: a cache of many answers adds (almost) no object the collector
    traverses, so a full collection's pause does not grow with it (138 ms with 200,000 answers
    kept as objects). A replay unpacks the same answer."""
    import gc

    def pack(answer: tuple[str, dict[str, int]]) -> tuple[str, tuple[tuple[str, int], ...]]:
        return (answer[0], tuple(answer[1].items()))

    def unpack(packed: tuple[str, tuple[tuple[str, int], ...]]) -> tuple[str, dict[str, int]]:
        return (packed[0], dict(packed[1]))

    async def go() -> None:
        cache: IdempotencyCache[tuple[str, dict[str, int]]] = IdempotencyCache(
            ttl_s=60, clock=Clock(), pack=pack, unpack=unpack
        )
        gc.collect()
        before = len(gc.get_objects())
        for i in range(2000):
            await cache.run("hrss", f"r{i}", b"fp", Maker((f"answer-{i}", {"n": i})))
        gc.collect()
        assert len(gc.get_objects()) - before < 200
        assert await cache.run("hrss", "r7", b"fp", Maker(("other", {}))) == (("answer-7", {"n": 7}), True)
        with pytest.raises(Conflict):
            await cache.run("hrss", "r7", b"fp-other", Maker(("other", {})))

    run(go())


def test_exchange_answers_survive_packing() -> None:
    import datetime as dt

    from adapters.agencies import Agency
    from gateway.exchange import DatasetAnswer, QueryAnswer, VerifyAnswer, _pack_answer, _unpack_answer

    query = QueryAnswer(
        "r1",
        (
            DatasetAnswer(
                Agency.EDUCATION,
                "graduation",
                True,
                {
                    "level": "master",
                    "on": dt.date(2025, 6, 30),  # kept as a day number
                    "at": dt.datetime(2025, 6, 30, 8, 15, tzinfo=dt.UTC),  # a date too, but not only
                    "codes": ["a", "b"],
                    "none": None,
                },
                "c",
            ),
            DatasetAnswer(Agency.HRSS, "employment_status", False, {}, ""),
        ),
    )
    for answer in (
        query,
        VerifyAnswer("r2", True, "statutory_duty:x"),
        VerifyAnswer("r3", None, "consent:c"),
    ):
        back = _unpack_answer(_pack_answer(answer))
        assert back == answer
        if isinstance(answer, QueryAnswer):
            assert [{k: type(v) for k, v in r.values.items()} for r in back.results] == [
                {k: type(v) for k, v in r.values.items()} for r in answer.results
            ]
