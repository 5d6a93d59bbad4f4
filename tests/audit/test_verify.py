"""Verification: every way of tampering with a real log is found, and named (entry, checkpoint).

Each test copies a pristine log (60 entries in several segments, a checkpoint every 10 entries),
changes bytes or files as an attacker would, and checks the first problem verification reports.
Every test runs on a ``default`` log (SHA-256, Ed25519 checkpoints) and on a ``gm`` log (SM3,
SM4-GCM, SM2 checkpoints), and each with segments scanned in this process and in two forked
worker processes (what a large log gets): both must name the same first problem.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import sqlite3
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit.checkpoint import Checkpoint, Signer, open_note, sign_checkpoint
from audit.checkpoints import CheckpointPolicy, checkpoint_name
from audit.layout import LogLayoutError, LogMeta
from audit.log import AuditLog
from audit.reader import Frame, LogReader
from audit.segment import FRAME_HEAD, list_segments
from audit.verify import VerifyReport, VerifyUsageError, usable_cpus, verify_log
from tests.audit.conftest import auditor
from tests.audit.crash_writer import make_log, proto

EVERY = 10
SIZE = 60


def build(log_dir: Path, home: Path, start: int, stop: int, *, base: int = 0) -> None:
    """Append entries ``[start, stop)`` with a checkpoint at every multiple of EVERY, exactly (the
    automatic policy checkpoints the size it finds when it gets to it: 51 as well as 50)."""
    policy = CheckpointPolicy(every_entries=10**9, every_seconds=3600)
    with AuditLog.open(log_dir, home=home, index="thread", policy=policy) as log:
        for i in range(start, stop):
            log.append(proto(base + i))
            if (i + 1) % EVERY == 0:
                log.checkpoint_now(timeout=30)
        assert log.flush_index(timeout=30)


@pytest.fixture(scope="module", params=["default", "gm"])
def pristine(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("pristine")
    log_dir, home, _ = make_log(tmp, segment_bytes=8192, suite=request.param)
    assert LogMeta.load(log_dir).verifier.scheme == ("sm2" if request.param == "gm" else "ed25519")
    build(log_dir, home, 0, SIZE)
    return log_dir, home


JOBS = [1]
# problems found among the checkpoints and keys, before any segment is read
CHECKED_BEFORE_THE_SCAN = {
    "LOG_KEY_MISMATCH",
    "CHECKPOINT_UNREADABLE",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_SIGNATURE",
    "CHECKPOINT_UNKNOWN_KEY",
    "CHECKPOINT_ORIGIN",
    "CHECKPOINT_NAME",
    "FORK",
}


@pytest.fixture(autouse=True, params=[1, 2], ids=["inline", "workers"])
def jobs(request: pytest.FixtureRequest) -> Iterator[int]:
    JOBS[0] = request.param
    yield request.param
    JOBS[0] = 1


def verify(log_dir: Path, **kw: object) -> VerifyReport:
    # forked scan workers only from a process running no other thread (audit/verify.py): a
    # session fixture of another package's tests may still run one, and then the workers case
    # cannot be tested here
    if JOBS[0] > 1 and threading.active_count() > 1:
        pytest.skip("another thread is running in this process: a forked scan cannot be tested")
    report = verify_log(LogReader(log_dir), jobs=JOBS[0], **kw)  # type: ignore[arg-type]
    scanned = report.problem is None or report.problem.code not in CHECKED_BEFORE_THE_SCAN
    if scanned and kw.get("auditor") is None and len(list_segments(log_dir / "segments")) > 1:
        assert report.jobs == min(JOBS[0], usable_cpus()), "the scan did not run where the test asked"
    return report


def frame(log_dir: Path, index: int) -> Frame:
    return LogReader(log_dir).frame(index)


def segment_of(log_dir: Path, f: Frame) -> Path:
    return dict(list_segments(log_dir / "segments"))[f.segment]


def frame_len(f: Frame) -> int:
    return 16 + len(f.terms) + len(f.sealed)


def fix_crc(data: bytearray, offset: int) -> None:
    length = int.from_bytes(data[offset : offset + 4], "big")
    stop = offset + 12 + length
    data[stop : stop + 4] = zlib.crc32(bytes(data[offset:stop])).to_bytes(4, "big")


def edit(log_dir: Path, index: int, at: int, *, crc: bool) -> None:
    """Flip a byte ``at`` bytes into the sealed entry of ``index`` (fixing the CRC up if ``crc``)."""
    f = frame(log_dir, index)
    path = segment_of(log_dir, f)
    data = bytearray(path.read_bytes())
    data[f.offset + 12 + len(f.terms) + at] ^= 0x55
    if crc:
        fix_crc(data, f.offset)
    path.write_bytes(bytes(data))


def delete_frame(log_dir: Path, index: int) -> None:
    """Cut entry ``index``'s frame out of its segment (the entries after it move up)."""
    f = frame(log_dir, index)
    path = segment_of(log_dir, f)
    data = path.read_bytes()
    path.write_bytes(data[: f.offset] + data[f.offset + frame_len(f) :])


