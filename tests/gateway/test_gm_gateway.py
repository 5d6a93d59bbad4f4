"""A gateway configured for the national algorithms (audit.suite = "gm"): its audit log is sealed
with SM4-GCM, hashed with SM3 and checkpointed with SM2, and its consent receipts are SM2-SM3."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import load_config
from gateway.consent.receipts import load_public_key, verify_receipt
from gateway.devsetup import DevHome
from gateway.server.app import BackgroundGateway
from tests.gateway.conftest import Subjects, write_gateway_config

pytest.importorskip("gmssl_pyx")


def test_gm_gateway_end_to_end(
    dev_home: DevHome, subjects: Subjects, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "gm-home"
    path = write_gateway_config(dev_home, home)
    with path.open("a", encoding="utf-8") as f:
        f.write('\n[audit]\nsuite = "gm"\n')
    config = load_config(path)
    subject = subjects.graduates[0][0]
    from gateway.client import GatewayClient

    with BackgroundGateway(config) as gw:
        ca, cert, key = dev_home.agency_credentials("hrss")
        with GatewayClient(f"127.0.0.1:{gw.port}", ca=ca, cert=cert, key=key) as client:
            _consent, receipt = client.grant_consent(
                subject,
                [("education", "graduation", [])],
                ["graduate_employment"],
                valid_days=30,
                channel="app",
                evidence_ref="APP-GM",
                notice_version="v1",
            )
            answer = client.query(subject, "graduate_employment", [("education", "graduation", ["level"])])
    assert answer.results[0].found
    assert receipt is not None and receipt["payload"]["alg"] == "SM2-SM3"
    verify_receipt(receipt, load_public_key(home / "keys" / "receipt-sm2.pem"))
    log = str(config.audit_dir())
    capsys.readouterr()
    assert main(["audit", "vkey", "--log", log]) == 0
    vkey = capsys.readouterr().out.strip()
    # signed-note vkey: name+keyid+base64(0xff || "dsgw.sm2-sm3" || 64-byte SM2 public key)
    key_bytes = base64.b64decode(vkey.split("+", 2)[2])  # the base64 may hold "+" itself
    assert key_bytes[0] == 0xFF and key_bytes[1:].startswith(b"dsgw.sm2-sm3")
    assert main(["audit", "verify", "--log", log, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["suite"] == "gm"
    assert report["entries"] == 2  # the grant and the query


def test_a_default_gateway_on_a_gm_home_signs_receipts_with_sm2(
    dev_home: DevHome, subjects: Subjects, tmp_path: Path
) -> None:
    """A home that holds an SM2 receipt key (made by dsgw consent --suite gm) stays gm: the
    gateway's receipts follow it even with audit.suite = "default"."""
    from gateway.client import GatewayClient
    from gateway.consent.receipts import load_or_create_sm2_signing_key

    home = tmp_path / "gm-receipts-home"
    config = load_config(write_gateway_config(dev_home, home))
    assert config.audit.suite == "default"
    load_or_create_sm2_signing_key(home / "keys" / "receipt-sm2.pem", create=True)
    with BackgroundGateway(config) as gw:
        ca, cert, key = dev_home.agency_credentials("hrss")
        with GatewayClient(f"127.0.0.1:{gw.port}", ca=ca, cert=cert, key=key) as client:
            _consent, receipt = client.grant_consent(
                subjects.graduates[1][0],
                [("education", "graduation", [])],
                ["graduate_employment"],
                valid_days=30,
                channel="app",
                evidence_ref="APP-GM-HOME",
                notice_version="v1",
            )
    assert receipt is not None and receipt["payload"]["alg"] == "SM2-SM3"
    verify_receipt(receipt, load_public_key(home / "keys" / "receipt-sm2.pem"))
    assert not (home / "keys" / "receipt-ed25519.pem").exists()
