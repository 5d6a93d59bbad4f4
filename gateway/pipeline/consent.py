"""Step 4, consent: the legal basis of the disclosure. A statutory-duty agreement bypasses
consent (and says so); otherwise the subject's consent must cover the consumer, purpose, dataset
and every field, separately for sensitive data (:func:`gateway.consent.decision.decide`).

:func:`require_basis` is pure over the decision; the store read happens in the caller."""

from __future__ import annotations

from gateway.config import Agreement
from gateway.consent.decision import CONSENT_REQUIRED, Basis, Decision, DenyReason
from gateway.pipeline.errors import PermissionDenied

__all__ = ["DENY_REASONS", "basis_of", "legal_basis_label", "require_basis"]

#: The consent decision's reasons as ErrorReason names.
DENY_REASONS: dict[DenyReason, str] = {
    DenyReason.NO_CONSENT: "CONSENT_MISSING",
    DenyReason.CONSUMER_MISMATCH: "CONSENT_CONSUMER_MISMATCH",
    DenyReason.PURPOSE_MISMATCH: "CONSENT_PURPOSE_MISMATCH",
    DenyReason.FIELD_OUT_OF_SCOPE: "CONSENT_FIELD_OUT_OF_SCOPE",
    DenyReason.SENSITIVE_WITHOUT_SEPARATE_CONSENT: "SENSITIVE_WITHOUT_SEPARATE_CONSENT",
    DenyReason.CONSENT_REVOKED: "CONSENT_REVOKED",
    DenyReason.CONSENT_EXPIRED: "CONSENT_EXPIRED",
    DenyReason.CONSENT_NOT_YET_VALID: "CONSENT_NOT_YET_VALID",
    DenyReason.USE_LIMIT_REACHED: "CONSENT_USE_LIMIT_REACHED",
}


def basis_of(agreement: Agreement) -> Basis:
    if agreement.legal_basis == "statutory_duty":
        return Basis(statutory_duty=True, reference=agreement.duty_reference)
    return CONSENT_REQUIRED


def require_basis(decision: Decision) -> Decision:
    """The decision if it allows the disclosure, else PermissionDenied with its reason."""
    if decision.allowed:
        return decision
    assert decision.reason is not None
    raise PermissionDenied(DENY_REASONS[decision.reason], decision.detail or decision.reason.value)


def legal_basis_label(decision: Decision) -> str:
    """``consent:<ids>`` or ``statutory_duty:<reference>`` (what the caller is told)."""
    return f"{decision.basis.value}:{decision.legal_basis_reference}"
