"""The request path's typed errors. Each carries a gRPC status name (``code``), a machine-readable
``reason`` (an ErrorReason name of proto/dsgw/v1/common.proto) and a one-line message without
personal data; the server maps them to gRPC statuses with a google.rpc.ErrorInfo
(:mod:`gateway.server.status`). Nothing here imports grpc."""

from __future__ import annotations

from gateway.errors import DsgwError

__all__ = [
    "AuditFailed",
    "Conflict",
    "ConsentStoreDown",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "RequestError",
    "Unauthenticated",
    "Unavailable",
    "echo_name",
]


def echo_name(name: str) -> str:
    """A caller-sent name (field, dataset, predicate, purpose) as an error message may repeat it:
    short printable names as they are, anything else as ``(invalid)``."""
    return name if len(name) <= 64 and name.isprintable() else "(invalid)"


class RequestError(DsgwError):
    code: str = "INTERNAL"

    def __init__(
        self, reason: str, message: str, *, retry_after_s: float | None = None, **metadata: str
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.metadata = metadata


class Unauthenticated(RequestError):
    code = "UNAUTHENTICATED"


class PermissionDenied(RequestError):
    """A denial by the agreement, the purpose or the consent: always audited."""

    code = "PERMISSION_DENIED"


class InvalidArgument(RequestError):
    code = "INVALID_ARGUMENT"


class NotFound(RequestError):
    code = "NOT_FOUND"


class Conflict(RequestError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(RequestError):
    """The request is valid but the state does not allow it (e.g. revoking a consent that is
    no longer in force)."""

    code = "FAILED_PRECONDITION"


class Unavailable(RequestError):
    code = "UNAVAILABLE"


class RateLimited(RequestError):
    code = "RESOURCE_EXHAUSTED"


class ConsentStoreDown(Unavailable):
    """The consent store could not be read: no decision was made, nothing is disclosed."""

    def __init__(self) -> None:
        super().__init__(
            "CONSENT_STORE_UNAVAILABLE",
            "the consent store cannot be read; nothing was disclosed",
            retry_after_s=1.0,
        )


class AuditFailed(Unavailable):
    """The audit entry could not be written: the call fails closed (no entry, no answer)."""

    def __init__(self, message: str = "the audit log cannot take entries; nothing was disclosed") -> None:
        super().__init__("AUDIT_UNAVAILABLE", message, retry_after_s=5.0)
