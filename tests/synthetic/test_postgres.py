"""Generation into PostgreSQL schemas gives the same tables and row counts as into SQLite."""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path

import pytest

from adapters.synthetic.generate import GenerateConfig, generate
from adapters.synthetic.writers import DATABASES, postgres_conninfo
from gateway.errors import UsageError

pytestmark = pytest.mark.postgres


def test_postgres_matches_sqlite(pg_url: str, tmp_path: Path) -> None:
    import psycopg

    prefix = f"t{os.getpid()}_{uuid.uuid4().hex[:8]}_"
    conninfo = postgres_conninfo(pg_url)
    try:
        pg = generate(GenerateConfig(persons=1500, employers=150, seed=5, url=pg_url, schema_prefix=prefix))
        lite = generate(GenerateConfig(persons=1500, employers=150, seed=5, out=tmp_path))
        assert pg.rows == lite.rows
        with psycopg.connect(conninfo) as conn:
            for name in DATABASES:
                db = sqlite3.connect(tmp_path / f"{name}.sqlite")
                for table, count in lite.rows[name].items():
                    sql = f'SELECT COUNT(*) FROM "{prefix}{name}"."{table}"'
                    assert conn.execute(sql).fetchone() == (count,)  # type: ignore[arg-type]
                    assert db.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone() == (count,)
            leftovers = conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (f"{prefix}%__new",)
            ).fetchall()
            assert leftovers == []
        with pytest.raises(UsageError):
            generate(GenerateConfig(persons=10, employers=5, url=pg_url, schema_prefix=prefix))
        again = generate(
            GenerateConfig(persons=100, employers=10, url=pg_url, schema_prefix=prefix, force=True)
        )
        assert again.rows["truth"]["person"] == 100
    finally:
        with psycopg.connect(conninfo) as conn:
            for name in DATABASES:
                for suffix in ("", "__new"):
                    conn.execute(f'DROP SCHEMA IF EXISTS "{prefix}{name}{suffix}" CASCADE')  # type: ignore[arg-type]
