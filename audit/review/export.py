"""Signed export bundles: selected audit entries with inclusion proofs, verifiable offline.

An inspector who receives a bundle and trusts a few verifier keys (the logs' checkpoint keys, as
``dsgw audit vkey`` prints them, and the exporter's key) checks with :func:`verify_export`,
without the logs and without network, that every entry in the bundle is in its log at the index
stated, under a checkpoint the log signed, and that the exporter signed the whole bundle.

Bundle format (version ``dsgw-audit-export/1``), one JSON object::

    {
      "format": "dsgw-audit-export/1",
      "created": "2026-11-03T12:00:00Z",            # UTC, when the bundle was made
      "note": "...",                                  # optional free text from the exporter
      "logs": [                                       # one section per log, origins distinct
        {
          "origin": "<log origin>",                   # the checkpoint's origin line
          "log_id": "<log id>",                       # bound into each sealed entry's AEAD
          "suite": "default",                         # algorithm suite: default | gm
          "vkey": "<name>+<hex id>+<base64 key>",     # the log's checkpoint key (informative)
          "checkpoint": "<signed note text>",         # C2SP signed checkpoint, byte for byte
          "keys": [],                                 # always empty: no data key leaves the log
          "entries": [                                # ascending index, each index once
            {
              "index": 17,
              "sealed": "<base64 sealed entry>",      # the leaf data as stored in the log
              "leaf_hash": "<base64>",                # H(0x00 || sealed), RFC 9162
              "proof": ["<base64>", ...],             # inclusion proof at the checkpoint's size
              "payload": "<base64>",                  # only with --decrypt: the opened plaintext
              "entry": { ... },                       # only with --decrypt: the decoded entry
              "shredded": {"period": ..., "shredded_at": ...}  # its data key was destroyed
            }
          ]
        }
      ],
      "signatures": ["— <key name> <base64(key id || Ed25519 signature)>"]
    }

Signature: the bundle without its ``signatures`` member is serialised as canonical JSON (RFC 8785
JCS, by the ``rfc8785`` package), followed by a newline; that text is
signed as a C2SP signed note (:func:`audit.checkpoint.sign_note`) and ``signatures`` holds the
note's signature lines. So any signed-note verifier checks a bundle: rebuild the note as
``JCS(bundle - signatures) + "\\n" + "\\n" + line + "\\n" ...``.

What a verification proves, and what it does not (checked in this order):

* the bundle is well formed: every member present and of its type, base64 canonical, indices
  ascending and within JSON's safe integers, a known suite (:class:`BundleFormatError`, naming
  the member by its path, e.g. ``logs[0].entries[3].index``), before anything is verified;
* the bundle signature verifies under a trusted key (:class:`BundleSignatureError`);
* each checkpoint is well formed and signed by a trusted key, which is the key the section names
  in ``vkey`` (:class:`BundleCheckpointError`);
* each entry's leaf hash is the hash of its sealed bytes, and its inclusion proof leads to the
  checkpoint's root (:class:`EntryInclusionError`);
* for a decrypted entry, ``payload`` decodes to a valid entry equal to ``entry``; and when the
  verifier can open the sealed bytes (``data_keys``: the log's keyring with the auditor private
  key), they open, under the log id and index, to exactly ``payload``
  (:class:`EntryContentError`). Otherwise, that the plaintext is what the sealed bytes contain
  rests on the exporter's signature alone: AEAD ciphertext cannot be checked against a plaintext
  without its key.

No data key of a log is ever put in a bundle (``keys`` is always empty): a data key covers a whole
retention period of its log, so it would open every entry of that period, not only the ones
exported, and would bring them back after the period is crypto-shredded. A bundle carries the
payloads of the entries it contains and nothing that opens any other entry. (Bundles made before
this rule may carry wrapped data keys; they are still read, and used for the content check when
the verifier has the auditor key.)

An entry whose data key was shredded at retention is exported with its sealed bytes and proof
(the log still proves it existed) and marked ``shredded`` (period and time), without payload.

Every failure is a :class:`ExportError` (a :class:`~audit.errors.VerificationError`) naming the log
and entry index, never an entry's content.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import rfc8785

from audit.checkpoint import SIGNATURE_PREFIX, Signer, Verifier, open_note, sign_note, verify_note
from audit.entry import InvalidEntry, decode
from audit.errors import AuditError, KeyFormatError, UnsupportedSuite, VerificationError
from audit.keys import KeyProvider, KeyProviderError, KeyRecord, WrappedKey, dek_context
from audit.merkle import leaf_hash, verify_inclusion
from audit.review import LocatedEntry
from audit.seal import DataKeySource, KeyShredded, SealError, key_id_for, open_sealed, parse_header
from audit.suites import Suite, get_suite

__all__ = [
    "FORMAT",
    "BundleCheckpointError",
    "BundleFormatError",
    "BundleSignatureError",
    "EntryContentError",
    "EntryInclusionError",
    "ExportEntry",
    "ExportError",
    "ExportLog",
    "Shredded",
    "VerifiedExport",
    "VerifiedLog",
    "build_bundle",
    "canonical_json",
    "dump_bundle",
    "load_bundle",
    "verify_export",
]

FORMAT = "dsgw-audit-export/1"


# --- errors -----------------------------------------------------------------------------------


class ExportError(VerificationError):
    """A bundle that does not verify. ``origin`` and ``index`` name the log and entry when the
    failure is about one."""

    reason = "EXPORT"

    def __init__(self, message: str, *, origin: str | None = None, index: int | None = None) -> None:
        where = ""
        if origin is not None:
            where = f"log {origin!r}" + (f" entry {index}" if index is not None else "") + ": "
        super().__init__(where + message)
        self.origin = origin
        self.index = index


class BundleFormatError(ExportError):
    """Not a bundle of this format: bad JSON, a missing or mistyped member, bad base64, duplicates."""

    reason = "EXPORT_FORMAT"


class BundleSignatureError(ExportError):
    """The bundle's signature is missing, malformed, from no trusted key, or does not verify."""

    reason = "EXPORT_SIGNATURE"


