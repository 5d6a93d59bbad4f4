"""The review verbs through the command line: output, exit codes 0 / 1 / 2, one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from audit.layout import HomeKeys, LogMeta
from gateway.cli import main
from gateway.identity import make_credit_code
from tests.audit.cli_run import run, run_json
from tests.audit.review import OTHER, PERSON, Replicas


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gateway's own purpose catalogue, with the replicas' ``benefit_review`` (not built in)."""
    path = tmp_path_factory.mktemp("catalogue") / "purposes.json"
    purpose = {
        "code": "benefit_review",
        "name_zh": "待遇复核",
        "name_en": "Benefit review",
        "description": ".",
    }
    path.write_text(json.dumps({"version": "test", "purposes": [purpose]}))
    return path


def assert_usage_error(result: tuple[int, str, str], text: str = "") -> None:
    code, _, err = result
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("dsgw:")]
    assert len(lines) == 1 and "Traceback" not in err
    assert text in lines[0]


# --- search -----------------------------------------------------------------------------------


def test_search_by_subject(capsys: pytest.CaptureFixture[str], logs: list[str], keys: list[str]) -> None:
    data = run_json(capsys, "search", *logs, *keys, "--subject", PERSON)
    assert data["count"] == 6
    assert {e["entry"]["subject"]["id"] for e in data["entries"]} == {PERSON}
    assert data["criteria"] == {"subject": f"person:***{PERSON[-4:]}"}
    assert [log["candidates"] for log in data["logs"]] == [4, 2]

    code, out, _ = run(capsys, "search", *logs, *keys, "--subject", PERSON)
    assert code == 0
    assert PERSON not in out and PERSON[:4] + "*" * 10 + PERSON[-4:] in out
    assert out.rstrip().endswith("6 entries")
    code, out, _ = run(capsys, "search", *logs, *keys, "--subject", PERSON, "--full-ids")
    assert PERSON in out


def test_search_filters(
    capsys: pytest.CaptureFixture[str], logs: list[str], keys: list[str], replicas: Replicas, catalogue: Path
) -> None:
    data = run_json(
        capsys,
        "search",
        *logs,
        *keys,
        "--caller",
        "tax",
        "--since",
        "2026-11-16T10:05",
        "--until",
        "2026-11-16T10:08",
    )
    assert [e["entry"]["request_id"] for e in data["entries"]] == ["spike-5", "spike-6", "spike-7"]
    data = run_json(capsys, "search", *logs, *keys, "--decision", "denied")
    assert data["count"] == 2
    data = run_json(
        capsys, "search", *logs, *keys, "--provider", "tax", "--since", "2026-11-05", "--until", "2026-11-05"
    )
    assert [e["entry"]["request_id"] for e in data["entries"]] == ["person-read-2"]
    data = run_json(
        capsys,
        "search",
        *logs,
        *keys,
        "--purpose",
        "benefit_review",
        "--purposes",
        str(catalogue),
        "--limit",
        "2",
    )
    assert data["count"] == 2 and data["truncated"]
    data = run_json(capsys, "search", *logs, *keys, "--kind", "push_notification", "--timezone", "UTC")
    assert [e["log"] for e in data["entries"]] == [replicas.b.origin]


def test_search_with_explicit_key_files(
    capsys: pytest.CaptureFixture[str], logs: list[str], replicas: Replicas
) -> None:
    home = HomeKeys(replicas.home)
    data = run_json(
        capsys,
        "search",
        *logs,
        "--auditor-key",
        str(home.auditor_key),
        "--blind-key",
        str(home.blind_index_key),
        "--subject",
        OTHER,
    )
    assert {e["entry"]["subject"]["id"] for e in data["entries"]} == {OTHER}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--subject", "120116198505050070"], "check"),
        (["--employer", "not-a-code"], ""),
        ([], "at least one criterion"),
        (["--since", "yesterday"], "neither a date"),
        (["--since", "2026-11-05", "--until", "2026-11-04"], "ends before"),
        (["--subject", PERSON, "--timezone", "Mars/Base"], "unknown time zone"),
        (["--kind", "consent_change", "--decision", "allowed"], "access entries only"),
        (["--purpose", "nosuch"], "--purpose: unknown purpose code 'nosuch'"),
        (["--purpose", "benefit_review"], "unknown purpose code 'benefit_review'"),
        (
            ["--purpose", "nosuch", "--purposes", "/nonexistent/purposes.json"],
            "cannot read purpose catalogue",
        ),
    ],
)
def test_search_input_errors(
    capsys: pytest.CaptureFixture[str], logs: list[str], keys: list[str], argv: list[str], message: str
) -> None:
    assert_usage_error(run(capsys, "search", *logs, *keys, *argv), message)


