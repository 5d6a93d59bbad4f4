"""``dsgw data describe|fetch|evaluate|health|extract``: a --url or --schema-prefix the adapters
cannot use exits 2 with one line (as ``dsgw data generate`` does), never echoing the URL."""

from __future__ import annotations

import pytest

from gateway.cli import main
from tests.adapters.nativedb import person_id

P1 = person_id(1)
VERBS = {
    "describe": [],
    "health": [],
    "fetch": ["--agency", "hrss", "--dataset", "person_insurance", "--subject", P1],
    "evaluate": ["--agency", "hrss", "--predicate", "insured_months_at_least", "--subject", P1],
    "extract": ["--agency", "hrss", "--dataset", "person_insurance"],
}


def _usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert main(["data", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("dsgw: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("verb", sorted(VERBS))
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "--url is not a database URL"),
        ("postgresql://postgres:s3cret-pw@127.0.0.1:xx/test", "--url is not a database URL"),
        ("http://s3cret-pw@example.org/x", "--url back end 'http' not supported"),
        ("mysql://u:s3cret-pw@127.0.0.1/test", "--url back end 'mysql' not supported"),
    ],
)
def test_bad_url_exits_2(capsys: pytest.CaptureFixture[str], verb: str, url: str, message: str) -> None:
    err = _usage_error(capsys, verb, "--url", url, *VERBS[verb])
    assert message in err and "s3cret-pw" not in err


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_schema_prefix_is_checked_and_needs_url(capsys: pytest.CaptureFixture[str], verb: str) -> None:
    url = "postgresql://postgres@127.0.0.1:1/test"
    for bad in ("Upper_", 'x"y', "a" * 41, "1x"):
        err = _usage_error(capsys, verb, "--url", url, "--schema-prefix", bad, *VERBS[verb])
        assert "--schema-prefix must be lower-case letters, digits and '_'" in err
    err = _usage_error(capsys, verb, "--data", "/nonexistent", "--schema-prefix", "x_", *VERBS[verb])
    assert "--schema-prefix needs --url" in err
