"""Signed consent receipts: canonical JSON (RFC 8785, JCS) signed with Ed25519.

Each grant and each revocation yields a receipt the subject (or any agency) verifies offline with
the gateway's public receipt key (``dsgw consent receipt-key`` prints it as PEM).

Receipt file (UTF-8 JSON)::

    {
      "payload":   { ... the receipt ... },
      "signature": "<base64 (RFC 4648, padded) of the 64-byte Ed25519 signature>",
      "key_id":    "<16 hex digits>"
    }

The signature is over the RFC 8785 canonical form of ``payload`` (so whitespace and key order in
the file do not matter, and any change of a value does). ``key_id`` is the first 8 bytes, in hex,
of SHA-256 of the raw 32-byte public key; the payload repeats it together with the algorithm
(``alg``: ``Ed25519``) and canonicalization (``RFC8785``), so neither can be swapped without
breaking the signature. Integers in the payload stay within +-(2^53 - 1) (JCS) and times are
RFC 3339 strings in UTC.

Payload (version ``dsgw-consent-receipt/1``): ``receipt_id`` (``<consent id>/<seq>``),
``issued_at``, ``issuer``, ``action`` (granted / revoked), ``event`` (the status event: seq,
status, at, recorded_at, channel, evidence_ref, note) and ``consent`` (the terms: consent id,
subject kind and id, consumers, scope, purposes with their names, validity, use limit, separate,
capture channel and evidence, notice version, granted_at), plus the purpose catalogue's version.

Verification fails closed: anything but a well-formed receipt whose signature verifies under the
given key raises :class:`~gateway.consent.errors.InvalidReceipt` (or a subclass), including
duplicate JSON keys, extra top-level keys, non-canonical base64, an unknown version or algorithm.

Keys: the signing key is an Ed25519 private key in PKCS#8 PEM, unencrypted, in a file of mode
0600 inside a 0700 directory (:func:`load_or_create_signing_key`). The SM2 (``gm`` suite) variant
is not offered yet: the SM2 library the project knows (``gmssl-pyx``) is an optional C extension;
receipts say ``alg`` so that a second algorithm can join without changing the format.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.consent.errors import (
    InvalidReceipt,
    ReceiptKeyError,
    ReceiptKeyMismatch,
    ReceiptSignatureInvalid,
)
from gateway.consent.model import ConsentRecord, ConsentStatus, StatusEvent
from gateway.purposes import DEFAULT_CATALOGUE, PurposeCatalogue

__all__ = [
    "ALG",
    "CANONICALIZATION",
    "RECEIPT_VERSION",
    "ReceiptSigner",
    "VerifiedReceipt",
    "canonical_bytes",
    "key_id_of",
    "load_or_create_signing_key",
    "load_public_key",
    "public_key_pem",
    "receipt_payload",
    "verify_receipt",
    "verify_receipt_bytes",
    "write_receipt",
]

RECEIPT_VERSION = "dsgw-consent-receipt/1"
ALG = "Ed25519"
CANONICALIZATION = "RFC8785"
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
_FILE_KEYS = frozenset({"payload", "signature", "key_id"})
MAX_RECEIPT_BYTES = 1 << 20


def _ts(value: datetime) -> str:
    """RFC 3339 UTC with microseconds, e.g. ``2025-06-01T08:00:00.000000Z``."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """First 8 bytes, hex, of SHA-256 of the raw public key."""
    return hashlib.sha256(public_key.public_bytes_raw()).digest()[:8].hex()


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def canonical_bytes(payload: Mapping[str, Any]) -> bytes:
    """RFC 8785 canonical JSON of ``payload``."""
    return rfc8785.dumps(payload)


def receipt_payload(
    record: ConsentRecord,
    event: StatusEvent,
    *,
    key_id: str,
    issuer: str = "dsgw",
    catalogue: PurposeCatalogue = DEFAULT_CATALOGUE,
) -> dict[str, Any]:
    """The payload of the receipt for ``event`` (a grant or a revocation) of ``record``."""
    if event.status not in (ConsentStatus.GRANTED, ConsentStatus.REVOKED):
        raise ValueError("receipts are issued for grants and revocations")
    t = record.terms
    purposes = []
    for code in t.purposes:
        p = catalogue.get(code)
        purposes.append({"code": code, "name_zh": p.name_zh if p else "", "name_en": p.name_en if p else ""})
    return {
        "version": RECEIPT_VERSION,
        "alg": ALG,
        "canonicalization": CANONICALIZATION,
        "key_id": key_id,
        "receipt_id": f"{t.consent_id}/{event.seq}",
        "issued_at": _ts(event.recorded_at),
        "issuer": issuer,
        "action": event.status.value,
        "event": {
            "seq": event.seq,
            "status": event.status.value,
            "at": _ts(event.at),
            "recorded_at": _ts(event.recorded_at),
            "channel": event.channel.value if event.channel else None,
            "evidence_ref": event.evidence_ref,
            "note": event.note,
        },
        "consent": {
            "consent_id": t.consent_id,
            "subject": {"kind": t.subject_kind.value, "id": t.subject_id},
            "consumers": [c.value for c in t.consumers],
            "scope": [
                {"provider": i.provider.value, "dataset": i.dataset, "fields": list(i.fields)}
                for i in t.scope.items
            ],
            "purposes": purposes,
            "valid_from": _ts(t.valid_from),
            "valid_to": _ts(t.valid_to),
            "use_limit": t.use_limit,
            "separate": t.separate,
            "capture": {"channel": t.channel.value, "evidence_ref": t.evidence_ref},
            "notice_version": t.notice_version,
            "granted_at": _ts(t.granted_at),
        },
        "purpose_catalogue_version": catalogue.version,
    }


class ReceiptSigner:
    """Signs receipt payloads with one Ed25519 key."""

    def __init__(self, private_key: Ed25519PrivateKey, *, issuer: str = "dsgw") -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id_of(self.public_key)
        self.issuer = issuer

    @classmethod
    def from_file(cls, path: Path, *, create: bool = True, issuer: str = "dsgw") -> ReceiptSigner:
        return cls(load_or_create_signing_key(path, create=create), issuer=issuer)

    def public_pem(self) -> str:
        return public_key_pem(self.public_key)

    def sign_payload(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The receipt file object for ``payload``."""
        if payload.get("key_id") != self.key_id:
            raise ValueError("payload names another key id")
        signature = self._key.sign(canonical_bytes(payload))
        return {
            "payload": dict(payload),
            "signature": base64.b64encode(signature).decode("ascii"),
            "key_id": self.key_id,
        }

    def receipt(
        self, record: ConsentRecord, event: StatusEvent, catalogue: PurposeCatalogue = DEFAULT_CATALOGUE
    ) -> dict[str, Any]:
        """The signed receipt for ``event`` of ``record``."""
        payload = receipt_payload(record, event, key_id=self.key_id, issuer=self.issuer, catalogue=catalogue)
        return self.sign_payload(payload)


