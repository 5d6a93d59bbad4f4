"""Key management of a log end to end: auditor-key rotation (``dsgw audit rewrap``, and the
``Keyring.rewrap`` API on a log's keyring), crypto-shredding (``dsgw audit shred``) and homes set up
with an existing auditor public key (``dsgw audit keygen --auditor-public-key``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

import audit.log as audit_log_module
from audit.checkpoints import CheckpointPolicy
from audit.keys import FileKeyProvider, KekMismatch, Keyring, generate_auditor_key
from audit.layout import HomeKeys, LogLayoutError, LogMeta
from audit.log import AuditLog
from audit.reader import LogReader
from audit.seal import KeyShredded
from gateway.cli import main
from tests.audit.cli_run import Run, dsgw, one_line
from tests.audit.crash_writer import proto


@pytest.fixture(autouse=True)
def _unbind_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def append(log: Path, home: Path, first: int, count: int) -> None:
    policy = CheckpointPolicy(every_entries=10, every_seconds=3600)
    with AuditLog.open(log, home=home, index="thread", policy=policy) as writer:
        for i in range(first, first + count):
            writer.append(proto(i))
        assert writer.flush_index(timeout=30)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    home, log = tmp_path / "home", tmp_path / "log"
    assert main(["audit", "keygen", "--home", str(home), "--json"]) == 0
    assert main(["audit", "init", "--log", str(log), "--home", str(home), "--node", "gw-1", "--json"]) == 0
    append(log, home, 0, 12)
    return log, home


@pytest.fixture
def new_key(tmp_path: Path) -> Any:
    return new_auditor_key(tmp_path / "new")


def new_auditor_key(directory: Path) -> Any:
    directory.mkdir(mode=0o700)
    return generate_auditor_key(directory / "auditor.key")


def install_public_key(home: Path, public: Path) -> None:
    target = HomeKeys(home).auditor_public_key
    target.write_bytes(public.read_bytes())


def reads_with(capsys: pytest.CaptureFixture[str], log: Path, key: Path) -> Run:
    return dsgw(
        capsys,
        "audit",
        "search",
        "--log",
        str(log),
        "--auditor-key",
        str(key),
        "--since",
        "2000-01-01",
        "--json",
    )


def rewrap(
    capsys: pytest.CaptureFixture[str], log: Path, auditor_key: Path, new_public: Path, *more: str
) -> Run:
    """``dsgw audit rewrap --log LOG --auditor-key KEY --new-public-key PUB [MORE...]``."""
    return dsgw(
        capsys,
        "audit",
        "rewrap",
        "--log",
        str(log),
        "--auditor-key",
        str(auditor_key),
        "--new-public-key",
        str(new_public),
        *more,
    )


# --- auditor-key rotation -------------------------------------------------------------------------


def test_rewrap_rotates_the_auditor_key_end_to_end(
    setup: tuple[Path, Path], new_key: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, home = setup
    old_private = HomeKeys(home).auditor_key
    old_kek = LogMeta.load(log).kek_id
    code, out, err = rewrap(capsys, log, old_private, new_key.public_path, "--json")
    assert code == 0, err
    done = json.loads(out)
    assert done["old_kek_id"] == old_kek and done["new_kek_id"] == new_key.kek_id
    assert done["rewrapped"] >= 2  # a data key and the blind-index key
    meta = json.loads((log / "log.json").read_text())
    assert meta["kek_id"] == new_key.kek_id and "kek_rotation" not in meta

    # every tool accepts the new key, none the old one
    assert (
        dsgw(capsys, "audit", "verify", "--log", str(log), "--auditor-key", str(new_key.private_path))[0] == 0
    )
    code, out, err = reads_with(capsys, log, new_key.private_path)
    assert code == 0, err
    code, _, err = dsgw(
        capsys,
        "audit",
        "export",
        "--log",
        str(log),
        "--auditor-key",
        str(new_key.private_path),
        "--home",
        str(home),
        "--out",
        str(tmp_path / "bundle.json"),
        "--since",
        "2000-01-01",
    )
    assert code == 0, err
    code, _, err = reads_with(capsys, log, old_private)
    assert code == 2
    one_line(err)
    assert new_key.kek_id in err

    # a gateway with the retired public key is refused; with the new one it wraps under the new key
    with pytest.raises(LogLayoutError, match=new_key.kek_id):
        AuditLog.open(log, home=home, index="none")
    install_public_key(home, new_key.public_path)
    append(log, home, 12, 5)
    assert Keyring.open(
        log / "keyring.jsonl",
        FileKeyProvider.from_public_key_file(new_key.public_path),
        log_id=meta["log_id"],
    ).kek_ids() == {new_key.kek_id}
    assert (
        dsgw(capsys, "audit", "verify", "--log", str(log), "--auditor-key", str(new_key.private_path))[0] == 0
    )

    # idempotent: again with the new key pair only
    code, out, err = rewrap(capsys, log, new_key.private_path, new_key.public_path, "--json")
    assert code == 0, err
    assert json.loads(out)["rewrapped"] == 0


def test_keyring_rewrap_of_a_log_updates_log_json(setup: tuple[Path, Path], new_key: Any) -> None:
    """The reviewer's script: the Python API rotates the whole log, not just the keyring."""
    log, home = setup
    old = FileKeyProvider.from_private_key_file(HomeKeys(home).auditor_key)
    new = FileKeyProvider.from_public_key_file(new_key.public_path)
    keyring = LogReader(log).keyring(old)
    assert keyring.rewrap(new) >= 2
    assert LogMeta.load(log).kek_id == new_key.kek_id
    assert keyring.kek_ids() == {new_key.kek_id}
    reader = LogReader(log)
    new_private = FileKeyProvider.from_private_key_file(new_key.private_path)
    assert reader.entry(3, reader.keyring(new_private)) is not None


