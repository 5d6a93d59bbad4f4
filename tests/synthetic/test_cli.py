"""``dsgw data generate``: exit 0 with a summary, exit 2 with one line on stderr and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main


def _fail(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("dsgw: ") and err.count("\n") == 1, err
    return err


def test_generate_json_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    argv = [
        "data",
        "generate",
        "--out",
        str(out),
        "--persons",
        "500",
        "--employers",
        "50",
        "--seed",
        "4",
        "--json",
    ]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["persons"] == 500 and summary["employers"] == 50
    assert summary["rows"]["truth"]["person"] == 500
    assert summary["rows"]["market_regulation"]["E_BASEINFO"] == 50
    assert set(summary["paths"]) == {
        "hrss",
        "education",
        "civil_affairs",
        "tax",
        "market_regulation",
        "truth",
    }
    assert all(Path(p).exists() for p in summary["paths"].values())
    assert summary["total_bytes"] == sum(summary["sizes"].values()) > 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.sqlite" for n in summary["paths"])

    # Existing databases: refused without --force (and left alone), replaced with it.
    before = (out / "hrss.sqlite").stat().st_mtime_ns
    assert "--force" in _fail(argv[:-1], capsys)
    assert (out / "hrss.sqlite").stat().st_mtime_ns == before
    assert main([*argv[:-1], "--force", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"]["truth"]["person"] == 500


@pytest.mark.parametrize(
    "extra",
    [
        ["--persons", "-5", "--employers", "10"],
        ["--persons", "0", "--employers", "10"],
        ["--persons", "ten", "--employers", "10"],
        ["--persons", "10", "--employers", "-1"],
        ["--persons", "10", "--employers", "10", "--seed", "-1"],
        ["--persons", "10", "--employers", "10", "--as-of", "2026-02-30"],
        ["--persons", "10", "--employers", "10", "--as-of", "tomorrow"],
        ["--persons", "10", "--employers", "10", "--schema-prefix", "x_"],
        ["--persons", "100000000", "--employers", "10"],  # over the cap: named in --help
        ["--persons", "10", "--employers", "99999999"],
        ["--persons", "10", "--employers", "10", "--seed", str(2**63)],
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "never"
    _fail(["data", "generate", "--out", str(out), *extra], capsys)
    assert not out.exists()


def test_an_as_of_out_of_range_is_one_plain_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _fail(
        [
            "data",
            "generate",
            "--out",
            str(tmp_path / "x"),
            "--persons",
            "10",
            "--employers",
            "2",
            "--as-of",
            "0001-01-01",
        ],
        capsys,
    )
    assert err == "dsgw: as_of must be between 1990 and 2100\n"  # was "bad config: Value error, ..."


@pytest.mark.parametrize(
    "content",
    ['{"hrss": {"legacy15": 2}}', '{"hrss": {"bogus": 0.1}}', '{"nobody": {}}', "not json", "[1, 2]"],
)
def test_bad_dirt_file_exits_2(content: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dirt = tmp_path / "dirt.json"
    dirt.write_text(content, encoding="utf-8")
    out = tmp_path / "never"
    _fail(
        ["data", "generate", "--out", str(out), "--persons", "10", "--employers", "5", "--dirt", str(dirt)],
        capsys,
    )
    assert not out.exists()
    _fail(
        [
            "data",
            "generate",
            "--out",
            str(out),
            "--persons",
            "10",
            "--employers",
            "5",
            "--dirt",
            str(tmp_path / "no"),
        ],
        capsys,
    )


def test_dirt_file_and_as_of_apply(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import sqlite3

    dirt = tmp_path / "dirt.json"
    dirt.write_text('{"hrss": {"legacy15": 1.0, "lower_x": 0, "spaces": 0}}', encoding="utf-8")
    out = tmp_path / "data"
    argv = [
        "data",
        "generate",
        "--out",
        str(out),
        "--persons",
        "300",
        "--employers",
        "30",
        "--as-of",
        "2025-06-15",
    ]
    assert main([*argv, "--dirt", str(dirt), "--json"]) == 0
    capsys.readouterr()
    conn = sqlite3.connect(out / "truth.sqlite")
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    assert meta["as_of"] == "2025-06-15" and json.loads(meta["dirt"])["hrss"]["legacy15"] == 1.0
    legacy = conn.execute(
        "SELECT COUNT(*), SUM(dirt LIKE '%legacy15%') FROM record_link "
        "WHERE table_name = 'ac01' AND id_recoverable = 1 AND substr(subject_id, 7, 2) = '19'"
    ).fetchone()
    assert legacy[0] > 0 and legacy[0] == legacy[1]


def test_a_count_over_the_cap_names_the_option_and_its_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["data", "generate", "--out", str(tmp_path / "x"), "--persons", "100000000", "--employers", "1"]
    assert _fail(argv, capsys) == "dsgw: --persons must be 1-20,000,000\n"
