"""Signed consent receipts: canonical JSON (RFC 8785, JCS) signed with Ed25519 (or SM2).

Each grant and each revocation yields a receipt the subject (or any agency) verifies offline with
the gateway's public receipt key (``dsgw consent receipt-key`` prints it as PEM).

Receipt file (UTF-8 JSON)::

    {
      "payload":   { ... the receipt ... },
      "signature": "<base64 (RFC 4648, padded) of the signature>",
      "key_id":    "<16 hex digits>"
    }

The signature is over the RFC 8785 canonical form of ``payload`` (so whitespace and key order in
the file do not matter, and any change of a value does). ``key_id`` is the first 8 bytes, in hex,
of SHA-256 of the raw public key (32 bytes for Ed25519, the 64-byte point ``x || y`` for SM2);
the payload repeats it together with the algorithm (``alg``: ``Ed25519`` or ``SM2-SM3``) and
canonicalization (``RFC8785``), so neither can be swapped without breaking the signature.
Integers in the payload stay within +-(2^53 - 1) (JCS) and times are RFC 3339 strings in UTC.

Payload (version ``dsgw-consent-receipt/1``): ``receipt_id`` (``<consent id>/<seq>``),
``issued_at``, ``issuer``, ``action`` (granted / revoked), ``event`` (the status event: seq,
status, at, recorded_at, channel, evidence_ref, note) and ``consent`` (the terms: consent id,
subject kind and id, consumers, scope, purposes with their names, validity, use limit, separate,
capture channel and evidence, notice version, granted_at), plus the purpose catalogue's version.

Verification fails closed: anything but a well-formed receipt whose signature verifies under the
given key raises :class:`~gateway.consent.errors.InvalidReceipt` (or a subclass), including
duplicate JSON keys, extra top-level keys, non-canonical base64, an unknown version or algorithm.

Algorithms:

* ``Ed25519`` (default): the 64-byte RFC 8032 signature. The signing key is an Ed25519 private key
  in PKCS#8 PEM, unencrypted, in a file of mode 0600 inside a 0700 directory
  (:func:`load_or_create_signing_key`, ``HOME/keys/receipt-ed25519.pem``); the public key is a
  PEM SubjectPublicKeyInfo.
* ``SM2-SM3`` (the ``gm`` suite): SM2 (GB/T 32918) over SM3(Z || canonical payload) with Z for the
  default signer id ``1234567812345678`` (GM/T 0009); the signature is DER ``SEQUENCE {r, s}``, as
  GmSSL writes it. The signing key (:func:`load_or_create_sm2_signing_key`,
  ``HOME/keys/receipt-sm2.pem``) is a SEC 1 ``EC PRIVATE KEY`` PEM on the SM2 curve (OID
  1.2.156.10197.1.301), the public key a PEM SubjectPublicKeyInfo (id-ecPublicKey, curve SM2,
  uncompressed point): the forms GmSSL and OpenSSL 3 read. ``cryptography`` has no SM2, so both
  are fixed-layout DER built and parsed here; SM2 itself comes from ``gmssl-pyx``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit.checkpoint import Sm2PrivateKey, Sm2PublicKey
from audit.errors import AuditError
from audit.suites import SM2
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
    "ALG_SM2",
    "CANONICALIZATION",
    "RECEIPT_KEY_FILES",
    "RECEIPT_VERSION",
    "ReceiptSigner",
    "VerifiedReceipt",
    "canonical_bytes",
    "check_receipt_path",
    "home_receipt_keys",
    "key_id_of",
    "load_or_create_signing_key",
    "load_or_create_sm2_signing_key",
    "load_public_key",
    "load_public_keys",
    "load_receipt_signer",
    "public_key_pem",
    "receipt_key_for",
    "receipt_payload",
    "verify_receipt",
    "verify_receipt_bytes",
    "write_receipt",
]

RECEIPT_VERSION = "dsgw-consent-receipt/1"
ALG = "Ed25519"
ALG_SM2 = "SM2-SM3"
RECEIPT_KEY_FILES = {"default": "receipt-ed25519.pem", "gm": "receipt-sm2.pem"}
"""The receipt signing key file (in ``HOME/keys``) of each suite."""
ReceiptPublicKey = Ed25519PublicKey | Sm2PublicKey
ReceiptPrivateKey = Ed25519PrivateKey | Sm2PrivateKey
CANONICALIZATION = "RFC8785"
_KEY_TYPE = {ALG: "Ed25519", ALG_SM2: "SM2"}
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
_FILE_KEYS = frozenset({"payload", "signature", "key_id"})
MAX_RECEIPT_BYTES = 1 << 20


def _ts(value: datetime) -> str:
    """RFC 3339 UTC with microseconds, e.g. ``2025-06-01T08:00:00.000000Z``."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _raw_public(public_key: ReceiptPublicKey) -> bytes:
    if isinstance(public_key, Sm2PublicKey):
        return public_key.raw
    return public_key.public_bytes_raw()


