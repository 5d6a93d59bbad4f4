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
        """How many consents the home holds (0 when it has no consent store: nothing was made)."""
        rc, out, err = self("list", "--json")
        if rc == 2 and "no consent store in" in err:
            assert not (self.home / "consent.sqlite").exists()
            return 0
        assert rc == 0, err
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


# --- 9. review fixes -----------------------------------------------------------------------------


def _grant_now(cli: Cli, *extra: str) -> str:
    rc, out, err = cli("grant", *GRANT, "--days", "365", *extra, "--json")
    assert rc == 0, err
    return str(out["consent"]["consent_id"])


def test_expire_as_of_a_future_time_is_refused_and_the_consent_stays_in_force(cli: Cli) -> None:
    cid = _grant_now(cli)
    for at in ("2062-01-01", (datetime.now().astimezone() + timedelta(minutes=5)).isoformat()):
        err = cli.usage_error("expire", "--at", at)
        assert "--at" in err and "future" in err
    rc, out, _ = cli("list", "--status", "granted", "--json")
    assert [c["consent_id"] for c in out["consents"]] == [cid]
    rc, out, _ = cli("expire", "--at", datetime.now().astimezone().isoformat(), "--json")
    assert rc == 0 and out["count"] == 0  # now (or earlier) is fine
    rc, out, _ = cli("revoke", cid, "--json")
    assert rc == 0 and out["consent"]["status"] == "revoked"


def test_list_shows_a_recorded_expiry_as_expired(cli: Cli) -> None:
    """A record whose last event is an expiry (here one recorded ahead of time, as the old
    ``expire --at FUTURE`` did) shows 'expired', as ``--status`` filters it."""
    from gateway.consent.service import ConsentService
    from gateway.consent.store import ConsentStore

    cid = _grant_now(cli)
    ahead = datetime.now().astimezone() + timedelta(days=400)
    with ConsentStore.for_home(cli.home) as store:
        assert len(ConsentService(store, clock=lambda: ahead).expire()) == 1
    rc, out, _ = cli("list")
    assert rc == 0 and out.split()[:2] == [cid, "expired"]
    rc, out, _ = cli("list", "--status", "expired")
    assert out.split()[:2] == [cid, "expired"]
    rc, out, _ = cli("list", "--status", "granted")
    assert out.strip() == "no consents"


@pytest.fixture
def not_a_log(tmp_path: Path) -> dict[str, Path]:
    data = tmp_path / "data"
    data.mkdir()
    (data / "payroll.csv").write_text("a,b\n")
    half = tmp_path / "halflog"
    half.mkdir()
    (half / "log.json").write_text("{\n")
    return {"data_directory": data, "broken_log_json": half}


@pytest.mark.parametrize("which", ["data_directory", "broken_log_json"])
@pytest.mark.parametrize("verb", ["grant", "revoke", "expire", "opt-out"])
def test_audit_log_that_is_not_a_log_refuses_every_change(
    cli: Cli, not_a_log: dict[str, Path], which: str, verb: str
) -> None:
    cid = _grant_now(cli)
    bad = not_a_log[which]
    before = sorted(p.name for p in bad.iterdir())
    args = {
        "grant": [*GRANT, "--days", "30"],
        "revoke": [cid],
        "expire": [],
        "opt-out": ["--subject", PID, "--channel", "sms"],
    }[verb]
    err = cli.usage_error(verb, *args, "--audit-log", str(bad))
    assert f"--audit-log {bad}" in err and ("not an audit log" in err or "not a usable audit log" in err)
    assert sorted(p.name for p in bad.iterdir()) == before  # nothing made in it
    _, out, _ = cli("list", "--status", "granted", "--json")
    assert [c["consent_id"] for c in out["consents"]] == [cid]  # nothing granted or revoked
    _, out, _ = cli("opt-out", "--subject", PID, "--list", "--json")
    assert out["history"] == []


def test_empty_audit_log_path_is_refused(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "notes.txt").write_text("x")
    monkeypatch.chdir(cwd)
    for verb, args in (
        ("grant", [*GRANT, "--days", "30"]),
        ("opt-out", ["--subject", PID, "--channel", "sms"]),
    ):
        err = cli.usage_error(verb, *args, "--audit-log", "")
        assert "--audit-log" in err
    assert sorted(p.name for p in cwd.iterdir()) == ["notes.txt"]
    assert cli.count() == 0


