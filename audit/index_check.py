"""Comparing the search index with the log: are the rows search reads the ones the entries give?

The index (:mod:`audit.index`) is not evidence, but the review verbs trust it to *find* entries:
an entry whose posting or entry row was deleted from ``index.sqlite`` is silently missing from
``dsgw audit search`` and ``subject-report``, and a posting added for another entry makes a
search find the wrong one. ``dsgw audit verify --auditor-key`` therefore compares, for every
indexed entry, the rows search reads:

* ``entries(idx, combo)`` with the combination it points at, as search reads it: the columns
  ``combos(day, kind, caller, purpose, decision, provider)`` (not ``combos.key``, which only the
  writer reads);
* ``postings(gen, term, idx)``: one row per subject, consent id or push policy term, with
  ``gen = idx >> 16``;

with the rows the entry's terms give (the terms verification recomputed from its decrypted
content; for a shredded entry, whose content is gone, the clear terms kept in its frame).

Memory stays bounded on a log of any size. Both sides are reduced to one digest per *bucket* of
65,536 consecutive entries: the sum modulo 2^256 of a keyed hash (BLAKE2b, 32 bytes) of each row.
A sum does not depend on the order rows are read in, so the index is read once in its tables'
own order (no sort) and the log once as verification streams it. The hash key is drawn at random
for each run: whoever edited the index could not know it, so they cannot make a changed bucket's
sum come out equal (rows added to cancel a deletion would need the key; without it two different
row sets collide with probability about 2^-256). Only a bucket whose sums differ is then read
again, from both sides, in entry order, and compared row by row (:func:`first_difference`) to
name the first entry whose rows are missing, extra or changed. A row outside the indexed entries
``[0, size)`` (a posting added for an entry the index does not hold) is named as it is read.

The pure parts (:class:`RowDigest`, :func:`digest_index`, :class:`LogDigest`,
:func:`differing_buckets`, :func:`first_difference`, :func:`expected_entry`) work on plain data;
:class:`IndexComparison` reads ``index.sqlite`` for them.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import os
import sqlite3
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.index import GEN_SHIFT, SCHEMA_VERSION, IndexDamaged
from audit.record import COLUMN_FIELDS, POSTING_FIELDS, RecordError, day_name, parse_terms, split_section

__all__ = [
    "BUCKET_SHIFT",
    "COMBINATION_FIELDS",
    "BadIndexRow",
    "Combination",
    "ExpectedEntry",
    "IndexComparison",
    "IndexDigest",
    "LogDigest",
    "Mismatch",
    "RowDigest",
    "combination_digest",
    "combination_of_key",
    "differing_buckets",
    "digest_index",
    "expected_entry",
    "first_difference",
    "locate",
]

BUCKET_SHIFT = 16
"""Entries ``[b << 16, (b + 1) << 16)`` form bucket ``b``: 153 buckets in a 10,000,000-entry log."""
MODULUS = 1 << 256
COMBINATION_FIELDS = ("day", "kind", *COLUMN_FIELDS)
"""The columns of ``combos`` that search reads, in this order in a :data:`Combination`."""

Combination = tuple[object, ...]
"""(day, kind, caller, purpose, decision, provider) as search reads them: day ``YYYY-MM-DD`` and
kind in clear, the other four blind terms (bytes) or ``None``."""

_PAIR = struct.Struct(">qq")
_ONE = struct.Struct(">q")
_LIMIT = 4096


class BadIndexRow(ValueError):
    """A row whose entry index is not an integer: it cannot be placed (the index is damaged)."""

    def __init__(self, table: str, value: object) -> None:
        super().__init__(f"a {table} row has an entry index of type {type(value).__name__}")
        self.table = table


@dataclass(frozen=True, slots=True)
class Mismatch:
    """The first entry whose index rows differ from its terms, and what differs (one phrase)."""

    entry: int
    what: str


@dataclass(frozen=True, slots=True)
class ExpectedEntry:
    """The rows an entry should have in the index: its combination, and its posting terms by
    field name (subject, consent, policy)."""

    idx: int
    combination: Combination
    postings: tuple[tuple[str, bytes], ...] = ()


def _value(value: object) -> bytes:
    """An unambiguous encoding of any value an SQLite column can hold (tag, length, bytes)."""
    if value is None:
        return b"n"
    if isinstance(value, bytes):
        tag, data = b"b", value
    elif isinstance(value, str):
        tag, data = b"s", value.encode("utf-8", "surrogatepass")
    elif isinstance(value, int):
        tag, data = b"i", str(value).encode()
    elif isinstance(value, float):
        tag, data = b"f", repr(value).encode()
    else:
        tag, data = b"r", repr(value).encode()
    return tag + len(data).to_bytes(4, "big") + data


def combination_digest(values: Iterable[object]) -> bytes:
    """A 32-byte digest of a combination (or of any row values: an injective encoding, hashed)."""
    return hashlib.sha256(b"".join(_value(v) for v in values)).digest()


def _dangling(combo: object) -> bytes:
    """The digest standing for an entry row whose combination id is not in ``combos`` (never that
    of a combination: its encoding starts with a tag :func:`_value` never writes)."""
    return hashlib.sha256(b"d" + _value(combo)).digest()


def combination_of_key(key: bytes) -> Combination:
    """The combination of a combination key (:func:`audit.record.split_section`), as the
    index's ``combos`` columns hold it."""
    terms = parse_terms(key)
    columns = dict(terms.items)
    return (day_name(terms.day), terms.kind, *(columns.get(name) for name in COLUMN_FIELDS))


