"""A small client for agency integrators: mTLS from files, typed results, errors as exceptions
carrying the gateway's reason.

    from gateway.client import GatewayClient

    with GatewayClient("gw.example:7443", ca="ca.crt", cert="hrss.crt", key="hrss.key") as gw:
        answer = gw.query("12010119900307118X", "graduate_employment",
                          [("education", "graduation", ["level", "graduation_date"])])
        answer.results[0].values["level"]
        gw.verify("12010119900307118X", "graduate_employment", "education", "graduated_within_years",
                  {"years": 2}).result                     # True / False / None (no record)

Every call sends a request id (a new UUID unless given): retrying with the same id returns the
same answer, and the gateway audits it once. A refusal raises :class:`GatewayError` with
``code`` (the gRPC status name), ``reason`` (ErrorReason name, e.g. ``CONSENT_REVOKED``) and,
for UNAVAILABLE / RESOURCE_EXHAUSTED, ``retry_after_s``.
"""

from __future__ import annotations

import datetime
import math
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from adapters.agencies import Agency
from adapters.contract import SubjectKind
from dsgw.v1 import common_pb2, consent_pb2, consent_pb2_grpc, exchange_pb2, exchange_pb2_grpc
from gateway.pki import key_matches
from gateway.server.status import error_info_of
from gateway.server.wire import (
    AgencyWire,
    KindWire,
    agency_from_wire,
    agency_to_wire,
    kind_to_wire,
    value_from_wire,
)

__all__ = [
    "MAX_TIMEOUT_S",
    "BatchItemError",
    "BatchResult",
    "CredentialError",
    "DatasetResult",
    "GatewayClient",
    "GatewayError",
    "QueryResult",
    "VerifyResult",
    "check_timeout",
]


class GatewayError(Exception):
    """A call the gateway refused or could not answer."""

    def __init__(
        self,
        code: str,
        reason: str,
        message: str,
        retry_after_s: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code} {reason}: {message}" if reason else f"{code}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.retry_after_s = retry_after_s
        self.metadata = dict(metadata or {})

    @classmethod
    def of(cls, exc: grpc.RpcError) -> GatewayError:
        reason, metadata, retry = error_info_of(exc)
        code = exc.code().name if hasattr(exc, "code") and exc.code() is not None else "UNKNOWN"
        details = exc.details() if hasattr(exc, "details") else str(exc)
        return cls(code, reason, details or "", retry, metadata)


class CredentialError(ValueError):
    """A credential file the client cannot use: ``which`` is ``ca``, ``cert`` or ``key`` (the
    constructor's argument), ``path`` the file and ``problem`` what is wrong with it."""

    def __init__(self, which: str, path: str | Path, problem: str) -> None:
        super().__init__(f"{which} {path}: {problem}")
        self.which = which
        self.path = Path(path)
        self.problem = problem


class BatchItemError(ValueError):
    """An item given to :meth:`GatewayClient.batch_verify` that is not an (item id, identifier)
    pair of strings; ``position`` counts the items from 1. The message does not hold the item."""

    def __init__(self, position: int, problem: str) -> None:
        super().__init__(f"batch item {position}: {problem}")
        self.position = position
        self.problem = problem


#: The longest deadline the client accepts, seconds (one day).
MAX_TIMEOUT_S = 86400.0


