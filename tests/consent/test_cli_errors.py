"""``dsgw consent``: the failures a user can cause exit 2 with one line naming the option or path,
never a traceback, and store nothing; a receipt that cannot be written after the change was
recorded says so (exit 1) with the consent id."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import consent as consent_cli
from gateway.cli import main
from tests.adapters.netutil import closed_port
from tests.consent import person

PID = person(22)
GRANT = [
    "--subject",
    PID,
    "--consumer",
    "education",
    "--scope",
    "hrss.employment_status",
    "--purpose",
    "employment_subsidy_review",
    "--evidence",
    "form-1",
    "--notice-version",
    "v3",
]
CHECK = [
    "--subject",
    PID,
    "--consumer",
    "education",
    "--dataset",
    "hrss.employment_status",
    "--purpose",
    "employment_subsidy_review",
]
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


class Cli:
    def __init__(self, capsys: pytest.CaptureFixture[str], home: Path) -> None:
        self.capsys = capsys
        self.home = home

    def __call__(self, verb: str, *args: str) -> tuple[int, Any, str]:
        self.capsys.readouterr()
        rc = main(["consent", verb, "--home", str(self.home), *args])
        out, err = self.capsys.readouterr()
        assert "Traceback" not in err
        try:
            parsed: Any = json.loads(out) if out.strip() else None
        except json.JSONDecodeError:
            parsed = out
        return rc, parsed, err

    def usage_error(self, verb: str, *args: str) -> str:
        rc, out, err = self(verb, *args)
        assert rc == 2 and out is None, (rc, out, err)
        assert err.startswith("dsgw: ") and err.count("\n") == 1, err
        return err

    def count(self) -> int:
        rc, out, _ = self("list", "--json")
        assert rc == 0
        return int(out["count"])


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Cli:
    return Cli(capsys, tmp_path / "home")


def _file(tmp_path: Path) -> Path:
    f = tmp_path / "afile"
    f.write_text("x")
    return f


# --- 1. the receipt file ----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["under_a_file", "missing_directory", "a_directory"])
def test_unwritable_receipt_out_refuses_before_granting(cli: Cli, tmp_path: Path, where: str) -> None:
    target = {
        "under_a_file": _file(tmp_path) / "r.json",
        "missing_directory": tmp_path / "nowhere" / "r.json",
        "a_directory": tmp_path,
    }[where]
    err = cli.usage_error("grant", *GRANT, "--days", "30", "--receipt-out", str(target))
    assert "--receipt-out" in err
    assert cli.count() == 0
    assert not (tmp_path / "nowhere").exists()  # nothing created for it


@pytest.mark.skipif(AS_ROOT, reason="chmod does not stop root from writing")
def test_read_only_receipt_directory_refuses_before_granting(cli: Cli, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        err = cli.usage_error("grant", *GRANT, "--days", "30", "--receipt-out", str(locked / "r.json"))
    finally:
        locked.chmod(0o700)
    assert "not writable" in err
    assert cli.count() == 0


def test_receipt_write_failing_after_the_change_says_it_was_recorded(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(_receipt: Any, path: Path) -> None:
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(consent_cli, "write_receipt", full)
    rc, out, err = cli("grant", *GRANT, "--days", "30", "--json")
    assert rc == 1 and err.count("\n") == 1
    cid = out["consent"]["consent_id"]
    assert out["receipt_file"] is None and cid in json.dumps(out["receipt"])
    assert f"consent {cid} WAS granted" in err and "No space left on device" in err
    assert cli.count() == 1  # recorded once; the user is told not to grant again

    rc, out, err = cli("revoke", cid)
    assert rc == 1 and err.count("\n") == 1 and f"consent {cid} WAS revoked" in err
    rc, out, _ = cli("list", "--status", "revoked", "--json")
    assert out["count"] == 1


def test_receipt_out_needs_an_existing_directory_and_help_documents_exit_1(
    cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "r.json"
    rc, out, _ = cli("grant", *GRANT, "--days", "30", "--receipt-out", str(target), "--json")
    assert rc == 0 and Path(out["receipt_file"]) == target and target.exists()
    capsys.readouterr()
    assert main(["consent", "grant", "--help"]) == 0
    assert "1 the change WAS recorded but the receipt file" in " ".join(capsys.readouterr().out.split())


# --- 2. out-of-range dates and integers --------------------------------------------------------


@pytest.mark.parametrize(
    ("verb", "args", "option"),
    [
        ("grant", [*GRANT, "--days", "3000000"], "--days"),
        ("grant", [*GRANT, "--days", "0"], "--days"),
        ("grant", [*GRANT, "--valid-to", "9999-12-31"], "--valid-to"),
        ("grant", [*GRANT, "--valid-from", "0001-01-01", "--days", "1"], "--valid-from"),
        ("grant", [*GRANT, "--valid-from", "0001-01-01T00:00", "--days", "1"], "--valid-from"),
        ("grant", [*GRANT, "--valid-from", "9998-12-31", "--days", "36500"], "--days"),
        ("grant", [*GRANT, "--days", "1", "--use-limit", "99999999999999999999"], "--use-limit"),
        ("check", [*CHECK, "--at", "0001-01-01"], "--at"),
        ("check", [*CHECK, "--at", "9999-12-31T23:59:59-12:00"], "--at"),
        ("expire", ["--at", "0001-01-01"], "--at"),
        ("list", ["--limit", "99999999999999999999"], "--limit"),
        ("list", ["--offset", "99999999999999999999"], "--offset"),
    ],
)
def test_out_of_range_values_exit_2_naming_the_option(
    cli: Cli, verb: str, args: list[str], option: str
) -> None:
    err = cli.usage_error(verb, *args)
    assert option in err
    assert cli.count() == 0


def test_days_count_from_the_start_exactly(cli: Cli) -> None:
    rc, out, _ = cli("grant", *GRANT, "--days", "30", "--json")
    assert rc == 0
    consent = out["consent"]
    start = datetime.fromisoformat(consent["valid_from"])
    assert datetime.fromisoformat(consent["valid_to"]) - start == timedelta(days=30)
    assert datetime.fromisoformat(consent["granted_at"]) == start


# --- 3. store URLs -----------------------------------------------------------------------------


def test_malformed_store_url_is_not_a_database_url(cli: Cli) -> None:
    for url in ("postgresql://postgres@127.0.0.1:xx/test", "not a url"):
        err = cli.usage_error("list", "--store", url)
        assert "consent store URL is not a database URL" in err


def test_unavailable_store_gives_a_reason_without_the_password(cli: Cli) -> None:
    url = f"postgresql://postgres:s3cret-pw@127.0.0.1:{closed_port()}/test"
    err = cli.usage_error("list", "--store", url)
    assert "consent store unavailable: connection refused" in err
    assert "s3cret-pw" not in err


@pytest.mark.postgres
def test_missing_database_is_named(cli: Cli, pg_url: str) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(pg_url).set(database="dsgw_no_such_db", password="s3cret-pw")
    err = cli.usage_error("list", "--store", url.render_as_string(hide_password=False))
    assert "database does not exist" in err and "s3cret-pw" not in err


# --- 4. home and audit log ---------------------------------------------------------------------


def test_home_or_audit_log_that_cannot_be_made_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    blocked = _file(tmp_path) / "sub"
    cli = Cli(capsys, blocked)
    err = cli.usage_error("grant", *GRANT, "--days", "30")
    assert f"--home {blocked}" in err and "not a directory" in err

    cli = Cli(capsys, tmp_path / "home")
    err = cli.usage_error("grant", *GRANT, "--days", "30", "--audit-log", str(blocked))
    assert f"--audit-log {blocked}" in err and "not a directory" in err
    assert cli.count() == 0
    rc, out, _ = cli("grant", *GRANT, "--days", "30", "--json")
    assert rc == 0
    err = cli.usage_error("revoke", out["consent"]["consent_id"], "--audit-log", str(blocked))
    assert "--audit-log" in err
    rc, out, _ = cli("list", "--status", "granted", "--json")
    assert out["count"] == 1
    assert "--audit-log" in cli.usage_error("expire", "--audit-log", str(blocked))


@pytest.mark.skipif(AS_ROOT, reason="chmod does not stop root from writing")
def test_read_only_home_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        err = Cli(capsys, locked / "home").usage_error("grant", *GRANT, "--days", "30")
    finally:
        locked.chmod(0o700)
    assert "--home" in err and "not writable" in err


def test_file_system_error_on_the_way_is_one_line(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path that fails after the checks (made unwritable meanwhile) is still one line."""

    def denied(*_args: Any, **_kw: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(tmp_path / "home" / "keys"))

    monkeypatch.setattr(consent_cli, "load_receipt_signer", denied)
    err = cli.usage_error("grant", *GRANT, "--days", "30")
    assert "keys: Permission denied" in err
    assert cli.count() == 0


