"""Key management of the audit log: envelope encryption, rotation and crypto-shredding.

Three kinds of key:

* the **auditor key** (key-encryption key, KEK): an X25519 key pair. The gateway holds only the
  PUBLIC key, with which it wraps data keys; only holders of the PRIVATE key file unwrap them.
  So a gateway cannot read its own past log: only holders of the auditor key decrypt. Its key
  id (:func:`kek_id_for`) is the first 8 bytes, in hex, of SHA-256 of the raw public key.
* **data keys** (DEKs): 32 random bytes each, one (or more) per retention period of the log (a
  month ``2026-11`` by default; see :func:`period_of`), sealing the entries (:mod:`audit.seal`).
  The writer keeps the current DEK in memory only; on disk each DEK exists only wrapped, in the
  log's :class:`Keyring` file, next to its key id and period.
* the **blind-index key**: 32 random bytes keying the HMAC of :mod:`audit.blind_index`, separate
  from every encryption key. The gateway needs it in clear to write index terms, so it reads it
  from its own key file (:func:`generate_blind_index_key`), kept OUTSIDE the log directory; the
  keyring stores a copy wrapped for the auditors (context ``blind-index``), who need it to search.
  Whoever holds it can test guesses of indexed values (an identity number is guessable from a
  small space): it must be guarded like the auditor key.

Wrapping is behind the :class:`KeyProvider` protocol (``wrap`` / ``unwrap`` of a data key under a
context), which an HSM or a cloud KMS implements without ever handing out the KEK. The default
:class:`FileKeyProvider` uses HPKE (RFC 9180) base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
AES-256-GCM, single-shot with the wrap context as HPKE ``info`` (RFC 9180 section 8.1): a fresh
ephemeral key per wrap, nothing to keep secret on the gateway. The output is byte-compatible with
any RFC 9180 implementation (the tests check it against ``cryptography``'s own HPKE, where present).

Rotation never rewrites an entry: a new DEK for a new period (or on demand,
:meth:`Keyring.rotate`) only adds a keyring line; a new auditor key (:meth:`Keyring.rewrap`)
re-wraps every DEK and the blind-index key under the new public key (needs the old private key);
on a log's keyring that is the whole rotation, :func:`audit.layout.rotate_auditor_key`, which also
makes ``log.json`` name the new key. A keyring never takes a new DEK wrapped under another KEK than
the one its keys are wrapped under (a writer left with a retired public key fails closed).
Crypto-shredding (:meth:`Keyring.shred`) removes a period's wrapped DEKs from the keyring, leaving
a tombstone with the time; the entries' ciphertext, and so the Merkle tree over it, is unchanged,
but their payloads raise :class:`~audit.seal.KeyShredded` for ever.

Keyring file: JSON lines (a header line, then one line per wrapped DEK, blind-index key and
tombstone), rewritten atomically (temporary file, fsync, ``os.replace``, directory fsync) under an
advisory lock (``<keyring>.lock``), after which the previous version's bytes are overwritten with
zeros. Overwriting is defence in depth only: file-system journals, copy-on-write file systems,
SSD wear levelling and backups may keep old copies, which is why a DEK is only ever on disk
wrapped: a stray copy is unreadable without the auditor's private key, and after a KEK rotation
with the old private key destroyed, unreadable for good. Key files and the keyring are mode 0600.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, TypeAlias, cast, get_args, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from audit.errors import AuditError, DecryptionError, KeyFormatError
from audit.seal import DEK_SIZE, KeyShredded, UnknownKeyId, key_id_for

__all__ = [
    "BLIND_INDEX_KEY_SIZE",
    "AuditorKeyFiles",
    "BlindIndexKeyMismatch",
    "BlindIndexRecord",
    "DataKey",
    "FileKeyProvider",
    "Granularity",
    "InsecureKeyFile",
    "KekMismatch",
    "KeyProvider",
    "KeyProviderError",
    "KeyRecord",
    "Keyring",
    "KeyringError",
    "PeriodNotOver",
    "PrivateKeyRequired",
    "Tombstone",
    "UnwrapFailed",
    "WrappedKey",
    "blind_index_context",
    "blind_index_key_id",
    "dek_context",
    "generate_auditor_key",
    "generate_blind_index_key",
    "hpke_open",
    "hpke_seal",
    "kek_id_for",
    "keyring_kek_ids",
    "load_auditor_private_key",
    "load_auditor_public_key",
    "load_blind_index_key",
    "period_of",
]

BLIND_INDEX_KEY_SIZE = 32
KEYRING_VERSION = 1

Granularity: TypeAlias = Literal["year", "quarter", "month", "day"]
_PERIOD_PATTERNS: dict[str, re.Pattern[str]] = {
    "year": re.compile(r"\d{4}"),
    "quarter": re.compile(r"\d{4}-Q[1-4]"),
    "month": re.compile(r"\d{4}-(0[1-9]|1[0-2])"),
    "day": re.compile(r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"),
}


# --- errors -----------------------------------------------------------------------------------


class KeyProviderError(AuditError):
    """A key provider cannot wrap or unwrap as asked."""

    reason = "KEY_PROVIDER"


class PrivateKeyRequired(KeyProviderError):
    """Unwrapping needs the auditor's private key; this provider holds only the public key (the
    gateway's situation: it can seal, never read back)."""

    reason = "PRIVATE_KEY_REQUIRED"


