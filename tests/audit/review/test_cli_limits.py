"""The review verbs at the edges: extreme dates and thresholds, entry indices beyond any log,
bundles written all or nothing, deeply nested JSON, and an index left behind by a writer that
crashed. Each exits 0, 1 or 2 with one line on stderr, never a traceback."""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from audit.review.report import ReportConfig
from tests.audit.cli_run import one_line, run, run_json
from tests.audit.review import PERSON, Replicas

ROOT = Path(__file__).resolve().parents[3]


def usage_error(result: tuple[int, str, str], text: str) -> None:
    code, _, err = result
    assert code == 2, err
    one_line(err)
    assert text in err, err


# --- extreme dates and thresholds --------------------------------------------------------------


def test_open_ended_dates_mean_the_whole_log(
    capsys: pytest.CaptureFixture[str], logs: list[str], keys: list[str], replicas: Replicas
) -> None:
    everything = len(replicas.a.entries) + len(replicas.b.entries)
    for argv in (
        ["--since", "0001-01-01"],
        ["--until", "9999-12-31"],
        ["--since", "0001-01-01", "--until", "9999-12-31"],
        ["--since", "0001-01-01T00:00", "--until", "9999-12-31T23:00-05:00"],
        ["--since", "0001-01-01", "--timezone", "America/New_York"],
    ):
        data = run_json(capsys, "search", *logs, *keys, *argv)
        assert data["count"] == everything, argv
    assert run_json(capsys, "search", *logs, *keys, "--until", "0001-01-01T05:00+08:00")["count"] == 0
    assert run_json(capsys, "search", *logs, *keys, "--since", "9999-12-31")["count"] == 0

    whole = run_json(capsys, "report", *logs, *keys)
    for argv in (
        ["--since", "0001-01-05"],
        ["--until", "9999-12-31"],
        ["--since", "0001-01-01", "--until", "9999-12-31"],
    ):
        data = run_json(capsys, "report", *logs, *keys, *argv)
        assert data["entries"] == whole["entries"] and data["anomalies"] == whole["anomalies"], argv
    code, out, err = run(capsys, "report", *logs, *keys, "--until", "9999-12-31")
    assert code == 0 and err == "" and out.startswith("Audit report 2026-11-02 .. 9999-12-31"), err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--spike-window", "3000000"], "--spike-window: 3000000 is too large: at most 3,660 days"),
        (["--spike-window", "99999999999999999999"], "--spike-window: 99999999999999999999 is too large"),
        (["--spike-min-history", "99999999999999999999"], "--spike-min-history: 99999999999999999999 is too"),
        (["--spike-factor", "nan"], "--spike-factor: 'nan' is not a positive finite number"),
        (["--spike-factor", "inf"], "--spike-factor: 'inf' is not a positive finite number"),
        (["--spike-factor=-inf"], "--spike-factor: '-inf' is not a positive finite number"),
        (["--spike-factor=-2"], "--spike-factor: '-2' is not a positive finite number"),
        (["--spike-factor", "0"], "--spike-factor: '0' is not a positive finite number"),
        (["--spike-factor", "lots"], "--spike-factor: 'lots' is not a number"),
    ],
)
def test_report_thresholds_are_bounded(
    capsys: pytest.CaptureFixture[str], logs: list[str], keys: list[str], argv: list[str], message: str
) -> None:
    usage_error(run(capsys, "report", *logs, *keys, *argv), message)


def test_the_longest_spike_window_works(
    capsys: pytest.CaptureFixture[str], logs: list[str], keys: list[str]
) -> None:
    data = run_json(capsys, "report", *logs, *keys, "--spike-window", "3660", "--spike-min-history", "3660")
    assert data["thresholds"]["spike_window_days"] == 3660


