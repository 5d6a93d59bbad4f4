"""The clear search terms stored next to each sealed entry, so the index can be rebuilt without keys.

The gateway cannot decrypt its own log (it holds only the auditor's public key), so the blind
terms of an entry (:mod:`audit.blind_index`) are written in its frame, beside the sealed entry,
and the SQLite index (:mod:`audit.index`) is derived from them. Format (version 1)::

    version (u8 = 1) | kind (u8) | day (u32, days since 1970-01-01, UTC) | count (u8)
    | count x ( field (u8) | term (16 bytes) )          items sorted by field code

``kind``: 1 access, 2 consent_change, 3 push_notification. Fields: 1 subject, 2 caller,
3 purpose, 4 decision, 5 provider, 6 consent, 7 policy (the fields of
:func:`audit.entry.index_terms` other than kind and day). A term is
``HMAC(blind-index key, field || 0x00 || value)[:16]``: no identifier or value appears in clear.
The kind and the day are in clear: neither is personal, and reports select on them.

The terms are a search aid, outside the Merkle leaf (which is the hash of the sealed entry
alone): ``dsgw audit verify --auditor-key`` recomputes every entry's terms from its decrypted
content and reports an entry whose stored terms differ.

For the index, a section splits (:func:`split_section`) into its *combination key* (the section
with only the low-cardinality fields: day, kind, caller, purpose, decision, provider; itself a
valid section) and its *posting terms* (subject, consent, policy).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

from audit.blind_index import TERM_SIZE, BlindIndexer
from audit.entry import AuditEntry, InvalidEntry, index_terms
from audit.errors import AuditError
from dsgw.v1 import audit_pb2

__all__ = [
    "COLUMN_FIELDS",
    "FIELD_CODES",
    "KIND_CODES",
    "POSTING_FIELDS",
    "Encoded",
    "RecordError",
    "TermEncoder",
    "Terms",
    "day_name",
    "parse_terms",
    "split_section",
    "terms_size",
]

TERMS_VERSION = 1
KIND_CODES: dict[str, int] = {"access": 1, "consent_change": 2, "push_notification": 3}
KIND_NAMES: dict[int, str] = {code: name for name, code in KIND_CODES.items()}
FIELD_CODES: dict[str, int] = {
    "subject": 1,
    "caller": 2,
    "purpose": 3,
    "decision": 4,
    "provider": 5,
    "consent": 6,
    "policy": 7,
}
FIELD_NAMES: dict[int, str] = {code: name for name, code in FIELD_CODES.items()}
COLUMN_FIELDS = ("caller", "purpose", "decision", "provider")
"""Low-cardinality fields: part of an entry's combination (one row per distinct combination)."""
POSTING_FIELDS = ("subject", "consent", "policy")
"""High-cardinality fields: rows of the index's postings table."""
_POSTING_CODES = frozenset(FIELD_CODES[f] for f in POSTING_FIELDS)

_HEAD = struct.Struct(">BBIB")
HEAD_SIZE = _HEAD.size
ITEM_SIZE = 1 + TERM_SIZE
_CACHE_LIMIT = 4096
_EPOCH = date(1970, 1, 1)

Encoded = tuple[bytes, bytes, tuple[bytes, ...]]
"""(terms section, combination key, posting terms) of one entry."""
_RawCombo = tuple[tuple[bytes, ...], bytes, bytes]
"""(terms-section heads for 0, 1 and 2 extra items, middle items, combination key)."""
_PROTO = audit_pb2.AuditEntry


class RecordError(AuditError, ValueError):
    """A terms section that is not in the format."""

    reason = "RECORD_FORMAT"


@dataclass(frozen=True, slots=True)
class Terms:
    """A parsed terms section: kind name, day number and (field name, term) pairs."""

    kind: str
    day: int
    items: tuple[tuple[str, bytes], ...]

    def get(self, field: str) -> bytes | None:
        for name, term in self.items:
            if name == field:
                return term
        return None


def terms_size(data: bytes | memoryview, offset: int = 0) -> int:
    """The length of the terms section starting at ``offset`` (:class:`RecordError` if it cannot
    be one)."""
    if len(data) - offset < HEAD_SIZE:
        raise RecordError("terms section is truncated")
    if data[offset] != TERMS_VERSION:
        raise RecordError(f"terms section version {data[offset]} is not {TERMS_VERSION}")
    count = data[offset + HEAD_SIZE - 1]
    return HEAD_SIZE + count * ITEM_SIZE


