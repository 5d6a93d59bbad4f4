"""Crypto-shredded entries in the review tools: never hidden, never resurrected by a bundle.

The log has entries in two retention periods: 6 accesses on 2026-10-15 (one about PERSON), then 5
about PERSON on 2026-11-04; the October data key is shredded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from audit.keys import FileKeyProvider, Keyring
from audit.layout import HomeKeys
from audit.log import AuditLog, init_log
from audit.review.export import BundleFormatError, verify_export
from audit.review.query import AuditorKeys, Criteria, LogSet
from tests.audit.cli_run import run, run_json
from tests.audit.review import PERSON, access, local, person

OCTOBER = 6
NOVEMBER = 5
MINE_IN_OCTOBER = 3  # the index of PERSON's October entry


@dataclass
class ShreddedLog:
    home: Path
    directory: Path
    origin: str

    @property
    def argv(self) -> list[str]:
        return ["--log", str(self.directory), "--home", str(self.home)]

    def ref(self, index: int) -> str:
        return f"{self.origin}#{index}"


def _fake_now(monkeypatch: pytest.MonkeyPatch, when: datetime) -> None:
    class Clock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Clock:
            return cls.fromtimestamp(when.timestamp(), tz)

    monkeypatch.setattr("audit.log.datetime", Clock)


@pytest.fixture(scope="module")
def shredded(tmp_path_factory: pytest.TempPathFactory) -> ShreddedLog:
    root = tmp_path_factory.mktemp("shredded")
    home = root / "home"
    HomeKeys(home).generate()
    keys = HomeKeys(home).load()
    directory = root / "gw1"
    meta = init_log(directory, keys, node="gw1")
    october = [
        access(
            local(2026, 10, 15, 10, i),
            subject=PERSON if i == MINE_IN_OCTOBER else person(400 + i),
            request_id=f"oct-{i}",
        )
        for i in range(OCTOBER)
    ]
    november = [access(local(2026, 11, 4, 10, i), request_id=f"nov-{i}") for i in range(NOVEMBER)]
    with pytest.MonkeyPatch.context() as patch:
        for when, entries in (
            (datetime(2026, 10, 15, 12, tzinfo=UTC), october),
            (datetime(2026, 11, 20, 12, tzinfo=UTC), november),
        ):
            _fake_now(patch, when)
            with AuditLog.open(directory, keys) as log:
                log.append_many(entries)
                log.checkpoint_now()
    provider = FileKeyProvider.from_public_key_file(HomeKeys(home).auditor_public_key)
    keyring = Keyring.open(directory / "keyring.jsonl", provider, log_id=meta.log_id)
    assert keyring.shred("2026-10", force=True)
    return ShreddedLog(home, directory, meta.log_id)


# --- item 1: a bundle never carries a key that opens entries it does not contain ----------------


def test_decrypted_bundle_carries_no_data_key_and_resurrects_nothing(
    shredded: ShreddedLog, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "b.json"
    mine = OCTOBER + 1  # one November entry about PERSON
    code, _, err = run(
        capsys, "export", *shredded.argv, "--entry", shredded.ref(mine), "--decrypt", "--out", str(out)
    )
    assert code == 0, err
    bundle = json.loads(out.read_text())
    section = bundle["logs"][0]
    assert section["keys"] == []
    assert "wrapped" not in out.read_text()
    # the bundle's only secret is the payload of its own entry: no member of it is a key
    members = [sorted(e) for e in section["entries"]]
    assert members == [["entry", "index", "leaf_hash", "payload", "proof", "sealed"]]
    # the auditor still checks the payload against the sealed bytes, with the log's own keyring
    data = run_json(
        capsys,
        "verify-export",
        str(out),
        "--log",
        str(shredded.directory),
        "--auditor-key",
        str(HomeKeys(shredded.home).auditor_key),
    )
    assert data["verified"] and data["content_checked"] == 1


# --- item 2: search, report, subject-report say what was shredded -------------------------------


def test_search_counts_shredded_entries(shredded: ShreddedLog, capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "search", *shredded.argv, "--subject", PERSON)
    assert data["count"] == NOVEMBER
    assert data["shredded"]["count"] == 1 and data["shredded"]["periods"] == {"2026-10": 1}
    assert [e["index"] for e in data["shredded"]["entries"]] == [MINE_IN_OCTOBER]
    stats = data["logs"][0]
    assert (stats["candidates"], stats["opened"], stats["matched"], stats["shredded"]) == (6, 5, 5, 1)
    code, out, _ = run(capsys, "search", *shredded.argv, "--subject", PERSON)
    assert code == 0
    assert "5 entries shown, 1 more shredded" in out
    assert "1 entry of 2026-10 was shredded at retention: its details are gone" in out


def test_search_over_a_shredded_period_says_so(
    shredded: ShreddedLog, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*shredded.argv, "--since", "2026-10-01", "--until", "2026-10-31"]
    data = run_json(capsys, "search", *argv)
    assert data["count"] == 0 and data["shredded"]["count"] == OCTOBER
    assert data["shredded"]["uncertain"] == 0
    code, out, _ = run(capsys, "search", *argv)
    assert code == 0 and "6 entries of 2026-10 were shredded at retention" in out


def test_report_counts_shredded_entries(shredded: ShreddedLog, capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "report", *shredded.argv)
    assert data["entries"] == OCTOBER + NOVEMBER and data["readable"] == NOVEMBER
    assert data["shredded"]["count"] == OCTOBER
    assert data["shredded"]["periods"] == {"2026-10": OCTOBER}
    assert data["shredded"]["days"] == {"2026-10-15": {"access": OCTOBER}}
    assert sum(v["count"] for v in data["volumes"]) == NOVEMBER
    code, out, _ = run(capsys, "report", *shredded.argv)
    assert code == 0
    assert out.startswith(
        "Audit report 2026-10-15 .. 2026-11-04 (Asia/Shanghai): 11 entries, 6 of them shredded"
    )
    assert "2026-10-15  access      6" in out
    # a period of November only has no shredded entry
    data = run_json(capsys, "report", *shredded.argv, "--since", "2026-11-01")
    assert data["entries"] == NOVEMBER and data["shredded"]["count"] == 0


def test_subject_report_tells_the_citizen(shredded: ShreddedLog, capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "subject-report", PERSON, *shredded.argv)
    assert data["events"] == NOVEMBER
    assert data["shredded"]["count"] == 1 and data["shredded"]["periods"] == {"2026-10": 1}
    assert "destroyed" in data["shredded"]["text"]["en"] and "销毁" in data["shredded"]["text"]["zh"]
    code, out, _ = run(capsys, "subject-report", PERSON, *shredded.argv)
    assert code == 0
    assert "1 more event (a request for your data; UTC day 2026-10-15) about you was recorded" in out


# --- item 3: exporting shredded entries --------------------------------------------------------


def test_export_by_time_range_of_a_shredded_period(
    shredded: ShreddedLog, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "oct.json"
    argv = [*shredded.argv, "--since", "2026-10-01", "--until", "2026-10-31", "--out", str(out)]
    code, text, err = run(capsys, "export", *argv)
    assert code == 0, err
    assert "6 of them are of 2026-10, shredded at retention" in text
    bundle = json.loads(out.read_text())
    entries = bundle["logs"][0]["entries"]
    assert [e["index"] for e in entries] == list(range(OCTOBER))
    assert all(e["shredded"]["period"] == "2026-10" and "payload" not in e for e in entries)
    result = verify_export(bundle, [bundle["logs"][0]["vkey"]])
    assert [len(v.shredded) for v in result.logs] == [OCTOBER]


def test_export_decrypted_with_a_shredded_entry(
    shredded: ShreddedLog, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "mixed.json"
    refs = ["--entry", shredded.ref(MINE_IN_OCTOBER), "--entry", shredded.ref(OCTOBER)]
    data = run_json(capsys, "export", *shredded.argv, *refs, "--decrypt", "--out", str(out))
    assert data["entries"] == 2 and data["shredded"] == {"count": 1, "periods": {"2026-10": 1}}
    entries = json.loads(out.read_text())["logs"][0]["entries"]
    assert "payload" not in entries[0] and entries[0]["shredded"]["period"] == "2026-10"
    assert entries[1]["entry"]["request_id"] == "nov-0"
    verified = run_json(capsys, "verify-export", str(out), "--log", str(shredded.directory))
    assert verified["decrypted"] == 1 and verified["shredded"] == 1


def test_a_shredded_mark_with_a_payload_is_malformed(
    shredded: ShreddedLog, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "one.json"
    run_json(
        capsys, "export", *shredded.argv, "--entry", shredded.ref(OCTOBER), "--decrypt", "--out", str(out)
    )
    bundle = json.loads(out.read_text())
    bundle["logs"][0]["entries"][0]["shredded"] = {"period": "2026-11", "shredded_at": None}
    with pytest.raises(BundleFormatError, match="marked shredded but carries a payload"):
        verify_export(bundle, [bundle["logs"][0]["vkey"]])


def test_search_api_separates_shredded_from_opened(shredded: ShreddedLog) -> None:
    provider = FileKeyProvider.from_private_key_file(HomeKeys(shredded.home).auditor_key)
    with LogSet.open([shredded.directory], AuditorKeys(provider=provider)) as logs:
        result = logs.search(Criteria(since=local(2026, 10, 15, 10, 2), until=local(2026, 10, 15, 10, 4)))
    # the exact times are gone: matched by their UTC day, only partly inside the range
    assert result.entries == [] and len(result.shredded) == OCTOBER
    assert not any(s.certain for s in result.shredded)
    assert result.logs[0].opened == 0
