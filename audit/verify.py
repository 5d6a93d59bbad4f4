"""Full verification of an audit log: recompute everything, stop at the first problem, name it.

:func:`verify_log` reads a log through a :class:`~audit.reader.LogReader` (it never writes) and
checks, in this order:

1. the trust anchor: the checkpoint verifier keys given by the auditor (``--key``), or else the
   one in ``log.json``; with given keys, ``log.json`` must name one of them (a replaced
   ``log.json`` does not help an attacker);
2. every checkpoint (the stored ``checkpoints/*.note`` and ``latest``, and those the auditor
   gives): C2SP format, a valid signature by a trusted key, the log's origin, the size its file
   name says; two checkpoints of one size with different roots are a fork;
3. every segment and frame, in order: segment names and headers, each frame's CRC and format,
   each index exactly one more than the previous (a gap is a deleted entry, a smaller or
   swapped index a reordering);
4. the Merkle tree: each entry's leaf hash (the hash of its sealed bytes) folded into the tree,
   and at every checkpoint's size, the recomputed root must be the checkpoint's root (a changed
   entry whose CRC was fixed up, a swap whose index fields were swapped too, a rollback or a fork
   all end here). Then the first entry that differs is named when possible: the first whose
   leaf differs from the one the index recorded when it was written, or with the auditor key the
   first whose AEAD fails;
5. truncation: a checkpoint (stored or given) or the index larger than the log; and a log
   without any stored checkpoint (every log is created with the checkpoint of its empty tree:
   one without has lost them);
6. with the auditor key (``--auditor-key``): every entry opens (AEAD, bound to the log id and
   its index), decodes, and its stored search terms are the ones its content gives;
7. with the auditor key, once the log itself verified: the search index (``index.sqlite``) holds
   exactly the rows those terms give for every entry it had indexed when verification started
   (:mod:`audit.index_check`): an entry a deleted, added, moved or changed row hides from search
   or subject-report is named. Without the key the index is not compared (the report says so).

An incomplete frame at the very end, after every checkpoint, is an append that was never
acknowledged (a crash): it is a warning, not a failure. The report gives the entries, the
checkpoints verified, the root, the time, and the first problem (code, message, entry index,
checkpoint) if any.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import hmac
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.blind_index import BlindIndexer
from audit.checkpoint import Verifier, open_note
from audit.checkpoints import LATEST
from audit.entry import InvalidEntry, decode_proto
from audit.errors import (
    AuditError,
    CheckpointFormatError,
    CheckpointSignatureError,
    KeyFormatError,
    UnknownKeyError,
)
from audit.index import AuditIndex, IndexDamaged
from audit.index_check import IndexComparison
from audit.keys import KeyProvider, Keyring
from audit.merkle import LEAF_PREFIX, CompactRange, range_subtrees
from audit.reader import LogReader, ReadError, sealed_of
from audit.record import RecordError, TermEncoder
from audit.seal import KeyShredded, SealError, UnknownKeyId, open_sealed
from audit.segment import FRAME_OVERHEAD, HEADER_SIZE, BadFrame, check_header, parse_frames
from audit.suites import HashFn, get_suite

__all__ = ["Problem", "VerifyReport", "VerifyUsageError", "verify_log"]


class VerifyUsageError(AuditError):
    """A verification input that is not usable (a malformed key or checkpoint file argument)."""

    reason = "VERIFY_USAGE"


@dataclass(frozen=True)
class Problem:
    """The first problem found: a stable ``code``, a one-line message, and the entry index and
    checkpoint it concerns, when known."""

    code: str
    message: str
    entry: int | None = None
    checkpoint: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "entry": self.entry,
            "checkpoint": self.checkpoint,
        }


@dataclass
class VerifyReport:
    log_id: str
    suite: str
    entries: int = 0
    checkpoints: int = 0
    latest_checkpoint: int | None = None
    root: bytes = b""
    seconds: float = 0.0
    problem: Problem | None = None
    warnings: list[str] = field(default_factory=list)
    opened: int = 0
    shredded: int = 0
    decrypted: bool = False
    jobs: int = 1  # processes that scanned the segments
    index_compared: bool = False
    index_entries: int = 0  # entries whose index rows were compared
    index_note: str | None = None  # why the index was not compared

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "log_id": self.log_id,
            "suite": self.suite,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "latest_checkpoint": self.latest_checkpoint,
            "root_hash": base64.b64encode(self.root).decode("ascii"),
            "seconds": round(self.seconds, 3),
            "entries_per_s": round(self.entries / self.seconds) if self.seconds > 0 else None,
            "decrypted": self.decrypted,
            "opened": self.opened,
            "shredded": self.shredded,
            "jobs": self.jobs,
            "index_compared": self.index_compared,
            "index_entries": self.index_entries,
            "index_note": self.index_note,
            "problem": self.problem.to_json() if self.problem else None,
            "warnings": self.warnings,
        }

    def summary(self) -> str:
        if self.problem is not None:
            return self.problem.message
        text = (
            f"ok: {self.entries:,} entries, {self.checkpoints:,} checkpoints verified, root "
            f"{base64.b64encode(self.root).decode('ascii')}, {self.seconds:.2f} s"
        )
        if self.decrypted:
            text += f"; {self.opened:,} entries opened, {self.shredded:,} shredded"
        if self.index_compared:
            text += f"; index compared ({self.index_entries:,} entries)"
        else:
            text += f"; index not compared: {self.index_note or 'not asked'}"
        return text


class _Found(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


@dataclass
class _Checkpoint:
    size: int
    root: bytes
    name: str


#: Problems of the log's structure at an entry: one changed before it is named first.
_STRUCTURAL = frozenset(
    {"ENTRY_MISSING", "ENTRY_ORDER", "FRAME_CORRUPT", "SEGMENT_HEADER", "SEGMENT_UNREADABLE"}
)


def _fail(code: str, message: str, *, entry: int | None = None, checkpoint: str | None = None) -> _Found:
    return _Found(Problem(code, message, entry, checkpoint))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class _Tree:
    """The compact range being verified, fed with the perfect subtrees that segment scans return
    (:func:`audit.merkle.range_subtrees`): O(log n) hashing per range in the verifying process."""

    def __init__(self, hash_fn: HashFn) -> None:
        self.range = CompactRange(hash_fn)

    @property
    def size(self) -> int:
        return self.range.size

    def add(self, nodes: Sequence[tuple[int, bytes]]) -> None:
        append = self.range.append_subtree
        for level, digest in nodes:
            append(level, digest)

    def root(self) -> bytes:
        return self.range.root()


@dataclass(slots=True)
class _SegmentScan:
    """What one segment holds, as :func:`_scan_segment` found it (in this or a worker process):
    the header problem if any (and the file's length), the index fields if they are not the
    expected run from the segment's first index, the first bad frame, the subtrees of its leaves cut at the
    checkpoint sizes inside it (one group per cut, then the rest), and the records if asked."""

    length: int
    header_problem: str | None = None
    count: int = 0
    indices: list[int] | None = None
    bad: BadFrame | None = None
    groups: list[list[tuple[int, bytes]]] = field(default_factory=list)
    records: list[bytes] | None = None


def _scan_segment(
    path: Path, first: int, suite: str, cuts: Sequence[int], keep_records: bool
) -> _SegmentScan:
    """Read, parse and hash one segment (a pure function of the file: runs in a worker process
        when the log is large). ``cuts``: the checkpoint sizes above ``first``, ascending (those
    beyond the segment's entries are ignored)."""
    data = path.read_bytes()
    scan = _SegmentScan(len(data))
    scan.header_problem = check_header(data, first)
    if scan.header_problem is not None:
        return scan
    parsed = parse_frames(data, HEADER_SIZE, first)
    del data
    indices, records = parsed.indices, parsed.records
    count = scan.count = len(indices)
    if indices != list(range(first, first + count)):
        scan.indices = indices
    scan.bad = parsed.bad
    hash_fn = get_suite(suite).hash_fn
    prefix = LEAF_PREFIX
    leaves = [hash_fn(prefix + sealed_of(r)) for r in records]
    done = 0
    for cut in cuts:
        if cut > first + count:
            break
        scan.groups.append(range_subtrees(first + done, leaves[done : cut - first], hash_fn))
        done = cut - first
    scan.groups.append(range_subtrees(first + done, leaves[done:], hash_fn))
    if keep_records:
        scan.records = records
    return scan


# Segments are scanned in worker processes (one per usable CPU) when the log is at least this
# large; each worker holds about two segments in memory, so there are at most MAX_JOBS.
PARALLEL_MIN_BYTES = 32 * 2**20
MAX_JOBS = 8


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_jobs(segments: Sequence[tuple[int, Path]]) -> int:
    """How many processes scan ``segments`` by default: one per usable CPU (at most one per
    segment, at most :data:`MAX_JOBS`) for a log of :data:`PARALLEL_MIN_BYTES` or more, else 1
    (in this process)."""
    total = 0
    for _, path in segments:
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    if total < PARALLEL_MIN_BYTES:
        return 1
    return max(1, min(usable_cpus(), MAX_JOBS, len(segments)))


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C to the verifying process (which stops them): no traceback each."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _segment_scans(
    reader: LogReader,
    segments: Sequence[tuple[int, Path]],
    cuts: Sequence[int],
    keep_records: bool,
    jobs: int | None,
    report: VerifyReport,
) -> Iterator[Iterator[_SegmentScan]]:
    """The scans of ``segments`` in order: in this process, or (``jobs`` > 1, this process
    single-threaded as the CLI is, and never with records, which stay in this process) in a pool
    of forked worker processes with a few segments in flight, so that memory stays bounded and an
    early failure stops the rest."""
    suite = reader.suite.name
    paths = dict(segments)

    def inside(first: int) -> Sequence[int]:
        """The checkpoint sizes a segment starting at ``first`` can hold: above ``first``, and no
        more entries than its file has room for."""
        low = bisect.bisect_right(cuts, first)
        try:
            room = max(0, paths[first].stat().st_size - HEADER_SIZE) // FRAME_OVERHEAD
        except OSError:
            return cuts[low:]  # the scan reports it
        return cuts[low : bisect.bisect_right(cuts, first + room)]

    # asked for more than is useful: no more workers than segments, CPUs or MAX_JOBS
    jobs = default_jobs(segments) if jobs is None else min(jobs, len(segments), usable_cpus(), MAX_JOBS)
    # Workers are forked: no main-module re-import (spawn, forkserver), and safe only when this
    # process runs no other thread (a lock another thread holds would stay held in the child).
    if (
        jobs <= 1
        or keep_records
        or len(segments) < 2
        or threading.active_count() > 1
        or "fork" not in multiprocessing.get_all_start_methods()
    ):
        yield (_scan_segment(path, first, suite, inside(first), keep_records) for first, path in segments)
        return
    report.jobs = jobs
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_ignore_interrupts) as pool:

        def ordered() -> Iterator[_SegmentScan]:
            pending: deque[Future[_SegmentScan]] = deque()
            todo = iter(segments)
            for first, path in todo:
                pending.append(pool.submit(_scan_segment, path, first, suite, inside(first), False))
                if len(pending) >= 2 * jobs:
                    break
            while pending:
                scan = pending.popleft().result()
                for first, path in todo:
                    pending.append(pool.submit(_scan_segment, path, first, suite, inside(first), False))
                    break
                yield scan

        try:
            yield ordered()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class _Verifier:
    def __init__(
        self,
        reader: LogReader,
        verifiers: list[Verifier],
        given: Sequence[tuple[str, bytes]],
        auditor: KeyProvider | None,
        progress: Callable[[str], None] | None,
        jobs: int | None = None,
    ) -> None:
        self.reader = reader
        self.jobs = jobs
        self.verifiers = verifiers
        self.given = given
        self.hash_fn = reader.hash_fn
        self.report = VerifyReport(reader.log_id, reader.suite.name)
        self.progress = progress
        self.index: AuditIndex | None = None
        #: the index's size before the segments were scanned: a live log's follower goes on
        #: indexing during the scan, so only this snapshot is bounded by what the scan sees
        self.indexed_before: int | None = None
        self.verified_to = 0  # the largest checkpoint size verified so far
        self.stored = 0  # checkpoint files in the log directory
        self.keyring: Keyring | None = None
        self.terms: TermEncoder | None = None
        #: the comparison of the index with the entries' terms (with the auditor key, and an index)
        self.index_check: IndexComparison | None = None
        if auditor is not None:
            self.keyring = reader.keyring(auditor)
            self.terms = TermEncoder(BlindIndexer.for_suite(self.keyring.blind_index_key(), reader.suite))
            self.report.decrypted = True
            self.index_check = IndexComparison(reader.paths.index, reader.log_id)
        else:
            self.report.index_note = "it needs the auditor key (--auditor-key)"

    # -- checkpoints ------------------------------------------------------------------------------

    def load_checkpoints(self) -> list[_Checkpoint]:
        reader = self.reader
        notes: list[tuple[str, bytes, int | None]] = []
        stored_files = reader.checkpoints.stored()
        self.stored = len(stored_files)
        for stored in stored_files:
            name = f"checkpoints/{stored.name}"
            try:
                notes.append((name, stored.read(), stored.size))
            except OSError as exc:
                raise _fail(
                    "CHECKPOINT_UNREADABLE", f"{name} cannot be read ({exc.strerror})", checkpoint=name
                ) from None
        notes.extend((name, note, None) for name, note in self.given)
        by_size: dict[int, _Checkpoint] = {}
        for name, note, named_size in notes:
            try:
                checkpoint, _ = open_note(note, self.verifiers, hash_size=reader.suite.digest_size)
            except CheckpointFormatError as exc:
                raise _fail(
                    "CHECKPOINT_FORMAT", f"checkpoint {name} is malformed: {exc}", checkpoint=name
                ) from None
            except CheckpointSignatureError as exc:
                raise _fail(
                    "CHECKPOINT_SIGNATURE", f"checkpoint {name} has a bad signature: {exc}", checkpoint=name
                ) from None
            except UnknownKeyError:
                raise _fail(
                    "CHECKPOINT_UNKNOWN_KEY",
                    f"checkpoint {name} is not signed by a trusted key "
                    f"({', '.join(v.name for v in self.verifiers)})",
                    checkpoint=name,
                ) from None
            if checkpoint.origin != reader.log_id:
                raise _fail(
                    "CHECKPOINT_ORIGIN",
                    f"checkpoint {name} is of log {checkpoint.origin!r}, not {reader.log_id!r}",
                    checkpoint=name,
                )
            if named_size is not None and named_size != checkpoint.size:
                raise _fail(
                    "CHECKPOINT_NAME",
                    f"checkpoint {name} says tree size {checkpoint.size}, its file name {named_size}",
                    checkpoint=name,
                )
            other = by_size.get(checkpoint.size)
            if other is not None and not hmac.compare_digest(other.root, checkpoint.root_hash):
                raise _fail(
                    "FORK",
                    f"checkpoints {other.name} and {name} are both of tree size {checkpoint.size} with "
                    f"different roots: the log was forked or rolled back",
                    checkpoint=name,
                )
            if other is None or other.name.endswith("/" + LATEST):
                by_size[checkpoint.size] = _Checkpoint(checkpoint.size, checkpoint.root_hash, name)
        checkpoints = sorted(by_size.values(), key=lambda c: c.size)
        self.report.latest_checkpoint = checkpoints[-1].size if checkpoints else None
        return checkpoints

    # -- frames -----------------------------------------------------------------------------------

    def scan(self, checkpoints: list[_Checkpoint]) -> None:
        reader = self.reader
        tree = _Tree(self.hash_fn)
        pending = [c for c in checkpoints if c.size == 0]
        for c in pending:
            self.check_root(tree, c, 0)
        upcoming = [c for c in checkpoints if c.size > 0]
        max_cp = checkpoints[-1].size if checkpoints else 0
        segments = reader.segments()
        sizes = [c.size for c in upcoming]
        self.verified_to = 0
        try:
            self._scan_segments(tree, upcoming, segments, sizes, max_cp)
        except _Found as found:
            # an entry changed before a gap, a reordering or a damaged frame is the first bad one
            problem = found.problem
            if problem.code in _STRUCTURAL and problem.entry is not None:
                self.earlier_change(problem.entry)
            raise

    def earlier_change(self, at: int) -> None:
        """Before a structural problem at entry ``at`` is reported: an entry since the last verified
        checkpoint whose leaf differs from the indexed one is the first bad entry; name it."""
        start = self.verified_to
        if at <= start:
            return
        try:
            culprit = self.localize(start, at)
        except ReadError:  # the damage at ``at`` ends the frames: nothing earlier differed
            return
        if culprit is not None and culprit[0] < at:
            entry, how = culprit
            raise _fail(
                "ENTRY_CHANGED",
                f"entry {entry} was changed ({how}); entry {at} after it is bad too",
                entry=entry,
            )

    def _scan_segments(
        self,
        tree: _Tree,
        upcoming: list[_Checkpoint],
        segments: list[tuple[int, Path]],
        sizes: list[int],
        max_cp: int,
    ) -> None:
        reader, report = self.reader, self.report
        at = 0  # next checkpoint in upcoming
        expected = 0
        with _segment_scans(reader, segments, sizes, self.keyring is not None, self.jobs, report) as scans:
            for number, (first, path) in enumerate(segments):
                is_last = number == len(segments) - 1
                if first != expected:
                    if first > expected:
                        raise _fail(
                            "ENTRY_MISSING",
                            f"entries {expected} to {first - 1} are missing: segment {path.name} "
                            f"follows entry {expected - 1}"
                            if expected
                            else f"entries 0 to {first - 1} are missing",
                            entry=expected,
                        )
                    raise _fail(
                        "ENTRY_ORDER",
                        f"segment {path.name} starts at entry {first}, which an earlier segment already has",
                        entry=first,
                    )
                try:  # only now: the gap and order checks above come first, as in the file order
                    scan = next(scans)
                except OSError as exc:
                    raise _fail(
                        "SEGMENT_UNREADABLE",
                        f"segment {path.name} cannot be read ({exc.strerror or exc})",
                        entry=first,
                    ) from None
                problem = scan.header_problem
                if problem is not None:
                    if is_last and scan.length < HEADER_SIZE and expected >= max_cp:
                        report.warnings.append(
                            f"segment {path.name} is an incomplete new segment ({scan.length} bytes)"
                        )
                        break
                    raise _fail("SEGMENT_HEADER", f"segment {path.name}: {problem}", entry=first)
                count = scan.count
                if scan.indices is not None:
                    self.order_problem(scan.indices, expected, path.name)
                if scan.records is not None:
                    self.open_all(expected, scan.records)
                # fold the subtrees, checking the root at every checkpoint size on the way
                groups = iter(scan.groups)
                while at < len(upcoming) and upcoming[at].size <= expected + count:
                    cp = upcoming[at]
                    tree.add(next(groups))
                    self.check_root(tree, cp, self.verified_to)
                    self.verified_to = cp.size
                    at += 1
                tree.add(next(groups))
                expected += count
                if self.progress is not None:
                    self.progress(f"segment {path.name}: {expected:,} entries")
                bad = scan.bad
                if bad is not None:
                    if is_last and bad.torn_tail and expected >= max_cp:
                        report.warnings.append(
                            f"segment {path.name}: the last frame (entry {expected}, "
                            f"offset {bad.offset}) is incomplete: {bad.problem}; it was never "
                            "acknowledged (an interrupted append), and opening the log for writing cuts it"
                        )
                    else:
                        raise _fail(
                            "FRAME_CORRUPT",
                            f"entry {expected} (segment {path.name}, offset {bad.offset}) is damaged: "
                            f"{bad.problem}",
                            entry=expected,
                        )
        report.entries = expected
        report.root = tree.root()
        if at < len(upcoming):
            cp = upcoming[-1]
            raise _fail(
                "TRUNCATED",
                f"the log has {expected:,} entries but checkpoint {cp.name} covers {cp.size:,}: entries "
                f"{expected} to {cp.size - 1} were removed (truncated or rolled back)",
                entry=expected,
                checkpoint=cp.name,
            )
        self.tail_check(self.verified_to, expected)

    def order_problem(self, indices: list[int], expected: int, segment: str) -> None:
        for pos, idx in enumerate(indices):
            want = expected + pos
            if idx == want:
                continue
            if idx < want:  # an entry seen before comes again
                raise _fail(
                    "ENTRY_ORDER",
                    f"entry {idx} appears again (duplicated or moved back) at the place of entry {want} "
                    f"in segment {segment}",
                    entry=want,
                )
            following = indices[pos + 1] if pos + 1 < len(indices) else None
            if following != want and want in indices[pos + 1 :]:  # present, further on
                raise _fail(
                    "ENTRY_ORDER",
                    f"entry {want} is out of order (moved or swapped): segment {segment} has entry {idx} "
                    "at its place",
                    entry=want,
                )
            if following == want:
                raise _fail(
                    "ENTRY_ORDER",
                    f"entries {want} and {idx} are out of order (swapped) in segment {segment}",
                    entry=want,
                )
            if idx > want:
                raise _fail(
                    "ENTRY_MISSING",
                    f"entry {want} is missing (deleted): in segment {segment} entry {want - 1} is "
                    f"followed by entry {idx}"
                    if want
                    else f"entry 0 is missing: segment {segment} starts with entry {idx}",
                    entry=want,
                )
            raise _fail(
                "ENTRY_ORDER",
                f"entry {want} is out of order: segment {segment} has entry {idx} at its place (duplicated "
                "or reordered)",
                entry=want,
            )

    def check_root(self, tree: _Tree, cp: _Checkpoint, verified_to: int) -> None:
        root = tree.root()
        if hmac.compare_digest(root, cp.root):
            self.report.checkpoints += 1
            return
        if cp.size == 0:  # no entry is involved: the tree hash itself differs
            raise _fail(
                "ROOT_MISMATCH",
                f"the empty tree's root under this log's hash ({self.reader.suite.name} suite) is "
                f"{_b64(root)}, checkpoint {cp.name} says {_b64(cp.root)}: log.json's suite does not "
                "match the log's checkpoints (log.json was changed, or the checkpoints are another log's)",
                checkpoint=cp.name,
            )
        culprit = self.localize(verified_to, cp.size)
        where = f"entries {verified_to} to {cp.size - 1}"
        if culprit is not None:
            entry, how = culprit
            raise _fail(
                "ROOT_MISMATCH",
                f"entry {entry} was changed ({how}): the log's root at tree size {cp.size} is "
                f"{_b64(root)}, checkpoint {cp.name} says {_b64(cp.root)}",
                entry=entry,
                checkpoint=cp.name,
            )
        raise _fail(
            "ROOT_MISMATCH",
            f"the log's root at tree size {cp.size} is {_b64(root)}, checkpoint {cp.name} says "
            f"{_b64(cp.root)}: one of {where} was changed, or the log was forked or rolled back "
            + (
                "(neither the index nor the entries' AEAD single one out)"
                if self.keyring is not None
                else "(the index cannot name the entry; --auditor-key can)"
            ),
            checkpoint=cp.name,
        )

    def localize(self, start: int, stop: int) -> tuple[int, str] | None:
        """The first entry in [start, stop) whose leaf differs from the indexed one, or (with the
        auditor key) that does not open."""
        index = self.open_index()
        try:
            indexed = index.leaves(start, stop) if index is not None else []
        except IndexDamaged:  # the root mismatch stands; a damaged index cannot name the entry
            indexed = []
        for frame in self.reader.frames(start):
            if frame.index >= stop:
                break
            offset = frame.index - start
            if offset < len(indexed) and not hmac.compare_digest(
                indexed[offset], self.reader.leaf_hash(frame.sealed)
            ):
                return frame.index, "its leaf hash is not the one indexed when it was written"
            if self.keyring is not None:
                try:
                    open_sealed(
                        frame.sealed,
                        keyring_or_dek=self.keyring,
                        log_id=self.reader.log_id,
                        index=frame.index,
                        suite=self.reader.suite,
                    )
                except (KeyShredded, UnknownKeyId):
                    continue
                except SealError:
                    return frame.index, "it does not open with its data key (AEAD)"
        return None

    def open_index(self) -> AuditIndex | None:
        if self.index is None:
            self.index = self.reader.index()
        return self.index

    def note_indexed_size(self) -> None:
        """Read the index's size before the scan (and close it again: the scan may fork). With the
        auditor key, the rows of the index are summed in the same read (:mod:`audit.index_check`),
        and entries below that size are compared."""
        check = self.index_check
        if check is not None:
            self.indexed_before = check.open(self.progress)
            if self.indexed_before is not None:
                return
            self.report.index_note = check.note
            self.index_check = None
        index = self.reader.index()
        if index is not None:
            try:
                self.indexed_before = index.size
            finally:
                index.close()

    def tail_check(self, verified_to: int, size: int) -> None:
        """Entries after the last checkpoint are compared with the leaves indexed when they were
        written; an index larger than the log means entries were removed."""
        index = self.open_index()
        if index is None:
            if verified_to < size:
                self.report.warnings.append(
                    f"entries {verified_to} to {size - 1} are after the last checkpoint and there is no "
                    "index to compare them with"
                )
            return
        # every entry indexed before the scan was durable then, so the scan saw it unless it
        # was removed; entries indexed during the scan may be newer than what it saw
        indexed_size = index.size if self.indexed_before is None else self.indexed_before
        if indexed_size > size:
            raise _fail(
                "TRUNCATED",
                f"the index records {indexed_size:,} entries, the log has only {size:,}: entries {size} to "
                f"{indexed_size - 1} were removed",
                entry=size,
            )
        if verified_to >= size:
            return
        indexed = index.leaves(verified_to, size)
        for frame in self.reader.frames(verified_to):
            offset = frame.index - verified_to
            if offset >= len(indexed):
                break
            if not hmac.compare_digest(indexed[offset], self.reader.leaf_hash(frame.sealed)):
                raise _fail(
                    "ENTRY_CHANGED",
                    f"entry {frame.index} was changed: its leaf hash is not the one indexed when it was "
                    "written (it is after the last checkpoint)",
                    entry=frame.index,
                )

    def compare_index(self) -> None:
        """With the auditor key, once the log verified: the index's rows against the entries'."""
        check = self.index_check
        if check is None or check.size is None:
            return
        if self.progress is not None:
            self.progress("index: comparing")
        reader = self.reader

        def frames(start: int) -> Iterator[tuple[int, bytes]]:
            return ((frame.index, frame.terms) for frame in reader.frames(start))

        try:
            mismatch = check.finish(frames)
        except ReadError as exc:  # the log changed since the scan (a bucket is read again)
            raise _fail(
                "INDEX_MISMATCH",
                f"the index differs from the log, but the log cannot be read again to say where ({exc})",
            ) from None
        self.report.index_compared = True
        self.report.index_entries = check.size
        if mismatch is not None:
            raise _fail(
                "INDEX_MISMATCH",
                f"entry {mismatch.entry}: {mismatch.what}; run dsgw audit reindex",
                entry=mismatch.entry,
            )

    # -- contents ---------------------------------------------------------------------------------

    def open_all(self, first: int, records: list[bytes]) -> None:
        keyring, terms = self.keyring, self.terms
        assert keyring is not None and terms is not None
        reader = self.reader
        check = self.index_check
        log_digest = check.log if check is not None else None
        limit = (check.size or 0) if check is not None else 0
        for offset, record in enumerate(records):
            index = first + offset
            sealed = sealed_of(record)
            try:
                payload = open_sealed(
                    sealed, keyring_or_dek=keyring, log_id=reader.log_id, index=index, suite=reader.suite
                )
            except KeyShredded:
                self.report.shredded += 1
                if log_digest is not None and index < limit:
                    # its content is gone: the index is compared with the terms kept in its frame
                    try:
                        log_digest.add_section(index, record[: len(record) - len(sealed)])
                    except RecordError as exc:
                        raise _fail(
                            "ENTRY_TERMS",
                            f"entry {index} (shredded): its stored search terms are malformed ({exc})",
                            entry=index,
                        ) from None
                continue
            except UnknownKeyId:
                raise _fail(
                    "ENTRY_KEY",
                    f"entry {index}: its data key is not in the keyring (removed without a tombstone?)",
                    entry=index,
                ) from None
            except SealError as exc:
                raise _fail(
                    "ENTRY_TAMPERED", f"entry {index} does not open: {exc.detail}", entry=index
                ) from None
            try:
                message = decode_proto(payload)
                encoded = terms.encode(message)
            except InvalidEntry as exc:
                raise _fail(
                    "ENTRY_INVALID", f"entry {index} is not a valid entry: {exc}", entry=index
                ) from None
            if encoded[0] != record[: len(record) - len(sealed)]:
                raise _fail(
                    "ENTRY_TERMS",
                    f"entry {index}: its stored search terms are not those of its content",
                    entry=index,
                )
            if log_digest is not None and index < limit:
                log_digest.add(index, encoded[1], encoded[2])
            self.report.opened += 1


