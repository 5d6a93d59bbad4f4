"""The audit log writer: durable group-committed appends, segments, checkpoints and crash recovery.

Usage (one writer process per log directory; it holds ``log.lock``)::

    log = AuditLog.open(directory, home=home)        # or keys=LogKeys(...)
    receipt = log.append(entry)                      # thread-safe; returns once on disk
    receipt = await log.append_async(entry)          # asyncio (the gRPC server)
    note = log.checkpoint_now()                      # a signed checkpoint of everything so far
    log.close()                                      # final checkpoint, index flushed

Durability. :meth:`AuditLog.append` returns a :class:`Receipt` (index and leaf hash) only once the
entry's frame is written and fdatasync'ed (a new segment file also fsyncs its directory). All the
appends waiting at a moment form one batch, committed by one committer thread with one write and
one fdatasync (group commit): many writers, one committer. The committer assigns indices and
seals in commit order (the AEAD associated data binds the index), then acknowledges the batch:
threads wake on a lock each, asyncio tasks through one ``call_soon_threadsafe`` per event loop per
batch. When the last commit showed more concurrent writers than are waiting, the committer waits
up to ``gather_delay`` (0.5 ms) for them, so that one fdatasync serves them all; when appends come
one at a time from an open stream (a server's calls) so often that more are due within
``commit_delay`` (off by default; the gateway sets 2 ms), it gathers them for up to that long
(:func:`stream_target`). The committer
seals (one random read for the batch's nonces), frames and writes; when no earlier batch is
waiting for or in fdatasync it also fdatasyncs, acknowledges and folds the leaves into the tree
itself (one thread hand-off less per commit), else it hands the batch to a syncer thread, which
does the same in order. The syncer asks for the due checkpoints. A second thread
writes the due checkpoints; the index is built by a follower (:mod:`audit.follower`, a child
process by default) that tails the segments up to the durable size the writer announces.

Failure. If the log cannot be written (ENOSPC, EACCES, EIO, ...) the append raises
:class:`AuditUnavailable`, the log truncates the failed batch away (best effort) and refuses
every later append until it is reopened: callers fail closed (no entry, no answer).

Recovery (:mod:`audit.recovery`). On open, the log resumes from its index (tree size,
compact-range peaks, indexed length of each segment) and scans the frames after it. A torn last
frame (cut short, or a bad CRC, with no good frame after it) is cut off with a warning; it was
never acknowledged. A bad frame anywhere else, an index gap, a segment missing, or a log shorter
than its latest checkpoint, is tampering or corruption: :class:`LogCorrupt`, telling to run
``dsgw audit verify``. A frame is acknowledged only after fdatasync and checkpointed only after
that, so a torn tail can never be inside a checkpoint. If the index is missing, of another log or
inconsistent with the segments, it is rebuilt from the segments (no key is needed:
:mod:`audit.record`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import os
import struct
import threading
import time
import zlib
from _thread import allocate_lock as _allocate_lock
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from audit.blind_index import BlindIndexer
from audit.checkpoint import SCHEME_SM2
from audit.checkpoints import CheckpointPolicy, CheckpointStore, make_checkpoint
from audit.entry import AuditEntry, InvalidEntry
from audit.errors import AuditError
from audit.follower import ProcessFollower, ThreadFollower
from audit.keys import Keyring
from audit.layout import (
    DEFAULT_SEGMENT_BYTES,
    SUITE_SCHEMES,
    HomeKeys,
    LogKeys,
    LogLayoutError,
    LogLocked,
    LogMeta,
    LogPaths,
    check_keys,
    fsync_dir,
    new_log_id,
    now_iso,
    take_writer_lock,
)
from audit.merkle import LEAF_PREFIX, NODE_PREFIX, CompactRange, empty_root
from audit.record import Encoded, TermEncoder
from audit.recovery import LogCorrupt, recover
from audit.seal import Sealer
from audit.segment import (
    FRAME_HEAD,
    HEADER_SIZE,
    MAX_RECORD,
    segment_header,
    segment_name,
)
from audit.suites import get_suite
from dsgw.v1 import audit_pb2

__all__ = [
    "AuditLog",
    "AuditUnavailable",
    "LogCorrupt",
    "LogLocked",
    "Receipt",
    "init_log",
]

_log = structlog.get_logger("audit.log")


def _event(level: str, event: str, **fields: object) -> None:
    """Log best-effort: a logging failure (a closed stream, a broken handler) never breaks the
    audit path."""
    with contextlib.suppress(Exception):
        getattr(_log, level)(event, **fields)


_CRC = zlib.crc32
_CRC_PACK = struct.Struct(">I").pack
_PROTO = audit_pb2.AuditEntry
_FOLLOWER_NOTIFY_EVERY = 0.02
"""Seconds between two durable-size announcements to the index follower (it indexes in
transactions of about ``index_interval``; :meth:`AuditLog.flush_index` announces the exact size)."""


def stream_target(rate: float, delay: float, cap: int) -> int | None:
    """How many appends a commit of a stream arriving at ``rate`` per second waits for (at most
    ``delay`` seconds), or None when not even one more is expected within ``delay``: twice the
    expected number, so that the wait usually ends at ``delay`` and the committer is not woken
    for each append (each wake-up costs the appenders the interpreter lock)."""
    expected = rate * delay
    if delay <= 0 or expected < 1:
        return None
    return min(max(2, int(2 * expected)), cap)


# group commit: a last commit with this many entries or more (with those queued) is a crowd
# (gather_delay), fewer with nothing else in flight a stream (commit_delay); the committer
# measures the append rate over windows of _RATE_WINDOW seconds
_CROWD = 8
_RATE_WINDOW = 0.05
_RATE_MEMORY = 0.1  # seconds: the rate estimate forgets with this time constant
_PROBE_EVERY = 25  # commit delays: how often a stream whose waits gathered nothing is tried again


class AuditUnavailable(AuditError):
    """The log cannot take the entry: a write failed (disk full, permissions, I/O error), or the
    log failed earlier or is closed. Nothing was acknowledged; the caller must fail closed."""

    reason = "AUDIT_UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class Receipt:
    """An acknowledged entry: its index in the log and its Merkle leaf hash."""

    index: int
    leaf_hash: bytes


class _Batch:
    """Appends committed together: payloads and terms sections in order, the asyncio futures
    waiting (with their position), and after the commit the first index and leaf hashes."""

    __slots__ = ("done", "error", "first", "futures", "leaves", "locks", "payloads", "terms")

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.terms: list[Encoded] = []
        self.futures: list[tuple[int, asyncio.Future[Receipt]]] = []
        self.locks: list[Any] = []  # one held lock per waiting thread: released on commit
        self.done = False
        self.first = -1
        self.leaves: list[bytes] = []
        self.error: AuditError | None = None

    def waiter(self) -> Any:
        """A held lock that :meth:`finish` releases (call with the log's lock held)."""
        lock = _allocate_lock()
        lock.acquire()
        self.locks.append(lock)
        return lock

    def finish(self) -> None:
        self.done = True
        for lock in self.locks:
            lock.release()
        if not self.futures:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[int, asyncio.Future[Receipt]]]] = {}
        for item in self.futures:
            by_loop.setdefault(item[1].get_loop(), []).append(item)
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
                loop.call_soon_threadsafe(_settle, items, self.first, self.leaves, self.error)

    def fail(self, error: AuditError) -> None:
        self.error = error
        self.finish()

    def receipt(self, pos: int) -> Receipt:
        error = self.error
        if error is not None:
            raise _fresh(error)
        return Receipt(self.first + pos, self.leaves[pos])


