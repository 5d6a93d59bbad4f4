"""The audit log's directory layout, its metadata (``log.json``) and the gateway's key files.

A log directory holds no secret and no clear personal data::

    <log>/
      log.json                  metadata: format, log id (= checkpoint origin), node, suite,
                                checkpoint verifier key, auditor KEK id, blind-index key id
      keyring.jsonl             data keys, each wrapped under the auditor PUBLIC key (audit.keys)
      segments/<first index, 20 digits>.seg     append-only frames (audit.segment)
      checkpoints/<tree size, 20 digits>.note   signed checkpoints (audit.checkpoints)
      checkpoints/latest                        the newest one (a hard link to its file)
      index.sqlite              derived search index (audit.index), rebuildable from the segments
      log.lock                  advisory lock held by the one writer

The secrets live in the gateway's home, never in the log directory (:class:`HomeKeys`)::

    <home>/keys/checkpoint.key      Ed25519 checkpoint signing key (signed-note key string)
    <home>/keys/checkpoint-sm2.key  SM2 checkpoint signing key of ``gm`` logs (signed-note key
                                    string, type 0xff; made by ``keygen --suite gm`` or by the
                                    first ``init_log(..., suite="gm")`` with a home's keys)
    <home>/keys/blind-index.key     32-byte blind-index key (audit.blind_index)
    <home>/keys/auditor.key         the auditor's X25519 PRIVATE key: in real life it goes to
                                    the auditors, and the gateway keeps only auditor.key.pub
    <home>/keys/auditor.key.pub     the auditor's public key (wraps the data keys)

The checkpoint key's name is re-bound to each log: a checkpoint of a log is signed under the key
name = the log id = the checkpoint origin (as C2SP tlog-checkpoint recommends), with the key
material of ``checkpoint.key`` (``default`` suite) or ``checkpoint-sm2.key`` (``gm`` suite: SM2
with SM3). Which key signs a log's checkpoints is read from its ``vkey`` (a ``gm`` log created
before SM2 checkpoints existed keeps its Ed25519 key). Every file with a secret is mode 0600 in a
0700 directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.checkpoint import SCHEME_ED25519, SCHEME_SM2, Signer, Sm2PrivateKey, Verifier
from audit.errors import AuditError, KeyFormatError, UnsupportedSuite
from audit.keys import (
    FileKeyProvider,
    KekMismatch,
    KeyProvider,
    Keyring,
    KeyringError,
    PrivateKeyRequired,
    Tombstone,
    WrappedKey,
    blind_index_key_id,
    generate_auditor_key,
    generate_blind_index_key,
    kek_id_for,
    keyring_kek_ids,
    load_auditor_public_key,
    load_blind_index_key,
)
from audit.suites import SUITES

__all__ = [
    "CHECKPOINTS_DIR",
    "DEFAULT_SEGMENT_BYTES",
    "FORMAT",
    "FORMAT_VERSION",
    "INDEX_FILE",
    "KEYRING_FILE",
    "LOCK_FILE",
    "LOG_JSON",
    "SEGMENTS_DIR",
    "HomeKeys",
    "KekRotation",
    "LogKeys",
    "LogLayoutError",
    "LogMeta",
    "LogPaths",
    "ShredReport",
    "atomic_write",
    "fsync_dir",
    "new_log_id",
    "rotate_auditor_key",
    "shred_period",
    "signer_for",
    "validate_node",
]

FORMAT = "dsgw-audit-log"
FORMAT_VERSION = 1
LOG_JSON = "log.json"
KEYRING_FILE = "keyring.jsonl"
SEGMENTS_DIR = "segments"
CHECKPOINTS_DIR = "checkpoints"
INDEX_FILE = "index.sqlite"
LOCK_FILE = "log.lock"
DEFAULT_SEGMENT_BYTES = 64 * 2**20
MIN_SEGMENT_BYTES = 4096
CHECKPOINT_KEY_NAME = "dsgw-audit-checkpoint"
SUITE_SCHEMES = {"default": SCHEME_ED25519, "gm": SCHEME_SM2}
"""The checkpoint signature scheme of new logs of each suite."""
"""The key name written by keygen; each log re-binds the key material to its own origin."""

_NODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_LOG_ID = re.compile(r"dsgw\.audit/[A-Za-z0-9][A-Za-z0-9._-]{0,62}/[0-9a-f-]{36}")


class LogLayoutError(AuditError):
    """Not an audit log directory, a malformed ``log.json``, or missing / mismatched key files."""

    reason = "LOG_LAYOUT"


# --- files ------------------------------------------------------------------------------------


class LogLocked(AuditError):
    """Another process has the log open for writing."""

    reason = "LOG_LOCKED"


def take_writer_lock(lock_file: Path, root: Path) -> int:
    """Take the log's writer lock (an exclusive ``flock`` on ``lock_file``, released when the
    returned descriptor is closed, or when the process dies); :class:`LogLocked` if another
    process holds it."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LogLocked(f"the audit log {root} is open for writing by another process") from None
    return fd


