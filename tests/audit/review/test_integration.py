"""The review tools over real logs of two replicas, written through the public log API."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, timedelta
from pathlib import Path
from typing import Any

import pytest

import audit.seal as seal
from adapters.agencies import Agency
from audit.checkpoints import CheckpointPolicy
from audit.entry import Access, AuditEntry, Decision, Subject, SubjectKind
from audit.keys import FileKeyProvider, Keyring, load_blind_index_key
from audit.layout import HomeKeys, LogMeta
from audit.log import AuditLog
from audit.review.export import verify_export
from audit.review.query import AuditorKeys, Criteria, EntryRef, LogCorrupted, LogReader, LogSet, ReviewError
from audit.review.report import ReportConfig, build_report
from audit.review.subject_report import subject_report
from tests.audit.review import OTHER, PERSON, SPIKE_DAY, Replicas, access, local, person

ME = Subject(kind=SubjectKind.PERSON, id=PERSON)


@pytest.fixture(scope="module")
def auditor(replicas: Replicas) -> AuditorKeys:
    return AuditorKeys(provider=FileKeyProvider.from_private_key_file(replicas.auditor_key))


@pytest.fixture
def logs(replicas: Replicas, auditor: AuditorKeys) -> Iterator[LogSet]:
    with LogSet.open([replicas.a.directory, replicas.b.directory], auditor) as opened:
        yield opened


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The indices of the entries decrypted (every call of open_sealed)."""
    calls: list[int] = []
    real = seal.open_sealed

    def counting(blob: bytes, **kw: Any) -> bytes:
        calls.append(kw["index"])
        return real(blob, **kw)

    monkeypatch.setattr("audit.review.query.open_sealed", counting)
    return calls


def _expected(replicas: Replicas, keep: Any) -> list[tuple[str, int]]:
    found = [(e.time, r.origin, i) for r, i, e in replicas.all() if keep(e)]
    return [(origin, i) for _, origin, i in sorted(found)]


def _refs(result: Any) -> list[tuple[str, int]]:
    return [(e.origin, e.index) for e in result.entries]


# --- search -----------------------------------------------------------------------------------


def test_search_by_subject_decrypts_only_the_subjects_entries(
    replicas: Replicas, logs: LogSet, opened: list[int]
) -> None:
    result = logs.search(Criteria(subject=ME))
    expected = _expected(replicas, lambda e: e.subject == ME)
    assert _refs(result) == expected
    assert len(expected) == 6 and {o for o, _ in expected} == {replicas.a.origin, replicas.b.origin}
    # exactly the matching entries were opened, nothing else of the 130-entry logs
    assert sorted(opened) == sorted(i for _, i in expected)
    assert [s.candidates for s in result.logs] == [4, 2]
    assert all(s.indexed == s.checkpoint_size for s in result.logs)


@pytest.mark.parametrize(
    ("criteria", "keep"),
    [
        (Criteria(caller=Agency.HRSS), lambda e: e.caller == Agency.HRSS),
        (
            Criteria(provider=Agency.TAX),
            lambda e: isinstance(e.body, Access) and e.body.provider == Agency.TAX,
        ),
        (Criteria(purpose="benefit_review"), lambda e: e.purpose == "benefit_review"),
        (
            Criteria(decision=Decision.DENIED),
            lambda e: isinstance(e.body, Access) and e.body.decision == Decision.DENIED,
        ),
        (Criteria(kind="consent_change"), lambda e: e.body.kind == "consent_change"),
        (
            Criteria(subject=ME, caller=Agency.TAX),
            lambda e: e.subject == ME and e.caller == Agency.TAX,
        ),
        (
            Criteria(caller=Agency.TAX, since=local(2026, 11, 16, 10, 5), until=local(2026, 11, 16, 10, 8)),
            lambda e: (
                e.caller == Agency.TAX and local(2026, 11, 16, 10, 5) <= e.time < local(2026, 11, 16, 10, 8)
            ),
        ),
        (
            # a local day that spans two UTC days
            Criteria(since=local(2026, 11, 5), until=local(2026, 11, 6)),
            lambda e: local(2026, 11, 5) <= e.time < local(2026, 11, 6),
        ),
        (Criteria(subject=Subject(kind=SubjectKind.PERSON, id=person(999))), lambda e: False),
        (Criteria(purpose="never_used"), lambda e: False),
    ],
)
def test_search_criteria(replicas: Replicas, logs: LogSet, criteria: Criteria, keep: Any) -> None:
    assert _refs(logs.search(criteria)) == _expected(replicas, keep)


