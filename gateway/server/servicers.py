"""The gRPC servicers (thin): authenticate the caller, translate the wire to plain requests, run
the request path (:mod:`gateway.exchange`, :mod:`gateway.consent`), translate answers back, and
map typed errors to gRPC statuses with ErrorInfo (:mod:`gateway.server.status`). Every call is
logged with its request id, caller and purpose, and counted in the metrics; nothing personal is
logged."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import grpc
import structlog

from adapters.agencies import Agency
from adapters.contract import Sensitivity
from dsgw.v1 import common_pb2, consent_pb2, consent_pb2_grpc, exchange_pb2, exchange_pb2_grpc
from gateway.consent.errors import (
    ConsentError,
    ConsentExists,
    ConsentNotActive,
    ConsentNotFound,
    StoreError,
)
from gateway.consent.model import CONSENT_ID, ConsentRecord
from gateway.consent.service import GrantRequest, ScopeRequest, parse_subject
from gateway.errors import DsgwError
from gateway.exchange import (
    REQUEST_ID,
    BatchItem,
    BatchVerifier,
    CallMeta,
    DatasetAsk,
    Exchange,
)
from gateway.logs import debug_dropped
from gateway.pipeline import record as record_step
from gateway.pipeline.authenticate import authenticate
from gateway.pipeline.consent import DENY_REASONS
from gateway.pipeline.errors import (
    Conflict,
    ConsentStoreDown,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RequestError,
    Unauthenticated,
    echo_name,
)
from gateway.server.metrics import GatewayMetrics
from gateway.server.status import to_grpc_status
from gateway.server.wire import (
    agency_from_wire,
    agency_to_wire,
    kind_from_wire,
    kind_to_wire,
    timestamp_from,
    timestamp_to,
    value_to_wire,
)

__all__ = ["Authenticator", "ConsentServicer", "DataExchangeServicer", "consent_to_wire"]

_log = structlog.get_logger("gateway.server")
T = TypeVar("T")

#: Development plaintext mode only: the calling agency, from this metadata key.
DEV_AGENCY_HEADER = "x-dsgw-dev-agency"

_SENSITIVITY = {
    Sensitivity.PUBLIC: common_pb2.SENSITIVITY_PUBLIC,
    Sensitivity.PERSONAL: common_pb2.SENSITIVITY_PERSONAL,
    Sensitivity.SENSITIVE: common_pb2.SENSITIVITY_SENSITIVE,
}


class Authenticator:
    """Step 1 over a gRPC context: the verified client certificate from the TLS auth context
    (parsed once per certificate), checked against the CRL on every call."""

    def __init__(
        self,
        agency_of: Callable[[bytes], Agency] | None,
        is_revoked: Callable[[bytes], bool] | None,
        *,
        dev_plaintext: bool = False,
    ) -> None:
        self._agency_of = agency_of
        self._is_revoked = is_revoked
        self._dev = dev_plaintext
        self._known: dict[bytes, Agency] = {}

    def _cached_agency(self, pem: bytes) -> Agency:
        agency = self._known.get(pem)
        if agency is None:
            assert self._agency_of is not None
            agency = self._agency_of(pem)
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[pem] = agency
        return agency

    def caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> Agency:
        if self._dev:
            for key, value in context.invocation_metadata() or ():
                if key == DEV_AGENCY_HEADER:
                    try:
                        return Agency(str(value))
                    except ValueError:
                        break
            raise Unauthenticated(
                "CERTIFICATE_INVALID", f"plaintext development mode: send {DEV_AGENCY_HEADER}"
            )
        certs = context.auth_context().get("x509_pem_cert") or []
        pem = next(iter(certs), None)
        assert self._is_revoked is not None
        return authenticate(pem, agency_of=self._cached_agency, is_revoked=self._is_revoked)


class _Base:
    def __init__(self, auth: Authenticator, metrics: GatewayMetrics | None) -> None:
        self.auth = auth
        self.metrics = metrics

    async def _run(
        self,
        method: str,
        context: grpc.aio.ServicerContext[Any, Any],
        purpose: str,
        request_id: str,
        body: Callable[[Agency], Awaitable[T]],
    ) -> T:
        started = time.perf_counter()
        code = "OK"
        # the call's log fields (request id, caller, purpose; never personal data), bound only
        # when something is logged
        fields: dict[str, str] = {"method": method, "request_id": request_id[:128], "purpose": purpose[:64]}
        try:
            caller = self.auth.caller(context)
            fields["caller"] = caller.value
            return await body(caller)
        except RequestError as exc:
            code = exc.code
            _log.info("call.refused", code=code, reason=exc.reason, **fields)
            self._observe(method, code, started)  # before the abort sends the status
            await context.abort_with_status(to_grpc_status(exc))
            raise  # unreachable: abort raises
        except ConsentError as exc:
            error = _consent_error(exc)
            code = error.code
            _log.info("call.refused", code=code, reason=error.reason, **fields)
            self._observe(method, code, started)  # before the abort sends the status
            await context.abort_with_status(to_grpc_status(error))
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except DsgwError as exc:
            code = "INVALID_ARGUMENT"
            _log.info("call.refused", code=code, reason=exc.reason, **fields)
            self._observe(method, code, started)  # before the abort sends the status
            await context.abort_with_status(to_grpc_status(InvalidArgument(exc.reason, str(exc))))
            raise
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code = "INTERNAL"
            _log.error("call.failed", error=type(exc).__name__, **fields)
            self._observe(method, code, started)  # before the abort sends the status
            await context.abort(grpc.StatusCode.INTERNAL, "internal error (logged by the gateway)")
            raise
        finally:
            if code in ("OK", "CANCELLED"):  # the refusals were counted before their abort
                elapsed = self._observe(method, code, started)
                if code == "OK" and not debug_dropped():
                    _log.debug("call.ok", ms=round(elapsed * 1000, 3), **fields)

    def _observe(self, method: str, code: str, started: float) -> float:
        """Count the call in the metrics (a refusal before its status is sent, so that a caller
        that has its answer also finds it counted); returns its duration in seconds."""
        elapsed = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.observe(method, code, elapsed)
        return elapsed


def _consent_error(exc: ConsentError) -> RequestError:
    if isinstance(exc, StoreError):
        return ConsentStoreDown()
    if isinstance(exc, ConsentNotFound):
        return NotFound("CONSENT_NOT_FOUND", str(exc))
    if isinstance(exc, ConsentNotActive):
        return FailedPrecondition("CONSENT_NOT_ACTIVE", str(exc))
    return InvalidArgument(getattr(exc, "reason", "INVALID_REQUEST"), str(exc))


def _meta(
    caller: Agency, meta: common_pb2.RequestMeta, context: grpc.aio.ServicerContext[Any, Any]
) -> CallMeta:
    remaining: float | None = context.time_remaining()
    if remaining is None:
        time_left: Callable[[], float | None] = lambda: None  # noqa: E731
    else:
        end = time.monotonic() + remaining

        def time_left() -> float | None:
            return end - time.monotonic()

    return CallMeta(
        caller=caller,
        request_id=meta.request_id,
        purpose=meta.purpose.code,
        operator=meta.operator,
        time_left=time_left,
    )


class DataExchangeServicer(exchange_pb2_grpc.DataExchangeServicer, _Base):
    def __init__(
        self, exchange: Exchange, auth: Authenticator, metrics: GatewayMetrics | None = None
    ) -> None:
        _Base.__init__(self, auth, metrics)
        self.x = exchange

    async def ListCatalogue(
        self, request: exchange_pb2.ListCatalogueRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> exchange_pb2.ListCatalogueResponse:
        async def body(caller: Agency) -> exchange_pb2.ListCatalogueResponse:
            out = exchange_pb2.ListCatalogueResponse(caller=agency_to_wire(caller))
            for a in self.x.book.for_consumer(caller):
                d = self.x.datasets.get((a.provider, a.dataset))
                if d is None:
                    continue
                e = out.entries.add(
                    provider=agency_to_wire(a.provider),
                    dataset=a.dataset,
                    subject_kind=kind_to_wire(d.subject_kind),
                    purposes=list(a.purposes),
                    legal_basis=a.legal_basis,
                    duty_reference=a.duty_reference,
                    valid_from=a.valid_from.isoformat(),
                    valid_to=a.valid_to.isoformat() if a.valid_to else "",
                    rate_limit_per_s=a.rate_limit_per_s,
                    agreement_id=a.id,
                )
                by_name = {f.name: f for f in d.fields}
                for name in a.fields:
                    e.fields.add(
                        name=name,
                        sensitivity=_SENSITIVITY[by_name[name].sensitivity],
                        mask=a.mask.get(name, ""),
                    )
                for p in a.predicates:
                    pd = self.x.predicates[(a.provider, p)]
                    e.predicates.add(
                        provider=agency_to_wire(pd.agency),
                        name=pd.name,
                        subject_kind=kind_to_wire(pd.subject_kind),
                        parameters=list(pd.parameters),
                        description=pd.description,
                        dataset=pd.dataset,
                        fields=list(pd.fields),
                    )
            return out

        return await self._run("ListCatalogue", context, "", "", body)

    async def Query(
        self, request: exchange_pb2.QueryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> exchange_pb2.QueryResponse:
        async def body(caller: Agency) -> exchange_pb2.QueryResponse:
            asks = [
                DatasetAsk(agency_from_wire(d.provider), d.dataset, tuple(d.fields)) for d in request.datasets
            ]
            answer = await self.x.query(
                _meta(caller, request.meta, context),
                kind_from_wire(request.subject.kind),
                request.subject.id,
                asks,
            )
            out = exchange_pb2.QueryResponse(request_id=answer.request_id, replayed=answer.replayed)
            for r in answer.results:
                item = out.results.add(
                    provider=agency_to_wire(r.provider),
                    dataset=r.dataset,
                    found=r.found,
                    legal_basis=r.legal_basis,
                )
                for name, value in r.values.items():
                    value_to_wire(value, item.values[name])
            return out

        return await self._run("Query", context, request.meta.purpose.code, request.meta.request_id, body)

    async def Verify(
        self, request: exchange_pb2.VerifyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> exchange_pb2.VerifyResponse:
        async def body(caller: Agency) -> exchange_pb2.VerifyResponse:
            answer = await self.x.verify(
                _meta(caller, request.meta, context),
                kind_from_wire(request.subject.kind),
                request.subject.id,
                agency_from_wire(request.provider),
                request.predicate,
                dict(request.parameters),
            )
            return exchange_pb2.VerifyResponse(
                request_id=answer.request_id,
                result=_verify_result(answer.result),
                legal_basis=answer.legal_basis,
                replayed=answer.replayed,
            )

        return await self._run("Verify", context, request.meta.purpose.code, request.meta.request_id, body)

    async def BatchVerify(
        self,
        request_iterator: AsyncIterator[exchange_pb2.BatchVerifyRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[exchange_pb2.BatchVerifyResponse]:
        """Reads a message, answers it, reads the next: at most one message's items are in the
        gateway at a time per stream, so a fast sender is held back by HTTP/2 flow control."""
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None:
            return
        header = first

        async def open_stream(caller: Agency) -> BatchVerifier:
            return await self.x.batch_header(
                _meta(caller, header.meta, context),
                agency_from_wire(header.provider),
                header.predicate,
                dict(header.parameters),
            )

        verifier = await self._run(
            "BatchVerify", context, header.meta.purpose.code, header.meta.request_id, open_stream
        )
        # Two messages in the gateway at most: the next is read and evaluated while the previous
        # one's audit entries are being made durable; answers leave in order, each only once its
        # entries are on disk. A sender faster than that is held back by HTTP/2 flow control.
        pending: collections.deque[asyncio.Task[exchange_pb2.BatchVerifyResponse]] = collections.deque()
        message: exchange_pb2.BatchVerifyRequest | None = first
        try:
            while message is not None:
                items = [
                    BatchItem(i.item_id, kind_from_wire(i.subject.kind), i.subject.id) for i in message.items
                ]
                if items:
                    pending.append(
                        asyncio.ensure_future(
                            self._run(
                                "BatchVerify",
                                context,
                                header.meta.purpose.code,
                                header.meta.request_id,
                                functools.partial(_answer_items, verifier, items),
                            )
                        )
                    )
                while pending and (len(pending) >= 2 or pending[0].done()):
                    yield await pending.popleft()
                message = await anext(requests, None)
            while pending:
                yield await pending.popleft()
        finally:
            for task in pending:
                task.cancel()


async def _answer_items(
    verifier: BatchVerifier, items: list[BatchItem], _caller: Agency
) -> exchange_pb2.BatchVerifyResponse:
    outcomes = await verifier.answer(items)
    resp = exchange_pb2.BatchVerifyResponse()
    for o in outcomes:
        resp.outcomes.add(
            item_id=o.item_id,
            result=_verify_result(o.result) if not o.error_reason else exchange_pb2.VERIFY_RESULT_UNSPECIFIED,
            error_reason=o.error_reason,
        )
    return resp


def _verify_result(result: bool | None) -> exchange_pb2.VerifyResult.ValueType:
    if result is None:
        return exchange_pb2.VERIFY_RESULT_SUBJECT_NOT_FOUND
    return exchange_pb2.VERIFY_RESULT_YES if result else exchange_pb2.VERIFY_RESULT_NO


# --- consent -------------------------------------------------------------------------------------


def consent_to_wire(record: ConsentRecord, now: Any) -> consent_pb2.Consent:
    t = record.terms
    out = consent_pb2.Consent(
        consent_id=t.consent_id,
        subject=common_pb2.SubjectRef(kind=kind_to_wire(t.subject_kind), id=t.subject_id),
        consumers=[agency_to_wire(a) for a in t.consumers],
        purposes=list(t.purposes),
        valid_from=timestamp_to(t.valid_from),
        valid_to=timestamp_to(t.valid_to),
        use_limit=t.use_limit or 0,
        uses=record.uses,
        separate=t.separate,
        channel=t.channel.value,
        evidence_ref=t.evidence_ref,
        notice_version=t.notice_version,
        status=(record.status_at(now) or record.status).value,
    )
    for item in t.scope.items:
        out.scope.add(provider=agency_to_wire(item.provider), dataset=item.dataset, fields=list(item.fields))
    for e in record.history:
        out.history.add(
            seq=e.seq,
            status=e.status.value,
            at=timestamp_to(e.at),
            recorded_at=timestamp_to(e.recorded_at),
            channel=e.channel.value if e.channel else "",
            evidence_ref=e.evidence_ref,
            note=e.note,
        )
    return out


#: The most consents of one subject ListBySubject looks at (a subject has a handful).
MAX_CONSENTS_LISTED = 10_000
MAX_VALID_DAYS = 36_525
"""The longest validity a Grant may ask for, in days (a hundred years): through valid_days, or
from valid_from (else now) to valid_to."""


def _consent_id(consent_id: str) -> str:
    """``consent_id`` if it has the form of a consent id, else INVALID_ARGUMENT (the id is not
    echoed: it may be anything, of any length)."""
    if not CONSENT_ID.fullmatch(consent_id):
        raise InvalidArgument(
            "INVALID_REQUEST",
            "consent_id must be 1-64 characters of letters, digits and ._:- (a letter or digit first)",
        )
    return consent_id


def _validity_time(ts: Any, name: str) -> datetime:
    """A Grant's ``valid_from`` / ``valid_to``; INVALID_VALIDITY outside what a Timestamp (and
    a datetime) holds: 0001-01-01 to 9999-12-31 UTC, nanos 0..999,999,999."""
    try:
        return timestamp_from(ts)
    except (ValueError, OverflowError):
        raise InvalidArgument(
            "INVALID_VALIDITY", f"{name} is not a valid time (0001-01-01 to 9999-12-31 UTC)"
        ) from None


class ConsentServicer(consent_pb2_grpc.ConsentServiceServicer, _Base):
    """ConsentService over the consent service of :mod:`gateway.consent` (blocking calls on the
    I/O threads). Grants and revocations are written to the audit log inside the store's
    transaction (the service's ``on_event`` hook): no entry, no change."""

    def __init__(
        self, exchange: Exchange, auth: Authenticator, metrics: GatewayMetrics | None = None
    ) -> None:
        _Base.__init__(self, auth, metrics)
        self.x = exchange
        self.service = exchange.consent

    async def Grant(
        self, request: consent_pb2.GrantConsentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> consent_pb2.ConsentChangeResponse:
        async def body(caller: Agency) -> consent_pb2.ConsentChangeResponse:
            days = request.valid_days
            if days and request.HasField("valid_to"):
                raise InvalidArgument("INVALID_VALIDITY", "give valid_to or valid_days, not both")
            if not days and not request.HasField("valid_to"):
                raise InvalidArgument("INVALID_VALIDITY", "valid_to or valid_days is required")
            if days > MAX_VALID_DAYS:
                raise InvalidArgument("INVALID_VALIDITY", f"valid_days is at most {MAX_VALID_DAYS}")
            if request.request_id and not REQUEST_ID.fullmatch(request.request_id):
                raise InvalidArgument(
                    "INVALID_REQUEST",
                    "request_id must be 1-128 characters of letters, digits and ._:@/+=- "
                    "(a letter or digit first)",
                )
            valid_from = (
                _validity_time(request.valid_from, "valid_from") if request.HasField("valid_from") else None
            )
            start = valid_from or datetime.now(UTC)
            if days:  # the validity starts now (the retries below compare with the first start)
                valid_from = start
                try:
                    valid_to = start + timedelta(days=days)
                except OverflowError:
                    raise InvalidArgument(
                        "INVALID_VALIDITY", "valid_from + valid_days is after 9999-12-31"
                    ) from None
            else:
                valid_to = _validity_time(request.valid_to, "valid_to")
                if valid_to - start > timedelta(days=MAX_VALID_DAYS):
                    raise InvalidArgument(
                        "INVALID_VALIDITY",
                        f"valid_to is at most {MAX_VALID_DAYS} days after valid_from (or now)",
                    )
            consumers = [agency_from_wire(c) for c in request.consumers] or [caller]
            if any(c is None for c in consumers):
                raise InvalidArgument("UNKNOWN_AGENCY", "unknown consumer agency")
            scope = []
            for s in request.scope:
                provider = agency_from_wire(s.provider)
                if provider is None:
                    raise InvalidArgument("UNKNOWN_AGENCY", "unknown provider agency in scope")
                scope.append(ScopeRequest(provider.value, s.dataset, tuple(s.fields) or None))
            consent_id = None
            if request.request_id:
                digest = hashlib.sha256(f"{caller.value}\x00{request.request_id}".encode()).hexdigest()[:32]
                consent_id = f"cns-{digest}"
            req = GrantRequest(
                subject=request.subject.id,
                subject_kind=(kind_from_wire(request.subject.kind) or None)
                and kind_from_wire(request.subject.kind).value,  # type: ignore[union-attr]
                consumers=[c.value for c in consumers if c is not None],
                scope=scope,
                purposes=list(request.purposes),
                valid_from=valid_from,
                valid_to=valid_to,
                use_limit=request.use_limit or None,
                separate=request.separate,
                channel=request.channel,
                evidence_ref=request.evidence_ref,
                notice_version=request.notice_version,
                consent_id=consent_id,
            )

            def work() -> tuple[ConsentRecord, dict[str, Any] | None]:
                try:
                    with record_step.acting(caller, request.request_id):
                        granted = self.service.grant(req)
                    return granted.record, granted.receipt
                except ConsentExists:  # a retry: the same consent, if it is the same grant
                    assert consent_id is not None
                    record = self.service.get(consent_id)
                    again = req
                    if days and not request.HasField("valid_from"):
                        # the days run from the first grant's start, not from this retry's
                        start = record.terms.valid_from
                        again = dataclasses.replace(
                            req, valid_from=start, valid_to=start + timedelta(days=days)
                        )
                    if not _same_grant(self.service, again, record):
                        raise Conflict(
                            "REQUEST_ID_CONFLICT", "this request id was used for a different grant"
                        ) from None
                    return record, self.service.receipt(
                        record, record.history[0]
                    ) if self.service.signer else None

            record, receipt = await self.x._io(work)
            return _change_response(record, receipt)

        return await self._run("Grant", context, "", request.request_id, body)

    async def Revoke(
        self, request: consent_pb2.RevokeConsentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> consent_pb2.ConsentChangeResponse:
        async def body(caller: Agency) -> consent_pb2.ConsentChangeResponse:
            consent_id = _consent_id(request.consent_id)
            if not request.subject.id:
                raise InvalidArgument("INVALID_REQUEST", "subject is required to revoke a consent")
            kind = kind_from_wire(request.subject.kind)

            def work() -> tuple[ConsentRecord, dict[str, Any] | None]:
                subject = parse_subject(request.subject.id, kind)
                # as with Get: an agency revokes (on the subject's behalf) only the consents that
                # name it as a consumer; any other is not found, and nothing is changed
                with record_step.acting(caller):
                    revoked = self.service.revoke(
                        consent_id,
                        subject=subject.id,
                        consumer=caller,
                        channel=request.channel or None,
                        evidence_ref=request.evidence_ref,
                    )
                return revoked.record, revoked.receipt

            record, receipt = await self.x._io(work)
            return _change_response(record, receipt)

        return await self._run("Revoke", context, "", request.consent_id, body)

    async def Get(
        self, request: consent_pb2.GetConsentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> consent_pb2.Consent:
        async def body(caller: Agency) -> consent_pb2.Consent:
            record = _visible(await self.x._io(self.service.get, _consent_id(request.consent_id)), caller)
            return consent_to_wire(record, self.service.clock())

        return await self._run("Get", context, "", request.consent_id, body)

    async def ListBySubject(
        self, request: consent_pb2.ListConsentsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> consent_pb2.ListConsentsResponse:
        async def body(caller: Agency) -> consent_pb2.ListConsentsResponse:
            kind = kind_from_wire(request.subject.kind)
            # an agency sees the consents that name it as a consumer (as with Get); the subject's
            # whole list is for the subject (dsgw consent list, the subject report)
            records = await self.x._io(
                lambda: self.service.list(
                    subject=request.subject.id,
                    subject_kind=kind.value if kind else None,
                    status=request.status or None,
                    limit=MAX_CONSENTS_LISTED,
                )
            )
            mine = [r for r in records if caller in r.terms.consumers]
            page = mine[request.offset : request.offset + (request.limit or 100)]
            now = self.service.clock()
            return consent_pb2.ListConsentsResponse(consents=[consent_to_wire(r, now) for r in page])

        return await self._run("ListBySubject", context, "", "", body)

    async def Check(
        self, request: consent_pb2.CheckConsentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> consent_pb2.CheckConsentResponse:
        async def body(caller: Agency) -> consent_pb2.CheckConsentResponse:
            consumer = agency_from_wire(request.consumer) or caller
            if consumer is not caller:
                raise PermissionDenied("NO_AGREEMENT", "an agency checks consents for itself only")
            provider = agency_from_wire(request.provider)
            if provider is None:
                raise InvalidArgument("UNKNOWN_AGENCY", "provider is required")
            dataset, fields = request.dataset, list(request.fields)
            if request.predicate:  # the fields a comparison by it needs consent to
                pd = self.x.predicates.get((provider, request.predicate))
                if pd is None:
                    raise InvalidArgument(
                        "UNKNOWN_PREDICATE",
                        f"{provider.value} offers no predicate {echo_name(request.predicate)!r}",
                    )
                if fields or dataset not in ("", pd.dataset):
                    raise InvalidArgument(
                        "INVALID_REQUEST",
                        f"name fields or a predicate, not both; {request.predicate!r} reads {pd.dataset}",
                    )
                dataset = pd.dataset
                fields = list(self.x.comparison_fields(pd))
            # only about a dataset the caller has an agreement for, and only its own consents:
            # another agency's consent (and its id) is not the caller's to learn of
            if (provider, dataset) not in self.x.datasets:
                raise InvalidArgument(
                    "UNKNOWN_DATASET", f"{provider.value} offers no dataset {echo_name(dataset)!r}"
                )
            self.x.book.find(caller, provider, dataset, self.x.today())
            kind = kind_from_wire(request.subject.kind)
            decision = await self.x._io(
                lambda: self.service.check(
                    subject=request.subject.id,
                    subject_kind=kind.value if kind else None,
                    consumer=consumer.value,
                    provider=provider.value,
                    dataset=dataset,
                    fields=fields or None,
                    purpose=request.purpose,
                    own_only=True,
                )
            )
            return consent_pb2.CheckConsentResponse(
                allowed=decision.allowed,
                basis=decision.basis.value,
                consent_ids=list(decision.consent_ids),
                # the ErrorReason name, as Query answers the same request (not the decision's)
                reason=DENY_REASONS[decision.reason] if decision.reason else "",
                field=decision.field or "",
                detail=decision.detail,
            )

        return await self._run("Check", context, request.purpose, "", body)


def _visible(record: ConsentRecord, caller: Agency) -> ConsentRecord:
    """``record`` if it names ``caller`` as a consumer, else not found: the same answer, word for
    word, as for a consent id that does not exist."""
    if caller not in record.terms.consumers:
        raise ConsentNotFound(record.consent_id)
    return record


def _same_grant(service: Any, req: GrantRequest, record: ConsentRecord) -> bool:
    """Whether ``req`` asks for the consent ``record`` holds (its terms, validated as they would
    have been when it was granted)."""
    t = record.terms
    again = dataclasses.replace(req, valid_from=req.valid_from or t.valid_from)
    try:
        terms = service.validate_grant(again, t.granted_at)
    except ConsentError:
        return False
    ignore = {"granted_at"}
    return bool(terms.model_dump(exclude=ignore) == t.model_dump(exclude=ignore))


def _change_response(
    record: ConsentRecord, receipt: dict[str, Any] | None
) -> consent_pb2.ConsentChangeResponse:
    out = consent_pb2.ConsentChangeResponse(consent=consent_to_wire(record, record.last_event.recorded_at))
    if receipt is not None:
        out.receipt_json = json.dumps(receipt, ensure_ascii=False, sort_keys=True).encode("utf-8")
    return out