class RowDigest:
    """The keyed hash of an index row, as an integer: BLAKE2b-256 of ``key || row`` (a secure
    PRF: BLAKE2 has no length extension; one compression per row where BLAKE2's keyed mode
    takes two). ``key``: 32 bytes, by default random, so that whoever wrote the index cannot aim
    at a sum. The hot loops (:func:`digest_index`, :meth:`LogDigest.add`) inline it."""

    def __init__(self, key: bytes | None = None) -> None:
        self.key = os.urandom(32) if key is None else key
        if len(self.key) != 32:
            raise ValueError("a row digest key has 32 bytes")

    def hash(self, data: bytes) -> int:
        return int.from_bytes(hashlib.blake2b(self.key + data, digest_size=32).digest(), "little")

    def entry(self, idx: int, combination: bytes) -> int:
        """An ``entries`` row: entry ``idx`` and the digest of its combination."""
        return self.hash(b"e" + _ONE.pack(idx) + combination)

    def posting(self, gen: object, term: object, idx: int) -> int:
        """A ``postings`` row (any column types: a row of the wrong types hashes apart)."""
        if type(gen) is int and type(term) is bytes and -(2**63) <= gen < 2**63:
            return self.hash(b"p" + _PAIR.pack(gen, idx) + term)
        return self.hash(b"P" + _value(gen) + _value(idx) + _value(term))


@dataclass
class IndexDigest:
    """The index's side: the sum of its rows' hashes per bucket, and the first row that names an
    entry outside ``[0, size)`` (an entry the index does not hold), if any."""

    sums: dict[int, int] = field(default_factory=dict)
    stray: Mismatch | None = None
    rows: int = 0


def _stray(digest: IndexDigest, idx: int, table: str, size: int) -> None:
    if digest.stray is None or idx < digest.stray.entry:
        where = f"the {size:,} entries it holds" if size else "its entries (it holds none)"
        digest.stray = Mismatch(idx, f"the index has {table} for entry {idx}, outside {where}")


