"""Signed receipts: RFC 8785 + Ed25519, offline verification that fails closed, key files."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.consent import ConsentStore, InvalidReceipt, ReceiptKeyError, ReceiptSigner
from gateway.consent.errors import ReceiptKeyMismatch, ReceiptSignatureInvalid
from gateway.consent.receipts import (
    RECEIPT_VERSION,
    canonical_bytes,
    key_id_of,
    load_or_create_signing_key,
    load_public_key,
    verify_receipt,
    verify_receipt_bytes,
    write_receipt,
)
from gateway.errors import CheckFailed
from tests.consent import Clock, grant_request, service_for


@pytest.fixture
def signer() -> ReceiptSigner:
    return ReceiptSigner(Ed25519PrivateKey.generate(), issuer="dsgw-test")


@pytest.fixture
def receipts(tmp_path: Path, signer: ReceiptSigner) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    store = ConsentStore.for_home(tmp_path)
    try:
        clock = Clock()
        svc = service_for(store, clock, signer=signer)
        granted = svc.grant(grant_request(use_limit=5))
        clock.advance(hours=1)
        revoked = svc.revoke(granted.record.consent_id, channel="app", evidence_ref="session-9")
        assert granted.receipt is not None and revoked.receipt is not None
        yield granted.receipt, revoked.receipt
    finally:
        store.close()


def test_grant_and_revocation_receipts_verify(
    receipts: tuple[dict[str, Any], dict[str, Any]], signer: ReceiptSigner
) -> None:
    grant, revoke = receipts
    g = verify_receipt(grant, signer.public_key)
    r = verify_receipt(revoke, signer.public_key)
    assert (g.action, r.action) == ("granted", "revoked")
    assert g.consent_id == r.consent_id and g.receipt_id.endswith("/1") and r.receipt_id.endswith("/2")
    p = grant["payload"]
    assert p["version"] == RECEIPT_VERSION and p["alg"] == "Ed25519" and p["canonicalization"] == "RFC8785"
    assert p["consent"]["purposes"][0] == {
        "code": "employment_subsidy_review",
        "name_zh": "就业补贴审核",
        "name_en": "Employment subsidy review",
    }
    assert p["consent"]["use_limit"] == 5 and p["issuer"] == "dsgw-test"
    assert revoke["payload"]["event"]["channel"] == "app"
    assert revoke["payload"]["event"]["evidence_ref"] == "session-9"


def test_format_is_interoperable(
    receipts: tuple[dict[str, Any], dict[str, Any]], signer: ReceiptSigner
) -> None:
    """What a verifier that knows nothing of dsgw does: JCS the payload, Ed25519-verify."""
    grant, _ = receipts
    assert set(grant) == {"payload", "signature", "key_id"}
    raw = signer.public_key.public_bytes_raw()
    assert grant["key_id"] == hashlib.sha256(raw).digest()[:8].hex() == key_id_of(signer.public_key)
    message = rfc8785.dumps(grant["payload"])
    assert message == canonical_bytes(grant["payload"])
    signer.public_key.verify(base64.b64decode(grant["signature"]), message)


def _leaves(obj: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, (*path, i))
    else:
        yield path, obj


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = value


def _changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if value is None:
        return 1
    return value + "x" if value else "x"


def test_any_change_of_any_value_is_rejected(
    receipts: tuple[dict[str, Any], dict[str, Any]], signer: ReceiptSigner
) -> None:
    for receipt in receipts:
        for path, value in _leaves(receipt["payload"]):
            tampered = copy.deepcopy(receipt)
            _set(tampered["payload"], path, _changed(value))
            with pytest.raises(InvalidReceipt):
                verify_receipt(tampered, signer.public_key)
        # added and removed keys
        tampered = copy.deepcopy(receipt)
        tampered["payload"]["consent"]["extra"] = "x"
        with pytest.raises(ReceiptSignatureInvalid):
            verify_receipt(tampered, signer.public_key)
        tampered = copy.deepcopy(receipt)
        del tampered["payload"]["consent"]["notice_version"]
        with pytest.raises(ReceiptSignatureInvalid):
            verify_receipt(tampered, signer.public_key)


def test_file_level_tampering_fails_closed(
    tmp_path: Path, receipts: tuple[dict[str, Any], dict[str, Any]], signer: ReceiptSigner
) -> None:
    grant, _ = receipts
    path = tmp_path / "r.json"
    write_receipt(grant, path)
    data = path.read_bytes()
    assert verify_receipt_bytes(data, signer.public_key).action == "granted"
    # reformatting does not change the signed content
    assert verify_receipt_bytes(json.dumps(grant).encode(), signer.public_key)
    sig = base64.b64decode(grant["signature"])
    flipped = base64.b64encode(bytes([sig[0] ^ 1]) + sig[1:]).decode()
    bad_cases: list[bytes] = [
        data.replace(b"employment_subsidy_review", b"employment_subsidy_reviex"),
        data[:-10],
        b"",
        b"\xff\xfe",
        b"[]",
        json.dumps({**grant, "note": "x"}).encode(),
        json.dumps({k: v for k, v in grant.items() if k != "key_id"}).encode(),
        json.dumps({**grant, "signature": flipped}).encode(),
        json.dumps({**grant, "signature": grant["signature"].rstrip("=")}).encode(),
        json.dumps({**grant, "signature": "!" + grant["signature"][1:]}).encode(),
        json.dumps({**grant, "key_id": "0" * 16}).encode(),
        json.dumps({**grant, "key_id": grant["key_id"].upper()}).encode(),
        # a duplicate key could show one value and sign another
        data.replace(b'"issuer": "dsgw-test"', b'"issuer": "dsgw-test", "issuer": "evil"'),
        data.replace(b'"use_limit": 5', b'"use_limit": 5.0'),
        data.replace(b'"use_limit": 5', b'"use_limit": NaN'),
        data.replace(b'"use_limit": 5', b'"use_limit": 9007199254740993'),
    ]
    for case in bad_cases:
        with pytest.raises(InvalidReceipt) as info:
            verify_receipt_bytes(case, signer.public_key)
        assert isinstance(info.value, CheckFailed)


def test_another_key_is_a_mismatch(receipts: tuple[dict[str, Any], dict[str, Any]]) -> None:
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(ReceiptKeyMismatch):
        verify_receipt(receipts[0], other)


def test_a_forged_receipt_with_another_key_id_fails(receipts: tuple[dict[str, Any], dict[str, Any]]) -> None:
    forger = ReceiptSigner(Ed25519PrivateKey.generate())
    payload = {**receipts[0]["payload"], "key_id": forger.key_id}
    forged = forger.sign_payload(payload)
    assert verify_receipt(forged, forger.public_key)
    with pytest.raises(ReceiptKeyMismatch):
        verify_receipt(forged, ReceiptSigner(Ed25519PrivateKey.generate()).public_key)


def test_signing_key_file(tmp_path: Path) -> None:
    path = tmp_path / "home" / "keys" / "receipt-ed25519.pem"
    key = load_or_create_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = load_or_create_signing_key(path)
    assert again.public_key().public_bytes_raw() == key.public_key().public_bytes_raw()
    assert [p.name for p in path.parent.iterdir()] == ["receipt-ed25519.pem"]
    # the public key loads from the private key file and from a public PEM
    signer = ReceiptSigner(key)
    pub = tmp_path / "pub.pem"
    pub.write_text(signer.public_pem())
    assert key_id_of(load_public_key(pub)) == key_id_of(load_public_key(path)) == signer.key_id
    os.chmod(path, 0o644)
    with pytest.raises(ReceiptKeyError, match="readable by others"):
        load_or_create_signing_key(path)
    with pytest.raises(ReceiptKeyError):
        load_or_create_signing_key(tmp_path / "none.pem", create=False)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    with pytest.raises(ReceiptKeyError):
        load_public_key(junk)


def test_concurrent_key_creation_ends_with_one_key(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "k.pem"
    ids: list[str] = []
    barrier = threading.Barrier(6)

    def make() -> None:
        barrier.wait()
        ids.append(key_id_of(load_or_create_signing_key(path).public_key()))

    threads = [threading.Thread(target=make) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1 and len(ids) == 6
    assert [p.name for p in path.parent.iterdir()] == ["k.pem"]
