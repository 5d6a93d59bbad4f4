"""The audit log writer: appends (threads, asyncio, bulk), receipts, checkpoints by count, time and
demand, segments, the derived index (incremental, catch-up, rebuild), torn-tail recovery,
failures that make the log refuse appends, locking, keys, and no clear personal data on disk."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
import zlib
from pathlib import Path

import pytest
import structlog

from audit.blind_index import BlindIndexer
from audit.checkpoint import open_note
from audit.checkpoints import CheckpointPolicy
from audit.entry import InvalidEntry, encode, index_terms
from audit.follower import IndexFollower, rebuild_index
from audit.index import AuditIndex
from audit.keys import FileKeyProvider
from audit.layout import HomeKeys, LogLayoutError, LogMeta
from audit.log import AuditLog, AuditUnavailable, LogCorrupt, LogLocked, init_log
from audit.merkle import leaf_hash, root
from audit.reader import LogReader
from audit.record import TermEncoder, split_section
from audit.segment import FRAME_HEAD, list_segments
from audit.suites import get_suite
from audit.verify import verify_log
from dsgw.v1 import audit_pb2
from tests.audit.crash_writer import (
    FIELDS,
    OPERATOR,
    consent_entry,
    entry,
    make_log,
    person,
    proto,
    push_entry,
)


@pytest.fixture(autouse=True)
def _default_logging() -> None:
    """Some tests capture the log's structlog events: start from structlog's defaults (another
    test's ``main()`` may have bound it to a stream that is closed by now)."""
    structlog.reset_defaults()


def open_log(log_dir: Path, home: Path, **kw: object) -> AuditLog:
    options: dict[str, object] = {"index": "thread", "index_interval": 0.01}
    options.update(kw)
    return AuditLog.open(log_dir, home=home, **options)  # type: ignore[arg-type]


def auditor_keyring(reader: LogReader, home: Path):  # type: ignore[no-untyped-def]
    return reader.keyring(FileKeyProvider.from_private_key_file(HomeKeys(home).auditor_key))


@pytest.fixture
def made(tmp_path: Path) -> tuple[Path, Path]:
    log_dir, home, _ = make_log(tmp_path)
    return log_dir, home


# --- appending --------------------------------------------------------------------------------


def test_append_receipts_reopen_and_decrypt(made: tuple[Path, Path]) -> None:
    log_dir, home = made
    with open_log(log_dir, home) as log:
        receipts = [log.append(entry(i)) for i in range(5)]
        receipts.append(log.append(proto(5)))
        assert [r.index for r in receipts] == list(range(6))
        assert log.size == 6
    reader = LogReader(log_dir)
    frames = list(reader.frames())
    assert [f.index for f in frames] == list(range(6))
    assert [leaf_hash(f.sealed) for f in frames] == [r.leaf_hash for r in receipts]
    keyring = auditor_keyring(reader, home)
    for i in range(6):
        assert reader.entry(i, keyring) == entry(i)
    with open_log(log_dir, home) as log:  # reopened: continues the indices, with a new data key
        assert log.size == 6
        assert log.append(entry(6)).index == 6
    assert reader.entry(6, auditor_keyring(reader, home)) == entry(6)
    assert len(auditor_keyring(reader, home).records()) == 2
    assert verify_log(reader).ok


@pytest.mark.parametrize("pipeline", [False, True])
def test_concurrent_threads_and_asyncio_get_unique_contiguous_indices(
    made: tuple[Path, Path], pipeline: bool
) -> None:
    log_dir, home = made
    got: list[int] = []
    lock = threading.Lock()
    with open_log(log_dir, home, policy=CheckpointPolicy(every_entries=50), pipeline=pipeline) as log:

        def worker(k: int) -> None:
            for i in range(40):
                r = log.append(proto(k * 1000 + i, request_id=f"t{k}-{i}"))
                with lock:
                    got.append(r.index)

        async def tasks() -> list[int]:
            async def one(k: int) -> list[int]:
                return [(await log.append_async(proto(k * 1000 + i))).index for i in range(40)]

            results = await asyncio.gather(*(one(100 + k) for k in range(16)))
            return [i for r in results for i in r]

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        async_indices = asyncio.run(tasks())
        for t in threads:
            t.join()
        bulk = log.append_many([proto(9000 + i) for i in range(100)])
        size = log.size
    indices = sorted(got + async_indices + [r.index for r in bulk])
    assert indices == list(range(size)) == list(range(8 * 40 + 16 * 40 + 100))
    assert [r.index for r in bulk] == sorted(r.index for r in bulk)
    report = verify_log(LogReader(log_dir))
    assert report.ok and report.entries == size and report.checkpoints > 2


def test_append_many_bulk_across_batches_and_segments(tmp_path: Path) -> None:
    log_dir, home, _ = make_log(tmp_path, segment_bytes=8192)
    with open_log(log_dir, home, max_batch=7) as log:
        receipts = log.append_many([proto(i) for i in range(100)])
    assert [r.index for r in receipts] == list(range(100))
    assert len(list_segments(log_dir / "segments")) > 3
    reader = LogReader(log_dir)
    assert [f.index for f in reader.frames()] == list(range(100))
    assert reader.leaf_hashes(100) == [r.leaf_hash for r in receipts]
    assert verify_log(reader).ok


def test_invalid_entry_is_refused_before_anything_is_written(made: tuple[Path, Path]) -> None:
    log_dir, home = made
    with open_log(log_dir, home) as log:
        with pytest.raises(InvalidEntry):
            log.append(audit_pb2.AuditEntry(node="gw-1"))  # no body
        with pytest.raises(TypeError):
            log.append("not an entry")  # type: ignore[arg-type]
        assert log.append(entry(0)).index == 0


# --- checkpoints ------------------------------------------------------------------------------


def test_checkpoint_every_n_entries(made: tuple[Path, Path]) -> None:
    log_dir, home = made
    with open_log(log_dir, home, policy=CheckpointPolicy(every_entries=10, every_seconds=3600)) as log:
        for i in range(25):
            log.append(entry(i))
        log.checkpoint_now()  # waits for the checkpoint writer: the count ones are written before
        sizes = LogReader(log_dir).checkpoints.sizes()
        assert sizes == [0, 10, 20, 25]


def test_a_count_checkpoint_is_of_the_commit_that_reached_the_count(
    made: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint due after ``every_entries`` new entries signs the tree of the commit that
    reached the count, however late the thread that asks for it runs (a syncer that ran late, on a
    busy machine, used to sign the size of a later commit)."""
    original = AuditLog._request_checkpoint

    def late(self: AuditLog, *args: object) -> None:
        time.sleep(0.05)  # meanwhile, more appends are acknowledged
        original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(AuditLog, "_request_checkpoint", late)
    log_dir, home = made
    with open_log(log_dir, home, policy=CheckpointPolicy(every_entries=10, every_seconds=3600)) as log:
        for i in range(25):
            log.append(entry(i))
        log.checkpoint_now()
        assert LogReader(log_dir).checkpoints.sizes() == [0, 10, 20, 25]
    assert verify_log(LogReader(log_dir)).ok


def test_checkpoint_by_time_when_something_is_new(made: tuple[Path, Path]) -> None:
    log_dir, home = made
    store_dir = log_dir / "checkpoints"
    with open_log(log_dir, home, policy=CheckpointPolicy(every_entries=10_000, every_seconds=0.1)) as log:
        log.append(entry(0))
        deadline = time.monotonic() + 20
        while (store_dir / f"{1:020d}.note").exists() is False and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (store_dir / f"{1:020d}.note").exists()
        time.sleep(0.3)  # nothing new: no further checkpoint
        assert LogReader(log_dir).checkpoints.sizes() == [0, 1]


def test_checkpoint_now_and_close_cover_everything(made: tuple[Path, Path]) -> None:
    log_dir, home = made
    meta = LogMeta.load(log_dir)
    log = open_log(log_dir, home, policy=CheckpointPolicy(every_entries=10_000, every_seconds=3600))
    receipts = [log.append(entry(i)) for i in range(7)]
    note = log.checkpoint_now()
    checkpoint, signers = open_note(note, [meta.verifier])
    assert signers == [meta.log_id]
    assert checkpoint.origin == meta.log_id
    assert checkpoint.size == 7
    assert checkpoint.root_hash == root([r.leaf_hash for r in receipts])
    assert log.root() == (7, checkpoint.root_hash)
    assert log.checkpoint_now() == note  # nothing new: the same note
    assert (log_dir / "checkpoints" / "latest").read_bytes() == note
    log.append(entry(7))
    log.close()
    latest, _ = open_note((log_dir / "checkpoints" / "latest").read_bytes(), [meta.verifier])
    assert latest.size == 8
    with pytest.raises(AuditUnavailable):
        log.append(entry(8))


# --- the index --------------------------------------------------------------------------------


def test_index_finds_a_subject_and_selects_by_columns(made: tuple[Path, Path]) -> None:
    log_dir, home = made
    keys = HomeKeys(home).load()
    indexer = BlindIndexer(keys.blind_index_key)
    someone = person(424242)
    with open_log(log_dir, home) as log:
        for i in range(60):
            log.append(entry(i, subject=someone if i % 20 == 3 else None))
        log.append(consent_entry(60))
        log.append(push_entry(61))
        assert log.flush_index(timeout=30)
    index = AuditIndex.open(log_dir / "index.sqlite", log_id=LogMeta.load(log_dir).log_id, readonly=True)
    try:
        assert index.size == 62
        assert index.postings(indexer.subject_term("person", someone)) == [3, 23, 43]
        assert index.postings(indexer.term("consent", "consent-60")) == [60]
        assert index.postings(indexer.term("policy", "policy-7")) == [61]
        assert index.select(caller=indexer.term("caller", "tax")) == list(range(0, 60, 4))
        assert index.select(kind="consent_change") == [60]
        assert index.select(kind="access", provider=indexer.term("provider", "civil_affairs"), stop=10) == [
            0,
            4,
            8,
        ]
        assert index.select(day_from="2026-11-04") == []
        assert index.leaves(0, 62) == LogReader(log_dir).leaf_hashes(62)
    finally:
        index.close()


def test_terms_are_the_same_for_model_and_proto_and_split_consistently(made: tuple[Path, Path]) -> None:
    _log_dir, home = made
    encoder = TermEncoder(BlindIndexer(HomeKeys(home).load().blind_index_key))
    for e in (entry(1), entry(2), consent_entry(3), push_entry(4)):
        from_model = encoder.encode(e)
        assert encoder.encode(e.to_proto()) == from_model
        assert encoder.encode(e.to_proto()) == from_model  # memoised path
        assert split_section(from_model[0]) == (from_model[1], from_model[2])


def test_proto_fast_path_terms_equal_the_generic_ones(made: tuple[Path, Path]) -> None:
    """The append path reads a proto's raw fields and memoises combinations by raw value: every
    entry gives the bytes of the generic path (index_terms), with a fresh encoder each time and
    with a warm one, and an invalid value is refused even once its combination is memoised."""
    _log_dir, home = made
    key = HomeKeys(home).load().blind_index_key
    warm = TermEncoder(BlindIndexer(key))
    protos: list[audit_pb2.AuditEntry] = []
    for i in range(40):
        for made_entry in (entry(i), consent_entry(i), push_entry(i)):
            message = made_entry.to_proto()
            protos.append(message)
            if i % 3 == 0:
                bare = audit_pb2.AuditEntry()
                bare.CopyFrom(message)
                bare.ClearField("subject")
                bare.ClearField("purpose")
                bare.caller = 0
                protos.append(bare)
            if i % 5 == 0:
                employer = audit_pb2.AuditEntry()
                employer.CopyFrom(message)
                employer.subject.kind = 2
                employer.subject.id = "91120116MA05XXXX0X"
                protos.append(employer)
    for message in protos * 2:
        expected = TermEncoder(BlindIndexer(key))._encode_terms(index_terms(message))
        assert TermEncoder(BlindIndexer(key)).encode(message) == expected
        assert warm.encode(message) == expected
        assert split_section(expected[0]) == (expected[1], expected[2])
    bad_kind = audit_pb2.AuditEntry()
    bad_kind.CopyFrom(protos[0])
    bad_kind.subject.kind = 99
    with pytest.raises(InvalidEntry):
        warm.encode(bad_kind)
    bad_decision = audit_pb2.AuditEntry()
    bad_decision.CopyFrom(protos[0])
    bad_decision.access.decision = 0
    with pytest.raises(InvalidEntry):
        warm.encode(bad_decision)
    with pytest.raises(InvalidEntry):
        warm.encode(audit_pb2.AuditEntry(node="gw-1"))


def test_checkpoints_by_count_and_time_with_inline_acknowledgement(made: tuple[Path, Path]) -> None:
    """The committer acknowledges a batch itself when nothing is before it: the syncer still
    writes the checkpoints due by count and by time, and checkpoint_now covers every
    acknowledged entry."""
    log_dir, home = made
    policy = CheckpointPolicy(every_entries=7, every_seconds=0.3)
    with open_log(log_dir, home, policy=policy) as log:
        receipts = [log.append(proto(i)) for i in range(30)]
        deadline = time.monotonic() + 10
        while log.latest_checkpoint is None or int(log.latest_checkpoint.split(b"\n")[1]) < 28:
            assert time.monotonic() < deadline, log.latest_checkpoint
            time.sleep(0.01)
        log.append(proto(30))  # one more: only the timer checkpoints it
        while int((log.latest_checkpoint or b"\n0\n").split(b"\n")[1]) < 31:
            assert time.monotonic() < deadline, log.latest_checkpoint
            time.sleep(0.01)

        async def some() -> list[int]:
            return [(await log.append_async(proto(100 + i))).index for i in range(5)]

        indices = asyncio.run(some())
        note = log.checkpoint_now()
        assert int(note.split(b"\n")[1]) == 36 == log.size
        assert log.root() == (36, root([leaf for leaf in LogReader(log_dir).leaf_hashes(36)]))
    assert [r.index for r in receipts] == list(range(30)) and indices == list(range(31, 36))
    assert verify_log(LogReader(log_dir)).ok


def test_rebuilt_index_equals_the_incremental_one(tmp_path: Path) -> None:
    log_dir, home, _ = make_log(tmp_path, segment_bytes=16384)
    with open_log(log_dir, home) as log:
        log.append_many([proto(i) for i in range(150)])
        log.append(consent_entry(150))
        log.append(push_entry(151))
        assert log.flush_index(timeout=30)
    log_id = LogMeta.load(log_dir).log_id

    def dump() -> list[object]:
        index = AuditIndex.open(log_dir / "index.sqlite", log_id=log_id, readonly=True)
        try:
            return [index.state(), index.dump()]
        finally:
            index.close()

    incremental = dump()
    assert rebuild_index(log_dir) == 152
    assert dump() == incremental


def test_index_catches_up_after_a_writer_without_follower_and_after_deletion(made: tuple[Path, Path]) -> None:
    log_dir, home = made
    with open_log(log_dir, home) as log:
        log.append_many([proto(i) for i in range(10)])
    with open_log(log_dir, home, index="none") as log:
        log.append_many([proto(i) for i in range(10, 30)])
        assert not log.flush_index(timeout=1)
    with open_log(log_dir, home) as log:
        assert log.flush_index(timeout=30)
    follower = IndexFollower(log_dir)
    assert follower.size == 30
    follower.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{log_dir / 'index.sqlite'}{suffix}").unlink(missing_ok=True)
    with open_log(log_dir, home) as log:
        assert log.flush_index(timeout=30)
        assert log.size == 30
    assert AuditIndex.open(log_dir / "index.sqlite", log_id=LogMeta.load(log_dir).log_id).size == 30


def test_the_default_follower_is_a_child_process(made: tuple[Path, Path]) -> None:
    log_dir, home = made
    with AuditLog.open(log_dir, home=home) as log:
        log.append_many([proto(i) for i in range(40)])
        assert log.flush_index(timeout=60)
    assert rebuild_index(log_dir) == 40


# --- recovery ---------------------------------------------------------------------------------


def _last_segment(log_dir: Path) -> Path:
    return list_segments(log_dir / "segments")[-1][1]


def test_garbage_after_the_last_frame_is_cut_with_a_warning(made: tuple[Path, Path]) -> None:
    log_dir, home = made
    with open_log(log_dir, home) as log:
        log.append_many([proto(i) for i in range(5)])
    segment = _last_segment(log_dir)
    size = segment.stat().st_size
    with open(segment, "ab") as f:
        f.write(os.urandom(300))
    with structlog.testing.capture_logs() as logs, open_log(log_dir, home) as log:
        assert log.size == 5
        assert log.append(entry(5)).index == 5
    assert any(e["event"] == "audit.log.torn_tail" and e["entry"] == 5 for e in logs)
    assert segment.stat().st_size > size
    assert verify_log(LogReader(log_dir)).ok


@pytest.mark.parametrize("keep", [11, 40, "crc"])
def test_a_torn_last_frame_is_cut(made: tuple[Path, Path], keep: int | str) -> None:
    log_dir, home = made
    with open_log(log_dir, home) as log:
        log.append_many([proto(i) for i in range(5)])
        frame = _frame_bytes(log.append(entry(5)).index, log_dir)
    # simulate the crash of an unacknowledged append: index 6 half written (or with a bad CRC)
    torn = bytearray(frame)
    torn[4:12] = (6).to_bytes(8, "big")
    data = bytes(torn[: int(keep)]) if keep != "crc" else bytes(torn)
    with open(_last_segment(log_dir), "ab") as f:
        f.write(data)
    with structlog.testing.capture_logs() as logs, open_log(log_dir, home) as log:
        assert log.size == 6
    assert [e["entry"] for e in logs if e["event"] == "audit.log.torn_tail"] == [6]
    report = verify_log(LogReader(log_dir))
    assert report.ok and report.entries == 6


def _frame_bytes(index: int, log_dir: Path) -> bytes:
    frame = LogReader(log_dir).frame(index)
    head = FRAME_HEAD.pack(len(frame.terms) + len(frame.sealed), index)
    body = head + frame.terms + frame.sealed
    return body + zlib.crc32(body).to_bytes(4, "big")


def test_a_checkpointed_frame_cut_short_is_not_a_torn_tail(made: tuple[Path, Path]) -> None:
    log_dir, home = made
    with open_log(log_dir, home) as log:
        log.append_many([proto(i) for i in range(5)])
    segment = _last_segment(log_dir)
    os.truncate(segment, segment.stat().st_size - 10)  # entry 4 is in the closing checkpoint
    with pytest.raises(LogCorrupt, match="verify"):
        open_log(log_dir, home)
    assert verify_log(LogReader(log_dir)).problem is not None


def test_a_bad_frame_before_the_tail_refuses_to_open(made: tuple[Path, Path]) -> None:
    log_dir, home = made
    with open_log(log_dir, home, policy=CheckpointPolicy(every_entries=10_000, every_seconds=3600)) as log:
        log.append_many([proto(i) for i in range(5)])
    reader = LogReader(log_dir)
    frame = reader.frame(2)
    segment = _last_segment(log_dir)
    data = bytearray(segment.read_bytes())
    data[frame.offset + 40] ^= 0xFF
    segment.write_bytes(bytes(data))
    for suffix in ("", "-wal", "-shm"):  # no index: the whole log is scanned
        Path(f"{log_dir / 'index.sqlite'}{suffix}").unlink(missing_ok=True)
    with pytest.raises(LogCorrupt, match="entry 2"):
        open_log(log_dir, home)


def test_a_truncated_log_refuses_to_open(made: tuple[Path, Path]) -> None:
    log_dir, home = made
    with open_log(log_dir, home) as log:
        log.append_many([proto(i) for i in range(5)])
    frame = LogReader(log_dir).frame(3)
    os.truncate(_last_segment(log_dir), frame.offset)  # whole frames 3 and 4 removed
    with pytest.raises(LogCorrupt, match="truncated"):
        open_log(log_dir, home)


# --- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["write", "fdatasync"])
def test_a_failed_write_makes_the_log_refuse_appends_until_reopened(
    made: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    log_dir, home = made
    log = open_log(log_dir, home)
    log.append_many([proto(i) for i in range(3)])
    real = getattr(os, call)
    code = errno.ENOSPC if call == "write" else errno.EIO

    def broken(*args: object) -> object:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, call, broken)
    with pytest.raises(AuditUnavailable, match="ENOSPC" if call == "write" else "EIO"):
        log.append(entry(3))
    monkeypatch.setattr(os, call, real)
    with pytest.raises(AuditUnavailable):  # still refused, though the disk is back
        log.append(entry(4))
    with pytest.raises(AuditUnavailable):
        asyncio.run(log.append_async(entry(4)))
    assert isinstance(log.failed, AuditUnavailable)
    log.close()
    with open_log(log_dir, home) as log:
        assert log.size == 3
        assert log.append(entry(3)).index == 3
    assert verify_log(LogReader(log_dir)).ok


def test_an_fdatasync_failure_under_load_fails_every_waiter_and_keeps_acknowledged_entries(
    made: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    log_dir, home = made
    log = open_log(log_dir, home)
    acked: dict[int, str] = {}
    failures: list[BaseException] = []
    lock = threading.Lock()
    real = os.fdatasync
    calls = [0]

    def flaky(fd: int) -> None:
        calls[0] += 1
        if calls[0] > 20:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", flaky)

    def worker(k: int) -> None:
        for i in range(200):
            try:
                receipt = log.append(proto(k * 1000 + i, request_id=f"w{k}-{i}"))
            except AuditUnavailable as exc:
                with lock:
                    failures.append(exc)
                return
            with lock:
                acked[receipt.index] = f"w{k}-{i}"

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a waiter hangs"
    assert len(failures) == 16 and acked
    log.close()
    monkeypatch.setattr(os, "fdatasync", real)
    with open_log(log_dir, home) as reopened:
        assert reopened.size >= len(acked)
    reader = LogReader(log_dir)
    keyring = auditor_keyring(reader, home)
    for index, request_id in acked.items():
        assert reader.entry(index, keyring).request_id == request_id
    assert verify_log(reader).ok


def test_a_segment_that_cannot_be_created_makes_appends_fail_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_dir, home, _ = make_log(tmp_path, segment_bytes=4096)
    with open_log(log_dir, home) as log:
        log.append(entry(0))
    real_open = os.open

    def denied(path: object, flags: int, *args: int) -> int:
        if flags & os.O_CREAT and str(path).endswith(".seg"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    with open_log(log_dir, home) as log:
        monkeypatch.setattr(os, "open", denied)
        with pytest.raises(AuditUnavailable, match="EACCES"):
            log.append_many([proto(i) for i in range(1, 40)])  # needs a new segment
        with pytest.raises(AuditUnavailable):
            log.append(entry(40))
        monkeypatch.setattr(os, "open", real_open)
    with open_log(log_dir, home) as log:
        assert log.size == 1
    assert verify_log(LogReader(log_dir)).ok


# --- locking, keys, layout --------------------------------------------------------------------


def test_one_writer_at_a_time(made: tuple[Path, Path]) -> None:
    log_dir, home = made
    with open_log(log_dir, home), pytest.raises(LogLocked):
        open_log(log_dir, home)
    open_log(log_dir, home).close()


def test_keys_of_another_home_are_refused(made: tuple[Path, Path], tmp_path: Path) -> None:
    log_dir, _home = made
    other = tmp_path / "other"
    HomeKeys(other).generate()
    with pytest.raises(LogLayoutError, match="signing key"):
        open_log(log_dir, other)
    with pytest.raises(LogLayoutError, match="not an empty directory"):
        init_log(log_dir, HomeKeys(other).load(), node="gw-2")
    with pytest.raises(LogLayoutError, match="node name"):
        init_log(tmp_path / "new", HomeKeys(other).load(), node="bad node")
    with pytest.raises(LogLayoutError, match="not an audit log"):
        LogMeta.load(tmp_path)


def test_key_files_are_private_and_never_in_the_log(made: tuple[Path, Path]) -> None:
    log_dir, home = made
    for path in HomeKeys(home).files():
        assert path.stat().st_mode & 0o077 == 0
    secrets = [
        HomeKeys(home).blind_index_key.read_bytes(),
        HomeKeys(home).checkpoint_key.read_bytes().strip(),
    ]
    for path in log_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(s in data for s in secrets), path


def test_no_personal_data_in_clear_anywhere_in_the_log_directory(made: tuple[Path, Path]) -> None:
    log_dir, home = made
    entries = [entry(i) for i in range(30)] + [consent_entry(30), push_entry(31)]
    with open_log(log_dir, home) as log:
        for e in entries:
            log.append(e)
        assert log.flush_index(timeout=30)
    needles: set[bytes] = {OPERATOR.encode(), *(f.encode() for f in FIELDS)}
    for e in entries:
        assert e.subject is not None
        needles |= {e.subject.id.encode(), e.subject.id[-8:].encode(), e.request_id.encode()}
        needles.add(e.subject.id.encode("utf-16-le"))
    needles |= {b"consent-30", b"consent-1", b"n-31", b"person_insurance", b"employment_subsidy_review"}
    files = [p for p in log_dir.rglob("*") if p.is_file()]
    assert any(p.name == "index.sqlite" for p in files)
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"{needle!r} in clear in {path.relative_to(log_dir)}"
    assert encode(entries[0])  # the payload does contain them: it is sealed


def test_gm_suite_log(tmp_path: Path) -> None:
    log_dir, home, _ = make_log(tmp_path, suite="gm")
    with open_log(log_dir, home) as log:
        receipts = log.append_many([proto(i) for i in range(20)])
    reader = LogReader(log_dir)
    sm3 = get_suite("gm").hash_fn
    assert receipts[3].leaf_hash == leaf_hash(reader.frame(3).sealed, sm3)
    assert reader.entry(3, auditor_keyring(reader, home)) == entry(3)
    report = verify_log(reader, auditor=FileKeyProvider.from_private_key_file(HomeKeys(home).auditor_key))
    assert report.ok and report.opened == 20 and report.suite == "gm"
