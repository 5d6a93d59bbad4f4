"""``dsgw demo`` runs end to end on embedded defaults (a real gateway process, mTLS, consents,
an outage, SIGTERM, audit verification) and reports what it did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main


def test_demo_runs_and_summarises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    code = main(
        ["demo", "--home", str(home), "--json", "--persons", "600", "--employers", "60", "--sample", "8"]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["data"]["persons"] == 600
    assert summary["identifiers"]["forms_normalised"] == summary["identifiers"]["forms_tried"]
    calls = summary["calls"]
    assert calls["allowed"] > 0 and calls["denied"] > 0 and calls["invalid"] == 1
    refusals = summary["refusals"]
    for reason in (
        "CONSENT_MISSING",
        "CONSENT_REVOKED",
        "NO_AGREEMENT",
        "PURPOSE_NOT_ALLOWED",
        "FIELD_NOT_ALLOWED",
        "AGREEMENT_EXPIRED",
        "INVALID_IDENTITY_NUMBER",
    ):
        assert refusals.get(reason, 0) >= 1, reason
    assert summary["replay"] == {"same_answer": True, "replayed": True}
    assert summary["consents"]["granted"] == 5 and summary["consents"]["revoked"] == 1
    assert summary["consents"]["receipts_verified"] == 5
    assert summary["batch_verify"]["INVALID_IDENTITY_NUMBER"] == 1
    assert sum(summary["batch_verify"].values()) == 17
    outcomes = [o["outcome"] for o in summary["outage"]]
    assert outcomes == ["PROVIDER_UNAVAILABLE", "PROVIDER_UNAVAILABLE", "CIRCUIT_OPEN", "answered"]
    assert summary["gateway"]["exit_code"] == 0
    assert summary["audit"]["verified"] is True and summary["audit"]["entries"] > 40
    assert summary["audit"]["subject_report_items"] >= 3
    assert (home / "data" / "truth.sqlite").exists()


def test_demo_refuses_a_tiny_city(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--persons", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at least 100 persons" in err


def test_demo_runs_in_the_gm_suite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """audit.suite = gm: SM4/SM3/SM2 log and SM2 receipts (the demo read an Ed25519 key and failed)."""
    pytest.importorskip("gmssl_pyx")
    monkeypatch.setenv("DSGW_AUDIT__SUITE", "gm")
    argv = ["demo", "--home", str(tmp_path / "home"), "--json", "--persons", "300", "--employers", "30"]
    assert main([*argv, "--sample", "4"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["consents"]["receipts_verified"] >= 1
    assert summary["audit"]["verified"] is True
