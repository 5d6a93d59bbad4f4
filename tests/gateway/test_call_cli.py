"""``dsgw call``: agency calls from the command line over mTLS (exit 0 answered, 1 refused with
``CODE REASON: message`` on one line, 2 bad arguments)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main, reads_label
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
    # the human form names what each predicate reads, as `dsgw data describe` does
    assert main(["call", "catalogue", *hrss]) == 0
    human = capsys.readouterr().out
    for e in catalogue["entries"]:
        for p in e.get("predicates", []):
            assert p["name"] + reads_label(p.get("fields", [])) in human
    assert " (reads " in human

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


def test_input_the_gateway_finds_invalid_exits_2_and_json_refusals_are_documents(
    gateway: Gateway, subjects: Subjects, capsys: pytest.CaptureFixture[str]
) -> None:
    hrss = _creds(gateway, "hrss")
    query = [
        "call",
        "query",
        *hrss,
        "--purpose",
        "graduate_employment",
        "--dataset",
        "education.graduation:level",
    ]
    bad = subjects.graduates[5][0][:-1] + ("0" if subjects.graduates[5][0][-1] != "0" else "1")
    capsys.readouterr()
    assert main([*query, "--subject", bad]) == 2  # INVALID_ARGUMENT: an input error, not a denial
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "INVALID_ARGUMENT INVALID_IDENTITY_NUMBER" in err
    assert bad not in err
    assert main([*query, "--subject", subjects.graduates[5][0], "--json"]) == 1  # a denial
    captured = capsys.readouterr()
    refusal = json.loads(captured.out)
    assert refusal == {
        "ok": False,
        "code": "PERMISSION_DENIED",
        "reason": "CONSENT_MISSING",
        "message": refusal["message"],
        "retry_after_s": None,
    }
    assert captured.err.count("\n") == 1


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--param", "years=99999999999999999999999"], "outside the 64-bit integer range"),
        (["--timeout", "0"], "--timeout must be more than 0"),
        (["--agency", "tax"], "not both"),  # --agency beside explicit credential files
        (["--request-id", ""], "--request-id is empty"),
    ],
)
def test_bad_call_options_exit_2_before_any_call(
    gateway: Gateway, subjects: Subjects, capsys: pytest.CaptureFixture[str], extra: list[str], words: str
) -> None:
    verify = [
        "call",
        "verify",
        *_creds(gateway, "hrss"),
        "--subject",
        subjects.graduates[5][0],
        "--purpose",
        "graduate_employment",
        "--provider",
        "education",
        "--predicate",
        "graduated_within_years",
    ]
    capsys.readouterr()
    assert main([*verify, *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and "Traceback" not in err


def test_the_client_refuses_parameters_the_wire_cannot_carry(gateway: Gateway, subjects: Subjects) -> None:
    client = gateway.client("hrss")
    args = (subjects.graduates[5][0], "graduate_employment", "education", "graduated_within_years")
    with pytest.raises(ValueError, match="'years' is outside the 64-bit integer range"):
        client.verify(*args, {"years": 10**30})
    with pytest.raises(ValueError, match="'years' is not an integer"):
        client.verify(*args, {"years": 2.5})  # type: ignore[dict-item]


def test_a_dataset_named_twice_in_one_query_is_refused(
    gateway: Gateway, subjects: Subjects, capsys: pytest.CaptureFixture[str]
) -> None:
    query = [
        "call",
        "query",
        *_creds(gateway, "hrss"),
        "--subject",
        subjects.graduates[5][0],
        "--purpose",
        "graduate_employment",
        "--dataset",
        "education.graduation:level",
        "--dataset",
        "education.graduation:school_name",
    ]
    capsys.readouterr()
    assert main(query) == 2
    err = capsys.readouterr().err
    assert "INVALID_ARGUMENT INVALID_REQUEST: education.graduation is named twice" in err
