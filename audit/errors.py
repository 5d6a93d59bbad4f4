"""The audit package's exceptions.

Every failure of a check is a :class:`VerificationError`, so a caller that only needs "did this verify?"
catches that one class; the subclasses say which check failed. Messages are one line, name the
thing that failed (leaf index, tree size, key name) and never contain audited data.

Bad inputs that are the caller's mistake rather than a failed check (a malformed key string, an
unknown suite name) are :class:`KeyFormatError` and :class:`UnsupportedSuite`.
"""

from __future__ import annotations


class AuditError(Exception):
    """Base of the audit package's errors. ``reason`` is a stable, machine-readable code."""

    reason: str = "AUDIT_ERROR"


class UnsupportedSuite(AuditError):
    """An algorithm suite or scheme that is unknown, or whose backing library is not installed."""

    reason = "UNSUPPORTED_SUITE"


class KeyFormatError(AuditError, ValueError):
    """A malformed signer or verifier key: bad key string, bad key name, wrong length, wrong key ID,
    unsupported key algorithm, or duplicate/ambiguous keys."""

    reason = "KEY_FORMAT"


class VerificationError(AuditError):
    """A cryptographic or structural check failed. Never ignore it: the data is not trustworthy."""

    reason = "VERIFICATION_FAILED"


class InclusionProofError(VerificationError):
    """An RFC 9162 inclusion proof does not prove the leaf is in the tree with the given root."""

    reason = "INCLUSION_PROOF"


class ConsistencyProofError(VerificationError):
    """An RFC 9162 consistency proof does not prove the newer tree extends the older one."""

    reason = "CONSISTENCY_PROOF"


class CheckpointFormatError(VerificationError):
    """A signed note or checkpoint body that is not exactly in the C2SP format."""

    reason = "CHECKPOINT_FORMAT"


class CheckpointSignatureError(VerificationError):
    """A signature line from a known key that does not verify. ``key_name`` names the key."""

    reason = "CHECKPOINT_SIGNATURE"

    def __init__(self, message: str, *, key_name: str) -> None:
        super().__init__(message)
        self.key_name = key_name


class UnknownKeyError(VerificationError):
    """No signature on a note is from a key the verifier knows. ``key_names`` lists the names seen."""

    reason = "UNKNOWN_KEY"

    def __init__(self, message: str, *, key_names: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.key_names = key_names


class DecryptionError(VerificationError):
    """Authenticated decryption failed: wrong key, wrong nonce, wrong associated data or tampering."""

    reason = "DECRYPTION"
