"""C2SP signed checkpoints: the tlog-checkpoint body inside a signed note, Ed25519 or SM2 keys.

Formats (C2SP tlog-checkpoint and signed-note; keys as Go's golang.org/x/mod/sumdb/note):

* Checkpoint body::

      <origin>\\n
      <tree size, ASCII decimal, no leading zeros>\\n
      <root hash, standard base64 with padding>\\n
      [<extension line>\\n ...]

  The origin and every extension line are non-empty.
* Signed note: the body (the note text), one blank line, then one or more signature lines
  ``— <key name> <base64(key ID (4 bytes, big-endian) || signature)>\\n`` (U+2014 EM DASH, space).
  The signature is over the exact body bytes, its final newline included. The whole note is UTF-8
  with no ASCII control character other than newline.
* Key names are non-empty and contain no Unicode whitespace, no ``+`` and no control characters.
* Key ID: the first 4 bytes of SHA-256(key name || 0x0A || key payload), where the key payload is
  the signature type byte followed by the public key (or identifier), as below.
* Verifier key: ``<name>+<key ID, 8 hex digits>+<base64(key payload)>``.
* Signer key: ``PRIVATE+KEY+<name>+<key ID, 8 hex digits>+<base64(type || private key)>``.

Two schemes:

* **Ed25519** (signature type 0x01, the ``default`` suite): key payload ``0x01 || 32-byte public
  key``; signer key ``0x01 || 32-byte seed``; signature 64 bytes (RFC 8032). This is exactly
  signed-note's Ed25519, so any signed-note library verifies these notes.
* **SM2** (the ``gm`` suite): signed-note assigns SM2 no type byte, so per the spec it uses 0xff
  followed by a longer identifier unlikely to collide: the fixed scheme name
  :data:`SM2_NOTE_IDENTIFIER` (``dsgw.sm2-sm3``) and then the 64-byte public key ``x || y``. Key
  payload ``0xff || "dsgw.sm2-sm3" || x || y`` (77 bytes); signer key ``0xff || "dsgw.sm2-sm3" ||
  d (32) || x || y``; the signature is the DER ``SEQUENCE {r, s}`` of SM2 (GB/T 32918.2) over
  e = SM3(Z || note text) with Z computed for the default signer ID ``1234567812345678``
  (GM/T 0009), i.e. what GmSSL's ``sm2_sign`` and the ``gmssl`` Python package compute by
  default. SM2 signatures are randomized, so two signatures of one note differ (both verify).
  SM2 goes through :data:`audit.suites.SM2` (the optional ``gmssl-pyx`` package).

Verification (:func:`open_note`) fails closed: a malformed note or checkpoint is a
:class:`~audit.errors.CheckpointFormatError`; a signature line whose (key name, key ID) no verifier
has is ignored, but if no known key signed at all the note is an
:class:`~audit.errors.UnknownKeyError`; a signature from a known key that does not verify is a
:class:`~audit.errors.CheckpointSignatureError` naming the key, even if other signatures verify.
Base64 must be canonical (re-encoding gives the same text), so each note has one encoding.

Per tlog-checkpoint, a log's key name SHOULD equal its origin line; that policy belongs to the log,
not to this module.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit.errors import (
    CheckpointFormatError,
    CheckpointSignatureError,
    KeyFormatError,
    UnknownKeyError,
    UnsupportedSuite,
)
from audit.suites import SM2

ALG_ED25519 = 0x01
ALG_OTHER = 0xFF
"""C2SP signed-note: the signature type of schemes without an assigned byte (SM2 here)."""
SM2_NOTE_IDENTIFIER = b"dsgw.sm2-sm3"
"""What follows 0xff in an SM2 key: the scheme name (SM2 signature with SM3 and the default signer
ID 1234567812345678, DER signature), then the 64-byte public key ``x || y``."""
SM2_PUBLIC_SIZE = 64
SM2_PRIVATE_SIZE = 96
SM2_MAX_SIGNATURE = 72
SCHEME_ED25519 = "ed25519"
SCHEME_SM2 = "sm2"
SIGNATURE_PREFIX = "— ".encode()  # U+2014 EM DASH, then a space
MAX_SIGNATURES = 100
"""Notes with more signature lines are rejected, as Go's note package does."""
MAX_TREE_SIZE = 2**64 - 1