def test_missing_keys_and_bad_logs(
    capsys: pytest.CaptureFixture[str], logs: list[str], tmp_path: Path, replicas: Replicas
) -> None:
    assert_usage_error(run(capsys, "search", *logs, "--subject", PERSON), "auditor key")
    assert_usage_error(
        run(capsys, "search", "--log", str(tmp_path), "--home", str(replicas.home), "--subject", PERSON),
        "not an audit log",
    )
    assert_usage_error(
        run(capsys, "search", *logs, "--auditor-key", str(tmp_path / "none"), "--subject", PERSON),
        "no such file",
    )
    loose = tmp_path / "loose.key"
    loose.write_bytes(HomeKeys(replicas.home).auditor_key.read_bytes())
    loose.chmod(0o644)
    assert_usage_error(run(capsys, "search", *logs, "--auditor-key", str(loose), "--subject", PERSON), "0600")


# --- report and subject report ----------------------------------------------------------------


def test_report(capsys: pytest.CaptureFixture[str], logs: list[str], keys: list[str]) -> None:
    data = run_json(capsys, "report", *logs, *keys, "--since", "2026-11-16", "--until", "2026-11-18")
    rules = sorted((a["rule"], a["caller"]) for a in data["anomalies"])
    assert rules == [
        ("no_basis", "education"),
        ("off_hours", "civil_affairs"),
        ("operator_breadth", "hrss"),
        ("volume_spike", "hrss"),
        ("volume_spike", "tax"),
    ]
    assert data["period"] == {"since": "2026-11-16", "until": "2026-11-18", "timezone": "Asia/Shanghai"}
    assert data["entries"] == 20 + 55 + 3
    assert data["denial_reasons"] == {"CONSENT_MISSING": 1}
    assert PERSON not in json.dumps(data) and OTHER not in json.dumps(data)

    data = run_json(
        capsys,
        "report",
        *logs,
        *keys,
        "--since",
        "2026-11-16",
        "--spike-factor",
        "5",
        "--spike-min-count",
        "60",
        "--max-subjects",
        "60",
        "--work-hours",
        "00:00-23:59",
        "--workdays",
        "1-7",
        "--rule",
        "volume_spike",
        "--rule",
        "off_hours",
        "--rule",
        "operator_breadth",
    )
    assert data["anomalies"] == []
    assert data["thresholds"]["workdays"] == [0, 1, 2, 3, 4, 5, 6]

    code, out, _ = run(capsys, "report", *logs, *keys, "--since", "2026-11-17", "--until", "2026-11-17")
    assert code == 0
    assert "Anomalies (3)" in out and "op-wide" in out and "Denials" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["--work-hours", "18:00-08:00"],
        ["--work-hours", "nine-to-five"],
        ["--workdays", "0-9"],
        ["--since", "2026-11-18", "--until", "2026-11-16"],
        ["--spike-factor", "0"],
    ],
)
def test_report_input_errors(
    capsys: pytest.CaptureFixture[str], logs: list[str], keys: list[str], argv: list[str]
) -> None:
    assert_usage_error(run(capsys, "report", *logs, *keys, *argv))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workdays", "abc"], "--workdays 'abc': use D-D, ISO weekdays from 1 (Monday) to 7 (Sunday)"),
        (["--workdays", "1-5-7"], "--workdays '1-5-7': use D-D"),
        (["--workdays", "5-1"], "--workdays '5-1': use D-D"),
        (["--work-hours", "0800"], "--work-hours '0800': use HH:MM-HH:MM"),
        (["--work-hours", "08:00-6pm"], "--work-hours '08:00-6pm': use HH:MM-HH:MM"),
        (["--since", "2026-02-30"], "--since: 2026-02-30 is not a date (YYYY-MM-DD)"),
        (["--until", "soon"], "--until: soon is not a date (YYYY-MM-DD)"),
        (["--holiday", "2026-13-01"], "--holiday: 2026-13-01 is not a date (YYYY-MM-DD)"),
    ],
)
def test_report_option_messages(
    capsys: pytest.CaptureFixture[str], logs: list[str], keys: list[str], argv: list[str], message: str
) -> None:
    result = run(capsys, "report", *logs, *keys, *argv)
    assert_usage_error(result, message)
    for noise in ("unpack", "fromisoformat", "Invalid isoformat"):
        assert noise not in result[2]