def test_a_writer_never_wraps_under_a_retired_auditor_key(
    tmp_path: Path, setup: tuple[Path, Path], new_key: Any
) -> None:
    log, home = setup
    meta = LogMeta.load(log)
    old = FileKeyProvider.from_private_key_file(HomeKeys(home).auditor_key)
    Keyring.open(log / "keyring.jsonl", old, log_id=meta.log_id).rewrap(
        FileKeyProvider.from_public_key_file(new_key.public_path), update_log=False
    )
    stale = Keyring.open(
        log / "keyring.jsonl",
        FileKeyProvider.from_public_key_file(HomeKeys(home).auditor_public_key),
        log_id=meta.log_id,
    )
    with pytest.raises(KekMismatch, match="wrapped under auditor key"):
        stale.rotate()


def test_rewrap_refuses_a_log_open_for_writing_and_keys_that_do_not_unwrap(
    setup: tuple[Path, Path], new_key: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, home = setup
    before = (log / "log.json").read_bytes(), (log / "keyring.jsonl").read_bytes()
    with AuditLog.open(log, home=home, index="none"):
        code, _, err = rewrap(capsys, log, HomeKeys(home).auditor_key, new_key.public_path)
    assert code == 2
    one_line(err)
    assert "open for writing" in err
    other = new_auditor_key(tmp_path / "other")
    code, _, err = rewrap(capsys, log, other.private_path, new_key.public_path)
    assert code == 2
    one_line(err)
    assert LogMeta.load(log).kek_id in err
    code, _, err = rewrap(capsys, log, tmp_path / "missing.key", new_key.public_path)
    assert code == 2
    one_line(err)
    assert ((log / "log.json").read_bytes(), (log / "keyring.jsonl").read_bytes()) == before


def test_a_rotation_interrupted_after_the_keyring_opens_with_the_new_key(
    setup: tuple[Path, Path],
    new_key: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from audit.layout import rotate_auditor_key

    log, home = setup
    old_kek = LogMeta.load(log).kek_id
    old = FileKeyProvider.from_private_key_file(HomeKeys(home).auditor_key)
    new = FileKeyProvider.from_public_key_file(new_key.public_path)
    real_save = LogMeta.save

    def crash_on_the_final_write(self: LogMeta, directory: Path) -> None:
        if self.kek_rotation is None:
            raise SystemExit("crash")  # the process dies between the keyring and log.json
        real_save(self, directory)

    monkeypatch.setattr(LogMeta, "save", crash_on_the_final_write)
    with pytest.raises(SystemExit):
        rotate_auditor_key(log, new, old_providers=[old])
    monkeypatch.setattr(LogMeta, "save", real_save)

    on_disk = json.loads((log / "log.json").read_text())
    assert on_disk["kek_id"] == old_kek and on_disk["kek_rotation"] == new_key.kek_id
    meta = LogMeta.load(log)  # the keyring was rewritten: the log is the new key's
    assert meta.kek_id == new_key.kek_id
    with pytest.raises(LogLayoutError, match=f"{new_key.kek_id}.*interrupted"):
        AuditLog.open(log, home=home, index="none")  # the old public key: refused, naming the new one
    assert reads_with(capsys, log, new_key.private_path)[0] == 0
    code, _, err = dsgw(capsys, "audit", "verify", "--log", str(log))
    assert code == 0 and "interrupted" in err
    # running the rotation again (the old private key may be gone already) finishes it
    code, _, err = rewrap(capsys, log, new_key.private_path, new_key.public_path, "--json")
    assert code == 0, err
    on_disk = json.loads((log / "log.json").read_text())
    assert on_disk["kek_id"] == new_key.kek_id and "kek_rotation" not in on_disk


def test_a_rotation_interrupted_before_the_keyring_opens_with_the_old_key(
    setup: tuple[Path, Path], new_key: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    log, home = setup
    meta = LogMeta.load(log)
    from dataclasses import replace

    replace(meta, kek_rotation=new_key.kek_id).save(log)  # the first step only: then a crash
    assert LogMeta.load(log).kek_id == meta.kek_id
    append(log, home, 12, 3)  # the gateway (old public key) still writes
    install_public_key(home, new_key.public_path)
    with pytest.raises(LogLayoutError, match=f"{meta.kek_id}.*interrupted"):
        AuditLog.open(log, home=home, index="none")
    code, _, err = rewrap(capsys, log, HomeKeys(home).auditor_key, new_key.public_path)
    assert code == 0, err
    assert LogMeta.load(log) == replace(meta, kek_id=new_key.kek_id)
    append(log, home, 15, 2)
    assert (
        dsgw(capsys, "audit", "verify", "--log", str(log), "--auditor-key", str(new_key.private_path))[0] == 0
    )


# --- crypto-shredding -----------------------------------------------------------------------------


class _October(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> _October:
        return cls(2026, 10, 15, 12, 0, tzinfo=UTC)


def test_shred_a_period(
    setup: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log, home = setup
    with monkeypatch.context() as patch:
        patch.setattr(audit_log_module, "datetime", _October)
        append(log, home, 12, 4)  # entries 12-15 sealed under an October 2026 data key
    current = datetime.now(UTC).strftime("%Y-%m")
    assert current > "2026-10"

    code, out, err = dsgw(capsys, "audit", "shred", "--log", str(log), "--period", "2026-10", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert len(report["shredded"]) == 1 and report["already_shredded"] == []
    code, out, err = dsgw(capsys, "audit", "shred", "--log", str(log), "--period", "2026-10", "--json")
    assert code == 0, err  # idempotent
    again = json.loads(out)
    assert again["shredded"] == [] and again["already_shredded"] == report["shredded"]
    code, out, _ = dsgw(capsys, "audit", "shred", "--log", str(log), "--period", "2026-10")
    assert code == 0 and "already" in out

    reader = LogReader(log)
    keyring = reader.keyring(FileKeyProvider.from_private_key_file(HomeKeys(home).auditor_key))
    assert reader.entry(3, keyring) is not None
    with pytest.raises(KeyShredded):
        reader.entry(13, keyring)
    assert dsgw(capsys, "audit", "verify", "--log", str(log))[0] == 0  # the entries still verify

    # the current period only with --force; a malformed period; a log open for writing
    code, _, err = dsgw(capsys, "audit", "shred", "--log", str(log), "--period", current)
    assert code == 2
    one_line(err)
    assert "not over yet" in err and "--force" in err
    for bad in ("2026-13", "2026", "yesterday"):
        code, _, err = dsgw(capsys, "audit", "shred", "--log", str(log), "--period", bad)
        assert code == 2
        one_line(err)
    with AuditLog.open(log, home=home, index="none"):
        code, _, err = dsgw(capsys, "audit", "shred", "--log", str(log), "--period", "2026-09")
    assert code == 2
    one_line(err)
    assert "open for writing" in err
    code, out, err = dsgw(
        capsys, "audit", "shred", "--log", str(log), "--period", current, "--force", "--json"
    )
    assert code == 0, err
    assert len(json.loads(out)["shredded"]) >= 1
    keyring.reload()  # it cached the data key it unwrapped
    with pytest.raises(KeyShredded):
        LogReader(log).entry(0, keyring)


# --- homes with an existing auditor key --------------------------------------------------------------


def test_keygen_with_an_existing_auditor_public_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    org = new_auditor_key(tmp_path / "org")
    logs = []
    for node in ("gw-1", "gw-2"):
        home, log = tmp_path / node, tmp_path / f"log-{node}"
        code, out, err = dsgw(
            capsys,
            "audit",
            "keygen",
            "--home",
            str(home),
            "--auditor-public-key",
            str(org.public_path),
            "--json",
        )
        assert code == 0, err
        made = json.loads(out)
        assert made["kek_id"] == org.kek_id and made["auditor_key"] is None
        keys = HomeKeys(home)
        assert not keys.auditor_key.exists()  # a gateway never holds the private key
        assert keys.load().provider.kek_id == org.kek_id
        assert keys.auditor_public_key.stat().st_mode & 0o077 == 0
        assert main(["audit", "init", "--log", str(log), "--home", str(home), "--node", node]) == 0
        capsys.readouterr()
        append(log, home, 0, 3)
        logs.append(log)
    # one key reviews both logs together
    code, out, err = dsgw(
        capsys,
        "audit",
        "search",
        "--log",
        str(logs[0]),
        "--log",
        str(logs[1]),
        "--auditor-key",
        str(org.private_path),
        "--since",
        "2000-01-01",
        "--json",
    )
    assert code == 0, err

    for bad in (tmp_path / "missing.pub", org.private_path.parent / "nothing"):
        code, _, err = dsgw(
            capsys, "audit", "keygen", "--home", str(tmp_path / "h3"), "--auditor-public-key", str(bad)
        )
        assert code == 2
        one_line(err)
    junk = tmp_path / "junk.pub"
    junk.write_bytes(b"not a key")
    code, _, err = dsgw(
        capsys, "audit", "keygen", "--home", str(tmp_path / "h3"), "--auditor-public-key", str(junk)
    )
    assert code == 2
    one_line(err)
    assert not (tmp_path / "h3" / "keys" / "checkpoint.key").exists()  # nothing written