def _fresh(error: AuditError) -> AuditError:
    """A new exception of the same type and message (one instance must not be raised in many
    threads at once: tracebacks would pile up on it)."""
    clone = type(error).__new__(type(error))
    clone.args = error.args
    clone.__cause__ = error.__cause__
    return clone


def _settle(
    items: list[tuple[int, asyncio.Future[Receipt]]],
    first: int,
    leaves: list[bytes],
    error: AuditError | None,
) -> None:
    if error is not None:
        for _, future in items:
            if not future.done():
                future.set_exception(_fresh(error))
        return
    for pos, future in items:
        if not future.done():  # a cancelled caller
            future.set_result(Receipt(first + pos, leaves[pos]))


@dataclass(slots=True)
class _Written:
    """A batch written and waiting for fdatasync (``batch`` None: a segment to close after)."""

    batch: _Batch | None
    fd: int
    base: int


@dataclass(slots=True)
class _CheckpointTask:
    size: int
    root: bytes
    ticket: int


# --- creating a log ---------------------------------------------------------------------------


def init_log(
    directory: str | os.PathLike[str],
    keys: LogKeys,
    *,
    node: str,
    suite: str = "default",
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
) -> LogMeta:
    """Create a new, empty log in ``directory`` (which must be absent or empty): metadata, keyring
    (with the blind-index key wrapped for the auditors), directories and the signed checkpoint of
    the empty tree. ``log.json`` is written last: a directory without it is not a log.

    The ``default`` suite signs checkpoints with ``keys.checkpoint_key`` (Ed25519), ``gm`` with
    ``keys.sm2_checkpoint_key`` (SM2), which is made in the home the keys were loaded from
    (``checkpoint-sm2.key``) when it does not exist yet."""
    root = Path(directory)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise LogLayoutError(f"{root} exists and is not an empty directory")
    the_suite = get_suite(suite)
    scheme = SUITE_SCHEMES[the_suite.name]
    if scheme == SCHEME_SM2:
        keys = keys.with_sm2()
    log_id = new_log_id(node)
    keys.signer(log_id, scheme)  # the key exists (before anything is written)
    root.mkdir(parents=True, exist_ok=True)
    paths = LogPaths(root)
    keyring = Keyring.create(paths.keyring, keys.provider, log_id=log_id)
    keyring.set_blind_index_key(keys.blind_index_key)
    paths.segments.mkdir()
    paths.checkpoints.mkdir()
    signer = keys.signer(log_id, scheme)
    CheckpointStore(paths.checkpoints).write(
        0, make_checkpoint(signer, log_id, 0, empty_root(the_suite.hash_fn))
    )
    from audit.keys import blind_index_key_id

    meta = LogMeta(
        log_id=log_id,
        node=node,
        suite=the_suite.name,
        vkey=signer.verifier().vkey(),
        kek_id=keys.provider.kek_id,
        blind_index_key_id=blind_index_key_id(keys.blind_index_key).hex(),
        created=now_iso(),
        segment_bytes=segment_bytes,
    )
    meta.save(root)
    fsync_dir(root)
    if root.parent != root:
        fsync_dir(root.parent)
    return meta


