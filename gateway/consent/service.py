"""The consent service: the thin orchestration the CLI (and later the gRPC ConsentService) call.

Everything a caller sends is validated **before** anything is stored: the subject's identifier
(GB 11643 / GB 32100), agency codes, provider datasets and fields (against the adapters'
descriptions), the subject kind of each dataset, purpose codes (against the purpose catalogue),
the validity window (end after start, end in the future), the use limit, the capture channel and
the references. A refusal is an :class:`~gateway.consent.errors.InvalidConsentRequest` with a
machine-readable ``reason``; nothing is written.

Grants, revocations and expiries call ``on_event(record, event)`` inside the store's write
transaction, after the event is written and before the commit: the gateway connects it to the
audit log, and an exception from it aborts the change (no audit entry, no consent change).

Checks read the subject's records from the store on every call (no cache of anything that
changes) and call the pure :func:`gateway.consent.decision.decide`.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from pydantic import ValidationError

from adapters.agencies import Agency
from adapters.contract import DatasetDescriptor, Sensitivity, Subject, SubjectKind
from gateway.consent.decision import CONSENT_REQUIRED, Basis, BasisKind, CheckRequest, Decision, decide
from gateway.consent.errors import ConsentNotActive, ConsentNotFound, InvalidConsentRequest, StoreError
from gateway.consent.model import (
    MAX_USE_LIMIT,
    CaptureChannel,
    ConsentRecord,
    ConsentStatus,
    ConsentTerms,
    ContactPreferences,
    OptOut,
    OptOutTarget,
    PushChannel,
    Scope,
    ScopeItem,
    StatusEvent,
    normalize_subject_id,
)
from gateway.consent.receipts import ReceiptSigner
from gateway.consent.store import ConsentStore, EventHook
from gateway.identity import InvalidIdentifier
from gateway.identity.checksums import looks_like_resident_id
from gateway.purposes import DEFAULT_CATALOGUE, PurposeCatalogue

__all__ = [
    "CLOCK_TOLERANCE",
    "ConsentService",
    "DatasetInfo",
    "GrantRequest",
    "Granted",
    "Revoked",
    "ScopeRequest",
    "audit_fields",
    "dataset_infos",
    "parse_subject",
]


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """What the consent service needs to know of a provider dataset."""

    provider: Agency
    name: str
    subject_kind: SubjectKind
    fields: tuple[str, ...]
    sensitive: frozenset[str]

    @classmethod
    def of(cls, d: DatasetDescriptor) -> DatasetInfo:
        return cls(
            d.agency,
            d.name,
            d.subject_kind,
            d.field_names(),
            frozenset(f.name for f in d.fields if f.sensitivity is Sensitivity.SENSITIVE),
        )


@cache
def _registry_infos() -> dict[tuple[Agency, str], DatasetInfo]:
    from adapters.registry import ADAPTER_CLASSES

    return {
        (agency, spec.descriptor.name): DatasetInfo.of(spec.descriptor)
        for agency, cls in ADAPTER_CLASSES.items()
        for spec in cls.DATASETS
    }


def dataset_infos(
    descriptors: Iterable[DatasetDescriptor] | None = None,
) -> dict[tuple[Agency, str], DatasetInfo]:
    """Dataset infos from ``descriptors``, or (None) from every adapter class of
    :data:`adapters.registry.ADAPTER_CLASSES` (no I/O)."""
    if descriptors is None:
        return dict(_registry_infos())
    return {(d.agency, d.name): DatasetInfo.of(d) for d in descriptors}


def parse_subject(value: str, kind: SubjectKind | str | None = None) -> Subject:
    """A subject in canonical form from an identifier and an optional kind (None: a valid
    identity number is a person, a valid credit code an employer). InvalidConsentRequest."""
    if not isinstance(value, str):
        raise InvalidConsentRequest("INVALID_REQUEST", "subject identifier is not a string")
    if kind is not None:
        try:
            k = SubjectKind(kind)
        except ValueError:
            raise InvalidConsentRequest("INVALID_REQUEST", f"unknown subject kind {kind!r}") from None
        kinds = [k]
    else:
        kinds = [SubjectKind.PERSON, SubjectKind.EMPLOYER]
    errors: dict[SubjectKind, InvalidIdentifier] = {}
    for k in kinds:
        try:
            return Subject(k, normalize_subject_id(k, value))
        except InvalidIdentifier as exc:
            errors[k] = exc
    if len(kinds) == 1:
        k = kinds[0]
    else:
        k = SubjectKind.PERSON if looks_like_resident_id(value) else SubjectKind.EMPLOYER
    reason = "INVALID_IDENTITY_NUMBER" if k is SubjectKind.PERSON else "INVALID_CREDIT_CODE"
    raise InvalidConsentRequest(reason, str(errors[k]))


@dataclass(frozen=True, slots=True)
class ScopeRequest:
    """A provider dataset and the fields wanted (None: every field of the dataset)."""

    provider: str
    dataset: str
    fields: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, text: str) -> ScopeRequest:
        """``provider.dataset`` (every field) or ``provider.dataset:field,field`` (those fields;
        an empty list after the colon is refused by the validation, never read as every field)."""
        head, colon, tail = text.partition(":")
        provider, dot, dataset = head.strip().partition(".")
        if not dot or not provider or not dataset:
            raise InvalidConsentRequest("INVALID_REQUEST", f"scope {text!r} is not provider.dataset[:fields]")
        # a colon with nothing after it names no fields (refused at validation), it is not "all"
        fields = tuple(f.strip() for f in tail.split(",") if f.strip()) if colon else None
        return cls(provider, dataset, fields)


@dataclass(frozen=True, slots=True)
class GrantRequest:
    """A grant as the caller sends it (validated by :meth:`ConsentService.grant`)."""

    subject: str
    consumers: Sequence[str]
    scope: Sequence[ScopeRequest]
    purposes: Sequence[str]
    valid_to: datetime
    channel: str
    evidence_ref: str
    notice_version: str
    valid_from: datetime | None = None
    use_limit: int | None = None
    separate: bool = False
    subject_kind: str | None = None
    consent_id: str | None = None


@dataclass(frozen=True, slots=True)
class Granted:
    record: ConsentRecord
    event: StatusEvent
    receipt: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Revoked:
    record: ConsentRecord
    event: StatusEvent
    receipt: dict[str, Any] | None


def audit_fields(record: ConsentRecord, event: StatusEvent) -> dict[str, Any]:
    """What an audit entry of a consent change needs, as plain data: ``subject`` (kind, id) for
    the entry's header and ``change`` the keyword arguments of ``audit.entry.ConsentChange``
    (datasets by bare name, which is unique across agencies; purposes by code)."""
    t = record.terms
    return {
        "time": event.recorded_at,
        "subject": {"kind": t.subject_kind.value, "id": t.subject_id},
        "change": {
            "consent_id": t.consent_id,
            "action": event.status.value,
            "consumers": tuple(c.value for c in t.consumers),
            "datasets": tuple(dict.fromkeys(i.dataset for i in t.scope.items)),
            "purposes": t.purposes,
        },
    }


#: How far ahead of the service's clock ``expire``/``revoke(now=...)`` may be (clocks of two
#: machines).
CLOCK_TOLERANCE = timedelta(minutes=1)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def new_consent_id() -> str:
    return f"cns-{uuid.uuid4().hex}"


def _read_key(request: CheckRequest) -> tuple[str, str, str]:
    return (request.subject.kind.value, request.provider.value, request.dataset)


def _use_limits(decided: Sequence[tuple[Decision, Sequence[ConsentRecord]]]) -> dict[str, int]:
    """The use-limited consents that allowed decisions rest on: consent id -> its use limit."""
    limits: dict[str, int] = {}
    for decision, records in decided:
        if decision.basis is not BasisKind.CONSENT:
            continue
        by_id = {r.consent_id: r for r in records}
        for cid in decision.consent_ids:
            limit = by_id[cid].terms.use_limit if cid in by_id else None
            if limit is not None:
                limits[cid] = limit
    return limits


class ConsentService:
    """Grant, revoke, check, list, expire and opt-out over one :class:`ConsentStore`.

    ``datasets``: the provider datasets consents may name (default: every adapter's);
    ``catalogue``: the purpose catalogue; ``signer``: signs grant and revocation receipts (None:
    no receipts); ``on_event``: the audit hook (see the module docstring); ``clock``: the time
    source (tests pass a fixed one).
    """

    def __init__(
        self,
        store: ConsentStore,
        *,
        datasets: Mapping[tuple[Agency, str], DatasetInfo] | None = None,
        catalogue: PurposeCatalogue = DEFAULT_CATALOGUE,
        signer: ReceiptSigner | None = None,
        on_event: EventHook | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.store = store
        self.datasets: Mapping[tuple[Agency, str], DatasetInfo] = (
            datasets if datasets is not None else dataset_infos()
        )
        self.catalogue = catalogue
        self.signer = signer
        self.on_event = on_event
        self.clock = clock

    # --- validation -----------------------------------------------------------------------------

    @staticmethod
    def _agency(code: str, what: str) -> Agency:
        try:
            return Agency(code)
        except ValueError:
            shown = code if isinstance(code, str) and len(code) <= 40 else "(invalid)"
            raise InvalidConsentRequest("UNKNOWN_AGENCY", f"unknown {what} agency {shown!r}") from None

    def _dataset(self, provider: str, dataset: str) -> DatasetInfo:
        agency = self._agency(provider, "provider")
        info = self.datasets.get((agency, dataset))
        if info is None:
            raise InvalidConsentRequest(
                "UNKNOWN_DATASET", f"{agency.value} offers no dataset {dataset[:64]!r}"
            )
        return info

    @staticmethod
    def _fields(info: DatasetInfo, fields: Sequence[str] | None) -> tuple[str, ...]:
        if fields is None:
            return info.fields
        if not fields:
            raise InvalidConsentRequest(
                "UNKNOWN_FIELD", f"no fields named for {info.provider.value}.{info.name}"
            )
        for f in fields:
            if f not in info.fields:
                raise InvalidConsentRequest(
                    "UNKNOWN_FIELD", f"{info.provider.value}.{info.name} has no field {str(f)[:64]!r}"
                )
        return tuple(dict.fromkeys(fields))

    def _purpose(self, code: str) -> str:
        if code not in self.catalogue:
            shown = code if isinstance(code, str) and len(code) <= 64 else "(invalid)"
            raise InvalidConsentRequest("UNKNOWN_PURPOSE", f"unknown purpose code {shown!r}")
        return code

    @staticmethod
    def _aware(value: datetime, what: str) -> datetime:
        if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
            raise InvalidConsentRequest("INVALID_VALIDITY", f"{what} needs a time zone")
        return value.astimezone(UTC)

    def validate_grant(self, req: GrantRequest, now: datetime) -> ConsentTerms:
        """The terms of a grant request, or InvalidConsentRequest."""
        subject = parse_subject(req.subject, req.subject_kind)
        if not req.consumers:
            raise InvalidConsentRequest("UNKNOWN_AGENCY", "a consent names at least one consumer agency")
        consumers = tuple(dict.fromkeys(self._agency(c, "consumer") for c in req.consumers))
        if not req.scope:
            raise InvalidConsentRequest("UNKNOWN_DATASET", "a consent names at least one provider dataset")
        items: builtins.list[ScopeItem] = []
        seen: set[tuple[Agency, str]] = set()
        all_sensitive = True
        for s in req.scope:
            info = self._dataset(s.provider, s.dataset)
            if info.subject_kind is not subject.kind:
                raise InvalidConsentRequest(
                    "SUBJECT_KIND_MISMATCH",
                    f"{info.provider.value}.{info.name} is about {info.subject_kind.value}s, "
                    f"the subject is a {subject.kind.value}",
                )
            if (info.provider, info.name) in seen:
                raise InvalidConsentRequest(
                    "INVALID_REQUEST", f"{info.provider.value}.{info.name} named twice"
                )
            seen.add((info.provider, info.name))
            fields = self._fields(info, s.fields)
            all_sensitive = all_sensitive and all(f in info.sensitive for f in fields)
            items.append(ScopeItem(provider=info.provider, dataset=info.name, fields=fields))
        if not req.purposes:
            raise InvalidConsentRequest("UNKNOWN_PURPOSE", "a consent names at least one purpose")
        purposes = tuple(dict.fromkeys(self._purpose(p) for p in req.purposes))
        valid_to = self._aware(req.valid_to, "valid_to")
        valid_from = self._aware(req.valid_from, "valid_from") if req.valid_from is not None else now
        if valid_to <= valid_from:
            raise InvalidConsentRequest("INVALID_VALIDITY", "validity ends before it starts")
        if valid_to <= now:
            raise InvalidConsentRequest("INVALID_VALIDITY", "validity has already ended")
        if req.use_limit is not None and (
            isinstance(req.use_limit, bool)
            or not isinstance(req.use_limit, int)
            or not 1 <= req.use_limit <= MAX_USE_LIMIT
        ):
            raise InvalidConsentRequest("INVALID_USE_LIMIT", f"use limit must be 1..{MAX_USE_LIMIT}")
        try:
            channel = CaptureChannel(req.channel)
        except ValueError:
            raise InvalidConsentRequest(
                "INVALID_CHANNEL",
                f"capture channel must be one of {', '.join(c.value for c in CaptureChannel)}",
            ) from None
        try:
            return ConsentTerms(
                consent_id=req.consent_id if req.consent_id is not None else new_consent_id(),
                subject_kind=subject.kind,
                subject_id=subject.id,
                consumers=consumers,
                scope=Scope(items=tuple(items)),
                purposes=purposes,
                valid_from=valid_from,
                valid_to=valid_to,
                use_limit=req.use_limit,
                separate=bool(req.separate) or all_sensitive,
                channel=channel,
                evidence_ref=req.evidence_ref,
                notice_version=req.notice_version,
                granted_at=now,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "request"
            raise InvalidConsentRequest("INVALID_REQUEST", f"{where}: {first['msg']}") from None

    def check_request_for(
        self,
        *,
        subject: str,
        consumer: str,
        provider: str,
        dataset: str,
        purpose: str,
        fields: Sequence[str] | None = None,
        subject_kind: str | None = None,
    ) -> CheckRequest:
        """A validated :class:`CheckRequest` (fields None: every field of the dataset)."""
        subj = parse_subject(subject, subject_kind)
        cons = self._agency(consumer, "consumer")
        info = self._dataset(provider, dataset)
        if info.subject_kind is not subj.kind:
            raise InvalidConsentRequest(
                "SUBJECT_KIND_MISMATCH",
                f"{info.provider.value}.{info.name} is about {info.subject_kind.value}s, "
                f"the subject is a {subj.kind.value}",
            )
        wanted = self._fields(info, fields)
        return CheckRequest(
            subject=subj,
            consumer=cons,
            provider=info.provider,
            dataset=info.name,
            fields=wanted,
            purpose=self._purpose(purpose),
            sensitive_fields=info.sensitive.intersection(wanted),
        )

    # --- grant / revoke -------------------------------------------------------------------------

    def _receipt(self, record: ConsentRecord, event: StatusEvent) -> dict[str, Any] | None:
        return self.signer.receipt(record, event, self.catalogue) if self.signer is not None else None

    def grant(self, req: GrantRequest, *, now: datetime | None = None) -> Granted:
        """Validate and store a consent; its signed grant receipt (when a signer is set)."""
        when = self._aware(now, "now") if now is not None else self.clock()
        terms = self.validate_grant(req, when)
        event = StatusEvent(
            seq=1,
            status=ConsentStatus.GRANTED,
            at=when,
            recorded_at=when,
            channel=terms.channel,
            evidence_ref=terms.evidence_ref,
            note="granted",
        )
        record = ConsentRecord(terms=terms, history=(event,))
        stored = self.store.insert(record, self.on_event)
        return Granted(stored, event, self._receipt(stored, event))

    def grant_many(
        self, reqs: Sequence[GrantRequest], *, now: datetime | None = None
    ) -> builtins.list[ConsentRecord]:
        """The bulk path (imports, benchmarks): validate all, then store all; no receipts (ask
        :meth:`receipt` for one). One invalid request refuses the whole batch."""
        when = self._aware(now, "now") if now is not None else self.clock()
        records = []
        for req in reqs:
            terms = self.validate_grant(req, when)
            event = StatusEvent.model_construct(
                seq=1,
                status=ConsentStatus.GRANTED,
                at=when,
                recorded_at=when,
                channel=terms.channel,
                evidence_ref=terms.evidence_ref,
                note="granted",
            )
            records.append(ConsentRecord.model_construct(terms=terms, history=(event,), uses=0))
        self.store.insert_many(records, self.on_event)
        return records

    def receipt(self, record: ConsentRecord, event: StatusEvent) -> dict[str, Any]:
        """A signed receipt for a grant or revocation event; ValueError without a signer."""
        if self.signer is None:
            raise ValueError("this service has no receipt signer")
        return self.signer.receipt(record, event, self.catalogue)

    def _recording_time(self, now: datetime | None, verb: str) -> datetime:
        """When a status change is recorded: ``now`` (aware), or the service's clock. Never ahead
        of the clock (beyond :data:`CLOCK_TOLERANCE`): the history is append-only and a revocation
        or expiry is final, so one recorded ahead of time would end, for good, a consent still in
        force. InvalidConsentRequest (INVALID_REQUEST) then."""
        if now is None:
            return self.clock()
        when = self._aware(now, "now")
        if when > self.clock() + CLOCK_TOLERANCE:
            raise InvalidConsentRequest(
                "INVALID_REQUEST",
                f"cannot {verb} as of a time in the future: the change is final, and consents "
                "still in force would end for good",
            )
        return when

    def revoke(
        self,
        consent_id: str,
        *,
        subject: str | None = None,
        consumer: Agency | None = None,
        channel: str | None = None,
        evidence_ref: str = "",
        note: str = "subject_request",
        now: datetime | None = None,
    ) -> Revoked:
        """Revoke a granted consent (effective for the next check on every replica). With
        ``subject``, a consent of another subject is reported as not found; with ``consumer`` (an
        agency revoking on the subject's behalf), so is a consent that does not name that agency
        as a consumer: the same answer, word for word, as for an id that does not exist.
        ConsentNotActive if it is already revoked or expired; ConsentNotFound if there is none."""
        when = self._recording_time(now, "revoke")
        subj = parse_subject(subject) if subject is not None else None
        chan: CaptureChannel | None = None
        if channel is not None:
            try:
                chan = CaptureChannel(channel)
            except ValueError:
                raise InvalidConsentRequest(
                    "INVALID_CHANNEL",
                    f"capture channel must be one of {', '.join(c.value for c in CaptureChannel)}",
                ) from None

        def make(record: ConsentRecord) -> StatusEvent:
            t = record.terms
            if consumer is not None and consumer not in t.consumers:
                raise ConsentNotFound(consent_id)
            if subj is not None and (t.subject_kind is not subj.kind or t.subject_id != subj.id):
                raise ConsentNotFound(consent_id)
            if record.status is not ConsentStatus.GRANTED:
                raise ConsentNotActive(consent_id, record.status.value)
            if when >= t.valid_to:
                raise ConsentNotActive(consent_id, ConsentStatus.EXPIRED.value)
            try:
                return StatusEvent(
                    seq=len(record.history) + 1,
                    status=ConsentStatus.REVOKED,
                    at=max(when, record.last_event.at),
                    recorded_at=when,
                    channel=chan,
                    evidence_ref=evidence_ref,
                    note=note,
                )
            except ValidationError as exc:
                raise InvalidConsentRequest(
                    "INVALID_REQUEST", f"revocation: {exc.errors()[0]['msg']}"
                ) from None

        result = self.store.append_event(consent_id, make, self.on_event)
        assert result is not None
        record, event = result
        return Revoked(record, event, self._receipt(record, event))

    def expire(
        self, *, now: datetime | None = None, batch: int = 1000
    ) -> builtins.list[tuple[ConsentRecord, StatusEvent]]:
        """Record an ``expired`` event (at ``valid_to``) for every granted consent past its
        validity. Idempotent: a consent already revoked or expired is skipped. Returns what was
        recorded, for the caller to audit (``on_event`` is called for each as well).

        ``now`` may not be ahead of the service's clock (beyond :data:`CLOCK_TOLERANCE`): an
        expiry is final (the history is append-only), so one recorded ahead of time would end a
        consent still in force for good. InvalidConsentRequest (INVALID_REQUEST) then."""
        when = self._recording_time(now, "expire")
        done: builtins.list[tuple[ConsentRecord, StatusEvent]] = []
        skipped: set[str] = set()
        while True:
            ids = [
                i for i in self.store.expiry_candidates(when, limit=batch + len(skipped)) if i not in skipped
            ]
            if not ids:
                return done
            for cid in ids:

                def make(record: ConsentRecord) -> StatusEvent | None:
                    t = record.terms
                    if record.status is not ConsentStatus.GRANTED or t.valid_to > when:
                        return None
                    return StatusEvent(
                        seq=len(record.history) + 1,
                        status=ConsentStatus.EXPIRED,
                        at=max(t.valid_to, record.last_event.at),
                        recorded_at=when,
                        note="valid_to_reached",
                    )

                result = self.store.append_event(cid, make, self.on_event)
                if result is None:
                    skipped.add(cid)
                else:
                    done.append(result)

    # --- reads ----------------------------------------------------------------------------------

    def get(self, consent_id: str) -> ConsentRecord:
        return self.store.require(consent_id)

    def list(
        self,
        *,
        subject: str | None = None,
        subject_kind: str | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
        now: datetime | None = None,
    ) -> builtins.list[ConsentRecord]:
        """Consents (of one subject, with ``subject``), newest first, filtered by status
        (granted = in force, revoked, expired)."""
        if status is not None and status not in ("granted", "revoked", "expired"):
            raise InvalidConsentRequest("INVALID_REQUEST", "status must be granted, revoked or expired")
        if limit < 1 or offset < 0:
            raise InvalidConsentRequest("INVALID_REQUEST", "limit must be >= 1 and offset >= 0")
        subj = parse_subject(subject, subject_kind) if subject is not None else None
        return self.store.list(
            subject=(subj.kind, subj.id) if subj else None,
            status=status,
            now=now or self.clock(),
            limit=limit,
            offset=offset,
        )

    def check(
        self,
        *,
        subject: str,
        consumer: str,
        provider: str,
        dataset: str,
        purpose: str,
        fields: Sequence[str] | None = None,
        subject_kind: str | None = None,
        basis: Basis = CONSENT_REQUIRED,
        now: datetime | None = None,
        consume: bool = False,
        own_only: bool = False,
    ) -> Decision:
        """Validate the request, then decide it against the subject's consents read now; with
        ``own_only``, against those naming ``consumer`` only (the others, and their ids, stay
        unseen: as for an agency asking about its own consents)."""
        request = self.check_request_for(
            subject=subject,
            consumer=consumer,
            provider=provider,
            dataset=dataset,
            purpose=purpose,
            fields=fields,
            subject_kind=subject_kind,
        )
        return self.decide_all([(request, basis)], now=now, consume=consume, own_only=own_only)[0]

    def decide(
        self,
        request: CheckRequest,
        *,
        basis: Basis = CONSENT_REQUIRED,
        now: datetime | None = None,
        consume: bool = False,
    ) -> Decision:
        """Decide an already validated request. ``consume``: an allowed decision counts one use
        of each covering consent that has a use limit, all or none, atomically; if another
        caller took the last use first, the request is decided again on fresh data."""
        return self.decide_all([(request, basis)], now=now, consume=consume)[0]

    def decide_all(
        self,
        items: Sequence[tuple[CheckRequest, Basis]],
        *,
        now: datetime | None = None,
        consume: bool = False,
        own_only: bool = False,
    ) -> builtins.list[Decision]:
        """Decide the disclosures of one call together (the datasets of one Query), each against
        the subject's consents read now (a statutory duty reads none). ``consume``: only when
        every one is allowed, count one use of each covering consent that has a use limit (a
        consent covering several of them counts once), all or none, atomically; a call refused
        for one dataset spends no use of the others' consents. If another caller took a last
        use first, all are decided again on fresh data; StoreError if that keeps happening."""
        when = self._aware(now, "now") if now is not None else self.clock()
        for _ in range(8):
            decided: builtins.list[tuple[Decision, Sequence[ConsentRecord]]] = []
            for request, basis in items:
                if basis.statutory_duty:
                    decided.append((decide((), request, when, basis), ()))
                    continue
                where = (request.provider.value, request.dataset)
                found = self.store.records_for(request.subject.kind, request.subject.id, dataset=where)
                if own_only:
                    found = [r for r in found if request.consumer in r.terms.consumers]
                decided.append((decide(found, request, when, basis), found))
            decisions = [decision for decision, _ in decided]
            if not consume or not all(d.allowed for d in decisions):
                return decisions
            limits = _use_limits(decided)
            if not limits or self._consume_all(list(limits.items())):
                return decisions
            # another caller took a last use first: decide again on fresh data
        raise StoreError("consent store busy: the uses of a limited consent kept changing; try again")

    def decide_many(
        self,
        calls: Sequence[Sequence[tuple[CheckRequest, Basis]]],
        *,
        now: datetime | None = None,
        consume: bool = False,
        proceed: Callable[[int], bool] | None = None,
    ) -> builtins.list[builtins.list[Decision] | StoreError | None]:
        """:meth:`decide_all` for each of several calls (concurrent Queries), with one store read
        per subject kind and dataset for all of them instead of one per call. Each call gets
        what decide_all would give it, or the StoreError it would raise:

        * a call whose allowed decisions spend a use of a limited consent goes through
          decide_all itself (the use is counted atomically there); the others are then decided
          again on a fresh read, so that none rests on a read older than those writes;
        * if a read fails (the store is down, or one subject's consent is damaged), the calls it
          was for go through decide_all one by one: each fails, or not, as it would alone;
        * each round reads the clock again (without ``now``), as a call decided alone then would;
        * ``proceed(i)`` false (say, call i's deadline passed while others' uses were written):
          call i is not decided, nothing is spent for it, and its place holds None."""
        out: builtins.list[builtins.list[Decision] | StoreError | None] = [None] * len(calls)

        def alone(i: int) -> None:
            if proceed is not None and not proceed(i):
                out[i] = None
                return
            try:
                out[i] = self.decide_all(calls[i], now=now, consume=consume)
            except StoreError as exc:
                out[i] = exc

        pending = builtins.list(range(len(calls)))
        for _ in range(3):
            when = self._aware(now, "now") if now is not None else self.clock()
            found, failed = self._read_many([calls[i] for i in pending])
            spending: builtins.list[int] = []
            settled: builtins.list[int] = []  # decided on this read (final unless others spend)
            for i in pending:
                call = calls[i]
                if any(_read_key(r) in failed for r, b in call if not b.statutory_duty):
                    alone(i)
                    continue
                decided = [
                    (decide(records, r, when, b), records)
                    for r, b in call
                    for records in [() if b.statutory_duty else found[_read_key(r)][r.subject.id]]
                ]
                decisions = [d for d, _ in decided]
                if consume and all(d.allowed for d in decisions) and _use_limits(decided):
                    spending.append(i)
                else:
                    out[i] = decisions
                    settled.append(i)
            if not spending:
                break
            for i in spending:
                alone(i)
            # the others were decided on a read older than those writes: decide them again
            pending = settled
            if not pending:
                break
        else:
            for i in pending:
                alone(i)
        return out

    def _read_many(
        self, calls: Sequence[Sequence[tuple[CheckRequest, Basis]]]
    ) -> tuple[
        dict[tuple[str, str, str], dict[str, builtins.list[ConsentRecord]]], set[tuple[str, str, str]]
    ]:
        """The consents of the calls' subjects, one read per subject kind and dataset; the keys
        whose read failed."""
        wanted: dict[tuple[str, str, str], builtins.list[str]] = {}
        for call in calls:
            for request, basis in call:
                if not basis.statutory_duty:
                    wanted.setdefault(_read_key(request), []).append(request.subject.id)
        found: dict[tuple[str, str, str], dict[str, builtins.list[ConsentRecord]]] = {}
        failed: set[tuple[str, str, str]] = set()
        for key, ids in wanted.items():
            kind, provider, dataset = key
            try:
                found[key] = self.store.records_for_many(kind, ids, dataset=(provider, dataset))
            except StoreError:
                failed.add(key)
        return found, failed

    def _consume_all(self, items: Sequence[tuple[str, int | None]]) -> bool:
        if len(items) == 1:
            cid, limit = items[0]
            return self.store.consume(cid, int(limit or 0))
        return self.store.consume_all([(cid, int(limit or 0)) for cid, limit in items])

    # --- opt-out ------------------------------------------------------------------------------

    def _opt_target(self, channel: str | None, category: str | None) -> tuple[OptOutTarget, str]:
        if (channel is None) == (category is None):
            raise InvalidConsentRequest(
                "INVALID_REQUEST", "name exactly one of a channel or a policy category"
            )
        if channel is not None:
            try:
                return OptOutTarget.CHANNEL, PushChannel(channel).value
            except ValueError:
                raise InvalidConsentRequest(
                    "INVALID_CHANNEL",
                    f"push channel must be one of {', '.join(c.value for c in PushChannel)}",
                ) from None
        assert category is not None
        if category not in self.catalogue.category_codes():
            shown = category if len(category) <= 64 else "(invalid)"
            raise InvalidConsentRequest("UNKNOWN_CATEGORY", f"unknown policy category {shown!r}")
        return OptOutTarget.CATEGORY, category

    def opt_out(
        self,
        subject: str,
        *,
        channel: str | None = None,
        category: str | None = None,
        refused: bool = True,
        capture_channel: str | None = None,
        evidence_ref: str = "",
        subject_kind: str | None = None,
        now: datetime | None = None,
    ) -> OptOut:
        """Record that the subject refuses (``refused=True``) or again accepts proactive contact
        through one push ``channel`` or for one policy ``category``. Append-only."""
        subj = parse_subject(subject, subject_kind)
        target, value = self._opt_target(channel, category)
        when = self._aware(now, "now") if now is not None else self.clock()
        cap: CaptureChannel | None = None
        if capture_channel is not None:
            try:
                cap = CaptureChannel(capture_channel)
            except ValueError:
                raise InvalidConsentRequest("INVALID_CHANNEL", "unknown capture channel") from None
        try:
            return self.store.append_opt_out(
                subj.kind, subj.id, target, value, refused, when, cap, evidence_ref
            )
        except ValidationError as exc:
            raise InvalidConsentRequest("INVALID_REQUEST", f"opt-out: {exc.errors()[0]['msg']}") from None

    def opt_outs(self, subject: str, *, subject_kind: str | None = None) -> builtins.list[OptOut]:
        subj = parse_subject(subject, subject_kind)
        return self.store.opt_outs(subj.kind, subj.id)

    def preferences(self, subject: str, *, subject_kind: str | None = None) -> ContactPreferences:
        subj = parse_subject(subject, subject_kind)
        return self.store.preferences(subj.kind, subj.id)

    def may_contact(
        self, subject: Subject, *, channel: str | None = None, category: str | None = None
    ) -> bool:
        """For the push job: may ``subject`` (canonical) be contacted through ``channel`` about a
        policy of ``category``?"""
        return self.store.preferences(subject.kind, subject.id).allows(channel, category)
