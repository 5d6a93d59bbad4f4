"""Step 3, purpose: the stated purpose is a code of the purpose catalogue and one the agreement
names. Pure."""

from __future__ import annotations

from gateway.config import Agreement
from gateway.pipeline.errors import InvalidArgument, PermissionDenied, echo_name
from gateway.purposes import PurposeCatalogue

__all__ = ["check_purpose", "known_purpose"]


def known_purpose(code: str, catalogue: PurposeCatalogue) -> str:
    if not code:
        raise InvalidArgument("UNKNOWN_PURPOSE", "meta.purpose.code is required")
    if code not in catalogue:
        raise InvalidArgument("UNKNOWN_PURPOSE", f"unknown purpose code {echo_name(code)!r}")
    return code


def check_purpose(code: str, agreement: Agreement) -> None:
    if code not in agreement.purposes:
        raise PermissionDenied(
            "PURPOSE_NOT_ALLOWED",
            f"purpose {code!r} is not in the agreement for {agreement.provider.value}.{agreement.dataset}",
        )