def test_an_empty_or_new_audit_log_directory_is_made_a_log(cli: Cli, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    _grant_now(cli, "--audit-log", str(empty))
    assert (empty / "log.json").exists()
    rc, _, _ = cli("opt-out", "--subject", PID, "--channel", "sms", "--audit-log", str(tmp_path / "new"))
    assert rc == 0 and (tmp_path / "new" / "log.json").exists()
    _grant_now(cli, "--audit-log", str(empty))  # and an existing log is used again


def _special_files(tmp_path: Path) -> dict[str, Path]:
    """Files that are not regular files, all under tmp_path (never /dev)."""
    import socket

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock = tmp_path / "sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    server.close()  # the socket file stays
    target = tmp_path / "real.json"
    target.write_text("keep\n")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    return {"fifo": fifo, "socket": sock, "symlink": link}


@pytest.mark.parametrize("kind", ["fifo", "socket", "symlink"])
def test_receipt_out_that_is_not_a_regular_file_is_refused(cli: Cli, tmp_path: Path, kind: str) -> None:
    import stat

    special = _special_files(tmp_path)[kind]
    mode = os.lstat(special).st_mode
    err = cli.usage_error("grant", *GRANT, "--days", "30", "--receipt-out", str(special))
    assert f"--receipt-out {special}" in err and "not a regular file" in err
    assert cli.count() == 0
    cid = _grant_now(cli)
    err = cli.usage_error("revoke", cid, "--receipt-out", str(special))
    assert "not a regular file" in err
    _, out, _ = cli("list", "--status", "granted", "--json")
    assert out["count"] == 1  # not revoked
    assert os.lstat(special).st_mode == mode and not stat.S_ISREG(mode)  # left as it was
    assert (tmp_path / "real.json").read_text() == "keep\n"


def test_write_receipt_never_replaces_a_special_file(tmp_path: Path) -> None:
    from gateway.consent.receipts import write_receipt

    fifo = _special_files(tmp_path)["fifo"]
    with pytest.raises(OSError, match="not a regular file"):
        write_receipt({"a": 1}, fifo)
    assert not (tmp_path / "fifo").is_file()
    regular = tmp_path / "r.json"
    regular.write_text("old")
    write_receipt({"a": 1}, regular)  # an existing regular file is replaced
    assert json.loads(regular.read_text()) == {"a": 1}


@pytest.mark.parametrize(
    ("verb", "args"),
    [
        ("list", []),
        ("check", CHECK),
        ("receipt-key", []),
        ("revoke", ["cns-1"]),
        ("expire", []),
        ("opt-out", ["--subject", PID, "--list"]),
    ],
)
def test_mistyped_home_is_refused_not_created(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, verb: str, args: list[str]
) -> None:
    typo = tmp_path / "typo"
    err = Cli(capsys, typo).usage_error(verb, *args)
    assert f"no consent store in {typo}" in err and "--home" in err
    assert not typo.exists()
    parent = tmp_path / "dir"  # a directory that exists but is not a home: nothing made in it
    parent.mkdir()
    err = Cli(capsys, parent).usage_error(verb, *args)
    assert "no consent store in" in err and list(parent.iterdir()) == []


def test_a_home_with_a_store_serves_the_read_verbs(cli: Cli) -> None:
    assert cli("opt-out", "--subject", PID, "--channel", "sms")[0] == 0  # a change starts a home
    assert (cli.home / "consent.sqlite").is_file()
    assert cli("list")[0] == 0
    assert cli("check", *CHECK)[0] == 1  # denied, not refused
    assert cli("receipt-key")[0] == 0  # the first receipt key of an existing home


def test_scope_with_an_empty_field_list_is_refused(cli: Cli) -> None:
    for scope in ("hrss.employment_status:", "hrss.employment_status:,"):
        args = [scope if a == "hrss.employment_status" else a for a in GRANT]
        err = cli.usage_error("grant", *args, "--days", "30")
        assert "no fields named" in err
    assert cli.count() == 0
    rc, out, _ = cli("grant", *GRANT, "--days", "30", "--json")  # no colon: every field
    assert rc == 0 and len(out["consent"]["scope"][0]["fields"]) > 2


@pytest.mark.parametrize(
    ("args", "message", "not_in"),
    [
        (
            ["--valid-from", "1970-01-01", "--valid-to", "9998-12-31"],
            "--valid-from '1970-01-01' is too early",
            "9998",
        ),
        (
            ["--valid-from", "1970-01-01T08:00", "--valid-to", "9999-01-01"],
            "--valid-to '9999-01-01' is too late",
            "1970",
        ),
        (
            ["--valid-to", "9999-12-31T23:59:59-12:00"],
            "--valid-to '9999-12-31T23:59:59-12:00' is too late",
            "1970",
        ),
        (
            ["--valid-from", "0001-01-01T00:00", "--days", "1"],
            "--valid-from '0001-01-01T00:00' is too early",
            "9999",
        ),
    ],
)
def test_time_bounds_name_the_bound_violated(cli: Cli, args: list[str], message: str, not_in: str) -> None:
    err = cli.usage_error("grant", *GRANT, *args)
    assert message in err and not_in not in err.split("too")[1]
    assert cli.count() == 0


@pytest.mark.parametrize(
    ("verb", "args", "message"),
    [
        (
            "grant",
            [*GRANT[:-4], "--evidence", "a\udcffb", *GRANT[-2:], "--days", "30"],
            "--evidence: not valid UTF-8",
        ),
        (
            "grant",
            [*GRANT[:-2], "--notice-version", "\udcff", "--days", "30"],
            "--notice-version: not valid UTF-8",
        ),
        ("grant", ["--subject", "1\udcff", *GRANT[2:], "--days", "30"], "--subject: not valid UTF-8"),
        ("grant", [*GRANT, "--days", "30", "--consumer", "x\udcff"], "--consumer: not valid UTF-8"),
        ("revoke", ["cns-\udcff"], "CONSENT_ID: not valid UTF-8"),
        ("opt-out", ["--subject", PID, "--category", "\udcff"], "--category: not valid UTF-8"),
    ],
)
def test_text_that_is_not_utf8_is_named(cli: Cli, verb: str, args: list[str], message: str) -> None:
    err = cli.usage_error(verb, *args)
    assert message in err and "Input should be" not in err
    assert cli.count() == 0
