"""Blind indexes: search the encrypted audit log without decrypting it.

A term is ``HMAC(key, field || 0x00 || value)`` truncated to 16 bytes, with HMAC-SHA256 in the
``default`` suite and HMAC-SM3 in the ``gm`` suite. The key is the log's blind-index key (see
:mod:`audit.keys`), separate from every encryption key. The log stores the terms of each entry
(:meth:`BlindIndexer.terms` over :func:`audit.entry.index_terms`: subject, caller agency, purpose,
decision, day, kind, provider, consent id, push policy); to find the entries about one person, an
auditor computes :meth:`BlindIndexer.subject_term` and looks it up, decrypting only the matches.

What the index reveals (its leakage), stated plainly:

* To anyone who can read the log directory but lacks the key: which entries share a value of a
  field (equality), and so how often each (unknown) value occurs. Frequencies leak the values of
  low-cardinality fields to someone who knows the base rates (the commoner ``decision`` term is
  probably "allowed"; ``day`` terms follow the log's order); a subject's identifier, name or any
  field value never appears, and the field name is hashed in, so equal values in different
  fields do not match.
* To holders of the key: everything the terms stand for, by guessing. Identity numbers,
  agencies, days and purposes are drawn from small, enumerable sets, so the key holder can test
  candidates one by one. The key is therefore a secret of the same rank as the auditor key; the
  gateway holds it only because it must write terms.
* 16-byte (128-bit) terms make accidental collisions negligible (about 2^-64 among 2^32 terms).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

from audit.entry import AuditEntry, Subject, SubjectKind, index_terms
from audit.errors import UnsupportedSuite
from audit.suites import Suite
from dsgw.v1 import audit_pb2

__all__ = ["TERM_SIZE", "BlindIndexer", "HashName"]

TERM_SIZE = 16
HashName = Literal["sha256", "sm3"]
_SUITE_HASH: dict[str, HashName] = {"default": "sha256", "gm": "sm3"}
_CACHED_FIELDS = frozenset({"kind", "day", "caller", "purpose", "decision", "provider", "policy"})
_CACHE_SIZE = 4096


class BlindIndexer:
    """Computes blind-index terms under one key. ``hash_name`` is ``"sha256"`` (default suite) or
    ``"sm3"`` (gm suite); :meth:`for_suite` picks it from the suite."""

    def __init__(self, key: bytes, *, hash_name: HashName = "sha256") -> None:
        if len(key) < 16:
            raise ValueError(f"a blind-index key has at least 16 bytes, got {len(key)}")
        self.hash_name: HashName = hash_name
        self._mac = self._mac_for(key, hash_name)
        self._cache: dict[tuple[str, str], bytes] = {}

    @classmethod
    def for_suite(cls, key: bytes, suite: str | Suite) -> BlindIndexer:
        name = suite if isinstance(suite, str) else suite.name
        try:
            return cls(key, hash_name=_SUITE_HASH[name])
        except KeyError:
            raise UnsupportedSuite(f"unknown algorithm suite {name!r}") from None

    @staticmethod
    def _mac_for(key: bytes, hash_name: str) -> Callable[[bytes], bytes]:
        """HMAC (RFC 2104) with the padded-key hash states computed once: each term then costs two
        hash-object copies (about 0.6 µs) instead of a new HMAC object."""
        if hash_name not in _SUITE_HASH.values():
            raise UnsupportedSuite(f"unknown blind-index hash {hash_name!r}; use 'sha256' or 'sm3'")
        try:
            inner, outer = hashlib.new(hash_name), hashlib.new(hash_name)
        except ValueError:  # hashlib's OpenSSL lacks SM3: cryptography has it
            template = crypto_hmac.HMAC(key, hashes.SM3())

            def sm3_mac(message: bytes) -> bytes:
                mac = template.copy()
                mac.update(message)
                return mac.finalize()

            return sm3_mac
        block = inner.block_size
        if len(key) > block:
            key = hashlib.new(hash_name, key).digest()
        padded = key.ljust(block, b"\0")
        inner.update(bytes(b ^ 0x36 for b in padded))
        outer.update(bytes(b ^ 0x5C for b in padded))

        def mac(message: bytes) -> bytes:
            i = inner.copy()
            i.update(message)
            o = outer.copy()
            o.update(i.digest())
            return o.digest()

        return mac

    def term(self, field: str, value: str) -> bytes:
        """The 16-byte term of ``value`` in ``field``: HMAC(key, field || 0x00 || value)[:16]."""
        if not field or "\0" in field:
            raise ValueError("a blind-index field name is non-empty and has no NUL character")
        return self._mac(field.encode() + b"\0" + value.encode())[:TERM_SIZE]

    def _cached_term(self, field: str, value: str) -> bytes:
        if field not in _CACHED_FIELDS:
            return self.term(field, value)
        cache = self._cache
        term = cache.get((field, value))
        if term is None:
            if len(cache) >= _CACHE_SIZE:
                cache.clear()
            term = cache[(field, value)] = self.term(field, value)
        return term

    def terms(self, entry: AuditEntry | audit_pb2.AuditEntry) -> list[bytes]:
        """The terms of an entry (model or proto), one per :func:`audit.entry.index_terms` field,
        in field-name order. Terms of low-cardinality fields (kind, day, caller, purpose, decision,
        provider, policy) are memoised, so an entry costs about one HMAC, for its subject."""
        return [self._cached_term(name, value) for name, value in sorted(index_terms(entry).items())]

    def terms_by_field(self, entry: AuditEntry | audit_pb2.AuditEntry) -> dict[str, bytes]:
        """The terms of an entry by field name (for an index that keeps one column per field)."""
        return {name: self._cached_term(name, value) for name, value in index_terms(entry).items()}

    def subject_term(self, kind: SubjectKind | str, identifier: str) -> bytes:
        """The search term for a subject, from any accepted form of its identifier (normalised
        and validated as entries are; raises ``pydantic.ValidationError`` for an invalid one)."""
        return self.term("subject", Subject(kind=SubjectKind(kind), id=identifier).term)

    def __repr__(self) -> str:
        return f"BlindIndexer(hash_name={self.hash_name!r})"
