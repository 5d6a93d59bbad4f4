"""Request errors as gRPC statuses: the status code, a one-line message without personal data,
and a google.rpc.Status in the trailers carrying google.rpc.ErrorInfo (domain ``dsgw.v1``,
``reason`` an ErrorReason name, metadata) and, for UNAVAILABLE and RESOURCE_EXHAUSTED,
google.rpc.RetryInfo (how long to wait)."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway.pipeline.errors import RequestError

__all__ = ["DOMAIN", "error_info_of", "to_grpc_status"]

DOMAIN = "dsgw.v1"


MAX_MESSAGE = 512
"""The longest status message (characters): a message that repeats a caller's oversized input
must still fit the response's metadata (gRPC refuses metadata past its limit, losing the
ErrorInfo)."""


def _bounded(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


def to_grpc_status(error: RequestError) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=dict(error.metadata))
    details: list[Any] = [info]
    if error.retry_after_s is not None:
        seconds = max(0.0, error.retry_after_s)
        delay = duration_pb2.Duration(seconds=int(seconds), nanos=int((seconds % 1) * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)
        packed.append(a)
    status = status_pb2.Status(
        code=code_pb2.Code.Value(error.code), message=_bounded(str(error)), details=packed
    )
    result: grpc.Status = rpc_status.to_status(status)
    return result


def error_info_of(rpc_error: Any) -> tuple[str, dict[str, str], float | None]:
    """(reason, metadata, retry delay seconds) from a failed call (client side); ("", {}, None)
    when the status carries none."""
    status = rpc_status.from_call(rpc_error)
    if status is None:
        return "", {}, None
    reason, metadata, retry = "", {}, None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            r = error_details_pb2.RetryInfo()
            detail.Unpack(r)
            retry = r.retry_delay.seconds + r.retry_delay.nanos / 1e9
    return reason, metadata, retry
