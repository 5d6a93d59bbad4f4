"""The index follower: keeps a log's SQLite index up to date by tailing its segments.

The index (:mod:`audit.index`) is derived from the frames (their terms sections and sealed
entries), so it is built by a follower that reads the segments, never by the append path: the
writer only tells the follower how many entries are durable, and the follower indexes up to
there, in transactions gathering about a second of appends. By default the follower is a child
process (``python -m audit.follower <log dir>``), so that indexing runs on another core than the
writer's (Python threads share one interpreter lock); it can also run as a thread of the
writer's process (``index="thread"``: tests, tools).

Protocol of the child process: the writer writes lines ``<durable size>`` (``F<size>`` when it
waits for the index: index now; ``Q`` to stop) on its stdin; after each transaction the child
prints the indexed size on stdout. It exits at ``Q`` or end of input. The child runs at a lower
CPU priority (nice 10) and gathers about ``interval`` seconds (default 1 s) of appends per
transaction: each transaction rewrites at most the pages of the newest postings partition, so
larger transactions write fewer bytes per entry and disturb the writer's fdatasync less. A
follower that fails stops; the writer logs it and keeps appending (the index catches up at the
next open).

:func:`rebuild_index` recreates a log's index from its segments alone (no key needed).
"""

from __future__ import annotations

import contextlib
import os
import select
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from audit.errors import AuditError
from audit.index import AuditIndex, IndexedFrame, IndexError_, remove_index, replace_index
from audit.layout import LogMeta, LogPaths, take_writer_lock
from audit.merkle import LEAF_PREFIX, NODE_PREFIX, TILE_LEVEL, TILE_WIDTH, CompactRange
from audit.record import RecordError, split_section
from audit.segment import FRAME_OVERHEAD, HEADER_SIZE, check_header, parse_frames, segment_name
from audit.suites import HashFn, get_suite

__all__ = ["FollowerError", "IndexFollower", "ProcessFollower", "ThreadFollower", "main", "rebuild_index"]

_log = structlog.get_logger("audit.follower")


def _event(level: str, event: str, **fields: object) -> None:
    """Log best-effort: a logging failure (a closed stream, a broken handler) never breaks the
    audit path."""
    with contextlib.suppress(Exception):
        getattr(_log, level)(event, **fields)


_CHUNK = 50_000
REBUILD_SUFFIX = ".rebuild"
"""The index is rebuilt aside, in ``index.sqlite.rebuild``, then moved into place."""


class FollowerError(AuditError):
    """The segments cannot be indexed (a frame the writer acknowledged is missing or damaged)."""

    reason = "FOLLOWER"


