"""``dsgw data generate`` into a place it cannot write: exit 2, one line, nothing left behind."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from adapters.synthetic import writers
from gateway.cli import main

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _fail(out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    argv = ["data", "generate", "--out", str(out), "--persons", "50", "--employers", "10", "--json", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("dsgw: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_out_under_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    err = _fail(afile / "sub", capsys)
    assert "--out" in err and "not a directory" in err
    assert afile.read_text() == "x"


@pytest.mark.skipif(AS_ROOT, reason="chmod does not stop root from writing")
def test_out_not_writable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        err = _fail(locked / "data", capsys)
    finally:
        locked.chmod(0o700)
    assert "not writable" in err
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("workers", ["1", "2"])
def test_disk_full_while_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    def full(self: Any, rows: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(writers.SqliteSink, "write", full)
    out = tmp_path / "data"
    err = _fail(out, capsys, "--workers", workers)
    assert "database or disk is full" in err
    assert not out.exists()

    out.mkdir()  # an existing directory is left as it was: empty
    _fail(out, capsys, "--workers", workers)
    assert list(out.iterdir()) == []


def test_read_only_file_system(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def erofs(self: Any) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self.tmp))

    monkeypatch.setattr(writers.SqliteTarget, "prepare", erofs)
    out = tmp_path / "data"
    err = _fail(out, capsys)
    assert f"--out {out}" in err and os.strerror(errno.EROFS) in err
    assert not out.exists()
