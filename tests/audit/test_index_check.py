"""``dsgw audit verify --auditor-key`` compares the search index with the entries' terms.

Unit tests of the pure parts of :mod:`audit.index_check` (the bucket digests, the row-by-row
comparison, a property test that a single deleted, added, moved or changed row names the right
entry), then end-to-end tests: a real log (access, consent-change and push entries, several
segments, a checkpoint every 10 entries) whose ``index.sqlite`` is edited with sqlite3 as an
attacker hiding an entry from search would; verification (library and command line) must fail,
naming the entry. Without the auditor key the index is not compared, and the report says so.
"""

from __future__ import annotations

import json
import random
import sqlite3
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.checkpoints import CheckpointPolicy
from audit.entry import AuditEntry
from audit.index_check import (
    BadIndexRow,
    Combination,
    ExpectedEntry,
    IndexDigest,
    LogDigest,
    Mismatch,
    RowDigest,
    combination_of_key,
    differing_buckets,
    digest_index,
    expected_entry,
    first_difference,
    locate,
)
from audit.keys import FileKeyProvider, Keyring
from audit.layout import HomeKeys, LogMeta
from audit.log import AuditLog
from audit.reader import LogReader
from audit.record import FIELD_CODES, parse_terms
from audit.segment import list_segments
from audit.verify import VerifyReport, verify_log
from dsgw.v1 import audit_pb2
from tests.audit.cli_run import dsgw, one_line
from tests.audit.conftest import auditor
from tests.audit.crash_writer import consent_entry, entry, make_log, push_entry
from tests.audit.test_verify import fix_crc, segment_of

# --- the pure parts -----------------------------------------------------------------------------

_HEAD = struct.Struct(">BBIB")
KIND = {"access": 1, "consent_change": 2, "push_notification": 3}


def combo_key(kind: str, day: int, **terms: bytes) -> bytes:
    """A combination key (audit.record's format) with the given column terms."""
    items = sorted((FIELD_CODES[name], term) for name, term in terms.items())
    return _HEAD.pack(1, KIND[kind], day, len(items)) + b"".join(bytes((c,)) + t for c, t in items)


KEYS = [
    combo_key("access", 20_000, caller=b"c" * 16, purpose=b"p" * 16, decision=b"d" * 16, provider=b"h" * 16),
    combo_key("access", 20_001, caller=b"C" * 16, purpose=b"p" * 16, decision=b"d" * 16, provider=b"h" * 16),
    combo_key("consent_change", 20_000, purpose=b"p" * 16),
    combo_key("push_notification", 20_002),
]
FIELDS = ("subject", "consent", "policy")

Model = list[tuple[int, tuple[tuple[str, bytes], ...]]]
"""Each entry: (combination number into KEYS, its postings (field, term))."""


class Index:
    """An index as plain rows, made from a model the way the follower makes it."""

    def __init__(self, model: Model) -> None:
        self.combos: dict[object, Combination] = {n + 1: combination_of_key(k) for n, k in enumerate(KEYS)}
        self.entries: list[tuple[Any, Any]] = [(i, c + 1) for i, (c, _) in enumerate(model)]
        self.postings: list[tuple[Any, Any, Any]] = [
            (i >> 16, term, i) for i, (_, posts) in enumerate(model) for _, term in posts
        ]


def check(model: Model, index: Index, *, shift: int, size: int | None = None) -> Mismatch | None:
    """What verify does, on plain data: both digests, then the differing buckets row by row."""
    size = len(model) if size is None else size
    digest = RowDigest()
    rows = random.sample(index.postings, len(index.postings))  # any order
    indexed = digest_index(index.entries, index.combos, rows, size=size, digest=digest, shift=shift)
    log = LogDigest(digest, shift=shift)
    for i, (c, posts) in enumerate(model[:size]):
        log.add(i, KEYS[c], tuple(term for _, term in posts))

    def compare(start: int, stop: int) -> Mismatch | None:
        expected = [
            ExpectedEntry(i, combination_of_key(KEYS[model[i][0]]), model[i][1]) for i in range(start, stop)
        ]
        entries = sorted(
            ((i, index.combos.get(c)) for i, c in index.entries if start <= i < stop), key=lambda r: r[0]
        )
        postings = sorted((r for r in index.postings if start <= r[2] < stop), key=lambda r: r[2])
        return first_difference(expected, entries, postings)

    return locate(indexed, log.finish(), size=size, shift=shift, compare=compare)