class KekMismatch(KeyProviderError):
    """A wrapped key was wrapped under another auditor key than the provider's."""

    reason = "KEK_MISMATCH"


class UnwrapFailed(KeyProviderError, DecryptionError):
    """A wrapped key does not open: wrong private key, wrong context, or changed bytes."""

    reason = "UNWRAP_FAILED"


class KeyringError(AuditError):
    """A keyring file that is malformed, belongs to another log, or an operation it refuses."""

    reason = "KEYRING"


class PeriodNotOver(KeyringError):
    """Shredding refused: the period is the current or a future one (a writer may still be sealing
    with its data key)."""

    reason = "PERIOD_NOT_OVER"


class BlindIndexKeyMismatch(KeyringError):
    """The gateway's blind-index key is not the one the log's keyring records: its terms would not
    match the log's existing index."""

    reason = "BLIND_INDEX_KEY_MISMATCH"


class InsecureKeyFile(AuditError):
    """A secret key file readable or writable by group or others (want mode 0600)."""

    reason = "INSECURE_KEY_FILE"


# --- HPKE (RFC 9180) base mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM ----------

_KEM_ID, _KDF_ID, _AEAD_ID = 0x0020, 0x0001, 0x0002
_KEM_SUITE = b"KEM" + _KEM_ID.to_bytes(2, "big")
_HPKE_SUITE = b"HPKE" + _KEM_ID.to_bytes(2, "big") + _KDF_ID.to_bytes(2, "big") + _AEAD_ID.to_bytes(2, "big")
_ENC_SIZE = 32
_MODE_BASE = b"\x00"