def parse_terms(section: bytes) -> Terms:
    """Parse a whole terms section; :class:`RecordError` if malformed."""
    size = terms_size(section)
    if size != len(section):
        raise RecordError(f"terms section is {len(section)} bytes, its header says {size}")
    _version, kind, day, count = _HEAD.unpack_from(section, 0)
    kind_name = KIND_NAMES.get(kind)
    if kind_name is None:
        raise RecordError(f"unknown entry kind code {kind}")
    items: list[tuple[str, bytes]] = []
    previous = 0
    for i in range(count):
        at = HEAD_SIZE + i * ITEM_SIZE
        code = section[at]
        field = FIELD_NAMES.get(code)
        if field is None or code <= previous:
            raise RecordError(f"terms section has an unknown or unsorted field code {code}")
        previous = code
        items.append((field, section[at + 1 : at + ITEM_SIZE]))
    return Terms(kind_name, day, tuple(items))


def split_section(section: bytes) -> tuple[bytes, tuple[bytes, ...]]:
    """(combination key, posting terms) of a terms section (:class:`RecordError` if malformed).

    Byte-level, for the follower's hot path: items are sorted by field code, so the subject's
    (code 1) can only be first and a consent's or policy's (6, 7) only last."""
    size = len(section)
    if size < HEAD_SIZE or section[0] != TERMS_VERSION or size != HEAD_SIZE + ITEM_SIZE * section[6]:
        raise RecordError("malformed terms section")
    if section[1] not in KIND_NAMES:
        raise RecordError(f"unknown entry kind code {section[1]}")
    start, end = HEAD_SIZE, size
    postings: tuple[bytes, ...] = ()
    if end > start and section[start] == 1:
        postings = (section[start + 1 : start + ITEM_SIZE],)
        start += ITEM_SIZE
    if end > start and section[end - ITEM_SIZE] in (6, 7):
        postings = (*postings, section[end - TERM_SIZE : end])
        end -= ITEM_SIZE
    previous = 1
    for at in range(start, end, ITEM_SIZE):
        code = section[at]
        if not previous < code <= 5:
            raise RecordError(f"terms section has an unknown or unsorted field code {code}")
        previous = code
    return section[:6] + bytes(((end - start) // ITEM_SIZE,)) + section[start:end], postings


@lru_cache(maxsize=4096)
def day_name(day: int) -> str:
    """ISO date of a day number (days since 1970-01-01)."""
    return (_EPOCH + timedelta(days=day)).isoformat()


class TermEncoder:
    """Builds the terms section of an entry under one blind-index key (the append path).

    Everything comes from :func:`audit.entry.index_terms` (which validates enum values); the
    items of each distinct combination of the low-cardinality values (kind, day, caller,
    purpose, decision, provider) are memoised, as are push policy terms, so an entry costs about
    one HMAC (its subject). Thread-safe: the caches are dicts and a race only computes twice.
    """

    def __init__(self, indexer: BlindIndexer) -> None:
        self._indexer = indexer
        self._combos: dict[tuple[str | None, ...], tuple[bytes, int, int, int, bytes]] = {}
        self._policies: dict[str, bytes] = {}
        # the proto fast path: combinations by raw proto values (validated once, on first sight)
        self._raw: dict[tuple[object, ...], _RawCombo] = {}
        self._subject_kinds: dict[int, str] = {}
        self._mac = indexer._mac  # HMAC over field || 0x00 || value (BlindIndexer.term, inlined)

    @property
    def indexer(self) -> BlindIndexer:
        return self._indexer

    def encode(self, entry: AuditEntry | audit_pb2.AuditEntry) -> Encoded:
        """(terms section, combination key, posting terms) of ``entry``, a model or a proto
        (both give the same bytes). :class:`~audit.entry.InvalidEntry` if it has no valid terms."""
        if type(entry) is _PROTO:
            return self._encode_proto(entry)
        return self._encode_terms(index_terms(entry))

    def _encode_proto(self, message: audit_pb2.AuditEntry) -> Encoded:
        """:meth:`encode` of a proto, the append path: the same bytes as :func:`index_terms` gives,
        reading only the raw fields. A combination of raw values (body kind, day, caller,
        purpose, decision, provider) and a subject kind are looked up: on first sight they go
        through :func:`index_terms` (which validates them), so an invalid value is refused as
        before and a valid one costs a dictionary lookup afterwards."""
        which = message.WhichOneof("body")
        day = message.time.seconds // 86400
        purpose = message.purpose.code if message.HasField("purpose") else None
        if which == "access":
            body: Any = message.access
            raw: tuple[object, ...] = (which, day, message.caller, purpose, body.decision, body.provider)
        else:
            raw = (which, day, message.caller, purpose)
        combo = self._raw.get(raw)
        subject_term = b""
        if message.HasField("subject"):
            subject = message.subject
            kind_name = self._subject_kinds.get(subject.kind)
            if combo is None or kind_name is None:
                return self._learn(message, raw)
            value = kind_name + subject.id
            subject_term = self._mac(b"subject\0" + value.encode())[:TERM_SIZE]
        elif combo is None:
            return self._learn(message, raw)
        prefixes, middle, key = combo
        postings: tuple[bytes, ...]
        if which == "access":
            if subject_term:
                return prefixes[1] + b"\x01" + subject_term + middle, key, (subject_term,)
            return prefixes[0] + middle, key, ()
        if which == "consent_change":
            body = message.consent_change
            consent = self._mac(b"consent\0" + body.consent_id.encode())[:TERM_SIZE]
            tail = b"\x06" + consent
            postings = (subject_term, consent) if subject_term else (consent,)
        else:
            body = message.push_notification
            policy = body.policy_id
            cached = self._policies.get(policy)
            if cached is None:
                if len(self._policies) >= _CACHE_LIMIT:
                    self._policies.clear()
                cached = self._policies[policy] = self._indexer.term("policy", policy)
            tail = b"\x07" + cached
            postings = (subject_term, cached) if subject_term else (cached,)
        if subject_term:
            return prefixes[2] + b"\x01" + subject_term + middle + tail, key, postings
        return prefixes[1] + middle + tail, key, postings

    def _learn(self, message: audit_pb2.AuditEntry, raw: tuple[object, ...]) -> Encoded:
        """The slow path of :meth:`_encode_proto`: validate and encode through
        :func:`index_terms`, then remember the combination and the subject kind."""
        terms = index_terms(message)  # raises InvalidEntry for an invalid entry
        encoded = self._encode_terms(terms)
        get = terms.get
        low = (terms["kind"], terms["day"], get("caller"), get("purpose"), get("decision"), get("provider"))
        middle, count, kind, day, key = self._combos.get(low) or self._combo(low)
        prefixes = tuple(_HEAD.pack(TERMS_VERSION, kind, day, count + extra) for extra in (0, 1, 2))
        if len(self._raw) >= _CACHE_LIMIT:
            self._raw.clear()
        self._raw[raw] = (prefixes, middle, key)
        subject = get("subject")
        if subject is not None:
            identifier = message.subject.id
            if subject.endswith(":" + identifier):
                self._subject_kinds[message.subject.kind] = subject[: len(subject) - len(identifier)]
        return encoded

    def _encode_terms(self, terms: dict[str, str]) -> Encoded:
        get = terms.get
        low = (terms["kind"], terms["day"], get("caller"), get("purpose"), get("decision"), get("provider"))
        combo = self._combos.get(low)
        if combo is None:
            combo = self._combo(low)
        middle, count, kind, day, key = combo
        postings: tuple[bytes, ...] = ()
        head = b""
        subject = get("subject")
        if subject is not None:
            term = self._indexer.term("subject", subject)
            postings = (term,)
            head = b"\x01" + term
            count += 1
        tail = b""
        consent = get("consent")
        if consent is not None:
            term = self._indexer.term("consent", consent)
            postings = (*postings, term)
            tail = b"\x06" + term
            count += 1
        policy = get("policy")
        if policy is not None:
            cached = self._policies.get(policy)
            if cached is None:
                if len(self._policies) >= _CACHE_LIMIT:
                    self._policies.clear()
                cached = self._policies[policy] = self._indexer.term("policy", policy)
            postings = (*postings, cached)
            tail = b"\x07" + cached
            count += 1
        return _HEAD.pack(TERMS_VERSION, kind, day, count) + head + middle + tail, key, postings

    def _combo(self, low: tuple[str | None, ...]) -> tuple[bytes, int, int, int, bytes]:
        kind_name, day_text = low[0], low[1]
        assert kind_name is not None and day_text is not None
        day = (date.fromisoformat(day_text) - _EPOCH).days
        if not 0 <= day < 2**32:
            raise InvalidEntry("time: before 1970 or too far in the future for the log")
        items = [
            bytes((FIELD_CODES[name],)) + self._indexer.term(name, value)
            for name, value in zip(COLUMN_FIELDS, low[2:], strict=True)
            if value is not None
        ]
        middle = b"".join(items)
        kind = KIND_CODES[kind_name]
        key = _HEAD.pack(TERMS_VERSION, kind, day, len(items)) + middle
        combo = (middle, len(items), kind, day, key)
        if len(self._combos) >= _CACHE_LIMIT:
            self._combos.clear()
        self._combos[low] = combo
        return combo
