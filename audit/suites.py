"""Algorithm suites: which hash, signature scheme and AEAD the audit log uses.

Two suites exist:

``default``
    SHA-256 (Merkle tree and checkpoint root hash), Ed25519 (checkpoint signatures),
    AES-256-GCM (sealing entries).
``gm``
    SM3 (GB/T 32905), SM2 signatures with SM3 (GB/T 32918, GM/T 0003) and SM4-GCM (GB/T 32907).
    SM3 and SM4 come from ``cryptography``. SM2 is not in ``cryptography``; it is loaded from the
    optional ``gmssl-pyx`` package (import name ``gmssl_pyx``) the first time it is used, and every
    SM2 operation raises :class:`~audit.errors.UnsupportedSuite` when that package is missing. The
    hash and AEAD of the ``gm`` suite work without it.

Everything here is a pure function over bytes. Keys are raw bytes in the formats documented per
scheme; nothing is read from or written to disk.

Signed notes (see :mod:`audit.checkpoint`) carry a one-byte signature type in each key ID. Ed25519
is type 0x01. Per C2SP signed-note, a scheme without an assigned type (such as SM2) uses 0xff, and
that byte is followed by a longer identifier unlikely to collide (a scheme name, then the public
key), and the key ID is the first four bytes of SHA-256(key name || 0x0A || 0xff || identifier).
:attr:`SignatureScheme.note_type` records the byte.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from audit.errors import DecryptionError, KeyFormatError, UnsupportedSuite

HashFn = Callable[[bytes], bytes]
"""A hash function over bytes returning its digest, e.g. :func:`sha256`."""

NOTE_TYPE_ED25519 = 0x01
NOTE_TYPE_OTHER = 0xFF


def sha256(data: bytes) -> bytes:
    """SHA-256 digest of ``data`` (32 bytes)."""
    return hashlib.sha256(data).digest()


def sm3(data: bytes) -> bytes:
    """SM3 digest of ``data`` (32 bytes), GB/T 32905-2016."""
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


# --- signature schemes ------------------------------------------------------------------------


@runtime_checkable
class SignatureScheme(Protocol):
    """A signature algorithm over raw key bytes.

    ``private_key`` and ``public_key`` are the scheme's raw encodings (documented by each scheme).
    ``verify`` returns ``False`` for any signature that does not verify, including malformed ones;
    it raises only for a malformed *public key* (:class:`KeyFormatError`) or a missing backend
    (:class:`UnsupportedSuite`).
    """

    @property
    def name(self) -> str: ...

    @property
    def note_type(self) -> int:
        """The C2SP signed-note signature type byte for keys of this scheme."""
        ...

    def generate(self) -> tuple[bytes, bytes]:
        """A new random key pair ``(private_key, public_key)``."""
        ...

    def public_key(self, private_key: bytes) -> bytes: ...

    def sign(self, private_key: bytes, message: bytes) -> bytes: ...

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool: ...


@dataclass(frozen=True)
class Ed25519Scheme:
    """Ed25519 (RFC 8032). Private key: the 32-byte seed. Public key: 32 bytes. Signature: 64 bytes."""

    name: str = "ed25519"
    note_type: int = NOTE_TYPE_ED25519

    def generate(self) -> tuple[bytes, bytes]:
        key = Ed25519PrivateKey.generate()
        return key.private_bytes_raw(), key.public_key().public_bytes_raw()

    def public_key(self, private_key: bytes) -> bytes:
        return self._private(private_key).public_key().public_bytes_raw()

    def sign(self, private_key: bytes, message: bytes) -> bytes:
        return self._private(private_key).sign(message)

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        if len(public_key) != 32:
            raise KeyFormatError(f"Ed25519 public key must be 32 bytes, got {len(public_key)}")
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True

    @staticmethod
    def _private(private_key: bytes) -> Ed25519PrivateKey:
        if len(private_key) != 32:
            raise KeyFormatError(f"Ed25519 private key (seed) must be 32 bytes, got {len(private_key)}")
        return Ed25519PrivateKey.from_private_bytes(private_key)


# SM2 recommended curve parameters (GB/T 32918.5-2017 / GM/T 0003.5-2012), big-endian.
_SM2_P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
_SM2_A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
_SM2_B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
_SM2_GX = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
_SM2_GY = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0
SM2_DEFAULT_ID = b"1234567812345678"
"""The default signer ID of GM/T 0009 used in the Z value."""


def sm2_z(public_key: bytes, signer_id: bytes = SM2_DEFAULT_ID) -> bytes:
    """The SM2 Z value, SM3(ENTL || ID || a || b || xG || yG || xA || yA), for a 64-byte public key."""
    if len(public_key) != 64:
        raise KeyFormatError(f"SM2 public key must be 64 bytes (x || y), got {len(public_key)}")
    bits = len(signer_id) * 8
    if bits > 0xFFFF:
        raise KeyFormatError("SM2 signer ID is longer than 8191 bytes")
    curve = b"".join(v.to_bytes(32, "big") for v in (_SM2_A, _SM2_B, _SM2_GX, _SM2_GY))
    return sm3(bits.to_bytes(2, "big") + signer_id + curve + public_key)


@dataclass(frozen=True)
class Sm2Scheme:
    """SM2 with SM3 and the default signer ID, through the optional ``gmssl-pyx`` package.

    Private key: 96 bytes, the 32-byte scalar d followed by the 64-byte public key (x || y), because
    ``gmssl-pyx`` cannot derive the public key from d. Public key: 64 bytes (x || y). Signature:
    ASN.1 DER SEQUENCE of r and s. The signed digest is e = SM3(Z || message) (:func:`sm2_z`).

    Every method raises :class:`UnsupportedSuite` when ``gmssl_pyx`` cannot be imported.
    """

    name: str = "sm2"
    note_type: int = NOTE_TYPE_OTHER
    module: str = "gmssl_pyx"

    def generate(self) -> tuple[bytes, bytes]:
        public, private = self._backend().sm2_key_generate()
        return bytes(private) + bytes(public), bytes(public)

    def public_key(self, private_key: bytes) -> bytes:
        self._backend()
        return self._split(private_key)[1]

    def sign(self, private_key: bytes, message: bytes) -> bytes:
        backend = self._backend()
        d, public = self._split(private_key)
        digest = sm3(sm2_z(public) + message)
        return bytes(backend.sm2_sign_sm3_digest(d, digest))

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        backend = self._backend()
        digest = sm3(sm2_z(public_key) + message)
        try:
            with _quiet_stderr():
                return bool(backend.sm2_verify_sm3_digest(public_key, digest, signature))
        except Exception:  # the backend raises its own errors for malformed DER: not a valid signature
            return False

    def _backend(self) -> ModuleType:
        try:
            return importlib.import_module(self.module)
        except ImportError as exc:
            raise UnsupportedSuite(
                f"SM2 signatures need the optional package 'gmssl-pyx' (module {self.module!r}), "
                "which is not installed"
            ) from exc

    @staticmethod
    def _split(private_key: bytes) -> tuple[bytes, bytes]:
        if len(private_key) != 96:
            raise KeyFormatError(f"SM2 private key must be 96 bytes (d || x || y), got {len(private_key)}")
        return private_key[:32], private_key[32:]


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 while GmSSL runs, in a single-threaded process only.

    GmSSL prints trace lines (source file, line, function) to stderr when a verification fails,
    which would break the command line's "one line on stderr" rule. Redirecting fd 2 is
    process-wide, so it is done only when this is the only thread (the command line); in a
    server the trace lines go to its log."""
    if threading.active_count() != 1:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
        finally:
            os.close(null)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# --- AEADs ------------------------------------------------------------------------------------


