"""Shared helpers and fixtures of the consent tests (imported by the test modules).

``backend`` gives a consent store location on each backend: an SQLite file, and a fresh schema
on the real PostgreSQL server (dropped afterwards).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from adapters.sources import SourceConfig, make_engine
from gateway.consent.service import ConsentService, GrantRequest, ScopeRequest
from gateway.consent.store import ConsentStore
from gateway.identity import make_credit_code, make_resident_id

T0 = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)


def person(n: int = 1) -> str:
    """A valid resident identity number, distinct per ``n`` (0..999 x days)."""
    return make_resident_id("120101", date(1980, 1, 1) + timedelta(days=n // 1000), n % 1000)


def employer(n: int = 1) -> str:
    body = f"{n:08d}"
    return make_credit_code("91", "120101", body)


@dataclass
class Backend:
    name: str
    url: str
    schema: str | None

    def store(self, **kw: Any) -> ConsentStore:
        return ConsentStore(self.url, schema=self.schema, **kw)

    def cli_args(self) -> list[str]:
        args = ["--store", self.url]
        if self.schema:
            args += ["--store-schema", self.schema]
        return args


def _pg_backend(pg_url: str) -> Iterator[Backend]:
    schema = f"dsgwc_{secrets.token_hex(5)}"
    yield Backend("postgres", pg_url, schema)
    engine = make_engine(SourceConfig(url=pg_url))
    try:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A consent store location on each backend."""
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite:///{tmp_path / 'consent.sqlite'}", None)
        return
    yield from _pg_backend(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(backend: Backend) -> Iterator[ConsentStore]:
    s = backend.store()
    try:
        yield s
    finally:
        s.close()


class Clock:
    """A settable clock for the service."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> datetime:
        self.now += timedelta(**kw)
        return self.now


def grant_request(subject: str | None = None, **kw: Any) -> GrantRequest:
    """A valid grant: education may read two non-sensitive fields of hrss.employment_status for
    employment_subsidy_review, for 30 days from T0."""
    base: dict[str, Any] = {
        "subject": subject or person(),
        "consumers": ["education"],
        "scope": [ScopeRequest("hrss", "employment_status", ("registered_unemployed", "unemployed_since"))],
        "purposes": ["employment_subsidy_review"],
        "valid_to": T0 + timedelta(days=30),
        "channel": "counter",
        "evidence_ref": "form-2025-0001",
        "notice_version": "notice-v3",
    }
    base.update(kw)
    return GrantRequest(**base)


def check_args(subject: str | None = None, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "subject": subject or person(),
        "consumer": "education",
        "provider": "hrss",
        "dataset": "employment_status",
        "purpose": "employment_subsidy_review",
        "fields": ["registered_unemployed"],
    }
    base.update(kw)
    return base


def service_for(store: ConsentStore, clock: Clock | None = None, **kw: Any) -> ConsentService:
    return ConsentService(store, clock=clock or Clock(), **kw)