def check_timeout(value: float, name: str) -> float:
    """``value`` if it is a usable deadline (a finite number of seconds, more than 0 and at most
    a day); ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} is not a number of seconds")
    if not math.isfinite(value) or not 0 < value <= MAX_TIMEOUT_S:
        raise ValueError(f"{name} must be more than 0 and at most {MAX_TIMEOUT_S:g} seconds, not {value:g}")
    return float(value)


def _credentials(ca: str | Path, cert: str | Path, key: str | Path) -> tuple[bytes, bytes, bytes]:
    """The PEM bytes of the three files once they are checked: ``ca`` holds certificates,
    ``cert`` a certificate (chain), ``key`` an unencrypted private key of the first certificate
    in ``cert``. CredentialError otherwise; OSError when a file cannot be read."""
    ca_pem, cert_pem, key_pem = Path(ca).read_bytes(), Path(cert).read_bytes(), Path(key).read_bytes()
    try:
        x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        raise CredentialError("ca", ca, "not a PEM certificate") from None
    try:
        leaf = x509.load_pem_x509_certificates(cert_pem)[0]
    except ValueError:
        raise CredentialError("cert", cert, "not a PEM certificate") from None
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except (TypeError, ValueError, UnsupportedAlgorithm):
        raise CredentialError("key", key, "not an unencrypted PEM private key") from None
    if not key_matches(leaf, private):
        raise CredentialError("key", key, f"not the private key of the certificate {cert}")
    return ca_pem, cert_pem, key_pem


_INT64 = range(-(2**63), 2**63)


def _parameters(parameters: Mapping[str, int] | None) -> dict[str, int]:
    """A predicate's parameters as the wire carries them (64-bit integers); ValueError naming
    the parameter otherwise."""
    out: dict[str, int] = {}
    for name, value in (parameters or {}).items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"parameter {name!r} is not an integer")
        if value not in _INT64:
            raise ValueError(f"parameter {name!r} is outside the 64-bit integer range")
        out[name] = value
    return out


@dataclass(frozen=True, slots=True)
class DatasetResult:
    provider: Agency | None
    dataset: str
    found: bool
    values: Mapping[str, Any]
    legal_basis: str


@dataclass(frozen=True, slots=True)
class QueryResult:
    request_id: str
    results: tuple[DatasetResult, ...]
    replayed: bool


@dataclass(frozen=True, slots=True)
class VerifyResult:
    request_id: str
    #: True / False, or None when the provider holds no record of the subject.
    result: bool | None
    legal_basis: str
    replayed: bool


@dataclass(frozen=True, slots=True)
class BatchResult:
    item_id: str
    result: bool | None
    #: Set when this item was refused (INVALID_IDENTITY_NUMBER, CONSENT_MISSING, ...).
    error_reason: str


_RESULTS = {
    exchange_pb2.VERIFY_RESULT_YES: True,
    exchange_pb2.VERIFY_RESULT_NO: False,
    exchange_pb2.VERIFY_RESULT_SUBJECT_NOT_FOUND: None,
}


def _subject(subject: str, kind: SubjectKind | str | None) -> common_pb2.SubjectRef:
    ref = common_pb2.SubjectRef(id=subject)
    if kind is not None:
        ref.kind = kind_to_wire(SubjectKind(kind))
    return ref


def _agency(value: Agency | str) -> AgencyWire:
    try:
        return agency_to_wire(Agency(value))
    except ValueError:
        raise GatewayError("INVALID_ARGUMENT", "UNKNOWN_AGENCY", f"unknown agency {value!r}") from None


def _meta(purpose: str, request_id: str | None, operator: str) -> common_pb2.RequestMeta:
    return common_pb2.RequestMeta(
        request_id=request_id or uuid.uuid4().hex, purpose=common_pb2.Purpose(code=purpose), operator=operator
    )


def _add_item(message: exchange_pb2.BatchVerifyRequest, position: int, item: Any, kind: KindWire) -> None:
    if isinstance(item, str | bytes) or not isinstance(item, Sequence) or len(item) != 2:
        raise BatchItemError(position, f"want an (item id, identifier) pair, got {type(item).__name__}")
    item_id, identifier = item
    if not isinstance(item_id, str) or not isinstance(identifier, str):
        raise BatchItemError(
            position,
            f"want an (item id, identifier) pair of strings, got {type(item_id).__name__}"
            f" and {type(identifier).__name__}",
        )
    try:
        message.items.add(item_id=item_id, subject=common_pb2.SubjectRef(kind=kind, id=identifier))
    except ValueError:  # a string the wire cannot carry (a lone surrogate)
        raise BatchItemError(position, "an item id or identifier that is not valid Unicode") from None


class _StreamWatch:
    """Watches one BatchVerify stream: cancels it when the gateway owes an answer (a message
    with items was sent and is not answered, or the input is all sent and the stream has not
    ended) and nothing came from it for ``idle`` seconds. The time spent in the caller's code
    (reading its items, handling a result) does not count. Also keeps the exception raised by
    the caller's items."""

    def __init__(self, idle: float) -> None:
        self.idle = idle
        self.error: Exception | None = None
        self.timed_out = False
        self._call: Any = None
        self._owed = 0  # messages with items sent and not yet answered
        self._input_done = False
        self._in_input = False
        #: Set while a result is with the caller.
        self.handing_out = False
        self._since = time.monotonic()  # the last sign of progress
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def reading(self, items: Iterable[Any]) -> Iterator[Any]:
        """``items``, with the time spent in them marked."""
        iterator = iter(items)
        while True:
            self._in_input = True
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                self._since = time.monotonic()
                self._in_input = False
            yield item

    def handed_out(self) -> None:
        self._since = time.monotonic()
        self.handing_out = False

    def sent(self) -> None:
        with self._lock:
            self._owed += 1
        self._wake.set()

    def answered(self) -> None:
        with self._lock:
            self._owed -= 1
            self._since = time.monotonic()

    def input_done(self) -> None:
        self._input_done = True
        self._wake.set()

    def fail(self, exc: Exception) -> None:
        with self._lock:
            self.error = exc
            call = self._call
        if call is not None:
            call.cancel()

    def start(self, call: Any) -> None:
        with self._lock:
            self._call = call
            failed = self.error is not None
        if failed:
            call.cancel()
            return
        self._thread = threading.Thread(target=self._run, name="dsgw-batch-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    def _run(self) -> None:
        while not self._stopped:
            self._wake.clear()
            with self._lock:
                owed = self._owed > 0 or self._input_done
            if not owed:
                wait = self.idle
            elif self._in_input or self.handing_out:
                wait = min(self.idle, 0.25)
            else:
                wait = self._since + self.idle - time.monotonic()
                if wait <= 0:
                    self.timed_out = True
                    self._call.cancel()
                    return
            self._wake.wait(wait)


class GatewayClient:
    """One mTLS channel to the gateway. ``timeout``: the default deadline of each call, seconds
    (it travels to the gateway, which passes what is left down to the providers); for
    :meth:`batch_verify` the default longest wait for the gateway's next answer.

    The credential files are checked when the client is made: :class:`CredentialError` when
    ``ca`` or ``cert`` holds no PEM certificate, or ``key`` is not the unencrypted PEM private key
    of ``cert``; OSError when one cannot be read. ValueError for a ``timeout`` that is not more
    than 0 and at most :data:`MAX_TIMEOUT_S`."""

    def __init__(
        self,
        target: str,
        *,
        ca: str | Path,
        cert: str | Path,
        key: str | Path,
        timeout: float = 5.0,
        operator: str = "",
        server_name: str | None = None,
    ) -> None:
        timeout = check_timeout(timeout, "timeout")
        ca_pem, cert_pem, key_pem = _credentials(ca, cert, key)
        creds = grpc.ssl_channel_credentials(ca_pem, key_pem, cert_pem)
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        self.channel = grpc.secure_channel(target, creds, options=options)
        self._stub = exchange_pb2_grpc.DataExchangeStub(self.channel)
        self._consent = consent_pb2_grpc.ConsentServiceStub(self.channel)
        self.timeout = timeout
        self.operator = operator

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(
                request, timeout=self.timeout if timeout is None else check_timeout(timeout, "timeout")
            )
        except grpc.RpcError as exc:
            raise GatewayError.of(exc) from None

    def catalogue(self, *, timeout: float | None = None) -> exchange_pb2.ListCatalogueResponse:
        """What this agency may ask (the raw ListCatalogue response)."""
        result: exchange_pb2.ListCatalogueResponse = self._call(
            self._stub.ListCatalogue, exchange_pb2.ListCatalogueRequest(), timeout
        )
        return result

    def query(
        self,
        subject: str,
        purpose: str,
        datasets: Sequence[tuple[Agency | str, str, Sequence[str]]],
        *,
        kind: SubjectKind | str | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> QueryResult:
        """The allowed values of ``datasets`` ((provider, dataset, fields); no fields: all the
        agreement allows) about ``subject``."""
        request = exchange_pb2.QueryRequest(
            meta=_meta(purpose, request_id, self.operator), subject=_subject(subject, kind)
        )
        for provider, dataset, fields in datasets:
            request.datasets.add(provider=_agency(provider), dataset=dataset, fields=list(fields))
        resp: exchange_pb2.QueryResponse = self._call(self._stub.Query, request, timeout)
        return QueryResult(
            resp.request_id,
            tuple(
                DatasetResult(
                    agency_from_wire(r.provider),
                    r.dataset,
                    r.found,
                    {k: value_from_wire(v) for k, v in sorted(r.values.items())},
                    r.legal_basis,
                )
                for r in resp.results
            ),
            resp.replayed,
        )

    def verify(
        self,
        subject: str,
        purpose: str,
        provider: Agency | str,
        predicate: str,
        parameters: Mapping[str, int] | None = None,
        *,
        kind: SubjectKind | str | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> VerifyResult:
        """A comparison: the predicate's answer about ``subject``, none of the data."""
        request = exchange_pb2.VerifyRequest(
            meta=_meta(purpose, request_id, self.operator),
            subject=_subject(subject, kind),
            provider=_agency(provider),
            predicate=predicate,
            parameters=_parameters(parameters),
        )
        resp: exchange_pb2.VerifyResponse = self._call(self._stub.Verify, request, timeout)
        return VerifyResult(resp.request_id, _RESULTS.get(resp.result), resp.legal_basis, resp.replayed)

    def batch_verify(
        self,
        subjects: Iterable[tuple[str, str]],
        purpose: str,
        provider: Agency | str,
        predicate: str,
        parameters: Mapping[str, int] | None = None,
        *,
        kind: SubjectKind | str | None = None,
        request_id: str | None = None,
        chunk: int = 500,
        timeout: float | None = None,
        idle_timeout: float | None = None,
    ) -> Iterator[BatchResult]:
        """Bulk comparisons on one stream: ``subjects`` are (item id, identifier) pairs, sent in
        messages of ``chunk``; results come back in order as they are answered.

        ``timeout``: a deadline for the whole stream, seconds (none by default: a stream may be of
        any length). ``idle_timeout`` (default: the client's ``timeout``): the longest wait for
        the gateway while it owes an answer (time spent reading ``subjects`` does not count);
        past it the stream is cancelled and :class:`GatewayError` ``DEADLINE_EXCEEDED`` raised.
        An exception raised by ``subjects`` cancels the stream and is raised again here; an item
        that is not a pair of strings raises :class:`BatchItemError`."""
        header = exchange_pb2.BatchVerifyRequest(
            meta=_meta(purpose, request_id, self.operator),
            provider=_agency(provider),
            predicate=predicate,
            parameters=_parameters(parameters),
        )
        wire_kind: KindWire = (
            kind_to_wire(SubjectKind(kind)) if kind is not None else common_pb2.SUBJECT_KIND_UNSPECIFIED
        )
        deadline = None if timeout is None else check_timeout(timeout, "timeout")
        watch = _StreamWatch(
            self.timeout if idle_timeout is None else check_timeout(idle_timeout, "idle_timeout")
        )

        def requests() -> Iterator[exchange_pb2.BatchVerifyRequest]:
            message = header
            try:
                for position, item in enumerate(watch.reading(subjects), 1):
                    _add_item(message, position, item, wire_kind)
                    if len(message.items) >= chunk:
                        watch.sent()
                        yield message
                        message = exchange_pb2.BatchVerifyRequest()
            except Exception as exc:  # the caller's: raised again by batch_verify
                watch.fail(exc)
                return
            if message.items:
                watch.sent()
                yield message
            elif message is header:
                yield message
            watch.input_done()

        call = None
        try:
            try:
                call = self._stub.BatchVerify(requests(), timeout=deadline)
                watch.start(call)
                for resp in call:
                    watch.answered()
                    for o in resp.outcomes:
                        watch.handing_out = True  # the caller's time with a result does not count
                        yield BatchResult(o.item_id, _RESULTS.get(o.result), o.error_reason)
                        watch.handed_out()
            except grpc.RpcError as exc:
                if watch.error is None and not watch.timed_out:
                    raise GatewayError.of(exc) from None
                if watch.error is None:
                    raise GatewayError(
                        "DEADLINE_EXCEEDED", "", f"no answer from the gateway within {watch.idle:g} s"
                    ) from None
            if watch.error is not None:  # the caller's items raised it: the stream is cancelled
                raise watch.error
        finally:
            watch.stop()
            if call is not None:
                call.cancel()  # a no-op once the stream has ended; else (the caller stopped early) ends it

    # -- consent ----------------------------------------------------------------------------------

    def grant_consent(
        self,
        subject: str,
        scope: Sequence[tuple[Agency | str, str, Sequence[str]]],
        purposes: Sequence[str],
        *,
        valid_days: int | None = None,
        valid_to: datetime.datetime | None = None,
        channel: str,
        evidence_ref: str,
        notice_version: str,
        consumers: Sequence[Agency | str] = (),
        separate: bool = False,
        use_limit: int = 0,
        kind: SubjectKind | str | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> tuple[consent_pb2.Consent, dict[str, Any] | None]:
        """Record the subject's consent (captured by this agency at ``channel``); returns the
        consent and its signed receipt. ``consumers`` empty: this agency. The validity is
        ``valid_days`` (counted by the gateway from when it records the grant, so a retry with
        the same ``request_id`` is the same grant) or an explicit, timezone-aware ``valid_to``."""
        import json

        from gateway.server.wire import timestamp_to

        if (valid_days is None) == (valid_to is None):
            raise ValueError("give valid_days or valid_to (exactly one)")
        if valid_days is not None and (
            isinstance(valid_days, bool) or not isinstance(valid_days, int) or valid_days < 1
        ):
            raise ValueError("valid_days is a whole number of days, at least 1")
        request = consent_pb2.GrantConsentRequest(
            subject=_subject(subject, kind),
            consumers=[_agency(c) for c in consumers],
            purposes=list(purposes),
            use_limit=use_limit,
            separate=separate,
            channel=channel,
            evidence_ref=evidence_ref,
            notice_version=notice_version,
            request_id=request_id or uuid.uuid4().hex,
        )
        if valid_to is not None:
            if valid_to.tzinfo is None:
                raise ValueError("valid_to must be timezone-aware")
            request.valid_to.CopyFrom(timestamp_to(valid_to))
        else:
            request.valid_days = valid_days or 0
        for provider, dataset, fields in scope:
            request.scope.add(provider=_agency(provider), dataset=dataset, fields=list(fields))
        resp: consent_pb2.ConsentChangeResponse = self._call(self._consent.Grant, request, timeout)
        receipt = json.loads(resp.receipt_json) if resp.receipt_json else None
        return resp.consent, receipt

    def revoke_consent(
        self,
        consent_id: str,
        subject: str,
        *,
        channel: str = "",
        evidence_ref: str = "",
        kind: SubjectKind | str | None = None,
        timeout: float | None = None,
    ) -> tuple[consent_pb2.Consent, dict[str, Any] | None]:
        """Revoke a consent on the subject's behalf; effective for the next call everywhere."""
        import json

        request = consent_pb2.RevokeConsentRequest(
            consent_id=consent_id, subject=_subject(subject, kind), channel=channel, evidence_ref=evidence_ref
        )
        resp: consent_pb2.ConsentChangeResponse = self._call(self._consent.Revoke, request, timeout)
        return resp.consent, json.loads(resp.receipt_json) if resp.receipt_json else None

    def consents(
        self,
        subject: str,
        *,
        status: str = "",
        kind: SubjectKind | str | None = None,
        timeout: float | None = None,
    ) -> list[consent_pb2.Consent]:
        request = consent_pb2.ListConsentsRequest(subject=_subject(subject, kind), status=status)
        resp: consent_pb2.ListConsentsResponse = self._call(self._consent.ListBySubject, request, timeout)
        return list(resp.consents)
