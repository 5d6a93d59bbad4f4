"""``dsgw audit``: the audit log's keys, verification and proofs (audit_log), and its review tools
(audit_review)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    from gateway.cli import audit_log, audit_review

    parser: argparse.ArgumentParser = sub.add_parser("audit", help="the encrypted, tamper-evident audit log")
    asub = parser.add_subparsers(dest="audit_command", required=True, metavar="VERB")
    audit_log.register(asub)
    audit_review.register(asub)
