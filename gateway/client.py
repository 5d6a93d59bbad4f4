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
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from adapters.agencies import Agency
from adapters.contract import SubjectKind
from dsgw.v1 import common_pb2, consent_pb2, consent_pb2_grpc, exchange_pb2, exchange_pb2_grpc
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
    "BatchResult",
    "DatasetResult",
    "GatewayClient",
    "GatewayError",
    "QueryResult",
    "VerifyResult",
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


class GatewayClient:
    """One mTLS channel to the gateway. ``timeout``: the default deadline of each call, seconds
    (it travels to the gateway, which passes what is left down to the providers)."""

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
        creds = grpc.ssl_channel_credentials(
            Path(ca).read_bytes(), Path(key).read_bytes(), Path(cert).read_bytes()
        )
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
            return method(request, timeout=self.timeout if timeout is None else timeout)
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
    ) -> Iterator[BatchResult]:
        """Bulk comparisons on one stream: ``subjects`` are (item id, identifier) pairs, sent in
        messages of ``chunk``; results come back in order as they are answered."""
        header = exchange_pb2.BatchVerifyRequest(
            meta=_meta(purpose, request_id, self.operator),
            provider=_agency(provider),
            predicate=predicate,
            parameters=_parameters(parameters),
        )
        wire_kind: KindWire = (
            kind_to_wire(SubjectKind(kind)) if kind is not None else common_pb2.SUBJECT_KIND_UNSPECIFIED
        )

        def requests() -> Iterator[exchange_pb2.BatchVerifyRequest]:
            message = header
            for item_id, identifier in subjects:
                message.items.add(
                    item_id=item_id, subject=common_pb2.SubjectRef(kind=wire_kind, id=identifier)
                )
                if len(message.items) >= chunk:
                    yield message
                    message = exchange_pb2.BatchVerifyRequest()
            if message.items or message is header:
                yield message

        try:
            for resp in self._stub.BatchVerify(requests(), timeout=timeout):
                for o in resp.outcomes:
                    yield BatchResult(o.item_id, _RESULTS.get(o.result), o.error_reason)
        except grpc.RpcError as exc:
            raise GatewayError.of(exc) from None

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
