"""Shared fixtures: the PostgreSQL server URL, skipping nothing silently in CI."""

from __future__ import annotations

import os

import pytest

PG_URL = os.environ.get("DSGW_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The real PostgreSQL server of this machine (``.ci/run`` starts it if it is down)."""
    import sqlalchemy

    from adapters.sources import SourceConfig, make_engine

    engine = make_engine(SourceConfig(url=PG_URL, connect_timeout_s=3))
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
    except Exception as exc:  # pragma: no cover - environment problem, made loud
        if os.environ.get("CI"):
            raise RuntimeError(f"PostgreSQL at {PG_URL} is required in CI: {exc}") from exc
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}")
    finally:
        engine.dispose()
    return PG_URL
