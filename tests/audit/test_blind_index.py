"""Blind-index terms: keyed, deterministic, separated by field, never the clear value."""

from __future__ import annotations

import hmac
import os
from datetime import UTC, date, datetime

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from audit import blind_index, suites
from audit.blind_index import TERM_SIZE, BlindIndexer, HashName
from audit.entry import AuditEntry, index_terms
from audit.errors import UnsupportedSuite
from gateway.identity import make_resident_id

PERSON_ID = make_resident_id("120102", date(1979, 8, 1), 42)
KEY = bytes(range(32))
HASHES: list[HashName] = ["sha256", "sm3"]


def entry(subject_id: str = PERSON_ID, day: int = 3, decision: str = "allowed") -> AuditEntry:
    denied = decision == "denied"
    return AuditEntry.model_validate(
        {
            "time": datetime(2026, 11, day, 12, tzinfo=UTC),
            "node": "gw-1",
            "caller": "civil_affairs",
            "subject": {"kind": "person", "id": subject_id},
            "purpose": "employment_subsidy_review",
            "body": {
                "kind": "access",
                "provider": "hrss",
                "datasets": ["person_insurance"],
                "legal_basis": {"kind": "statutory_duty", "reference": "duty-7"},
                "decision": decision,
                "reason": "CONSENT_MISSING" if denied else "",
                "outcome": {"kind": "none" if denied else "found"},
            },
        }
    )


def reference_term(key: bytes, hash_name: HashName, field: str, value: str) -> bytes:
    message = field.encode() + b"\0" + value.encode()
    if hash_name == "sha256":
        return hmac.digest(key, message, "sha256")[:16]
    mac = crypto_hmac.HMAC(key, hashes.SM3())
    mac.update(message)
    return mac.finalize()[:16]


@pytest.mark.parametrize("hash_name", HASHES)
@settings(max_examples=50, deadline=None)
@given(
    key=st.binary(min_size=16, max_size=100),
    field=st.text(min_size=1).filter(lambda f: "\0" not in f),
    value=st.text(),
)
def test_term_is_truncated_hmac(hash_name: HashName, key: bytes, field: str, value: str) -> None:
    indexer = BlindIndexer(key, hash_name=hash_name)
    term = indexer.term(field, value)
    assert len(term) == TERM_SIZE
    assert term == reference_term(key, hash_name, field, value)
    assert term == BlindIndexer(key, hash_name=hash_name).term(field, value)


@pytest.mark.parametrize("hash_name", HASHES)
def test_terms_differ_across_keys_fields_and_values(hash_name: HashName) -> None:
    a = BlindIndexer(KEY, hash_name=hash_name)
    b = BlindIndexer(os.urandom(32), hash_name=hash_name)
    assert a.term("subject", "person:1") != b.term("subject", "person:1")
    assert a.term("caller", "tax") != a.term("provider", "tax")  # fields are separated
    assert a.term("ab", "c") != a.term("a", "bc")  # the 0x00 separator
    assert a.term("subject", "person:1") != a.term("subject", "person:2")
    other_hash = BlindIndexer(KEY, hash_name="sm3" if hash_name == "sha256" else "sha256")
    assert a.term("subject", "person:1") != other_hash.term("subject", "person:1")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["subject", "caller", "day"]), st.text(max_size=20)),
        unique=True,
        max_size=50,
    )
)
def test_no_collisions_among_distinct_terms(pairs: list[tuple[str, str]]) -> None:
    indexer = BlindIndexer(KEY)
    assert len({indexer.term(f, v) for f, v in pairs}) == len(pairs)


@pytest.mark.parametrize("hash_name", HASHES)
def test_entry_terms(hash_name: HashName) -> None:
    indexer = BlindIndexer(KEY, hash_name=hash_name)
    e = entry()
    terms = indexer.terms(e)
    assert terms == [indexer.term(f, v) for f, v in sorted(index_terms(e).items())]
    assert len(terms) == 7 and all(len(t) == TERM_SIZE for t in terms)
    assert indexer.terms(e.to_proto()) == terms
    by_field = indexer.terms_by_field(e)
    assert by_field["subject"] == indexer.subject_term("person", PERSON_ID)
    assert by_field["decision"] == indexer.term("decision", "allowed")
    blob = b"".join(terms)
    for clear in (PERSON_ID, "civil_affairs", "hrss", "employment_subsidy_review", "2026-11-03", "allowed"):
        assert clear.encode() not in blob


def test_search_finds_one_persons_entries() -> None:
    other = make_resident_id("120103", date(1990, 1, 1), 1)
    log = [entry(), entry(other), entry(day=4), entry(other, decision="denied"), entry(decision="denied")]
    indexer = BlindIndexer(KEY)
    index = [set(indexer.terms(e)) for e in log]
    wanted = indexer.subject_term("person", PERSON_ID.lower())  # any accepted form
    assert [i for i, terms in enumerate(index) if wanted in terms] == [0, 2, 4]
    denied = indexer.term("decision", "denied")
    assert [i for i, terms in enumerate(index) if {wanted, denied} <= terms] == [4]


def test_subject_term_validates() -> None:
    with pytest.raises(ValidationError):
        BlindIndexer(KEY).subject_term("person", PERSON_ID[:-1] + ("1" if PERSON_ID[-1] == "0" else "0"))


def test_memoised_terms_stay_correct(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blind_index, "_CACHE_SIZE", 2)
    indexer = BlindIndexer(KEY)
    for day in (1, 2, 3, 4, 1, 2):
        e = entry(day=day)
        assert indexer.terms(e) == [indexer.term(f, v) for f, v in sorted(index_terms(e).items())]


def test_suites_and_arguments() -> None:
    assert BlindIndexer.for_suite(KEY, "gm").hash_name == "sm3"
    assert BlindIndexer.for_suite(KEY, suites.DEFAULT).hash_name == "sha256"
    with pytest.raises(UnsupportedSuite):
        BlindIndexer.for_suite(KEY, "rot13")
    with pytest.raises(UnsupportedSuite):
        BlindIndexer(KEY, hash_name="md5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 16 bytes"):
        BlindIndexer(b"short")
    with pytest.raises(ValueError, match="NUL"):
        BlindIndexer(KEY).term("a\0b", "c")
    with pytest.raises(ValueError, match="NUL"):
        BlindIndexer(KEY).term("", "c")
    assert KEY.hex() not in repr(BlindIndexer(KEY))