_DECIMAL = re.compile(rb"0|[1-9][0-9]*")
_HEX_KEY_ID = re.compile(r"[0-9a-fA-F]{8}")
_CONTROL = re.compile(r"[\x00-\x1f]")


# --- shared checks ----------------------------------------------------------------------------


def _b64decode(text: str | bytes) -> bytes:
    """Strict, canonical standard base64; ``ValueError`` otherwise."""
    raw_text = text.encode("ascii") if isinstance(text, str) else text
    decoded = base64.b64decode(raw_text, validate=True)
    if base64.b64encode(decoded) != raw_text:
        raise ValueError("non-canonical base64")
    return decoded


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def is_valid_key_name(name: str) -> bool:
    """A key name is non-empty UTF-8 without whitespace, ``+`` or control characters."""
    if not name or "+" in name or _CONTROL.search(name):
        return False
    if any(ch.isspace() for ch in name):
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_key_name(name: str) -> None:
    if not is_valid_key_name(name):
        raise KeyFormatError(
            f"invalid key name {name!r}: it must be non-empty and contain no whitespace, '+' or "
            "control characters"
        )


def _check_note_text(text: bytes, what: str) -> str:
    """Non-empty UTF-8, no ASCII control character but newline, ending in a newline."""
    if not text:
        raise CheckpointFormatError(f"{what} is empty")
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointFormatError(f"{what} is not valid UTF-8 (byte {exc.start})") from None
    control = _CONTROL.search(decoded.replace("\n", ""))
    if control is not None:
        raise CheckpointFormatError(f"{what} contains the control character U+{ord(control.group()):04X}")
    if not text.endswith(b"\n"):
        raise CheckpointFormatError(f"{what} does not end with a newline")
    return decoded


def key_id(name: str, key: bytes) -> int:
    """The signed-note key ID: the first 4 bytes, big-endian, of SHA-256(name || 0x0A || key), where
    ``key`` is the signature type byte followed by the public key (or identifier)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8") + b"\n" + key).digest()[:4], "big")


# --- checkpoints ------------------------------------------------------------------------------


def _check_line(what: str, line: str) -> None:
    if not line:
        raise CheckpointFormatError(f"checkpoint {what} is empty")
    if "\n" in line or _CONTROL.search(line):
        raise CheckpointFormatError(f"checkpoint {what} contains a newline or control character")
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        raise CheckpointFormatError(f"checkpoint {what} is not encodable as UTF-8") from None


@dataclass(frozen=True)
class Checkpoint:
    """A C2SP tlog-checkpoint: origin, tree size, root hash and optional extension lines.

    Construction validates every field (:class:`CheckpointFormatError`); the root hash length is
    checked against the suite's digest size by :meth:`parse` and :func:`open_note`.
    """

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line("origin", self.origin)
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise CheckpointFormatError(
                f"checkpoint tree size must be an int, got {type(self.size).__name__}"
            )
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointFormatError(f"checkpoint tree size {self.size} is not within 0..2**64-1")
        if not isinstance(self.root_hash, bytes) or not self.root_hash:
            raise CheckpointFormatError("checkpoint root hash must be non-empty bytes")
        object.__setattr__(self, "extensions", tuple(self.extensions))
        for number, line in enumerate(self.extensions, start=1):
            _check_line(f"extension line {number}", line)

    def body(self) -> bytes:
        """The exact note text: origin, size, base64 root hash and extension lines, each + newline."""
        lines = [self.origin, str(self.size), _b64encode(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines).encode("utf-8")

    @classmethod
    def parse(cls, body: bytes, *, hash_size: int = 32) -> Checkpoint:
        """Parse a checkpoint body (the note text, without signatures); ``hash_size`` is the suite's
        digest size. Anything not exactly in the format is a :class:`CheckpointFormatError`."""
        _check_note_text(body, "checkpoint body")
        lines = body[:-1].split(b"\n")
        if len(lines) < 3:
            raise CheckpointFormatError(
                f"checkpoint body has {len(lines)} lines, needs origin, tree size and root hash"
            )
        origin, size_line, hash_line, *extensions = lines
        if not _DECIMAL.fullmatch(size_line):
            raise CheckpointFormatError(
                "checkpoint tree size is not a canonical decimal number (digits only, no leading zeros)"
            )
        size = int(size_line)
        try:
            root_hash = _b64decode(hash_line)
        except ValueError:
            raise CheckpointFormatError("checkpoint root hash is not canonical standard base64") from None
        if len(root_hash) != hash_size:
            raise CheckpointFormatError(
                f"checkpoint root hash is {len(root_hash)} bytes, expected {hash_size}"
            )
        return cls(
            origin=origin.decode("utf-8"),
            size=size,
            root_hash=root_hash,
            extensions=tuple(line.decode("utf-8") for line in extensions),
        )


# --- keys -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sm2PublicKey:
    """An SM2 public key: the 64-byte point ``x || y`` (big-endian coordinates)."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != SM2_PUBLIC_SIZE:
            raise KeyFormatError(f"SM2 public key must be {SM2_PUBLIC_SIZE} bytes, got {len(self.raw)}")