def test_time_range_opens_only_the_days_in_range(replicas: Replicas, logs: LogSet, opened: list[int]) -> None:
    result = logs.search(Criteria(since=local(2026, 11, 17, 14, 10), until=local(2026, 11, 17, 14, 20)))
    assert len(result.entries) == 10
    # the index knows UTC days: the entries of 2026-11-17 (UTC) are opened, nothing else
    same_day = [i for r, i, e in replicas.all() if e.time.astimezone(UTC).date() == date(2026, 11, 17)]
    assert sorted(opened) == sorted(same_day)
    assert len(same_day) == 56


def test_limit(logs: LogSet) -> None:
    result = logs.search(Criteria(caller=Agency.TAX), limit=3)
    assert len(result.entries) == 3 and result.truncated
    assert result.to_json()["criteria"] == {"caller": "tax"}


def test_blind_key_alone_finds_but_cannot_read(replicas: Replicas) -> None:
    key = load_blind_index_key(HomeKeys(replicas.home).blind_index_key)
    with LogReader.open(replicas.a.directory, AuditorKeys(blind_keys=(key,))) as reader:
        assert reader.candidates(Criteria(subject=ME)) == replicas.a.indices(lambda e: e.subject == ME)
        with pytest.raises(ReviewError, match="auditor key"):
            reader.entry(0)
    # replica b has its own blind-index key: the home's does not fit, and without the auditor key
    # it cannot be unwrapped
    with (
        LogReader.open(replicas.b.directory, AuditorKeys(blind_keys=(key,))) as reader,
        pytest.raises(ReviewError, match="blind-index key"),
    ):
        reader.candidates(Criteria(subject=ME))


def test_wrong_auditor_key(replicas: Replicas, tmp_path: Path) -> None:
    other = HomeKeys(tmp_path / "other")
    other.generate()
    keys = AuditorKeys(provider=FileKeyProvider.from_private_key_file(other.auditor_key))
    with LogSet.open([replicas.a.directory], keys) as logs, pytest.raises(ReviewError, match="auditor key"):
        logs.search(Criteria(subject=ME))


def test_not_a_log_and_duplicates(replicas: Replicas, auditor: AuditorKeys, tmp_path: Path) -> None:
    from audit.layout import LogLayoutError

    with pytest.raises(LogLayoutError):
        LogSet.open([tmp_path], auditor)
    with pytest.raises(ReviewError, match="twice"):
        LogSet.open([replicas.a.directory, replicas.a.directory], auditor)
    with pytest.raises(ReviewError, match="no log"):
        LogSet.open([], auditor)


# --- the index is not evidence ----------------------------------------------------------------


@pytest.fixture
def copy_a(replicas: Replicas, tmp_path: Path) -> Path:
    target = tmp_path / "gw-a"
    shutil.copytree(replicas.a.directory, target)
    return target


def test_a_lying_index_never_shows_another_persons_entry(
    replicas: Replicas, auditor: AuditorKeys, copy_a: Path, opened: list[int]
) -> None:
    with LogReader.open(copy_a, auditor) as reader:
        term = reader.indexer.subject_term("person", PERSON)
    other = replicas.a.indices(lambda e: e.subject == Subject(kind=SubjectKind.PERSON, id=OTHER))[0]
    with sqlite3.connect(copy_a / "index.sqlite") as conn:
        conn.execute("INSERT INTO postings(gen, term, idx) VALUES (0, ?, ?)", (term, other))
    with LogSet.open([copy_a], auditor) as logs:
        result = logs.search(Criteria(subject=ME))
    assert other in opened
    assert other not in [e.index for e in result.entries]
    assert all(e.entry.subject == ME for e in result.entries)
    assert result.logs[0].candidates == result.logs[0].matched + 1