def digest_index(
    entries: Iterable[tuple[object, object]],
    combinations: Mapping[object, Combination],
    postings: Iterable[tuple[object, object, object]],
    *,
    size: int,
    digest: RowDigest,
    shift: int = BUCKET_SHIFT,
) -> IndexDigest:
    """Sum the hashes of the index's rows per bucket: ``entries`` rows (idx, combination id),
    ``combinations`` by id, ``postings`` rows (gen, term, idx), in any order. Rows of entries
    outside ``[0, size)`` are not summed: the lowest is :attr:`IndexDigest.stray`.
    :class:`BadIndexRow` for a row whose idx is not an integer."""
    out = IndexDigest()
    sums = out.sums
    digests = {cid: combination_digest(values) for cid, values in combinations.items()}
    # RowDigest.entry and .posting, inlined (this runs once per row of the index); rows come
    # bucket by bucket (entries by idx, postings by gen), so a running sum is kept per bucket
    key, blake2b, from_bytes, one, pair = digest.key, hashlib.blake2b, int.from_bytes, _ONE.pack, _PAIR.pack
    rows = 0
    current, total = -1, 0
    for idx, combo in entries:
        rows += 1
        if type(idx) is not int:
            raise BadIndexRow("entries", idx)
        if not 0 <= idx < size:
            _stray(out, idx, "an entry row", size)
            continue
        cd = digests.get(combo)
        if cd is None:
            cd = _dangling(combo)
        if idx >> shift != current:
            sums[current] = sums.get(current, 0) + total
            current, total = idx >> shift, 0
        total += from_bytes(blake2b(key + b"e" + one(idx) + cd, digest_size=32).digest(), "little")
    posting = digest.posting
    for gen, term, idx in postings:
        rows += 1
        if type(idx) is not int:
            raise BadIndexRow("postings", idx)
        if not 0 <= idx < size:
            _stray(out, idx, "a posting", size)
            continue
        if idx >> shift != current:
            sums[current] = sums.get(current, 0) + total
            current, total = idx >> shift, 0
        if type(gen) is int and type(term) is bytes and -(2**63) <= gen < 2**63:
            total += from_bytes(
                blake2b(key + b"p" + pair(gen, idx) + term, digest_size=32).digest(), "little"
            )
        else:
            total += posting(gen, term, idx)
    sums[current] = sums.get(current, 0) + total
    sums.pop(-1, None)  # the sum before the first row
    for bucket, value in sums.items():
        sums[bucket] = value % MODULUS
    out.rows = rows
    return out


class LogDigest:
    """The log's side, fed entry by entry (ascending, as verification reads them): the same sums
    over the rows each entry should have. ``add`` takes an entry's combination key and posting
    terms (:meth:`audit.record.TermEncoder.encode`, :func:`audit.record.split_section`)."""

    def __init__(self, digest: RowDigest, *, shift: int = BUCKET_SHIFT) -> None:
        self.digest = digest
        self._key = digest.key
        self.shift = shift
        self.sums: dict[int, int] = {}
        self.entries = 0
        self._combos: dict[bytes, bytes] = {}
        self._bucket = -1
        self._sum = 0

    def add(self, idx: int, key: bytes, postings: tuple[bytes, ...]) -> None:
        cd = self._combos.get(key)
        if cd is None:
            if len(self._combos) >= _LIMIT:
                self._combos.clear()
            cd = self._combos[key] = combination_digest(combination_of_key(key))
        bucket = idx >> self.shift
        if bucket != self._bucket:
            self._flush()
            self._bucket = bucket
            self._sum = self.sums.get(bucket, 0)
        # RowDigest.entry and .posting, inlined (this runs once per entry of the log)
        key, blake2b, from_bytes = self._key, hashlib.blake2b, int.from_bytes
        total = self._sum + from_bytes(
            blake2b(key + b"e" + _ONE.pack(idx) + cd, digest_size=32).digest(), "little"
        )
        if postings:
            head = key + b"p" + _PAIR.pack(idx >> GEN_SHIFT, idx)
            for term in postings:
                total += from_bytes(blake2b(head + term, digest_size=32).digest(), "little")
        self._sum = total
        self.entries += 1

    def add_section(self, idx: int, section: bytes) -> None:
        """:meth:`add` from an entry's terms section (:class:`~audit.record.RecordError` if it is
        malformed)."""
        key, postings = split_section(section)
        self.add(idx, key, postings)

    def _flush(self) -> None:
        if self._bucket >= 0:
            self.sums[self._bucket] = self._sum % MODULUS

    def finish(self) -> dict[int, int]:
        """The sums per bucket (call once every entry is added)."""
        self._flush()
        self._bucket = -1
        return self.sums


