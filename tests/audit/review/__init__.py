"""Tests of the audit review tools. Shared builders of hand-made entries live here."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.entry import AuditEntry
from audit.keys import FileKeyProvider
from audit.layout import HomeKeys, LogKeys
from audit.log import AuditLog, init_log
from audit.review import LocatedEntry
from gateway.identity import make_resident_id

SHANGHAI = ZoneInfo("Asia/Shanghai")


def person(n: int) -> str:
    """The n-th synthetic person (n < 1000)."""
    return make_resident_id("120116", date(1985, 5, 5), n)


PERSON = person(7)
OTHER = person(8)


def local(year: int, month: int, day: int, hour: int = 10, minute: int = 0) -> datetime:
    """A Shanghai local time, as an aware datetime."""
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)


def access(
    when: datetime,
    *,
    caller: str = "tax",
    provider: str = "hrss",
    subject: str | None = PERSON,
    purpose: str | None = "employment_subsidy_review",
    operator: str = "op-1",
    decision: str = "allowed",
    basis: tuple[str, str] = ("consent", "consent-1"),
    reason: str = "",
    outcome: str | None = None,
    datasets: tuple[str, ...] = ("person_insurance",),
    fields: tuple[str, ...] = ("currently_insured",),
    predicate: dict[str, Any] | None = None,
    request_id: str = "req-1",
    node: str = "gw-a",
) -> AuditEntry:
    if outcome is None:
        outcome = "found" if decision == "allowed" else "none"
    data: dict[str, Any] = {
        "time": when,
        "node": node,
        "request_id": request_id,
        "caller": caller,
        "operator": operator,
        "body": {
            "kind": "access",
            "provider": provider,
            "datasets": datasets,
            "fields": fields,
            "legal_basis": {"kind": basis[0], "reference": basis[1]},
            "decision": decision,
            "reason": reason,
            "outcome": {"kind": outcome},
        },
    }
    if predicate is not None:
        data["body"]["predicate"] = predicate
    if subject is not None:
        data["subject"] = {"kind": "person", "id": subject}
    if purpose is not None:
        data["purpose"] = purpose
    return AuditEntry.model_validate(data)


def denied(when: datetime, reason: str = "CONSENT_MISSING", **kw: Any) -> AuditEntry:
    return access(when, decision="denied", reason=reason, **kw)


def consent(
    when: datetime, *, subject: str = PERSON, action: str = "granted", consent_id: str = "consent-1"
) -> AuditEntry:
    return AuditEntry.model_validate(
        {
            "time": when,
            "node": "gw-a",
            "subject": {"kind": "person", "id": subject},
            "body": {
                "kind": "consent_change",
                "consent_id": consent_id,
                "action": action,
                "consumers": ["tax"],
                "datasets": ["person_insurance"],
                "purposes": ["employment_subsidy_review"],
            },
        }
    )


def push(when: datetime, *, subject: str = PERSON, outcome: str = "delivered") -> AuditEntry:
    return AuditEntry.model_validate(
        {
            "time": when,
            "node": "gw-a",
            "subject": {"kind": "person", "id": subject},
            "purpose": "employment_subsidy_review",
            "body": {
                "kind": "push_notification",
                "policy_id": "policy-7",
                "channel": "sms",
                "notification_id": "n-1",
                "outcome": outcome,
                "reason": "OPTED_OUT" if outcome in ("failed", "suppressed") else "",
            },
        }
    )


def located(entries: Iterable[AuditEntry], origin: str = "gw-a", start: int = 0) -> list[LocatedEntry]:
    return [LocatedEntry(origin, start + i, e) for i, e in enumerate(entries)]


def daily(first: date, days: int, per_day: int, *, hour: int = 10, **kw: Any) -> list[AuditEntry]:
    """``per_day`` allowed accesses on each of ``days`` days from ``first``, at ``hour`` local."""
    out = []
    for d in range(days):
        day = first + timedelta(days=d)
        for i in range(per_day):
            out.append(access(datetime(day.year, day.month, day.day, hour, i % 60, tzinfo=SHANGHAI), **kw))
    return out


# --- real logs: two gateway replicas ---------------------------------------------------------

SPIKE_DAY = date(2026, 11, 16)  # a Monday, after two weeks of usual volume
HISTORY_START = date(2026, 11, 2)


@dataclass
class Replica:
    directory: Path
    origin: str
    entries: list[AuditEntry]  # by index

    def indices(self, predicate: Callable[[AuditEntry], bool]) -> list[int]:
        return [i for i, e in enumerate(self.entries) if predicate(e)]


@dataclass
class Replicas:
    """Two replicas' logs: ``a`` written with the keys of ``home`` (keygen layout), ``b`` with its
    own checkpoint and blind-index keys; both encrypted for the same auditor key."""

    home: Path
    a: Replica
    b: Replica

    @property
    def auditor_key(self) -> Path:
        return HomeKeys(self.home).auditor_key

    def all(self) -> list[tuple[Replica, int, AuditEntry]]:
        return [(r, i, e) for r in (self.a, self.b) for i, e in enumerate(r.entries)]


def replica_a_entries() -> list[AuditEntry]:
    out: list[AuditEntry] = []
    # two weeks of usual traffic: tax reads 5 persons a working day, in working hours
    for d in range((SPIKE_DAY - HISTORY_START).days):
        day = HISTORY_START + timedelta(days=d)
        for i in range(5):
            out.append(
                access(
                    datetime(day.year, day.month, day.day, 9 + i, 0, tzinfo=SHANGHAI),
                    subject=person(100 + (d * 5 + i) % 40),
                    request_id=f"usual-{d}-{i}",
                )
            )
    # the spike day: tax makes 20 requests
    for i in range(20):
        out.append(access(local(2026, 11, 16, 10, i), subject=person(200 + i), request_id=f"spike-{i}"))
    # one hrss operator touches 55 subjects on the 17th
    for i in range(55):
        out.append(
            access(
                local(2026, 11, 17, 14, i),
                caller="hrss",
                provider="civil_affairs",
                operator="op-wide",
                subject=person(300 + i),
                purpose="benefit_review",
                basis=("statutory_duty", "duty-3"),
                datasets=("subsistence",),
                fields=("receives_dibao",),
            )
        )
    # the citizen PERSON
    out.append(consent(local(2026, 11, 3, 20, 5)))
    out.append(access(local(2026, 11, 4, 10, 30), request_id="person-read-1"))
    out.append(
        denied(
            local(2026, 11, 17, 23, 10), caller="civil_affairs", operator="op-night", reason="CONSENT_MISSING"
        )
    )
    out.append(consent(local(2026, 11, 18, 9), action="revoked"))
    # an allowed access without a legal basis
    out.append(access(local(2026, 11, 18, 11), subject=OTHER, basis=("none", ""), caller="education"))
    return out


def replica_b_entries() -> list[AuditEntry]:
    return [
        access(
            local(2026, 11, 5, 11, 15),
            request_id="person-read-2",
            node="gw-b",
            provider="tax",
            caller="hrss",
            datasets=("withholding",),
            fields=("employer",),
        ),
        access(local(2026, 11, 5, 11, 20), subject=OTHER, node="gw-b"),
        denied(
            local(2026, 11, 6, 7, 30),
            subject=OTHER,
            node="gw-b",
            reason="NO_AGREEMENT",
            caller="market_regulation",
        ),
        push(local(2026, 11, 19, 9)),
        access(local(2026, 11, 19, 10), subject=person(500), node="gw-b", purpose="benefit_review"),
    ]


def build_replicas(root: Path) -> Replicas:
    """Write the two replicas' logs under ``root`` through the public log API."""
    home = root / "home"
    HomeKeys(home).generate()
    keys_a = HomeKeys(home).load()
    keys_b = LogKeys(
        checkpoint_key=Ed25519PrivateKey.generate(),
        blind_index_key=os.urandom(32),
        provider=FileKeyProvider.from_public_key_file(HomeKeys(home).auditor_public_key),
    )
    replicas = []
    for node, keys, entries in (("gw-a", keys_a, replica_a_entries()), ("gw-b", keys_b, replica_b_entries())):
        directory = root / node
        meta = init_log(directory, keys, node=node)
        with AuditLog.open(directory, keys) as log:
            receipts = log.append_many(entries)
        assert [r.index for r in receipts] == list(range(len(entries)))
        replicas.append(Replica(directory, meta.log_id, entries))
    return Replicas(home, replicas[0], replicas[1])


__all__ = [
    "OTHER",
    "PERSON",
    "SHANGHAI",
    "SPIKE_DAY",
    "UTC",
    "Replica",
    "Replicas",
    "access",
    "build_replicas",
    "consent",
    "daily",
    "denied",
    "local",
    "located",
    "person",
    "push",
]