@pytest.mark.parametrize(
    "config",
    [
        {"spike_factor": math.nan},
        {"spike_factor": math.inf},
        {"spike_window_days": 3661},
        {"spike_min_history_days": 10**20, "spike_window_days": 10**20},
    ],
)
def test_report_config_refuses_what_disables_or_breaks_a_rule(config: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ReportConfig(**config)  # type: ignore[arg-type]


def test_an_entry_index_beyond_any_log(
    capsys: pytest.CaptureFixture[str], logs: list[str], keys: list[str], replicas: Replicas, tmp_path: Path
) -> None:
    out = str(tmp_path / "b.json")
    for index in ("99999999999999999999999", str(2**63), str(2**63 - 1), "1000"):
        result = run(capsys, "export", *logs, *keys, "--entry", f"{replicas.a.origin}#{index}", "--out", out)
        usage_error(result, f"log {replicas.a.origin} has no entry {index}")
    assert not Path(out).exists()


# --- the bundle is written all or nothing ------------------------------------------------------


def _export_with_file_size_limit(argv: list[str], limit: int) -> subprocess.CompletedProcess[str]:
    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "export", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        preexec_fn=small_files,
    )


def test_a_failed_export_leaves_no_partial_bundle(
    logs: list[str], keys: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bundle.json"
    argv = [*logs, *keys, "--since", "2000-01-01", "--decrypt", "--out", str(out)]  # about 300 kB
    # a new bundle too large for the disk: nothing is left behind
    failed = _export_with_file_size_limit(argv, 65536)
    assert failed.returncode == 2, failed.stderr
    assert failed.stderr == f"dsgw: --out {out}: cannot write the bundle: File too large\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # an existing bundle stays whole when its replacement cannot be written
    assert run(capsys, "export", *logs, *keys, "--subject", PERSON, "--out", str(out))[0] == 0
    before = out.read_bytes()
    failed = _export_with_file_size_limit(argv, 65536)
    assert failed.returncode == 2 and "File too large" in failed.stderr
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.json"]
    # a successful export replaces it
    assert run(capsys, "export", *argv)[0] == 0
    assert out.read_bytes() != before and json.loads(out.read_bytes())["logs"]


def test_an_export_keeps_the_umask_a_link_and_streams_into_a_pipe(
    logs: list[str], keys: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new bundle gets the umask's mode (a --decrypt bundle holds personal data: umask 077 keeps
    it private), an existing one keeps its mode, a link keeps pointing at the bundle it names, and
    a pipe (--out >(gpg -e ...)) gets the bundle as a stream."""
    argv = [*logs, *keys, "--subject", PERSON, "--decrypt"]
    old = os.umask(0o077)
    try:
        assert run(capsys, "export", *argv, "--out", str(tmp_path / "private.json"))[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600
    target = tmp_path / "kept.json"
    target.write_text("{}")
    target.chmod(0o640)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    assert run(capsys, "export", *argv, "--out", str(link))[0] == 0
    assert link.is_symlink() and json.loads(target.read_bytes())["logs"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    assert run(capsys, "export", *argv, "--out", str(fifo))[0] == 0
    reader.join(timeout=30)
    assert json.loads(received[0])["logs"] and stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_an_unwritable_out_is_named(
    capsys: pytest.CaptureFixture[str], logs: list[str], keys: list[str], tmp_path: Path
) -> None:
    for out, reason in ((tmp_path, "Is a directory"), (tmp_path / "no" / "b.json", "No such file")):
        result = run(capsys, "export", *logs, *keys, "--subject", PERSON, "--out", str(out))
        usage_error(result, f"--out {out}: cannot write the bundle: {reason}")
    assert [p.name for p in tmp_path.iterdir()] == []


# --- deeply nested JSON ------------------------------------------------------------------------


def test_deeply_nested_json_is_a_format_error(
    capsys: pytest.CaptureFixture[str], logs: list[str], keys: list[str], tmp_path: Path
) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    for json_out in (False, True):
        code, out, err = run(capsys, "verify-export", str(deep), *logs, *(["--json"] if json_out else []))
        assert code == 1 and err.startswith("dsgw: EXPORT_FORMAT: ") and "nested" in err, err
        one_line(err)
        if json_out:
            assert json.loads(out)["problem"]["code"] == "EXPORT_FORMAT"
    # nested less than the parser's limit, but far deeper than any bundle
    deep.write_text('{"format": ' + "[" * 500 + "]" * 500 + "}")
    code, _, err = run(capsys, "verify-export", str(deep), *logs)
    assert code == 1 and err.startswith("dsgw: EXPORT_FORMAT: ") and "nests deeper" in err, err
    for name, text in (("deep.json", "[" * 100_000 + "]" * 100_000), ("deep.toml", "a = " + "[" * 100_000)):
        catalogue = tmp_path / name
        catalogue.write_text(text)
        result = run(capsys, "search", *logs, *keys, "--purpose", "x", "--purposes", str(catalogue))
        usage_error(result, f"--purposes {catalogue}: ")


# --- an index left behind by a writer that crashed ---------------------------------------------


@pytest.fixture
def crashed(replicas: Replicas, tmp_path: Path) -> tuple[Path, int]:
    """A copy of replica a to which a writer appended 3 entries about PERSON and was killed before
    it indexed or checkpointed them: (directory, entries in the segments)."""
    copy = tmp_path / "gw-a"
    shutil.copytree(replicas.a.directory, copy)
    child = f"""
import os
from audit.checkpoints import CheckpointPolicy
from audit.log import AuditLog
from tests.audit.review import PERSON, access, local
log = AuditLog.open({str(copy)!r}, home={str(replicas.home)!r}, index="none",
                    policy=CheckpointPolicy(every_entries=10**9, every_seconds=3600))
for i in range(3):
    log.append(access(local(2026, 11, 20, 10, i), subject=PERSON, request_id=f"late-{{i}}"))
os._exit(0)  # killed: nothing indexed, no checkpoint
"""
    subprocess.run([sys.executable, "-c", child], check=True, capture_output=True, timeout=120, cwd=ROOT)
    return copy, len(replicas.a.entries) + 3


@pytest.mark.parametrize(
    "verb",
    [
        ["search", "--subject", PERSON],
        ["report"],
        ["subject-report", PERSON],
        ["export", "--subject", PERSON, "--until", "2026-11-19"],
    ],
)
def test_entries_the_index_lacks_are_warned_about(
    capsys: pytest.CaptureFixture[str],
    keys: list[str],
    crashed: tuple[Path, int],
    verb: list[str],
    tmp_path: Path,
) -> None:
    copy, _ = crashed
    extra = ["--out", str(tmp_path / "b.json")] if verb[0] == "export" else []
    argv = [verb[0], "--log", str(copy), *keys, *verb[1:], *extra]
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    one_line(err)
    assert err.startswith("dsgw: warning: ") and "the segments hold entries its index does not" in err
    assert f"run dsgw audit reindex --log {copy}" in err
    assert json.loads(out)["warnings"] == [err.removeprefix("dsgw: warning: ").rstrip("\n")]
    # once reindexed, nothing is missing and nothing is said
    assert run(capsys, "reindex", "--log", str(copy))[0] == 0
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0 and err == "" and json.loads(out)["warnings"] == []


def test_search_finds_them_after_a_reindex(
    capsys: pytest.CaptureFixture[str], keys: list[str], crashed: tuple[Path, int]
) -> None:
    copy, _ = crashed
    before = run_json(capsys, "search", "--log", str(copy), *keys, "--subject", PERSON)
    assert before["logs"][0]["unindexed"] is True
    assert run(capsys, "reindex", "--log", str(copy))[0] == 0
    after = run_json(capsys, "search", "--log", str(copy), *keys, "--subject", PERSON)
    assert after["count"] == before["count"] + 3 and after["logs"][0]["unindexed"] is False


def test_export_of_an_entry_the_index_lacks_says_so(
    capsys: pytest.CaptureFixture[str], keys: list[str], crashed: tuple[Path, int], tmp_path: Path
) -> None:
    copy, size = crashed
    out = str(tmp_path / "b.json")
    result = run(capsys, "export", "--log", str(copy), *keys, "--entry", f"{copy}#{size - 1}", "--out", out)
    usage_error(result, f"entry {size - 1} is not in its index yet")
    assert f"run dsgw audit reindex --log {copy}" in result[2]
    result = run(capsys, "export", "--log", str(copy), *keys, "--entry", f"{copy}#{size}", "--out", out)
    usage_error(result, f"has no entry {size}")
    assert not os.path.exists(out)
