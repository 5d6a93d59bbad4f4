"""Crash recovery: what a writer finds when it opens a log, and the repairs it may make.

:func:`recover` runs before a writer appends (it holds the log's lock). It resumes from the index
(tree size, compact-range peaks, indexed length of each segment) when the index is consistent
with the segments, else from the first segment (and the index is dropped, to be rebuilt by the
follower), and scans every frame after that point:

* a torn tail (the last segment ends with a frame cut short or with a bad CRC and no good frame
  after it, not covered by any checkpoint) is cut off with a warning: it was never acknowledged,
  since an append is acknowledged only after fdatasync and checkpointed only after that;
* a new segment file shorter than its header, at the very end, is removed with a warning;
* anything else (a bad frame before the tail, an index gap, a segment missing or misnamed, a
  malformed terms section, fewer entries than the latest checkpoint, a latest checkpoint that
  does not verify or whose root is not the log's) is :class:`LogCorrupt`: run
  ``dsgw audit verify``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from audit.checkpoint import open_note
from audit.checkpoints import CheckpointStore
from audit.errors import AuditError, VerificationError
from audit.index import AuditIndex, IndexError_, IndexState, remove_index
from audit.layout import LogMeta, LogPaths, fsync_dir
from audit.merkle import LEAF_PREFIX, CompactRange, empty_root
from audit.record import RecordError, split_section, terms_size
from audit.segment import HEADER_SIZE, check_header, list_segments, parse_frames, segment_name
from audit.suites import get_suite

__all__ = ["LogCorrupt", "Recovered", "recover"]

_log = structlog.get_logger("audit.log")


def _event(level: str, event: str, **fields: object) -> None:
    """Log best-effort: a logging failure never breaks recovery."""
    with contextlib.suppress(Exception):
        getattr(_log, level)(event, **fields)


class LogCorrupt(AuditError):
    """The log's files are damaged or tampered with beyond a torn tail: the writer refuses to
    append. Run ``dsgw audit verify`` to find the first bad entry or checkpoint."""

    reason = "LOG_CORRUPT"


@dataclass(frozen=True)
class Recovered:
    """The state a writer resumes from: the entries on disk (``size``) and their compact-range
    ``peaks``, the latest stored checkpoint (size and signed note), and the segment to append to
    (first index, path), if any."""

    size: int
    peaks: tuple[bytes, ...]
    checkpoint_size: int
    checkpoint_note: bytes | None
    tail: tuple[int, Path] | None


def recover(
    paths: LogPaths, meta: LogMeta, store: CheckpointStore, *, rebuild_index: bool = False
) -> Recovered:
    """Scan the log as described in the module docstring; :class:`LogCorrupt` if it is damaged."""
    log_id = meta.log_id
    suite = get_suite(meta.suite)
    hash_fn = suite.hash_fn
    cp_size, cp_root, cp_note = _latest_checkpoint(store, meta)
    if rebuild_index:
        remove_index(paths.index)
    state = _index_state(paths, log_id)
    segments = list_segments(paths.segments)
    files = dict(segments)
    tree = CompactRange(hash_fn)
    if state.size or state.segments:
        problem = _index_problem(state.size, state.segments, files)
        if problem is None:
            try:
                tree = CompactRange.from_peaks(state.size, state.peaks, hash_fn)
            except ValueError:
                problem = "its compact range is malformed"
        if problem is not None:
            _event(
                "warning",
                "audit.index.rebuild",
                log_id=log_id,
                reason=f"the index is inconsistent: {problem}",
            )
            remove_index(paths.index)
            state = IndexState()
    expected = state.size
    if state.segments:
        resume_first = max(state.segments)
        resume_offset = state.segments[resume_first]
    else:
        resume_first = segments[0][0] if segments else 0
        resume_offset = -1

    def check_root() -> None:
        if expected == cp_size and tree.root() != cp_root:
            raise LogCorrupt(
                f"the log's Merkle root at tree size {cp_size} is not the latest checkpoint's: "
                "run dsgw audit verify"
            )

    check_root()
    last_first = segments[-1][0] if segments else None
    for first, path in segments:
        if first < resume_first:
            continue
        data = path.read_bytes()
        is_last = first == last_first
        if resume_offset >= 0 and first == resume_first:
            pos = resume_offset
        else:
            problem = check_header(data, first)
            if problem is not None:
                if is_last and len(data) < HEADER_SIZE and first == expected:
                    _event(
                        "warning", "audit.log.torn_segment", log_id=log_id, segment=path.name, bytes=len(data)
                    )
                    path.unlink()
                    fsync_dir(paths.segments)
                    last_first = None
                    break
                raise LogCorrupt(f"segment {path.name}: {problem}: run dsgw audit verify")
            if first != expected:
                raise LogCorrupt(
                    f"segment {path.name} starts at entry {first}, but the log has {expected} entries "
                    "before it: run dsgw audit verify"
                )
            pos = HEADER_SIZE
        parsed = parse_frames(data, pos, expected)
        for idx, off, record in zip(parsed.indices, parsed.offsets, parsed.records, strict=True):
            if idx != expected:
                raise LogCorrupt(
                    f"segment {path.name}: the frame at offset {off} is entry {idx}, expected "
                    f"entry {expected}: run dsgw audit verify"
                )
            size = terms_size(record)
            tree.append(hash_fn(LEAF_PREFIX + record[size:]))
            expected += 1
            check_root()
            try:
                split_section(record[:size])
            except RecordError as exc:
                raise LogCorrupt(f"segment {path.name}: entry {idx}: {exc}: run dsgw audit verify") from None
        bad = parsed.bad
        if bad is None:
            continue
        if not (is_last and bad.torn_tail and expected >= cp_size):
            raise LogCorrupt(
                f"segment {path.name} offset {bad.offset} (entry {expected}): {bad.problem}: "
                "run dsgw audit verify"
            )
        _event(
            "warning",
            "audit.log.torn_tail",
            log_id=log_id,
            segment=path.name,
            offset=bad.offset,
            bytes=len(data) - bad.offset,
            entry=expected,
            problem=bad.problem,
        )
        os.truncate(path, bad.offset)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    if cp_size > expected:
        raise LogCorrupt(
            f"the log has {expected} entries, but its checkpoint of tree size {cp_size} says there "
            "were more (truncated): run dsgw audit verify"
        )
    if cp_note is not None and store.latest() != cp_note:
        store.write(cp_size, cp_note)  # a crash between a checkpoint and its ``latest`` link
    tail = (last_first, files[last_first]) if last_first is not None else None
    return Recovered(expected, tree.peaks, cp_size, cp_note, tail)


def _index_state(paths: LogPaths, log_id: str) -> IndexState:
    """What the index holds (nothing if it is missing, unreadable or another log's: dropped)."""
    try:
        index = AuditIndex.open(paths.index, log_id=log_id)
    except IndexError_ as exc:
        _event("warning", "audit.index.rebuild", log_id=log_id, reason=str(exc))
        remove_index(paths.index)
        return IndexState()
    try:
        return index.state()
    finally:
        index.close()


def _latest_checkpoint(store: CheckpointStore, meta: LogMeta) -> tuple[int, bytes, bytes | None]:
    """(size, root, note) of the largest stored checkpoint, signature checked."""
    suite = get_suite(meta.suite)
    sizes = store.sizes()
    notes: list[bytes] = []
    if sizes:
        notes.append(store.read(sizes[-1]))
    latest = store.latest()
    if latest is not None:
        notes.append(latest)
    best: tuple[int, bytes, bytes | None] = (0, empty_root(suite.hash_fn), None)
    for note in notes:
        try:
            checkpoint, _ = open_note(note, [meta.verifier], hash_size=suite.digest_size)
        except VerificationError as exc:
            raise LogCorrupt(f"a stored checkpoint does not verify ({exc}): run dsgw audit verify") from None
        if checkpoint.origin != meta.log_id:
            raise LogCorrupt("a stored checkpoint is of another log: run dsgw audit verify")
        if best[2] is None or checkpoint.size > best[0]:
            best = (checkpoint.size, checkpoint.root_hash, note)
    return best


def _index_problem(size: int, indexed: Mapping[int, int], files: dict[int, Path]) -> str | None:
    """Why the index cannot be resumed from, or ``None``."""
    if not indexed:
        return "it has entries but no segments" if size else None
    last = max(indexed)
    for first, nbytes in indexed.items():
        path = files.get(first)
        if path is None:
            return f"segment {segment_name(first)} is missing"
        actual = path.stat().st_size
        if (first != last and actual != nbytes) or actual < nbytes:
            return f"segment {segment_name(first)} is {actual} bytes, indexed up to {nbytes}"
    for first in files:
        if first < last and first not in indexed:
            return f"segment {segment_name(first)} is not indexed"
    return None