def test_report_header_without_a_range(
    capsys: pytest.CaptureFixture[str], logs: list[str], keys: list[str]
) -> None:
    code, out, _ = run(capsys, "report", *logs, *keys)
    assert code == 0
    assert out.startswith("Audit report 2026-11-02 .. 2026-11-19 (Asia/Shanghai): ")
    code, out, _ = run(capsys, "report", *logs, *keys, "--since", "2026-11-17")
    assert out.startswith("Audit report 2026-11-17 .. 2026-11-19 (Asia/Shanghai): ")


def test_subject_report(capsys: pytest.CaptureFixture[str], logs: list[str], keys: list[str]) -> None:
    data = run_json(capsys, "subject-report", PERSON, *logs, *keys)
    assert data["events"] == 6
    assert data["reads_by_agency"] == {"hrss": 1, "tax": 1}
    text = json.dumps(data, ensure_ascii=False)
    for secret in (PERSON, OTHER, "op-night", "op-1", "gw-a", "gw-b"):
        assert secret not in text
    code, out, _ = run(capsys, "subject-report", PERSON, *logs, *keys, "--lang", "zh")
    assert code == 0
    assert "的数据使用记录：共 6 条" in out and "On 2026" not in out
    code, out, _ = run(capsys, "subject-report", PERSON, *logs, *keys, "--lang", "en")
    assert "the Taxation Bureau (税务局) asked" in out
    assert_usage_error(run(capsys, "subject-report", "12345", *logs, *keys))
    employer = make_credit_code("91", "120116", "MA05ABCD")
    data = run_json(capsys, "subject-report", employer, "--employer", *logs, *keys)
    assert data["events"] == 0


# --- export and verify-export -----------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(
    replicas: Replicas, logs: list[str], keys: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "bundle.json"
    code = main(
        ["audit", "export", *logs, *keys, "--subject", PERSON, "--decrypt", "--out", str(out), "--json"]
    )
    assert code == 0
    return out


def test_export_and_verify(
    capsys: pytest.CaptureFixture[str], bundle: Path, logs: list[str], replicas: Replicas
) -> None:
    capsys.readouterr()
    data = run_json(capsys, "verify-export", str(bundle), *logs)
    assert data["verified"] and data["entries"] == 6 and data["decrypted"] == 6
    assert data["signed_by"] == [replicas.a.origin]
    data = run_json(
        capsys, "verify-export", str(bundle), *logs, "--auditor-key", str(HomeKeys(replicas.home).auditor_key)
    )
    assert data["content_checked"] == 6
    vkeys = [LogMeta.load(r.directory).vkey for r in (replicas.a, replicas.b)]
    code, out, _ = run(capsys, "verify-export", str(bundle), "--trust", vkeys[0], "--trust", vkeys[1])
    assert code == 0 and out.startswith("bundle verified")


def test_export_by_entry_sealed_only(
    capsys: pytest.CaptureFixture[str], logs: list[str], keys: list[str], replicas: Replicas, tmp_path: Path
) -> None:
    out = tmp_path / "one.json"
    data = run_json(
        capsys,
        "export",
        *logs,
        *keys,
        "--entry",
        f"{replicas.b.origin}#0",
        "--entry",
        f"{replicas.b.directory}#3",
        "--out",
        str(out),
        "--note",
        "case 7",
    )
    assert data["entries"] == 2 and not data["decrypted"]
    assert data["signed_by"] == replicas.a.origin  # the home's key is replica a's: a's vkey verifies it
    text = out.read_text()
    assert PERSON not in text and '"entry"' not in text
    trust = tmp_path / "trusted.txt"
    trust.write_text("\n".join(LogMeta.load(r.directory).vkey for r in (replicas.a, replicas.b)) + "\n")
    result = run_json(capsys, "verify-export", str(out), "--trust-file", str(trust))
    assert result["note"] == "case 7"


