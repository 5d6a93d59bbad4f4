"""Helpers for the audit log tests, and the child process of the crash test.

As a script: ``python -m tests.audit.crash_writer LOG HOME THREADS`` opens the log and appends
from THREADS threads until killed, printing ``<index> <request id>`` (flushed) for each
acknowledged entry. The parent SIGKILLs it at a random moment.
"""

from __future__ import annotations

import sys
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from audit.checkpoints import CheckpointPolicy
from audit.entry import AuditEntry
from audit.layout import HomeKeys, LogKeys
from audit.log import AuditLog, init_log
from dsgw.v1 import audit_pb2
from gateway.identity import make_resident_id

WHEN = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
OPERATOR = "张伟"
FIELDS = (
    "currently_insured",
    "current_employer",
    "insured_since",
    "contribution_base",
    "unemployment_status",
    "benefit_months",
)


def person(i: int) -> str:
    """A valid resident identity number, distinct for each i < 999 * 365."""
    return make_resident_id("120116", date(1980, 1, 1) + timedelta(days=i // 999), 1 + i % 999)


def entry(i: int, *, request_id: str | None = None, subject: str | None = None) -> AuditEntry:
    """A realistic access entry: six field names, a subject, a purpose, a consent basis."""
    data: dict[str, Any] = {
        "time": WHEN + timedelta(seconds=i),
        "node": "gw-1",
        "request_id": request_id or f"req-{i:08d}",
        "caller": ["tax", "hrss", "education", "civil_affairs"][i % 4],
        "operator": OPERATOR,
        "subject": {"kind": "person", "id": subject or person(i)},
        "purpose": ["employment_subsidy_review", "unemployment_benefit"][i % 2],
        "body": {
            "kind": "access",
            "provider": "hrss" if i % 4 else "civil_affairs",
            "datasets": ["person_insurance"],
            "fields": list(FIELDS),
            "legal_basis": {"kind": "consent", "reference": f"consent-{i % 97}"},
            "decision": "allowed",
            "outcome": {"kind": "found"},
            "latency_us": 1000 + i % 5000,
        },
    }
    return AuditEntry.model_validate(data)


def consent_entry(i: int) -> AuditEntry:
    return AuditEntry.model_validate(
        {
            "time": WHEN + timedelta(seconds=i),
            "node": "gw-1",
            "request_id": f"req-c{i}",
            "subject": {"kind": "person", "id": person(i)},
            "purpose": "employment_subsidy_review",
            "body": {
                "kind": "consent_change",
                "consent_id": f"consent-{i}",
                "action": "granted",
                "consumers": ["tax"],
                "datasets": ["person_insurance"],
                "purposes": ["employment_subsidy_review"],
            },
        }
    )


def push_entry(i: int) -> AuditEntry:
    return AuditEntry.model_validate(
        {
            "time": WHEN + timedelta(seconds=i),
            "node": "gw-1",
            "request_id": f"req-p{i}",
            "subject": {"kind": "person", "id": person(i)},
            "body": {
                "kind": "push_notification",
                "policy_id": "policy-7",
                "channel": "sms",
                "notification_id": f"n-{i}",
                "outcome": "delivered",
            },
        }
    )


def proto(i: int, **kw: Any) -> audit_pb2.AuditEntry:
    return entry(i, **kw).to_proto()


def make_log(
    tmp: Path, *, node: str = "gw-1", suite: str = "default", segment_bytes: int | None = None
) -> tuple[Path, Path, LogKeys]:
    """A home with fresh keys and an empty log: (log dir, home, keys)."""
    home = tmp / "home"
    keys_files = HomeKeys(home)
    keys_files.generate()
    keys = keys_files.load()
    log_dir = tmp / "log"
    extra = {} if segment_bytes is None else {"segment_bytes": segment_bytes}
    init_log(log_dir, keys, node=node, suite=suite, **extra)
    return log_dir, home, keys


def _child(log_dir: str, home: str, threads: int) -> None:
    from gateway import logs

    logs.configure()  # structlog to stderr: stdout carries only the acknowledgements
    log = AuditLog.open(log_dir, home=home, index="thread", policy=CheckpointPolicy(every_entries=200))
    out = sys.stdout
    lock = threading.Lock()

    def work(worker: int) -> None:
        seq = 0
        while True:
            request_id = f"w{worker}-{seq}"
            receipt = log.append(proto(seq, request_id=request_id))
            with lock:
                out.write(f"{receipt.index} {request_id}\n")
                out.flush()
            seq += 1

    for worker in range(threads):
        threading.Thread(target=work, args=(worker,), daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], int(sys.argv[3]))