def test_a_tampered_entry_fails_the_search(replicas: Replicas, auditor: AuditorKeys, copy_a: Path) -> None:
    target = replicas.a.indices(lambda e: e.subject == ME)[1]
    with LogReader.open(copy_a, auditor) as reader:
        _, off = reader.index.location(target) or (0, 0)
    path = next((copy_a / "segments").iterdir())
    data = bytearray(path.read_bytes())
    data[off + 40] ^= 0x01
    path.write_bytes(bytes(data))
    with LogSet.open([copy_a], auditor) as logs, pytest.raises(LogCorrupted, match=f"entry {target}"):
        logs.search(Criteria(subject=ME))


def test_shredded_entries_are_skipped_and_counted(auditor: AuditorKeys, copy_a: Path) -> None:
    assert auditor.provider is not None
    meta = LogMeta.load(copy_a)
    keyring = Keyring.open(copy_a / "keyring.jsonl", auditor.provider, log_id=meta.log_id)
    for period in keyring.periods():
        keyring.shred(period, force=True)
    with LogSet.open([copy_a], auditor) as logs:
        result = logs.search(Criteria(subject=ME))
    assert result.entries == []
    assert result.logs[0].shredded == 4


def test_a_shredded_entry_exported_verifies_with_the_keyring(
    replicas: Replicas, auditor: AuditorKeys, copy_a: Path
) -> None:
    """Marked shredded by the export and shredded in the keyring: the mark holds (a mark on an
    entry whose key still exists is refused: test_export)."""
    assert auditor.provider is not None
    meta = LogMeta.load(copy_a)
    keyring = Keyring.open(copy_a / "keyring.jsonl", auditor.provider, log_id=meta.log_id)
    for period in keyring.periods():
        keyring.shred(period, force=True)
    key = HomeKeys(replicas.home).load().checkpoint_key
    with LogSet.open([copy_a], auditor) as logs:
        signer = logs.signer(key, "auditor")
        bundle = logs.export([EntryRef(meta.log_id, 0)], signer, decrypt=True)
    assert "shredded" in bundle["logs"][0]["entries"][0]
    shredded = Keyring.open(copy_a / "keyring.jsonl", auditor.provider, log_id=meta.log_id)
    result = verify_export(bundle, [meta.vkey], data_keys={meta.log_id: shredded})
    assert len(result.logs[0].shredded) == 1


# --- report, subject report -------------------------------------------------------------------


def test_report_over_two_logs(replicas: Replicas, logs: LogSet) -> None:
    entries = logs.search(Criteria()).entries
    assert len(entries) == len(replicas.a.entries) + len(replicas.b.entries)
    report = build_report(entries, since=SPIKE_DAY, until=SPIKE_DAY + timedelta(days=3))
    found = {(a.rule, a.day.isoformat(), a.caller, a.operator) for a in report.anomalies}
    assert found == {
        ("volume_spike", "2026-11-16", "tax", ""),
        # hrss made one request on the 5th (replica b), none since: 55 on the 17th is a spike too
        ("volume_spike", "2026-11-17", "hrss", ""),
        ("operator_breadth", "2026-11-17", "hrss", "op-wide"),
        ("off_hours", "2026-11-17", "civil_affairs", "op-night"),
        ("no_basis", "2026-11-18", "education", ""),
    }
    spike = next(a for a in report.anomalies if a.rule == "volume_spike" and a.caller == "tax")
    assert spike.count == 20 and spike.detail["median"] == 5
    assert {r.origin for r in spike.refs} == {replicas.a.origin}
    assert report.denial_reasons == {"CONSENT_MISSING": 1}
    quiet = build_report(entries, ReportConfig(spike_factor=5, operator_max_subjects=60), since=SPIKE_DAY)
    assert {(a.rule, a.caller) for a in quiet.anomalies} == {
        ("volume_spike", "hrss"),
        ("off_hours", "civil_affairs"),
        ("no_basis", "education"),
    }


