"""``dsgw demo`` runs end to end on embedded defaults and reports what it did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main


def test_demo_runs_and_summarises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    code = main(
        ["demo", "--home", str(home), "--json", "--persons", "600", "--employers", "60", "--sample", "40"]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["data"]["persons"] == 600
    assert set(summary["providers"].values()) == {"up"}
    assert summary["calls"]["fetch"]["found"] > 0
    assert summary["calls"]["fetch"]["not_found"] > 0
    assert summary["calls"]["verify"]["yes"] > 0
    assert summary["identifiers"]["forms_normalised"] == summary["identifiers"]["forms_tried"]
    assert summary["identifiers"]["transposed_digits_refused"] == "CHECK_CHARACTER"
    assert summary["invalid_request"] == "invalid_request"
    outcomes = [c["outcome"] for c in summary["outage"]["calls"]]
    assert outcomes == ["unavailable", "unavailable", "circuit_open"]
    assert (home / "data" / "truth.sqlite").exists()


def test_demo_refuses_a_tiny_city(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--persons", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at least 100 persons" in err
