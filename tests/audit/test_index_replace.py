"""replace_index: a crash between removing the old index's WAL and the swap keeps the old index
whole (its WAL is folded into it first)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from audit import index as index_mod


def _index_with_unfolded_wal(tmp_path: Path) -> Path:
    """An SQLite file whose last transaction is only in its WAL, as a killed writer leaves it."""
    live = tmp_path / "live" / "index.sqlite"
    live.parent.mkdir()
    conn = sqlite3.connect(live)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE t (v INTEGER)")
    conn.commit()
    conn.execute("INSERT INTO t VALUES (42)")
    conn.commit()
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for suffix in ("", "-wal"):  # copied while the connection is open: the WAL is not folded
        shutil.copy(f"{live}{suffix}", crashed / f"index.sqlite{suffix}")
    conn.close()
    assert (crashed / "index.sqlite-wal").stat().st_size > 0
    return crashed / "index.sqlite"


def test_a_crash_before_the_swap_keeps_the_old_index_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _index_with_unfolded_wal(tmp_path)
    built = tmp_path / "built.sqlite"
    sqlite3.connect(built).close()

    def crash(*_args: object) -> None:
        raise OSError("killed before the swap")

    monkeypatch.setattr(index_mod.os, "replace", crash)
    with pytest.raises(OSError):
        index_mod.replace_index(built, old)
    monkeypatch.undo()
    assert not Path(f"{old}-wal").exists()
    conn = sqlite3.connect(old)
    try:
        assert conn.execute("SELECT v FROM t").fetchall() == [(42,)]
    finally:
        conn.close()


def test_the_rebuilt_index_takes_the_old_ones_place(tmp_path: Path) -> None:
    old = _index_with_unfolded_wal(tmp_path)
    built = tmp_path / "built.sqlite"
    conn = sqlite3.connect(built)
    conn.execute("CREATE TABLE rebuilt (v INTEGER)")
    conn.commit()
    conn.close()
    index_mod.replace_index(built, old)
    assert not built.exists() and not Path(f"{old}-wal").exists()
    conn = sqlite3.connect(old)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    assert names == {"rebuilt"}
