"""Every reason the gateway puts in a google.rpc.ErrorInfo (or a BatchVerify item's error_reason)
is a name of the wire's ErrorReason enum, so that a client can map it."""

from __future__ import annotations

import re
from pathlib import Path

from dsgw.v1 import common_pb2

ROOT = Path(__file__).resolve().parents[2]
_RAISED = re.compile(
    r"\b(?:InvalidConsentRequest|InvalidArgument|Unavailable|Conflict|NotFound|PermissionDenied"
    r"|FailedPrecondition|ResourceExhausted|Unauthenticated)\(\s*\"([A-Z_]+)\""
)


def test_every_raised_reason_is_in_the_error_reason_enum() -> None:
    names = set(common_pb2.ErrorReason.keys())
    raised = {m for path in (ROOT / "gateway").rglob("*.py") for m in _RAISED.findall(path.read_text())}
    assert raised, "the pattern no longer finds the raises"
    per_item = {"INVALID_ITEM_ID", "REQUEST_ID_CONFLICT"}  # BatchVerify items' error_reason
    assert sorted((raised | per_item) - names) == []
