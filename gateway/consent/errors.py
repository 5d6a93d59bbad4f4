"""Typed errors of the consent service. Messages are one line and never carry personal data
(no identity numbers, no names). ``reason`` is machine-readable.

Input problems are :class:`~gateway.errors.UsageError` (CLI exit 2, gRPC INVALID_ARGUMENT /
NOT_FOUND / FAILED_PRECONDITION); a receipt that does not verify is a
:class:`~gateway.errors.CheckFailed` (CLI exit 1).
"""

from __future__ import annotations

from gateway.errors import CheckFailed, DsgwError, UsageError

__all__ = [
    "ConsentError",
    "ConsentExists",
    "ConsentNotActive",
    "ConsentNotFound",
    "InvalidConsentRequest",
    "InvalidReceipt",
    "ReceiptKeyError",
    "ReceiptKeyMismatch",
    "ReceiptSignatureInvalid",
    "StoreError",
]


class ConsentError(DsgwError):
    """Base of the consent errors."""

    reason = "CONSENT_ERROR"


class InvalidConsentRequest(ConsentError, UsageError):
    """A grant, revocation, check or opt-out refused before anything was stored. ``reason`` is one
    of UNKNOWN_PURPOSE, INVALID_IDENTITY_NUMBER, INVALID_CREDIT_CODE, INVALID_VALIDITY,
    UNKNOWN_AGENCY, UNKNOWN_DATASET, UNKNOWN_FIELD, SUBJECT_KIND_MISMATCH, INVALID_USE_LIMIT,
    INVALID_CHANNEL, UNKNOWN_CATEGORY, INVALID_REQUEST."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ConsentNotFound(ConsentError, UsageError):
    reason = "CONSENT_NOT_FOUND"

    def __init__(self, consent_id: str) -> None:
        super().__init__(f"no consent {consent_id!r}")
        self.consent_id = consent_id


class ConsentExists(ConsentError, UsageError):
    reason = "CONSENT_EXISTS"

    def __init__(self, consent_id: str) -> None:
        super().__init__(f"consent {consent_id!r} already exists")
        self.consent_id = consent_id


class ConsentNotActive(ConsentError, UsageError):
    """A revocation of a consent that is already revoked or expired (history is final)."""

    reason = "CONSENT_NOT_ACTIVE"

    def __init__(self, consent_id: str, status: str) -> None:
        super().__init__(f"consent {consent_id!r} is {status}, not granted")
        self.consent_id = consent_id
        self.status = status


class StoreError(ConsentError, UsageError):
    """The consent store cannot be opened or used (bad URL, unreachable server, locked file)."""

    reason = "STORE_UNAVAILABLE"


class ReceiptKeyError(ConsentError, UsageError):
    """The receipt signing or verification key cannot be read, or is not an Ed25519 key."""

    reason = "RECEIPT_KEY_ERROR"


class InvalidReceipt(ConsentError, CheckFailed):
    """A receipt that does not verify: malformed, altered, or signed by another key. Fail closed:
    every failure to verify is one of these."""

    reason = "RECEIPT_INVALID"


class ReceiptSignatureInvalid(InvalidReceipt):
    reason = "RECEIPT_SIGNATURE_INVALID"


class ReceiptKeyMismatch(InvalidReceipt):
    """The receipt names a key id other than the verification key's."""

    reason = "RECEIPT_KEY_MISMATCH"