class IndexFollower:
    """Indexes the frames of one log directory, resuming where its index stops."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        meta: LogMeta | None = None,
        index_path: Path | None = None,
    ) -> None:
        """``index_path``: the index file to fill (default the log's own, ``index.sqlite``)."""
        self.paths = LogPaths(Path(directory))
        self.meta = meta or LogMeta.load(self.paths.root)
        self._hash: HashFn = get_suite(self.meta.suite).hash_fn
        path = self.paths.index if index_path is None else index_path
        try:
            self.index = AuditIndex.open(path, log_id=self.meta.log_id)
        except IndexError_:
            remove_index(path)
            self.index = AuditIndex.open(path, log_id=self.meta.log_id)
        self._fd = -1
        self._load_state()

    def _load_state(self) -> None:
        """Resume from what the index holds."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        state = self.index.state()
        self.size = state.size
        self._peaks = list(CompactRange.from_peaks(state.size, state.peaks, self._hash).peaks)
        if state.segments:
            self._segment = max(state.segments)
            self._offset = state.segments[self._segment]
        else:
            self._segment = 0
            self._offset = -1  # the header is not checked yet

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.index.close()

    def _open_segment(self) -> bool:
        path = self.paths.segments / segment_name(self._segment)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        if self._offset < 0:
            problem = check_header(os.pread(fd, HEADER_SIZE, 0), self._segment)
            if problem is not None:
                os.close(fd)
                raise FollowerError(f"segment {path.name}: {problem}")
            self._offset = HEADER_SIZE
        self._fd = fd
        return True

    def advance(self, target: int | None = None) -> int:
        """Index entries up to ``target`` (exclusive; ``None``: every good frame on disk) and
        return the indexed size."""
        while target is None or self.size < target:
            if self._fd < 0 and not self._open_segment():
                if target is not None:
                    raise FollowerError(f"entry {self.size} is durable but its segment is missing")
                break
            available = os.fstat(self._fd).st_size - self._offset
            data = os.pread(self._fd, max(available, 0), self._offset) if available > 0 else b""
            limit = None if target is None else min(target - self.size, _CHUNK)
            parsed = parse_frames(data, 0, self.size, limit if limit is not None else _CHUNK)
            if parsed.indices:
                try:
                    self._index(parsed.indices, parsed.offsets, parsed.records)
                except sqlite3.IntegrityError:
                    # another follower (of a writer that crashed) indexed these meanwhile
                    self._load_state()
                    continue
                self._offset += parsed.end
                continue
            # nothing more in this segment: the next one starts at the next index
            next_path = self.paths.segments / segment_name(self.size)
            if self.size == self._segment or not next_path.exists():
                if target is not None:
                    problem = parsed.bad.problem if parsed.bad else "the frame is not written"
                    raise FollowerError(f"entry {self.size} is durable but cannot be read: {problem}")
                break
            os.close(self._fd)
            self._fd = -1
            self._segment = self.size
            self._offset = -1
        return self.size

    def _index(self, indices: Sequence[int], offsets: Sequence[int], records: Sequence[bytes]) -> None:
        rows: list[IndexedFrame] = []
        add = rows.append
        hash_fn = self._hash
        peaks = self._peaks
        node, leaf_prefix = NODE_PREFIX, LEAF_PREFIX
        tiles: list[tuple[int, bytes]] = []
        tile_mask = TILE_WIDTH - 1
        expected = self.size
        base = self._offset
        for idx, off, record in zip(indices, offsets, records, strict=True):
            if idx != expected:
                raise FollowerError(
                    f"segment {segment_name(self._segment)}: entry {expected} is missing or out of "
                    f"order (entry {idx} is at its place)"
                )
            split = 7 + 17 * record[6]  # the terms section is self-delimiting (audit.record)
            leaf = hash_fn(leaf_prefix + record[split:])
            digest, carry = leaf, expected
            if (expected + 1) & tile_mask:
                while carry & 1:  # CompactRange.append, inlined
                    digest = hash_fn(node + peaks.pop() + digest)
                    carry >>= 1
            else:  # this leaf completes a 256-leaf tile: its hash is the 8th merge's
                level = 0
                while carry & 1:
                    digest = hash_fn(node + peaks.pop() + digest)
                    carry >>= 1
                    level += 1
                    if level == TILE_LEVEL:
                        tiles.append((expected >> TILE_LEVEL, digest))
            peaks.append(digest)
            try:
                key, postings = split_section(record[:split])
            except RecordError as exc:
                raise FollowerError(f"entry {idx}: {exc}") from None
            add((idx, base + off, leaf, key, postings))
            expected += 1
        end = base + offsets[-1] + FRAME_OVERHEAD + len(records[-1])
        self.index.add(rows, size=expected, peaks=peaks, segment_ends={self._segment: end}, tiles=tiles)
        self.size = expected


def rebuild_index(
    directory: str | os.PathLike[str], *, check: Callable[[AuditIndex], None] | None = None
) -> int:
    """Recreate the index of the log in ``directory`` from its segments; returns the number of
    entries indexed. The new index is built aside (``index.sqlite.rebuild``), given to ``check``
    (which raises to refuse it) and only then put in the place of the old one, atomically: a
    refused or failed rebuild leaves the old index as it was (it may be the only record of an
    entry changed since). Holds the writer lock meanwhile: :class:`~audit.layout.LogLocked` if
    the log is open for writing; :class:`FollowerError` if a segment's frames are out of order."""
    paths = LogPaths(Path(directory))
    meta = LogMeta.load(paths.root)
    if paths.index.is_dir():  # os.replace would fail at the end, naming the file built aside
        raise IndexError_(f"{paths.index} is a directory, not an index file: remove it and reindex again")
    lock = take_writer_lock(paths.lock, paths.root)
    built = paths.index.with_name(paths.index.name + REBUILD_SUFFIX)
    try:
        remove_index(built)  # left by a rebuild that crashed
        try:
            follower = IndexFollower(paths.root, meta=meta, index_path=built)
            try:
                entries = follower.advance(None)
                if check is not None:
                    check(follower.index)
                follower.index.standalone()
            finally:
                follower.close()
            replace_index(built, paths.index)
        except BaseException:
            remove_index(built)
            raise
        return entries
    finally:
        os.close(lock)


# --- running a follower next to a writer ------------------------------------------------------


class _Handle:
    """What a writer holds: tell the durable size, wait for the index, stop."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.indexed = 0
        self.alive = True

    def _set_indexed(self, size: int) -> None:
        with self._cond:
            self.indexed = max(self.indexed, size)
            self._cond.notify_all()

    def _dead(self, why: str) -> None:
        with self._cond:
            if self.alive:
                _event(
                    "warning",
                    "audit.index.follower_stopped",
                    reason=why,
                    note="the index catches up at the next open",
                )
            self.alive = False
            self._cond.notify_all()

    def notify(self, size: int) -> None:
        raise NotImplementedError

    def wait(self, size: int, timeout: float | None) -> bool:
        """Whether the index reached ``size`` within ``timeout`` seconds."""
        self.notify(size)
        with self._cond:
            return self._cond.wait_for(lambda: self.indexed >= size or not self.alive, timeout) and (
                self.indexed >= size
            )

    def close(self) -> None:
        raise NotImplementedError


class ThreadFollower(_Handle):
    """A follower running as a thread of the writer's process."""

    def __init__(self, directory: Path, meta: LogMeta, *, interval: float = 0.05) -> None:
        super().__init__()
        self._follower = IndexFollower(directory, meta=meta)
        self.indexed = self._follower.size
        self._target = self.indexed
        self._stop = False
        self._urgent = False
        self._interval = interval
        self._thread = threading.Thread(target=self._run, name="audit-index-follower", daemon=True)
        self._thread.start()

    def notify(self, size: int) -> None:
        with self._cond:
            if size > self._target:
                self._target = size
                self._cond.notify_all()

    def wait(self, size: int, timeout: float | None) -> bool:
        with self._cond:
            self._urgent = True
        return super().wait(size, timeout)

    def _run(self) -> None:
        last = 0.0
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._target > self.indexed or self._stop)
                    delay = last + self._interval - time.monotonic()
                    if delay > 0 and not self._stop and not self._urgent:
                        self._cond.wait_for(lambda: self._stop or self._urgent, delay)
                    self._urgent = False
                    target, stop = self._target, self._stop
                last = time.monotonic()
                if target > self.indexed:
                    self._set_indexed(self._follower.advance(target))
                if stop:
                    return
        except Exception as exc:
            self._dead(f"{type(exc).__name__}: {exc}")
        finally:
            self._follower.close()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join()


