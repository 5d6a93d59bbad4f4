"""``dsgw data describe|fetch|evaluate|health|extract``: outputs, exit codes, one-line reasons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.agencies import Agency
from gateway.cli import main
from tests.adapters.nativedb import NativeDb, employer_id, person_id
from tests.adapters.netutil import closed_port

P1, P2 = person_id(1), person_id(2)
EVALUATE = ["evaluate", "--agency", "hrss", "--predicate", "insured_months_at_least", "--subject", P1]
E1 = employer_id(1)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.fixture
def data(tmp_path: Path, sqlite_db: NativeDb) -> Path:
    sqlite_db.add("ac01", aac001=1, aac002=P1, aae036="2026-01-01 00:00:00")
    sqlite_db.add("ac01", aac001=2, aac002=P2, aae036="2026-02-01 00:00:00")
    sqlite_db.add("ab01", aab001=1, aab003=E1)
    sqlite_db.add("ac02", aac001=1, aab001=1, aae030="202501", aac040=6100)
    sqlite_db.add("E_BASEINFO", UNISCID=E1, ESTDATE=20200101)
    for agency in Agency:
        sqlite_db.engine(agency)
    sqlite_db.flush()
    sqlite_db.close()
    return tmp_path


def test_fetch_human_and_json(capsys: pytest.CaptureFixture[str], data: Path) -> None:
    base = ["data", "fetch", "--data", str(data), "--agency", "hrss", "--dataset", "person_insurance"]
    code, out, _ = run(capsys, *base, "--subject", P1, "--as-of", "2026-11-01")
    assert code == 0
    assert "currently_insured: true" in out and f'current_employer: "{E1}"' in out
    # any stored form of the number is accepted and normalised first
    code, out, _ = run(
        capsys,
        *base,
        "--subject",
        f" {P1[:6]} {P1[6:14]} {P1[14:]} ",
        "--fields",
        "contribution_base",
        "--json",
    )
    assert code == 0
    assert json.loads(out) == {
        "agency": "hrss",
        "dataset": "person_insurance",
        "values": {"contribution_base": 6100},
    }


def test_invalid_identity_number_exits_2_with_its_reason(
    capsys: pytest.CaptureFixture[str], data: Path
) -> None:
    wrong = P1[:17] + ("3" if P1[17] != "3" else "4")
    code, out, err = run(
        capsys,
        "data",
        "fetch",
        "--data",
        str(data),
        "--agency",
        "hrss",
        "--dataset",
        "person_insurance",
        "--subject",
        wrong,
    )
    assert code == 2 and out == ""
    assert err == f"dsgw: invalid identity number: check character is {wrong[17]}, expected {P1[17]}\n"
    assert wrong not in err


def test_subject_kind_follows_the_dataset(capsys: pytest.CaptureFixture[str], data: Path) -> None:
    code, _, err = run(
        capsys,
        "data",
        "evaluate",
        "--data",
        str(data),
        "--agency",
        "market_regulation",
        "--predicate",
        "is_active",
        "--subject",
        P1,
    )
    assert code == 2 and err.startswith("dsgw: invalid credit code:") and err.count("\n") == 1
    code, out, _ = run(
        capsys,
        "data",
        "evaluate",
        "--data",
        str(data),
        "--agency",
        "market_regulation",
        "--predicate",
        "registered_within_years",
        "--param",
        "years=10",
        "--subject",
        E1.lower(),
        "--json",
        "--as-of",
        "2026-11-01",
    )
    assert code == 0 and json.loads(out)["result"] is True


def test_not_found_and_unavailable_exit_1(capsys: pytest.CaptureFixture[str], data: Path) -> None:
    code, _, err = run(
        capsys,
        "data",
        "fetch",
        "--data",
        str(data),
        "--agency",
        "education",
        "--dataset",
        "graduation",
        "--subject",
        P1,
    )
    assert (code, err) == (1, "dsgw: education holds no graduation record for this subject\n")
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/test"
    code, _, err = run(
        capsys,
        "data",
        "fetch",
        "--url",
        url,
        "--agency",
        "hrss",
        "--dataset",
        "person_category",
        "--subject",
        P1,
    )
    assert (code, err) == (1, "dsgw: hrss unavailable: connection refused\n")
    (data / "tax.sqlite").unlink()
    code, _, err = run(
        capsys,
        "data",
        "evaluate",
        "--data",
        str(data),
        "--agency",
        "tax",
        "--predicate",
        "withheld_by_employer",
        "--subject",
        P1,
    )
    assert (code, err) == (1, "dsgw: tax unavailable: database file missing\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fetch", "--agency", "police", "--dataset", "x", "--subject", P1], "unknown agency 'police'"),
        (
            ["fetch", "--agency", "hrss", "--dataset", "nope", "--subject", P1],
            "hrss offers no dataset 'nope'",
        ),
        (
            ["fetch", "--agency", "hrss", "--dataset", "person_insurance", "--subject", P1, "--fields", "x"],
            "has no field(s) 'x'",
        ),
        (["evaluate", "--agency", "hrss", "--predicate", "nope", "--subject", P1], "no predicate 'nope'"),
        (
            EVALUATE,
            "needs parameter(s) months",
        ),
        (
            [
                *EVALUATE,
                "--param",
                "months=x",
            ],
            "not an integer",
        ),
        (
            [
                *EVALUATE,
                "--param",
                "months=-2",
            ],
            "must not be negative",
        ),
        (
            [
                *EVALUATE,
                "--param",
                "months=99999999999999999999",
            ],
            "must be at most 2,147,483,647",
        ),
        (
            [
                *EVALUATE,
                "--param",
                "months=6",
                "--param",
                "months=12",
            ],
            "--param months: given twice",
        ),
        (
            [
                "fetch",
                "--agency",
                "hrss",
                "--dataset",
                "person_insurance",
                "--subject",
                P1,
                "--as-of",
                "2026-13-01",
            ],
            "--as-of",
        ),
        (
            ["extract", "--agency", "hrss", "--dataset", "person_insurance", "--since", "soon"],
            "watermarks look like",
        ),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], data: Path, args: list[str], message: str
) -> None:
    code, out, err = run(capsys, "data", args[0], "--data", str(data), *args[1:])
    assert code == 2 and out == ""
    assert err.startswith("dsgw: ") and message in err and err.count("\n") == 1


def test_missing_data_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "data", "health", "--data", str(tmp_path / "nowhere"))
    assert code == 2 and "no data directory" in err


def test_describe(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "data", "describe", "--json")
    assert code == 0
    doc = json.loads(out)
    assert [a["agency"] for a in doc["agencies"]] == [a.value for a in Agency]
    hrss = doc["agencies"][0]
    status = next(d for d in hrss["datasets"] if d["name"] == "employment_status")
    assert {"name": "hard_to_employ", "type": "bool", "sensitivity": "sensitive"}.items() <= status["fields"][
        4
    ].items()
    pred = next(p for p in hrss["predicates"] if p["name"] == "insured_months_at_least")
    assert pred["parameters"] == ["months"] and pred["absent_means_false"] is True
    assert pred["fields"] == ["insured_months_24m"]
    code, out, _ = run(capsys, "data", "describe", "--agency", "education")
    assert code == 0 and "predicate degree_at_least(rank) on graduation (reads level)" in out
    assert "hrss" not in out


def test_health(capsys: pytest.CaptureFixture[str], data: Path) -> None:
    code, out, _ = run(capsys, "data", "health", "--data", str(data), "--json")
    assert code == 0
    assert {h["state"] for h in json.loads(out)["health"]} == {"up"}
    (data / "civil_affairs.sqlite").unlink()
    code, out, err = run(capsys, "data", "health", "--data", str(data))
    assert code == 1
    assert "civil_affairs      down" in out and "database file missing" in out
    assert err == "dsgw: not up: civil_affairs\n"


def test_extract_json_lines(capsys: pytest.CaptureFixture[str], data: Path) -> None:
    base = ["data", "extract", "--data", str(data), "--agency", "hrss", "--dataset", "person_insurance"]
    code, out, _ = run(capsys, *base, "--json", "--as-of", "2026-11-01", "--chunk-size", "1")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [r["subject_id"] for r in lines[:-1]] == [P1, P2]
    assert lines[0]["record"]["insured_months_24m"] == 22 and lines[0]["birth_date"] == "1990-01-01"
    assert lines[-1] == {"watermark": "2026-02-01 00:00:00", "records": 2}
    code, out, err = run(capsys, *base, "--limit", "1")
    assert code == 0 and len(out.splitlines()) == 1 and "1 records" in err
    code, out, _ = run(capsys, *base, "--since", "2026-01-15 00:00:00", "--json")
    assert [json.loads(line).get("subject_id") for line in out.splitlines()] == [P2, None]


@pytest.mark.postgres
def test_server_sources_with_schema_prefix(capsys: pytest.CaptureFixture[str], pg_db: NativeDb) -> None:
    pg_db.add("graduate_record", cert_no=P1.lower(), education_level="11")
    pg_db.adapter(Agency.EDUCATION)
    schema = pg_db.sources["education"].db_schema
    assert schema is not None
    code, out, _ = run(
        capsys,
        "data",
        "fetch",
        "--url",
        pg_db.sources["education"].url,
        "--schema-prefix",
        schema[: -len("education")],
        "--agency",
        "education",
        "--dataset",
        "graduation",
        "--subject",
        P1,
        "--json",
    )
    assert code == 0 and json.loads(out)["values"]["level"] == "doctorate"