class BundleCheckpointError(ExportError):
    """A log's checkpoint is malformed, not signed by a trusted key, not signed by the key the
    section names, or of another origin than the section."""

    reason = "EXPORT_CHECKPOINT"


class EntryInclusionError(ExportError):
    """An entry's leaf hash is not the hash of its sealed bytes, or its inclusion proof fails."""

    reason = "EXPORT_INCLUSION"


class EntryContentError(ExportError):
    """A decrypted entry that does not match: its payload does not decode, differs from the entry
    shown, or is not what the sealed bytes contain."""

    reason = "EXPORT_CONTENT"


# --- canonical JSON ---------------------------------------------------------------------------


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) serialisation, by the ``rfc8785`` package."""
    return rfc8785.dumps(value)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- building ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shredded:
    """That an entry's data key was shredded at retention: the period and when (``None`` if
    unknown)."""

    period: str | None
    shredded_at: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"period": self.period, "shredded_at": self.shredded_at}


@dataclass(frozen=True)
class ExportEntry:
    """One entry to export: its index, sealed bytes, leaf hash and inclusion proof at the
    checkpoint's tree size; ``payload`` (the opened plaintext) only when exporting decrypted;
    ``shredded`` when its data key was destroyed (then there is no payload)."""

    index: int
    sealed: bytes
    leaf_hash: bytes
    proof: tuple[bytes, ...]
    payload: bytes | None = None
    shredded: Shredded | None = None

    def __post_init__(self) -> None:
        if self.payload is not None and self.shredded is not None:
            raise ValueError("a shredded entry has no payload")


@dataclass(frozen=True)
class ExportLog:
    """One log's section: identity, signed checkpoint and the entries. It carries no data key:
    a data key opens its whole retention period, not only the entries exported."""

    origin: str
    log_id: str
    suite: str
    vkey: str
    checkpoint: bytes
    entries: tuple[ExportEntry, ...]


def _entry_json(item: ExportEntry) -> dict[str, Any]:
    data: dict[str, Any] = {
        "index": item.index,
        "sealed": _b64(item.sealed),
        "leaf_hash": _b64(item.leaf_hash),
        "proof": [_b64(p) for p in item.proof],
    }
    if item.payload is not None:
        data["payload"] = _b64(item.payload)
        data["entry"] = decode(item.payload).model_dump(mode="json")
    if item.shredded is not None:
        data["shredded"] = item.shredded.to_json()
    return data


def _unsigned(logs: Sequence[ExportLog], created: datetime, note: str) -> dict[str, Any]:
    if created.tzinfo is None:
        raise ValueError("created must be time-zone aware")
    origins = [log.origin for log in logs]
    if len(set(origins)) != len(origins):
        raise ValueError("each log appears once in a bundle")
    unsigned: dict[str, Any] = {
        "format": FORMAT,
        "created": created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "logs": [
            {
                "origin": log.origin,
                "log_id": log.log_id,
                "suite": log.suite,
                "vkey": log.vkey,
                "checkpoint": log.checkpoint.decode("utf-8"),
                "keys": [],
                "entries": [_entry_json(e) for e in sorted(log.entries, key=lambda e: e.index)],
            }
            for log in logs
        ],
    }
    if note:
        unsigned["note"] = note
    return unsigned


def build_bundle(
    logs: Sequence[ExportLog],
    signer: Signer,
    *,
    created: datetime | None = None,
    note: str = "",
    trusted: Sequence[Verifier] | None = None,
) -> dict[str, Any]:
    """The signed bundle of ``logs``, signed by ``signer``.

    The bundle is verified before it is returned (with ``trusted``, default: each section's own
    ``vkey`` and the signer's verifier), so a bundle that would not verify is never handed out."""
    unsigned = _unsigned(logs, created or datetime.now(UTC), note)
    note_text = canonical_json(unsigned) + b"\n"
    signed = sign_note(note_text, [signer])
    lines = signed[len(note_text) + 1 :].decode("utf-8").splitlines()
    bundle = dict(unsigned, signatures=lines)
    if trusted is None:
        trusted = [signer.verifier(), *(Verifier.from_vkey(log.vkey) for log in logs)]
    verify_export(bundle, trusted)
    return bundle


def dump_bundle(bundle: Mapping[str, Any]) -> bytes:
    """The bundle file's bytes: indented JSON (the signature is over the canonical form, so the
    file's layout does not matter)."""
    return json.dumps(bundle, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"


class _DuplicateMember(ValueError):
    pass


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose members are all named once: a second ``"entry"`` would be dropped by
    the parser (the last one wins) while a reader or another parser may show the first."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateMember(key)
        out[key] = value
    return out


def load_bundle(data: bytes | str) -> dict[str, Any]:
    """Parse a bundle file; :class:`BundleFormatError` if it is not a JSON object, or names a
    member twice in one object."""
    try:
        value = json.loads(data, object_pairs_hook=_unique_members)
    except _DuplicateMember as exc:
        raise BundleFormatError(
            f"the bundle names the member {str(exc)[:64]!r} twice in one object (one copy would be "
            "shown, the other checked)"
        ) from None
    except (ValueError, UnicodeDecodeError):
        raise BundleFormatError("the bundle is not valid JSON") from None
    except RecursionError:
        raise BundleFormatError("the bundle is not a bundle: its JSON is nested too deeply") from None
    if not isinstance(value, dict):
        raise BundleFormatError("the bundle is not a JSON object")
    return value


_MAX_DEPTH = 64
"""How deeply a bundle's JSON may nest (a bundle nests about ten levels)."""


def _shallow(value: Any) -> None:
    """:class:`BundleFormatError` if ``value`` nests deeper than :data:`_MAX_DEPTH` (checked
    without recursion, before anything walks it recursively)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > _MAX_DEPTH:
            raise BundleFormatError(
                f"the bundle is not a bundle: its JSON nests deeper than {_MAX_DEPTH} levels"
            )
        stack.extend((child, depth + 1) for child in children)


# --- verification -----------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedLog:
    origin: str
    tree_size: int
    root_hash: bytes
    entries: int
    decrypted: int
    content_checked: int
    """Decrypted entries whose sealed bytes were opened and compared (needs the auditor key)."""
    shredded: tuple[tuple[int, Shredded], ...] = ()
    """The entries marked shredded (index, period and time): proved, but their details are gone."""

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "tree_size": self.tree_size,
            "root_hash": _b64(self.root_hash),
            "entries": self.entries,
            "decrypted": self.decrypted,
            "content_checked": self.content_checked,
            "shredded": [{"index": i, **s.to_json()} for i, s in self.shredded],
        }


@dataclass(frozen=True)
class VerifiedExport:
    """A bundle that verified: who signed it, when it was made, each log's checkpoint and counts,
    and the decrypted entries it carries."""

    signed_by: tuple[str, ...]
    created: str
    note: str
    logs: tuple[VerifiedLog, ...]
    entries: tuple[LocatedEntry, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "verified": True,
            "signed_by": list(self.signed_by),
            "created": self.created,
            "note": self.note,
            "logs": [log.to_json() for log in self.logs],
            "entries": sum(log.entries for log in self.logs),
            "decrypted": sum(log.decrypted for log in self.logs),
            "content_checked": sum(log.content_checked for log in self.logs),
            "shredded": sum(len(log.shredded) for log in self.logs),
        }


MAX_JSON_INTEGER = 2**53 - 1
"""The largest integer JSON carries exactly (RFC 8785 refuses larger ones)."""

_KIND_NAMES: dict[type, str] = {str: "a string", int: "an integer", list: "a list", dict: "an object"}


def _need(data: Mapping[str, Any], key: str, kind: type, where: dict[str, Any], path: str = "") -> Any:
    """``data[key]`` if it is of ``kind``; else a :class:`BundleFormatError` naming the member
    (``path`` is where ``data`` is in the bundle, e.g. ``logs[0].entries[2]``)."""
    name = f"{path}.{key}" if path else key
    if key not in data:
        raise BundleFormatError(f"member {name!r} is missing", **where)
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BundleFormatError(f"member {name!r} is not {_KIND_NAMES[kind]}", **where)
    return value


def _b64d(text: Any, name: str, where: dict[str, Any]) -> bytes:
    if not isinstance(text, str):
        raise BundleFormatError(f"member {name!r} is not a base64 string", **where)
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise BundleFormatError(f"member {name!r} is not valid base64", **where) from None
    if _b64(raw) != text:
        raise BundleFormatError(f"member {name!r} is not canonical base64", **where)
    return raw


def _check_numbers(value: Any, path: str) -> None:
    """A :class:`BundleFormatError` naming the first number canonical JSON cannot carry."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_numbers(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_numbers(item, f"{path}[{i}]")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_JSON_INTEGER:
        raise BundleFormatError(f"member {path!r} is an integer beyond JSON's safe range (2^53 - 1)")
    elif isinstance(value, float) and not math.isfinite(value):
        raise BundleFormatError(f"member {path!r} is not a finite number")


def _verifiers(trusted: Sequence[str | Verifier]) -> list[Verifier]:
    out = []
    for key in trusted:
        if isinstance(key, Verifier):
            out.append(key)
        else:
            try:
                out.append(Verifier.from_vkey(key.strip()))
            except KeyFormatError as exc:
                raise KeyFormatError(f"trusted key: {exc}") from None
    if not out:
        raise KeyFormatError("no trusted verifier key given")
    return out


def _check_signature(bundle: Mapping[str, Any], verifiers: Sequence[Verifier]) -> tuple[str, ...]:
    lines = bundle.get("signatures")
    if not isinstance(lines, list) or not lines or not all(isinstance(line, str) for line in lines):
        raise BundleSignatureError("the bundle has no signature lines")
    prefix = SIGNATURE_PREFIX.decode("utf-8")
    if not all(line.startswith(prefix) and "\n" not in line for line in lines):
        raise BundleSignatureError("a bundle signature line is malformed")
    unsigned = {key: value for key, value in bundle.items() if key != "signatures"}
    try:
        text = canonical_json(unsigned) + b"\n"
    except ValueError:
        raise BundleFormatError("the bundle cannot be serialised as canonical JSON (RFC 8785)") from None
    note = text + b"\n" + "".join(line + "\n" for line in lines).encode("utf-8")
    try:
        _, names = verify_note(note, verifiers)
    except (VerificationError, KeyFormatError) as exc:
        raise BundleSignatureError(f"the bundle signature does not verify ({exc})") from None
    return tuple(names)


def _suite(section: Mapping[str, Any], where: dict[str, Any], path: str) -> Suite:
    name = _need(section, "suite", str, where, path)
    try:
        return get_suite(name)
    except UnsupportedSuite:
        raise BundleFormatError(f"unknown algorithm suite {name!r}", **where) from None


def _keys(section: Mapping[str, Any], where: dict[str, Any], path: str) -> dict[bytes, KeyRecord]:
    raw = section.get("keys", [])
    if not isinstance(raw, list):
        raise BundleFormatError(f"member '{path}.keys' is not a list", **where)
    out: dict[bytes, KeyRecord] = {}
    for i, item in enumerate(raw):
        at = f"{path}.keys[{i}]"
        if not isinstance(item, dict):
            raise BundleFormatError(f"member {at!r} is not an object", **where)
        try:
            key_id = bytes.fromhex(_need(item, "key_id", str, where, at))
            record = KeyRecord(key_id, _need(item, "period", str, where, at), "", WrappedKey.from_json(item))
        except (ValueError, AuditError) as exc:
            if isinstance(exc, BundleFormatError):
                raise
            raise BundleFormatError(f"member {at!r} is not a valid key record", **where) from None
        if len(key_id) != 8 or key_id in out:
            raise BundleFormatError(f"member {at!r} has a bad or duplicate key id", **where)
        out[key_id] = record
    return out


@dataclass(frozen=True)
class _Item:
    """An entry of a section, well formed (not yet verified)."""

    index: int
    sealed: bytes
    leaf_hash: bytes
    proof: tuple[bytes, ...]
    payload: bytes | None  # with ``shown``, only for a decrypted entry
    shown: dict[str, Any] | None
    shredded: Shredded | None = None


@dataclass(frozen=True)
class _Section:
    """A log's section, well formed (not yet verified)."""

    origin: str
    log_id: str
    suite: Suite
    vkey: Verifier
    checkpoint: bytes
    keys: dict[bytes, KeyRecord]
    items: tuple[_Item, ...]


def _parse_item(item: Any, origin: str, path: str) -> _Item:
    if not isinstance(item, dict):
        raise BundleFormatError(f"member {path!r} is not an object", origin=origin)
    index = _need(item, "index", int, {"origin": origin}, path)
    if not 0 <= index <= MAX_JSON_INTEGER:
        raise BundleFormatError(f"member '{path}.index' is out of range (0 to 2^53 - 1)", origin=origin)
    at = {"origin": origin, "index": index}
    sealed = _b64d(item.get("sealed"), f"{path}.sealed", at)
    claimed = _b64d(item.get("leaf_hash"), f"{path}.leaf_hash", at)
    proof = tuple(
        _b64d(p, f"{path}.proof[{k}]", at) for k, p in enumerate(_need(item, "proof", list, at, path))
    )
    payload, shown = None, None
    if "payload" in item or "entry" in item:
        payload = _b64d(item.get("payload"), f"{path}.payload", at)
        shown = _need(item, "entry", dict, at, path)
    shredded = None
    if "shredded" in item:
        mark = _need(item, "shredded", dict, at, path)
        values = [mark.get(name) for name in ("period", "shredded_at")]
        if set(mark) - {"period", "shredded_at"} or not all(v is None or isinstance(v, str) for v in values):
            raise BundleFormatError(f"member '{path}.shredded' is not a shredding record", **at)
        if payload is not None:
            raise BundleFormatError(f"member '{path}' is marked shredded but carries a payload", **at)
        shredded = Shredded(values[0], values[1])
    return _Item(index, sealed, claimed, proof, payload, shown, shredded)


def _parse_section(section: Any, path: str) -> _Section:
    if not isinstance(section, dict):
        raise BundleFormatError(f"member {path!r} is not an object")
    origin = _need(section, "origin", str, {}, path)
    where: dict[str, Any] = {"origin": origin}
    suite = _suite(section, where, path)
    log_id = _need(section, "log_id", str, where, path)
    if log_id != origin:  # a log's id is its checkpoint origin: the one the signed checkpoint binds
        raise BundleFormatError(f"member '{path}.log_id' is not the log's origin", **where)
    try:
        vkey = Verifier.from_vkey(_need(section, "vkey", str, where, path))
    except KeyFormatError:
        raise BundleFormatError(f"member '{path}.vkey' is not a verifier key", **where) from None
    checkpoint = _need(section, "checkpoint", str, where, path).encode("utf-8")
    keys = _keys(section, where, path)
    items: list[_Item] = []
    for j, raw in enumerate(_need(section, "entries", list, where, path)):
        item = _parse_item(raw, origin, f"{path}.entries[{j}]")
        if items and item.index <= items[-1].index:
            order = "entries are not in ascending index order, each once"
            raise BundleFormatError(order, origin=origin, index=item.index)
        items.append(item)
    return _Section(origin, log_id, suite, vkey, checkpoint, keys, tuple(items))


def _well_formed(data: Mapping[str, Any]) -> tuple[str, str, list[_Section]]:
    """The bundle's ``created``, ``note`` and parsed sections; :class:`BundleFormatError` naming
    the first member that is missing, of the wrong type, not base64, out of order or unknown."""
    if data.get("format") != FORMAT:
        raise BundleFormatError(f"not a {FORMAT} bundle")
    unknown = set(data) - {"format", "created", "note", "logs", "signatures"}
    if unknown:
        raise BundleFormatError(f"unknown member(s) {', '.join(sorted(unknown))}")
    created = _need(data, "created", str, {})
    note = data.get("note", "")
    if not isinstance(note, str):
        raise BundleFormatError("member 'note' is not a string")
    raw = _need(data, "logs", list, {})
    sections = [_parse_section(section, f"logs[{i}]") for i, section in enumerate(raw)]
    origins = [section.origin for section in sections]
    if len(set(origins)) != len(origins):
        raise BundleFormatError("a log appears twice in the bundle")
    _check_numbers({k: v for k, v in data.items() if k != "signatures"}, "")
    return created, note, sections


def _check_content(
    item: _Item, section: _Section, auditor: KeyProvider | None, keys: DataKeySource | None
) -> tuple[LocatedEntry, bool]:
    assert item.payload is not None and item.shown is not None
    where: dict[str, Any] = {"origin": section.origin, "index": item.index}
    try:
        entry = decode(item.payload)
    except InvalidEntry:
        raise EntryContentError("the decrypted payload is not a valid audit entry", **where) from None
    if entry.model_dump(mode="json") != item.shown:
        raise EntryContentError("the entry shown differs from its decrypted payload", **where)
    if keys is not None:
        try:
            _check_opens(item, section, keys, where)
        except KeyShredded:
            return LocatedEntry(section.origin, item.index, entry), False  # cannot be checked any more
        except KeyProviderError as exc:
            raise EntryContentError(f"the entry's data key does not unwrap ({exc})", **where) from None
        return LocatedEntry(section.origin, item.index, entry), True
    if auditor is not None and not section.keys:  # asked to check, but nothing to check it with
        raise EntryContentError(
            "the decrypted payload cannot be checked without its log's keyring (give the log's "
            "directory with the auditor key)",
            **where,
        )
    checked = False
    if auditor is not None:  # a bundle made before bundles stopped carrying keys
        try:
            key_id = parse_header(item.sealed, index=item.index).key_id
        except SealError:
            raise EntryContentError("the sealed bytes are not a sealed entry", **where) from None
        record = section.keys.get(key_id)
        if record is None:
            raise EntryContentError(f"the bundle lacks the data key {key_id.hex()} of this entry", **where)
        try:
            dek = auditor.unwrap(record.wrapped, dek_context(section.log_id, key_id, record.period))
        except KeyProviderError as exc:
            raise EntryContentError(f"the data key {key_id.hex()} does not unwrap ({exc})", **where) from None
        if key_id_for(dek) != key_id:
            raise EntryContentError(f"the data key record {key_id.hex()} unwraps to another key", **where)
        _check_opens(item, section, dek, where)
        checked = True
    return LocatedEntry(section.origin, item.index, entry), checked


def _check_opens(item: _Item, section: _Section, key: DataKeySource | bytes, where: dict[str, Any]) -> None:
    """That the sealed bytes of ``item`` open, with ``key`` (a keyring or the data key itself), to
    the payload shown; :class:`KeyShredded` and :class:`KeyProviderError` pass through."""
    assert item.payload is not None
    try:
        opened = open_sealed(
            item.sealed, keyring_or_dek=key, log_id=section.log_id, index=item.index, suite=section.suite
        )
    except KeyShredded:
        raise
    except SealError as exc:
        raise EntryContentError(f"the sealed bytes do not open ({exc.reason})", **where) from None
    if not hmac.compare_digest(opened, item.payload):
        raise EntryContentError("the decrypted payload is not what the sealed entry contains", **where)


def _check_shredded(item: _Item, section: _Section, keys: DataKeySource, where: dict[str, Any]) -> None:
    """With the log's keyring: an entry marked shredded must not open (else the exporter withheld
    its details while its data key still exists)."""
    try:
        open_sealed(
            item.sealed, keyring_or_dek=keys, log_id=section.log_id, index=item.index, suite=section.suite
        )
    except (KeyShredded, SealError, KeyProviderError):
        return  # shredded indeed, or not openable here: the mark stands on the exporter's signature
    raise EntryContentError(
        "the entry is marked shredded, but its data key is in the log's keyring: its details were withheld",
        **where,
    )


def _verify_section(
    section: _Section,
    verifiers: Sequence[Verifier],
    auditor: KeyProvider | None,
    keys: DataKeySource | None = None,
) -> tuple[VerifiedLog, list[LocatedEntry]]:
    where: dict[str, Any] = {"origin": section.origin}
    own, suite = section.vkey, section.suite
    if own not in verifiers:
        raise BundleCheckpointError(f"the log's key {own.name}+{own.key_id:08x} is not trusted", **where)
    try:
        checkpoint, signed_by = open_note(section.checkpoint, verifiers, hash_size=suite.digest_size)
    except (VerificationError, KeyFormatError) as exc:
        raise BundleCheckpointError(f"the checkpoint does not verify ({exc})", **where) from None
    if own.name not in signed_by:
        raise BundleCheckpointError(f"the checkpoint is not signed by the log's key {own.name}", **where)
    if checkpoint.origin != section.origin:
        raise BundleCheckpointError(f"the checkpoint is of origin {checkpoint.origin!r}", **where)
    found: list[LocatedEntry] = []
    checked = 0
    for item in section.items:
        at: dict[str, Any] = {"origin": section.origin, "index": item.index}
        if not hmac.compare_digest(leaf_hash(item.sealed, suite.hash_fn), item.leaf_hash):
            raise EntryInclusionError("the leaf hash is not the hash of the sealed bytes", **at)
        try:
            size, root = checkpoint.size, checkpoint.root_hash
            verify_inclusion(item.index, size, item.leaf_hash, list(item.proof), root, suite.hash_fn)
        except VerificationError as exc:
            raise EntryInclusionError(str(exc), **at) from None
        if item.payload is not None:
            located, ok = _check_content(item, section, auditor, keys)
            found.append(located)
            checked += ok
        elif item.shredded is not None and keys is not None:
            _check_shredded(item, section, keys, at)
    verified = VerifiedLog(
        origin=section.origin,
        tree_size=checkpoint.size,
        root_hash=checkpoint.root_hash,
        entries=len(section.items),
        decrypted=len(found),
        content_checked=checked,
        shredded=tuple((i.index, i.shredded) for i in section.items if i.shredded is not None),
    )
    return verified, found


def verify_export(
    bundle: bytes | str | Mapping[str, Any],
    trusted_vkeys: Sequence[str | Verifier],
    *,
    auditor: KeyProvider | None = None,
    data_keys: Mapping[str, DataKeySource] | None = None,
) -> VerifiedExport:
    """Verify a bundle against the verifier keys the inspector trusts (vkey strings or
    :class:`~audit.checkpoint.Verifier`). With ``data_keys`` (log id -> the log's keyring,
    holding the auditor private key) the decrypted entries of those logs are also opened from
    their sealed bytes and compared (an entry whose key was shredded since cannot be: it is not
    counted as checked). ``auditor`` does the same with the wrapped data keys that bundles made
    before this version carried.

    The checks run in the order docs/audit-review.md lists them: well-formedness (every member,
    before anything is verified), the bundle signature, then each log's checkpoint and entries.
    Fails closed: raises an :class:`ExportError` subclass at the first problem; a
    :class:`~audit.errors.KeyFormatError` for a malformed trusted key."""
    verifiers = _verifiers(trusted_vkeys)
    data = load_bundle(bundle) if isinstance(bundle, bytes | str) else dict(bundle)
    _shallow(data)
    created, note, sections = _well_formed(data)
    signed_by = _check_signature(data, verifiers)
    logs: list[VerifiedLog] = []
    entries: list[LocatedEntry] = []
    for section in sections:
        keys = (data_keys or {}).get(section.log_id)
        verified, found = _verify_section(section, verifiers, auditor, keys)
        logs.append(verified)
        entries += found
    return VerifiedExport(
        signed_by=signed_by, created=created, note=note, logs=tuple(logs), entries=tuple(entries)
    )
