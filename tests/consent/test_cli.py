"""``dsgw consent``: the verbs through the module's register() on a fresh parser, with the exit-code
mapping of gateway.cli.main."""

# ruff: noqa: F811 - the shared fixtures are imported from tests.consent

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import consent as consent_cli
from gateway.cli import fail
from gateway.consent.store import ConsentStore
from gateway.errors import CheckFailed, DsgwError
from tests.consent import T0, Backend, Clock, backend, grant_request, person, service_for  # noqa: F401

PID = person(21)


def run(argv: list[str]) -> int:
    from gateway import logs

    logs.configure(level="WARNING")  # as gateway.cli.main does: logs on stderr, never stdout
    parser = argparse.ArgumentParser(prog="dsgw")
    sub = parser.add_subparsers(dest="command", required=True)
    consent_cli.register(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except CheckFailed as exc:
        return fail(str(exc), 1)
    except DsgwError as exc:
        return fail(str(exc), 2)


class Cli:
    def __init__(self, capsys: pytest.CaptureFixture[str], common: list[str]) -> None:
        self.capsys = capsys
        self.common = common

    def __call__(self, verb: str, *args: str) -> tuple[int, Any, str]:
        self.capsys.readouterr()
        rc = run(["consent", verb, *self.common, *args])
        out, err = self.capsys.readouterr()
        try:
            parsed: Any = json.loads(out) if out.strip() else None
        except json.JSONDecodeError:
            parsed = out
        return rc, parsed, err


GRANT = [
    "--subject",
    PID,
    "--consumer",
    "education",
    "--scope",
    "hrss.employment_status:registered_unemployed,unemployed_since",
    "--purpose",
    "employment_subsidy_review",
    "--days",
    "30",
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
    "--fields",
    "registered_unemployed",
    "--purpose",
    "employment_subsidy_review",
]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Cli:
    return Cli(capsys, ["--home", str(tmp_path / "home")])


def test_grant_check_revoke_verify(cli: Cli, tmp_path: Path) -> None:
    home = tmp_path / "home"
    rc, out, _ = cli("grant", *GRANT, "--json")
    assert rc == 0
    cid = out["consent"]["consent_id"]
    receipt_file = Path(out["receipt_file"])
    assert receipt_file == home / "receipts" / f"{cid}.grant.json"
    assert json.loads(receipt_file.read_text()) == out["receipt"]
    assert (home / "keys" / "receipt-ed25519.pem").stat().st_mode & 0o777 == 0o600

    rc, out, _ = cli("check", *CHECK, "--json")
    assert rc == 0 and out["allowed"] and out["consent_id"] == cid

    rc, out, _ = cli("verify-receipt", str(receipt_file), "--json")
    assert rc == 0 and out["valid"] and out["consent_id"] == cid and out["action"] == "granted"

    tampered = tmp_path / "tampered.json"
    tampered.write_text(receipt_file.read_text().replace('"v3"', '"v4"'))
    rc, out, err = cli("verify-receipt", str(tampered), "--json")
    assert rc == 1 and out["valid"] is False and out["reason"] == "RECEIPT_SIGNATURE_INVALID"
    assert err.startswith("dsgw: ") and err.count("\n") == 1

    rc, out, _ = cli("receipt-key")
    assert rc == 0 and out.startswith("# alg Ed25519 key_id ")  # explanatory text (RFC 7468), then PEM
    assert out.splitlines()[1] == "-----BEGIN PUBLIC KEY-----"
    pub = tmp_path / "pub.pem"
    pub.write_text(out)
    rc, _, _ = cli("verify-receipt", str(receipt_file), "--key", str(pub))
    assert rc == 0
    rc, out, _ = cli("receipt-key", "--json")
    assert out["alg"] == "Ed25519" and len(out["key_id"]) == 16

    rc, out, _ = cli("revoke", cid, "--json", "--channel", "app")
    assert rc == 0 and out["consent"]["status"] == "revoked"
    assert Path(out["receipt_file"]) == home / "receipts" / f"{cid}.revoke.json"
    rc, out, _ = cli("verify-receipt", out["receipt_file"], "--json")
    assert rc == 0 and out["action"] == "revoked"

    rc, out, _ = cli("check", *CHECK, "--json")
    assert rc == 1 and out["allowed"] is False and out["reason"] == "CONSENT_REVOKED"
    rc, _, err = cli("revoke", cid)
    assert rc == 2 and "revoked" in err

    rc, out, _ = cli("list", "--json")
    assert rc == 0 and out["count"] == 1 and out["consents"][0]["history"][1]["status"] == "revoked"
    rc, out, _ = cli("list", "--status", "granted", "--json")
    assert out["count"] == 0


def test_check_reasons_and_statutory_duty(cli: Cli) -> None:
    assert cli("grant", *GRANT)[0] == 0
    rc, out, _ = cli("check", *CHECK[:-1], "startup_loan", "--json")
    assert rc == 1 and out["reason"] == "PURPOSE_MISMATCH"
    rc, out, _ = cli("check", *CHECK[:7], "hard_to_employ", *CHECK[8:], "--json")
    assert rc == 1 and out["reason"] == "FIELD_OUT_OF_SCOPE"
    rc, out, _ = cli("check", *CHECK, "--statutory-duty", "reg-16", "--json")
    assert rc == 0 and out["basis"] == "statutory_duty" and out["reference"] == "reg-16"
    rc, out, _ = cli("check", *CHECK, "--at", "2000-01-01", "--json")
    assert rc == 1 and out["reason"] == "NO_CONSENT"
    rc, out, _ = cli("check", *CHECK)
    assert rc == 0 and out.startswith("allowed")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--purpose", "no_such_purpose"], "unknown purpose"),
        (["--subject", "120101198001011230"], "invalid identity number"),
        (["--valid-from", "2031-01-01", "--valid-to", "2030-12-31"], "ends before it starts"),
        (["--scope", "hrss.nothing"], "no dataset"),
        (["--consumer", "army"], "unknown consumer agency"),
    ],
)
def test_bad_input_exits_2_and_stores_nothing(cli: Cli, change: list[str], message: str) -> None:
    args = list(GRANT)
    if "--valid-to" in change:
        i = args.index("--days")
        del args[i : i + 2]
    for flag in change[::2]:
        if flag in args and flag not in ("--valid-from", "--valid-to"):
            i = args.index(flag)
            del args[i : i + 2]
    rc, out, err = cli("grant", *args, *change)
    assert rc == 2 and out is None
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert "120101198001011230" not in err
    rc, out, _ = cli("list", "--json")
    assert out["count"] == 0