def fsync_dir(directory: Path) -> None:
    """fsync a directory, so that a file created, renamed or removed in it survives a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably: temporary file in the same directory,
    write, fsync, rename, directory fsync. A crash leaves the old or the new content, never a mix."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
        fsync_dir(directory)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class LogPaths:
    """The paths inside one log directory."""

    root: Path

    @property
    def log_json(self) -> Path:
        return self.root / LOG_JSON

    @property
    def keyring(self) -> Path:
        return self.root / KEYRING_FILE

    @property
    def segments(self) -> Path:
        return self.root / SEGMENTS_DIR

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    @property
    def index(self) -> Path:
        return self.root / INDEX_FILE

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE


# --- log.json ---------------------------------------------------------------------------------


def validate_node(node: str) -> str:
    """A node name: 1-63 characters of ``[A-Za-z0-9._-]``, starting with a letter or digit (it
    becomes part of the log id, which is the checkpoint origin and key name)."""
    if not isinstance(node, str) or not _NODE.fullmatch(node):
        raise LogLayoutError(
            f"node name {node!r} is invalid: 1-63 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return node


def new_log_id(node: str) -> str:
    """A fresh log id ``dsgw.audit/<node>/<uuid4>``: the checkpoint origin and signing key name."""
    return f"dsgw.audit/{validate_node(node)}/{uuid.uuid4()}"


@dataclass(frozen=True)
class LogMeta:
    """The content of ``log.json``. ``vkey`` is the verifier key of the log's checkpoints;
    ``kek_id`` the auditor key that wraps the data keys; ``blind_index_key_id`` the key check
    value of the blind-index key (:func:`audit.keys.blind_index_key_id`, hex).

    ``kek_rotation`` is set only while an auditor-key rotation is under way
    (:func:`rotate_auditor_key`): the id of the new KEK. If the rotation was interrupted,
    :meth:`load` tells from the keyring which of the two keys it holds, and gives that one as
    ``kek_id``."""

    log_id: str
    node: str
    suite: str
    vkey: str
    kek_id: str
    blind_index_key_id: str
    created: str
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    version: int = FORMAT_VERSION
    kek_rotation: str | None = None

    def __post_init__(self) -> None:
        if not _LOG_ID.fullmatch(self.log_id):
            raise LogLayoutError("log.json: log_id is not dsgw.audit/<node>/<uuid>")
        validate_node(self.node)
        if self.suite not in SUITES:
            raise LogLayoutError(f"log.json: unknown suite {self.suite!r}")
        try:
            verifier = Verifier.from_vkey(self.vkey)
        except KeyFormatError as exc:
            raise LogLayoutError(f"log.json: vkey is malformed ({exc})") from None
        if verifier.name != self.log_id:
            raise LogLayoutError("log.json: the vkey's name is not the log id")
        if verifier.scheme == SCHEME_SM2 and self.suite != "gm":
            raise LogLayoutError(f"log.json: an SM2 checkpoint key in a log of suite {self.suite!r}")
        if not re.fullmatch(r"[0-9a-f]{16}", self.kek_id):
            raise LogLayoutError("log.json: kek_id is not 16 hex digits")
        if self.kek_rotation is not None and not re.fullmatch(r"[0-9a-f]{16}", self.kek_rotation):
            raise LogLayoutError("log.json: kek_rotation is not 16 hex digits")
        if not re.fullmatch(r"[0-9a-f]{16}", self.blind_index_key_id):
            raise LogLayoutError("log.json: blind_index_key_id is not 16 hex digits")
        if isinstance(self.segment_bytes, bool) or not isinstance(self.segment_bytes, int):
            raise LogLayoutError("log.json: segment_bytes is not an integer")
        if self.segment_bytes < MIN_SEGMENT_BYTES:
            raise LogLayoutError(f"log.json: segment_bytes is below {MIN_SEGMENT_BYTES}")
        if self.version != FORMAT_VERSION:
            raise LogLayoutError(f"log.json: format version {self.version} is not supported")

    @property
    def verifier(self) -> Verifier:
        return Verifier.from_vkey(self.vkey)

    def to_json(self) -> dict[str, Any]:
        rotation = {} if self.kek_rotation is None else {"kek_rotation": self.kek_rotation}
        return rotation | {
            "format": FORMAT,
            "version": self.version,
            "log_id": self.log_id,
            "origin": self.log_id,
            "node": self.node,
            "suite": self.suite,
            "vkey": self.vkey,
            "kek_id": self.kek_id,
            "blind_index_key_id": self.blind_index_key_id,
            "segment_bytes": self.segment_bytes,
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: Any) -> LogMeta:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise LogLayoutError(f"log.json: not a {FORMAT} metadata file")
        try:
            return cls(
                log_id=_field(data, "log_id", str),
                node=_field(data, "node", str),
                suite=_field(data, "suite", str),
                vkey=_field(data, "vkey", str),
                kek_id=_field(data, "kek_id", str),
                blind_index_key_id=_field(data, "blind_index_key_id", str),
                created=_field(data, "created", str),
                segment_bytes=_field(data, "segment_bytes", int),
                version=_field(data, "version", int),
                kek_rotation=None if data.get("kek_rotation") is None else _field(data, "kek_rotation", str),
            )
        except LogLayoutError:
            raise
        except (TypeError, ValueError) as exc:
            raise LogLayoutError(f"log.json: malformed ({type(exc).__name__})") from None

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> LogMeta:
        """The metadata of the log in ``directory``; :class:`LogLayoutError` if there is none."""
        paths = LogPaths(Path(directory))
        if not paths.root.is_dir():
            raise LogLayoutError(f"{paths.root} is not a directory")
        try:
            raw = paths.log_json.read_bytes()
        except FileNotFoundError:
            raise LogLayoutError(f"{paths.root} is not an audit log (no {LOG_JSON})") from None
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise LogLayoutError(f"{paths.log_json} is not valid JSON") from None
        meta = cls.from_json(data)
        if meta.kek_rotation is not None and meta.kek_rotation != meta.kek_id:
            # an interrupted rotation: the keyring (rewritten first, atomically) says which KEK
            try:
                held = keyring_kek_ids(paths.keyring)
            except (OSError, KeyringError):
                held = set()
            if held == {meta.kek_rotation}:
                meta = replace(meta, kek_id=meta.kek_rotation)
        return meta

    def save(self, directory: Path) -> None:
        text = json.dumps(self.to_json(), indent=2, sort_keys=True, ensure_ascii=True) + "\n"
        atomic_write(LogPaths(directory).log_json, text.encode("ascii"))


def _field(data: dict[str, Any], name: str, kind: type) -> Any:
    value = data.get(name)
    if kind is int and isinstance(value, bool):
        raise LogLayoutError(f"log.json: {name} is not an integer")
    if not isinstance(value, kind):
        raise LogLayoutError(f"log.json: {name} is missing or not a {kind.__name__}")
    return value


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- keys -------------------------------------------------------------------------------------


def _private_key_from_key_string(skey: str) -> Ed25519PrivateKey:
    signer = Signer.from_key_string(skey)  # validates format, name, key id (never shows the key)
    if not isinstance(signer.private_key, Ed25519PrivateKey):
        raise KeyFormatError("checkpoint.key is not an Ed25519 signer key")
    return signer.private_key


def _sm2_key_from_key_string(skey: str) -> Sm2PrivateKey:
    signer = Signer.from_key_string(skey)
    if not isinstance(signer.private_key, Sm2PrivateKey):
        raise KeyFormatError("checkpoint-sm2.key is not an SM2 signer key")
    return signer.private_key


def signer_for(log_id: str, private_key: Ed25519PrivateKey | Sm2PrivateKey) -> Signer:
    """The checkpoint signer of log ``log_id``: key name = log id = checkpoint origin."""
    return Signer(log_id, private_key)


@dataclass(frozen=True)
class LogKeys:
    """What a writer needs: the checkpoint signing key(s), the blind-index key and the auditor key
    provider (public key only on a gateway). ``sm2_checkpoint_key`` signs the checkpoints of
    ``gm`` logs; ``home`` (when loaded from a home) lets :func:`audit.log.init_log` make it on
    first use."""

    checkpoint_key: Ed25519PrivateKey
    blind_index_key: bytes
    provider: KeyProvider
    sm2_checkpoint_key: Sm2PrivateKey | None = None
    home: Path | None = None

    def signer(self, log_id: str, scheme: str = SCHEME_ED25519) -> Signer:
        """The checkpoint signer of log ``log_id`` with the key of ``scheme`` (``"ed25519"`` or
        ``"sm2"``); :class:`LogLayoutError` if there is no such key."""
        if scheme == SCHEME_ED25519:
            return signer_for(log_id, self.checkpoint_key)
        if scheme != SCHEME_SM2:
            raise LogLayoutError(f"unknown checkpoint signature scheme {scheme!r}")
        if self.sm2_checkpoint_key is None:
            where = f" --home {self.home}" if self.home is not None else ""
            raise LogLayoutError(
                f"no SM2 checkpoint key for a gm log (run: dsgw audit keygen{where} --suite gm)"
            )
        return signer_for(log_id, self.sm2_checkpoint_key)

    def for_meta(self, meta: LogMeta) -> Signer:
        """The signer of the log ``meta`` describes (its vkey says which key)."""
        return self.signer(meta.log_id, meta.verifier.scheme)

    def with_sm2(self) -> LogKeys:
        """These keys with an SM2 checkpoint key: as they are if they have one; else the home's
        ``checkpoint-sm2.key``, made now if it does not exist (:class:`LogLayoutError` without a
        home)."""
        if self.sm2_checkpoint_key is not None or self.home is None:
            return self
        home = HomeKeys(self.home)
        if not home.checkpoint_sm2_key.exists():
            with contextlib.suppress(FileExistsError):  # made meanwhile by another process
                home.generate_sm2()
        return replace(self, sm2_checkpoint_key=home.load_sm2())

    def __repr__(self) -> str:
        return f"LogKeys(kek_id={self.provider.kek_id!r})"


@dataclass(frozen=True)
class HomeKeys:
    """The key files in a gateway home (see the module docstring)."""

    home: Path

    @property
    def directory(self) -> Path:
        return self.home / "keys"

    @property
    def checkpoint_key(self) -> Path:
        return self.directory / "checkpoint.key"

    @property
    def checkpoint_sm2_key(self) -> Path:
        """The SM2 checkpoint signing key of ``gm`` logs (not among :meth:`files`: optional)."""
        return self.directory / "checkpoint-sm2.key"

    @property
    def blind_index_key(self) -> Path:
        return self.directory / "blind-index.key"

    @property
    def auditor_key(self) -> Path:
        return self.directory / "auditor.key"

    @property
    def auditor_public_key(self) -> Path:
        return self.directory / "auditor.key.pub"

    def files(self) -> tuple[Path, ...]:
        return (self.checkpoint_key, self.blind_index_key, self.auditor_key, self.auditor_public_key)

    def generate(
        self, *, suite: str = "default", auditor_public_key: str | os.PathLike[str] | None = None
    ) -> str:
        """Write a new checkpoint signing key, blind-index key and auditor key pair (all 0600, in
        a 0700 ``keys`` directory); refuses to replace any existing file. Returns the auditor
        KEK id. With ``suite="gm"`` also the SM2 checkpoint key; if the other keys exist already,
        only the SM2 key is added.

        ``auditor_public_key``: the file of an EXISTING auditor public key (PEM or raw X25519, e.g.
        an organisation-wide one) to use instead of a new pair: the home gets only its public half,
        ``auditor.key.pub`` (PEM), and no ``auditor.key``, as a gateway should."""
        if suite not in SUITES:
            raise LogLayoutError(f"unknown suite {suite!r}")
        given = None
        if auditor_public_key is not None:
            try:
                given = load_auditor_public_key(auditor_public_key)
            except FileNotFoundError:
                raise LogLayoutError(f"{auditor_public_key}: no such auditor public key file") from None
            except KeyFormatError as exc:
                raise LogLayoutError(str(exc)) from None
        existing = [p for p in self.files() if p.exists()]
        needed = {self.checkpoint_key, self.blind_index_key, self.auditor_public_key}
        if suite == "gm" and self.checkpoint_sm2_key.exists():
            existing.insert(0, self.checkpoint_sm2_key)
        elif suite == "gm" and needed <= set(existing):
            kek_id = FileKeyProvider.from_public_key_file(self.auditor_public_key).kek_id
            if given is not None and kek_id_for(given) != kek_id:
                raise LogLayoutError(
                    f"{self.auditor_public_key} exists and holds another auditor key ({kek_id})"
                )
            self.generate_sm2()
            return kek_id
        if existing:
            raise LogLayoutError(f"{existing[0]} exists: refusing to replace a key")
        if suite == "gm":
            Sm2PrivateKey.generate()  # fail before writing anything when gmssl-pyx is missing
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        signer = Signer.generate(CHECKPOINT_KEY_NAME)
        _write_new_secret(self.checkpoint_key, (signer.to_key_string() + "\n").encode("ascii"))
        generate_blind_index_key(self.blind_index_key)
        if given is None:
            kek_id = generate_auditor_key(self.auditor_key).kek_id
        else:
            pem = given.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            _write_new_secret(self.auditor_public_key, pem)
            kek_id = kek_id_for(given)
        if suite == "gm":
            self.generate_sm2()
        fsync_dir(self.directory)
        return kek_id

    def generate_sm2(self) -> None:
        """Write a new SM2 checkpoint signing key (0600); :class:`FileExistsError` if there is one,
        :class:`LogLayoutError` when the SM2 backend (``gmssl-pyx``) is missing."""
        try:
            signer = Signer.generate(CHECKPOINT_KEY_NAME, SCHEME_SM2)
        except UnsupportedSuite as exc:
            raise LogLayoutError(str(exc)) from None
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        _write_new_secret(self.checkpoint_sm2_key, (signer.to_key_string() + "\n").encode("ascii"))
        fsync_dir(self.directory)

    def load_sm2(self, *, check_permissions: bool = True) -> Sm2PrivateKey:
        """The SM2 checkpoint key; :class:`LogLayoutError` if it is missing or malformed."""
        try:
            text = _read_secret_text(self.checkpoint_sm2_key, check_permissions)
            return _sm2_key_from_key_string(text.strip())
        except FileNotFoundError:
            raise LogLayoutError(
                f"missing key file {self.checkpoint_sm2_key} (run: dsgw audit keygen --home {self.home} "
                "--suite gm)"
            ) from None
        except UnsupportedSuite as exc:
            raise LogLayoutError(str(exc)) from None
        except KeyFormatError as exc:
            raise LogLayoutError(f"bad key file in {self.directory}: {exc}") from None

    def load(self, *, check_permissions: bool = True) -> LogKeys:
        """The writer's keys: checkpoint key(s), blind-index key and the auditor PUBLIC key (the
        private key is never loaded here). The SM2 checkpoint key is loaded when it exists."""
        try:
            text = _read_secret_text(self.checkpoint_key, check_permissions)
            checkpoint_key = _private_key_from_key_string(text.strip())
            blind = load_blind_index_key(self.blind_index_key, check_permissions=check_permissions)
            provider = FileKeyProvider.from_public_key_file(self.auditor_public_key)
        except FileNotFoundError as exc:
            raise LogLayoutError(
                f"missing key file {exc.filename} (run: dsgw audit keygen --home {self.home})"
            ) from None
        except KeyFormatError as exc:
            raise LogLayoutError(f"bad key file in {self.directory}: {exc}") from None
        sm2 = None
        if self.checkpoint_sm2_key.exists():
            sm2 = self.load_sm2(check_permissions=check_permissions)
        return LogKeys(checkpoint_key, blind, provider, sm2, self.home)


def _write_new_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_secret_text(path: Path, check_permissions: bool) -> str:
    with open(path, "rb") as handle:
        if check_permissions and os.fstat(handle.fileno()).st_mode & 0o077:
            raise LogLayoutError(f"{path}: group or others may access this secret key; want mode 0600")
        data = handle.read()
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise LogLayoutError(f"{path}: not a signed-note private key string") from None


def check_keys(meta: LogMeta, keys: LogKeys) -> None:
    """:class:`LogLayoutError` unless ``keys`` are this log's: the signing key matches the vkey,
    the blind-index key its key check value, the auditor key the KEK id."""
    if keys.for_meta(meta).verifier().vkey() != meta.vkey:
        raise LogLayoutError(f"the checkpoint signing key is not the key of log {meta.log_id}")
    if blind_index_key_id(keys.blind_index_key).hex() != meta.blind_index_key_id:
        raise LogLayoutError(f"the blind-index key is not the key of log {meta.log_id}")
    if keys.provider.kek_id != meta.kek_id:
        raise LogLayoutError(
            f"the auditor key {keys.provider.kek_id} is not the key of log {meta.log_id} ({meta.kek_id})"
            + _rotation_note(meta)
        )


def _rotation_note(meta: LogMeta) -> str:
    if meta.kek_rotation is None:
        return ""
    if meta.kek_rotation == meta.kek_id:
        return f"; its rotation to auditor key {meta.kek_id} was interrupted after the keyring was re-wrapped"
    return (
        f"; its rotation to auditor key {meta.kek_rotation} was interrupted before the keyring was re-wrapped"
    )


# --- key management of a log: auditor-key rotation and crypto-shredding ---------------------------


@dataclass(frozen=True)
class KekRotation:
    """What :func:`rotate_auditor_key` did: the log, the auditor key ids before and after, and how
    many wrapped keys (data keys and the blind-index key) it re-wrapped."""

    log_id: str
    old_kek_id: str
    new_kek_id: str
    rewrapped: int


def rotate_auditor_key(
    directory: str | os.PathLike[str],
    new_provider: KeyProvider,
    *,
    old_providers: Sequence[KeyProvider] = (),
) -> KekRotation:
    """Rotate the auditor key (KEK) of the log in ``directory``: re-wrap every live data key and
    the blind-index key under ``new_provider`` (its public key is enough) and make ``log.json``
    name it. Keys wrapped under another KEK are unwrapped with the one of ``old_providers`` of
    that KEK, which needs its private key. Entries are not touched.

    Holds the writer lock throughout (:class:`LogLocked` while a gateway has the log open). Three
    atomic, durable steps: ``log.json`` records the rotation (``kek_rotation``), the keyring is
    rewritten under the new KEK, ``log.json`` names the new KEK. After a crash in between, the log
    opens with the key the keyring holds (:meth:`LogMeta.load` tells which, and errors name it);
    calling this again finishes the rotation. Idempotent."""
    paths = LogPaths(Path(directory))
    LogMeta.load(paths.root)  # refuses a directory that is not a log before taking its lock
    lock = take_writer_lock(paths.lock, paths.root)
    try:
        meta = LogMeta.load(paths.root)
        keyring = Keyring.open(paths.keyring, new_provider, log_id=meta.log_id)
        given = {p.kek_id for p in old_providers}
        missing = sorted(keyring.kek_ids() - {new_provider.kek_id} - given)
        if missing:
            raise KekMismatch(
                f"the keyring of log {meta.log_id} holds keys wrapped under auditor key "
                f"{', '.join(missing)}: re-wrapping them needs its private key (--auditor-key)"
            )
        old_kek_id = meta.kek_id
        if meta.kek_rotation != new_provider.kek_id:
            replace(meta, kek_rotation=new_provider.kek_id).save(paths.root)
        try:
            count = keyring.rewrap(new_provider, old_providers=list(old_providers), update_log=False)
        except BaseException:
            # the keyring is replaced atomically: if it was not, withdraw the rotation record
            with contextlib.suppress(OSError, KeyringError, LogLayoutError):
                if keyring_kek_ids(paths.keyring) == {old_kek_id}:
                    replace(meta, kek_rotation=None).save(paths.root)
            raise
        replace(meta, kek_id=new_provider.kek_id, kek_rotation=None).save(paths.root)
    finally:
        os.close(lock)
    return KekRotation(meta.log_id, old_kek_id, new_provider.kek_id, count)


@dataclass(frozen=True)
class ShredReport:
    """What :func:`shred_period` did: the data keys it shredded now, and all the tombstones of the
    period (those shredded now and earlier)."""

    log_id: str
    period: str
    shredded: list[bytes]
    tombstones: list[Tombstone]


class _NoUnwrap:
    """The provider of a keyring opened only to shred: it neither wraps nor unwraps."""

    def __init__(self, kek_id: str) -> None:
        self._kek_id = kek_id

    @property
    def kek_id(self) -> str:
        return self._kek_id

    def wrap(self, data_key: bytes, context: bytes) -> WrappedKey:
        raise PrivateKeyRequired("a keyring opened to shred does not wrap keys")

    def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes:
        raise PrivateKeyRequired("a keyring opened to shred does not unwrap keys")


def shred_period(
    directory: str | os.PathLike[str], period: str, *, force: bool = False, now: datetime | None = None
) -> ShredReport:
    """Crypto-shred ``period`` of the log in ``directory`` (:meth:`audit.keys.Keyring.shred`): its
    data keys leave the keyring for tombstones; its entries still verify but never open again.
    Needs no key. Holds the writer lock (:class:`LogLocked` while a gateway has the log open).
    Refuses the current or a future period unless ``force``
    (:class:`~audit.keys.PeriodNotOver`). Idempotent: shredding a shredded period shreds nothing."""
    paths = LogPaths(Path(directory))
    meta = LogMeta.load(paths.root)
    lock = take_writer_lock(paths.lock, paths.root)
    try:
        keyring = Keyring.open(paths.keyring, _NoUnwrap(meta.kek_id), log_id=meta.log_id)
        shredded = keyring.shred(period, now=now, force=force)
        tombstones = [t for t in keyring.tombstones() if t.period == period]
    finally:
        os.close(lock)
    return ShredReport(meta.log_id, period, shredded, tombstones)