def verify_log(
    reader: LogReader,
    *,
    keys: Sequence[str] | None = None,
    checkpoints: Sequence[tuple[str, bytes]] = (),
    auditor: KeyProvider | None = None,
    progress: Callable[[str], None] | None = None,
    jobs: int | None = None,
) -> VerifyReport:
    """Verify the log behind ``reader`` (see the module docstring).

    ``keys``: the trusted checkpoint verifier keys (vkey strings; default: the one in
    ``log.json``). ``checkpoints``: (name, signed note) pairs the auditor kept. ``auditor``: a key
    provider holding the auditor's PRIVATE key, to open and check every entry. ``jobs``: processes
    scanning segments (default :func:`default_jobs`: every CPU for a large log); segments are
    scanned in this process with the auditor key (decryption runs here) or when other threads
    run (workers are forked). Raises
    :class:`VerifyUsageError` for a malformed key; every finding is in the report.
    """
    started = time.perf_counter()
    verifiers: list[Verifier] = []
    key_problem: Problem | None = None
    if keys:
        for vkey in keys:
            try:
                verifiers.append(Verifier.from_vkey(vkey))
            except KeyFormatError as exc:
                raise VerifyUsageError(f"--key is not a verifier key: {exc}") from None
        if reader.meta.verifier not in verifiers:
            key_problem = Problem(
                "LOG_KEY_MISMATCH",
                f"log.json names the verifier key {reader.meta.vkey}, which is not the trusted key given: "
                "log.json was replaced, or this is another log",
            )
    else:
        verifiers.append(reader.meta.verifier)
    work = _Verifier(reader, verifiers, checkpoints, auditor, progress, jobs)
    report = work.report
    try:
        if key_problem is not None:
            raise _Found(key_problem)
        found = work.load_checkpoints()
        work.note_indexed_size()
        work.scan(found)
        if not work.stored:
            # init_log signs the checkpoint of the empty tree before the log exists: a log without
            # any has lost them, and with them what its entries are verified against (checked
            # after the scan, which names a problem a checkpoint the auditor kept finds first)
            raise _fail(
                "CHECKPOINT_MISSING",
                "the log has no checkpoint: checkpoints/ holds none, not even the signed checkpoint of "
                "the empty tree every log is created with (they were removed)",
                checkpoint="checkpoints/",
            )
        work.compare_index()
    except _Found as found_problem:
        report.problem = found_problem.problem
    except IndexDamaged as exc:  # what it holds after the last checkpoint cannot be compared
        report.problem = Problem("INDEX_DAMAGED", str(exc))
    finally:
        if work.index is not None:
            work.index.close()
    report.seconds = time.perf_counter() - started
    return report


def read_checkpoint_file(path: str | Path) -> tuple[str, bytes]:
    """(name, bytes) of a checkpoint file given by an auditor; :class:`VerifyUsageError` if it
    cannot be read."""
    try:
        return str(path), Path(path).read_bytes()
    except OSError as exc:
        raise VerifyUsageError(f"cannot read the checkpoint {path}: {exc.strerror}") from None
