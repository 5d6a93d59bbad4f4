"""``dsgw audit`` keygen / init / vkey / checkpoint / prove / consistency / verify: outputs that
tools we did not write can check, exit codes 0 / 1 / 2, one-line errors without tracebacks."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.checkpoints import CheckpointPolicy, checkpoint_name
from audit.layout import HomeKeys, LogMeta
from audit.log import AuditLog
from audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from audit.reader import LogReader
from gateway.cli import main
from tests.audit.cli_run import dsgw, failed_output, one_line
from tests.audit.crash_writer import proto


@pytest.fixture(autouse=True)
def _unbind_logging() -> Iterator[None]:
    """``main()`` binds structlog to this test's captured stderr: undo it afterwards, so that
    later tests do not log into a closed stream."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    home, log = tmp_path / "home", tmp_path / "log"
    assert main(["audit", "keygen", "--home", str(home), "--json"]) == 0
    assert main(["audit", "init", "--log", str(log), "--home", str(home), "--node", "gw-1", "--json"]) == 0
    assert LogMeta.load(log).log_id.startswith("dsgw.audit/gw-1/")
    # checkpoints exactly at 10, 20 and 30 (an automatic one takes the size when it runs: 13, say)
    policy = CheckpointPolicy(every_entries=10_000, every_seconds=3600)
    with AuditLog.open(log, home=home, index="thread", policy=policy) as writer:
        for i in range(30):
            writer.append(proto(i))
            if (i + 1) % 10 == 0:
                writer.checkpoint_now()
        assert writer.flush_index(timeout=30)
    return log, home


def test_keygen_writes_private_key_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = dsgw(capsys, "audit", "keygen", "--home", str(tmp_path / "h"), "--json")
    assert code == 0
    payload = json.loads(out)
    for name in ("checkpoint_key", "blind_index_key", "auditor_key", "auditor_public_key"):
        assert Path(payload[name]).stat().st_mode & 0o077 == 0
    code, _, err = dsgw(capsys, "audit", "keygen", "--home", str(tmp_path / "h"))
    assert code == 2 and "refusing to replace" in err
    one_line(err)


