"""Fixtures of the adapter tests: the agency databases on both backends (SQLite files and the real
PostgreSQL server, one schema per agency and test, all under one prefix per session)."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from adapters.sources import SourceConfig, make_engine, server_sources, sqlite_sources
from tests.adapters.nativedb import NativeDb

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def pg_prefix(pg_url: str) -> Iterator[str]:
    """A schema prefix unique to this test session; every schema under it is dropped at the end."""
    prefix = f"dsgwt_{secrets.token_hex(4)}_"
    yield prefix
    engine = make_engine(SourceConfig(url=pg_url))
    try:
        with engine.begin() as conn:
            names = conn.execute(
                text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"), {"p": prefix + "%"}
            ).scalars()
            for name in list(names):
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    finally:
        engine.dispose()


def _pg_db(pg_url: str, pg_prefix: str) -> Iterator[NativeDb]:
    prefix = f"{pg_prefix}{next(_counter)}_"
    sources = server_sources(pg_url, prefix)
    engine = make_engine(SourceConfig(url=pg_url))
    with engine.begin() as conn:
        for source in sources.values():
            conn.execute(text(f'CREATE SCHEMA "{source.db_schema}"'))
    db = NativeDb("postgres", sources)
    try:
        yield db
    finally:
        db.close()
        with engine.begin() as conn:
            for source in sources.values():
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{source.db_schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NativeDb]:
    """Empty agency databases on each backend; fill with ``db.add``, open with ``db.adapter``."""
    if request.param == "sqlite":
        native = NativeDb("sqlite", sqlite_sources(tmp_path))
        try:
            yield native
        finally:
            native.close()
        return
    pg_url = request.getfixturevalue("pg_url")
    pg_prefix = request.getfixturevalue("pg_prefix")
    yield from _pg_db(pg_url, pg_prefix)


@pytest.fixture
def pg_db(pg_url: str, pg_prefix: str) -> Iterator[NativeDb]:
    """Empty agency databases on the PostgreSQL server only."""
    yield from _pg_db(pg_url, pg_prefix)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[NativeDb]:
    native = NativeDb("sqlite", sqlite_sources(tmp_path))
    try:
        yield native
    finally:
        native.close()