@dataclass(frozen=True)
class Sm2PrivateKey:
    """An SM2 private key as :class:`audit.suites.Sm2Scheme` takes it: the 32-byte scalar d then
    the 64-byte public key. Its repr never shows the key."""

    raw: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.raw) != SM2_PRIVATE_SIZE:
            raise KeyFormatError(f"SM2 private key must be {SM2_PRIVATE_SIZE} bytes (d || x || y)")

    @classmethod
    def generate(cls) -> Sm2PrivateKey:
        """A new random SM2 key (needs the optional ``gmssl-pyx`` package)."""
        private, _ = SM2.generate()
        return cls(private)

    def public_key(self) -> Sm2PublicKey:
        return Sm2PublicKey(self.raw[32:])


PublicKey = Ed25519PublicKey | Sm2PublicKey
PrivateKey = Ed25519PrivateKey | Sm2PrivateKey


def _public_payload(public_key: PublicKey) -> tuple[str, bytes, bytes]:
    """(scheme, raw public key, vkey payload = signature type || identifier) of a public key."""
    if isinstance(public_key, Sm2PublicKey):
        return SCHEME_SM2, public_key.raw, bytes([ALG_OTHER]) + SM2_NOTE_IDENTIFIER + public_key.raw
    raw = public_key.public_bytes_raw()
    return SCHEME_ED25519, raw, bytes([ALG_ED25519]) + raw


