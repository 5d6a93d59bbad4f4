"""Key management: auditor key files, HPKE wrapping, the keyring (rotation, KEK rotation,
crypto-shredding) and the blind-index key."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from audit import merkle
from audit.errors import KeyFormatError
from audit.keys import (
    BlindIndexKeyMismatch,
    FileKeyProvider,
    InsecureKeyFile,
    KekMismatch,
    KeyProvider,
    Keyring,
    KeyringError,
    PrivateKeyRequired,
    UnwrapFailed,
    WrappedKey,
    dek_context,
    generate_auditor_key,
    generate_blind_index_key,
    hpke_open,
    hpke_seal,
    kek_id_for,
    load_auditor_private_key,
    load_auditor_public_key,
    load_blind_index_key,
    period_of,
)
from audit.seal import (
    DataKeySource,
    KeyShredded,
    Sealer,
    UnknownKeyId,
    key_id_for,
    open_sealed,
)

LOG = "tianjin-dsgw-audit"
NOV = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
DEC = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
JAN = datetime(2027, 1, 15, 0, 0, tzinfo=UTC)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def auditor(tmp_path: Path) -> FileKeyProvider:
    (tmp_path / "keys").mkdir()
    files = generate_auditor_key(tmp_path / "keys" / "auditor.key")
    return FileKeyProvider.from_private_key_file(files.private_path)


@pytest.fixture
def gateway(auditor: FileKeyProvider) -> FileKeyProvider:
    return FileKeyProvider(auditor.public_key)


def seal_in(keyring: Keyring, when: datetime, indexes: range, suite: str = "default") -> dict[int, bytes]:
    sealer = Sealer(keyring.current(when).key, log_id=keyring.log_id, suite=suite)
    return {i: sealer.seal(f"entry {i}".encode(), i) for i in indexes}


def assert_open(blobs: dict[int, bytes], source: DataKeySource | bytes, suite: str = "default") -> None:
    for index, blob in blobs.items():
        assert (
            open_sealed(blob, keyring_or_dek=source, log_id=LOG, index=index, suite=suite)
            == f"entry {index}".encode()
        )


# --- key files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key_format", ["pem", "raw"])
def test_generate_auditor_key(tmp_path: Path, key_format: Literal["pem", "raw"]) -> None:
    files = generate_auditor_key(tmp_path / "auditor.key", key_format=key_format)
    assert files.public_path == tmp_path / "auditor.key.pub"
    assert mode(files.private_path) == 0o600 and mode(files.public_path) == 0o600
    private = load_auditor_private_key(files.private_path)
    public = load_auditor_public_key(files.public_path)
    raw_public = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert (
        private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        == raw_public
    )
    assert files.kek_id == hashlib.sha256(raw_public).digest()[:8].hex() == kek_id_for(public)
    if key_format == "pem":
        assert files.private_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
        assert files.public_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    else:
        assert len(files.private_path.read_bytes()) == 32 == len(files.public_path.read_bytes())
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "auditor.key",
        "auditor.key.pub",
    ]  # no temp files left


def test_key_files_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        files = generate_auditor_key(tmp_path / "a.key")
        key_path = tmp_path / "blind.key"
        generate_blind_index_key(key_path)
    finally:
        os.umask(old)
    assert mode(files.private_path) == mode(files.public_path) == mode(key_path) == 0o600


def test_passphrase_protected_key(tmp_path: Path) -> None:
    files = generate_auditor_key(tmp_path / "auditor.key", passphrase=b"correct horse")
    assert b"ENCRYPTED" in files.private_path.read_bytes()
    provider = FileKeyProvider.from_private_key_file(files.private_path, passphrase=b"correct horse")
    assert provider.kek_id == files.kek_id
    with pytest.raises(KeyFormatError):
        load_auditor_private_key(files.private_path, passphrase=b"wrong")
    with pytest.raises(KeyFormatError, match="raw key file cannot be passphrase"):
        generate_auditor_key(tmp_path / "raw.key", key_format="raw", passphrase=b"x")


def test_key_files_are_not_overwritten(tmp_path: Path) -> None:
    first = generate_auditor_key(tmp_path / "auditor.key")
    with pytest.raises(FileExistsError):
        generate_auditor_key(tmp_path / "auditor.key")
    assert load_auditor_public_key(first.public_path) is not None
    second = generate_auditor_key(tmp_path / "auditor.key", overwrite=True)
    assert second.kek_id != first.kek_id
    generate_blind_index_key(tmp_path / "b.key")
    with pytest.raises(FileExistsError):
        generate_blind_index_key(tmp_path / "b.key")


def test_readable_secret_key_files_are_refused(tmp_path: Path) -> None:
    files = generate_auditor_key(tmp_path / "auditor.key")
    blind = tmp_path / "blind.key"
    generate_blind_index_key(blind)
    os.chmod(files.private_path, 0o640)
    os.chmod(blind, 0o604)
    with pytest.raises(InsecureKeyFile, match="want 0600"):
        FileKeyProvider.from_private_key_file(files.private_path)
    with pytest.raises(InsecureKeyFile):
        load_blind_index_key(blind)
    assert FileKeyProvider.from_private_key_file(files.private_path, check_permissions=False).can_unwrap
    assert len(load_blind_index_key(blind, check_permissions=False)) == 32


def test_malformed_key_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"x" * 31)
    os.chmod(bad, 0o600)
    with pytest.raises(KeyFormatError, match="neither"):
        load_auditor_public_key(bad)
    with pytest.raises(KeyFormatError, match="neither"):
        load_auditor_private_key(bad)
    with pytest.raises(KeyFormatError, match="32 raw bytes"):
        load_blind_index_key(bad)
    ed = tmp_path / "ed.pem"
    ed.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(KeyFormatError, match="not an X25519 public key"):
        load_auditor_public_key(ed)


# --- wrapping -----------------------------------------------------------------------------------


def test_hpke_is_rfc_9180_compatible() -> None:
    hpke = pytest.importorskip("cryptography.hazmat.primitives.hpke")
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    key = X25519PrivateKey.generate()
    ours = hpke_seal(key.public_key(), b"context", b"k" * 32)
    assert suite.decrypt(ours, key, info=b"context") == b"k" * 32
    theirs = suite.encrypt(b"z" * 32, key.public_key(), info=b"context")
    assert hpke_open(key, b"context", theirs) == b"z" * 32


def test_wrap_unwrap_and_its_failures(auditor: FileKeyProvider, gateway: FileKeyProvider) -> None:
    assert isinstance(auditor, KeyProvider) and isinstance(gateway, KeyProvider)
    dek = os.urandom(32)
    wrapped = gateway.wrap(dek, b"ctx")
    assert wrapped.kek_id == gateway.kek_id == auditor.kek_id
    assert dek not in wrapped.blob and len(wrapped.blob) == 32 + 32 + 16
    assert gateway.wrap(dek, b"ctx").blob != wrapped.blob  # a fresh ephemeral key each time
    assert auditor.unwrap(wrapped, b"ctx") == dek
    assert WrappedKey.from_json(wrapped.to_json()) == wrapped
    with pytest.raises(PrivateKeyRequired, match="only the public key"):
        gateway.unwrap(wrapped, b"ctx")
    with pytest.raises(UnwrapFailed, match="wrong context"):
        auditor.unwrap(wrapped, b"other ctx")
    flipped = WrappedKey(wrapped.kek_id, wrapped.algorithm, wrapped.blob[:-1] + bytes([wrapped.blob[-1] ^ 1]))
    with pytest.raises(UnwrapFailed):
        auditor.unwrap(flipped, b"ctx")
    other = FileKeyProvider(X25519PrivateKey.generate().public_key(), None)
    with pytest.raises(KekMismatch):
        auditor.unwrap(other.wrap(dek, b"ctx"), b"ctx")
    stranger = X25519PrivateKey.generate()
    impostor = FileKeyProvider(stranger.public_key(), stranger)
    forged = WrappedKey(impostor.kek_id, wrapped.algorithm, wrapped.blob)
    with pytest.raises(UnwrapFailed):
        impostor.unwrap(forged, b"ctx")
    assert "private" in repr(auditor) and "public only" in repr(gateway)


def test_mismatched_key_pair_is_refused() -> None:
    with pytest.raises(KeyFormatError, match="does not match"):
        FileKeyProvider(X25519PrivateKey.generate().public_key(), X25519PrivateKey.generate())


# --- periods ------------------------------------------------------------------------------------


def test_period_of() -> None:
    when = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)
    assert [period_of(when, g) for g in ("year", "quarter", "month", "day")] == [
        "2026",
        "2026-Q4",
        "2026-11",
        "2026-11-30",
    ]
    beijing = datetime(2026, 12, 1, 7, 59, tzinfo=timezone(timedelta(hours=8)))
    assert period_of(beijing) == "2026-11"  # periods are UTC
    with pytest.raises(ValueError, match="time-zone-aware"):
        period_of(datetime(2026, 1, 1))


# --- keyring: writer and reader -----------------------------------------------------------------


def test_keyring_file(tmp_path: Path, gateway: FileKeyProvider) -> None:
    keyring = Keyring.create(tmp_path / "keyring.jsonl", gateway, log_id=LOG)
    assert mode(keyring.path) == 0o600
    key = keyring.current(NOV)
    assert keyring.current(NOV) is key  # same period: same DEK, no new line
    assert key.key_id == key_id_for(key.key) and key.period == "2026-11"
    assert key.key.hex() not in repr(key)
    lines = [json.loads(line) for line in keyring.path.read_text().splitlines()]
    assert lines[0] == {"type": "keyring", "version": 1, "log_id": LOG, "granularity": "month"}
    assert [(line["type"], line["key_id"], line["period"]) for line in lines[1:]] == [
        ("dek", key.key_id.hex(), "2026-11")
    ]
    assert lines[1]["kek_id"] == gateway.kek_id
    assert (
        key.key not in keyring.path.read_bytes() and key.key.hex().encode() not in keyring.path.read_bytes()
    )
    assert mode(keyring.path) == 0o600
    with pytest.raises(FileExistsError):
        Keyring.create(keyring.path, gateway, log_id=LOG)
    with pytest.raises(KeyringError, match="not 'other'"):
        Keyring.open(keyring.path, gateway, log_id="other")
    assert Keyring.open_or_create(keyring.path, gateway, log_id=LOG).records() == keyring.records()


def test_the_gateway_seals_but_cannot_read(
    tmp_path: Path, gateway: FileKeyProvider, auditor: FileKeyProvider
) -> None:
    writer = Keyring.create(tmp_path / "keyring.jsonl", gateway, log_id=LOG)
    blobs = seal_in(writer, NOV, range(3))
    with pytest.raises(PrivateKeyRequired):
        open_sealed(blobs[0], keyring_or_dek=writer, log_id=LOG, index=0)
    reader = Keyring.open(writer.path, auditor, log_id=LOG)
    assert_open(blobs, reader)


@pytest.mark.parametrize("suite", ["default", "gm"])
def test_rotation_keeps_old_entries_readable(
    tmp_path: Path, gateway: FileKeyProvider, auditor: FileKeyProvider, suite: str
) -> None:
    writer = Keyring.create(tmp_path / "keyring.jsonl", gateway, log_id=LOG)
    november = seal_in(writer, NOV, range(0, 5), suite)
    december = seal_in(writer, DEC, range(5, 10), suite)  # a new period: a new DEK
    rotated = writer.rotate(DEC)  # on demand
    assert rotated.period == "2026-12" and writer.current(DEC) is rotated
    on_demand = seal_in(writer, DEC, range(10, 12), suite)
    restarted = Keyring.open(writer.path, gateway, log_id=LOG)  # a restarted writer: a new DEK
    after_restart = seal_in(restarted, DEC, range(12, 14), suite)
    assert len({r.key_id for r in restarted.records()}) == 4
    assert restarted.periods() == ["2026-11", "2026-12"]
    reader = Keyring.open(writer.path, auditor, log_id=LOG)
    for blobs in (november, december, on_demand, after_restart):
        assert_open(blobs, reader, suite)


def test_reader_sees_keys_added_after_it_opened(
    tmp_path: Path, gateway: FileKeyProvider, auditor: FileKeyProvider
) -> None:
    writer = Keyring.create(tmp_path / "keyring.jsonl", gateway, log_id=LOG)
    reader = Keyring.open(writer.path, auditor, log_id=LOG)
    blobs = seal_in(writer, NOV, range(2))
    assert_open(blobs, reader)  # unknown id: the reader re-reads the file once
    with pytest.raises(UnknownKeyId, match="entry 0"):
        open_sealed(blobs[0][:2] + b"\0" * 8 + blobs[0][10:], keyring_or_dek=reader, log_id=LOG, index=0)


def test_kek_rotation_rewraps_without_touching_entries(
    tmp_path: Path, gateway: FileKeyProvider, auditor: FileKeyProvider
) -> None:
    writer = Keyring.create(tmp_path / "keyring.jsonl", gateway, log_id=LOG)
    writer.set_blind_index_key(b"b" * 32)
    old_entries = seal_in(writer, NOV, range(0, 4))
    old_wrapped = [r.wrapped.blob for r in writer.records()]

    new_files = generate_auditor_key(tmp_path / "keys" / "auditor-2027.key")
    new_auditor = FileKeyProvider.from_private_key_file(new_files.private_path)
    rotating = Keyring.open(writer.path, auditor, log_id=LOG)
    assert rotating.rewrap(FileKeyProvider(new_auditor.public_key)) == 2  # one DEK, the blind-index key
    assert all(r.wrapped.kek_id == new_auditor.kek_id for r in rotating.records())
    text = writer.path.read_bytes()
    assert not any(base64.b64encode(blob) in text for blob in old_wrapped)

    new_writer = Keyring.open(
        writer.path, FileKeyProvider.from_public_key_file(new_files.public_path), log_id=LOG
    )
    new_entries = seal_in(new_writer, DEC, range(4, 8))

    reader = Keyring.open(writer.path, new_auditor, log_id=LOG)  # the new private key only
    assert_open(old_entries, reader)
    assert_open(new_entries, reader)
    assert reader.blind_index_key() == b"b" * 32
    old_reader = Keyring.open(writer.path, auditor, log_id=LOG)  # the old private key no longer reads
    with pytest.raises(KekMismatch):
        open_sealed(old_entries[0], keyring_or_dek=old_reader, log_id=LOG, index=0)
    with pytest.raises(KekMismatch, match="no provider"):
        Keyring.open(writer.path, gateway, log_id=LOG).rewrap(auditor)


def test_kek_rotation_needs_the_old_private_key(tmp_path: Path, gateway: FileKeyProvider) -> None:
    writer = Keyring.create(tmp_path / "keyring.jsonl", gateway, log_id=LOG)
    seal_in(writer, NOV, range(1))
    other = X25519PrivateKey.generate()
    with pytest.raises(PrivateKeyRequired):
        writer.rewrap(FileKeyProvider(other.public_key(), other))
    assert all(
        r.wrapped.kek_id == gateway.kek_id for r in Keyring.open(writer.path, gateway, log_id=LOG).records()
    )


# --- crypto-shredding ---------------------------------------------------------------------------


def test_shredding_a_period(tmp_path: Path, gateway: FileKeyProvider, auditor: FileKeyProvider) -> None:
    writer = Keyring.create(tmp_path / "keyring.jsonl", gateway, log_id=LOG)
    november = seal_in(writer, NOV, range(0, 3))
    writer.rotate(NOV)
    november |= seal_in(writer, NOV, range(3, 6))  # two DEKs in November
    december = seal_in(writer, DEC, range(6, 9))
    everything = {**november, **december}
    root_before = merkle.root([merkle.leaf_hash(everything[i]) for i in sorted(everything)])

    reader = Keyring.open(writer.path, auditor, log_id=LOG)
    assert_open(november, reader)  # caches November's DEKs: shredding must drop them too
    november_ids = {r.key_id for r in reader.records() if r.period == "2026-11"}
    hardlink = tmp_path / "old-keyring-inode"
    os.link(writer.path, hardlink)  # keeps the pre-shredding inode reachable, to check it is scrubbed

    with pytest.raises(KeyringError, match="not over yet"):
        reader.shred("2026-12", now=DEC)
    with pytest.raises(KeyringError, match="not a month period"):
        reader.shred("2026-13", now=JAN)
    shredded = reader.shred("2026-11", now=DEC)
    assert set(shredded) == november_ids and len(shredded) == 2
    assert reader.shred("2026-11", now=DEC) == []  # idempotent

    for index, blob in november.items():
        with pytest.raises(
            KeyShredded, match=f"entry {index}: data key .* of period 2026-11 was shredded at 2026-12-01"
        ) as info:
            open_sealed(blob, keyring_or_dek=reader, log_id=LOG, index=index)
        assert info.value.period == "2026-11"
        assert (info.value.shredded_at or "").startswith("2026-12-01T00:00:00")
    assert_open(december, reader)
    fresh = Keyring.open(writer.path, auditor, log_id=LOG)
    with pytest.raises(KeyShredded):
        open_sealed(november[0], keyring_or_dek=fresh, log_id=LOG, index=0)
    assert [t.key_id for t in fresh.tombstones()] == shredded and fresh.periods() == ["2026-12"]

    # ciphertext untouched: the Merkle tree over the sealed entries is the same
    assert merkle.root([merkle.leaf_hash(everything[i]) for i in sorted(everything)]) == root_before
    # the wrapped DEKs are gone from the keyring, and the previous file's bytes were zeroed
    keyring_text = writer.path.read_text()
    assert all(f'"type":"dek","key_id":"{k.hex()}"' not in keyring_text for k in shredded)
    assert set(hardlink.read_bytes()) == {0}
    assert mode(writer.path) == 0o600

    # the writer (another object, stale view) cannot resurrect shredded keys by writing
    writer.rotate(JAN)
    assert set(shredded).isdisjoint(
        r.key_id for r in Keyring.open(writer.path, auditor, log_id=LOG).records()
    )


def test_forced_shredding_of_the_current_period(
    tmp_path: Path, gateway: FileKeyProvider, auditor: FileKeyProvider
) -> None:
    writer = Keyring.create(tmp_path / "keyring.jsonl", gateway, log_id=LOG)
    blobs = seal_in(writer, NOV, range(2))
    assert len(writer.shred("2026-11", now=NOV, force=True)) == 1
    assert writer.current(NOV).key_id not in {t.key_id for t in writer.tombstones()}  # a new DEK
    with pytest.raises(KeyShredded):
        open_sealed(
            blobs[0], keyring_or_dek=Keyring.open(writer.path, auditor, log_id=LOG), log_id=LOG, index=0
        )


def test_relabelled_or_copied_wrapped_keys_do_not_unwrap(
    tmp_path: Path, gateway: FileKeyProvider, auditor: FileKeyProvider
) -> None:
    writer = Keyring.create(tmp_path / "keyring.jsonl", gateway, log_id=LOG)
    blobs = seal_in(writer, NOV, range(1))
    text = writer.path.read_text()
    # moving a DEK to another period (to dodge shredding) breaks its wrapping context
    writer.path.write_text(text.replace('"period":"2026-11"', '"period":"2026-10"'))
    with pytest.raises(UnwrapFailed):
        open_sealed(
            blobs[0], keyring_or_dek=Keyring.open(writer.path, auditor, log_id=LOG), log_id=LOG, index=0
        )
    # a keyring copied to another log does not unwrap either
    writer.path.write_text(text.replace(f'"log_id":"{LOG}"', '"log_id":"copy"'))
    record = Keyring.open(writer.path, auditor, log_id="copy").records()[0]
    assert dek_context(LOG, record.key_id, "2026-11") != dek_context("copy", record.key_id, "2026-11")
    with pytest.raises(UnwrapFailed):
        Keyring.open(writer.path, auditor, log_id="copy").data_key(record.key_id)


def test_malformed_keyring_files(tmp_path: Path, gateway: FileKeyProvider) -> None:
    path = tmp_path / "keyring.jsonl"
    writer = Keyring.create(path, gateway, log_id=LOG)
    writer.current(NOV)
    good = path.read_text()
    for broken, message in [
        ("", "empty keyring"),
        ("not json\n", ":1: malformed"),
        ('{"type":"dek"}\n', ":1: not a version 1 keyring header"),
        (good + '{"type":"mystery"}\n', ":3: unknown line type"),
        (good.replace('"key_id":"', '"key_id":"zz'), ":2: keyring line has a malformed key_id"),
        (good.replace('"granularity":"month"', '"granularity":"fortnight"'), "unknown granularity"),
    ]:
        path.write_text(broken)
        with pytest.raises(KeyringError, match=message):
            Keyring.open(path, gateway, log_id=LOG)


# --- blind-index key ----------------------------------------------------------------------------


def test_blind_index_key(tmp_path: Path, gateway: FileKeyProvider, auditor: FileKeyProvider) -> None:
    key_path = tmp_path / "blind-index.key"
    key = generate_blind_index_key(key_path)
    assert mode(key_path) == 0o600 and load_blind_index_key(key_path) == key
    writer = Keyring.create(tmp_path / "keyring.jsonl", gateway, log_id=LOG)
    writer.set_blind_index_key(key)
    writer.set_blind_index_key(key)  # idempotent
    assert key not in writer.path.read_bytes()
    with pytest.raises(BlindIndexKeyMismatch):
        writer.set_blind_index_key(os.urandom(32))
    with pytest.raises(BlindIndexKeyMismatch):  # also from a stale view of the file
        Keyring.open(writer.path, gateway, log_id=LOG).set_blind_index_key(os.urandom(32))
    with pytest.raises(PrivateKeyRequired):
        writer.blind_index_key()
    assert Keyring.open(writer.path, auditor, log_id=LOG).blind_index_key() == key
    with pytest.raises(KeyringError, match="no blind-index key"):
        Keyring.create(tmp_path / "other.jsonl", auditor, log_id=LOG).blind_index_key()
    with pytest.raises(KeyFormatError):
        writer.set_blind_index_key(b"short")