def test_grant_needs_one_validity_end(cli: Cli) -> None:
    args = [a for a in GRANT if a not in ("--days", "30")]
    assert cli("grant", *args)[0] == 2
    assert cli("grant", *GRANT, "--valid-to", "2030-01-01")[0] == 2
    assert cli("grant", *args, "--valid-to", "not-a-date")[0] == 2


def test_receipt_out_and_valid_to_date(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "out" / "r.json"
    target.parent.mkdir()  # --receipt-out makes no directory (test_cli_errors)
    args = [a for a in GRANT if a not in ("--days", "30")]
    rc, out, _ = cli("grant", *args, "--valid-to", "2099-12-31", "--receipt-out", str(target), "--json")
    assert rc == 0 and target.exists()
    # a date means through that day, Beijing time: the end is 2100-01-01T00:00+08:00
    assert out["consent"]["valid_to"] == "2099-12-31T16:00:00+00:00"


def test_opt_out(cli: Cli) -> None:
    assert cli("opt-out", "--subject", PID, "--channel", "sms")[0] == 0
    assert cli("opt-out", "--subject", PID, "--category", "training", "--json")[1]["refused"] is True
    assert cli("opt-out", "--subject", PID, "--channel", "sms", "--undo")[0] == 0
    rc, out, _ = cli("opt-out", "--subject", PID, "--list", "--json")
    assert rc == 0 and out["refused_channels"] == [] and out["refused_categories"] == ["training"]
    assert len(out["history"]) == 3
    assert cli("opt-out", "--subject", PID, "--category", "lottery")[0] == 2
    assert cli("opt-out", "--subject", PID)[0] == 2


def test_expire(cli: Cli, tmp_path: Path) -> None:
    with ConsentStore.for_home(tmp_path / "home") as store:  # a consent of 2025, ended 2025-07-01
        old = service_for(store, Clock(T0)).grant(grant_request(PID)).record.consent_id
    args = [a for a in GRANT if a not in ("--days", "30")]
    rc, out, _ = cli("grant", *args, "--valid-to", "2099-01-01", "--json")
    assert rc == 0
    live = out["consent"]["consent_id"]
    rc, out, _ = cli("expire", "--at", "2025-06-30", "--json")  # before its end: nothing
    assert rc == 0 and out["count"] == 0
    rc, out, _ = cli("expire", "--json")
    assert rc == 0 and out["expired"] == [old]
    rc, out, _ = cli("expire", "--json")
    assert out["count"] == 0
    rc, out, err = cli("expire", "--at", "2099-01-02T00:00:00+08:00", "--json")  # the future
    assert rc == 2 and out is None and "--at" in err and "future" in err
    rc, out, _ = cli("list", "--status", "granted", "--json")
    assert [c["consent_id"] for c in out["consents"]] == [live]


def test_verify_without_a_key_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    f = tmp_path / "r.json"
    f.write_text("{}")
    rc, _, err = cli("verify-receipt", str(f))
    assert rc == 2 and "no receipt key" in err
    rc, _, _ = cli("verify-receipt", str(tmp_path / "missing.json"), "--key", str(f))
    assert rc == 2


def test_home_from_environment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSGW_HOME", str(tmp_path / "envhome"))
    cli = Cli(capsys, [])
    assert cli("grant", *GRANT)[0] == 0
    assert (tmp_path / "envhome" / "consent.sqlite").exists()
    assert (tmp_path / "envhome" / "keys" / "receipt-ed25519.pem").exists()


def test_both_backends_by_store_url(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, backend: Backend
) -> None:
    cli = Cli(capsys, ["--home", str(tmp_path / "home"), *backend.cli_args()])
    rc, out, _ = cli("grant", *GRANT, "--json")
    assert rc == 0
    cid = out["consent"]["consent_id"]
    assert cli("check", *CHECK)[0] == 0
    assert cli("revoke", cid)[0] == 0
    assert cli("check", *CHECK)[0] == 1
    rc, out, _ = cli("list", "--subject", PID, "--json")
    assert out["count"] == 1
    if backend.schema:
        assert not (tmp_path / "home" / "consent.sqlite").exists()


def test_grant_and_revoke_are_audited(cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 5, point 8: every grant and revocation made from the command line is an entry of the
    command line's own audit log (HOME/audit/cli), and that log verifies."""
    from gateway.cli import main

    home = tmp_path / "home"
    rc, out, _ = cli("grant", *GRANT, "--json")
    assert rc == 0
    cid = out["consent"]["consent_id"]
    rc, _, _ = cli("revoke", cid, "--json")
    assert rc == 0
    capsys.readouterr()
    log = str(home / "audit" / "cli")
    assert (
        main(["audit", "search", "--log", log, "--home", str(home), "--kind", "consent_change", "--json"])
        == 0
    )
    found = json.loads(capsys.readouterr().out)
    actions = [(e["entry"]["body"]["consent_id"], e["entry"]["body"]["action"]) for e in found["entries"]]
    assert actions == [(cid, "granted"), (cid, "revoked")]
    assert main(["audit", "verify", "--log", log]) == 0