class Verifier:
    """A note verifier: key name and public key, Ed25519 (type 0x01) or SM2 (type 0xff, see the
    module docstring)."""

    __slots__ = ("_key_id", "_name", "_payload", "_public", "_public_bytes", "_scheme")

    def __init__(self, name: str, public_key: PublicKey) -> None:
        _check_key_name(name)
        self._name = name
        self._public = public_key
        self._scheme, self._public_bytes, self._payload = _public_payload(public_key)
        self._key_id = key_id(name, self._payload)

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Parse ``<name>+<hex key ID>+<base64(type || key)>``; :class:`KeyFormatError`."""
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise KeyFormatError("verifier key must be <name>+<key id>+<base64 key>")
        name, hex_id, encoded = parts
        _check_key_name(name)
        key = _decode_key(hex_id, encoded, "verifier")
        public: PublicKey
        if key[0] == ALG_OTHER:
            public = Sm2PublicKey(key[1 + len(SM2_NOTE_IDENTIFIER) :])
        else:
            try:
                public = Ed25519PublicKey.from_public_bytes(key[1:])
            except ValueError:
                raise KeyFormatError(f"verifier key {name!r} is not a valid Ed25519 public key") from None
        verifier = cls(name, public)
        if verifier.key_id != int(hex_id, 16):
            raise KeyFormatError(
                f"verifier key {name!r}: key ID {hex_id.lower()} is not the key's ({verifier.key_id:08x})"
            )
        return verifier

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return self._key_id

    @property
    def scheme(self) -> str:
        """``"ed25519"`` or ``"sm2"``."""
        return self._scheme

    @property
    def public_key_bytes(self) -> bytes:
        """The raw public key: 32 bytes (Ed25519) or 64 bytes ``x || y`` (SM2)."""
        return self._public_bytes

    @property
    def key_payload(self) -> bytes:
        """The vkey's key part: signature type byte followed by the public key (or identifier)."""
        return self._payload

    def vkey(self) -> str:
        """The verifier key string ``<name>+<hex key ID>+<base64(type || key)>``."""
        return f"{self._name}+{self._key_id:08x}+{_b64encode(self._payload)}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's signature of ``message``."""
        if isinstance(self._public, Sm2PublicKey):
            if not 8 <= len(signature) <= SM2_MAX_SIGNATURE:
                return False
            return SM2.verify(self._public.raw, message, signature)
        if len(signature) != 64:
            return False
        try:
            self._public.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Verifier):
            return NotImplemented
        return (self._name, self._payload) == (other._name, other._payload)

    def __hash__(self) -> int:
        return hash((self._name, self._payload))

    def __repr__(self) -> str:
        return f"Verifier({self.vkey()!r})"


class Signer:
    """A note signer: key name and private key (Ed25519 or SM2). Its repr never shows the private
    key. SM2 signatures are randomized: signing the same text twice gives different notes, each
    of which verifies."""

    __slots__ = ("_key_id", "_name", "_payload", "_private", "_public", "_scheme")

    def __init__(self, name: str, private_key: PrivateKey) -> None:
        _check_key_name(name)
        self._name = name
        self._private = private_key
        self._public: PublicKey = private_key.public_key()
        self._scheme, _, self._payload = _public_payload(self._public)
        self._key_id = key_id(name, self._payload)

    @classmethod
    def generate(cls, name: str, scheme: str = SCHEME_ED25519) -> Signer:
        """A new random key called ``name``: Ed25519 (default) or SM2 (``scheme="sm2"``, needs
        the optional ``gmssl-pyx`` package)."""
        if scheme == SCHEME_SM2:
            return cls(name, Sm2PrivateKey.generate())
        if scheme != SCHEME_ED25519:
            raise KeyFormatError(f"unknown signature scheme {scheme!r}")
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_key_string(cls, skey: str) -> Signer:
        """Parse ``PRIVATE+KEY+<name>+<hex key ID>+<base64(type || private key)>``;
        :class:`KeyFormatError`. Error messages never include the key material."""
        parts = skey.split("+", 4)
        if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
            raise KeyFormatError("signer key must be PRIVATE+KEY+<name>+<key id>+<base64 key>")
        _, _, name, hex_id, encoded = parts
        _check_key_name(name)
        secret = _decode_key(hex_id, encoded, "signer")
        private: PrivateKey
        if secret[0] == ALG_OTHER:
            private = Sm2PrivateKey(secret[1 + len(SM2_NOTE_IDENTIFIER) :])
            probe = b"dsgw: SM2 key pair check\n"
            try:
                matches = SM2.verify(private.raw[32:], probe, SM2.sign(private.raw, probe))
            except UnsupportedSuite:
                raise
            except Exception:  # the backend refuses the scalar or the point
                matches = False
            if not matches:
                raise KeyFormatError(f"signer key {name!r}: the SM2 private and public keys do not match")
        else:
            private = Ed25519PrivateKey.from_private_bytes(secret[1:])
        signer = cls(name, private)
        if signer.key_id != int(hex_id, 16):
            raise KeyFormatError(
                f"signer key {name!r}: key ID {hex_id.lower()} is not the key's ({signer.key_id:08x})"
            )
        return signer

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return self._key_id

    @property
    def scheme(self) -> str:
        """``"ed25519"`` or ``"sm2"``."""
        return self._scheme

    @property
    def private_key(self) -> PrivateKey:
        """The private key (a secret)."""
        return self._private

    def to_key_string(self) -> str:
        """The signer key string. It is the private key: store it as a secret."""
        if isinstance(self._private, Sm2PrivateKey):
            secret = bytes([ALG_OTHER]) + SM2_NOTE_IDENTIFIER + self._private.raw
        else:
            secret = bytes([ALG_ED25519]) + self._private.private_bytes_raw()
        return f"PRIVATE+KEY+{self._name}+{self._key_id:08x}+{_b64encode(secret)}"

    def verifier(self) -> Verifier:
        """The matching verifier."""
        return Verifier(self._name, self._public)

    def sign(self, message: bytes) -> bytes:
        """The raw signature of ``message``: 64 bytes (Ed25519) or DER ``SEQUENCE {r, s}`` (SM2)."""
        if isinstance(self._private, Sm2PrivateKey):
            return SM2.sign(self._private.raw, message)
        return self._private.sign(message)

    def __repr__(self) -> str:
        return f"Signer(name={self._name!r}, key_id={self._key_id:08x})"