def alg_of(public_key: ReceiptPublicKey) -> str:
    """``"SM2-SM3"`` for an SM2 key, else ``"Ed25519"``."""
    return ALG_SM2 if isinstance(public_key, Sm2PublicKey) else ALG


def key_id_of(public_key: ReceiptPublicKey) -> str:
    """First 8 bytes, hex, of SHA-256 of the raw public key (Ed25519: 32 bytes; SM2: x || y)."""
    return hashlib.sha256(_raw_public(public_key)).digest()[:8].hex()


# SM2 key encodings (DER with a fixed layout: one curve, one point size). The OIDs are
# id-ecPublicKey (1.2.840.10045.2.1) and the SM2 curve (1.2.156.10197.1.301).
_OID_EC_PUBLIC_KEY = bytes.fromhex("06072a8648ce3d0201")
_OID_SM2 = bytes.fromhex("06082a811ccf5501822d")
_SM2_SPKI_PREFIX = bytes.fromhex("3059" + "3013") + _OID_EC_PUBLIC_KEY + _OID_SM2 + bytes.fromhex("03420004")
"""SubjectPublicKeyInfo ::= SEQUENCE { SEQUENCE { id-ecPublicKey, sm2 }, BIT STRING 04 || x || y }"""
_SM2_SEC1_HEAD = bytes.fromhex("307702010104" + "20")  # SEQUENCE { INTEGER 1, OCTET STRING d (32)
_SM2_SEC1_MID = bytes.fromhex("a00a") + _OID_SM2 + bytes.fromhex("a144034200" + "04")  # [0] [1]


def _pem(label: str, der: bytes) -> str:
    body = base64.b64encode(der).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"


