"""Step 8, audit: the access entry of one request to one provider, as the audit log's proto
(names, never values; the subject's identifier is sealed by the log). Pure: the server appends
it and answers only once the log acknowledged it (fail closed)."""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from adapters.agencies import Agency
from adapters.contract import Subject
from dsgw.v1 import audit_pb2, common_pb2

__all__ = ["AccessFacts", "Verdict", "access_entries", "access_entry", "consent_change_entry", "consent_hook"]

_AGENCY = {a: common_pb2.AgencyCode.Value(f"AGENCY_CODE_{a.value.upper()}") for a in Agency}
_KIND = {"person": common_pb2.SUBJECT_KIND_PERSON, "employer": common_pb2.SUBJECT_KIND_EMPLOYER}
_BASIS = {
    "consent": audit_pb2.LEGAL_BASIS_KIND_CONSENT,
    "statutory_duty": audit_pb2.LEGAL_BASIS_KIND_STATUTORY_DUTY,
    "none": audit_pb2.LEGAL_BASIS_KIND_NONE,
}
_OUTCOME = {
    "": audit_pb2.ACCESS_OUTCOME_KIND_UNSPECIFIED,
    "found": audit_pb2.ACCESS_OUTCOME_KIND_FOUND,
    "not_found": audit_pb2.ACCESS_OUTCOME_KIND_NOT_FOUND,
    "count": audit_pb2.ACCESS_OUTCOME_KIND_COUNT,
    "failed": audit_pb2.ACCESS_OUTCOME_KIND_FAILED,
}


@dataclass(slots=True)
class AccessFacts:
    """What the request path learnt about one provider access, filled in step by step."""

    node: str
    request_id: str
    caller: Agency
    operator: str
    subject: Subject | None
    purpose: str | None
    provider: Agency
    datasets: Sequence[str] = ()
    fields: Sequence[str] = ()
    predicate: str | None = None
    parameters: Mapping[str, int] = field(default_factory=dict)
    basis: str = "none"
    basis_reference: str = ""
    allowed: bool = False
    reason: str = ""
    outcome: str = ""
    count: int = 0
    started_ns: int = field(default_factory=time.perf_counter_ns)
    time_ns: int = field(default_factory=time.time_ns)


