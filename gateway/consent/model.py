"""Consent records: typed, validated, immutable.

A consent (``ConsentRecord``) is its **terms** (:class:`ConsentTerms`: who, which consumer
agencies, which provider datasets and fields, for which purposes, from when to when, how many
uses, captured how, under which notice text) and its **status history** (:class:`StatusEvent`:
granted, then at most one of revoked or expired), plus the count of uses made of it (only counted
for consents with a use limit).

The terms never change after the grant. The history only grows: each event has the next number
of the consent's own sequence (1 = granted), and nothing overwrites an earlier event. The
current status is derived from the history (and the clock: a granted consent past ``valid_to``
is expired even before the expiry job has recorded it).

Anchors: the consent artefact of India's Account Aggregator framework (DEPA: consumer, provider,
purpose code, fetch type and frequency, data life, consent validity), ISO/IEC 27560 consent
records (notice, capture method, evidence, state history) and the Kantara consent receipt.

Opt-outs (:class:`OptOut`) are a separate append-only history per subject and target: a person or
employer refuses proactive contact through one push channel, or for one policy category, and may
later lift the refusal (a new event with ``refused=False``).

Times are timezone-aware and kept in UTC, to the microsecond. Validation messages never echo the
input (``hide_input_in_errors``), so an identity number does not end up in an error message.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from adapters.agencies import Agency
from adapters.contract import Subject, SubjectKind
from gateway.identity import InvalidIdentifier, normalize_credit_code, normalize_resident_id

__all__ = [
    "CONSENT_ID",
    "MAX_USE_LIMIT",
    "OPTIONAL_REF",
    "REF",
    "CaptureChannel",
    "ConsentId",
    "ConsentRecord",
    "ConsentStatus",
    "ConsentTerms",
    "ContactPreferences",
    "Name",
    "OptOut",
    "OptOutTarget",
    "PushChannel",
    "Scope",
    "ScopeItem",
    "StatusEvent",
    "normalize_subject_id",
    "utc",
]

Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
"""A lower-case identifier: dataset, field, purpose, category and channel names."""

CONSENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
"""The form of a consent id: 1-64 characters of ``A-Z a-z 0-9 . _ : -``, a letter or digit first."""
ConsentId = Annotated[str, StringConstraints(pattern=CONSENT_ID.pattern)]
"""A consent id (:data:`CONSENT_ID`)."""

REF = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
"""The form of an opaque reference (evidence, notice version): 1-128 characters, no control
characters; :data:`OPTIONAL_REF` also allows it empty."""
OPTIONAL_REF = re.compile(r"^[^\x00-\x1f\x7f]{0,128}$")

Ref = Annotated[str, StringConstraints(pattern=REF.pattern)]
"""An opaque reference (:data:`REF`)."""

OptionalRef = Annotated[str, StringConstraints(pattern=OPTIONAL_REF.pattern)]

#: Receipts are canonical JSON (RFC 8785), whose integers stop at 2^53 - 1.
MAX_USE_LIMIT = 2**53 - 1


def utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is refused (ValueError)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("time without a time zone")
    return value.astimezone(UTC)


def normalize_subject_id(kind: SubjectKind, value: str) -> str:
    """The canonical identifier of a person (GB 11643) or employer (GB 32100); InvalidIdentifier."""
    if kind is SubjectKind.PERSON:
        return normalize_resident_id(value)
    return normalize_credit_code(value)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class ConsentStatus(StrEnum):
    GRANTED = "granted"
    REVOKED = "revoked"
    EXPIRED = "expired"


class CaptureChannel(StrEnum):
    """How a consent (or a revocation, or an opt-out) was captured."""

    COUNTER = "counter"
    APP = "app"
    WEB = "web"
    PAPER = "paper"


class PushChannel(StrEnum):
    """The channels of proactive contact a subject can refuse (the push job's channels)."""

    SMS = "sms"
    APP = "app"
    WECHAT = "wechat"
    EMAIL = "email"
    PHONE = "phone"
    LETTER = "letter"


class StatusEvent(_Model):
    """One step of a consent's history. ``seq`` is the consent's own sequence (1 = the grant);
    ``at`` is when the status took effect (for an expiry: ``valid_to``), ``recorded_at`` when the
    event was written. ``note`` is a short machine-readable reason (``subject_request``,
    ``valid_to_reached``, ...)."""

    seq: Annotated[int, Field(ge=1, le=2**31 - 1)]
    status: ConsentStatus
    at: AwareDatetime
    recorded_at: AwareDatetime
    channel: CaptureChannel | None = None
    evidence_ref: OptionalRef = ""
    note: OptionalRef = ""

    @field_validator("at", "recorded_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)


def _sorted_unique(values: tuple[Any, ...], what: str) -> tuple[Any, ...]:
    if len(set(values)) != len(values):
        raise ValueError(f"duplicate {what}")
    return tuple(sorted(values))


class ScopeItem(_Model):
    """One provider dataset and the fields of it the consent covers (sorted, unique)."""

    provider: Agency
    dataset: Name
    fields: Annotated[tuple[Name, ...], Field(min_length=1, max_length=256)]

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _sorted_unique(value, "fields")

    @property
    def qualified(self) -> str:
        """``provider.dataset``."""
        return f"{self.provider.value}.{self.dataset}"


class Scope(_Model):
    """The provider datasets and fields a consent covers; one item per dataset, sorted."""

    items: Annotated[tuple[ScopeItem, ...], Field(min_length=1, max_length=64)]

    @field_validator("items")
    @classmethod
    def _items(cls, value: tuple[ScopeItem, ...]) -> tuple[ScopeItem, ...]:
        keys = [(i.provider.value, i.dataset) for i in value]
        if len(set(keys)) != len(keys):
            raise ValueError("a dataset appears twice in the scope")
        return tuple(sorted(value, key=lambda i: (i.provider.value, i.dataset)))

    def field_index(self) -> Mapping[tuple[str, str], frozenset[str]]:
        """``(provider, dataset)`` -> the fields covered (computed once; the store may set it when
        it builds the scope)."""
        index: dict[tuple[str, str], frozenset[str]] | None = self.__dict__.get("_field_index")
        if index is None:
            index = {(i.provider.value, i.dataset): frozenset(i.fields) for i in self.items}
            self.__dict__["_field_index"] = index
        return index

    def fields_for(self, provider: Agency | str, dataset: str) -> frozenset[str] | None:
        """The fields covered of ``provider.dataset``, or None when the dataset is not in scope."""
        return self.field_index().get((str(provider), dataset))

    def __iter__(self) -> Iterator[ScopeItem]:  # type: ignore[override]
        return iter(self.items)

    def datasets(self) -> tuple[str, ...]:
        """The datasets in scope, each as ``provider.dataset``."""
        return tuple(i.qualified for i in self.items)


class ConsentTerms(_Model):
    """What the subject agreed to. Immutable after the grant.

    * ``subject_kind`` / ``subject_id``: a person (resident identity number) or an employer
      (unified social credit code), stored in canonical form;
    * ``consumers``: the agencies that may read under this consent;
    * ``scope``: provider datasets and fields;
    * ``purposes``: purpose codes of the catalogue (:mod:`gateway.purposes`);
    * ``valid_from`` < ``valid_to``: the validity window (``valid_to`` exclusive);
    * ``use_limit``: how many disclosures the consent allows (None: unlimited within validity);
    * ``separate``: the consent was given separately for sensitive data (PIPL art. 29), see
      :mod:`gateway.consent.decision` for when a consent counts as separate;
    * ``channel`` / ``evidence_ref``: capture channel and a reference to the evidence (form
      number, app session, scanned paper);
    * ``notice_version``: the version of the notice text shown to the subject;
    * ``granted_at``: when the grant was recorded.
    """

    consent_id: ConsentId
    subject_kind: SubjectKind
    subject_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    consumers: Annotated[tuple[Agency, ...], Field(min_length=1, max_length=16)]
    scope: Scope
    purposes: Annotated[tuple[Name, ...], Field(min_length=1, max_length=32)]
    valid_from: AwareDatetime
    valid_to: AwareDatetime
    use_limit: Annotated[int, Field(ge=1, le=MAX_USE_LIMIT)] | None = None
    separate: bool = False
    channel: CaptureChannel
    evidence_ref: Ref
    notice_version: Ref
    granted_at: AwareDatetime

    @field_validator("subject_id")
    @classmethod
    def _subject_id(cls, value: str, info: ValidationInfo) -> str:
        if isinstance(info.context, dict) and info.context.get("stored_subject") == value:
            return value  # read back from the store, which holds it canonical (checked on write)
        kind = info.data.get("subject_kind")
        if not isinstance(kind, SubjectKind):
            raise ValueError("subject kind is invalid, so the id cannot be checked")
        try:
            return normalize_subject_id(kind, value)
        except InvalidIdentifier as exc:
            raise ValueError(str(exc)) from None

    @field_validator("consumers")
    @classmethod
    def _consumers(cls, value: tuple[Agency, ...]) -> tuple[Agency, ...]:
        return _sorted_unique(value, "consumers")

    @field_validator("purposes")
    @classmethod
    def _purposes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _sorted_unique(value, "purposes")

    @field_validator("valid_from", "valid_to", "granted_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.valid_to <= self.valid_from:
            raise ValueError("validity ends before it starts")
        return self

    @property
    def subject(self) -> Subject:
        return Subject(self.subject_kind, self.subject_id)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:  # never print an identifier
        for key, value in super().__repr_args__():
            yield key, (f"***{self.subject_id[-2:]}" if key == "subject_id" else value)


class ConsentRecord(_Model):
    """A consent: its terms, its status history (append-only, ``seq`` 1..n) and its use count."""

    terms: ConsentTerms
    history: Annotated[tuple[StatusEvent, ...], Field(min_length=1)]
    uses: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _history(self) -> Self:
        for number, event in enumerate(self.history, start=1):
            if event.seq != number:
                raise ValueError("status history is not numbered 1..n")
        if self.history[0].status is not ConsentStatus.GRANTED:
            raise ValueError("status history does not start with the grant")
        if any(e.status is ConsentStatus.GRANTED for e in self.history[1:]):
            raise ValueError("status history grants twice")
        if len(self.history) > 2:
            raise ValueError("status history continues after a final status")
        return self

    @property
    def consent_id(self) -> str:
        return self.terms.consent_id

    @property
    def last_event(self) -> StatusEvent:
        return self.history[-1]

    @property
    def status(self) -> ConsentStatus:
        """The last recorded status (not counting an expiry not yet recorded: see :meth:`status_at`)."""
        return self.history[-1].status

    def status_at(self, now: datetime) -> ConsentStatus | None:
        """The status at ``now``: the last event at or before ``now``, with a granted consent past
        ``valid_to`` counting as expired. None before the grant was recorded."""
        status: ConsentStatus | None = None
        for event in self.history:
            if event.at <= now:
                status = event.status
            else:
                break
        if status is ConsentStatus.GRANTED and now >= self.terms.valid_to:
            return ConsentStatus.EXPIRED
        return status

    def active_at(self, now: datetime) -> bool:
        """Granted, within its validity window and its use limit at ``now``."""
        t = self.terms
        return (
            self.status_at(now) is ConsentStatus.GRANTED
            and t.valid_from <= now
            and (t.use_limit is None or self.uses < t.use_limit)
        )

    def to_json(self, now: datetime | None = None) -> dict[str, Any]:
        """Plain JSON: the terms, the use count, the recorded status, the status at ``now``
        (when given) and the history."""
        t = self.terms
        out: dict[str, Any] = {
            "consent_id": t.consent_id,
            "subject": {"kind": t.subject_kind.value, "id": t.subject_id},
            "consumers": [c.value for c in t.consumers],
            "scope": [
                {"provider": i.provider.value, "dataset": i.dataset, "fields": list(i.fields)}
                for i in t.scope
            ],
            "purposes": list(t.purposes),
            "valid_from": t.valid_from.isoformat(),
            "valid_to": t.valid_to.isoformat(),
            "use_limit": t.use_limit,
            "uses": self.uses,
            "separate": t.separate,
            "channel": t.channel.value,
            "evidence_ref": t.evidence_ref,
            "notice_version": t.notice_version,
            "granted_at": t.granted_at.isoformat(),
            "status": self.status.value,
        }
        if now is not None:
            current = self.status_at(now)
            out["status_now"] = current.value if current else None
        out["history"] = [
            {
                "seq": e.seq,
                "status": e.status.value,
                "at": e.at.isoformat(),
                "recorded_at": e.recorded_at.isoformat(),
                "channel": e.channel.value if e.channel else None,
                "evidence_ref": e.evidence_ref,
                "note": e.note,
            }
            for e in self.history
        ]
        return out

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        yield "consent_id", self.terms.consent_id
        yield "status", self.status
        yield "events", len(self.history)


class OptOutTarget(StrEnum):
    CHANNEL = "channel"
    CATEGORY = "category"


class OptOut(_Model):
    """One step of a subject's opt-out history for one target: a push channel
    (:class:`PushChannel`) or a policy category (:mod:`gateway.purposes`). ``refused`` True: the
    subject refuses proactive contact there from ``at``; False: the refusal is lifted."""

    subject_kind: SubjectKind
    subject_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    target: OptOutTarget
    value: Name
    refused: bool
    seq: Annotated[int, Field(ge=1, le=2**31 - 1)]
    at: AwareDatetime
    channel: CaptureChannel | None = None
    evidence_ref: OptionalRef = ""

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": {"kind": self.subject_kind.value, "id": self.subject_id},
            "target": self.target.value,
            "value": self.value,
            "refused": self.refused,
            "seq": self.seq,
            "at": self.at.isoformat(),
            "channel": self.channel.value if self.channel else None,
            "evidence_ref": self.evidence_ref,
        }

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for key, value in super().__repr_args__():
            yield key, (f"***{self.subject_id[-2:]}" if key == "subject_id" else value)


class ContactPreferences(_Model):
    """A subject's current refusals of proactive contact (derived from the opt-out history)."""

    subject_kind: SubjectKind
    subject_id: str
    refused_channels: frozenset[str] = frozenset()
    refused_categories: frozenset[str] = frozenset()

    def allows(self, channel: str | None = None, category: str | None = None) -> bool:
        """May the push job contact the subject through ``channel`` about a policy of
        ``category``? False when either is refused."""
        if channel is not None and channel in self.refused_channels:
            return False
        return not (category is not None and category in self.refused_categories)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for key, value in super().__repr_args__():
            yield key, (f"***{self.subject_id[-2:]}" if key == "subject_id" else value)
