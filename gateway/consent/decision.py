"""The consent decision: one pure function over plain data.

``decide(records, request, now, basis)`` answers, for one disclosure (subject, consumer agency,
provider dataset and fields, purpose, time), whether a legal basis covers it:

* **statutory duty**: when the data-sharing agreement says the disclosure is a statutory duty
  (``basis.statutory_duty``), no consent is needed and the decision says so
  (``basis=statutory_duty``, ``reference`` = the duty's reference);
* else **consent**: allowed with the id(s) of the consent(s) that cover it, or denied with one
  precise :class:`DenyReason`.

No I/O, no clock, no globals: the caller passes the subject's records (from the store), the
request and the time. The same inputs always give the same decision.

How consents cover a request
----------------------------
Only the subject's consents that name the provider dataset count (a consent for other datasets is
irrelevant: NO_CONSENT). Each requested field must be covered by one consent that

1. names the consumer agency (else CONSUMER_MISMATCH),
2. names the purpose (else PURPOSE_MISMATCH),
3. has the field in its scope for that dataset (else FIELD_OUT_OF_SCOPE),
4. is **separate** if the field is SENSITIVE (else SENSITIVE_WITHOUT_SEPARATE_CONSENT),
5. is granted and within its validity at ``now``: not revoked (CONSENT_REVOKED), not expired or
   past ``valid_to`` (CONSENT_EXPIRED), not before ``valid_from`` (CONSENT_NOT_YET_VALID),
6. has uses left (USE_LIMIT_REACHED).

Different fields may be covered by different consents: the usual shape is a general consent for
the non-sensitive fields and a separate consent for the sensitive ones (for instance a general
consent over ``hrss.employment_status`` registrations and a separate one over its hard-to-employ
certification). An allowed decision lists the fewest consents that cover the request (greedy:
the consent covering most fields first; on a tie one without use limit, then the latest grant).

**Separate consent.** A consent counts as separate for sensitive data (PIPL art. 29: "单独同意")
when the subject gave it as such: the service records ``separate=True`` when the grant was flagged
separate (the capture channel showed the sensitive data on its own and the subject agreed to it on
its own) or when every field in its scope is SENSITIVE (a consent about sensitive data only is
separate by construction). A consent that bundles sensitive and non-sensitive fields without the
flag does not count for the sensitive ones.

The most specific reason
------------------------
Checks are ordered as above; for each field a consent gets the rank of the first check it fails
(1 CONSUMER_MISMATCH ... 6 USE_LIMIT_REACHED; a consent that fails nothing covers the field). Per
field, the consent that came closest (highest rank; on a tie the latest grant, then the greatest
id) gives the field's reason; a field no consent for the dataset mentions has NO_CONSENT. When
fields are uncovered, the decision reports the field whose best reason ranks lowest (the binding
obstacle; on a tie the first requested): so a revoked consent that would otherwise have covered
everything reports CONSENT_REVOKED, and a live consent missing one requested field reports
FIELD_OUT_OF_SCOPE.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from adapters.agencies import Agency
from adapters.contract import Subject
from gateway.consent.model import ConsentRecord, ConsentStatus

__all__ = [
    "CONSENT_REQUIRED",
    "Basis",
    "BasisKind",
    "CheckRequest",
    "Decision",
    "DenyReason",
    "decide",
]


class DenyReason(StrEnum):
    NO_CONSENT = "NO_CONSENT"
    CONSUMER_MISMATCH = "CONSUMER_MISMATCH"
    PURPOSE_MISMATCH = "PURPOSE_MISMATCH"
    FIELD_OUT_OF_SCOPE = "FIELD_OUT_OF_SCOPE"
    SENSITIVE_WITHOUT_SEPARATE_CONSENT = "SENSITIVE_WITHOUT_SEPARATE_CONSENT"
    CONSENT_REVOKED = "CONSENT_REVOKED"
    CONSENT_EXPIRED = "CONSENT_EXPIRED"
    CONSENT_NOT_YET_VALID = "CONSENT_NOT_YET_VALID"
    USE_LIMIT_REACHED = "USE_LIMIT_REACHED"


#: How close a consent came to covering a field (higher: closer).
_RANK: dict[DenyReason, int] = {
    DenyReason.NO_CONSENT: 0,
    DenyReason.CONSUMER_MISMATCH: 1,
    DenyReason.PURPOSE_MISMATCH: 2,
    DenyReason.FIELD_OUT_OF_SCOPE: 3,
    DenyReason.SENSITIVE_WITHOUT_SEPARATE_CONSENT: 4,
    DenyReason.CONSENT_REVOKED: 5,
    DenyReason.CONSENT_EXPIRED: 5,
    DenyReason.CONSENT_NOT_YET_VALID: 5,
    DenyReason.USE_LIMIT_REACHED: 6,
}
_R_CONSUMER = _RANK[DenyReason.CONSUMER_MISMATCH]
_R_PURPOSE = _RANK[DenyReason.PURPOSE_MISMATCH]
_R_SCOPE = _RANK[DenyReason.FIELD_OUT_OF_SCOPE]
_R_SENSITIVE = _RANK[DenyReason.SENSITIVE_WITHOUT_SEPARATE_CONSENT]
_R_STATUS = _RANK[DenyReason.CONSENT_REVOKED]  # = expired = not yet valid
_R_USES = _RANK[DenyReason.USE_LIMIT_REACHED]


class BasisKind(StrEnum):
    """The legal basis of a decision (the audit log's ``LegalBasisKind``)."""

    CONSENT = "consent"
    STATUTORY_DUTY = "statutory_duty"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Basis:
    """What the data-sharing agreement says: a statutory duty (with its reference, e.g. the
    regulation and article) bypasses consent; otherwise consent is required."""

    statutory_duty: bool = False
    reference: str = ""

    def __post_init__(self) -> None:
        if self.statutory_duty and not self.reference:
            raise ValueError("a statutory duty needs a reference")


#: The usual basis: the agreement needs the subject's consent.
CONSENT_REQUIRED = Basis()


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """One disclosure to decide. ``fields`` are the requested fields of ``provider.dataset`` (the
    caller expands "all fields"); ``sensitive_fields`` those of them that are SENSITIVE
    (from the dataset descriptor)."""

    subject: Subject
    consumer: Agency
    provider: Agency
    dataset: str
    fields: tuple[str, ...]
    purpose: str
    sensitive_fields: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.fields:
            raise ValueError("a check names at least one field")


@dataclass(frozen=True, slots=True)
class Decision:
    """Allowed (``basis`` consent with ``consent_ids``, or statutory duty with ``reference``) or
    denied (``basis`` none, ``reason``; ``consent_id`` and ``field`` name the consent and field
    the reason is about, when there is one). ``detail`` is one line without personal data."""

    allowed: bool
    basis: BasisKind
    consent_ids: tuple[str, ...] = ()
    reference: str = ""
    reason: DenyReason | None = None
    field: str | None = None
    detail: str = ""
    denied_consent_id: str | None = None

    @property
    def consent_id(self) -> str | None:
        """The consent the decision is about: the (first) covering consent when allowed, the
        consent closest to covering when denied (None if there is none)."""
        if self.allowed:
            return self.consent_ids[0] if self.consent_ids else None
        return self.denied_consent_id

    @property
    def legal_basis_reference(self) -> str:
        """The audit log's legal-basis reference: consent ids (comma-separated), the duty's
        reference, or empty."""
        if self.basis is BasisKind.CONSENT:
            return ",".join(self.consent_ids)
        return self.reference

    def to_json(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "basis": self.basis.value,
            "consent_id": self.consent_id,
            "consent_ids": list(self.consent_ids),
            "reference": self.reference,
            "reason": self.reason.value if self.reason else None,
            "field": self.field,
            "detail": self.detail,
        }


def _detail(reason: DenyReason, request: CheckRequest, record: ConsentRecord | None, fname: str) -> str:
    ds = f"{request.provider.value}.{request.dataset}"
    cid = record.terms.consent_id if record is not None else ""
    if reason is DenyReason.NO_CONSENT:
        return f"no consent of the subject covers {ds}"
    if reason is DenyReason.CONSUMER_MISMATCH:
        return f"consent {cid} does not name {request.consumer.value} as a consumer of {ds}"
    if reason is DenyReason.PURPOSE_MISMATCH:
        return f"consent {cid} does not cover purpose {request.purpose}"
    if reason is DenyReason.FIELD_OUT_OF_SCOPE:
        return f"field {fname} of {ds} is outside the scope of consent {cid}"
    if reason is DenyReason.SENSITIVE_WITHOUT_SEPARATE_CONSENT:
        return f"sensitive field {fname} of {ds} needs a separate consent; consent {cid} is not separate"
    if reason is DenyReason.CONSENT_REVOKED and record is not None:
        return f"consent {cid} was revoked"
    if reason is DenyReason.CONSENT_EXPIRED and record is not None:
        return f"consent {cid} expired at {record.terms.valid_to.isoformat()}"
    if reason is DenyReason.CONSENT_NOT_YET_VALID and record is not None:
        return f"consent {cid} is valid from {record.terms.valid_from.isoformat()}"
    return f"consent {cid} has used all {record.terms.use_limit if record else ''} uses"


def decide(
    records: Iterable[ConsentRecord],
    request: CheckRequest,
    now: datetime,
    basis: Basis = CONSENT_REQUIRED,
) -> Decision:
    """Decide one disclosure (see the module docstring). ``records`` are the subject's consents
    (others are ignored); ``now`` must be timezone-aware."""
    if basis.statutory_duty:
        return Decision(
            allowed=True,
            basis=BasisKind.STATUTORY_DUTY,
            reference=basis.reference,
            detail=f"statutory duty {basis.reference}: no consent needed",
        )

    # The hot path of every check: enum properties and the request's attributes are looked up once
    # per call, each consent's status once (inline status_at), the ranks are plain integers and
    # only the final answer gets a detail line.
    subject_id, subject_kind = request.subject.id, request.subject.kind
    fields = request.fields
    if len(fields) > 1:
        fields = tuple(dict.fromkeys(fields))
    sensitive = request.sensitive_fields
    consumer, purpose = request.consumer, request.purpose
    provider, dataset = request.provider.value, request.dataset
    key = (provider, dataset)

    covering: dict[str, list[ConsentRecord]] = {f: [] for f in fields}
    # per field: ((rank, granted_at, consent_id), reason, record) of the consent that came closest
    best: dict[str, tuple[tuple[int, datetime, str], DenyReason, ConsentRecord]] = {}

    for record in records:
        terms = record.terms
        if terms.subject_id != subject_id or terms.subject_kind is not subject_kind:
            continue
        scoped = terms.scope.field_index().get(key)
        if scoped is None:
            continue  # not about this dataset
        status: ConsentStatus | None = None  # record.status_at(now), inline
        for event in record.history:
            if event.at <= now:
                status = event.status
            else:
                break
        if status is None:
            continue  # not yet granted at `now`
        if consumer not in terms.consumers:
            reason: DenyReason | None = DenyReason.CONSUMER_MISMATCH
            rank = _R_CONSUMER
        elif purpose not in terms.purposes:
            reason = DenyReason.PURPOSE_MISMATCH
            rank = _R_PURPOSE
        else:
            reason = None
            rank = 0
        if reason is not None:  # the same reason for every field
            seen_key = (rank, terms.granted_at, terms.consent_id)
            for fname in fields:
                seen = best.get(fname)
                if seen is None or seen_key > seen[0]:
                    best[fname] = (seen_key, reason, record)
            continue
        # checks 5 and 6 (None: usable at `now`)
        if status is ConsentStatus.REVOKED:
            post: DenyReason | None = DenyReason.CONSENT_REVOKED
        elif status is ConsentStatus.EXPIRED or now >= terms.valid_to:
            post = DenyReason.CONSENT_EXPIRED
        elif now < terms.valid_from:
            post = DenyReason.CONSENT_NOT_YET_VALID
        elif terms.use_limit is not None and record.uses >= terms.use_limit:
            post = DenyReason.USE_LIMIT_REACHED
        else:
            post = None
        separate = terms.separate
        for fname in fields:
            if fname not in scoped:
                reason, rank = DenyReason.FIELD_OUT_OF_SCOPE, _R_SCOPE
            elif not separate and fname in sensitive:
                reason, rank = DenyReason.SENSITIVE_WITHOUT_SEPARATE_CONSENT, _R_SENSITIVE
            elif post is not None:
                reason = post
                rank = _R_USES if post is DenyReason.USE_LIMIT_REACHED else _R_STATUS
            else:
                covering[fname].append(record)
                continue
            seen_key = (rank, terms.granted_at, terms.consent_id)
            seen = best.get(fname)
            if seen is None or seen_key > seen[0]:
                best[fname] = (seen_key, reason, record)

    worst_field: str | None = None
    worst_rank = 0
    for fname in fields:
        if covering[fname]:
            continue
        seen = best.get(fname)
        rank = seen[0][0] if seen is not None else 0
        if worst_field is None or rank < worst_rank:
            worst_field, worst_rank = fname, rank
    if worst_field is None:
        return Decision(
            allowed=True,
            basis=BasisKind.CONSENT,
            consent_ids=_choose(covering),
            detail=f"consent covers {provider}.{dataset} for {purpose}",
        )
    seen = best.get(worst_field)
    if seen is None:
        return Decision(
            allowed=False,
            basis=BasisKind.NONE,
            reason=DenyReason.NO_CONSENT,
            field=worst_field,
            detail=_detail(DenyReason.NO_CONSENT, request, None, worst_field),
        )
    _, denied, record = seen
    return Decision(
        allowed=False,
        basis=BasisKind.NONE,
        reason=denied,
        field=worst_field,
        detail=_detail(denied, request, record, worst_field),
        denied_consent_id=record.terms.consent_id,
    )


def _choose(covering: dict[str, list[ConsentRecord]]) -> tuple[str, ...]:
    """The fewest consents covering every field (greedy set cover, deterministic)."""
    if len(covering) == 1:
        (only,) = covering.values()
        if len(only) == 1:  # the usual check: one field, one consent
            return (only[0].terms.consent_id,)
    left = set(covering)
    chosen: list[str] = []
    candidates: dict[str, tuple[ConsentRecord, set[str]]] = {}
    for fname, records in covering.items():
        for record in records:
            cid = record.terms.consent_id
            if cid not in candidates:
                candidates[cid] = (record, set())
            candidates[cid][1].add(fname)
    if len(candidates) == 1:
        return (next(iter(candidates)),)
    while left:
        best_key: tuple[int, bool, float, str] | None = None
        for cid, (record, fset) in candidates.items():
            t = record.terms
            k = (-len(fset & left), t.use_limit is not None, -t.granted_at.timestamp(), cid)
            if best_key is None or k < best_key:
                best_key = k
        assert best_key is not None
        cid = best_key[3]
        chosen.append(cid)
        left -= candidates.pop(cid)[1]
    return tuple(chosen)
