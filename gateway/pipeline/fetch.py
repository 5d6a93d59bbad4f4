"""Step 6, fetch: one provider call through its adapter, under the caller's deadline (the
adapter's own retries and circuit breaker stay inside it). Blocking: the server runs it on its
I/O threads. Adapter errors become request errors: SubjectNotFound -> None (the caller decides
whether that is NOT_FOUND), ProviderUnavailable -> UNAVAILABLE with a retry delay,
InvalidRequest -> INVALID_ARGUMENT."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from adapters.contract import (
    Adapter,
    InvalidRequest,
    ProviderUnavailable,
    Subject,
    SubjectNotFound,
)
from gateway.pipeline.errors import InvalidArgument, Unavailable

__all__ = ["evaluate", "evaluate_many", "fetch", "fetch_many", "unavailable"]

T = TypeVar("T")

#: Below this many seconds left, a provider is not called at all.
MIN_CALL_S = 0.005

#: The retry delay suggested while a provider's circuit is open, when the adapter does not say
#: its breaker's reset timeout.
RETRY_AFTER_OPEN_S = 5.0


def _open_retry_s(adapter: Adapter) -> float:
    """How long until the open circuit lets a trial call through: at most its reset timeout."""
    policy = getattr(getattr(adapter, "source", None), "policy", None)
    reset = getattr(policy, "reset_timeout_s", None)
    return float(reset) if isinstance(reset, int | float) and reset > 0 else RETRY_AFTER_OPEN_S


def has_time(timeout: float | None) -> bool:
    """Whether ``timeout`` (seconds left; ``None``: no deadline) leaves time to call a provider."""
    return timeout is None or timeout >= MIN_CALL_S


def no_time(adapter: Adapter) -> Unavailable:
    """The PROVIDER_TIMEOUT of a call with no time left to ask ``adapter``."""
    return Unavailable("PROVIDER_TIMEOUT", f"no time left to call {adapter.agency.value}", retry_after_s=1.0)


def require_time(adapter: Adapter, timeout: float | None) -> None:
    """PROVIDER_TIMEOUT unless ``timeout`` leaves time to call the provider. Checked before the
    consent step too, so that a call which cannot reach the provider spends no consent use."""
    if not has_time(timeout):
        raise no_time(adapter)


def unavailable(adapter: Adapter, exc: ProviderUnavailable) -> Unavailable:
    """The request error of a provider failure: CIRCUIT_OPEN, PROVIDER_TIMEOUT or
    PROVIDER_UNAVAILABLE, with a retry delay."""
    if exc.circuit_open:
        reason, retry = "CIRCUIT_OPEN", _open_retry_s(adapter)
    elif exc.timed_out:
        reason, retry = "PROVIDER_TIMEOUT", 1.0
    else:
        reason, retry = "PROVIDER_UNAVAILABLE", 1.0
    return Unavailable(
        reason,
        f"provider {adapter.agency.value} is unavailable ({exc.cause})",
        retry_after_s=retry,
        provider=adapter.agency.value,
    )


def _guard(adapter: Adapter, timeout: float | None, call: Callable[[float | None], T]) -> T:
    require_time(adapter, timeout)
    try:
        return call(timeout)
    except ProviderUnavailable as exc:
        raise unavailable(adapter, exc) from None
    except InvalidRequest as exc:
        raise InvalidArgument("INVALID_REQUEST", str(exc)) from None


def fetch(
    adapter: Adapter, dataset: str, subject: Subject, fields: Sequence[str], timeout: float | None
) -> Mapping[str, Any] | None:
    """The fields' values, or None when the provider holds no record of the subject."""

    def call(t: float | None) -> Mapping[str, Any] | None:
        try:
            return adapter.fetch(dataset, subject, fields, timeout=t).values
        except SubjectNotFound:
            return None

    return _guard(adapter, timeout, call)


def fetch_many(
    adapter: Any, dataset: str, subjects: Sequence[Subject], fields: Sequence[str], timeout: float | None
) -> list[Mapping[str, Any] | Exception | None]:
    """:func:`fetch` for many subjects in one provider query (:meth:`SqlAdapter.fetch_many`): one
    answer per subject, in order; a subject whose own records the provider cannot map gets the
    error a fetch of it alone raises (Unavailable), one whose record breaks the adapter's own
    code the exception a fetch of it alone raises (the others are answered)."""

    def call(t: float | None) -> list[Mapping[str, Any] | Exception | None]:
        results = adapter.fetch_many(dataset, subjects, fields, timeout=t)
        return [
            unavailable(adapter, r)
            if isinstance(r, ProviderUnavailable)
            else r
            if isinstance(r, Exception)
            else r.values
            if r is not None
            else None
            for r in results
        ]

    return _guard(adapter, timeout, call)


def evaluate(
    adapter: Adapter, predicate: str, subject: Subject, params: Mapping[str, int], timeout: float | None
) -> bool | None:
    """The predicate's answer, or None when the provider holds no record (for predicates where
    absence is not a "no")."""

    def call(t: float | None) -> bool | None:
        try:
            return adapter.evaluate(predicate, subject, params, timeout=t)
        except SubjectNotFound:
            return None

    return _guard(adapter, timeout, call)


def evaluate_many(
    adapter: Any,
    predicate: str,
    subjects: Sequence[Subject],
    params: Mapping[str, int],
    timeout: float | None,
    *,
    isolate: bool = False,
) -> list[bool | Exception | None]:
    """One answer per subject in one provider query (:meth:`SqlAdapter.evaluate_many`); a subject
    whose own records the provider cannot map gets the error an evaluation of it alone raises
    (Unavailable). With ``isolate`` (batched Verify calls), so does one whose record or answer
    breaks the adapter's own code: the exception an evaluation of it alone raises, where a bulk
    comparison fails as a whole."""

    def call(t: float | None) -> list[bool | Exception | None]:
        if isolate:
            answers = adapter.evaluate_many(predicate, subjects, params, timeout=t, isolate=True)
        else:
            answers = adapter.evaluate_many(predicate, subjects, params, timeout=t)
        return [unavailable(adapter, a) if isinstance(a, ProviderUnavailable) else a for a in answers]

    return _guard(adapter, timeout, call)