def drop_index(log_dir: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{log_dir / 'index.sqlite'}{suffix}").unlink(missing_ok=True)


def attacker(meta: LogMeta, name: str | None = None) -> Signer:
    """A key of the log's scheme (Ed25519 or SM2) that is not the log's."""
    return Signer.generate(name or meta.log_id, meta.verifier.scheme)


def cp_name(size: int) -> str:
    return f"checkpoints/{checkpoint_name(size)}"


# --- untouched --------------------------------------------------------------------------------


def test_an_untouched_log_verifies(log: Path, home: Path) -> None:
    report = verify(log)
    assert report.ok, report.problem
    assert report.entries == SIZE
    assert report.checkpoints == SIZE // EVERY + 1
    assert report.latest_checkpoint == SIZE
    assert (
        report.root
        == open_note((log / "checkpoints" / "latest").read_bytes(), [LogMeta.load(log).verifier])[0].root_hash
    )
    full = verify(log, auditor=auditor(home), keys=[LogMeta.load(log).vkey])
    assert full.ok and full.opened == SIZE and full.decrypted
    assert full.to_json()["problem"] is None


# --- entries ----------------------------------------------------------------------------------


def test_a_live_log_whose_index_runs_ahead_of_the_scan_verifies(log: Path, home: Path) -> None:
    """A writer appends, and its follower indexes, while verify reads: entries indexed after the
    scan are newer than what it saw, not removed (it reported a truncation)."""
    segments = len(list_segments(log / "segments"))
    seen: list[str] = []

    def progress(line: str) -> None:
        seen.append(line)
        if len(seen) == segments:  # the last segment is scanned: the writer goes on
            build(log, home, SIZE, SIZE + 5)

    report = verify_log(LogReader(log), jobs=1, progress=progress)
    assert len(seen) == segments
    assert report.ok, report.problem
    assert report.entries == SIZE
    assert verify(log).entries == SIZE + 5


def test_a_changed_byte_fails_its_crc(log: Path) -> None:
    edit(log, 25, 30, crc=False)
    problem = verify(log).problem
    assert problem is not None and problem.code == "FRAME_CORRUPT" and problem.entry == 25
    assert "entry 25" in problem.message


def test_a_changed_byte_with_its_crc_fixed_is_caught_by_the_checkpoint_root(log: Path, home: Path) -> None:
    edit(log, 25, 30, crc=True)
    problem = verify(log).problem
    assert problem is not None and problem.code == "ROOT_MISMATCH"
    assert problem.entry == 25 and problem.checkpoint == cp_name(30)
    assert "entry 25" in problem.message
    drop_index(log)  # nothing left to name the entry with, but the checkpoint still catches it
    problem = verify(log).problem
    assert problem is not None and problem.code == "ROOT_MISMATCH" and problem.entry is None
    assert problem.checkpoint == cp_name(30) and "entries 20 to 29" in problem.message
    problem = verify(log, auditor=auditor(home)).problem  # the AEAD names it
    assert problem is not None and problem.code == "ENTRY_TAMPERED" and problem.entry == 25


def test_a_missing_index_row_does_not_blame_an_untouched_entry(log: Path) -> None:
    """Entry 15 changed (CRC fixed up) and the index's row of entry 12 deleted: the root
    mismatch stands, but the index cannot name the entry (its leaves were matched by position,
    so entry 12, untouched, was blamed)."""
    edit(log, 15, 3, crc=True)
    with contextlib.closing(sqlite3.connect(log / "index.sqlite")) as db:
        db.execute("DELETE FROM entries WHERE idx = 12")
        db.commit()
    report = verify(log)
    assert report.problem is not None and report.problem.code == "ROOT_MISMATCH"
    assert report.problem.entry != 12


def test_a_deleted_entry_is_a_gap(log: Path) -> None:
    delete_frame(log, 25)
    problem = verify(log).problem
    assert problem is not None and problem.code == "ENTRY_MISSING" and problem.entry == 25


@pytest.mark.parametrize("second", ["deleted", "crc"])
def test_an_entry_changed_before_a_structural_problem_is_named_first(log: Path, second: str) -> None:
    """Entry 22 changed (CRC fixed up), then entry 25 deleted or its CRC broken, in the same
    checkpoint interval: the first bad entry is 22 (25 was named, 22 never mentioned)."""
    edit(log, 22, 3, crc=True)
    if second == "deleted":
        delete_frame(log, 25)
    else:
        edit(log, 25, 3, crc=False)
    problem = verify(log).problem
    assert problem is not None and (problem.code, problem.entry) == ("ENTRY_CHANGED", 22), problem
    assert "entry 25" in problem.message


def test_two_swapped_entries_are_out_of_order(log: Path) -> None:
    a, b = frame(log, 25), frame(log, 26)
    assert a.segment == b.segment
    path = segment_of(log, a)
    data = path.read_bytes()
    first, second = data[a.offset : b.offset], data[b.offset : b.offset + frame_len(b)]
    path.write_bytes(data[: a.offset] + second + first + data[b.offset + frame_len(b) :])
    problem = verify(log).problem
    assert problem is not None and problem.code == "ENTRY_ORDER" and problem.entry == 25
    assert "25 and 26" in problem.message


def _frames(log_dir: Path, first: int, last: int) -> tuple[Path, bytes, list[bytes]]:
    """The segment holding entries ``first`` to ``last``, its bytes, and their frames."""
    frames = [frame(log_dir, i) for i in range(first, last + 1)]
    assert len({f.segment for f in frames}) == 1
    path = segment_of(log_dir, frames[0])
    data = path.read_bytes()
    return path, data, [data[f.offset : f.offset + frame_len(f)] for f in frames]


def test_entries_swapped_apart_are_out_of_order_not_missing(log: Path) -> None:
    path, data, (e22, e23, e24, e25) = _frames(log, 22, 25)
    start = frame(log, 22).offset
    path.write_bytes(data[:start] + e25 + e23 + e24 + e22 + data[start + len(e22 + e23 + e24 + e25) :])
    problem = verify(log).problem
    assert problem is not None and (problem.code, problem.entry) == ("ENTRY_ORDER", 22), problem
    assert "moved or swapped" in problem.message and "missing" not in problem.message


def test_a_duplicated_entry_is_named_not_its_neighbour(log: Path) -> None:
    path, data, (e22, e23) = _frames(log, 22, 23)
    start = frame(log, 22).offset
    path.write_bytes(data[:start] + e22 + e22 + e23 + data[start + len(e22 + e23) :])
    problem = verify(log).problem
    assert problem is not None and (problem.code, problem.entry) == ("ENTRY_ORDER", 23), problem
    assert "entry 22 appears again" in problem.message


def test_swapped_entries_with_their_index_fields_swapped_too(log: Path, home: Path) -> None:
    a, b = frame(log, 25), frame(log, 26)
    path = segment_of(log, a)
    data = path.read_bytes()

    def reframed(f: Frame, index: int) -> bytes:
        body = FRAME_HEAD.pack(len(f.terms) + len(f.sealed), index) + f.terms + f.sealed
        return body + zlib.crc32(body).to_bytes(4, "big")

    swapped = reframed(b, 25) + reframed(a, 26)
    path.write_bytes(data[: a.offset] + swapped + data[b.offset + frame_len(b) :])
    problem = verify(log).problem
    assert problem is not None and problem.code == "ROOT_MISMATCH" and problem.entry == 25
    problem = verify(log, auditor=auditor(home)).problem
    assert problem is not None and problem.code == "ENTRY_TAMPERED" and problem.entry == 25


def test_a_deleted_segment_is_a_gap(log: Path) -> None:
    segments = list_segments(log / "segments")
    assert len(segments) >= 3
    first, path = segments[1]
    path.unlink()
    problem = verify(log).problem
    assert problem is not None and problem.code == "ENTRY_MISSING" and problem.entry == first


def test_changed_search_terms_are_caught_with_the_auditor_key(log: Path, home: Path) -> None:
    f = frame(log, 25)
    path = segment_of(log, f)
    data = bytearray(path.read_bytes())
    data[f.offset + 12 + 8] ^= 0x01  # inside the first term (the subject's)
    fix_crc(data, f.offset)
    path.write_bytes(bytes(data))
    assert verify(log).ok  # the terms are a search aid outside the Merkle leaf
    problem = verify(log, auditor=auditor(home)).problem
    assert problem is not None and problem.code == "ENTRY_TERMS" and problem.entry == 25


def test_an_entry_changed_after_the_last_checkpoint_is_caught_by_the_index(log: Path) -> None:
    for size in (60,):
        (log / "checkpoints" / checkpoint_name(size)).unlink()
    shutil.copy(log / "checkpoints" / checkpoint_name(50), log / "checkpoints" / "latest")
    edit(log, 55, 30, crc=True)
    problem = verify(log).problem
    assert problem is not None and problem.code == "ENTRY_CHANGED" and problem.entry == 55


def test_an_incomplete_last_frame_after_every_checkpoint_is_only_a_warning(log: Path) -> None:
    path = list_segments(log / "segments")[-1][1]
    with open(path, "ab") as handle:
        handle.write(FRAME_HEAD.pack(300, SIZE) + b"\x01partial")
    report = verify(log)
    assert report.ok and report.entries == SIZE
    assert any("incomplete" in w and f"entry {SIZE}" in w for w in report.warnings)


# --- truncation, rollback, fork ---------------------------------------------------------------


def truncate_to(log: Path, size: int) -> None:
    f = frame(log, size)
    path = segment_of(log, f)
    path.write_bytes(path.read_bytes()[: f.offset])
    for first, later in list_segments(log / "segments"):
        if first > size:
            later.unlink()


def test_truncation_against_the_stored_checkpoint_history(log: Path) -> None:
    truncate_to(log, 55)
    problem = verify(log).problem
    assert problem is not None and problem.code == "TRUNCATED"
    assert problem.checkpoint == cp_name(60) and problem.entry == 55


def test_truncation_with_the_history_cleaned_up_is_caught_by_a_kept_checkpoint(
    log: Path, tmp_path: Path
) -> None:
    kept = tmp_path / "kept.note"
    shutil.copy(log / "checkpoints" / "latest", kept)
    truncate_to(log, 45)
    for size in (50, 60):
        (log / "checkpoints" / checkpoint_name(size)).unlink()
    shutil.copy(log / "checkpoints" / checkpoint_name(40), log / "checkpoints" / "latest")
    problem = verify(log).problem  # the index still remembers the removed entries
    assert problem is not None and problem.code == "TRUNCATED" and "index" in problem.message
    drop_index(log)
    assert verify(log).ok  # a thorough attacker: nothing left in the directory tells
    problem = verify(log, checkpoints=[(str(kept), kept.read_bytes())]).problem
    assert problem is not None and problem.code == "TRUNCATED" and problem.checkpoint == str(kept)


@pytest.mark.parametrize("keep_stored", [True, False])
def test_a_rollback_and_rewrite_is_a_fork_against_a_kept_checkpoint(
    pristine: tuple[Path, Path], tmp_path: Path, keep_stored: bool
) -> None:
    # the log at 50 entries, copied; it grows to 60 and an auditor keeps that checkpoint
    original, home = pristine
    log = tmp_path / "log"
    shutil.copytree(original, log)
    truncate_to(log, 50)
    for size in (60,):
        (log / "checkpoints" / checkpoint_name(size)).unlink()
    shutil.copy(log / "checkpoints" / checkpoint_name(50), log / "checkpoints" / "latest")
    drop_index(log)
    kept = tmp_path / "kept.note"
    shutil.copy(original / "checkpoints" / checkpoint_name(60), kept)
    # someone with the node's keys rolls back to 50 and appends other entries
    build(log, home, 50, 65, base=1000)
    if not keep_stored:
        (log / "checkpoints" / checkpoint_name(60)).unlink()
    assert verify(log).ok  # self-consistent, signed with the right key
    problem = verify(log, checkpoints=[(str(kept), kept.read_bytes())]).problem
    assert problem is not None
    if keep_stored:
        assert problem.code == "FORK" and problem.checkpoint == str(kept)
    else:
        assert problem.code == "ROOT_MISMATCH" and problem.checkpoint == str(kept)
        assert "forked or rolled back" in problem.message or problem.entry == 50


# --- checkpoints and keys ---------------------------------------------------------------------


def test_a_changed_suite_in_log_json_is_named(log: Path) -> None:
    """The empty tree's checkpoint no longer matches: no entry is involved (the message spoke of
    "one of entries 0 to -1")."""
    meta = json.loads((log / "log.json").read_text())
    gm = meta["suite"] == "gm"
    meta["suite"] = "default" if gm else "gm"
    (log / "log.json").write_text(json.dumps(meta))
    if gm:  # an SM2 key cannot be a default log's: log.json itself is refused
        with pytest.raises(LogLayoutError, match="SM2 checkpoint key"):
            LogReader(log)
        return
    problem = verify_log(LogReader(log), jobs=1).problem
    assert problem is not None and problem.code == "ROOT_MISMATCH" and problem.entry is None
    assert "log.json's suite" in problem.message and "-1" not in problem.message


def test_a_checkpoint_with_a_bad_signature(log: Path) -> None:
    path = log / "checkpoints" / checkpoint_name(30)
    lines = path.read_bytes().split(b"\n")
    root = bytearray(lines[2])
    root[5] = ord("A") if root[5] != ord("A") else ord("B")
    lines[2] = bytes(root)
    path.write_bytes(b"\n".join(lines))
    problem = verify(log).problem
    assert (
        problem is not None and problem.code == "CHECKPOINT_SIGNATURE" and problem.checkpoint == cp_name(30)
    )


def test_a_checkpoint_with_a_changed_signature_byte(log: Path) -> None:
    path = log / "checkpoints" / checkpoint_name(30)
    note = path.read_bytes()
    text, _, line = note[:-1].rpartition(b"\n")
    name, _, encoded = line.rpartition(b" ")
    blob = bytearray(base64.b64decode(encoded))
    blob[-3] ^= 0x01  # in the signature (the last bytes of an SM2 DER signature are s)
    path.write_bytes(text + b"\n" + name + b" " + base64.b64encode(bytes(blob)) + b"\n")
    problem = verify(log).problem
    assert (
        problem is not None and problem.code == "CHECKPOINT_SIGNATURE" and problem.checkpoint == cp_name(30)
    )


def test_a_checkpoint_signed_by_an_unknown_key(log: Path) -> None:
    meta = LogMeta.load(log)
    path = log / "checkpoints" / checkpoint_name(30)
    checkpoint, _ = open_note(path.read_bytes(), [meta.verifier])
    path.write_bytes(sign_checkpoint(checkpoint, [attacker(meta)]))
    problem = verify(log).problem
    assert (
        problem is not None and problem.code == "CHECKPOINT_UNKNOWN_KEY" and problem.checkpoint == cp_name(30)
    )


def test_a_checkpoint_of_another_size_than_its_name(log: Path) -> None:
    shutil.copy(log / "checkpoints" / checkpoint_name(20), log / "checkpoints" / checkpoint_name(30))
    problem = verify(log).problem
    assert problem is not None and problem.code == "CHECKPOINT_NAME" and problem.checkpoint == cp_name(30)


def test_a_replaced_log_json_key_does_not_help_against_the_auditors_key(log: Path) -> None:
    meta = LogMeta.load(log)
    original_vkey = meta.vkey
    forger = attacker(meta)
    # the attacker rewrites every entry-covering checkpoint under their key, and log.json
    for path in (log / "checkpoints").iterdir():
        checkpoint, _ = open_note(path.read_bytes(), [meta.verifier])
        path.write_bytes(sign_checkpoint(checkpoint, [forger]))
    forged = LogMeta(**{**meta.__dict__, "vkey": forger.verifier().vkey()})
    forged.save(log)
    assert verify(log).ok  # trusting log.json is trusting the attacker
    problem = verify(log, keys=[original_vkey]).problem
    assert problem is not None and problem.code == "LOG_KEY_MISMATCH"
    with pytest.raises(VerifyUsageError):
        verify(log, keys=["not a key"])


def test_a_kept_checkpoint_of_another_log(log: Path, tmp_path: Path) -> None:
    meta = LogMeta.load(log)
    other = Checkpoint(
        origin="dsgw.audit/gw-9/00000000-0000-0000-0000-000000000000", size=3, root_hash=b"\1" * 32
    )
    # signed by a key with the log's name and id would need the private key; a key of another
    # name is simply unknown
    note = sign_checkpoint(other, [attacker(meta, "dsgw.audit/gw-9/00000000-0000-0000-0000-000000000000")])
    problem = verify(log, checkpoints=[("other.note", note)]).problem
    assert (
        problem is not None
        and problem.code == "CHECKPOINT_UNKNOWN_KEY"
        and problem.checkpoint == "other.note"
    )
    assert meta.log_id not in problem.message or "trusted" in problem.message


def test_an_unreadable_segment_is_named_after_the_gaps_before_it(log: Path) -> None:
    segments = list_segments(log / "segments")
    assert len(segments) >= 3
    (first, path) = segments[1]
    path.unlink()
    path.mkdir()  # a segment that cannot be read
    problem = verify(log).problem
    assert problem is not None and problem.code == "SEGMENT_UNREADABLE" and problem.entry == first
    assert path.name in problem.message
    # a segment missing before it is the first problem, as the files are in order
    segments[0][1].unlink()
    problem = verify(log).problem
    assert problem is not None and problem.code == "ENTRY_MISSING" and problem.entry == 0


def test_more_jobs_than_segments_are_not_started(log: Path) -> None:
    report = verify_log(LogReader(log), jobs=64)
    assert report.ok
    assert report.jobs <= len(list_segments(log / "segments"))


def test_a_log_without_any_checkpoint_fails(log: Path, tmp_path: Path) -> None:
    kept = tmp_path / "kept.note"
    shutil.copy(log / "checkpoints" / "latest", kept)
    shutil.rmtree(log / "checkpoints")
    problem = verify(log).problem
    assert problem is not None and problem.code == "CHECKPOINT_MISSING"
    assert "no checkpoint" in problem.message and problem.checkpoint == "checkpoints/"
    # a checkpoint the auditor kept checks the entries, but the log's own are still gone
    problem = verify(log, checkpoints=[(str(kept), kept.read_bytes())]).problem
    assert problem is not None and problem.code == "CHECKPOINT_MISSING"


def test_a_new_empty_log_verifies(tmp_path: Path) -> None:
    log_dir, _home, _keys = make_log(tmp_path)
    report = verify(log_dir)
    assert report.ok and report.entries == 0 and report.checkpoints == 1