def _unpem(data: bytes, label: str) -> bytes | None:
    """The DER inside the first ``label`` PEM block of ``data``, or ``None``."""
    text = data.decode("ascii", errors="replace")
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    start = text.find(begin)
    stop = text.find(end, start + 1)
    if start < 0 or stop < 0:
        return None
    try:
        return base64.b64decode("".join(text[start + len(begin) : stop].split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def sm2_public_key_der(public_key: Sm2PublicKey) -> bytes:
    """The SubjectPublicKeyInfo DER of an SM2 public key."""
    return _SM2_SPKI_PREFIX + public_key.raw


def sm2_private_key_pem(private_key: Sm2PrivateKey) -> bytes:
    """The SEC 1 ``EC PRIVATE KEY`` PEM of an SM2 key (with its public key)."""
    raw = private_key.raw
    return _pem("EC PRIVATE KEY", _SM2_SEC1_HEAD + raw[:32] + _SM2_SEC1_MID + raw[32:]).encode("ascii")


def _sm2_private_from_der(der: bytes) -> Sm2PrivateKey | None:
    head, mid = len(_SM2_SEC1_HEAD), len(_SM2_SEC1_MID)
    if len(der) != head + 32 + mid + 64 or not der.startswith(_SM2_SEC1_HEAD):
        return None
    if der[head + 32 : head + 32 + mid] != _SM2_SEC1_MID:
        return None
    key = Sm2PrivateKey(der[head : head + 32] + der[head + 32 + mid :])
    probe = b"dsgw: SM2 key pair check"
    try:
        if not SM2.verify(key.raw[32:], probe, SM2.sign(key.raw, probe)):
            return None
    except Exception:  # a missing backend, or one refusing the scalar or the point
        return None
    return key


def public_key_pem(public_key: ReceiptPublicKey) -> str:
    """The public key as a PEM SubjectPublicKeyInfo (Ed25519, or SM2 with the SM2 curve OID)."""
    if isinstance(public_key, Sm2PublicKey):
        return _pem("PUBLIC KEY", sm2_public_key_der(public_key))
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
    alg: str = ALG,
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
        "alg": alg,
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
    """Signs receipt payloads with one key: Ed25519, or SM2 (``alg`` ``SM2-SM3``)."""

    def __init__(self, private_key: ReceiptPrivateKey, *, issuer: str = "dsgw") -> None:
        self._key = private_key
        self.public_key: ReceiptPublicKey = private_key.public_key()
        self.key_id = key_id_of(self.public_key)
        self.alg = alg_of(self.public_key)
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
        if payload.get("alg") != self.alg:
            raise ValueError(f"payload names another algorithm than {self.alg}")
        message = canonical_bytes(payload)
        if isinstance(self._key, Sm2PrivateKey):
            signature = SM2.sign(self._key.raw, message)
        else:
            signature = self._key.sign(message)
        return {
            "payload": dict(payload),
            "signature": base64.b64encode(signature).decode("ascii"),
            "key_id": self.key_id,
        }

    def receipt(
        self, record: ConsentRecord, event: StatusEvent, catalogue: PurposeCatalogue = DEFAULT_CATALOGUE
    ) -> dict[str, Any]:
        """The signed receipt for ``event`` of ``record``."""
        payload = receipt_payload(
            record, event, key_id=self.key_id, issuer=self.issuer, catalogue=catalogue, alg=self.alg
        )
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


def verify_receipt_bytes(
    data: bytes, public_key: ReceiptPublicKey | Sequence[ReceiptPublicKey]
) -> VerifiedReceipt:
    """Verify a receipt file's bytes with ``public_key``, or with the one of several keys that the
    receipt's key_id names (:func:`receipt_key_for`); InvalidReceipt (fail closed) unless it
    verifies."""
    obj = parse_receipt_bytes(data)
    if not isinstance(public_key, (Ed25519PublicKey, Sm2PublicKey)):
        public_key = receipt_key_for(obj, public_key)
    return verify_receipt(obj, public_key)


def receipt_key_for(receipt: Any, keys: Sequence[ReceiptPublicKey]) -> ReceiptPublicKey:
    """The key of ``keys`` that should verify ``receipt`` (a parsed receipt file): the one its
    key_id names. ReceiptKeyMismatch when the receipt names a well-formed key id that none of
    several keys has; a malformed receipt (or a single key) is left to :func:`verify_receipt`,
    which says what is wrong."""
    if not keys:
        raise ReceiptKeyError("no receipt key to verify with")
    key_id = receipt.get("key_id") if isinstance(receipt, dict) else None
    for key in keys:
        if key_id_of(key) == key_id:
            return key
    if len(keys) > 1 and isinstance(key_id, str) and _KEY_ID.match(key_id):
        have = ", ".join(f"{_KEY_TYPE[alg_of(k)]} {key_id_of(k)}" for k in keys)
        raise ReceiptKeyMismatch(f"no receipt key has the id {key_id} (the keys are {have})")
    return keys[0]


def parse_receipt_bytes(data: bytes) -> Any:
    """A receipt file's bytes as JSON; InvalidReceipt for anything a receipt cannot be (too large,
    not UTF-8 JSON, duplicate keys, non-integer numbers, NaN)."""
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
    return obj


def verify_receipt(receipt: Any, public_key: ReceiptPublicKey) -> VerifiedReceipt:
    """Verify a parsed receipt file object against ``public_key`` (Ed25519 or SM2: the payload's
    ``alg`` must be the key's); InvalidReceipt unless it verifies."""
    alg = alg_of(public_key)
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
    claimed = payload.get("alg") if isinstance(payload, dict) else None
    if claimed in _KEY_TYPE and claimed != alg:  # the key's type is not the receipt's algorithm
        whose = "its key_id names" if key_id == key_id_of(public_key) else "the key is"
        raise ReceiptKeyMismatch(f"the receipt says alg {claimed} but {whose} an {_KEY_TYPE[alg]} key")
    size_ok = len(signature) == 64 if alg == ALG else 8 <= len(signature) <= 72
    if not size_ok or base64.b64encode(signature).decode("ascii") != sig_text:
        raise InvalidReceipt(f"receipt signature is not a canonical base64 {alg} signature")
    if not isinstance(payload, dict):
        raise InvalidReceipt("receipt payload is not an object")
    if payload.get("version") != RECEIPT_VERSION:
        raise InvalidReceipt("receipt payload has an unknown version")
    if payload.get("alg") != alg or payload.get("canonicalization") != CANONICALIZATION:
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
    if isinstance(public_key, Sm2PublicKey):
        valid = SM2.verify(public_key.raw, message, signature)
    else:
        try:
            public_key.verify(signature, message)
            valid = True
        except InvalidSignature:
            valid = False
    if not valid:
        raise ReceiptSignatureInvalid("receipt signature does not verify: the receipt was altered")
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


def _create_key_file(path: Path, pem: bytes) -> None:
    """Write a new private key file (mode 0600, parent directories 0700) unless one exists (then
    the existing one wins: concurrent creators end with the same key)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
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


def load_or_create_signing_key(path: Path, *, create: bool = True) -> Ed25519PrivateKey:
    """The Ed25519 signing key at ``path``; when there is none and ``create``, a new one written
    there (mode 0600, parent directories 0700; concurrent creators end with the same key)."""
    if path.exists():
        return _read_private(path)
    if not create:
        raise ReceiptKeyError(f"no receipt key at {path}")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _create_key_file(path, pem)
    return _read_private(path)


def _read_sm2_private(path: Path) -> Sm2PrivateKey:
    _check_private_file(path)
    der = _unpem(path.read_bytes(), "EC PRIVATE KEY")
    key = _sm2_private_from_der(der) if der is not None else None
    if key is None:
        raise ReceiptKeyError(f"receipt key {path} is not an SM2 EC PRIVATE KEY PEM")
    return key


def load_or_create_sm2_signing_key(path: Path, *, create: bool = True) -> Sm2PrivateKey:
    """The SM2 signing key at ``path`` (SEC 1 PEM); when there is none and ``create``, a new one
    written there (mode 0600, parent directories 0700). Needs ``gmssl-pyx``."""
    if path.exists():
        return _read_sm2_private(path)
    if not create:
        raise ReceiptKeyError(f"no receipt key at {path}")
    try:
        key = Sm2PrivateKey.generate()
    except AuditError as exc:
        raise ReceiptKeyError(str(exc)) from None
    _create_key_file(path, sm2_private_key_pem(key))
    return _read_sm2_private(path)


def receipt_suite(home: Path, suite: str | None = None) -> str:
    """The receipt suite of a home: ``suite`` when given, else ``"gm"`` if the home has an SM2
    receipt key (``keys/receipt-sm2.pem``), else ``"default"``."""
    if suite is not None:
        if suite not in RECEIPT_KEY_FILES:
            raise ReceiptKeyError(f"unknown suite {suite!r}")
        return suite
    return "gm" if (home / "keys" / RECEIPT_KEY_FILES["gm"]).exists() else "default"


def load_receipt_signer(
    home: Path, suite: str | None = None, *, create: bool = True, issuer: str = "dsgw"
) -> ReceiptSigner:
    """The receipt signer of a gateway home (:func:`receipt_suite`): Ed25519 from
    ``keys/receipt-ed25519.pem`` or SM2 from ``keys/receipt-sm2.pem``, made on first use."""
    chosen = receipt_suite(home, suite)
    path = home / "keys" / RECEIPT_KEY_FILES[chosen]
    if chosen == "gm":
        return ReceiptSigner(load_or_create_sm2_signing_key(path, create=create), issuer=issuer)
    return ReceiptSigner(load_or_create_signing_key(path, create=create), issuer=issuer)


def home_receipt_keys(home: Path) -> list[ReceiptPublicKey]:
    """The public keys of every receipt key the home holds (``keys/receipt-ed25519.pem``, then
    ``keys/receipt-sm2.pem``; none is made)."""
    keys: list[ReceiptPublicKey] = []
    for name in RECEIPT_KEY_FILES.values():
        path = home / "keys" / name
        if path.exists():
            keys.append(load_public_key(path))
    return keys


_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----\s*", re.DOTALL)


def load_public_keys(path: Path) -> list[ReceiptPublicKey]:
    """Every receipt public key of a PEM file (``dsgw consent receipt-key`` prints one block per
    key the home holds), in file order; see :func:`load_public_key`."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReceiptKeyError(f"cannot read key {path}: {exc.strerror or exc}") from None
    blocks = [m.group(0) for m in _PEM_BLOCK.finditer(data)]
    return (
        [_public_key_of(block, path) for block in blocks] if len(blocks) > 1 else [_public_key_of(data, path)]
    )


def load_public_key(path: Path) -> ReceiptPublicKey:
    """A receipt public key from a PEM file holding a public key (or the private key itself):
    Ed25519, or SM2 (SubjectPublicKeyInfo on the SM2 curve, or the SEC 1 private key)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReceiptKeyError(f"cannot read key {path}: {exc.strerror or exc}") from None
    return _public_key_of(data, path)


def _public_key_of(data: bytes, path: Path) -> ReceiptPublicKey:
    if b"-----BEGIN EC PRIVATE KEY-----" in data:
        der = _unpem(data, "EC PRIVATE KEY")
        private_sm2 = _sm2_private_from_der(der) if der is not None else None
        if private_sm2 is None:
            raise ReceiptKeyError(f"{path} is not an Ed25519 or SM2 key")
        return private_sm2.public_key()
    der = _unpem(data, "PUBLIC KEY")
    if der is not None and der.startswith(_SM2_SPKI_PREFIX):
        if len(der) != len(_SM2_SPKI_PREFIX) + 64:
            raise ReceiptKeyError(f"{path} is not a valid SM2 public key")
        return Sm2PublicKey(der[len(_SM2_SPKI_PREFIX) :])
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


def check_receipt_path(path: Path) -> None:
    """OSError (EEXIST, "exists and is not a regular file") when ``path`` exists as anything but a
    regular file: a device, FIFO, socket, directory or symbolic link is never replaced by a
    receipt (the atomic rename would put a file in its place)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise OSError(errno.EEXIST, "exists and is not a regular file", str(path))


def write_receipt(receipt: Mapping[str, Any], path: Path) -> None:
    """Write a receipt file (pretty JSON, UTF-8, atomic and durable replace). An existing ``path``
    that is not a regular file is refused (:func:`check_receipt_path`), not replaced."""
    from audit.layout import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    check_receipt_path(path)
    text = json.dumps(receipt, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    atomic_write(path, text.encode("utf-8"))