def test_subject_report_over_two_logs(replicas: Replicas, logs: LogSet) -> None:
    report = subject_report(ME, logs.search(Criteria(subject=ME)).entries)
    assert [i.reference for i in report.items if i.kind == "access"] == [
        "person-read-1",
        "person-read-2",
        "req-1",
    ]
    assert report.readers == {"tax": 1, "hrss": 1}
    assert report.denied == 1


# --- export -----------------------------------------------------------------------------------


def test_export_from_two_logs_verifies_offline(replicas: Replicas, logs: LogSet) -> None:
    key = HomeKeys(replicas.home).load().checkpoint_key
    refs = [e.ref for e in logs.search(Criteria(subject=ME)).entries]
    signer = logs.signer(key, "auditor", prefer=logs.origins(refs))
    assert signer.name == replicas.a.origin  # the home's key is replica a's checkpoint key
    bundle = logs.export(refs, signer, decrypt=True, note="complaint 42")
    vkeys = [LogMeta.load(r.directory).vkey for r in (replicas.a, replicas.b)]
    result = verify_export(bundle, vkeys)
    assert [(v.origin, v.entries, v.decrypted) for v in result.logs] == [
        (replicas.a.origin, 4, 4),
        (replicas.b.origin, 2, 2),
    ]
    assert all(e.entry.subject == ME for e in result.entries)
    provider = FileKeyProvider.from_private_key_file(replicas.auditor_key)
    keyrings = {
        r.origin: Keyring.open(r.directory / "keyring.jsonl", provider, log_id=r.origin)
        for r in (replicas.a, replicas.b)
    }
    checked = verify_export(bundle, vkeys, data_keys=keyrings)
    assert sum(v.content_checked for v in checked.logs) == 6
    assert [section["keys"] for section in bundle["logs"]] == [[], []]

    sealed_only = logs.export(refs[:1], signer)
    assert "entry" not in sealed_only["logs"][0]["entries"][0]
    assert sealed_only["logs"][0]["keys"] == []
    assert PERSON not in str(sealed_only)


def test_export_refuses_entries_after_the_latest_checkpoint(
    replicas: Replicas, auditor: AuditorKeys, copy_a: Path
) -> None:
    keys = HomeKeys(replicas.home).load()
    policy = CheckpointPolicy(every_entries=10**6, every_seconds=3600)
    with AuditLog.open(copy_a, keys, policy=policy) as log:
        receipt = log.append(access(local(2026, 11, 20, 10), request_id="late"))
        assert log.flush_index(timeout=10)
        with LogSet.open([copy_a], auditor) as logs:
            signer = logs.signer(keys.checkpoint_key, "x")
            found = logs.search(Criteria(since=local(2026, 11, 20), until=local(2026, 11, 21)))
            assert [e.index for e in found.entries] == [receipt.index]
            with pytest.raises(ReviewError, match="after its latest checkpoint"):
                logs.export([found.entries[0].ref], signer)
            logs.export([found.entries[0].ref.__class__(str(copy_a), 0)], signer)
    with LogSet.open([copy_a], auditor) as logs:  # closing checkpointed it
        logs.export([found.entries[0].ref], logs.signer(keys.checkpoint_key, "x"))


def test_export_errors(logs: LogSet, replicas: Replicas) -> None:
    from audit.review import EntryRef

    key = HomeKeys(replicas.home).load().checkpoint_key
    signer = logs.signer(key, "x")
    with pytest.raises(ReviewError, match="nothing to export"):
        logs.export([], signer)
    with pytest.raises(ReviewError, match="no log"):
        logs.export([EntryRef("dsgw.audit/none/x", 0)], signer)
    with pytest.raises(ReviewError, match="has no entry 10000"):
        logs.export([EntryRef(replicas.a.origin, 10_000)], signer)


def test_entries_are_what_was_appended(replicas: Replicas, logs: LogSet) -> None:
    from audit.review import EntryRef

    got = logs.read([EntryRef(replicas.b.origin, 0), EntryRef(str(replicas.a.directory), 3)])
    assert [g.entry for g in got] == [replicas.b.entries[0], replicas.a.entries[3]]
    assert isinstance(got[0].entry, AuditEntry)
