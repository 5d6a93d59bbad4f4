"""Step 5, identity: the subject's identifier, normalised and validated (GB 11643 resident
identity numbers, GB 32100 unified social credit codes: legacy 15-digit numbers, full-width
digits and a lowercase x are accepted). The provider's adapter then resolves the canonical
number to its own stored forms; cross-agency linkage of numbers broken in other ways belongs to
the master index (the matching issue). Pure."""

from __future__ import annotations

from adapters.contract import Subject, SubjectKind
from gateway.consent.errors import InvalidConsentRequest
from gateway.consent.service import parse_subject
from gateway.pipeline.errors import InvalidArgument

__all__ = ["subject_of"]


def subject_of(kind: SubjectKind | None, identifier: str) -> Subject:
    """The canonical subject, or InvalidArgument (INVALID_IDENTITY_NUMBER, INVALID_CREDIT_CODE,
    INVALID_REQUEST). The message names the problem, never the number."""
    if not identifier:
        raise InvalidArgument("INVALID_REQUEST", "subject.id is required")
    try:
        return parse_subject(identifier, kind)
    except InvalidConsentRequest as exc:
        raise InvalidArgument(exc.reason, str(exc)) from None
