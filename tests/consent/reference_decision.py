"""The decision function as it was before the hot-path rewrite (commit 07f8fbd), kept verbatim
as the reference: tests/consent/test_decision.py holds :func:`gateway.consent.decision.decide`
equal to it, field for field, on generated inputs."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from gateway.consent.decision import (
    _RANK,
    CONSENT_REQUIRED,
    Basis,
    BasisKind,
    CheckRequest,
    Decision,
    DenyReason,
)
from gateway.consent.model import ConsentRecord, ConsentStatus

__all__ = ["reference_decide"]


def _status_reason(record: ConsentRecord, now: datetime) -> DenyReason | None:
    """Checks 5 and 6 for one consent (None: usable at ``now``)."""
    terms = record.terms
    status = record.status_at(now)
    if status is ConsentStatus.REVOKED:
        return DenyReason.CONSENT_REVOKED
    if status is ConsentStatus.EXPIRED:
        return DenyReason.CONSENT_EXPIRED
    if now < terms.valid_from:
        return DenyReason.CONSENT_NOT_YET_VALID
    if terms.use_limit is not None and record.uses >= terms.use_limit:
        return DenyReason.USE_LIMIT_REACHED
    return None


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


def reference_decide(
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

    subject = request.subject
    fields = tuple(dict.fromkeys(request.fields))
    sensitive = request.sensitive_fields
    provider, dataset = request.provider.value, request.dataset

    covering: dict[str, list[ConsentRecord]] = {f: [] for f in fields}
    # per field: (rank, granted_at, reason, record) of the consent that came closest
    best: dict[str, tuple[int, datetime, DenyReason, ConsentRecord]] = {}

    for record in records:
        terms = record.terms
        if terms.subject_id != subject.id or terms.subject_kind is not subject.kind:
            continue
        scoped = terms.scope.fields_for(provider, dataset)
        if scoped is None or record.status_at(now) is None:
            continue  # not about this dataset, or not yet granted at `now`
        if request.consumer not in terms.consumers:
            pre: DenyReason | None = DenyReason.CONSUMER_MISMATCH
        elif request.purpose not in terms.purposes:
            pre = DenyReason.PURPOSE_MISMATCH
        else:
            pre = None
        post = _status_reason(record, now) if pre is None else None
        for fname in fields:
            if pre is not None:
                reason = pre
            elif fname not in scoped:
                reason = DenyReason.FIELD_OUT_OF_SCOPE
            elif fname in sensitive and not terms.separate:
                reason = DenyReason.SENSITIVE_WITHOUT_SEPARATE_CONSENT
            elif post is not None:
                reason = post
            else:
                covering[fname].append(record)
                continue
            rank = _RANK[reason]
            seen = best.get(fname)
            if seen is None or (rank, terms.granted_at, terms.consent_id) > (
                seen[0],
                seen[1],
                seen[3].terms.consent_id,
            ):
                best[fname] = (rank, terms.granted_at, reason, record)

    uncovered = [f for f in fields if not covering[f]]
    if not uncovered:
        return Decision(
            allowed=True,
            basis=BasisKind.CONSENT,
            consent_ids=_choose(covering),
            detail=f"consent covers {provider}.{dataset} for {request.purpose}",
        )

    worst_field = uncovered[0]
    worst_rank = _RANK[best[worst_field][2]] if worst_field in best else 0
    for fname in uncovered[1:]:
        rank = _RANK[best[fname][2]] if fname in best else 0
        if rank < worst_rank:
            worst_field, worst_rank = fname, rank
    if worst_field not in best:
        return Decision(
            allowed=False,
            basis=BasisKind.NONE,
            reason=DenyReason.NO_CONSENT,
            field=worst_field,
            detail=_detail(DenyReason.NO_CONSENT, request, None, worst_field),
        )
    _, _, reason, record = best[worst_field]
    return Decision(
        allowed=False,
        basis=BasisKind.NONE,
        reason=reason,
        field=worst_field,
        detail=_detail(reason, request, record, worst_field),
        denied_consent_id=record.terms.consent_id,
    )


def _choose(covering: dict[str, list[ConsentRecord]]) -> tuple[str, ...]:
    """The fewest consents covering every field (greedy set cover, deterministic)."""
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