@dataclass(frozen=True, slots=True)
class VerifiedReceipt:
    payload: Mapping[str, Any]
    key_id: str
    action: str
    consent_id: str
    receipt_id: str


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidReceipt("receipt JSON has a duplicate key")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise InvalidReceipt(f"receipt JSON has a non-standard constant {name}")


def _no_floats(text: str) -> Any:
    raise InvalidReceipt("receipt JSON has a non-integer number (receipts carry none)")


def verify_receipt_bytes(data: bytes, public_key: Ed25519PublicKey) -> VerifiedReceipt:
    """Verify a receipt file's bytes; InvalidReceipt (fail closed) unless it verifies."""
    if len(data) > MAX_RECEIPT_BYTES:
        raise InvalidReceipt("receipt is too large")
    try:
        text = data.decode("utf-8")
        obj = json.loads(
            text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants, parse_float=_no_floats
        )
    except InvalidReceipt:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidReceipt("receipt is not valid UTF-8 JSON") from None
    return verify_receipt(obj, public_key)


def verify_receipt(receipt: Any, public_key: Ed25519PublicKey) -> VerifiedReceipt:
    """Verify a parsed receipt file object against ``public_key``; InvalidReceipt unless it verifies."""
    if not isinstance(receipt, dict) or set(receipt) != _FILE_KEYS:
        raise InvalidReceipt("receipt must be an object with exactly payload, signature and key_id")
    payload, sig_text, key_id = receipt["payload"], receipt["signature"], receipt["key_id"]
    if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
        raise InvalidReceipt("receipt key_id is not 16 lower-case hex digits")
    if not isinstance(sig_text, str):
        raise InvalidReceipt("receipt signature is not a string")
    try:
        signature = base64.b64decode(sig_text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidReceipt("receipt signature is not base64") from None
    if len(signature) != 64 or base64.b64encode(signature).decode("ascii") != sig_text:
        raise InvalidReceipt("receipt signature is not a canonical base64 Ed25519 signature")
    if not isinstance(payload, dict):
        raise InvalidReceipt("receipt payload is not an object")
    if payload.get("version") != RECEIPT_VERSION:
        raise InvalidReceipt("receipt payload has an unknown version")
    if payload.get("alg") != ALG or payload.get("canonicalization") != CANONICALIZATION:
        raise InvalidReceipt("receipt payload names another algorithm or canonicalization")
    if payload.get("key_id") != key_id:
        raise InvalidReceipt("receipt key_id differs from the payload's")
    expected = key_id_of(public_key)
    if key_id != expected:
        raise ReceiptKeyMismatch(f"receipt was signed by key {key_id}, not by {expected}")
    try:
        message = canonical_bytes(payload)
    except Exception:  # rfc8785 refuses big integers, non-finite floats, odd types
        raise InvalidReceipt("receipt payload cannot be canonicalized (RFC 8785)") from None
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        raise ReceiptSignatureInvalid("receipt signature does not verify: the receipt was altered") from None
    action, consent, receipt_id = payload.get("action"), payload.get("consent"), payload.get("receipt_id")
    if (
        action not in ("granted", "revoked")
        or not isinstance(consent, dict)
        or not isinstance(receipt_id, str)
    ):
        raise InvalidReceipt("receipt payload lacks action, consent or receipt_id")
    consent_id = consent.get("consent_id")
    if not isinstance(consent_id, str):
        raise InvalidReceipt("receipt payload lacks the consent id")
    return VerifiedReceipt(payload, key_id, action, consent_id, receipt_id)


# --- keys -------------------------------------------------------------------------------------


def _check_private_file(path: Path) -> None:
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        raise ReceiptKeyError(f"receipt key {path} is not a regular file")
    if mode & 0o077:
        raise ReceiptKeyError(
            f"receipt key {path} is readable by others (mode {stat.S_IMODE(mode):o}); chmod 600"
        )


def _read_private(path: Path) -> Ed25519PrivateKey:
    _check_private_file(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        raise ReceiptKeyError(f"receipt key {path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ReceiptKeyError(f"receipt key {path} is not an Ed25519 key")
    return key


def load_or_create_signing_key(path: Path, *, create: bool = True) -> Ed25519PrivateKey:
    """The Ed25519 signing key at ``path``; when there is none and ``create``, a new one written
    there (mode 0600, parent directories 0700; concurrent creators end with the same key)."""
    if path.exists():
        return _read_private(path)
    if not create:
        raise ReceiptKeyError(f"no receipt key at {path}")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd, tmp = tempfile.mkstemp(prefix=".receipt-key-", dir=path.parent)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, pem)
            os.fsync(fd)
            os.close(fd)
            os.link(tmp, path)  # atomic, fails if another process created the key first
        except FileExistsError:
            pass
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    except OSError as exc:
        raise ReceiptKeyError(f"cannot create receipt key {path}: {exc.strerror or exc}") from None
    return _read_private(path)


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file holding a public key (or the private key itself)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReceiptKeyError(f"cannot read key {path}: {exc.strerror or exc}") from None
    try:
        if b"PRIVATE KEY" in data:
            private = serialization.load_pem_private_key(data, password=None)
            if not isinstance(private, Ed25519PrivateKey):
                raise ReceiptKeyError(f"{path} is not an Ed25519 key")
            return private.public_key()
        public = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ReceiptKeyError(f"{path} is not a PEM Ed25519 key: {exc}") from None
    if not isinstance(public, Ed25519PublicKey):
        raise ReceiptKeyError(f"{path} is not an Ed25519 public key")
    return public


def write_receipt(receipt: Mapping[str, Any], path: Path) -> None:
    """Write a receipt file (pretty JSON, UTF-8, atomic replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(receipt, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".receipt-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