def _decode_key(hex_id: str, encoded: str, what: str) -> bytes:
    if not _HEX_KEY_ID.fullmatch(hex_id):
        raise KeyFormatError(f"{what} key ID must be 8 hex digits")
    try:
        key = _b64decode(encoded)
    except ValueError:
        raise KeyFormatError(f"{what} key is not canonical standard base64") from None
    if not key:
        raise KeyFormatError(f"{what} key is empty")
    if key[0] == ALG_OTHER and key[1:].startswith(SM2_NOTE_IDENTIFIER):
        size = SM2_PUBLIC_SIZE if what == "verifier" else SM2_PRIVATE_SIZE
        if len(key) != 1 + len(SM2_NOTE_IDENTIFIER) + size:
            raise KeyFormatError(
                f"{what} key must be 0xff, {SM2_NOTE_IDENTIFIER.decode()!r} and {size} bytes of SM2 key"
            )
        return key
    if key[0] != ALG_ED25519:
        raise KeyFormatError(
            f"{what} key has signature type 0x{key[0]:02x}; only Ed25519 (0x01) and SM2 "
            f"(0xff {SM2_NOTE_IDENTIFIER.decode()!r}) are supported"
        )
    if len(key) != 33:
        raise KeyFormatError(f"{what} key must be 0x01 followed by 32 bytes, got {len(key) - 1}")
    return key


# --- signed notes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _SignatureLine:
    name: str
    key_id: int
    signature: bytes


def sign_note(body: bytes, signers: Sequence[Signer]) -> bytes:
    """The signed note: ``body``, a blank line, then one signature line per signer, in order.

    ``body`` must be valid note text (:class:`CheckpointFormatError` otherwise); ``signers`` must be
    non-empty with distinct (name, key ID) (:class:`KeyFormatError` otherwise).
    """
    _check_note_text(body, "note text")
    if not signers:
        raise KeyFormatError("a signed note needs at least one signer")
    seen: set[tuple[str, int]] = set()
    lines = []
    for signer in signers:
        identity = (signer.name, signer.key_id)
        if identity in seen:
            raise KeyFormatError(f"duplicate signer {signer.name}+{signer.key_id:08x}")
        seen.add(identity)
        blob = signer.key_id.to_bytes(4, "big") + signer.sign(body)
        lines.append(SIGNATURE_PREFIX + f"{signer.name} {_b64encode(blob)}\n".encode())
    return body + b"\n" + b"".join(lines)