def _labeled_extract(suite: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return hmac.digest(salt, b"HPKE-v1" + suite + label + ikm, "sha256")


def _labeled_expand(suite: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    labeled = length.to_bytes(2, "big") + b"HPKE-v1" + suite + label + info
    return HKDFExpand(hashes.SHA256(), length, labeled).derive(prk)


def _shared_secret(dh: bytes, enc: bytes, recipient: bytes) -> bytes:
    prk = _labeled_extract(_KEM_SUITE, b"", b"eae_prk", dh)
    return _labeled_expand(_KEM_SUITE, prk, b"shared_secret", enc + recipient, 32)


def _key_schedule(shared_secret: bytes, info: bytes) -> tuple[bytes, bytes]:
    psk_id_hash = _labeled_extract(_HPKE_SUITE, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(_HPKE_SUITE, b"", b"info_hash", info)
    context = _MODE_BASE + psk_id_hash + info_hash
    secret = _labeled_extract(_HPKE_SUITE, shared_secret, b"secret", b"")
    key = _labeled_expand(_HPKE_SUITE, secret, b"key", context, 32)
    nonce = _labeled_expand(_HPKE_SUITE, secret, b"base_nonce", context, 12)
    return key, nonce


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def hpke_seal(recipient: X25519PublicKey, info: bytes, plaintext: bytes) -> bytes:
    """RFC 9180 single-shot SealBase (empty aad): ``enc (32 bytes) || ciphertext || tag``."""
    ephemeral = X25519PrivateKey.generate()
    enc = _raw_public(ephemeral.public_key())
    shared = _shared_secret(ephemeral.exchange(recipient), enc, _raw_public(recipient))
    key, nonce = _key_schedule(shared, info)
    return enc + AESGCM(key).encrypt(nonce, plaintext, b"")


def hpke_open(recipient: X25519PrivateKey, info: bytes, sealed: bytes) -> bytes:
    """RFC 9180 single-shot OpenBase of :func:`hpke_seal`'s output; raises ``InvalidTag`` or
    ``ValueError`` when it does not open."""
    if len(sealed) < _ENC_SIZE + 16:
        raise ValueError("HPKE ciphertext too short")
    enc = sealed[:_ENC_SIZE]
    dh = recipient.exchange(X25519PublicKey.from_public_bytes(enc))
    shared = _shared_secret(dh, enc, _raw_public(recipient.public_key()))
    key, nonce = _key_schedule(shared, info)
    return AESGCM(key).decrypt(nonce, sealed[_ENC_SIZE:], b"")


# --- key providers ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key wrapped under a KEK: the KEK's id, the wrapping algorithm, and the provider's
    opaque output (for :class:`FileKeyProvider`: HPKE ``enc || ciphertext || tag``)."""

    kek_id: str
    algorithm: str
    blob: bytes

    def to_json(self) -> dict[str, str]:
        return {
            "kek_id": self.kek_id,
            "alg": self.algorithm,
            "wrapped": base64.b64encode(self.blob).decode("ascii"),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WrappedKey:
        return cls(
            kek_id=_str(data, "kek_id"),
            algorithm=_str(data, "alg"),
            blob=base64.b64decode(_str(data, "wrapped"), validate=True),
        )

    def __repr__(self) -> str:
        return f"WrappedKey(kek_id={self.kek_id!r}, algorithm={self.algorithm!r}, {len(self.blob)} bytes)"


@runtime_checkable
class KeyProvider(Protocol):
    """Wraps and unwraps data keys under a key-encryption key it never hands out (a key file, an
    HSM, a cloud KMS). ``context`` binds a wrapped key to its use: unwrapping with another context
    fails. ``unwrap`` raises :class:`PrivateKeyRequired` when the provider can only wrap,
    :class:`KekMismatch` for a key wrapped under another KEK and :class:`UnwrapFailed` otherwise."""

    @property
    def kek_id(self) -> str: ...

    def wrap(self, data_key: bytes, context: bytes) -> WrappedKey: ...

    def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes: ...


def kek_id_for(public_key: X25519PublicKey) -> str:
    """The auditor key's id: the first 8 bytes of SHA-256 of its raw public key, in hex."""
    return hashlib.sha256(_raw_public(public_key)).digest()[:8].hex()


class FileKeyProvider:
    """The default :class:`KeyProvider`: an auditor X25519 key pair from key files.

    Built from the public key alone (the gateway: ``from_public_key_file``) it wraps but cannot
    unwrap; built from the private key (an auditor: ``from_private_key_file``) it does both.
    """

    algorithm: ClassVar[str] = "hpke-base-x25519-hkdf-sha256-aes-256-gcm"

    def __init__(self, public_key: X25519PublicKey, private_key: X25519PrivateKey | None = None) -> None:
        if private_key is not None and _raw_public(private_key.public_key()) != _raw_public(public_key):
            raise KeyFormatError("the auditor private key does not match the public key")
        self._public = public_key
        self._private = private_key
        self._kek_id = kek_id_for(public_key)

    @classmethod
    def from_public_key_file(cls, path: str | os.PathLike[str]) -> FileKeyProvider:
        return cls(load_auditor_public_key(path))

    @classmethod
    def from_private_key_file(
        cls,
        path: str | os.PathLike[str],
        *,
        passphrase: bytes | None = None,
        check_permissions: bool = True,
    ) -> FileKeyProvider:
        private = load_auditor_private_key(path, passphrase=passphrase, check_permissions=check_permissions)
        return cls(private.public_key(), private)

    @property
    def kek_id(self) -> str:
        return self._kek_id

    @property
    def public_key(self) -> X25519PublicKey:
        return self._public

    @property
    def can_unwrap(self) -> bool:
        return self._private is not None

    def wrap(self, data_key: bytes, context: bytes) -> WrappedKey:
        return WrappedKey(self._kek_id, self.algorithm, hpke_seal(self._public, context, data_key))

    def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes:
        if wrapped.kek_id != self._kek_id:
            raise KekMismatch(
                f"key wrapped under auditor key {wrapped.kek_id}, this is auditor key {self._kek_id}"
            )
        if self._private is None:
            raise PrivateKeyRequired(
                f"auditor key {self._kek_id}: only the public key is loaded; unwrapping needs the private key"
            )
        if wrapped.algorithm != self.algorithm:
            raise UnwrapFailed(f"unsupported wrapping algorithm {wrapped.algorithm!r}")
        try:
            return hpke_open(self._private, context, wrapped.blob)
        except (InvalidTag, ValueError):
            raise UnwrapFailed(
                f"wrapped key does not open with auditor key {self._kek_id} (wrong context or changed bytes)"
            ) from None

    def __repr__(self) -> str:
        side = "private" if self._private is not None else "public only"
        return f"FileKeyProvider(kek_id={self._kek_id!r}, {side})"


# --- key files --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditorKeyFiles:
    """What :func:`generate_auditor_key` wrote: the private and public key files and the key id."""

    private_path: Path
    public_path: Path
    kek_id: str


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_secret(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write ``data`` to ``path`` with mode 0600, durably and atomically. Without ``overwrite``,
    :class:`FileExistsError` if ``path`` exists (checked atomically)."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path exists
            os.unlink(tmp)
        _fsync_dir(directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read_secret(path: Path, *, check_permissions: bool) -> bytes:
    with open(path, "rb") as handle:
        if check_permissions:
            mode = os.fstat(handle.fileno()).st_mode
            if stat.S_IMODE(mode) & 0o077:
                raise InsecureKeyFile(
                    f"{path}: mode {stat.S_IMODE(mode):04o} lets group or others access a secret key; "
                    "want 0600 (chmod 600)"
                )
        return handle.read()


def generate_auditor_key(
    path: str | os.PathLike[str],
    *,
    key_format: Literal["pem", "raw"] = "pem",
    passphrase: bytes | None = None,
    overwrite: bool = False,
) -> AuditorKeyFiles:
    """Generate an auditor X25519 key pair: the private key at ``path`` and the public key at
    ``path + ".pub"``, both mode 0600. PEM (PKCS#8 private key, optionally encrypted with
    ``passphrase``; SubjectPublicKeyInfo public key) or raw (32 bytes each). Refuses to replace
    existing files unless ``overwrite``. Give the ``.pub`` file to the gateways and keep the
    private key with the auditors."""
    private_path = Path(path)
    public_path = private_path.with_name(private_path.name + ".pub")
    key = X25519PrivateKey.generate()
    if key_format == "pem":
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
        )
        private_bytes = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        public_bytes = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    elif key_format == "raw":
        if passphrase:
            raise KeyFormatError("a raw key file cannot be passphrase-protected; use key_format='pem'")
        private_bytes = key.private_bytes_raw()
        public_bytes = _raw_public(key.public_key())
    else:
        raise KeyFormatError(f"unknown key format {key_format!r}; use 'pem' or 'raw'")
    if not overwrite:
        for existing in (private_path, public_path):
            if existing.exists():
                raise FileExistsError(f"{existing} exists; pass overwrite=True to replace it")
    _write_secret(private_path, private_bytes, overwrite=overwrite)
    _write_secret(public_path, public_bytes, overwrite=overwrite)
    return AuditorKeyFiles(private_path, public_path, kek_id_for(key.public_key()))


def load_auditor_public_key(path: str | os.PathLike[str]) -> X25519PublicKey:
    """The auditor public key from a PEM (SubjectPublicKeyInfo) or raw (32-byte) file."""
    data = Path(path).read_bytes()
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        elif len(data) == 32:
            key = X25519PublicKey.from_public_bytes(data)
        else:
            raise KeyFormatError(f"{path}: neither a PEM public key nor 32 raw bytes ({len(data)} bytes)")
    except ValueError as exc:
        raise KeyFormatError(f"{path}: not an X25519 public key ({exc})") from None
    if not isinstance(key, X25519PublicKey):
        raise KeyFormatError(f"{path}: a {type(key).__name__}, not an X25519 public key")
    return key


def load_auditor_private_key(
    path: str | os.PathLike[str], *, passphrase: bytes | None = None, check_permissions: bool = True
) -> X25519PrivateKey:
    """The auditor private key from a PEM (PKCS#8) or raw (32-byte) file; refuses a file that group
    or others can access (:class:`InsecureKeyFile`) unless ``check_permissions`` is false."""
    data = _read_secret(Path(path), check_permissions=check_permissions)
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(data, password=passphrase)
        elif len(data) == 32:
            key = X25519PrivateKey.from_private_bytes(data)
        else:
            raise KeyFormatError(f"{path}: neither a PEM private key nor 32 raw bytes ({len(data)} bytes)")
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"{path}: cannot load the X25519 private key ({exc})") from None
    if not isinstance(key, X25519PrivateKey):
        raise KeyFormatError(f"{path}: a {type(key).__name__}, not an X25519 private key")
    return key


def generate_blind_index_key(path: str | os.PathLike[str], *, overwrite: bool = False) -> bytes:
    """Write a new 32-byte blind-index key (raw) to ``path``, mode 0600, and return it. Keep the file
    with the gateway's secrets, never in the log directory."""
    key = os.urandom(BLIND_INDEX_KEY_SIZE)
    _write_secret(Path(path), key, overwrite=overwrite)
    return key


def load_blind_index_key(path: str | os.PathLike[str], *, check_permissions: bool = True) -> bytes:
    """The blind-index key from its raw 32-byte file (:class:`InsecureKeyFile` if group/other can
    access it)."""
    key = _read_secret(Path(path), check_permissions=check_permissions)
    if len(key) != BLIND_INDEX_KEY_SIZE:
        raise KeyFormatError(
            f"{path}: a blind-index key file holds {BLIND_INDEX_KEY_SIZE} raw bytes, not {len(key)}"
        )
    return key


def blind_index_key_id(key: bytes) -> bytes:
    """The blind-index key's 8-byte id (a key check value: HMAC-SHA256(key, label)[:8])."""
    return hmac.digest(key, b"dsgw-audit-v1 blind-index key id", "sha256")[:8]


# --- periods ----------------------------------------------------------------------------------


def period_of(when: datetime, granularity: Granularity = "month") -> str:
    """The retention period (UTC) containing ``when``: ``2026`` (year), ``2026-Q4`` (quarter),
    ``2026-11`` (month) or ``2026-11-03`` (day). Periods of one granularity sort as strings."""
    if when.tzinfo is None:
        raise ValueError("period_of needs a time-zone-aware datetime")
    t = when.astimezone(UTC)
    if granularity == "year":
        return f"{t.year:04d}"
    if granularity == "quarter":
        return f"{t.year:04d}-Q{(t.month - 1) // 3 + 1}"
    if granularity == "month":
        return f"{t.year:04d}-{t.month:02d}"
    if granularity == "day":
        return t.date().isoformat()
    raise ValueError(f"unknown period granularity {granularity!r}; one of {', '.join(get_args(Granularity))}")


def _check_period(period: str, granularity: str) -> None:
    if not _PERIOD_PATTERNS[granularity].fullmatch(period):
        raise KeyringError(f"{period!r} is not a {granularity} period")


# --- contexts ---------------------------------------------------------------------------------


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def dek_context(log_id: str, key_id: bytes, period: str) -> bytes:
    """The wrap context of a data key: binds it to its log, key id and period, so a wrapped key
    copied to another log or relabelled with another period does not unwrap."""
    return b"dsgw-audit-v1 dek" + _lp(log_id.encode()) + key_id + _lp(period.encode())


def blind_index_context(log_id: str, key_id: bytes) -> bytes:
    """The wrap context of the log's blind-index key."""
    return b"dsgw-audit-v1 blind-index" + _lp(log_id.encode()) + key_id


# --- keyring ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class DataKey:
    """A data key in clear (writer side: the current DEK, kept in memory only)."""

    key_id: bytes
    period: str
    key: bytes

    def __repr__(self) -> str:
        return f"DataKey(key_id={self.key_id.hex()!r}, period={self.period!r})"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A keyring line: one wrapped DEK, its id, period and creation time (ISO 8601, UTC)."""

    key_id: bytes
    period: str
    created: str
    wrapped: WrappedKey


@dataclass(frozen=True, slots=True)
class Tombstone:
    """What remains of a shredded DEK: its id, period, creation and shredding times."""

    key_id: bytes
    period: str
    created: str
    shredded_at: str


@dataclass(frozen=True, slots=True)
class BlindIndexRecord:
    """The log's blind-index key, wrapped for the auditors, and its id."""

    key_id: bytes
    created: str
    wrapped: WrappedKey


@dataclass
class _State:
    log_id: str
    granularity: Granularity
    keys: dict[bytes, KeyRecord] = field(default_factory=dict)
    tombstones: dict[bytes, Tombstone] = field(default_factory=dict)
    blind_index: BlindIndexRecord | None = None

    def lines(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [
            {
                "type": "keyring",
                "version": KEYRING_VERSION,
                "log_id": self.log_id,
                "granularity": self.granularity,
            }
        ]
        if self.blind_index is not None:
            record = self.blind_index
            out.append(
                {"type": "blind_index_key", "key_id": record.key_id.hex(), "created": record.created}
                | record.wrapped.to_json()
            )
        for key in self.keys.values():
            out.append(
                {"type": "dek", "key_id": key.key_id.hex(), "period": key.period, "created": key.created}
                | key.wrapped.to_json()
            )
        for tomb in self.tombstones.values():
            out.append(
                {
                    "type": "tombstone",
                    "key_id": tomb.key_id.hex(),
                    "period": tomb.period,
                    "created": tomb.created,
                    "shredded_at": tomb.shredded_at,
                }
            )
        return out

    def kek_ids(self) -> set[str]:
        kek_ids = {record.wrapped.kek_id for record in self.keys.values()}
        if self.blind_index is not None:
            kek_ids.add(self.blind_index.wrapped.kek_id)
        return kek_ids

    def to_bytes(self) -> bytes:
        return b"".join(
            json.dumps(line, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"
            for line in self.lines()
        )


def _str(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise KeyringError(f"keyring line lacks the string {key!r}")
    return value


def _key_id(data: dict[str, Any]) -> bytes:
    try:
        key_id = bytes.fromhex(_str(data, "key_id"))
    except ValueError:
        raise KeyringError("keyring line has a malformed key_id") from None
    if len(key_id) != 8:
        raise KeyringError("keyring line has a key_id that is not 8 bytes")
    return key_id


def _parse(data: bytes, path: Path) -> _State:
    lines = data.decode("utf-8").splitlines()
    state: _State | None = None
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
            if not isinstance(line, dict):
                raise KeyringError("not a JSON object")
            kind = line.get("type")
            if state is None:
                if kind != "keyring" or line.get("version") != KEYRING_VERSION:
                    raise KeyringError(f"not a version {KEYRING_VERSION} keyring header")
                granularity = _str(line, "granularity")
                if granularity not in get_args(Granularity):
                    raise KeyringError(f"unknown granularity {granularity!r}")
                state = _State(log_id=_str(line, "log_id"), granularity=cast(Granularity, granularity))
            elif kind == "dek":
                record = KeyRecord(
                    _key_id(line), _str(line, "period"), _str(line, "created"), WrappedKey.from_json(line)
                )
                state.keys[record.key_id] = record
            elif kind == "tombstone":
                tomb = Tombstone(
                    _key_id(line), _str(line, "period"), _str(line, "created"), _str(line, "shredded_at")
                )
                state.tombstones[tomb.key_id] = tomb
            elif kind == "blind_index_key":
                state.blind_index = BlindIndexRecord(
                    _key_id(line), _str(line, "created"), WrappedKey.from_json(line)
                )
            else:
                raise KeyringError(f"unknown line type {kind!r}")
        except KeyringError as exc:
            raise KeyringError(f"{path}:{number}: {exc}") from None
        except (ValueError, TypeError) as exc:
            raise KeyringError(f"{path}:{number}: malformed keyring line ({type(exc).__name__})") from None
    if state is None:
        raise KeyringError(f"{path}: empty keyring file")
    return state


def keyring_kek_ids(path: str | os.PathLike[str]) -> set[str]:
    """The ids of the auditor keys that the keyring file at ``path`` wraps its live keys under
    (no key needed): :meth:`Keyring.kek_ids` without opening a :class:`Keyring`."""
    target = Path(path)
    return _parse(target.read_bytes(), target).kek_ids()


def _iso(when: datetime) -> str:
    if when.tzinfo is None:
        raise ValueError("times must be time-zone aware")
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Keyring:
    """The data keys of one log, wrapped under the auditor key, in a JSON-lines file.

    Writer (gateway, public key only): :meth:`current` gives the DEK for the current period,
    creating, wrapping and recording a new one the first time in each period and after each
    restart (the writer cannot unwrap earlier DEKs, and need not); :meth:`rotate` forces a new
    one. Reader (auditor, private key): :meth:`data_key` unwraps a DEK by id (a
    :class:`~audit.seal.DataKeySource` for :func:`~audit.seal.open_sealed`), raising
    :class:`~audit.seal.KeyShredded` or :class:`~audit.seal.UnknownKeyId`. Either side:
    :meth:`shred` (retention), :meth:`rewrap` (auditor key rotation, needs the old private key).

    Every change re-reads the file under an exclusive lock before rewriting it, so a writer and
    an auditor's retention job may share a keyring.
    """

    def __init__(self, path: Path, provider: KeyProvider, state: _State) -> None:
        """Use :meth:`create`, :meth:`open` or :meth:`open_or_create`."""
        self._path = path
        self._provider = provider
        self._state = state
        self._current: DataKey | None = None
        self._cache: dict[bytes, bytes] = {}

    # construction

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        provider: KeyProvider,
        *,
        log_id: str,
        granularity: Granularity = "month",
    ) -> Keyring:
        """A new, empty keyring file for log ``log_id`` (:class:`FileExistsError` if one exists)."""
        if granularity not in get_args(Granularity):
            raise ValueError(f"unknown period granularity {granularity!r}")
        if not log_id:
            raise ValueError("a log id is not empty")
        target = Path(path)
        state = _State(log_id=log_id, granularity=granularity)
        _write_secret(target, state.to_bytes(), overwrite=False)
        return cls(target, provider, state)

    @classmethod
    def open(cls, path: str | os.PathLike[str], provider: KeyProvider, *, log_id: str) -> Keyring:
        """The keyring file of log ``log_id`` (:class:`KeyringError` if it is another log's)."""
        target = Path(path)
        state = _parse(target.read_bytes(), target)
        if state.log_id != log_id:
            raise KeyringError(f"{target} is the keyring of log {state.log_id!r}, not {log_id!r}")
        return cls(target, provider, state)

    @classmethod
    def open_or_create(
        cls,
        path: str | os.PathLike[str],
        provider: KeyProvider,
        *,
        log_id: str,
        granularity: Granularity = "month",
    ) -> Keyring:
        try:
            return cls.open(path, provider, log_id=log_id)
        except FileNotFoundError:
            pass
        try:
            return cls.create(path, provider, log_id=log_id, granularity=granularity)
        except FileExistsError:  # created meanwhile by another process
            return cls.open(path, provider, log_id=log_id)

    # properties

    @property
    def path(self) -> Path:
        return self._path

    @property
    def log_id(self) -> str:
        return self._state.log_id

    @property
    def granularity(self) -> Granularity:
        return self._state.granularity

    @property
    def provider(self) -> KeyProvider:
        return self._provider

    def period_of(self, when: datetime) -> str:
        return period_of(when, self._state.granularity)

    def records(self) -> list[KeyRecord]:
        """The live (unshredded) DEK records, oldest first."""
        return list(self._state.keys.values())

    def tombstones(self) -> list[Tombstone]:
        return list(self._state.tombstones.values())

    def tombstone(self, key_id: bytes) -> Tombstone | None:
        """The tombstone of the data key ``key_id``, if it was shredded."""
        return self._state.tombstones.get(key_id)

    def periods(self) -> list[str]:
        """The periods with live DEKs, sorted."""
        return sorted({r.period for r in self._state.keys.values()})

    def kek_ids(self) -> set[str]:
        """The ids of the auditor keys (KEKs) that the live data keys and the blind-index key are
        wrapped under: one after :meth:`rewrap`, empty for an empty keyring."""
        return self._state.kek_ids()

    def reload(self) -> None:
        """Re-read the keyring file (another process may have added or shredded keys)."""
        state = _parse(self._path.read_bytes(), self._path)
        self._state = state
        for key_id in list(self._cache):
            if key_id not in state.keys:
                del self._cache[key_id]

    # writer side

    def current(self, now: datetime | None = None) -> DataKey:
        """The DEK to seal with at ``now`` (default: the current time): the one this object made
        for ``now``'s period, or a new one (recorded in the keyring before it is returned)."""
        when = now or datetime.now(UTC)
        period = self.period_of(when)
        current = self._current
        if current is not None and current.period == period:
            return current
        return self._new_key(period, when)

    def rotate(self, now: datetime | None = None) -> DataKey:
        """A new DEK for ``now``'s period, replacing the current one; earlier entries keep theirs."""
        when = now or datetime.now(UTC)
        return self._new_key(self.period_of(when), when)

    def _new_key(self, period: str, when: datetime) -> DataKey:
        dek = os.urandom(DEK_SIZE)
        key_id = key_id_for(dek)
        wrapped = self._provider.wrap(dek, dek_context(self.log_id, key_id, period))
        record = KeyRecord(key_id, period, _iso(when), wrapped)

        def add(state: _State) -> None:
            if key_id in state.keys or key_id in state.tombstones:  # pragma: no cover - 2^-64
                raise KeyringError("data key id collision; retry")
            others = state.kek_ids() - {wrapped.kek_id}
            if others:  # the auditor key was rotated: never wrap a new key under the retired one
                raise KekMismatch(
                    f"the keyring of log {state.log_id!r} is wrapped under auditor key "
                    f"{', '.join(sorted(others))}, not {wrapped.kek_id}: give this writer the current "
                    "auditor public key"
                )
            state.keys[key_id] = record

        self._mutate(add)
        self._current = DataKey(key_id, period, dek)
        return self._current

    def set_blind_index_key(self, key: bytes, *, now: datetime | None = None) -> None:
        """Record the log's blind-index key, wrapped for the auditors, the first time; afterwards
        check that ``key`` is the recorded one (:class:`BlindIndexKeyMismatch` otherwise)."""
        if len(key) != BLIND_INDEX_KEY_SIZE:
            raise KeyFormatError(f"a blind-index key is {BLIND_INDEX_KEY_SIZE} bytes, got {len(key)}")
        key_id = blind_index_key_id(key)

        def check(record: BlindIndexRecord) -> None:
            if record.key_id != key_id:
                raise BlindIndexKeyMismatch(
                    f"blind-index key {key_id.hex()} is not the log's blind-index key {record.key_id.hex()}"
                )

        existing = self._state.blind_index
        if existing is not None:
            check(existing)
            return
        wrapped = self._provider.wrap(key, blind_index_context(self.log_id, key_id))
        record = BlindIndexRecord(key_id, _iso(now or datetime.now(UTC)), wrapped)

        def put(state: _State) -> None:
            if state.blind_index is not None:
                check(state.blind_index)
            else:
                state.blind_index = record

        self._mutate(put)

    # reader side

    def data_key(self, key_id: bytes) -> bytes:
        """The DEK with id ``key_id``, unwrapped by the provider (needs the auditor private key).

        Unwrapped DEKs are cached in this object: a shredding done by another process takes effect
        here at the next :meth:`reload` (or a new :class:`Keyring`); :meth:`forget` drops them."""
        cached = self._cache.get(key_id)
        if cached is not None:
            return cached
        state = self._state
        if key_id not in state.keys and key_id not in state.tombstones:
            self.reload()
            state = self._state
        tomb = state.tombstones.get(key_id)
        if tomb is not None:
            raise KeyShredded(
                f"data key {key_id.hex()} of period {tomb.period} was shredded at {tomb.shredded_at}",
                key_id=key_id,
                period=tomb.period,
                shredded_at=tomb.shredded_at,
            )
        record = state.keys.get(key_id)
        if record is None:
            raise UnknownKeyId(
                f"no data key {key_id.hex()} in the keyring of log {self.log_id!r}", key_id=key_id
            )
        dek = self._provider.unwrap(record.wrapped, dek_context(self.log_id, key_id, record.period))
        if len(dek) != DEK_SIZE or key_id_for(dek) != key_id:
            raise KeyringError(f"keyring record {key_id.hex()} unwraps to a key of another id")
        self._cache[key_id] = dek
        return dek

    def blind_index_key(self) -> bytes:
        """The log's blind-index key, unwrapped (needs the auditor private key), to search the log."""
        record = self._state.blind_index
        if record is None:
            self.reload()
            record = self._state.blind_index
        if record is None:
            raise KeyringError(f"the keyring of log {self.log_id!r} records no blind-index key")
        key = self._provider.unwrap(record.wrapped, blind_index_context(self.log_id, record.key_id))
        if blind_index_key_id(key) != record.key_id:
            raise KeyringError("the blind-index key record unwraps to a key of another id")
        return key

    def forget(self) -> None:
        """Drop the unwrapped DEKs this object caches (and its current DEK)."""
        self._cache.clear()
        self._current = None

    # retention and rotation

    def shred(self, period: str, *, now: datetime | None = None, force: bool = False) -> list[bytes]:
        """Crypto-shred ``period``: remove its wrapped DEKs from the keyring (recording a tombstone
        with the time each) and overwrite the old file. Returns the shredded key ids (none if the
        period had no live keys). Entries sealed under them stay in the log and still verify, but
        their payloads are gone for good. Refuses the current or a future period (the writer may
        still be sealing with its DEK) unless ``force``."""
        when = now or datetime.now(UTC)
        _check_period(period, self.granularity)
        if not force and period >= self.period_of(when):
            raise PeriodNotOver(f"refusing to shred period {period}: it is not over yet (pass force=True)")
        shredded_at = _iso(when)
        shredded: list[bytes] = []

        def drop(state: _State) -> None:
            shredded.clear()
            for key_id, record in list(state.keys.items()):
                if record.period == period:
                    del state.keys[key_id]
                    state.tombstones[key_id] = Tombstone(key_id, record.period, record.created, shredded_at)
                    shredded.append(key_id)

        self._mutate(drop)
        for key_id in shredded:
            self._cache.pop(key_id, None)
            if self._current is not None and self._current.key_id == key_id:
                self._current = None
        return shredded

    def rewrap(
        self,
        new_provider: KeyProvider,
        *,
        old_providers: Sequence[KeyProvider] = (),
        update_log: bool = True,
    ) -> int:
        """Auditor-key rotation: re-wrap every live DEK and the blind-index key under
        ``new_provider``'s KEK, without touching any entry. Keys wrapped under the current
        provider's KEK (or one of ``old_providers``) are unwrapped with it, which needs its private
        key. Afterwards this keyring uses ``new_provider``. Returns how many keys were re-wrapped.

        When this is a log's keyring (a ``log.json`` next to it) and ``update_log`` (the default),
        this is the whole rotation of the log's auditor key,
        :func:`audit.layout.rotate_auditor_key`: under the log's writer lock
        (:class:`~audit.layout.LogLocked` while a gateway has it open), the keyring first, then
        ``log.json`` names the new KEK."""
        if update_log and (self._path.parent / "log.json").is_file():
            from audit.layout import rotate_auditor_key  # audit.layout imports this module

            done = rotate_auditor_key(
                self._path.parent, new_provider, old_providers=(self._provider, *old_providers)
            )
            self._provider = new_provider
            self.reload()
            return done.rewrapped
        providers = {p.kek_id: p for p in (self._provider, *old_providers)}
        count = 0

        def unwrapper(kek_id: str) -> KeyProvider:
            provider = providers.get(kek_id)
            if provider is None:
                raise KekMismatch(
                    f"a key is wrapped under auditor key {kek_id}, and no provider for it was given"
                )
            return provider

        def rewrap_all(state: _State) -> None:
            nonlocal count
            count = 0
            for key_id, record in list(state.keys.items()):
                if record.wrapped.kek_id == new_provider.kek_id:
                    continue
                context = dek_context(state.log_id, key_id, record.period)
                dek = unwrapper(record.wrapped.kek_id).unwrap(record.wrapped, context)
                state.keys[key_id] = replace(record, wrapped=new_provider.wrap(dek, context))
                count += 1
            blind = state.blind_index
            if blind is not None and blind.wrapped.kek_id != new_provider.kek_id:
                context = blind_index_context(state.log_id, blind.key_id)
                key = unwrapper(blind.wrapped.kek_id).unwrap(blind.wrapped, context)
                state.blind_index = replace(blind, wrapped=new_provider.wrap(key, context))
                count += 1

        self._mutate(rewrap_all)
        self._provider = new_provider
        return count

    # file handling

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = self._path.with_name(self._path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _mutate(self, change: Callable[[_State], None]) -> None:
        with self._locked():
            state = _parse(self._path.read_bytes(), self._path)
            if state.log_id != self.log_id:
                raise KeyringError(f"{self._path} now belongs to log {state.log_id!r}")
            change(state)
            _replace_and_scrub(self._path, state.to_bytes())
            self._state = state

    def __repr__(self) -> str:
        return (
            f"Keyring(log_id={self.log_id!r}, granularity={self.granularity!r}, "
            f"keys={len(self._state.keys)}, shredded={len(self._state.tombstones)}, "
            f"provider={self._provider!r})"
        )


def _replace_and_scrub(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data`` (mode 0600), then overwrite the previous version's
    bytes with zeros through a descriptor opened before the replacement (crash-safe: the zeros
    only ever reach the unlinked old inode)."""
    old = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(old).st_size
        _write_secret(path, data, overwrite=True)
        os.pwrite(old, b"\0" * size, 0)
        os.fsync(old)
    finally:
        os.close(old)
