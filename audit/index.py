"""The audit log's search index: a SQLite file derived from the segments, rebuildable at any time.

It holds only blind terms (:mod:`audit.blind_index`) and non-personal columns, taken from the
terms section of each frame (:mod:`audit.record`), so it is rebuilt without any key:

``entries(idx, off, leaf, combo)``
    one row per entry: its index, the byte offset of its frame in its segment, its Merkle leaf
    hash and its combination (below).
``combos(id, key, day, kind, caller, purpose, decision, provider)``
    each distinct combination of the low-cardinality values: UTC day (``YYYY-MM-DD``) and kind
    (``access``, ``consent_change``, ``push_notification``) in clear, and the blind terms of the
    caller, purpose, decision and provider (NULL when the entry has none). A few thousand rows a
    year; an entry row stays four columns, which keeps inserts cheap on the append path.
``postings(gen, term, idx) WITHOUT ROWID``
    one row per high-cardinality term of an entry (subject, consent id, push policy), keyed by
    (gen, term, idx) with ``gen = idx >> 16``. Partitioning by generation keeps inserts inside
    the newest 65,536-entry partition, whose pages stay in the cache, so an insert costs the
    same in a 10-million-entry log as in an empty one; a lookup probes each partition's B-tree
    once (153 probes in a 10,000,000-entry log, about a millisecond).
``tiles(n, hash)``
    the Merkle hash of each complete 256-leaf tile (leaves ``[256 n, 256 n + 256)``), taken by the
    follower from the compact range it folds anyway (no extra hashing), so that an inclusion or
    consistency proof combines a few thousand tile hashes instead of rehashing every leaf. An
    index written before tiles existed has none for its older entries (proofs then fall back to
    the leaves; rebuilding the index fills them).
``segments(first, bytes)``, ``meta(key, value)``
    the segments (by first index) and how far each is indexed; the log id, the indexed tree
    size and its compact-range peaks (so a writer reopens without rehashing the log).

The index follower (:mod:`audit.follower`) fills it from the segments up to the durable size the
writer announces, in transactions gathering about a second of appends (``synchronous=NORMAL`` in
WAL mode: a crash may lose the last transactions, never corrupt the file, and the follower
catches up from the segments).
Nothing here is evidence: verification (:mod:`audit.verify`) reads the segments, and uses the
index to name an entry whose leaf changed; with the auditor key it also compares the index's
rows with the entries' terms (:mod:`audit.index_check`), so that a changed index cannot hide an
entry from search unnoticed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog

from audit.errors import AuditError, VerificationError
from audit.layout import fsync_dir
from audit.record import COLUMN_FIELDS, RecordError, day_name, parse_terms

_log = structlog.get_logger("audit.index")

__all__ = [
    "GEN_SHIFT",
    "SCHEMA_VERSION",
    "AuditIndex",
    "IndexError_",
    "IndexState",
    "IndexedFrame",
    "remove_index",
    "replace_index",
]

SCHEMA_VERSION = 1
GEN_SHIFT = 16

IndexedFrame = tuple[int, int, bytes, bytes, tuple[bytes, ...]]
"""(index, frame offset in its segment, leaf hash, combination key, posting terms)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB);
CREATE TABLE IF NOT EXISTS segments(first INTEGER PRIMARY KEY, bytes INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS combos(
    id INTEGER PRIMARY KEY,
    key BLOB NOT NULL UNIQUE,
    day TEXT NOT NULL,
    kind TEXT NOT NULL,
    caller BLOB,
    purpose BLOB,
    decision BLOB,
    provider BLOB
);
CREATE TABLE IF NOT EXISTS entries(
    idx INTEGER PRIMARY KEY,
    off INTEGER NOT NULL,
    leaf BLOB NOT NULL,
    combo INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tiles(n INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS postings(
    gen INTEGER NOT NULL,
    term BLOB NOT NULL,
    idx INTEGER NOT NULL,
    PRIMARY KEY (gen, term, idx)
) WITHOUT ROWID;
"""


_MAX_INDEX = 2**63 - 1
"""The largest entry index an SQLite integer holds."""


class IndexError_(AuditError):
    """The index file is missing, unreadable, of another log or of another schema version."""

    reason = "INDEX"


class IndexDamaged(IndexError_, VerificationError):
    """A read of the index failed or found values of the wrong type: the file is damaged or was
    edited (it is not evidence: ``dsgw audit reindex`` rebuilds it from the segments)."""

    reason = "INDEX_DAMAGED"


_T = TypeVar("_T")


def _read(method: Callable[..., _T]) -> Callable[..., _T]:
    """A read of the index: a damaged file (SQLite errors, values of the wrong type) raises
    :class:`IndexDamaged` in one line instead of the driver's or the interpreter's error."""

    @functools.wraps(method)
    def run(self: AuditIndex, *args: Any, **kwargs: Any) -> _T:
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.DatabaseError, ValueError, TypeError, KeyError) as exc:
            raise IndexDamaged(
                f"the index {self.path} is damaged ({type(exc).__name__} in {method.__name__}): "
                "run dsgw audit reindex"
            ) from None

    return run


@dataclass(frozen=True)
class IndexState:
    """How far the index is: entries ``[0, size)``, the compact-range ``peaks`` at ``size``, and
    the indexed byte length of each segment (first index -> bytes)."""

    size: int = 0
    peaks: tuple[bytes, ...] = ()
    segments: Mapping[int, int] = field(default_factory=dict)


class AuditIndex:
    """One log's index file. A writer opens it read-write (one thread uses it); readers open it
    read-only and may run concurrently with the writer (WAL)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, readonly: bool) -> None:
        """Use :meth:`open`."""
        self._conn = conn
        self.path = path
        self.readonly = readonly
        self._combo_ids: dict[bytes, int] = {}
        self._digest_size = 32

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, log_id: str, readonly: bool = False) -> AuditIndex:
        """Open (read-write: create) the index of log ``log_id``. :class:`IndexError_` if it
        cannot be read, or belongs to another log or schema version (a writer then rebuilds)."""
        target = Path(path)
        try:
            if readonly:
                if not target.exists():
                    raise IndexError_(f"{target} does not exist")
                conn = sqlite3.connect(
                    f"{target.resolve().as_uri()}?mode=ro",
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,
                )
            else:
                conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False, timeout=30)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA wal_autocheckpoint=10000")
            conn.execute("PRAGMA cache_size=-65536")
            conn.execute("PRAGMA temp_store=MEMORY")
            index = cls(conn, target, readonly=readonly)
            if not readonly:
                conn.executescript(_SCHEMA)
            index._check(log_id)
            index._combo_ids = {bytes(k): int(i) for k, i in conn.execute("SELECT key, id FROM combos")}
            return index
        except sqlite3.Error as exc:
            raise IndexError_(f"{target}: {exc}") from None

    def _check(self, log_id: str) -> None:
        meta = self._meta()
        stored_id = meta.get("log_id")
        version = meta.get("schema")
        if stored_id is None and not self.readonly:
            with self._transaction():
                self._conn.executemany(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                    [("log_id", log_id), ("schema", SCHEMA_VERSION), ("size", 0), ("peaks", b"")],
                )
            return
        if stored_id != log_id:
            raise IndexError_(f"{self.path} is the index of another log")
        if version != SCHEMA_VERSION:
            raise IndexError_(f"{self.path} has schema version {version}, not {SCHEMA_VERSION}")

    def _meta(self) -> dict[str, Any]:
        try:
            return {str(k): v for k, v in self._conn.execute("SELECT key, value FROM meta")}
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return {}
            raise

    @contextlib.contextmanager
    def _transaction(self) -> Any:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()

    def standalone(self) -> None:
        """Fold the write-ahead log into the file and leave WAL mode, so that the file alone holds
        the index (before it is moved into place: :func:`replace_index`)."""
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.Error as exc:
            raise IndexError_(f"{self.path}: {exc}") from None

    # -- state ------------------------------------------------------------------------------------

    @_read
    def state(self) -> IndexState:
        meta = self._meta()
        size = int(meta.get("size", 0))
        raw = bytes(meta.get("peaks", b""))
        peaks = tuple(raw[i : i + self._digest_size] for i in range(0, len(raw), self._digest_size))
        segments = {int(f): int(b) for f, b in self._conn.execute("SELECT first, bytes FROM segments")}
        return IndexState(size, peaks, segments)

    @property
    @_read
    def size(self) -> int:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'size'").fetchone()
        return int(row[0]) if row else 0

    # -- writing ----------------------------------------------------------------------------------

    def add(
        self,
        frames: Iterable[IndexedFrame],
        *,
        size: int,
        peaks: Sequence[bytes],
        segment_ends: Mapping[int, int],
        tiles: Sequence[tuple[int, bytes]] = (),
    ) -> int:
        """Index ``frames`` (in index order, continuing the indexed ones) in one transaction,
        recording the tree ``size`` and compact-range ``peaks`` after them, each segment's
        indexed length (first index -> bytes) and the hashes of the 256-leaf ``tiles`` the frames
        completed (tile number, hash). Returns how many entries were added."""
        rows: list[tuple[int, int, bytes, int]] = []
        postings: list[tuple[int, bytes, int]] = []
        new_combos: list[tuple[Any, ...]] = []
        combo_ids = self._combo_ids
        add_row = rows.append
        add_posting = postings.append
        try:
            for idx, off, leaf, key, terms in frames:
                cid = combo_ids.get(key)
                if cid is None:
                    cid = combo_ids[key] = len(combo_ids) + 1
                    new_combos.append(_combo_row(cid, key))
                add_row((idx, off, leaf, cid))
                for term in terms:
                    add_posting((idx >> GEN_SHIFT, term, idx))
            conn = self._conn
            with self._transaction():
                if new_combos:
                    conn.executemany("INSERT INTO combos VALUES (?, ?, ?, ?, ?, ?, ?, ?)", new_combos)
                conn.executemany("INSERT INTO entries VALUES (?, ?, ?, ?)", rows)
                conn.executemany("INSERT INTO postings VALUES (?, ?, ?)", postings)
                if tiles:
                    conn.executemany("INSERT OR REPLACE INTO tiles(n, hash) VALUES (?, ?)", tiles)
                conn.executemany(
                    "INSERT OR REPLACE INTO segments(first, bytes) VALUES (?, ?)", list(segment_ends.items())
                )
                conn.executemany(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                    [("size", size), ("peaks", b"".join(peaks))],
                )
        except BaseException:
            for row in new_combos:
                combo_ids.pop(row[1], None)
            raise
        return len(rows)

    # -- reading ----------------------------------------------------------------------------------

    @_read
    def leaf(self, idx: int) -> bytes | None:
        if not 0 <= idx <= _MAX_INDEX:
            return None
        row = self._conn.execute("SELECT leaf FROM entries WHERE idx = ?", (idx,)).fetchone()
        return bytes(row[0]) if row else None

    @_read
    def leaves(self, start: int, stop: int) -> list[bytes]:
        """The indexed leaf hashes of entries ``[start, stop)`` (fewer if not all are indexed: the
        first ones, from ``start`` on). :class:`IndexDamaged` if a row is missing before the last
        one returned (a leaf taken for the next entry's would blame an untouched entry)."""
        cursor = self._conn.execute(
            "SELECT idx, leaf FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx", (start, stop)
        )
        out: list[bytes] = []
        for idx, leaf in cursor:
            if idx != start + len(out):
                raise IndexDamaged(
                    f"the index {self.path} is damaged (it lacks entry {start + len(out)}): "
                    "run dsgw audit reindex"
                )
            out.append(bytes(leaf))
        return out

    @_read
    def tiles(self, start: int, stop: int) -> dict[int, bytes]:
        """The stored hashes of tiles ``[start, stop)`` (tile number -> hash); missing ones (an
        index older than tiles, or not that far) are absent."""
        try:
            cursor = self._conn.execute("SELECT n, hash FROM tiles WHERE n >= ? AND n < ?", (start, stop))
            return {int(n): bytes(h) for n, h in cursor}
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # a read-only index written before tiles existed
                return {}
            raise

    @_read
    def location(self, idx: int) -> tuple[int, int] | None:
        """(segment first index, frame offset) of entry ``idx``, if indexed."""
        if not 0 <= idx <= _MAX_INDEX:
            return None  # no log holds it (and SQLite integers cannot say it)
        row = self._conn.execute(
            "SELECT (SELECT max(first) FROM segments WHERE first <= e.idx), off FROM entries e WHERE idx = ?",
            (idx,),
        ).fetchone()
        return (int(row[0]), int(row[1])) if row and row[0] is not None else None

    @_read
    def postings(self, term: bytes) -> list[int]:
        """The indices of the entries with the high-cardinality ``term`` (a subject's, a consent
        id's or a push policy's blind term), ascending."""
        size = self.size
        if size == 0:
            return []
        gens = ",".join(str(g) for g in range(((size - 1) >> GEN_SHIFT) + 1))
        cursor = self._conn.execute(
            f"SELECT idx FROM postings WHERE gen IN ({gens}) AND term = ? ORDER BY gen, idx", (term,)
        )
        return [int(r[0]) for r in cursor]

    @_read
    def select(
        self,
        *,
        kind: str | None = None,
        day_from: str | None = None,
        day_to: str | None = None,
        caller: bytes | None = None,
        purpose: bytes | None = None,
        decision: bytes | None = None,
        provider: bytes | None = None,
        start: int = 0,
        stop: int | None = None,
    ) -> list[int]:
        """Indices of the entries in ``[start, stop)`` matching every criterion given: ``kind``
        and days (inclusive, ``YYYY-MM-DD``) in clear, the others as blind terms of those fields
        (:meth:`audit.blind_index.BlindIndexer.term`). Combine with :meth:`postings` for a
        subject."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value, op in (
            ("kind", kind, "="),
            ("day", day_from, ">="),
            ("day", day_to, "<="),
            ("caller", caller, "="),
            ("purpose", purpose, "="),
            ("decision", decision, "="),
            ("provider", provider, "="),
        ):
            if value is not None:
                clauses.append(f"{column} {op} ?")
                params.append(value)
        combos = " AND ".join(clauses) or "1"
        sql = f"SELECT idx FROM entries WHERE combo IN (SELECT id FROM combos WHERE {combos}) AND idx >= ?"
        params.append(start)
        if stop is not None:
            sql += " AND idx < ?"
            params.append(stop)
        return [int(r[0]) for r in self._conn.execute(sql + " ORDER BY idx", params)]

    @_read
    def combos(self) -> dict[int, dict[str, Any]]:
        """Every combination by id: day, kind and the terms of caller, purpose, decision and
        provider (``None`` when absent)."""
        cursor = self._conn.execute(
            "SELECT id, day, kind, caller, purpose, decision, provider FROM combos ORDER BY id"
        )
        return {
            int(row[0]): {
                "day": row[1],
                "kind": row[2],
                **{
                    name: (bytes(v) if v is not None else None)
                    for name, v in zip(COLUMN_FIELDS, row[3:], strict=True)
                },
            }
            for row in cursor
        }

    @_read
    def counts(self) -> dict[str, int]:
        """Row counts (for reports and tests)."""
        return {
            table: int(self._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            for table in ("entries", "postings", "combos", "segments")
        }

    def dump(self) -> list[tuple[Any, ...]]:
        """Every entry and posting row, in key order (to compare two indexes in tests)."""
        entries = list(self._conn.execute("SELECT * FROM entries ORDER BY idx"))
        postings = list(self._conn.execute("SELECT * FROM postings ORDER BY gen, term, idx"))
        combos = list(self._conn.execute("SELECT * FROM combos ORDER BY id"))
        segments = list(self._conn.execute("SELECT * FROM segments ORDER BY first"))
        return [*entries, *postings, *combos, *segments]


_SIDECARS = ("-wal", "-shm", "-journal")


def remove_index(path: Path) -> None:
    """Delete an index file and its WAL files (before a rebuild)."""
    _remove(path, "", *_SIDECARS)


def _remove(path: Path, *suffixes: str) -> None:
    for suffix in suffixes:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


def replace_index(built: Path, path: Path) -> None:
    """Put the standalone index file ``built`` (:meth:`AuditIndex.standalone`, closed) in the place
    of ``path``, atomically: the old index's WAL is first folded into its file and then removed,
    so that it is never applied to the new file; a crash leaves the old index whole or the new
    one (if readers kept the WAL from being folded for a second, it is removed anyway, with a
    warning: a crash then loses the old index's last transactions, which the follower redoes)."""
    with open(built, "rb") as handle:
        os.fsync(handle.fileno())
    _fold_wal(path)
    _remove(path, *_SIDECARS)
    try:
        os.replace(built, path)
    except OSError as exc:  # name the index, not the file built aside
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    fsync_dir(path.parent)


def _fold_wal(path: Path) -> None:
    """Apply the WAL of the SQLite file ``path`` to the file itself (if it has one and opens)."""
    if not path.exists():
        return
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)
    except sqlite3.Error:
        return  # unreadable: the rebuilt index replaces it anyway
    try:
        for _ in range(20):  # readers (a review tool) may hold the WAL for a moment
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy or not busy[0]:
                return
            time.sleep(0.05)
        _log.warning("audit.index.wal_busy", index=str(path), detail="readers hold the old index's WAL")
    except sqlite3.Error:
        pass
    finally:
        conn.close()


def _combo_row(cid: int, key: bytes) -> tuple[Any, ...]:
    try:
        terms = parse_terms(key)
    except RecordError as exc:
        raise RecordError(f"malformed combination key: {exc}") from None
    columns = dict(terms.items)
    return (cid, key, day_name(terms.day), terms.kind, *(columns.get(name) for name in COLUMN_FIELDS))