def sign_checkpoint(checkpoint: Checkpoint, signers: Sequence[Signer]) -> bytes:
    """``sign_note(checkpoint.body(), signers)``."""
    return sign_note(checkpoint.body(), signers)


def _split_note(note: bytes) -> tuple[bytes, list[_SignatureLine]]:
    """The note text and its parsed signature lines; :class:`CheckpointFormatError` if malformed."""
    _check_note_text(note, "signed note")
    split = note.rfind(b"\n\n")
    if split < 0:
        raise CheckpointFormatError("signed note has no blank line before the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block:
        raise CheckpointFormatError("signed note has no signature lines")
    raw_lines = block[:-1].split(b"\n")
    if len(raw_lines) > MAX_SIGNATURES:
        raise CheckpointFormatError(
            f"signed note has {len(raw_lines)} signature lines, at most {MAX_SIGNATURES}"
        )
    lines = []
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.startswith(SIGNATURE_PREFIX):
            raise CheckpointFormatError(f"signature line {number} does not start with '— '")
        name, _, encoded = raw[len(SIGNATURE_PREFIX) :].decode("utf-8").partition(" ")
        if not is_valid_key_name(name):
            raise CheckpointFormatError(f"signature line {number} has an invalid key name")
        try:
            blob = _b64decode(encoded)
        except ValueError:
            raise CheckpointFormatError(
                f"signature line {number} ({name}) is not canonical standard base64"
            ) from None
        if len(blob) < 5:
            raise CheckpointFormatError(
                f"signature line {number} ({name}) is too short for key ID and signature"
            )
        lines.append(_SignatureLine(name, int.from_bytes(blob[:4], "big"), blob[4:]))
    return text, lines


def verify_note(note: bytes, verifiers: Sequence[Verifier]) -> tuple[bytes, list[str]]:
    """Verify a signed note of any text: ``(text, names of the known keys that signed it)``.

    Signatures from keys not among ``verifiers`` (by name and key ID) are ignored; every signature
    from a known key must verify. Raises :class:`CheckpointFormatError`,
    :class:`CheckpointSignatureError` or :class:`UnknownKeyError` (nothing known signed).
    """
    text, lines = _split_note(note)
    return text, _verify_lines(text, lines, verifiers)


def open_note(
    note: bytes, verifiers: Sequence[Verifier], *, hash_size: int = 32
) -> tuple[Checkpoint, list[str]]:
    """Verify a signed checkpoint: ``(checkpoint, names of the known keys that signed it)``.

    The note structure and the checkpoint body are checked first (:class:`CheckpointFormatError`),
    then the signatures as in :func:`verify_note`. ``hash_size`` is the suite's digest size.
    """
    text, lines = _split_note(note)
    checkpoint = Checkpoint.parse(text, hash_size=hash_size)
    return checkpoint, _verify_lines(text, lines, verifiers)


def _verify_lines(text: bytes, lines: Sequence[_SignatureLine], verifiers: Sequence[Verifier]) -> list[str]:
    known: dict[tuple[str, int], Verifier] = {}
    for verifier in verifiers:
        identity = (verifier.name, verifier.key_id)
        other = known.setdefault(identity, verifier)
        if not hmac.compare_digest(other.key_payload, verifier.key_payload):
            raise KeyFormatError(
                f"two different verifier keys are called {verifier.name}+{verifier.key_id:08x}"
            )
    signed_by: list[str] = []
    unknown: list[str] = []
    for line in lines:
        match = known.get((line.name, line.key_id))
        if match is None:
            unknown.append(f"{line.name}+{line.key_id:08x}")
            continue
        if not match.verify(text, line.signature):
            raise CheckpointSignatureError(
                f"signature by key {line.name}+{line.key_id:08x} does not verify", key_name=line.name
            )
        if line.name not in signed_by:
            signed_by.append(line.name)
    if not signed_by:
        listed = ", ".join(unknown)
        raise UnknownKeyError(f"no known key signed the note (signed by: {listed})", key_names=tuple(unknown))
    return signed_by