def test_an_untouched_index_has_the_logs_sums_whatever_the_order() -> None:
    model: Model = [(i % 4, (("subject", bytes([i]) * 16),) if i % 3 else ()) for i in range(50)]
    index = Index(model)
    digest = RowDigest(b"k" * 32)
    log = LogDigest(digest, shift=3)
    for i, (c, posts) in enumerate(model):
        log.add(i, KEYS[c], tuple(t for _, t in posts))
    sums = log.finish()
    for _ in range(5):
        rows = random.sample(index.postings, len(index.postings))
        entries = random.sample(index.entries, len(index.entries))
        indexed = digest_index(entries, index.combos, rows, size=50, digest=digest, shift=3)
        assert indexed.sums == sums and indexed.stray is None and indexed.rows == 50 + len(rows)
    assert differing_buckets(sums, dict(sums)) == []
    assert check(model, index, shift=3) is None
    # another key, other sums (whoever wrote the index cannot know the key verify draws)
    other = digest_index(index.entries, index.combos, index.postings, size=50, digest=RowDigest(), shift=3)
    assert other.sums != sums


def test_differing_buckets_counts_a_missing_bucket_as_zero() -> None:
    assert differing_buckets({0: 1, 1: 2}, {0: 1, 1: 3, 2: 0, 3: 4}) == [1, 3]


def test_first_difference_says_what_differs() -> None:
    combination = combination_of_key(KEYS[0])
    subject, consent = b"s" * 16, b"k" * 16
    want = [ExpectedEntry(5, combination, (("subject", subject), ("consent", consent)))]
    good: list[tuple[object, object, int]] = [(0, subject, 5), (0, consent, 5)]
    assert first_difference(want, [(5, combination)], good) is None

    def what(
        entries: list[tuple[int, Combination | None]], postings: list[tuple[object, object, int]]
    ) -> str:
        found = first_difference(want, entries, postings)
        assert found is not None and found.entry == 5
        return found.what

    assert "lacks its consent posting" in what([(5, combination)], [(0, subject, 5)])
    assert "lacks its entry row" in what([], good)
    assert "points at a combination the index lacks" in what([(5, None)], good)
    other = combination_of_key(KEYS[1])
    assert "another day and caller" in what([(5, other)], good)
    assert "subject posting's term was changed" in what(
        [(5, combination)], [(0, b"x" * 16, 5), (0, consent, 5)]
    )
    assert "filed under generation 7, not 0" in what([(5, combination)], [(7, subject, 5), (0, consent, 5)])
    assert "does not carry" in what([(5, combination)], [*good, (0, b"x" * 16, 5)])
    assert "subject posting 2 times" in what([(5, combination)], [*good, (0, subject, 5)])
    found = first_difference(want, [(5, combination)], [*good, (0, subject, 6)])
    assert found == Mismatch(6, "the index has rows for it, but it is not among the entries compared")
    assert "to str 'text'" in what([(5, combination)], [(0, "text", 5), (0, consent, 5)])


def test_rows_outside_the_index_are_stray_and_a_bad_index_type_is_refused() -> None:
    model: Model = [(0, (("subject", b"s" * 16),))] * 4
    index = Index(model)
    index.postings.append((0, b"s" * 16, 9))
    index.postings.append((0, b"s" * 16, 7))
    found = check(model, index, shift=1)
    assert found is not None and found.entry == 7 and "outside the 4 entries it holds" in found.what
    index.entries.append(("3", 1))
    with pytest.raises(BadIndexRow):
        digest_index(index.entries, index.combos, index.postings, size=4, digest=RowDigest())


def test_a_bucket_that_differs_but_compares_equal_is_still_a_mismatch() -> None:
    indexed = IndexDigest({0: 1})
    found = locate(indexed, {0: 2}, size=10, shift=2, compare=lambda start, stop: None)
    assert found is not None and found.entry == 0 and "verify again" in found.what