def test_vkey_and_checkpoint_interoperate(
    setup: tuple[Path, Path], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    log, _home = setup
    assert main(["audit", "vkey", "--log", str(log)]) == 0
    vkey = capsysbinary.readouterr().out.decode().strip()
    meta = LogMeta.load(log)
    assert vkey == meta.vkey
    assert main(["audit", "checkpoint", "--log", str(log)]) == 0
    note = capsysbinary.readouterr().out
    assert note == (log / "checkpoints" / "latest").read_bytes()
    # check it by hand, as C2SP signed-note / tlog-checkpoint say (no audit.checkpoint code)
    name, key_hex, key_b64 = vkey.split("+", 2)
    key = base64.b64decode(key_b64)
    assert key[0] == 0x01 and len(key) == 33
    assert hashlib.sha256(name.encode() + b"\n" + key).digest()[:4].hex() == key_hex
    body, signatures = note.split(b"\n\n", 1)
    origin, size, root_b64 = body.decode().split("\n")
    assert origin == name == meta.log_id and size == "30" and len(base64.b64decode(root_b64)) == 32
    line = signatures.decode().rstrip("\n")
    assert line.startswith("\u2014 " + name + " ")
    blob = base64.b64decode(line.rsplit(" ", 1)[1])
    assert blob[:4].hex() == key_hex
    Ed25519PublicKey.from_public_bytes(key[1:]).verify(blob[4:], body + b"\n")


def test_checkpoint_new(setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    log, home = setup
    with AuditLog.open(log, home=home, index="none", policy=CheckpointPolicy(10_000, 3600)) as writer:
        writer.append(proto(30))
        writer.append(proto(31))
        # while a writer holds the log, --new is refused (the writer checkpoints by itself)
        code, _, err = dsgw(capsys, "audit", "checkpoint", "--log", str(log), "--home", str(home), "--new")
        assert code == 2 and "running writer" in err
    (log / "checkpoints" / checkpoint_name(32)).unlink()  # as if the writer had crashed before it
    (log / "checkpoints" / "latest").write_bytes((log / "checkpoints" / checkpoint_name(30)).read_bytes())
    code, out, _ = dsgw(
        capsys, "audit", "checkpoint", "--log", str(log), "--home", str(home), "--new", "--json"
    )
    assert code == 0 and json.loads(out)["tree_size"] == 32
    code, _, err = dsgw(capsys, "audit", "checkpoint", "--log", str(log), "--new")
    assert code == 2 and "--home" in err
    one_line(err)


def test_prove_and_consistency(setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    log, _home = setup
    code, out, _ = dsgw(capsys, "audit", "prove", "--log", str(log), "--index", "17", "--json")
    assert code == 0
    proof = json.loads(out)
    assert proof["leaf_index"] == 17 and proof["tree_size"] == 30
    assert proof["checkpoint"].encode() == (log / "checkpoints" / "latest").read_bytes()
    sealed = LogReader(log).frame(17).sealed
    leaf = base64.b64decode(proof["leaf_hash"])
    assert leaf == leaf_hash(sealed)
    root = base64.b64decode(proof["root_hash"])
    assert proof["checkpoint"].split("\n")[2] == proof["root_hash"]
    verify_inclusion(17, 30, leaf, [base64.b64decode(p) for p in proof["proof"]], root)
    assert len(proof["proof"]) <= 5
    code, out, _ = dsgw(capsys, "audit", "prove", "--log", str(log), "--index", "17")
    assert code == 0 and "leaf hash" in out

    code, out, _ = dsgw(capsys, "audit", "consistency", "--log", str(log), "--old", "10", "--json")
    assert code == 0
    c = json.loads(out)
    assert (c["old_size"], c["new_size"]) == (10, 30)
    verify_consistency(
        10,
        30,
        base64.b64decode(c["old_root"]),
        base64.b64decode(c["new_root"]),
        [base64.b64decode(p) for p in c["proof"]],
    )
    old_note = (log / "checkpoints" / checkpoint_name(10)).read_text()
    assert old_note.split("\n")[2] == c["old_root"]
    code, out, _ = dsgw(
        capsys, "audit", "consistency", "--log", str(log), "--old", "7", "--new", "23", "--json"
    )
    assert code == 0 and json.loads(out)["checkpoint"] is None

    for argv, words in [
        (("prove", "--index", "-1"), "at least 0"),
        (("prove", "--index", "x"), "not an integer"),
        (("prove", "--index", "30"), "the log has no entry 30 (it has 30 entries)"),
        (("consistency", "--old", "20", "--new", "5"), "larger"),
    ]:
        code, _, err = dsgw(capsys, "audit", *argv, "--log", str(log))
        assert code == 2 and words in err
        one_line(err)


def test_verify_untouched_and_tampered(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    log, home = setup
    code, out, err = dsgw(capsys, "audit", "verify", "--log", str(log))
    assert code == 0 and out.startswith("ok: 30 entries") and err == ""
    code, out, err = dsgw(capsys, "audit", "verify", "--log", str(log), "--jobs", "2", "--json")
    assert code == 0 and json.loads(out)["entries"] == 30 and err == ""
    code, out, _ = dsgw(
        capsys,
        "audit",
        "verify",
        "--log",
        str(log),
        "--json",
        "--auditor-key",
        str(HomeKeys(home).auditor_key),
    )
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["entries"] == 30 and report["opened"] == 30
    assert report["root_hash"] and report["seconds"] >= 0
    kept = tmp_path / "kept.note"
    shutil.copy(log / "checkpoints" / "latest", kept)

    # change a byte of entry 12 and fix its CRC: the checkpoint of size 20 catches it, the index names it
    frame = LogReader(log).frame(12)
    path = log / "segments" / f"{frame.segment:020d}.seg"
    data = bytearray(path.read_bytes())
    at = frame.offset + 12 + len(frame.terms) + 20
    data[at] ^= 1
    length = 12 + len(frame.terms) + len(frame.sealed)
    import zlib

    data[frame.offset + length : frame.offset + length + 4] = zlib.crc32(
        bytes(data[frame.offset : frame.offset + length])
    ).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    code, out, err = dsgw(capsys, "audit", "verify", "--log", str(log))
    assert code == 1 and "entry 12" in err and out == ""
    one_line(err)
    code, out, err = dsgw(capsys, "audit", "verify", "--log", str(log), "--json")
    report = json.loads(out)
    assert code == 1 and not report["ok"]
    assert report["problem"]["entry"] == 12 and report["problem"]["code"] == "ROOT_MISMATCH"
    assert report["problem"]["checkpoint"] == "checkpoints/" + checkpoint_name(20)
    one_line(err)

    # a truncated log against a kept checkpoint
    path.write_bytes(path.read_bytes()[: frame.offset])
    for p in (log / "checkpoints").iterdir():
        p.unlink()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{log / 'index.sqlite'}{suffix}").unlink(missing_ok=True)
    code, out, err = dsgw(capsys, "audit", "verify", "--log", str(log), "--checkpoint", str(kept), "--json")
    report = json.loads(out)
    assert code == 1 and report["problem"]["code"] == "TRUNCATED" and str(kept) in err


def test_verify_keys_and_bad_input(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    log, home = setup
    meta = LogMeta.load(log)
    code, _, _ = dsgw(capsys, "audit", "verify", "--log", str(log), "--key", meta.vkey)
    assert code == 0
    other = tmp_path / "other"
    HomeKeys(other).generate()
    foreign = HomeKeys(other).load().signer(meta.log_id).verifier().vkey()
    code, _, err = dsgw(capsys, "audit", "verify", "--log", str(log), "--key", foreign)
    assert code == 1 and "not the trusted key" in err
    one_line(err)
    for argv, words in [
        (("verify", "--log", str(log), "--key", "garbage"), "verifier key"),
        (("verify", "--log", str(tmp_path / "nope")), "not a directory"),
        (("verify", "--log", str(tmp_path)), "not an audit log"),
        (("verify", "--log", str(log), "--checkpoint", str(tmp_path / "missing.note")), "cannot read"),
        (("verify", "--log", str(log), "--auditor-key", str(HomeKeys(home).auditor_public_key)), "auditor"),
        (("verify", "--log", str(log), "--jobs", "0"), "--jobs: must be at least 1"),
        (("verify", "--log", str(log), "--jobs", "two"), "--jobs"),
        (("init", "--log", str(log), "--home", str(home), "--node", "gw-1"), "not an empty directory"),
        (("init", "--log", str(tmp_path / "n"), "--home", str(home), "--node", "bad node"), "node name"),
        (("vkey", "--log", str(tmp_path / "nope")), "not a directory"),
    ]:
        code, _, err = dsgw(capsys, "audit", *argv)
        assert code == 2, (argv, err)
        assert words in err, (argv, err)
        one_line(err)


def test_the_console_script(setup: tuple[Path, Path]) -> None:
    log, _home = setup
    dsgw_path = Path(sys.executable).parent / "dsgw"
    done = subprocess.run(
        [str(dsgw_path), "audit", "checkpoint", "--log", str(log)], capture_output=True, check=False
    )
    assert done.returncode == 0 and done.stdout == (log / "checkpoints" / "latest").read_bytes()
    done = subprocess.run(
        [str(dsgw_path), "audit", "verify", "--log", str(log), "--json"], capture_output=True, check=False
    )
    assert done.returncode == 0 and json.loads(done.stdout)["entries"] == 30


# --- every tamper case of test_verify, through the command line -------------------------------


def _tamper(case: str, log: Path, home: Path, tmp_path: Path) -> list[str]:
    """Apply one tamper case to a log of 60 entries (checkpoints every 10); returns extra verify
    arguments (a kept checkpoint)."""
    from audit.checkpoint import Signer, open_note, sign_checkpoint
    from tests.audit.test_verify import (
        build,
        delete_frame,
        drop_index,
        edit,
        frame,
        frame_len,
        segment_of,
        truncate_to,
    )

    if case == "crc":
        edit(log, 25, 30, crc=False)
    elif case == "crc_fixed":
        edit(log, 25, 30, crc=True)
    elif case == "deleted":
        delete_frame(log, 25)
    elif case == "swapped":
        a, b = frame(log, 25), frame(log, 26)
        path = segment_of(log, a)
        data = path.read_bytes()
        end = b.offset + frame_len(b)
        path.write_bytes(data[: a.offset] + data[b.offset : end] + data[a.offset : b.offset] + data[end:])
    elif case == "truncated":
        truncate_to(log, 55)
    elif case == "signature":
        path = log / "checkpoints" / checkpoint_name(30)
        lines = path.read_bytes().split(b"\n")
        root = bytearray(lines[2])
        root[5] = ord("A") if root[5] != ord("A") else ord("B")
        lines[2] = bytes(root)
        path.write_bytes(b"\n".join(lines))
    elif case == "unknown_key":
        meta = LogMeta.load(log)
        path = log / "checkpoints" / checkpoint_name(30)
        checkpoint, _ = open_note(path.read_bytes(), [meta.verifier])
        path.write_bytes(sign_checkpoint(checkpoint, [Signer.generate(meta.log_id)]))
    elif case == "fork":
        kept = tmp_path / "kept.note"
        shutil.copy(log / "checkpoints" / checkpoint_name(60), kept)
        truncate_to(log, 50)
        (log / "checkpoints" / checkpoint_name(60)).unlink()
        (log / "checkpoints" / "latest").unlink()
        shutil.copy(log / "checkpoints" / checkpoint_name(50), log / "checkpoints" / "latest")
        drop_index(log)
        build(log, home, 50, 65, base=1000)
        return ["--checkpoint", str(kept)]
    return []


@pytest.mark.parametrize(
    ("case", "code", "named"),
    [
        ("crc", "FRAME_CORRUPT", "entry 25"),
        ("crc_fixed", "ROOT_MISMATCH", "entry 25"),
        ("deleted", "ENTRY_MISSING", "entry 25"),
        ("swapped", "ENTRY_ORDER", "entries 25 and 26"),
        ("truncated", "TRUNCATED", checkpoint_name(60)),
        ("signature", "CHECKPOINT_SIGNATURE", checkpoint_name(30)),
        ("unknown_key", "CHECKPOINT_UNKNOWN_KEY", checkpoint_name(30)),
        ("fork", "FORK", "kept.note"),
    ],
)
def test_verify_names_each_tampering(
    case: str, code: str, named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.audit.crash_writer import make_log
    from tests.audit.test_verify import build

    log, home, _ = make_log(tmp_path, segment_bytes=8192)
    build(log, home, 0, 60)
    assert dsgw(capsys, "audit", "verify", "--log", str(log))[0] == 0
    extra = _tamper(case, log, home, tmp_path)
    code_, out, err = dsgw(capsys, "audit", "verify", "--log", str(log), *extra)
    assert code_ == 1 and named in err and out == ""
    one_line(err)
    for jobs in ("1", "2"):  # segments scanned here, then by two forked workers
        code_, out, err = dsgw(capsys, "audit", "verify", "--log", str(log), "--json", "--jobs", jobs, *extra)
        problem = json.loads(out)["problem"]
        assert code_ == 1 and problem["code"] == code, jobs
        assert named in problem["message"]
        one_line(err)


def test_reindex_rebuilds_a_lost_index_and_checks_it_against_the_checkpoint(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    log, home = setup
    before = LogReader(log).index()
    assert before is not None
    indexed = before.leaves(0, 30)
    before.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{log / 'index.sqlite'}{suffix}").unlink(missing_ok=True)
    assert LogReader(log).index() is None

    code, out, err = dsgw(capsys, "audit", "reindex", "--log", str(log), "--json")
    report = json.loads(out)
    assert code == 0 and err == ""
    assert report["entries"] == 30 and report["checkpoint_size"] == 30 and report["tiles"] == 0
    after = LogReader(log).index()
    assert after is not None and after.leaves(0, 30) == indexed
    after.close()
    code, out, _ = dsgw(capsys, "audit", "reindex", "--log", str(log))
    assert code == 0 and out.startswith("indexed 30 entries") and "matches" in out

    # refused while a writer has the log open: nothing touched
    with AuditLog.open(log, home=home, index="none"):
        code, out, err = dsgw(capsys, "audit", "reindex", "--log", str(log))
    assert code == 2 and "open for writing" in err and out == ""
    one_line(err)
    assert LogReader(log).index() is not None

    # a changed entry (CRC fixed up): its leaf is not the one the index recorded (nor does the
    # rebuilt index lead to the signed checkpoint)
    frame = LogReader(log).frame(12)
    path = dict(LogReader(log).segments())[frame.segment]
    data = bytearray(path.read_bytes())
    data[frame.offset + 12 + len(frame.terms) + 20] ^= 1
    stop = frame.offset + 12 + len(frame.terms) + len(frame.sealed)
    import zlib

    data[stop : stop + 4] = zlib.crc32(bytes(data[frame.offset : stop])).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    code, _, err = dsgw(capsys, "audit", "reindex", "--log", str(log))
    assert code == 1 and "entry 12 is not the one indexed" in err and "dsgw audit verify" in err
    one_line(err)

    code, _, err = dsgw(capsys, "audit", "reindex", "--log", str(tmp_path))
    assert code == 2 and "not an audit log" in err
    one_line(err)


# --- the proofs and the reindex check the segments, not only the index ------------------------


@pytest.fixture(scope="module")
def pristine60(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A log of 60 entries in several segments, a checkpoint every 10 (copied by each test)."""
    from tests.audit.crash_writer import make_log
    from tests.audit.test_verify import build

    log, home, _ = make_log(tmp_path_factory.mktemp("pristine60"), segment_bytes=8192)
    build(log, home, 0, 60)
    return log, home


@pytest.fixture
def log60(pristine60: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    copy = tmp_path / "log"
    shutil.copytree(pristine60[0], copy)
    return copy, pristine60[1]


def _index_dump(log: Path) -> list[object]:
    index = LogReader(log).index()
    assert index is not None
    try:
        return [index.state(), index.dump()]
    finally:
        index.close()


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("crc_fixed", "entry 25 is not the one indexed"),
        ("crc", "entry 25 is missing or cannot be read"),
        ("truncated", "entry 55 is missing or cannot be read"),
        ("deleted", "entry 25 is missing or out of order"),
        ("swapped", "entry 25 is missing or out of order"),
    ],
)
def test_reindex_of_a_tampered_log_keeps_the_old_index(
    case: str,
    named: str,
    log60: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log, home = log60
    _tamper(case, log, home, tmp_path)
    before = _index_dump(log)
    for argv in ((), ("--json",)):
        code, out, err = dsgw(capsys, "audit", "reindex", "--log", str(log), *argv)
        assert code == 1 and named in err and "the index is kept" in err, err
        failed_output(out, err, json_out=bool(argv))
        one_line(err)
    assert _index_dump(log) == before
    assert not [p.name for p in log.iterdir() if ".rebuild" in p.name]
    # so verify can still name the entry, as before the reindex
    code, _, err = dsgw(capsys, "audit", "verify", "--log", str(log))
    assert code == 1 and "cannot name" not in err
    assert re.search(r"entr(y|ies) 25\b" if case != "truncated" else checkpoint_name(60), err), err


def test_reindex_replaces_the_index_only_when_it_leads_to_the_checkpoint(
    log60: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    log, _home = log60
    from tests.audit.test_verify import drop_index

    before = _index_dump(log)
    code, out, err = dsgw(capsys, "audit", "reindex", "--log", str(log), "--json")
    assert code == 0 and err == "" and json.loads(out)["entries"] == 60
    assert _index_dump(log) == before
    assert sorted(p.name for p in log.iterdir() if p.name.startswith("index.sqlite")) == ["index.sqlite"]
    # a crashed rebuild's leftover is cleared; a lost index comes back
    drop_index(log)
    (log / "index.sqlite.rebuild").write_bytes(b"left by a crash")
    assert dsgw(capsys, "audit", "reindex", "--log", str(log))[0] == 0
    assert _index_dump(log) == before and not (log / "index.sqlite.rebuild").exists()
    # a tampered log with no index left: refused, and no index written
    from tests.audit.test_verify import edit

    edit(log, 25, 30, crc=True)
    drop_index(log)
    code, _, err = dsgw(capsys, "audit", "reindex", "--log", str(log))
    assert code == 1 and "one of entries 0 to 59 was changed" in err and "no index was written" in err
    one_line(err)
    assert not (log / "index.sqlite").exists() and not (log / "index.sqlite.rebuild").exists()


@pytest.mark.parametrize(
    ("case", "index", "named"),
    [
        ("crc_fixed", 25, "entry 25: its frame is damaged or is another entry's"),
        ("crc", 25, "entry 25 cannot be read"),
        ("truncated", 57, "entry 57 cannot be read"),
        ("deleted", 25, "entry 25 cannot be read"),
        ("swapped", 25, "entry 25 cannot be read"),
        ("swapped", 26, "entry 26 cannot be read"),
    ],
)
def test_prove_checks_the_entry_is_still_in_the_segments(
    case: str,
    index: int,
    named: str,
    log60: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log, home = log60
    assert dsgw(capsys, "audit", "prove", "--log", str(log), "--index", str(index))[0] == 0
    _tamper(case, log, home, tmp_path)
    for argv in ((), ("--json",)):
        code, out, err = dsgw(capsys, "audit", "prove", "--log", str(log), "--index", str(index), *argv)
        assert code == 1 and named in err, err
        failed_output(out, err, json_out=bool(argv))
        one_line(err)
    # an entry the tampering did not touch is still proved
    assert dsgw(capsys, "audit", "prove", "--log", str(log), "--index", "3")[0] == 0


@pytest.mark.parametrize(
    ("case", "argv", "named"),
    [
        ("truncated", ("--old", "10"), "entry 59 cannot be read"),
        ("deleted", ("--old", "10", "--new", "30"), "entry 29 cannot be read"),
        ("swapped", ("--old", "26", "--new", "40"), "entry 25 cannot be read"),
        ("crc_fixed", ("--old", "20", "--new", "26"), "entry 25: its frame is damaged"),
    ],
)
def test_consistency_checks_the_segments_still_hold_the_entries(
    case: str,
    argv: tuple[str, ...],
    named: str,
    log60: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log, home = log60
    assert dsgw(capsys, "audit", "consistency", "--log", str(log), *argv)[0] == 0
    _tamper(case, log, home, tmp_path)
    code, out, err = dsgw(capsys, "audit", "consistency", "--log", str(log), *argv, "--json")
    assert code == 1 and named in err, err
    failed_output(out, err, json_out=True)
    one_line(err)


@pytest.mark.parametrize("argv", [("--old", "10", "--new", "30"), ("--old", "10")])
def test_consistency_from_a_tampered_index_fails_against_the_signed_checkpoint(
    argv: tuple[str, ...], log60: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A leaf changed in the index (the segments untouched): the proof of any two sizes, signed
    or not, would come from a tree the latest signed checkpoint does not sign."""
    log, _ = log60
    with contextlib.closing(sqlite3.connect(log / "index.sqlite")) as db:
        db.execute("UPDATE entries SET leaf = ? WHERE idx = 3", (b"\x07" * 32,))
        db.commit()
    code, out, err = dsgw(capsys, "audit", "consistency", "--log", str(log), *argv, "--json")
    assert code == 1 and "not the latest checkpoint's" in err, (code, err)
    failed_output(out, err, json_out=True)
    one_line(err)


def test_prove_without_the_latest_file_uses_the_newest_numbered_checkpoint(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """``latest`` lost (a crash between the two files, or removed): the numbered checkpoints
    still sign the log (prove said the log had no checkpoint)."""
    log, _home = setup
    (log / "checkpoints" / "latest").unlink()
    code, out, err = dsgw(capsys, "audit", "prove", "--log", str(log), "--index", "17", "--json")
    assert code == 0, err
    proof = json.loads(out)
    assert proof["tree_size"] == 30
    assert proof["checkpoint"].encode() == (log / "checkpoints" / checkpoint_name(30)).read_bytes()


def test_prove_beyond_the_log_or_the_checkpoint(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    log, home = setup
    with AuditLog.open(log, home=home, index="thread", policy=CheckpointPolicy(10_000, 3600)) as writer:
        writer.append(proto(30))
        writer.append(proto(31))
        assert writer.flush_index(timeout=30)
    (log / "checkpoints" / checkpoint_name(32)).unlink()  # as if the writer had crashed before it
    (log / "checkpoints" / "latest").write_bytes((log / "checkpoints" / checkpoint_name(30)).read_bytes())
    code, _, err = dsgw(capsys, "audit", "prove", "--log", str(log), "--index", "31")
    assert code == 2 and "not covered by the latest checkpoint (tree size 30)" in err
    one_line(err)
    for index in ("32", "1000"):
        code, _, err = dsgw(capsys, "audit", "prove", "--log", str(log), "--index", index)
        assert code == 2 and f"the log has no entry {index} (it has 32 entries)" in err
        assert "checkpoint" not in err
        one_line(err)


def test_the_quick_start_of_the_docs_runs_as_written(tmp_path: Path) -> None:
    """docs/audit-log.md's quick start, up to verify (prove needs entries), in a shell: every file
    it reads (vkey.txt, cp.note) is written by an earlier line."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "audit-log.md").read_text()
    block = doc.split("## Quick start", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = block.splitlines()
    upto = next(i for i, line in enumerate(lines) if line.startswith("dsgw audit verify"))
    script = "\n".join(["set -euo pipefail", *lines[: upto + 1]]).replace(
        "/var/lib/dsgw", str(tmp_path / "d")
    )
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().splitlines()[-1].startswith("ok: 0 entries")


@pytest.mark.parametrize("verb", ["verify", "vkey", "checkpoint", "reindex"])
def test_a_verb_that_reads_one_log_refuses_a_second(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``verify --log A --log B`` checked B alone and said ok for A: refused now."""
    code, _out, err = dsgw(capsys, "audit", verb, "--log", str(tmp_path / "a"), "--log", str(tmp_path / "b"))
    assert code == 2
    assert "--log given twice: this command reads one log" in err and err.count("\n") == 1


@pytest.mark.parametrize("damaged", [9, 7])
def test_reindex_keeps_an_index_that_records_entries_past_the_checkpoint(
    damaged: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Entries after the latest checkpoint were acknowledged too: a rebuild that lost one (a
    damaged frame, the writer killed before its final checkpoint) must not replace the index that
    still records it (it did: verify then said ok for a log missing an acknowledged entry)."""
    import os

    child = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from pathlib import Path
from audit.layout import HomeKeys
from audit.log import AuditLog, init_log
from tests.audit.crash_writer import proto
root = Path({str(tmp_path)!r})
home = root / "home"; HomeKeys(home).generate(); keys = HomeKeys(home).load()
log_dir = root / "log"; init_log(log_dir, keys, node="gw1")
log = AuditLog.open(log_dir, keys, index="thread")
log.append_many([proto(i) for i in range(5)])
log.checkpoint_now()
log.append_many([proto(i) for i in range(5, 10)])
assert log.flush_index(timeout=30)
os._exit(0)  # killed: no final checkpoint
"""
    subprocess.run([sys.executable, "-c", child], check=True, capture_output=True, timeout=120)
    log = tmp_path / "log"
    reader = LogReader(log)
    index = reader.index()
    assert index is not None and index.size == 10
    at = index.location(damaged)
    index.close()
    offset = at[1] if isinstance(at, tuple) else at.offset
    segment = sorted((log / "segments").iterdir())[0]
    data = bytearray(segment.read_bytes())
    data[offset + 40] ^= 0xFF
    segment.write_bytes(bytes(data))
    before = os.stat(log / "index.sqlite").st_mtime_ns
    code, _out, err = dsgw(capsys, "audit", "reindex", "--log", str(log))
    assert code == 1 and "the index is kept" in err and f"entry {damaged}" in err
    one_line(err)
    assert os.stat(log / "index.sqlite").st_mtime_ns == before
    code, _out, err = dsgw(capsys, "audit", "verify", "--log", str(log))
    assert code == 1


# --- bad input and failures named precisely ----------------------------------------------------


def test_consistency_beyond_the_log_is_bad_input(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    log, _home = setup
    code, out, err = dsgw(capsys, "audit", "consistency", "--log", str(log), "--old", "10", "--new", "100")
    assert code == 2 and out == "" and "--new 100 is beyond the log: the log has 30 entries" in err, err
    one_line(err)
    code, out, err = dsgw(capsys, "audit", "consistency", "--log", str(log), "--old", "10", "--new", "30")
    assert code == 0, err


def test_verify_fails_when_the_checkpoints_are_removed(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    log, home = setup
    shutil.rmtree(log / "checkpoints")
    for argv in ((), ("--json",)):
        code, out, err = dsgw(capsys, "audit", "verify", "--log", str(log), *argv)
        assert code == 1 and "the log has no checkpoint" in err, err
        one_line(err)
        if argv:
            problem = json.loads(out)["problem"]
            assert problem["code"] == "CHECKPOINT_MISSING" and problem["checkpoint"] == "checkpoints/"
    (log / "checkpoints").mkdir()  # an empty directory is no better
    assert dsgw(capsys, "audit", "verify", "--log", str(log))[0] == 1
    # a new, empty log verifies: it has the checkpoint of its empty tree
    fresh = tmp_path / "fresh"
    assert dsgw(capsys, "audit", "init", "--log", str(fresh), "--home", str(home), "--node", "gw-9")[0] == 0
    code, out, err = dsgw(capsys, "audit", "verify", "--log", str(fresh))
    assert code == 0 and out.startswith("ok: 0 entries, 1 checkpoints verified"), err


def test_reindex_names_an_index_that_is_a_directory(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    log, _home = setup
    for suffix in ("", "-wal", "-shm"):
        Path(f"{log / 'index.sqlite'}{suffix}").unlink(missing_ok=True)
    (log / "index.sqlite").mkdir()
    code, out, err = dsgw(capsys, "audit", "reindex", "--log", str(log))
    assert code == 2 and out == "" and f"{log / 'index.sqlite'} is a directory" in err, err
    assert ".rebuild" not in err
    one_line(err)
    assert not [p.name for p in log.iterdir() if ".rebuild" in p.name]


@pytest.mark.parametrize(
    "argv",
    [("checkpoint",), ("prove", "--index", "1"), ("consistency", "--old", "1"), ("reindex",)],
)
def test_a_garbage_latest_checkpoint_is_named(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    log, _home = setup
    (log / "checkpoints" / "latest").write_bytes(b"\xff\xfe garbage \x00\n")
    for json_out in (False, True):
        extra = ("--json",) if json_out else ()
        code, out, err = dsgw(capsys, "audit", argv[0], "--log", str(log), *argv[1:], *extra)
        assert code == 1 and f"{log / 'checkpoints' / 'latest'}: " in err, err
        one_line(err)
        failed_output(out, err, json_out=json_out)


@pytest.mark.parametrize(
    ("damage", "argv", "code"),
    [
        ("UPDATE meta SET value = 'abc' WHERE key = 'size'", ("verify",), 1),
        ("UPDATE meta SET value = 'abc' WHERE key = 'size'", ("consistency", "--old", "5"), 1),
        ("DROP TABLE entries", ("prove", "--index", "3"), 1),
    ],
)
def test_a_damaged_index_is_one_line(
    damage: str,
    argv: tuple[str, ...],
    code: int,
    log60: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A damaged or edited index.sqlite (it is not evidence) is named in one line with the way
    out (reindex), never a traceback."""
    log, _ = log60
    with contextlib.closing(sqlite3.connect(log / "index.sqlite")) as db:
        db.execute(damage)
        db.commit()
    got, out, err = dsgw(capsys, "audit", argv[0], "--log", str(log), *argv[1:], "--json")
    assert got == code and "damaged" in err and "reindex" in err, (got, err)
    failed_output(out, err, json_out=True)
    one_line(err)
