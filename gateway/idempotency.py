"""Request ids: a retried request returns the same answer and leaves one audit entry.

Answers are kept in memory for ``ttl_s`` seconds per (caller, request id), with a fingerprint of
the request: the same id for a different request is refused (ALREADY_EXISTS). A retry that
arrives while the first call is still running waits for its answer. Only final answers are kept
(a result, or a denial, not-found or invalid-argument error); an UNAVAILABLE or
RESOURCE_EXHAUSTED answer is forgotten, so the retry runs again (and is audited again: it is a
new attempt). Answers hold fetched values, so they never leave the process's memory.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from gateway.pipeline.errors import Conflict, RequestError, Unavailable

__all__ = ["IdempotencyCache"]

T = TypeVar("T")

#: Errors that are the answer (kept); others mean "try again".
FINAL_CODES = frozenset({"PERMISSION_DENIED", "NOT_FOUND", "INVALID_ARGUMENT"})


class IdempotencyCache(Generic[T]):
    def __init__(self, ttl_s: float, max_entries: int = 200_000, clock: Callable[[], float] = time.monotonic):
        self._ttl = ttl_s
        self._max = max_entries
        self._clock = clock
        self._items: OrderedDict[tuple[str, str], tuple[float, bytes, asyncio.Future[T]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def _evict(self, now: float) -> None:
        items = self._items
        while items:
            stamp, _, fut = next(iter(items.values()))
            if (now - stamp < self._ttl and len(items) <= self._max) or not fut.done():
                break
            items.popitem(last=False)

    async def run(
        self, caller: str, request_id: str, fingerprint: bytes, make: Callable[[], Awaitable[T]]
    ) -> tuple[T, bool]:
        """(answer, replayed): the stored answer of ``request_id`` or the one ``make`` gives now."""
        now = self._clock()
        self._evict(now)
        key = (caller, request_id)
        held = self._items.get(key)
        if held is not None and now - held[0] >= self._ttl and held[2].done():
            # Expired, but not evicted yet (eviction stops at an older call still running).
            del self._items[key]
            held = None
        if held is not None:
            _, fp, earlier = held
            if fp != fingerprint:
                raise Conflict("REQUEST_ID_CONFLICT", "this request id was used for a different request")
            return await asyncio.shield(earlier), True
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._items[key] = (now, fingerprint, fut)
        try:
            result = await make()
        except RequestError as exc:
            if exc.code not in FINAL_CODES:
                self._items.pop(key, None)
            fut.set_exception(exc)
            fut.exception()  # retrieved: no "never retrieved" warning when nobody retries
            raise
        except BaseException as exc:
            self._items.pop(key, None)
            fut.set_exception(Unavailable("INTERNAL", "the request failed; try again"))
            fut.exception()
            raise exc
        fut.set_result(result)
        return result, False