def test_tampered_bundles_fail_with_exit_1(
    capsys: pytest.CaptureFixture[str], bundle: Path, logs: list[str], replicas: Replicas, tmp_path: Path
) -> None:
    original = json.loads(bundle.read_text())

    def check(mutate: Any, expected: str) -> None:
        data = json.loads(json.dumps(original))
        mutate(data)
        path = tmp_path / "tampered.json"
        path.write_text(json.dumps(data))
        code, _, err = run(capsys, "verify-export", str(path), *logs)
        assert code == 1, err
        assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1

    check(lambda d: d["logs"][0]["entries"][0]["entry"].update(caller="education"), "signature")
    check(lambda d: d["logs"][1]["entries"].pop(), "signature")
    check(lambda d: d.update(created="2030-01-01T00:00:00Z"), "signature")
    check(lambda d: d.update(signatures=[]), "signature")
    code, _, err = run(capsys, "verify-export", str(bundle), "--log", str(replicas.b.directory))
    assert code == 1 and "signature" in err
    (tmp_path / "garbage.json").write_text("{not json")
    code, _, err = run(capsys, "verify-export", str(tmp_path / "garbage.json"), *logs)
    assert code == 1 and "not valid JSON" in err


def test_export_and_verify_input_errors(
    capsys: pytest.CaptureFixture[str], bundle: Path, logs: list[str], keys: list[str], tmp_path: Path
) -> None:
    assert_usage_error(run(capsys, "verify-export", str(bundle)), "trust")
    assert_usage_error(run(capsys, "verify-export", str(bundle), "--trust", "nonsense"), "trusted key")
    assert_usage_error(
        run(capsys, "verify-export", str(tmp_path / "none.json"), "--trust", "x"), "no such file"
    )
    out = str(tmp_path / "b.json")
    assert_usage_error(run(capsys, "export", *logs, *keys, "--out", out), "select entries")
    assert_usage_error(run(capsys, "export", *logs, *keys, "--entry", "7", "--out", out), "LOG#INDEX")
    assert_usage_error(run(capsys, "export", *logs, *keys, "--entry", "nolog#1", "--out", out), "no log")
    auditor = ["--auditor-key", keys[1] + "/keys/auditor.key"]
    assert_usage_error(
        run(capsys, "export", *logs, *auditor, "--subject", PERSON, "--out", out), "signer-key"
    )
    bad = tmp_path / "bad.key"
    bad.write_text("PRIVATE+KEY+x+00000000+AAAA\n")
    assert_usage_error(
        run(capsys, "export", *logs, *auditor, "--signer-key", str(bad), "--subject", PERSON, "--out", out),
        "signer key",
    )