def test_expected_entry_of_a_real_terms_section(tmp_path: Path) -> None:
    log_dir, home, _ = make_log(tmp_path)
    with AuditLog.open(log_dir, home=home, index="thread") as log:
        log.append(consent_entry(3).to_proto())
    frame = LogReader(log_dir).frame(0)
    found = expected_entry(0, frame.terms)
    terms = parse_terms(frame.terms)
    assert found.combination[:2] == ("2026-11-03", "consent_change")
    assert found.postings == (("subject", terms.get("subject")), ("consent", terms.get("consent")))


@st.composite
def models(draw: st.DrawFn) -> Model:
    size = draw(st.integers(1, 40))
    model: Model = []
    for _ in range(size):
        combo = draw(st.integers(0, len(KEYS) - 1))
        fields = sorted(draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=2)), key=FIELDS.index)
        # an entry's terms differ (HMACs of different fields)
        terms = draw(
            st.lists(
                st.binary(min_size=16, max_size=16), min_size=len(fields), max_size=len(fields), unique=True
            )
        )
        model.append((combo, tuple(zip(fields, terms, strict=True))))
    return model


MUTATIONS = ["delete", "add", "move", "change", "entry_row", "combination", "stray", "none"]


@settings(max_examples=400, deadline=None)
@given(model=models(), shift=st.integers(0, 4), mutation=st.sampled_from(MUTATIONS), data=st.data())
def test_a_single_changed_row_names_its_entry(
    model: Model, shift: int, mutation: str, data: st.DataObject
) -> None:
    index = Index(model)
    size = len(model)
    entry_at = st.integers(0, size - 1)
    posted = list(range(len(index.postings)))
    expected: int | None
    if (mutation in ("delete", "move", "change") and not posted) or (mutation == "move" and size < 2):
        mutation = "add"
    if mutation == "delete":
        gen, term, idx = index.postings.pop(data.draw(st.sampled_from(posted)))
        expected = idx
    elif mutation == "add":
        idx = data.draw(entry_at)
        term = data.draw(st.binary(min_size=16, max_size=16))
        if (0, term, idx) in index.postings:
            return  # a row it has: not a change
        index.postings.append((idx >> 16, term, idx))
        expected = idx
    elif mutation == "move":
        n = data.draw(st.sampled_from(posted))
        gen, term, idx = index.postings[n]
        target = data.draw(entry_at.filter(lambda i: i != idx))
        if (0, term, target) in index.postings:
            return
        index.postings[n] = (target >> 16, term, target)
        expected = min(idx, target)
    elif mutation == "change":
        n = data.draw(st.sampled_from(posted))
        gen, term, idx = index.postings[n]
        new = data.draw(st.binary(min_size=16, max_size=16).filter(lambda t: t != term))
        if (gen, new, idx) in index.postings:
            return
        index.postings[n] = (gen, new, idx)
        expected = idx
    elif mutation == "entry_row":
        expected = data.draw(entry_at)
        del index.entries[expected]
    elif mutation == "combination":
        expected = data.draw(entry_at)
        old = index.entries[expected][1]
        index.entries[expected] = (expected, data.draw(st.integers(1, len(KEYS)).filter(lambda c: c != old)))
    elif mutation == "stray":
        expected = size + data.draw(st.integers(0, 100))
        index.postings.append((expected >> 16, b"s" * 16, expected))
    else:
        expected = None
    found = check(model, index, shift=shift)
    assert (found.entry if found else None) == expected, found


# --- a real log ---------------------------------------------------------------------------------

EVERY = 10
SIZE = 60
CONSENT = 13  # consent-change entries: i % 10 == 3; push notifications: i % 10 == 7


def make(i: int) -> audit_pb2.AuditEntry:
    model: AuditEntry = consent_entry(i) if i % 10 == 3 else push_entry(i) if i % 10 == 7 else entry(i)
    return model.to_proto()


