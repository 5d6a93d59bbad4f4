"""Sealing entries: AEAD round trips in both suites, binding to log and index, typed failures, and
no clear identifier in anything written."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import suites
from audit.blind_index import BlindIndexer
from audit.entry import AuditEntry, decode, encode
from audit.errors import AuditError, DecryptionError, UnsupportedSuite, VerificationError
from audit.keys import FileKeyProvider, Keyring, generate_auditor_key, generate_blind_index_key
from audit.seal import (
    FORMAT_VERSION,
    HEADER_SIZE,
    KEY_ID_SIZE,
    SUITE_IDS,
    TAG_SIZE,
    KeyExhausted,
    KeyShredded,
    Sealer,
    SealError,
    TamperedEntry,
    UnknownKeyId,
    WrongKey,
    associated_data,
    key_id_for,
    open_sealed,
    parse_header,
    seal,
)
from gateway.identity import make_resident_id

SUITES = ["default", "gm"]
LOG = "tianjin-dsgw-audit"
PERSON_ID = make_resident_id("120101", date(1990, 2, 28), 135)
OPERATOR_NAME = "张伟"


class OneKey:
    """A DataKeySource holding one DEK."""

    def __init__(self, dek: bytes) -> None:
        self.dek = dek

    def data_key(self, key_id: bytes) -> bytes:
        if key_id != key_id_for(self.dek):
            raise UnknownKeyId(f"no data key {key_id.hex()}", key_id=key_id)
        return self.dek


@pytest.fixture
def dek() -> bytes:
    return os.urandom(32)


@settings(max_examples=100, deadline=None)
@given(payload=st.binary(max_size=2000), index=st.integers(0, 2**64 - 1), suite=st.sampled_from(SUITES))
def test_round_trip(payload: bytes, index: int, suite: str) -> None:
    dek = os.urandom(32)
    blob = seal(payload, dek=dek, key_id=key_id_for(dek), log_id=LOG, index=index, suite=suite)
    assert len(blob) == HEADER_SIZE + len(payload) + TAG_SIZE
    assert open_sealed(blob, keyring_or_dek=dek, log_id=LOG, index=index, suite=suite) == payload
    assert open_sealed(blob, keyring_or_dek=OneKey(dek), log_id=LOG, index=index, suite=suite) == payload


@pytest.mark.parametrize("suite", SUITES)
def test_format(dek: bytes, suite: str) -> None:
    blob = seal(b"payload", dek=dek, log_id=LOG, index=7, suite=suite)
    header = parse_header(blob)
    assert (header.version, header.suite, header.key_id) == (FORMAT_VERSION, suite, key_id_for(dek))
    assert blob[0] == 1 and blob[1] == SUITE_IDS[suite]
    assert blob[2 : 2 + KEY_ID_SIZE] == key_id_for(dek)
    assert b"payload" not in blob


def test_default_suite_is_plain_aes_256_gcm(dek: bytes) -> None:
    blob = seal(b"payload", dek=dek, log_id=LOG, index=3)
    aad = associated_data(LOG, 3, blob[:10])
    assert (
        aad
        == b"dsgw-audit-v1" + len(LOG).to_bytes(2, "big") + LOG.encode() + (3).to_bytes(8, "big") + blob[:10]
    )
    assert AESGCM(dek).decrypt(blob[10:22], blob[22:], aad) == b"payload"
    assert suites.AES_256_GCM.decrypt(dek, blob[10:22], blob[22:], aad) == b"payload"


def test_gm_suite_is_sm4_gcm_with_a_derived_128_bit_key(dek: bytes) -> None:
    blob = seal(b"payload", dek=dek, log_id=LOG, index=3, suite="gm")
    key = HKDF(hashes.SM3(), 16, salt=None, info=b"dsgw-audit-v1 sm4-gcm").derive(dek)
    aad = associated_data(LOG, 3, blob[:10])
    # an independent SM4-GCM implementation (audit.suites) opens it, and checks the tag
    assert suites.SM4_GCM.decrypt(key, blob[10:22], blob[22:], aad) == b"payload"
    with pytest.raises(DecryptionError):
        suites.SM4_GCM.decrypt(key, blob[10:22], blob[22:-1] + bytes([blob[-1] ^ 1]), aad)
    ours = seal(b"payload", dek=dek, log_id=LOG, index=3, suite=suites.GM)  # a Suite object works too
    assert open_sealed(ours, keyring_or_dek=dek, log_id=LOG, index=3, suite=suites.GM) == b"payload"


@pytest.mark.parametrize("suite", SUITES)
def test_nonces_are_fresh(dek: bytes, suite: str) -> None:
    sealer = Sealer(dek, log_id=LOG, suite=suite)
    blobs = {sealer.seal(b"same", 1) for _ in range(200)}
    assert len(blobs) == 200
    assert len({b[10:22] for b in blobs}) == 200
    assert sealer.sealed == 200


@pytest.mark.parametrize("suite", SUITES)
def test_every_flipped_bit_is_detected(dek: bytes, suite: str) -> None:
    payload = b"an audit entry payload"
    blob = seal(payload, dek=dek, log_id=LOG, index=42, suite=suite)
    key_id_bits = range(16, 16 + 8 * KEY_ID_SIZE)
    for bit in range(len(blob) * 8):
        tampered = bytearray(blob)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(TamperedEntry) as info:
            open_sealed(bytes(tampered), keyring_or_dek=dek, log_id=LOG, index=42, suite=suite)
        assert info.value.index == 42 and "entry 42" in str(info.value)
        # a keyring finds no key for a changed key id; every other change is tampering
        expected: type[SealError] = UnknownKeyId if bit in key_id_bits else TamperedEntry
        with pytest.raises(expected) as keyring_info:
            open_sealed(bytes(tampered), keyring_or_dek=OneKey(dek), log_id=LOG, index=42, suite=suite)
        assert keyring_info.value.index == 42


@pytest.mark.parametrize("suite", SUITES)
def test_truncated_or_extended_blobs_are_tampered(dek: bytes, suite: str) -> None:
    blob = seal(b"payload", dek=dek, log_id=LOG, index=0, suite=suite)
    for cut in (0, 1, HEADER_SIZE, HEADER_SIZE + TAG_SIZE - 1, len(blob) - 1):
        with pytest.raises(TamperedEntry, match="entry 0"):
            open_sealed(blob[:cut], keyring_or_dek=dek, log_id=LOG, index=0, suite=suite)
    with pytest.raises(TamperedEntry):
        open_sealed(blob + b"\0", keyring_or_dek=dek, log_id=LOG, index=0, suite=suite)


@pytest.mark.parametrize("suite", SUITES)
def test_an_entry_cannot_be_moved(dek: bytes, suite: str) -> None:
    blob = seal(b"payload", dek=dek, log_id=LOG, index=5, suite=suite)
    for index in (4, 6, 5 + 2**32, 2**64 - 1):
        with pytest.raises(TamperedEntry, match=f"entry {index}:"):
            open_sealed(blob, keyring_or_dek=dek, log_id=LOG, index=index, suite=suite)
    for log_id in ("other-log", LOG + "x", LOG.encode() + b"\0"):
        with pytest.raises(TamperedEntry):
            open_sealed(blob, keyring_or_dek=dek, log_id=log_id, index=5, suite=suite)
    assert open_sealed(blob, keyring_or_dek=dek, log_id=LOG.encode(), index=5, suite=suite) == b"payload"


def test_a_suite_downgrade_is_refused(dek: bytes) -> None:
    blob = seal(b"payload", dek=dek, log_id=LOG, index=1, suite="gm")
    with pytest.raises(TamperedEntry, match="sealed with suite 'gm', the log uses 'default'"):
        open_sealed(blob, keyring_or_dek=dek, log_id=LOG, index=1, suite="default")
    relabelled = blob[:1] + bytes([SUITE_IDS["default"]]) + blob[2:]
    with pytest.raises(TamperedEntry):
        open_sealed(relabelled, keyring_or_dek=dek, log_id=LOG, index=1, suite="default")
    with pytest.raises(UnsupportedSuite):
        seal(b"x", dek=dek, log_id=LOG, index=1, suite="rot13")


@pytest.mark.parametrize("suite", SUITES)
def test_wrong_and_unknown_keys(dek: bytes, suite: str) -> None:
    blob = seal(b"payload", dek=dek, log_id=LOG, index=9, suite=suite)
    other = os.urandom(32)
    with pytest.raises(WrongKey, match=f"entry 9: sealed with data key {key_id_for(dek).hex()}") as info:
        open_sealed(blob, keyring_or_dek=other, log_id=LOG, index=9, suite=suite)
    assert info.value.key_id == key_id_for(dek).hex()
    with pytest.raises(UnknownKeyId, match="entry 9") as unknown:
        open_sealed(blob, keyring_or_dek=OneKey(other), log_id=LOG, index=9, suite=suite)
    assert unknown.value.key_id == key_id_for(dek).hex()


def test_failures_are_typed_never_invalid_tag(dek: bytes) -> None:
    assert issubclass(TamperedEntry, VerificationError) and issubclass(WrongKey, DecryptionError)
    assert issubclass(KeyShredded, SealError) and issubclass(UnknownKeyId, AuditError)
    blob = seal(b"payload", dek=dek, log_id=LOG, index=0)
    try:
        open_sealed(blob[:-1] + b"\0", keyring_or_dek=dek, log_id=LOG, index=0)
    except SealError as exc:
        assert not isinstance(exc, InvalidTag)
        assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
    else:  # pragma: no cover
        pytest.fail("a tampered entry opened")


def test_key_id_argument_is_checked(dek: bytes) -> None:
    with pytest.raises(ValueError, match="not the id of this data key"):
        seal(b"x", dek=dek, key_id=b"\0" * 8, log_id=LOG, index=0)
    with pytest.raises(ValueError, match="32 bytes"):
        seal(b"x", dek=dek[:16], log_id=LOG, index=0)
    with pytest.raises(ValueError, match="u64"):
        seal(b"x", dek=dek, log_id=LOG, index=-1)
    with pytest.raises(ValueError, match="log id"):
        seal(b"x", dek=dek, log_id="", index=0)


def test_sealer_refuses_past_its_limit(dek: bytes) -> None:
    sealer = Sealer(dek, log_id=LOG, limit=3)
    for i in range(3):
        sealer.seal(b"x", i)
    assert sealer.remaining == 0
    with pytest.raises(KeyExhausted, match="rotate"):
        sealer.seal(b"x", 3)
    assert dek.hex() not in repr(sealer)


@pytest.mark.parametrize("suite", SUITES)
def test_seal_many_opens_like_seal_with_fresh_nonces(dek: bytes, suite: str) -> None:
    sealer = Sealer(dek, log_id=LOG, suite=suite)
    payloads = [os.urandom(n) for n in (0, 1, 200, 5000)]
    sealed = sealer.seal_many(payloads, 2**40)
    assert sealer.sealed == 4
    assert len({blob[2 + KEY_ID_SIZE : HEADER_SIZE] for blob in sealed}) == 4
    for i, (payload, blob) in enumerate(zip(payloads, sealed, strict=True)):
        assert blob[: 2 + KEY_ID_SIZE] == bytes((FORMAT_VERSION, SUITE_IDS[suite])) + key_id_for(dek)
        assert open_sealed(blob, keyring_or_dek=dek, log_id=LOG, index=2**40 + i, suite=suite) == payload
        with pytest.raises(TamperedEntry):  # bound to its own index
            open_sealed(blob, keyring_or_dek=dek, log_id=LOG, index=2**40 + i + 1, suite=suite)
    assert sealer.seal_many([], 7) == []


def test_seal_many_refuses_past_the_limit_and_bad_indices(dek: bytes) -> None:
    sealer = Sealer(dek, log_id=LOG, limit=3)
    sealer.seal_many([b"a", b"b"], 0)
    with pytest.raises(KeyExhausted, match="rotate"):
        sealer.seal_many([b"c", b"d"], 2)
    assert sealer.sealed == 2  # nothing sealed by the refused call
    with pytest.raises(ValueError, match="u64"):
        sealer.seal_many([b"x"], -1)
    with pytest.raises(ValueError, match="u64"):
        sealer.seal_many([b"x"], 2**64)
    assert sealer.seal_many([b"c"], 2) and sealer.remaining == 0


def _entry(index: int) -> AuditEntry:
    return AuditEntry.model_validate(
        {
            "time": datetime(2026, 11, 3, 12, 0, index, tzinfo=UTC),
            "node": "gw-1",
            "request_id": f"req-{index}",
            "caller": "tax",
            "operator": OPERATOR_NAME,
            "subject": {"kind": "person", "id": PERSON_ID},
            "purpose": "employment_subsidy_review",
            "body": {
                "kind": "access",
                "provider": "hrss",
                "datasets": ["person_insurance"],
                "fields": ["currently_insured"],
                "legal_basis": {"kind": "consent", "reference": "consent-123"},
                "decision": "allowed",
                "outcome": {"kind": "found"},
            },
        }
    )


@pytest.mark.parametrize("suite", SUITES)
def test_no_clear_identifier_or_name_in_anything_written(tmp_path: Path, suite: str) -> None:
    """Seal entries about one person into a log directory, with the keyring and blind-index terms,
    then grep every file: the identity number (in any stored form) and the operator's name are absent."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    auditor = generate_auditor_key(secrets / "auditor.key")
    gateway = FileKeyProvider.from_public_key_file(auditor.public_path)
    keyring = Keyring.create(log_dir / "keyring.jsonl", gateway, log_id=LOG)
    index_key = generate_blind_index_key(secrets / "blind-index.key")
    keyring.set_blind_index_key(index_key)
    indexer = BlindIndexer.for_suite(index_key, suite)
    data_key = keyring.current(datetime(2026, 11, 3, tzinfo=UTC))
    sealer = Sealer(data_key.key, log_id=LOG, suite=suite)
    with open(log_dir / "entries.bin", "wb") as entries, open(log_dir / "index.bin", "wb") as index:
        for i in range(20):
            entries.write(sealer.seal(encode(_entry(i)), i))
            index.write(b"".join(indexer.terms(_entry(i))))

    needles = [PERSON_ID, PERSON_ID.lower(), PERSON_ID[:6] + PERSON_ID[8:17], OPERATOR_NAME, "consent-123"]
    written = sorted(p.name for p in log_dir.iterdir())
    assert written == [
        "entries.bin",
        "index.bin",
        "keyring.jsonl",
        "keyring.jsonl.lock",
    ]  # the lock file is empty
    for path in log_dir.iterdir():
        data = path.read_bytes()
        for needle in needles:
            for encoding in ("utf-8", "utf-16-le", "utf-16-be", "gb18030"):
                assert needle.encode(encoding) not in data, (path.name, needle, encoding)

    # and the auditor reads it all back
    reader = Keyring.open(
        log_dir / "keyring.jsonl", FileKeyProvider.from_private_key_file(auditor.private_path), log_id=LOG
    )
    blob = (log_dir / "entries.bin").read_bytes()[: len(sealer.seal(encode(_entry(0)), 0))]
    assert decode(open_sealed(blob, keyring_or_dek=reader, log_id=LOG, index=0, suite=suite)) == _entry(0)