def test_console_script_exit_codes(bundle: Path, logs: list[str], tmp_path: Path) -> None:
    """The real process: exit code and a one-line reason on stderr, no traceback."""
    tampered = tmp_path / "t.json"
    data = json.loads(bundle.read_text())
    data["logs"][0]["entries"][0]["proof"] = data["logs"][0]["entries"][0]["proof"][::-1]
    tampered.write_text(json.dumps(data))
    command = [sys.executable, "-m", "gateway", "audit", "verify-export"]
    ok = subprocess.run([*command, str(bundle), *logs, "--json"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and json.loads(ok.stdout)["verified"]
    bad = subprocess.run([*command, str(tampered), *logs], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_unknown_purpose_against_the_gateways_catalogue(
    capsys: pytest.CaptureFixture[str], logs: list[str], keys: list[str], catalogue: Path, tmp_path: Path
) -> None:
    """--purpose is checked against the catalogue the gateway uses, as --caller against the agencies."""
    assert_usage_error(
        run(
            capsys,
            "search",
            *logs,
            *keys,
            "--purpose",
            "employment_subsidy_review",
            "--purposes",
            str(catalogue),
        ),
        f"not in {catalogue}",
    )
    out = str(tmp_path / "b.json")
    assert_usage_error(
        run(capsys, "export", *logs, *keys, "--purpose", "nosuch", "--out", out),
        "unknown purpose code 'nosuch'",
    )
    assert run_json(capsys, "search", *logs, *keys, "--purpose", "employment_subsidy_review")["count"] > 0


def test_a_missing_index_points_to_reindex(
    capsys: pytest.CaptureFixture[str], replicas: Replicas, keys: list[str], tmp_path: Path
) -> None:
    copy = tmp_path / "gw-b"
    shutil.copytree(replicas.b.directory, copy)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{copy / 'index.sqlite'}{suffix}").unlink(missing_ok=True)
    result = run(capsys, "search", "--log", str(copy), *keys, "--subject", PERSON)
    assert_usage_error(result, f"rebuild it with dsgw audit reindex --log {copy}")
    assert "opening the log for writing" not in result[2]
    assert run(capsys, "reindex", "--log", str(copy))[0] == 0
    assert run_json(capsys, "search", "--log", str(copy), *keys, "--subject", PERSON)["count"] == 2


# --- failed checks: one JSON problem on stdout, the code on the one stderr line ----------------


def assert_check_failed(result: tuple[int, str, str], code: str, *, json_out: bool = True) -> dict[str, Any]:
    status, out, err = result
    assert status == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith(f"dsgw: {code}: ")
    if not json_out:
        assert out == ""
        return {}
    data = json.loads(out)
    assert data["ok"] is False and data["problem"]["code"] == code
    assert lines[0] == f"dsgw: {code}: {data['problem']['message']}"
    problem: dict[str, Any] = data["problem"]
    return problem


def test_verify_export_failures_in_json(
    capsys: pytest.CaptureFixture[str], bundle: Path, logs: list[str], replicas: Replicas, tmp_path: Path
) -> None:
    original = json.loads(bundle.read_text())

    def verify(mutate: Any, *extra: str) -> tuple[int, str, str]:
        data = json.loads(json.dumps(original))
        mutate(data)
        path = tmp_path / "tampered.json"
        path.write_text(json.dumps(data))
        return run(capsys, "verify-export", str(path), *logs, *extra)

    signature = verify(lambda d: d.update(created="2030-01-01T00:00:00Z"), "--json")
    problem = assert_check_failed(signature, "EXPORT_SIGNATURE")
    assert "does not verify" in problem["message"] and problem["entry"] is None
    assert_check_failed(
        verify(lambda d: d.update(created="2030-01-01T00:00:00Z")), "EXPORT_SIGNATURE", json_out=False
    )

    index = original["logs"][0]["entries"][0]["index"]

    def reverse_proof(d: dict[str, Any]) -> None:
        """A bad proof, re-signed by the exporter (the home's checkpoint key)."""
        from audit.checkpoint import Signer, sign_note
        from audit.review.export import canonical_json

        d["logs"][0]["entries"][0]["proof"].reverse()
        key = Signer.from_key_string(
            HomeKeys(replicas.home).checkpoint_key.read_text(encoding="ascii").strip()
        )
        signer = Signer(replicas.a.origin, key.private_key)
        text = canonical_json({k: v for k, v in d.items() if k != "signatures"}) + b"\n"
        d["signatures"] = sign_note(text, [signer])[len(text) + 1 :].decode().splitlines()

    problem = assert_check_failed(verify(reverse_proof, "--json"), "EXPORT_INCLUSION")
    assert problem["entry"] == index and problem["log"] == original["logs"][0]["origin"]

    # malformed content is a format error naming the member, not a signature failure
    for mutate, member in [
        (lambda d: d["logs"][0]["entries"][0].update(index="zero"), "'logs[0].entries[0].index'"),
        (lambda d: d["logs"][0]["entries"][0].update(index=9007199254740993), "'logs[0].entries[0].index'"),
        (lambda d: d["logs"][0]["entries"][0].update(sealed="%%%"), "'logs[0].entries[0].sealed'"),
        (lambda d: d["logs"][0]["entries"][0].update(proof=None), "'logs[0].entries[0].proof'"),
        (lambda d: d.update(logs={}), "'logs'"),
    ]:
        problem = assert_check_failed(verify(mutate, "--json"), "EXPORT_FORMAT")
        assert member in problem["message"] and "safe integer domain" not in problem["message"]

    (tmp_path / "garbage.json").write_text("{not json")
    garbage = run(capsys, "verify-export", str(tmp_path / "garbage.json"), *logs, "--json")
    assert "not valid JSON" in assert_check_failed(garbage, "EXPORT_FORMAT")["message"]

    # a forged copy of a member before the signed one: one copy would be shown, the other checked
    signed = json.dumps(original["logs"][0]["entries"][0]["entry"])
    compact = json.dumps(original)
    doubled = compact.replace('"entry": ' + signed, '"entry": {"purpose": "FORGED"}, "entry": ' + signed, 1)
    assert doubled != compact
    (tmp_path / "doubled.json").write_text(doubled)
    twice = run(capsys, "verify-export", str(tmp_path / "doubled.json"), *logs, "--json")
    assert "'entry' twice" in assert_check_failed(twice, "EXPORT_FORMAT")["message"]


@pytest.fixture
def tampered_a(replicas: Replicas, tmp_path: Path) -> tuple[Path, int]:
    """A copy of replica a with one of PERSON's entries changed in its segment."""
    from audit.review.query import AuditorKeys, LogReader

    copy = tmp_path / "gw-a"
    shutil.copytree(replicas.a.directory, copy)
    target = replicas.a.indices(lambda e: e.subject is not None and e.subject.id == PERSON)[1]
    with LogReader.open(copy, AuditorKeys()) as reader:
        _, offset = reader.index.location(target) or (0, 0)
    path = next((copy / "segments").iterdir())
    data = bytearray(path.read_bytes())
    data[offset + 40] ^= 0x01
    path.write_bytes(bytes(data))
    return copy, target


@pytest.mark.parametrize(
    "verb",
    [
        ["search", "--subject", PERSON],
        ["report", "--since", "2026-11-02", "--until", "2026-11-30"],
        ["subject-report", PERSON],
    ],
)
def test_review_of_a_tampered_log_fails_in_json(
    capsys: pytest.CaptureFixture[str], keys: list[str], tampered_a: tuple[Path, int], verb: list[str]
) -> None:
    copy, target = tampered_a
    argv = [verb[0], "--log", str(copy), *keys, *verb[1:]]
    problem = assert_check_failed(run(capsys, *argv, "--json"), "LOG_CORRUPTED")
    assert problem["entry"] == target and f"entry {target}" in problem["message"]
    assert_check_failed(run(capsys, *argv), "LOG_CORRUPTED", json_out=False)


# --- key and trust files ----------------------------------------------------------------------


def test_home_without_keys_is_named(
    capsys: pytest.CaptureFixture[str], logs: list[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nonexistent"
    assert_usage_error(
        run(capsys, "search", *logs, "--home", str(missing), "--subject", PERSON),
        f"--home {missing}: no such directory",
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run(capsys, "search", *logs, "--home", str(empty), "--subject", PERSON)
    assert_usage_error(result, f"--home {empty}: no auditor key ({empty / 'keys' / 'auditor.key'}")


def test_trust_file_comments_and_bad_lines(
    capsys: pytest.CaptureFixture[str], bundle: Path, replicas: Replicas, tmp_path: Path
) -> None:
    vkeys = [LogMeta.load(r.directory).vkey for r in (replicas.a, replicas.b)]
    trust = tmp_path / "trusted.txt"
    trust.write_text(f"# inspector keys\n\n  {vkeys[0]}\n   # replica b\n{vkeys[1]}\n\n")
    assert run_json(capsys, "verify-export", str(bundle), "--trust-file", str(trust))["verified"]
    trust.write_text(f"# inspector keys\n{vkeys[0]}\n\nnot a key\n")
    assert_usage_error(
        run(capsys, "verify-export", str(bundle), "--trust-file", str(trust)), f"{trust}:4: verifier key"
    )
