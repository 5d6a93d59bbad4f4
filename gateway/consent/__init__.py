"""Consent: records, the pure decision, signed receipts, the store and the service.

* :mod:`gateway.consent.model`: ConsentTerms, ConsentRecord, StatusEvent, Scope, OptOut;
* :mod:`gateway.consent.decision`: ``decide(records, request, now, basis) -> Decision``;
* :mod:`gateway.consent.receipts`: RFC 8785 + Ed25519 receipts, keys, offline verification;
* :mod:`gateway.consent.store`: ConsentStore (SQLite / PostgreSQL, append-only histories);
* :mod:`gateway.consent.service`: ConsentService (validation, grant, revoke, check, list,
  expire, opt-out, the ``on_event`` audit hook).

See docs/consent.md.
"""

from gateway.consent.decision import (
    CONSENT_REQUIRED,
    Basis,
    BasisKind,
    CheckRequest,
    Decision,
    DenyReason,
    decide,
)
from gateway.consent.errors import (
    ConsentError,
    ConsentExists,
    ConsentNotActive,
    ConsentNotFound,
    InvalidConsentRequest,
    InvalidReceipt,
    ReceiptKeyError,
    StoreError,
)
from gateway.consent.model import (
    CaptureChannel,
    ConsentRecord,
    ConsentStatus,
    ConsentTerms,
    ContactPreferences,
    OptOut,
    OptOutTarget,
    PushChannel,
    Scope,
    ScopeItem,
    StatusEvent,
)
from gateway.consent.receipts import ReceiptSigner, verify_receipt, verify_receipt_bytes
from gateway.consent.service import ConsentService, Granted, GrantRequest, Revoked, ScopeRequest
from gateway.consent.store import ConsentStore

__all__ = [
    "CONSENT_REQUIRED",
    "Basis",
    "BasisKind",
    "CaptureChannel",
    "CheckRequest",
    "ConsentError",
    "ConsentExists",
    "ConsentNotActive",
    "ConsentNotFound",
    "ConsentRecord",
    "ConsentService",
    "ConsentStatus",
    "ConsentStore",
    "ConsentTerms",
    "ContactPreferences",
    "Decision",
    "DenyReason",
    "GrantRequest",
    "Granted",
    "InvalidConsentRequest",
    "InvalidReceipt",
    "OptOut",
    "OptOutTarget",
    "PushChannel",
    "ReceiptKeyError",
    "ReceiptSigner",
    "Revoked",
    "Scope",
    "ScopeItem",
    "ScopeRequest",
    "StatusEvent",
    "StoreError",
    "decide",
    "verify_receipt",
    "verify_receipt_bytes",
]