def differing_buckets(left: Mapping[int, int], right: Mapping[int, int]) -> list[int]:
    """The buckets whose sums differ (a bucket absent on one side sums to 0), ascending."""
    return sorted(b for b in left.keys() | right.keys() if left.get(b, 0) != right.get(b, 0))


def expected_entry(idx: int, section: bytes) -> ExpectedEntry:
    """The rows entry ``idx`` should have, from its terms section (:class:`RecordError` if it is
    malformed)."""
    terms = parse_terms(section)
    columns = dict(terms.items)
    combination = (day_name(terms.day), terms.kind, *(columns.get(name) for name in COLUMN_FIELDS))
    postings = tuple((name, term) for name, term in terms.items if name in POSTING_FIELDS)
    return ExpectedEntry(idx, combination, postings)


def _show(term: object) -> str:
    if isinstance(term, bytes):
        return term[:4].hex() + "…"
    return f"{type(term).__name__} {term!r:.20}"


def _describe(
    idx: int,
    expected: list[ExpectedEntry],
    combos: list[Combination | None],
    postings: list[tuple[object, object]],
) -> str | None:
    """What differs between the rows entry ``idx`` should have and those the index has, or
    ``None`` if nothing."""
    if not expected:
        return "the index has rows for it, but it is not among the entries compared"
    want = expected[0]
    problems: list[str] = []
    if not combos:
        problems.append(
            "the index lacks its entry row (no search by kind, day, caller, purpose, decision or "
            "provider finds it)"
        )
    elif len(combos) > 1:
        problems.append(f"the index has {len(combos)} entry rows for it")
    elif combos[0] is None:
        problems.append("its entry row points at a combination the index lacks (no search finds it)")
    elif combos[0] != want.combination:
        got = combos[0]
        names = [n for n, a, b in zip(COMBINATION_FIELDS, want.combination, got, strict=False) if a != b]
        if len(got) != len(want.combination):
            names = list(COMBINATION_FIELDS)
        problems.append(
            f"its entry row's combination in the index has another {' and '.join(names)} "
            "(searches by those miss it or find it wrongly)"
        )
    gen = idx >> GEN_SHIFT
    wanted: dict[tuple[object, object], str] = {}
    for name, term in want.postings:
        wanted.setdefault((gen, term), name)
    have = Counter(postings)
    missing = [(key, name) for key, name in wanted.items() if not have[key]]
    extra = [key for key in have if key not in wanted]
    lacking: list[str] = []
    for (_, wanted_term), name in missing:
        moved = next((key for key in extra if key[1] == wanted_term), None)
        if moved is not None:
            extra.remove(moved)
            problems.append(
                f"its {name} posting is filed under generation {moved[0]!r}, not {gen}, where lookups miss it"
            )
        else:
            lacking.append(name)
    if len(lacking) == 1 and len(extra) == 1:
        problems.append(
            f"its {lacking[0]} posting's term was changed in the index (to {_show(extra[0][1])}: "
            "a search for its own term misses it)"
        )
    else:
        problems.extend(
            f"the index lacks its {name} posting (a search by its {name} misses it)" for name in lacking
        )
        problems.extend(
            f"the index has a posting for it that it does not carry (term {_show(key[1])}, "
            f"generation {key[0]!r}: a search by that term finds it wrongly)"
            for key in extra
        )
    problems.extend(
        f"the index has its {wanted[key]} posting {count} times"
        for key, count in have.items()
        if count > 1 and key in wanted
    )
    return "; ".join(problems) or None


