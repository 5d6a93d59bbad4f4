"""SM2 consent receipts (the ``gm`` suite): the same RFC 8785 payload signed with SM2 (alg
``SM2-SM3``), offline verification that fails closed, key files, and the command line."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from audit.checkpoint import Sm2PrivateKey, Sm2PublicKey
from audit.suites import SM2
from gateway.consent import ConsentStore, InvalidReceipt, ReceiptKeyError, ReceiptSigner
from gateway.consent.errors import ReceiptKeyMismatch, ReceiptSignatureInvalid
from gateway.consent.receipts import (
    ALG_SM2,
    canonical_bytes,
    key_id_of,
    load_or_create_sm2_signing_key,
    load_public_key,
    load_receipt_signer,
    public_key_pem,
    verify_receipt,
    verify_receipt_bytes,
)
from tests.consent import Clock, grant_request, service_for
from tests.consent.test_cli import GRANT, Cli
from tests.gmssl_tries import gmssl_tries

SM2_SPKI_PREFIX = "3059301306072a8648ce3d020106082a811ccf5501822d03420004"


@pytest.fixture
def signer() -> ReceiptSigner:
    return ReceiptSigner(Sm2PrivateKey.generate(), issuer="dsgw-test")


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
    assert (g.action, r.action) == ("granted", "revoked") and g.consent_id == r.consent_id
    p = grant["payload"]
    assert p["alg"] == ALG_SM2 == "SM2-SM3" and p["canonicalization"] == "RFC8785"
    assert isinstance(signer.public_key, Sm2PublicKey)
    assert p["key_id"] == grant["key_id"] == hashlib.sha256(signer.public_key.raw).digest()[:8].hex()
    # what a verifier that knows nothing of dsgw does: JCS, then SM2-with-SM3 (DER signature)
    signature = base64.b64decode(grant["signature"])
    decode_dss_signature(signature)  # DER SEQUENCE {r, s}
    assert SM2.verify(signer.public_key.raw, canonical_bytes(p), signature)
    assert verify_receipt_bytes(json.dumps(grant, indent=3).encode(), signer.public_key).action == "granted"


def test_sm2_receipts_interoperate_with_the_pure_python_gmssl_package(
    receipts: tuple[dict[str, Any], dict[str, Any]], signer: ReceiptSigner
) -> None:
    """gmssl verifies the receipt's signature; where gmssl itself fails on it (a few
    signatures: :mod:`tests.gmssl_tries`), the payload is signed again (a new nonce)."""
    gmssl_sm2 = pytest.importorskip("gmssl.sm2")
    assert isinstance(signer.public_key, Sm2PublicKey)
    signed = [receipts[0]]
    other = gmssl_sm2.CryptSM2(private_key=None, public_key=signer.public_key.raw.hex())

    def attempt() -> bool:
        grant = signed[-1]
        signed.append(signer.sign_payload(grant["payload"]))  # for the next try, if any
        r, s = decode_dss_signature(base64.b64decode(grant["signature"]))
        return bool(other.verify_with_sm3(f"{r:064x}{s:064x}", canonical_bytes(grant["payload"])))

    assert gmssl_tries(attempt)


def test_tampered_sm2_receipts_are_refused(
    receipts: tuple[dict[str, Any], dict[str, Any]], signer: ReceiptSigner
) -> None:
    grant = receipts[0]

    def changed(mutate: Any) -> dict[str, Any]:
        copied = copy.deepcopy(grant)
        mutate(copied)
        return copied

    cases: list[tuple[Any, type[InvalidReceipt]]] = [
        (lambda r: r["payload"]["consent"].__setitem__("use_limit", 6), ReceiptSignatureInvalid),
        (lambda r: r["payload"]["consent"]["subject"].__setitem__("id", "x"), ReceiptSignatureInvalid),
        (lambda r: r["payload"].__setitem__("action", "revoked"), ReceiptSignatureInvalid),
        (lambda r: r["payload"].__setitem__("alg", "Ed25519"), InvalidReceipt),
        (lambda r: r.__setitem__("key_id", "0" * 16), InvalidReceipt),
        (lambda r: r.__setitem__("signature", r["signature"][:-4]), InvalidReceipt),
        (lambda r: r.__setitem__("extra", 1), InvalidReceipt),
    ]
    sig = bytearray(base64.b64decode(grant["signature"]))
    sig[-2] ^= 1
    flipped = base64.b64encode(bytes(sig)).decode()
    cases.append((lambda r: r.__setitem__("signature", flipped), ReceiptSignatureInvalid))
    for mutate, error in cases:
        with pytest.raises(error):
            verify_receipt(changed(mutate), signer.public_key)


def test_wrong_key_is_refused(receipts: tuple[dict[str, Any], dict[str, Any]], signer: ReceiptSigner) -> None:
    grant = receipts[0]
    with pytest.raises(ReceiptKeyMismatch):
        verify_receipt(grant, Sm2PrivateKey.generate().public_key())
    with pytest.raises(InvalidReceipt):  # an Ed25519 key does not verify an SM2 receipt
        verify_receipt(grant, Ed25519PrivateKey.generate().public_key())
    # a forger with another SM2 key who also rewrites the key ids: their own key, not ours
    forger = ReceiptSigner(Sm2PrivateKey.generate())
    forged = forger.sign_payload({**grant["payload"], "key_id": forger.key_id})
    assert verify_receipt(forged, forger.public_key).action == "granted"
    with pytest.raises(ReceiptKeyMismatch):
        verify_receipt(forged, signer.public_key)
    with pytest.raises(ReceiptSignatureInvalid):  # the forger's signature under our key id
        verify_receipt({**forged, "payload": grant["payload"], "key_id": grant["key_id"]}, signer.public_key)


def test_key_files(tmp_path: Path, signer: ReceiptSigner) -> None:
    path = tmp_path / "keys" / "receipt-sm2.pem"
    key = load_or_create_sm2_signing_key(path)
    assert path.stat().st_mode & 0o777 == 0o600 and (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
    assert path.read_text().startswith("-----BEGIN EC PRIVATE KEY-----")
    assert load_or_create_sm2_signing_key(path) == key
    pem = public_key_pem(key.public_key())
    der = base64.b64decode("".join(pem.strip().splitlines()[1:-1]))
    assert (
        der.hex().startswith(SM2_SPKI_PREFIX) and der[-64:] == key.public_key().raw
    )  # OID 1.2.156.10197.1.301
    pub = tmp_path / "pub.pem"
    pub.write_text(pem)
    assert load_public_key(pub) == key.public_key() == load_public_key(path)
    assert key_id_of(load_public_key(pub)) == ReceiptSigner(key).key_id
    path.chmod(0o644)
    with pytest.raises(ReceiptKeyError):
        load_or_create_sm2_signing_key(path)
    bad = tmp_path / "bad.pem"
    bad.write_text(pem.replace(pem.splitlines()[1], "A" * len(pem.splitlines()[1])))
    with pytest.raises(ReceiptKeyError):
        load_public_key(bad)
    # the home's suite: SM2 once it has the SM2 key, unless told otherwise
    home = tmp_path / "home"
    assert load_receipt_signer(home).alg == "Ed25519"
    assert load_receipt_signer(home, "gm").alg == ALG_SM2
    assert load_receipt_signer(home).alg == ALG_SM2
    assert load_receipt_signer(home, "default").alg == "Ed25519"


def test_default_receipts_are_unchanged(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    signer = ReceiptSigner(key)
    assert signer.alg == "Ed25519"
    store = ConsentStore.for_home(tmp_path)
    try:
        receipt = service_for(store, Clock(), signer=signer).grant(grant_request()).receipt
    finally:
        store.close()
    assert receipt is not None
    assert base64.b64decode(receipt["signature"]) == key.sign(canonical_bytes(receipt["payload"]))
    assert receipt["payload"]["alg"] == "Ed25519"


def test_cli_gm_receipts(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    home = tmp_path / "home"
    cli = Cli(capsys, ["--home", str(home)])
    rc, out, err = cli("grant", *GRANT, "--suite", "gm", "--json")
    assert rc == 0, err
    assert out["receipt"]["payload"]["alg"] == "SM2-SM3"
    assert (home / "keys" / "receipt-sm2.pem").stat().st_mode & 0o777 == 0o600
    cid, grant_file = out["consent"]["consent_id"], Path(out["receipt_file"])
    rc, out, _ = cli("verify-receipt", str(grant_file), "--json")
    assert rc == 0 and out["valid"] and out["action"] == "granted"
    # the home is now a gm home: receipts without --suite are SM2 too
    rc, out, _ = cli("revoke", cid, "--json")
    assert rc == 0 and out["receipt"]["payload"]["alg"] == "SM2-SM3"
    rc, out, _ = cli("verify-receipt", out["receipt_file"], "--json")
    assert rc == 0 and out["action"] == "revoked"
    rc, out, _ = cli("receipt-key", "--json")
    assert rc == 0 and out["alg"] == "SM2-SM3" and out["public_key_pem"].startswith("-----BEGIN PUBLIC KEY")
    pub = tmp_path / "sm2.pem"
    pub.write_text(out["public_key_pem"])
    rc, _, _ = cli("verify-receipt", str(grant_file), "--key", str(pub))
    assert rc == 0
    tampered = tmp_path / "tampered.json"
    tampered.write_text(grant_file.read_text().replace('"v3"', '"v4"'))
    rc, out, err = cli("verify-receipt", str(tampered), "--json")
    assert rc == 1 and out["valid"] is False and out["reason"] == "RECEIPT_SIGNATURE_INVALID"
    assert err.startswith("dsgw: ") and err.count("\n") == 1
    other = tmp_path / "ed.pem"
    other.write_text(public_key_pem(Ed25519PrivateKey.generate().public_key()))
    rc, _, err = cli("verify-receipt", str(grant_file), "--key", str(other))
    assert rc == 1 and err.count("\n") == 1


# --- the verifier picks the key by key_id; a gm home stays gm ------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], home: Path) -> Cli:
    return Cli(capsys, ["--home", str(home)])


def _one_line(err: str) -> str:
    assert err.startswith("dsgw: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_receipt_claiming_the_other_algorithm_fails_the_check(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    cli = _cli(capsys, home)
    rc, out, _ = cli("grant", *GRANT, "--json")
    assert rc == 0 and out["receipt"]["payload"]["alg"] == "Ed25519"
    swapped = tmp_path / "t6.json"
    receipt = out["receipt"]
    swapped.write_text(json.dumps({**receipt, "payload": {**receipt["payload"], "alg": "SM2-SM3"}}))
    # a home without an SM2 key: still a failed check (exit 1), not a missing key (exit 2)
    rc, out, err = cli("verify-receipt", str(swapped), "--json")
    assert rc == 1 and out["valid"] is False and out["reason"] == "RECEIPT_KEY_MISMATCH"
    assert "the receipt says alg SM2-SM3 but its key_id names an Ed25519 key" in _one_line(err)
    # the same once the home also holds an SM2 key
    load_or_create_sm2_signing_key(home / "keys" / "receipt-sm2.pem")
    rc, _, err = cli("verify-receipt", str(swapped))
    assert rc == 1 and "the receipt says alg SM2-SM3 but its key_id names an Ed25519 key" in _one_line(err)
    # a key_id that names none of the home's keys
    unknown = tmp_path / "unknown.json"
    unknown.write_text(
        json.dumps({**receipt, "key_id": "0" * 16, "payload": {**receipt["payload"], "key_id": "0" * 16}})
    )
    rc, out, err = cli("verify-receipt", str(unknown), "--json")
    assert rc == 1 and out["reason"] == "RECEIPT_KEY_MISMATCH"
    assert f"no receipt key has the id {'0' * 16}" in _one_line(err)
    # no receipt key at all and no --key: a usage error
    rc, _, err = _cli(capsys, tmp_path / "empty")("verify-receipt", str(swapped))
    assert rc == 2 and "pass --key" in _one_line(err)


def test_key_of_another_type_is_named_as_such(
    receipts: tuple[dict[str, Any], dict[str, Any]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    grant = receipts[0]
    ed = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(
        ReceiptKeyMismatch, match="the receipt says alg SM2-SM3 but the key is an Ed25519 key"
    ):
        verify_receipt(grant, ed)
    sm2 = Sm2PrivateKey.generate().public_key()
    ed_signer = ReceiptSigner(Ed25519PrivateKey.generate())
    ed_grant = ed_signer.sign_payload({**grant["payload"], "alg": "Ed25519", "key_id": ed_signer.key_id})
    with pytest.raises(ReceiptKeyMismatch, match="the receipt says alg Ed25519 but the key is an SM2 key"):
        verify_receipt(ed_grant, sm2)
    receipt_file, key_file = tmp_path / "r.json", tmp_path / "ed.pem"
    receipt_file.write_text(json.dumps(grant))
    key_file.write_text(public_key_pem(ed))
    rc, _, err = _cli(capsys, tmp_path / "home")("verify-receipt", str(receipt_file), "--key", str(key_file))
    assert rc == 1 and "but the key is an Ed25519 key" in _one_line(err)
    assert "canonical base64" not in err


def test_gm_home_stays_gm_and_receipt_key_prints_every_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    cli = _cli(capsys, home)
    rc, out, _ = cli("grant", *GRANT, "--suite", "gm", "--json")
    assert rc == 0
    cid = out["consent"]["consent_id"]
    for verb, args in (("grant", GRANT), ("revoke", [cid]), ("receipt-key", [])):
        rc, out, err = cli(verb, *args, "--suite", "default")
        assert rc == 2 and out is None and "--suite default is refused" in _one_line(err)
    assert not (home / "keys" / "receipt-ed25519.pem").exists()
    rc, out, _ = cli("list", "--json")
    assert out["count"] == 1 and out["consents"][0]["status"] == "granted"

    # a home that holds both keys (an Ed25519 one from before it became gm): every key is printed,
    # and every receipt it issued verifies from that output alone
    home = tmp_path / "both"
    cli = _cli(capsys, home)
    rc, out, _ = cli("grant", *GRANT, "--json")
    ed_receipt = Path(out["receipt_file"])
    rc, out, _ = cli("grant", *GRANT, "--suite", "gm", "--json")
    sm2_receipt = Path(out["receipt_file"])
    rc, out, _ = cli("receipt-key", "--json")
    assert rc == 0 and out["alg"] == "SM2-SM3"  # the signing key first
    assert [k["alg"] for k in out["keys"]] == ["SM2-SM3", "Ed25519"]
    ids = [k["key_id"] for k in out["keys"]]
    assert ids == [
        json.loads(sm2_receipt.read_text())["key_id"],
        json.loads(ed_receipt.read_text())["key_id"],
    ]
    rc, text, _ = cli("receipt-key")
    assert rc == 0 and f"# alg SM2-SM3 key_id {ids[0]}" in text and f"# alg Ed25519 key_id {ids[1]}" in text
    assert text.count("-----BEGIN PUBLIC KEY-----") == 2
    keys = tmp_path / "keys.pem"
    keys.write_text(text)
    for receipt in (ed_receipt, sm2_receipt):
        rc, out, err = _cli(capsys, tmp_path / "elsewhere")(
            "verify-receipt", str(receipt), "--key", str(keys)
        )
        assert rc == 0, err
        rc, out, err = cli("verify-receipt", str(receipt), "--json")
        assert rc == 0 and out["valid"], err