def _header(entry: audit_pb2.AuditEntry, node: str, request_id: str, time_ns: int) -> None:
    entry.time.seconds, nanos = divmod(time_ns, 1_000_000_000)
    entry.time.nanos = (nanos // 1000) * 1000
    entry.node = node
    entry.request_id = request_id


def access_entry(f: AccessFacts) -> audit_pb2.AuditEntry:
    entry = audit_pb2.AuditEntry()
    _header(entry, f.node, f.request_id, f.time_ns)
    entry.caller = _AGENCY[f.caller]
    entry.operator = f.operator
    if f.subject is not None:
        entry.subject.kind = _KIND[f.subject.kind.value]
        entry.subject.id = f.subject.id
    if f.purpose:
        entry.purpose.code = f.purpose
    a = entry.access
    a.provider = _AGENCY[f.provider]
    a.datasets.extend(f.datasets)
    a.fields.extend(f.fields)
    if f.predicate:
        a.predicate.name = f.predicate
        for k, v in f.parameters.items():
            a.predicate.parameters[k] = v
    a.legal_basis.kind = _BASIS[f.basis]
    a.legal_basis.reference = f.basis_reference[:128]
    a.decision = audit_pb2.AUDIT_DECISION_ALLOWED if f.allowed else audit_pb2.AUDIT_DECISION_DENIED
    a.reason = f.reason
    a.outcome.kind = _OUTCOME[f.outcome]
    a.outcome.count = f.count
    a.latency_us = max(0, (time.perf_counter_ns() - f.started_ns) // 1000)
    return entry


@dataclass(frozen=True, slots=True)
class Verdict:
    """What differs between the accesses of one BatchVerify chunk, per subject."""

    subject: Subject
    basis: str
    basis_reference: str
    allowed: bool
    reason: str
    outcome: str


def access_entries(template: AccessFacts, verdicts: Sequence[Verdict]) -> list[audit_pb2.AuditEntry]:
    """Entries of many accesses that share everything but the subject and its verdict (a
    BatchVerify chunk): the shared part is built once from ``template`` and copied; each entry
    equals what :func:`access_entry` makes of the same facts."""
    base = access_entry(template)
    base.ClearField("subject")
    out: list[audit_pb2.AuditEntry] = []
    for v in verdicts:
        entry = audit_pb2.AuditEntry()
        entry.CopyFrom(base)
        entry.subject.kind = _KIND[v.subject.kind.value]
        entry.subject.id = v.subject.id
        a = entry.access
        a.legal_basis.kind = _BASIS[v.basis]
        a.legal_basis.reference = v.basis_reference[:128]
        a.decision = audit_pb2.AUDIT_DECISION_ALLOWED if v.allowed else audit_pb2.AUDIT_DECISION_DENIED
        a.reason = v.reason
        a.outcome.kind = _OUTCOME[v.outcome]
        out.append(entry)
    return out


def consent_change_entry(
    *,
    node: str,
    request_id: str,
    caller: Agency | None,
    subject: Subject,
    consent_id: str,
    action: str,
    consumers: Sequence[Agency],
    datasets: Sequence[str],
    purposes: Sequence[str],
    time_ns: int | None = None,
) -> audit_pb2.AuditEntry:
    """A grant, revocation or expiry of a consent (``action``: granted / revoked / expired)."""
    entry = audit_pb2.AuditEntry()
    _header(entry, node, request_id, time.time_ns() if time_ns is None else time_ns)
    if caller is not None:
        entry.caller = _AGENCY[caller]
    entry.subject.kind = _KIND[subject.kind.value]
    entry.subject.id = subject.id
    c = entry.consent_change
    c.consent_id = consent_id
    c.action = audit_pb2.ConsentAction.Value(f"CONSENT_ACTION_{action.upper()}")
    c.consumers.extend(_AGENCY[a] for a in consumers)
    c.datasets.extend(datasets)
    c.purposes.extend(purposes)
    return entry


#: The agency making consent changes in this context (and its request id, if any): set by the
#: ConsentService servicer around a Grant or Revoke, read by :func:`consent_hook`.
_ACTOR: contextvars.ContextVar[tuple[Agency, str] | None] = contextvars.ContextVar(
    "dsgw_consent_actor", default=None
)


@contextlib.contextmanager
def acting(caller: Agency, request_id: str = "") -> Iterator[None]:
    """Consent changes made inside are audited as made by ``caller`` (under ``request_id`` when
    given, else the consent id); outside (the CLI, expiry sweeps) no agency is named."""
    token = _ACTOR.set((caller, request_id))
    try:
        yield
    finally:
        _ACTOR.reset(token)


def consent_hook(append: Callable[[audit_pb2.AuditEntry], Any], node: str) -> Callable[[Any, Any], None]:
    """The consent service's ``on_event`` hook: each grant, revocation and expiry becomes a
    consent_change entry, appended (and on disk) inside the store's transaction, so that a change
    the log cannot take is not made. An agency's change over gRPC names it (:func:`acting`)."""
    from gateway.consent.service import audit_fields

    def on_event(record: Any, event: Any) -> None:
        t = record.terms
        change = audit_fields(record, event)["change"]
        actor = _ACTOR.get()
        append(
            consent_change_entry(
                node=node,
                request_id=(actor[1] if actor is not None and actor[1] else t.consent_id),
                caller=actor[0] if actor is not None else None,
                subject=t.subject,
                consent_id=t.consent_id,
                action=change["action"],
                consumers=t.consumers,
                datasets=change["datasets"],
                purposes=t.purposes,
                time_ns=int(event.recorded_at.timestamp() * 1_000_000) * 1000,
            )
        )

    return on_event