# --- 7. --store-schema -------------------------------------------------------------------------


def test_store_schema_is_checked_and_needs_store(cli: Cli, tmp_path: Path) -> None:
    assert "--store-schema needs --store" in cli.usage_error("list", "--store-schema", "abc")
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/test"
    for bad in ("Bad", 'x"; drop', "a" * 64, "1abc"):
        err = cli.usage_error("list", "--store", url, "--store-schema", bad)
        assert "--store-schema must be lower-case letters, digits and '_'" in err


# --- 8. messages of the options the user typed -------------------------------------------------


@pytest.mark.parametrize(
    ("verb", "args", "message"),
    [
        ("grant", [*GRANT[:-4], "--evidence", "a\tb", "--notice-version", "v3"], "--evidence: 1-128"),
        ("grant", [*GRANT[:-2], "--notice-version", "v" * 129], "--notice-version: 1-128"),
        ("grant", [*GRANT, "--consent-id", "no spaces"], "--consent-id: 1-64"),
        ("revoke", ["cns-1", "--note", "a\nb"], "--note: at most 128"),
        ("revoke", ["cns-1", "--evidence", "e" * 129], "--evidence: at most 128"),
        ("opt-out", ["--subject", PID, "--channel", "sms", "--evidence", "\x7f"], "--evidence: at most 128"),
    ],
)
def test_reference_messages_name_the_option(cli: Cli, verb: str, args: list[str], message: str) -> None:
    if verb == "grant":
        args = [*args, "--days", "30"]
    err = cli.usage_error(verb, *args)
    assert message in err and "pattern" not in err and "String should" not in err
    assert cli.count() == 0