def build(log_dir: Path, home: Path, start: int, stop: int, *, index: str = "thread") -> None:
    policy = CheckpointPolicy(every_entries=10**9, every_seconds=3600)
    with AuditLog.open(log_dir, home=home, index=index, policy=policy) as log:
        for i in range(start, stop):
            log.append(make(i))
            if (i + 1) % EVERY == 0:
                log.checkpoint_now(timeout=30)
        if index != "none":
            assert log.flush_index(timeout=30)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    log_dir, home, _ = make_log(tmp_path_factory.mktemp("pristine"), segment_bytes=8192)
    build(log_dir, home, 0, SIZE)
    assert len(list_segments(log_dir / "segments")) >= 3
    return log_dir, home


def verify(log_dir: Path, home: Path | None = None, **kw: Any) -> VerifyReport:
    return verify_log(LogReader(log_dir), auditor=auditor(home) if home else None, jobs=1, **kw)


def sql(log_dir: Path, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement on the log's index, as someone editing the file would."""
    conn = sqlite3.connect(log_dir / "index.sqlite")
    try:
        rows = conn.execute(statement, params).fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


def term_of(log_dir: Path, idx: int, name: str) -> bytes:
    term = parse_terms(LogReader(log_dir).frame(idx).terms).get(name)
    assert term is not None
    return term


def mismatch(log_dir: Path, home: Path, entry: int, *words: str) -> None:
    """Verification with the auditor key names ``entry`` (and ``words``); without it, it passes
    as before, saying the index was not compared."""
    report = verify(log_dir, home)
    problem = report.problem
    assert problem is not None and problem.code == "INDEX_MISMATCH", problem
    assert problem.entry == entry and problem.message.startswith(f"entry {entry}: "), problem
    assert problem.message.endswith("; run dsgw audit reindex") and "\n" not in problem.message
    for word in words:
        assert word in problem.message, problem.message
    assert report.to_json()["problem"]["code"] == "INDEX_MISMATCH"
    plain = verify(log_dir)
    assert plain.ok and not plain.index_compared and "auditor key" in (plain.index_note or "")


def test_an_untouched_log_passes_and_says_the_index_was_compared(log: Path, home: Path) -> None:
    report = verify(log, home)
    assert report.ok, report.problem
    assert report.opened == SIZE and report.index_compared and report.index_entries == SIZE
    assert report.summary().endswith(f"; index compared ({SIZE} entries)")
    data = report.to_json()
    assert data["index_compared"] is True and data["index_entries"] == SIZE and data["index_note"] is None


def test_without_the_key_the_index_is_not_compared_and_the_report_says_so(log: Path) -> None:
    report = verify(log)
    assert report.ok and not report.index_compared and report.index_entries == 0
    assert report.summary().endswith("; index not compared: it needs the auditor key (--auditor-key)")
    assert report.to_json()["index_note"] == "it needs the auditor key (--auditor-key)"


def test_a_log_without_an_index_is_verified_and_the_index_not_compared(log: Path, home: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{log / 'index.sqlite'}{suffix}").unlink(missing_ok=True)
    report = verify(log, home)
    assert report.ok and not report.index_compared and "there is no index" in (report.index_note or "")


def test_a_deleted_subject_posting(log: Path, home: Path) -> None:
    sql(log, "DELETE FROM postings WHERE idx = 25")
    mismatch(log, home, 25, "the index lacks its subject posting")


def test_a_deleted_consent_posting(log: Path, home: Path) -> None:
    sql(log, "DELETE FROM postings WHERE idx = ? AND term = ?", CONSENT, term_of(log, CONSENT, "consent"))
    mismatch(log, home, CONSENT, "the index lacks its consent posting")


def test_a_posting_inserted_for_another_entry(log: Path, home: Path) -> None:
    """Entry 7's subject term made to point at entry 42 too: a search finds 42 wrongly."""
    sql(log, "INSERT INTO postings VALUES (0, ?, 42)", term_of(log, 7, "subject"))
    mismatch(log, home, 42, "a posting for it that it does not carry")


def test_a_posting_moved_to_another_entry(log: Path, home: Path) -> None:
    sql(log, "UPDATE postings SET idx = 51 WHERE idx = 12 AND term = ?", term_of(log, 12, "subject"))
    mismatch(log, home, 12, "the index lacks its subject posting")


def test_a_changed_term(log: Path, home: Path) -> None:
    sql(log, "UPDATE postings SET term = ? WHERE idx = 40", b"\x00" * 16)
    mismatch(log, home, 40, "its subject posting's term was changed")


def test_a_posting_under_another_generation(log: Path, home: Path) -> None:
    sql(log, "UPDATE postings SET gen = 9 WHERE idx = 33")
    mismatch(log, home, 33, "filed under generation 9, not 0")


def test_a_posting_for_an_entry_the_index_does_not_hold(log: Path, home: Path) -> None:
    sql(log, "INSERT INTO postings VALUES (0, ?, 1000)", term_of(log, 7, "subject"))
    mismatch(log, home, 1000, "outside the 60 entries it holds")


def test_a_deleted_entry_row(log: Path, home: Path) -> None:
    sql(log, "DELETE FROM entries WHERE idx = 34")
    mismatch(log, home, 34, "the index lacks its entry row")


def test_a_deleted_combination_row(log: Path, home: Path) -> None:
    combo = sql(log, "SELECT combo FROM entries WHERE idx = 44")[0][0]
    first = sql(log, "SELECT min(idx) FROM entries WHERE combo = ?", combo)[0][0]
    sql(log, "DELETE FROM combos WHERE id = ?", combo)
    mismatch(log, home, first, "points at a combination the index lacks")


def test_a_changed_combination_column(log: Path, home: Path) -> None:
    combo = sql(log, "SELECT combo FROM entries WHERE idx = 21")[0][0]
    first = sql(log, "SELECT min(idx) FROM entries WHERE combo = ?", combo)[0][0]
    sql(log, "UPDATE combos SET caller = ? WHERE id = ?", b"\x01" * 16, combo)
    mismatch(log, home, first, "another caller")


def test_an_entry_pointed_at_another_combination(log: Path, home: Path) -> None:
    combo = sql(log, "SELECT combo FROM entries WHERE idx = 23")[0][0]
    other = sql(log, "SELECT combo FROM entries WHERE idx = 24")[0][0]
    assert combo != other
    sql(log, "UPDATE entries SET combo = ? WHERE idx = 23", other)
    mismatch(log, home, 23, "its entry row's combination in the index has another")


def test_the_first_of_two_changes_is_named(log: Path, home: Path) -> None:
    sql(log, "DELETE FROM postings WHERE idx = 50")
    sql(log, "DELETE FROM postings WHERE idx = 15")
    mismatch(log, home, 15)


def test_an_index_row_of_the_wrong_type_is_a_damaged_index(log: Path, home: Path) -> None:
    sql(log, "INSERT INTO postings VALUES (0, ?, 'x')", b"\x00" * 16)
    assert verify(log).ok
    problem = verify(log, home).problem
    assert problem is not None and problem.code == "INDEX_DAMAGED" and "reindex" in problem.message


def test_the_logs_own_problem_is_named_before_the_index(log: Path, home: Path) -> None:
    sql(log, "DELETE FROM postings WHERE idx = 5")
    f = LogReader(log).frame(25)
    path = segment_of(log, f)
    data = bytearray(path.read_bytes())
    data[f.offset + 12 + 8] ^= 0x01  # inside the subject's stored term
    fix_crc(data, f.offset)
    path.write_bytes(bytes(data))
    problem = verify(log, home).problem
    assert problem is not None and problem.code == "ENTRY_TERMS" and problem.entry == 25


def test_a_live_log_appended_during_verification_passes(log: Path, home: Path) -> None:
    """Entries appended and indexed while verify reads are not compared (the index's size is
    read, with its rows, before the scan), and are no mismatch."""
    segments = len(list_segments(log / "segments"))
    seen: list[str] = []

    def progress(line: str) -> None:
        if line.startswith("segment "):
            seen.append(line)
            if len(seen) == segments:
                build(log, home, SIZE, SIZE + 7)

    report = verify(log, home, progress=progress)
    assert len(seen) == segments
    assert report.ok, report.problem
    assert report.index_compared and report.index_entries == SIZE
    again = verify(log, home)
    assert again.ok and again.index_entries == SIZE + 7


def test_entries_not_yet_indexed_are_no_mismatch(log: Path, home: Path) -> None:
    build(log, home, SIZE, SIZE + 5, index="none")  # a writer whose follower never ran
    report = verify(log, home)
    assert report.ok, report.problem
    assert report.entries == SIZE + 5 and report.index_entries == SIZE


def test_a_gm_log(tmp_path: Path) -> None:
    log_dir, home, _ = make_log(tmp_path, suite="gm")
    build(log_dir, home, 0, 20)
    assert verify(log_dir, home).index_compared
    sql(log_dir, "DELETE FROM postings WHERE idx = 13 AND term = ?", term_of(log_dir, 13, "consent"))
    mismatch(log_dir, home, 13, "lacks its consent posting")


# --- shredded entries ---------------------------------------------------------------------------


def fake_now(monkeypatch: pytest.MonkeyPatch, when: datetime) -> None:
    """The writer's clock (which picks an entry's retention period, so its data key)."""

    class Clock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Clock:
            return cls.fromtimestamp(when.timestamp(), tz)

    monkeypatch.setattr("audit.log.datetime", Clock)


def test_shredded_entries_are_compared_with_the_terms_kept_in_their_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shredded entry's content is gone, but subject-report still finds (and counts) it
    through the index: its postings are compared with the clear terms of its frame."""
    log_dir, home, _ = make_log(tmp_path)
    for month, (start, stop) in ((10, (0, 8)), (11, (8, 14))):
        fake_now(monkeypatch, datetime(2026, month, 20, 12, tzinfo=UTC))
        build(log_dir, home, start, stop)
    monkeypatch.undo()
    meta = LogMeta.load(log_dir)
    provider = FileKeyProvider.from_public_key_file(HomeKeys(home).auditor_public_key)
    keyring = Keyring.open(log_dir / "keyring.jsonl", provider, log_id=meta.log_id)
    assert keyring.shred("2026-10", force=True)
    report = verify(log_dir, home)
    assert report.ok, report.problem
    assert report.shredded == 8 and report.opened == 6 and report.index_entries == 14
    sql(log_dir, "DELETE FROM postings WHERE idx = 3 AND term = ?", term_of(log_dir, 3, "subject"))
    mismatch(log_dir, home, 3, "lacks its subject posting")


# --- the command line ---------------------------------------------------------------------------


def test_the_command_line_names_the_entry(log: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = str(HomeKeys(home).auditor_key)
    code, out, err = dsgw(capsys, "audit", "verify", "--log", str(log), "--auditor-key", key)
    assert code == 0 and f"index compared ({SIZE} entries)" in out and err == "", err
    code, out, err = dsgw(capsys, "audit", "verify", "--log", str(log))
    assert code == 0 and "index not compared: it needs the auditor key (--auditor-key)" in out
    code, out, _ = dsgw(capsys, "audit", "verify", "--log", str(log), "--json")
    data = json.loads(out)
    assert code == 0 and data["index_compared"] is False and "--auditor-key" in data["index_note"]

    sql(log, "DELETE FROM postings WHERE idx = 25")
    code, out, err = dsgw(capsys, "audit", "verify", "--log", str(log))
    assert code == 0, err  # as before: without the key the index is not compared
    code, out, err = dsgw(capsys, "audit", "verify", "--log", str(log), "--auditor-key", key)
    assert code == 1 and out == ""
    one_line(err)
    assert (
        err.startswith("dsgw: entry 25: the index lacks its subject posting") and "dsgw audit reindex" in err
    )
    code, out, err = dsgw(capsys, "audit", "verify", "--log", str(log), "--auditor-key", key, "--json")
    data = json.loads(out)
    assert code == 1 and data["ok"] is False and data["index_compared"] is True
    assert data["problem"]["code"] == "INDEX_MISMATCH" and data["problem"]["entry"] == 25
    assert err == f"dsgw: {data['problem']['message']}\n"


def test_the_command_line_names_an_inserted_posting(
    log: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sql(log, "INSERT INTO postings VALUES (0, ?, 42)", term_of(log, 7, "subject"))
    key = str(HomeKeys(home).auditor_key)
    code, out, err = dsgw(capsys, "audit", "verify", "--log", str(log), "--auditor-key", key, "--json")
    assert code == 1 and json.loads(out)["problem"]["entry"] == 42
    one_line(err)
