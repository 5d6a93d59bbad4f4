"""``dsgw id check`` and ``dsgw id normalize``."""

from __future__ import annotations

import json

import pytest

from gateway.cli import main

PERSON = "11010519491231002X"
EMPLOYER = "91350100M000100Y43"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_person(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "id", "check", "110105491231002")
    assert code == 0 and err == ""
    assert out.splitlines()[0] == f"person {PERSON}"
    assert "1949-12-31" in out and "北京市" in out


def test_check_employer(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "id", "check", "91350100m000100y43")
    assert code == 0
    assert out.splitlines()[0] == f"employer {EMPLOYER}"
    assert "企业" in out and "M000100Y4" in out


def test_check_json_person(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "id", "check", "１１０１０５ １９４９１２３１ ００２ｘ", "--json")
    assert code == 0
    payload = json.loads(out)
    assert payload == {
        "kind": "person",
        "canonical": PERSON,
        "valid": True,
        "birth_date": "1949-12-31",
        "gender": "F",
        "division_code": "110105",
        "division_name": "北京市",
        "sequence": 2,
    }


def test_check_json_employer(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "id", "check", EMPLOYER, "--json", "--kind", "employer")
    assert code == 0
    payload = json.loads(out)
    assert (payload["kind"], payload["canonical"], payload["valid"]) == ("employer", EMPLOYER, True)
    assert payload["organization_code"] == "M000100Y4"
    assert payload["registration_authority"] == "9" and payload["entity_category"] == "1"


def test_check_invalid_person(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "id", "check", "110105194912310023")
    assert code == 2 and out == ""
    assert err == "dsgw: invalid identity number: check character is 3, expected X\n"


def test_check_invalid_json_names_reason(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "id", "check", "110105194912310023", "--json")
    assert code == 2
    payload = json.loads(out)
    assert (payload["kind"], payload["valid"], payload["reason"]) == ("person", False, "CHECK_CHARACTER")
    assert "110105" not in out and "110105" not in err
    assert len(err.splitlines()) == 1


def test_check_invalid_employer(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "id", "check", "91350100M000100Y44")
    assert code == 2
    assert err == "dsgw: invalid credit code: check character is 4, expected 3\n"


def test_kind_forces_parser(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "id", "check", EMPLOYER, "--kind", "person")
    assert code == 2 and err.startswith("dsgw: invalid identity number: ")
    code, _, err = run(capsys, "id", "check", PERSON, "--kind", "employer")
    assert code == 2 and err.startswith("dsgw: invalid credit code: ")


def test_normalize_many(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "id", "normalize", "110105491231002", "９１３５０１００ｍ０００１００ｙ４３", PERSON.lower()
    )
    assert code == 0
    assert out.splitlines() == [PERSON, EMPLOYER, PERSON]


def test_normalize_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "id", "normalize", "--json", "110105491231002", EMPLOYER)
    assert code == 0
    assert json.loads(out) == {"canonical": [PERSON, EMPLOYER]}


def test_normalize_names_failing_argument(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "id", "normalize", PERSON, EMPLOYER, "110105194912310023", PERSON)
    assert code == 2 and out == ""
    assert err == "dsgw: argument 3: invalid identity number: check character is 3, expected X\n"


def test_normalize_empty_argument(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "id", "normalize", " ")
    assert code == 2
    assert err == "dsgw: argument 1: invalid identity number: empty\n"


@pytest.mark.parametrize(
    ("value", "kind_named"),
    [
        ("120101-19900307-118X", "invalid identity number"),  # digits with separators: a person's
        ("12010119900307118", "invalid identity number"),
        ("91120105MA05X1Y2Z", "invalid credit code"),
        ("abc", "invalid credit code"),
    ],
)
def test_an_identifier_of_neither_kind_is_reported_as_the_kind_it_looks_like(
    capsys: pytest.CaptureFixture[str], value: str, kind_named: str
) -> None:
    from gateway.consent.errors import InvalidConsentRequest
    from gateway.consent.service import parse_subject

    assert main(["id", "check", value]) == 2
    assert kind_named in capsys.readouterr().err
    with pytest.raises(InvalidConsentRequest) as exc:  # the gateway's and the consent store's view
        parse_subject(value)
    assert exc.value.reason == (
        "INVALID_IDENTITY_NUMBER" if kind_named == "invalid identity number" else "INVALID_CREDIT_CODE"
    )