def first_difference(
    expected: Iterable[ExpectedEntry],
    entries: Iterable[tuple[int, Combination | None]],
    postings: Iterable[tuple[object, object, int]],
) -> Mismatch | None:
    """The first entry whose index rows differ from those it should have. ``expected``: the
    entries' rows (:func:`expected_entry`); ``entries``: the index's entry rows (idx,
    combination, ``None`` when its id is not in ``combos``); ``postings``: the index's posting
    rows (gen, term, idx); each ascending by entry index. Reads one entry's rows at a time."""
    streams: list[Iterator[tuple[int, int, Any]]] = [
        ((e.idx, 0, e) for e in expected),
        ((idx, 1, combo) for idx, combo in entries),
        ((idx, 2, (gen, term)) for gen, term, idx in postings),
    ]
    current: int | None = None
    rows: tuple[list[ExpectedEntry], list[Combination | None], list[tuple[object, object]]] = ([], [], [])

    def check() -> Mismatch | None:
        assert current is not None
        what = _describe(current, *rows)
        return Mismatch(current, what) if what is not None else None

    for idx, kind, row in heapq.merge(*streams, key=lambda item: item[0]):
        if idx != current:
            if current is not None and (found := check()) is not None:
                return found
            current = idx
            rows = ([], [], [])
        rows[kind].append(row)
    return check() if current is not None else None


def locate(
    index: IndexDigest,
    log_sums: Mapping[int, int],
    *,
    size: int,
    shift: int = BUCKET_SHIFT,
    compare: Callable[[int, int], Mismatch | None],
) -> Mismatch | None:
    """The first entry whose index rows differ, or ``None``: the buckets whose sums differ are
    compared row by row, lowest first (``compare(start, stop)``: :func:`first_difference` over
    entries ``[start, stop)``), until one names an entry; a stray row (an entry outside the
    index) is named if it comes first."""
    found: Mismatch | None = None
    unexplained: int | None = None
    for bucket in differing_buckets(index.sums, log_sums):
        start, stop = bucket << shift, min((bucket + 1) << shift, size)
        found = compare(start, stop)
        if found is not None:
            break
        if unexplained is None:
            unexplained = start
    stray = index.stray
    if stray is not None and (found is None or stray.entry < found.entry):
        found = stray
    if found is None and unexplained is not None:
        last = min(unexplained + (1 << shift), size) - 1
        found = Mismatch(
            unexplained,
            f"the index's rows of entries {unexplained} to {last} differ from the log's, but reading "
            "them again found no difference (the index changed during verification: verify again)",
        )
    return found


# --- reading index.sqlite ---------------------------------------------------------------------


