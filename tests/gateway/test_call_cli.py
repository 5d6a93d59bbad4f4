"""``dsgw call``: agency calls from the command line over mTLS (exit 0 answered, 1 refused with
``CODE REASON: message`` on one line, 2 bad arguments)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main
from tests.gateway.conftest import Gateway, Subjects


def _creds(gateway: Gateway, agency: str) -> list[str]:
    ca, cert, key = gateway.dev.agency_credentials(agency)
    return ["--target", gateway.target, "--ca", str(ca), "--cert", str(cert), "--key", str(key)]


def test_catalogue_verify_query_and_batch(
    gateway: Gateway, subjects: Subjects, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hrss = _creds(gateway, "hrss")
    capsys.readouterr()
    assert main(["call", "catalogue", *hrss, "--json"]) == 0
    catalogue = json.loads(capsys.readouterr().out)
    assert catalogue["caller"] == "hrss"
    assert {"provider": "education", "dataset": "graduation"}.items() <= next(
        e for e in catalogue["entries"] if e["dataset"] == "graduation"
    ).items()

    subject = subjects.assisted[0]
    args = ["--purpose", "employment_assistance", "--provider", "civil_affairs"]
    assert (
        main(
            [
                "call",
                "verify",
                *hrss,
                "--subject",
                subject,
                *args,
                "--predicate",
                "near_subsistence",
                "--json",
            ]
        )
        == 0
    )
    answer = json.loads(capsys.readouterr().out)
    assert answer["result"] in ("yes", "no") and answer["legal_basis"].startswith("statutory_duty:")

    # refused: exit 1, one line with the status and the reason
    grad = subjects.graduates[5][0]
    code = main(
        [
            "call",
            "query",
            *hrss,
            "--subject",
            grad,
            "--purpose",
            "graduate_employment",
            "--dataset",
            "education.graduation:level",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "PERMISSION_DENIED CONSENT_MISSING" in err

    ids = tmp_path / "ids.txt"
    ids.write_text(f"# comment\na,{subject}\nb,12345\n")
    assert (
        main(["call", "batch-verify", str(ids), *hrss, *args, "--predicate", "near_subsistence", "--json"])
        == 0
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [x["item_id"] for x in lines] == ["a", "b"]
    assert lines[0]["result"] in ("yes", "no") and lines[1]["result"] == "INVALID_IDENTITY_NUMBER"


def test_bad_arguments_exit_2(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    hrss = _creds(gateway, "hrss")
    capsys.readouterr()
    code = main(
        [
            "call",
            "verify",
            *hrss,
            "--subject",
            "x",
            "--purpose",
            "p",
            "--provider",
            "tax",
            "--predicate",
            "q",
            "--param",
            "years=five",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not an integer" in err
    assert main(["call", "catalogue", "--target", gateway.target]) == 2
    assert "give --agency" in capsys.readouterr().err
