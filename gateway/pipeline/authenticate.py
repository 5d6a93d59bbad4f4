"""Step 1, authenticate: the caller's agency from its verified mTLS client certificate.

TLS has already checked the chain to the gateway's CA and the validity period; here the
certificate must also name a known agency and not be on the CA's revocation list (checked on
every call, against a CRL that is re-read when it changes)."""

from __future__ import annotations

from collections.abc import Callable

from adapters.agencies import Agency
from gateway.pipeline.errors import Unauthenticated

__all__ = ["authenticate"]


def authenticate(
    peer_cert_pem: bytes | None,
    *,
    agency_of: Callable[[bytes], Agency],
    is_revoked: Callable[[bytes], bool],
) -> Agency:
    """The calling agency, or :class:`Unauthenticated` (no certificate, revoked, no agency)."""
    if not peer_cert_pem:
        raise Unauthenticated("CERTIFICATE_INVALID", "a client certificate is required (mTLS)")
    try:
        agency = agency_of(peer_cert_pem)
    except Exception:  # any parse or naming problem: refuse, never guess
        raise Unauthenticated("CERTIFICATE_INVALID", "the client certificate names no known agency") from None
    try:
        revoked = is_revoked(peer_cert_pem)
    except Exception:  # a CRL that cannot be read or verified fails closed
        raise Unauthenticated(
            "CERTIFICATE_INVALID", "the revocation list cannot be checked; refusing"
        ) from None
    if revoked:
        raise Unauthenticated("CERTIFICATE_REVOKED", "the client certificate is revoked")
    return agency