class IndexComparison:
    """One verification's comparison of ``index.sqlite`` with the log.

    :meth:`open` reads the index's size and sums its rows in one read transaction (before the
    log is scanned: a live log's follower goes on indexing, and only entries indexed then are
    compared); verification then feeds :attr:`log` every entry below :attr:`size`;
    :meth:`finish` compares and, where a bucket differs, reads it again from both sides to name
    the first entry. :class:`~audit.index.IndexDamaged` if the index cannot be read meanwhile."""

    def __init__(
        self, path: Path, log_id: str, *, shift: int = BUCKET_SHIFT, key: bytes | None = None
    ) -> None:
        self.path = path
        self.log_id = log_id
        self.shift = shift
        self.digest = RowDigest(key)
        self.log = LogDigest(self.digest, shift=shift)
        self.size: int | None = None
        """Entries indexed when :meth:`open` read the index (``None``: not compared)."""
        self.note: str | None = None
        """Why the index is not compared, when it is not."""
        self.index: IndexDigest | None = None
        self.damage: IndexDamaged | None = None
        """The index could not be read whole: :meth:`finish` raises it."""

    def _damaged(self, detail: str) -> IndexDamaged:
        return IndexDamaged(f"the index {self.path} is damaged ({detail}): run dsgw audit reindex")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(
            f"{self.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )

    def open(self, progress: Callable[[str], None] | None = None) -> int | None:
        """Read the index's size and sum its rows; the size, or ``None`` (and :attr:`note`) when
        there is no index of this log to compare."""
        if not self.path.is_file():
            self.note = "there is no index (dsgw audit reindex builds it)"
            return None
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            self.note = f"the index cannot be opened ({exc})"
            return None
        try:
            try:
                conn.execute("BEGIN")  # one snapshot: the size and the rows it sums
                meta = {str(k): v for k, v in conn.execute("SELECT key, value FROM meta")}
            except sqlite3.Error as exc:
                self.note = f"the index cannot be read ({exc})"
                return None
            if meta.get("log_id") != self.log_id or meta.get("schema") != SCHEMA_VERSION:
                self.note = "the index is another log's or of another schema version (dsgw audit reindex)"
                return None
            try:
                size = int(meta.get("size", 0))
            except (ValueError, TypeError):
                self.note = f"the index's size is not a number ({meta.get('size')!r})"
                return None
            if progress is not None:
                progress("index: summing its rows")
            try:
                self.index = self._digest(conn, size)
            except (sqlite3.DatabaseError, ValueError, TypeError) as exc:
                # reported once the log itself verified (the index is not evidence)
                self.damage = self._damaged(f"{type(exc).__name__}: {exc}")
            except IndexDamaged as exc:
                self.damage = exc
            self.size = size
            return size
        finally:
            conn.close()

    def _digest(self, conn: sqlite3.Connection, size: int) -> IndexDigest:
        combos = _combinations(conn)
        try:
            return digest_index(
                conn.execute("SELECT idx, combo FROM entries"),
                combos,
                conn.execute("SELECT gen, term, idx FROM postings"),
                size=size,
                digest=self.digest,
                shift=self.shift,
            )
        except BadIndexRow as exc:
            raise self._damaged(str(exc)) from None

    def finish(self, frames: Callable[[int], Iterable[tuple[int, bytes]]]) -> Mismatch | None:
        """The first entry whose index rows differ from the log's, or ``None``. ``frames(start)``
        gives (index, terms section) of the log's entries from ``start`` on, to read a differing
        bucket again."""
        if self.damage is not None:
            raise self.damage
        assert self.size is not None and self.index is not None
        return locate(
            self.index,
            self.log.finish(),
            size=self.size,
            shift=self.shift,
            compare=lambda start, stop: self._compare_rows(start, stop, frames),
        )

    def _compare_rows(
        self, start: int, stop: int, frames: Callable[[int], Iterable[tuple[int, bytes]]]
    ) -> Mismatch | None:
        def expected() -> Iterator[ExpectedEntry]:
            for idx, section in frames(start):
                if idx >= stop:
                    return
                try:
                    yield expected_entry(idx, section)
                except RecordError:  # the scan read these terms: the log changed since
                    return

        conn = self._connect()
        try:
            combos = _combinations(conn)
            entries = (
                (idx, combos.get(combo))
                for idx, combo in conn.execute(
                    "SELECT idx, combo FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx", (start, stop)
                )
            )
            postings = conn.execute(
                "SELECT gen, term, idx FROM postings WHERE idx >= ? AND idx < ? ORDER BY idx", (start, stop)
            )
            return first_difference(expected(), entries, postings)
        except sqlite3.DatabaseError as exc:
            raise self._damaged(f"{type(exc).__name__}: {exc}") from None
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.close()


def _combinations(conn: sqlite3.Connection) -> dict[object, Combination]:
    """Every combination of the index by id, as search reads it (few thousand rows a year)."""
    columns = ", ".join(COMBINATION_FIELDS)
    return {row[0]: tuple(row[1:]) for row in conn.execute(f"SELECT id, {columns} FROM combos")}