class ProcessFollower(_Handle):
    """A follower running as a child process (``python -m audit.follower <dir>``)."""

    def __init__(self, directory: Path, indexed: int, *, interval: float = 1.0) -> None:
        super().__init__()
        self.indexed = indexed
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "audit.follower", str(directory), "--interval", repr(interval)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._in = self._proc.stdin.fileno()
        os.set_blocking(self._in, False)
        self._write_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="audit-index-follower-reader", daemon=True)
        self._reader.start()

    def _send(self, line: bytes, *, block: bool) -> None:
        with self._write_lock:
            view = memoryview(line)
            while view:
                try:
                    view = view[os.write(self._in, view) :]
                except BlockingIOError:
                    if not block:
                        return  # the next size supersedes this one
                    select.select([], [self._in], [], 1.0)
                except OSError:
                    self._dead("its input pipe is closed")
                    return

    def notify(self, size: int) -> None:
        if self.alive:
            self._send(b"%d\n" % size, block=False)

    def wait(self, size: int, timeout: float | None) -> bool:
        if self.alive:
            self._send(b"F%d\n" % size, block=True)
        with self._cond:
            return self._cond.wait_for(lambda: self.indexed >= size or not self.alive, timeout) and (
                self.indexed >= size
            )

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            with contextlib.suppress(ValueError):
                self._set_indexed(int(line))
        code = self._proc.wait()
        if code != 0:
            self._dead(f"the follower process exited with status {code}")
        else:
            with self._cond:
                self.alive = False
                self._cond.notify_all()

    def close(self) -> None:
        if self.alive:
            self._send(b"Q\n", block=True)
        with contextlib.suppress(OSError):
            assert self._proc.stdin is not None
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # pragma: no cover - stuck follower
            self._proc.kill()
            self._proc.wait()
        self._reader.join()


def _serve(directory: str, interval: float) -> int:
    with contextlib.suppress(OSError):
        os.nice(10)  # background work: the writer's threads come first on a busy machine
    follower = IndexFollower(directory)
    out = sys.stdout.buffer
    stdin = sys.stdin.buffer.fileno()
    out.write(b"%d\n" % follower.size)
    out.flush()
    pending = b""
    target = follower.size
    last = 0.0
    quit_ = False
    urgent = False
    try:
        while not quit_:
            ready, _, _ = select.select(
                [stdin],
                [],
                [],
                None if target <= follower.size else max(0.0, last + interval - time.monotonic()),
            )
            if ready:
                chunk = os.read(stdin, 65536)
                if not chunk:
                    quit_ = True
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    line = line.strip()
                    if line == b"Q":
                        quit_ = True
                    elif line.startswith(b"F"):
                        urgent = True
                        target = max(target, int(line[1:]))
                    elif line:
                        target = max(target, int(line))
                if not quit_ and not urgent and time.monotonic() < last + interval:
                    continue
            urgent = False
            if target > follower.size:
                follower.advance(target)
                last = time.monotonic()
                out.write(b"%d\n" % follower.size)
                out.flush()
    except Exception as exc:
        _event("error", "audit.index.follower_failed", error=f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        follower.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m audit.follower <log dir> [--interval SECONDS]``: the child-process follower."""
    args = list(sys.argv[1:] if argv is None else argv)
    interval = 1.0
    if len(args) == 3 and args[1] == "--interval":
        interval = float(args[2])
        args = args[:1]
    if len(args) != 1:
        print("usage: python -m audit.follower <log dir> [--interval SECONDS]", file=sys.stderr)
        return 2
    from gateway import logs

    logs.configure()
    return _serve(args[0], interval)


if __name__ == "__main__":
    raise SystemExit(main())