@runtime_checkable
class Aead(Protocol):
    """An AEAD over raw bytes. ``encrypt`` returns ciphertext || tag; ``decrypt`` raises
    :class:`DecryptionError` on any authentication failure."""

    @property
    def name(self) -> str: ...

    @property
    def key_size(self) -> int: ...

    @property
    def nonce_size(self) -> int: ...

    @property
    def tag_size(self) -> int: ...

    def encrypt(self, key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes: ...

    def decrypt(self, key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes: ...


def _check_sizes(aead: Aead, key: bytes, nonce: bytes) -> None:
    if len(key) != aead.key_size:
        raise KeyFormatError(f"{aead.name} key must be {aead.key_size} bytes, got {len(key)}")
    if len(nonce) != aead.nonce_size:
        raise ValueError(f"{aead.name} nonce must be {aead.nonce_size} bytes, got {len(nonce)}")


@dataclass(frozen=True)
class AesGcm:
    """AES-GCM with a 96-bit nonce and 128-bit tag; AES-256 by default."""

    name: str = "aes-256-gcm"
    key_size: int = 32
    nonce_size: int = 12
    tag_size: int = 16

    def encrypt(self, key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
        _check_sizes(self, key, nonce)
        return AESGCM(key).encrypt(nonce, plaintext, associated_data)

    def decrypt(self, key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
        _check_sizes(self, key, nonce)
        try:
            return AESGCM(key).decrypt(nonce, ciphertext, associated_data)
        except InvalidTag as exc:
            raise DecryptionError(f"{self.name}: authentication failed") from exc


@dataclass(frozen=True)
class Sm4Gcm:
    """SM4-GCM (SM4 is a 128-bit block cipher with a 128-bit key), 96-bit nonce, 128-bit tag."""

    name: str = "sm4-gcm"
    key_size: int = 16
    nonce_size: int = 12
    tag_size: int = 16

    def encrypt(self, key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
        _check_sizes(self, key, nonce)
        encryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(associated_data)
        ciphertext = encryptor.update(plaintext) + encryptor.finalize()
        return ciphertext + encryptor.tag

    def decrypt(self, key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
        _check_sizes(self, key, nonce)
        if len(ciphertext) < self.tag_size:
            raise DecryptionError(f"{self.name}: ciphertext shorter than the {self.tag_size}-byte tag")
        body, tag = ciphertext[: -self.tag_size], ciphertext[-self.tag_size :]
        decryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce, tag)).decryptor()
        decryptor.authenticate_additional_data(associated_data)
        try:
            return decryptor.update(body) + decryptor.finalize()
        except InvalidTag as exc:
            raise DecryptionError(f"{self.name}: authentication failed") from exc


# --- suites -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Suite:
    """One consistent choice of algorithms. Compare suites by ``name``."""

    name: str
    hash_fn: HashFn
    digest_size: int
    signature: SignatureScheme
    aead: Aead


ED25519 = Ed25519Scheme()
SM2 = Sm2Scheme()
AES_256_GCM = AesGcm()
SM4_GCM = Sm4Gcm()

DEFAULT = Suite(name="default", hash_fn=sha256, digest_size=32, signature=ED25519, aead=AES_256_GCM)
GM = Suite(name="gm", hash_fn=sm3, digest_size=32, signature=SM2, aead=SM4_GCM)

SUITES: Mapping[str, Suite] = MappingProxyType({DEFAULT.name: DEFAULT, GM.name: GM})


def get_suite(name: str) -> Suite:
    """The suite called ``name`` (``"default"`` or ``"gm"``); :class:`UnsupportedSuite` otherwise."""
    try:
        return SUITES[name]
    except KeyError:
        known = ", ".join(sorted(SUITES))
        raise UnsupportedSuite(f"unknown algorithm suite {name!r}; known suites: {known}") from None