# --- the writer -------------------------------------------------------------------------------


class AuditLog:
    """The writer of one log directory (see the module docstring). Thread-safe; also usable from
    asyncio through :meth:`append_async`. Use :meth:`open`; close with :meth:`close` (or ``with``)."""

    def __init__(
        self,
        paths: LogPaths,
        meta: LogMeta,
        keys: LogKeys,
        *,
        policy: CheckpointPolicy,
        index: str,
        index_interval: float,
        max_batch: int,
        gather_delay: float,
        commit_delay: float,
        pipeline: bool,
    ) -> None:
        """Use :meth:`open`."""
        self._paths = paths
        self._meta = meta
        self._suite = get_suite(meta.suite)
        self._hash = self._suite.hash_fn
        self._signer = keys.for_meta(meta)
        self._policy = policy
        self._index_mode = index
        self._index_interval = index_interval
        self._max_batch = max_batch
        self._encoder = TermEncoder(BlindIndexer.for_suite(keys.blind_index_key, self._suite))
        self._encode_proto = self._encoder._encode_proto  # the proto fast path of encode
        self._store = CheckpointStore(paths.checkpoints)
        self._keyring: Keyring | None = None
        self._sealer: Sealer | None = None
        self._sealer_period = ""
        self._lock_fd = -1
        self._follower: ThreadFollower | ProcessFollower | None = None
        # the durable entries and their compact range (whichever thread holds _syncing)
        self._peaks: list[bytes] = []
        self._size = 0
        self._published: tuple[int, tuple[bytes, ...]] = (0, ())
        # the segment being appended to (committer thread, under _io_lock)
        self._seg_fd = -1
        self._seg_first = -1
        self._seg_end = 0
        # appends waiting (guarded by _cond)
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._idle = False  # the committer sleeps on _cond: the next append must notify it
        self._queue: deque[_Batch] = deque()
        self._failed: AuditError | None = None
        self._closing = False
        self._closed = False
        self._cp_asked = 0
        self._cp_sent = 0
        self._gather_delay = gather_delay
        self._commit_delay = commit_delay
        self._gather_target = 1
        self._rate = 0.0  # appends per second, measured by the committer (guarded by _cond)
        self._rate_at = time.monotonic()
        self._rate_count = 0
        self._joined = 0.5  # appends that joined a stream wait, on average (EWMA)
        self._probed_at = 0.0
        self._concurrency = 1
        self._pipeline = pipeline
        self._batch_cap = max_batch
        self._next = 0  # the index of the next entry written (committer thread)
        self._io_lock = threading.Lock()
        # written, waiting for fdatasync (guarded by _scond)
        self._scond = threading.Condition(threading.Lock())
        self._written: deque[_Written] = deque()
        self._syncing = False  # a thread is in _sync (the syncer, or the committer inline)
        self._notified_at = 0.0  # when the follower was last told the durable size
        self._writer_done = False
        self._in_flight = 0
        self._ewma_fsync = 0.0
        self._ewma_refill = 0.0
        self._last_ack = 0.0
        self._cp_size = 0
        self._cp_time = time.monotonic()
        # worker (guarded by _wcond)
        self._wcond = threading.Condition(threading.Lock())
        self._wqueue: deque[_CheckpointTask] = deque()
        self._wstop = False
        self._cp_done = 0
        self._latest_note: bytes | None = None
        self._committer: threading.Thread | None = None
        self._syncer: threading.Thread | None = None
        self._worker: threading.Thread | None = None

    # -- opening and closing ----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        keys: LogKeys | None = None,
        *,
        home: str | os.PathLike[str] | None = None,
        policy: CheckpointPolicy | None = None,
        index: str = "process",
        index_interval: float = 1.0,
        max_batch: int = 65536,
        gather_delay: float = 0.0005,
        commit_delay: float = 0.0,
        pipeline: bool = False,
        rebuild_index: bool = False,
    ) -> AuditLog:
        """Open the log in ``directory`` for appending, with ``keys`` or the key files of the
        gateway ``home``. Recovers from a crash (see the module docstring); raises
        :class:`LogLayoutError` (not a log, keys not this log's), :class:`LogLocked`,
        :class:`LogCorrupt`.

        ``policy``: when to checkpoint (default every 1000 entries or 10 s). ``index``:
        ``"process"`` (default: the index follower is a child process), ``"thread"``, or
        ``"none"`` (no indexing while open; it catches up at the next open with an index).
        ``index_interval``: seconds of appends the follower gathers per index transaction (the
        index lags the log by about that much; :meth:`flush_index` waits for it).
        ``gather_delay``: the longest a commit waits for expected concurrent writers (seconds).
        ``commit_delay``: for a server whose appends come one by one from independent calls
        (an open stream): when at least one more is due within it, the longest a commit waits
        for the next ones, ending early when they stop coming (seconds; default 0: commit each
        at once). Fewer, larger commits: fewer fdatasyncs and fewer wake-ups of the appenders,
        for at most this much added latency.
        ``pipeline``: when fdatasync is measured shorter than the time writers take to come
        back, cut batches at half the concurrency so that one half's fdatasync overlaps the other
        half's work (off by default: it did not pay on the development machine).
        ``rebuild_index``: drop the index first (the follower rebuilds it from the segments)."""
        if index not in ("process", "thread", "none"):
            raise ValueError(f"index must be 'process', 'thread' or 'none', not {index!r}")
        if keys is None:
            if home is None:
                raise LogLayoutError("opening a log for writing needs its keys (keys= or home=)")
            keys = HomeKeys(Path(home)).load()
        meta = LogMeta.load(directory)
        check_keys(meta, keys)
        paths = LogPaths(Path(directory))
        log = cls(
            paths,
            meta,
            keys,
            policy=policy or CheckpointPolicy(),
            index=index,
            index_interval=index_interval,
            max_batch=max_batch,
            gather_delay=gather_delay,
            commit_delay=commit_delay,
            pipeline=pipeline,
        )
        log._lock()
        try:
            log._keyring = Keyring.open(paths.keyring, keys.provider, log_id=meta.log_id)
            log._keyring.set_blind_index_key(keys.blind_index_key)
            log._recover(rebuild_index)
            log._start()
        except BaseException:
            log._release()
            raise
        return log

    def _lock(self) -> None:
        self._lock_fd = take_writer_lock(self._paths.lock, self._paths.root)

    def _release(self) -> None:
        if self._seg_fd >= 0:
            os.close(self._seg_fd)
            self._seg_fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = -1
        if self._keyring is not None:
            self._keyring.forget()

    def _start(self) -> None:
        try:
            if self._index_mode == "thread":
                self._follower = ThreadFollower(self._paths.root, self._meta, interval=self._index_interval)
            elif self._index_mode == "process":
                self._follower = ProcessFollower(self._paths.root, 0, interval=self._index_interval)
        except (OSError, AuditError) as exc:  # the index is derived: the log works without it
            _event("warning", "audit.index.follower_not_started", log_id=self.log_id, error=str(exc))
            self._follower = None
        if self._follower is not None:
            self._follower.notify(self._size)
        self._committer = threading.Thread(target=self._run_committer, name="audit-committer", daemon=True)
        self._syncer = threading.Thread(target=self._run_syncer, name="audit-syncer", daemon=True)
        self._worker = threading.Thread(target=self._run_worker, name="audit-checkpointer", daemon=True)
        self._worker.start()
        self._syncer.start()
        self._committer.start()

    def close(self) -> None:
        """Commit what is waiting, write a final checkpoint if anything is new, flush the index and
        release the log. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closing = True
            self._cond.notify_all()
        if self._committer is not None:
            self._committer.join()
        if self._syncer is not None:
            self._syncer.join()
        with self._wcond:
            self._wstop = True
            self._wcond.notify_all()
        if self._worker is not None:
            self._worker.join()
        if self._follower is not None:
            self._follower.notify(self._size)
            self._follower.close()
        self._release()
        self._closed = True

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- properties -------------------------------------------------------------------------------

    @property
    def meta(self) -> LogMeta:
        return self._meta

    @property
    def log_id(self) -> str:
        return self._meta.log_id

    @property
    def directory(self) -> Path:
        return self._paths.root

    @property
    def size(self) -> int:
        """Entries on disk (acknowledged or being acknowledged)."""
        return self._size

    @property
    def failed(self) -> AuditError | None:
        """The error that made the log refuse appends, if any."""
        return self._failed

    def root(self) -> tuple[int, bytes]:
        """(tree size, Merkle root) of the entries on disk, as of the last commit."""
        size, peaks = self._published
        return size, CompactRange.from_peaks(size, peaks, self._hash).root()

    @property
    def latest_checkpoint(self) -> bytes | None:
        return self._latest_note

    # -- appending --------------------------------------------------------------------------------

    def _prepare(self, entry: AuditEntry | audit_pb2.AuditEntry) -> tuple[bytes, Encoded]:
        if type(entry) is _PROTO:  # the server's fast path (the encoder's own, without its dispatch)
            message = entry
            terms = self._encode_proto(message)
        else:
            if isinstance(entry, audit_pb2.AuditEntry):
                message = entry
            elif isinstance(entry, AuditEntry):
                message = entry.to_proto()
            else:
                raise TypeError(
                    f"an audit entry is an AuditEntry or a dsgw.v1.AuditEntry, not {type(entry).__name__}"
                )
            terms = self._encoder.encode(message)
        payload = message.SerializeToString(deterministic=True)
        if len(payload) + len(terms[0]) + 64 > MAX_RECORD:
            raise InvalidEntry(f"the entry is too large ({len(payload)} bytes)")
        return payload, terms

    def _check_open(self) -> None:
        if self._failed is not None:
            raise _fresh(self._failed)
        if self._closing:
            raise AuditUnavailable("the audit log is closed")

    def _batch_for(self) -> _Batch:
        queue = self._queue
        if not queue or len(queue[-1].payloads) >= self._batch_cap:
            queue.append(_Batch())
        return queue[-1]

    def _enqueue(self, payload: bytes, terms: Encoded) -> tuple[_Batch, int]:
        """Add one prepared entry to the open batch (call with ``_mutex`` held); wake the
        committer if it sleeps and the batch is worth committing now. Returns (batch, position)."""
        if self._failed is not None or self._closing:
            self._check_open()
        queue = self._queue
        if queue:
            batch = queue[-1]
            pos = len(batch.payloads)
            if pos >= self._batch_cap:
                batch = _Batch()
                queue.append(batch)
                pos = 0
        else:
            batch = _Batch()
            queue.append(batch)
            pos = 0
        batch.payloads.append(payload)
        batch.terms.append(terms)
        if self._idle and pos + 1 >= self._gather_target:
            self._idle = False
            self._cond.notify()
        return batch, pos

    def append(self, entry: AuditEntry | audit_pb2.AuditEntry) -> Receipt:
        """Append one entry; returns once it is on disk. Raises :class:`AuditUnavailable` (fail
        closed) or :class:`~audit.entry.InvalidEntry`."""
        payload, terms = self._prepare(entry)
        with self._mutex:
            batch, pos = self._enqueue(payload, terms)
            waiter = batch.waiter()
        waiter.acquire()
        return batch.receipt(pos)

    async def append_async(self, entry: AuditEntry | audit_pb2.AuditEntry) -> Receipt:
        """Append one entry from asyncio; resolves once it is on disk (same errors as
        :meth:`append`). Never blocks the event loop on I/O."""
        payload, terms = self._prepare(entry)
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        with self._mutex:
            batch, pos = self._enqueue(payload, terms)
            batch.futures.append((pos, future))
        return await future

    def append_many(self, entries: Iterable[AuditEntry | audit_pb2.AuditEntry]) -> list[Receipt]:
        """Append entries in order, committed in as few batches as possible (bulk loading);
        returns their receipts once all are on disk."""
        prepared = [self._prepare(e) for e in entries]
        spans: list[tuple[_Batch, int, int, Any]] = []
        with self._cond:
            self._check_open()
            at = 0
            while at < len(prepared):
                batch = self._batch_for()
                room = self._batch_cap - len(batch.payloads)
                chunk = prepared[at : at + room]
                start = len(batch.payloads)
                batch.payloads.extend(p for p, _ in chunk)
                batch.terms.extend(t for _, t in chunk)
                spans.append((batch, start, len(chunk), batch.waiter()))
                at += len(chunk)
            self._idle = False
            self._cond.notify()
        receipts: list[Receipt] = []
        for batch, start, count, waiter in spans:
            waiter.acquire()
            receipts.extend(batch.receipt(pos) for pos in range(start, start + count))
        return receipts

    # -- checkpoints and index --------------------------------------------------------------------

    def checkpoint_now(self, timeout: float | None = None) -> bytes:
        """A signed checkpoint covering every entry acknowledged so far, written to the store
        (the latest one again if nothing is new). Raises :class:`AuditUnavailable`."""
        with self._cond:
            self._check_open()
        with self._scond:
            self._cp_asked += 1
            ticket = self._cp_asked
            self._scond.notify()
        with self._wcond:
            ok = self._wcond.wait_for(lambda: self._cp_done >= ticket or self._failed is not None, timeout)
            if self._failed is not None:
                raise _fresh(self._failed)
            if not ok:
                raise AuditUnavailable("timed out waiting for the checkpoint")
            note = self._latest_note
        assert note is not None
        return note

    def flush_index(self, timeout: float | None = None) -> bool:
        """Wait until the index covers every entry acknowledged so far; ``False`` on timeout, or
        when no follower runs or it stopped (the index then catches up at the next open)."""
        follower = self._follower
        if follower is None:
            return False
        return follower.wait(self._size, timeout)

    # -- failure ----------------------------------------------------------------------------------

    def _fail(self, error: AuditError) -> None:
        with self._cond:
            if self._failed is None:
                self._failed = error
            batches = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for batch in batches:
            batch.fail(error)
        with self._wcond:
            self._wcond.notify_all()
        _event("error", "audit.log.unavailable", log_id=self.log_id, error=str(error))

    # -- committer thread: seal, frame, write ------------------------------------------------------

    def _run_committer(self) -> None:
        batch: _Batch | None = None
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._closing and self._failed is None:
                        self._idle = True
                        self._cond.wait()
                    self._idle = False
                    if self._failed is not None or not self._queue:
                        break  # failed, or closing with nothing left
                    self._gather_batch()
                    if self._failed is not None or not self._queue:
                        break  # failed while gathering (the failure answered the queued appends)
                    batch = self._queue.popleft()
                written = self._write(batch)
                batch = None
                if written is not None:
                    self._hand_over(written)
        except BaseException as exc:  # pragma: no cover - a bug; never leave waiters hanging
            error = AuditUnavailable(f"the audit committer stopped: {type(exc).__name__}: {exc}")
            if batch is not None and not batch.done:
                batch.fail(error)
            self._fail(error)
            raise
        finally:
            with self._scond:
                self._writer_done = True
                self._scond.notify_all()

    def _gather_batch(self) -> None:
        """Group commit: when more concurrent writers are expected than are queued now, wait (at
        most ``gather_delay``) for them, so that one fdatasync serves them all (called with the
        log's lock held; appenders notify once the target is reached)."""
        target = min(self._concurrency - self._in_flight, self._batch_cap)
        queue = self._queue
        if len(queue) > 1:
            return
        if target < _CROWD and self._in_flight == 0 and self._commit_delay > 0 and self._gather_stream():
            return
        if len(queue[0].payloads) >= target or self._gather_delay <= 0:
            return
        self._wait_until(target, time.monotonic() + self._gather_delay)

    def _wait_until(self, target: int, deadline: float) -> None:
        """Wait (with the log's lock held) until the open batch holds ``target`` appends, another
        batch opens, the log closes or fails, or ``deadline``; appenders notify once the target
        is reached, so the committer is not woken for each one."""
        queue = self._queue
        self._gather_target = target
        try:
            while len(queue) == 1 and len(queue[0].payloads) < target and not self._closing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._idle = True
                self._cond.wait(remaining)
        finally:
            self._idle = False
            self._gather_target = 1

    def _gather_stream(self) -> bool:
        """Group commit of a stream: appends come one at a time (the last commit saw no crowd of
        writers) but often enough that more are due within ``commit_delay``: wait for them
        (:func:`stream_target`; called with the log's lock held). False when the rate is too low
        for waiting to pay."""
        batch = self._queue[0]
        now = time.monotonic()
        span = now - self._rate_at
        if span >= _RATE_WINDOW:
            total = self._next + len(batch.payloads)
            weight = 1.0 - math.exp(-span / _RATE_MEMORY)  # an idle spell weighs as long as it lasted
            self._rate += weight * ((total - self._rate_count) / span - self._rate)
            self._rate_at, self._rate_count = now, total
        rate = self._rate
        target = stream_target(rate, self._commit_delay, self._batch_cap)
        if target is None:
            return False
        # writers that wait for this very commit (one thread appending in a loop) send nothing
        # more: when recent waits gathered nothing, do not wait, but for a probe now and then
        if self._joined < 0.5:
            if now - self._probed_at < _PROBE_EVERY * self._commit_delay:
                return False
            self._probed_at = now
        had_at_start = len(batch.payloads)
        self._wait_until(target, now + self._commit_delay)
        self._joined += 0.3 * (len(batch.payloads) - had_at_start - self._joined)
        return True

    def _sealer_for(self, count: int) -> Sealer:
        now = datetime.now(UTC)
        keyring = self._keyring
        assert keyring is not None
        sealer = self._sealer
        period = keyring.period_of(now)
        if sealer is None or period != self._sealer_period or sealer.remaining < count:
            exhausted = sealer is not None and period == self._sealer_period
            key = keyring.rotate(now) if exhausted else keyring.current(now)
            sealer = Sealer(key.key, log_id=self._meta.log_id, suite=self._suite, key_id=key.key_id)
            self._sealer = sealer
            self._sealer_period = period
        return sealer

    def _write(self, batch: _Batch) -> _Written | None:
        """Assign the batch's indices, seal and frame it and write it (not yet fdatasync'ed);
        ``None`` if it failed (the batch and the log are failed)."""
        payloads, terms = batch.payloads, batch.terms
        first = self._next
        base = -1
        fd = -1
        try:
            sealed_all = self._sealer_for(len(payloads)).seal_many(payloads, first)
            hash_fn = self._hash
            head_pack = FRAME_HEAD.pack
            crc32, crc_pack = _CRC, _CRC_PACK
            parts: list[bytes] = []
            leaves: list[bytes] = []
            add_part = parts.append
            add_leaf = leaves.append
            index = first
            for sealed, encoded in zip(sealed_all, terms, strict=True):
                section = encoded[0]
                frame = head_pack(len(section) + len(sealed), index) + section + sealed
                add_part(frame)
                add_part(crc_pack(crc32(frame)))
                add_leaf(hash_fn(LEAF_PREFIX + sealed))
                index += 1
            data = b"".join(parts)
            with self._io_lock:
                if self._failed is not None:
                    raise _fresh(self._failed)
                fd = self._segment_for(len(data), first)
                base = self._seg_end
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                self._seg_end = base + len(data)
        except (OSError, AuditError) as exc:
            if base >= 0:
                with self._io_lock, contextlib.suppress(OSError):
                    os.ftruncate(fd, base)
            error = (
                exc
                if isinstance(exc, AuditUnavailable)
                else AuditUnavailable(f"the audit log cannot be written: {_describe(exc)}")
            )
            if error is not exc:
                error.__cause__ = exc
            batch.fail(error)
            self._fail(error)
            return None
        self._next = index
        batch.first = first
        batch.leaves = leaves
        now = time.monotonic()
        if self._last_ack:
            sample = now - self._last_ack
            if sample < 0.05:
                self._ewma_refill += 0.2 * (sample - self._ewma_refill)
            self._last_ack = 0.0
        return _Written(batch, fd, base)

    def _hand_over(self, item: _Written) -> None:
        """fdatasync and acknowledge a written batch: in this (the committer) thread when nothing
        before it is waiting for or in fdatasync (one thread hand-off less per commit), else
        through the syncer, which keeps the order."""
        assert item.batch is not None
        count = len(item.batch.payloads)
        with self._scond:
            self._in_flight += count
            inline = not self._written and not self._syncing
            if inline:
                self._syncing = True
            else:
                self._written.append(item)
                self._scond.notify()
        if not inline:
            return
        before = self._size
        try:
            self._sync([item])
        finally:
            with self._scond:
                self._syncing = False
                # the syncer: for what was queued meanwhile, and for the checkpoint timer (the
                # first new entries since the last checkpoint start it; a count reached was asked
                # for in _sync)
                if self._written or before <= self._cp_size:
                    self._scond.notify()

    def _segment_for(self, nbytes: int, first: int) -> int:
        if self._seg_fd < 0 or (
            self._seg_end > HEADER_SIZE and self._seg_end + nbytes > self._meta.segment_bytes
        ):
            self._roll(first)
        return self._seg_fd

    def _roll(self, first: int) -> None:
        path = self._paths.segments / segment_name(first)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            os.write(fd, segment_header(first))
            os.fsync(fd)
            fsync_dir(self._paths.segments)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        if self._seg_fd >= 0:  # the syncer syncs what is written to it, then closes it
            with self._scond:
                self._written.append(_Written(None, self._seg_fd, -1))
                self._scond.notify()
        self._seg_fd = fd
        self._seg_first = first
        self._seg_end = HEADER_SIZE

    # -- syncer thread: fdatasync, acknowledge, tree, checkpoints ---------------------------------

    def _run_syncer(self) -> None:
        policy = self._policy
        items: list[_Written] = []
        try:
            while True:
                with self._scond:
                    while True:
                        # the committer may be acknowledging inline (_syncing): the batches
                        # queued after it wait for it, checkpoint requests need not
                        free = not self._syncing
                        if free and (self._written or self._writer_done):
                            break
                        if self._cp_asked > self._cp_sent:
                            break
                        new = self._size - self._cp_size
                        if new >= policy.every_entries and self._failed is None:
                            break
                        timeout = policy.every_seconds
                        if new > 0:
                            timeout = self._cp_time + policy.every_seconds - time.monotonic()
                            if timeout <= 0:
                                break
                        self._scond.wait(timeout)
                    items = []
                    done = False
                    if not self._syncing:
                        items = list(self._written)
                        self._written.clear()
                        done = self._writer_done and not items
                    ticket = self._cp_asked
                    if items:
                        self._syncing = True
                if items:
                    try:
                        self._sync(items)
                        items = []
                    finally:
                        with self._scond:
                            self._syncing = False
                now = time.monotonic()
                new = self._size - self._cp_size
                due = new > 0 and (
                    new >= policy.every_entries or now - self._cp_time >= policy.every_seconds or done
                )
                if self._failed is None and (due or ticket > self._cp_sent):
                    self._request_checkpoint(ticket if ticket > self._cp_sent else 0, now)
                if done:
                    break
        except BaseException as exc:  # pragma: no cover - a bug; never leave waiters hanging
            error = AuditUnavailable(f"the audit syncer stopped: {type(exc).__name__}: {exc}")
            for item in items:
                if item.batch is not None and not item.batch.done:
                    item.batch.fail(error)
            self._fail(error)
            raise
        finally:
            with self._wcond:
                self._wcond.notify_all()

    def _sync(self, items: list[_Written]) -> None:
        """fdatasync what the items wrote, then acknowledge them in order, fold their leaves into
        the tree and tell the follower; on failure, fail them and every later write."""
        synced: set[int] = set()
        started = time.monotonic()
        try:
            for item in items:
                if item.batch is not None and item.fd not in synced:
                    os.fdatasync(item.fd)
                    synced.add(item.fd)
        except OSError as exc:
            error = AuditUnavailable(f"the audit log cannot be written: {_describe(exc)}")
            error.__cause__ = exc
            self._fail(error)  # no new writes from now on
            with self._scond:
                later = list(self._written)
                self._written.clear()
            first = next((i for i in items if i.batch is not None), None)
            if first is not None:
                with self._io_lock, contextlib.suppress(OSError):
                    os.ftruncate(first.fd, first.base)
            for item in [*items, *later]:
                if item.batch is not None:
                    item.batch.fail(error)
                elif item.fd != self._seg_fd:
                    os.close(item.fd)
            with self._scond:
                self._in_flight = 0
            return
        self._ewma_fsync += 0.2 * (time.monotonic() - started - self._ewma_fsync)
        peaks = self._peaks
        hash_fn = self._hash
        node = NODE_PREFIX
        size = self._size
        acked = 0
        for item in items:
            batch = item.batch
            if batch is None:
                os.close(item.fd)  # a retired segment, synced above
                continue
            for leaf in batch.leaves:  # CompactRange.append, inlined
                digest, carry = leaf, size
                while carry & 1:
                    digest = hash_fn(node + peaks.pop() + digest)
                    carry >>= 1
                peaks.append(digest)
                size += 1
            acked += len(batch.leaves)
        self._size = size
        self._published = (size, tuple(peaks))
        with self._scond:
            self._in_flight -= acked
            in_flight = self._in_flight
        for item in items:
            if item.batch is not None:
                item.batch.finish()
        self._last_ack = time.monotonic()
        with self._cond:  # writers: the ones just acknowledged, those written and those queued
            queued = sum(len(b.payloads) for b in self._queue)
            self._concurrency = acked + in_flight + queued
            split = self._concurrency >= 4 and self._ewma_fsync < self._ewma_refill
            self._batch_cap = (self._concurrency + 1) // 2 if split and self._pipeline else self._max_batch
        follower = self._follower
        if follower is not None:
            now = time.monotonic()
            if now - self._notified_at >= _FOLLOWER_NOTIFY_EVERY:
                self._notified_at = now
                follower.notify(size)
        if size - self._cp_size >= self._policy.every_entries and self._failed is None:
            # the count is reached: the checkpoint is of this commit's tree, asked for here (no
            # other commit is folded in until this returns), not by the syncer whenever it runs
            self._request_checkpoint(0, time.monotonic())

    def _request_checkpoint(self, ticket: int, now: float) -> None:
        """Queue a checkpoint of the tree as published now for the worker thread to sign (with a
        :meth:`checkpoint_now` ticket, or 0). Asked by the syncer (on demand, on time, on close)
        and by :meth:`_sync` (the count reached), possibly at once: the checkpoint state changes
        under the worker's lock, and the worker skips a size not above the last it wrote."""
        size, peaks = self._published
        root = CompactRange.from_peaks(size, peaks, self._hash).root()
        with self._wcond:
            if ticket:
                self._cp_sent = ticket
            if size > self._cp_size:
                self._cp_size = size
                self._cp_time = now
            self._wqueue.append(_CheckpointTask(size, root, ticket))
            self._wcond.notify()

    # -- worker thread: index and checkpoints -----------------------------------------------------

    def _run_worker(self) -> None:
        while True:
            with self._wcond:
                while not self._wqueue and not self._wstop:
                    self._wcond.wait()
                if not self._wqueue and self._wstop:
                    return
                tasks = list(self._wqueue)
                self._wqueue.clear()
            self._write_checkpoints(tasks)

    def _write_checkpoints(self, tasks: list[_CheckpointTask]) -> None:
        """Sign and store the due checkpoints (one directory fsync for all), then release the
        :meth:`checkpoint_now` callers waiting for them."""
        try:
            written = self._cp_written_size()
            notes: list[tuple[int, bytes]] = []
            for task in tasks:
                if task.size > written:
                    notes.append(
                        (task.size, make_checkpoint(self._signer, self._meta.log_id, task.size, task.root))
                    )
                    written = task.size
            if notes:
                self._store.write_many(notes)
                self._latest_note = notes[-1][1]
        except (OSError, AuditError) as exc:
            error = AuditUnavailable(f"the audit log cannot write a checkpoint: {_describe(exc)}")
            error.__cause__ = exc
            self._fail(error)
        with self._wcond:
            tickets = [t.ticket for t in tasks if t.ticket]
            if tickets:
                self._cp_done = max(self._cp_done, *tickets)
            self._wcond.notify_all()

    def _cp_written_size(self) -> int:
        note = self._latest_note
        if note is None:
            return -1
        return int(note.split(b"\n", 2)[1])

    # -- recovery ---------------------------------------------------------------------------------

    def _recover(self, rebuild: bool) -> None:
        found = recover(self._paths, self._meta, self._store, rebuild_index=rebuild)
        self._size = self._next = self._rate_count = found.size
        self._peaks = list(found.peaks)
        self._published = (found.size, found.peaks)
        self._cp_size = found.checkpoint_size
        self._latest_note = found.checkpoint_note
        if found.tail is not None:
            self._seg_first, path = found.tail
            self._seg_fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            self._seg_end = os.fstat(self._seg_fd).st_size
        _event(
            "info", "audit.log.open", log_id=self.log_id, entries=found.size, checkpoint=found.checkpoint_size
        )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{os.strerror(exc.errno)} ({errno_name(exc.errno)})"
    return str(exc) or type(exc).__name__


def errno_name(number: int) -> str:
    return errno.errorcode.get(number, str(number))
