"""Where an agency's source lives, and how to reach it: one URL per agency.

Embedded default: one SQLite file per agency in a data directory (``DIR/hrss.sqlite``, ...), plus
``DIR/truth.sqlite``. Production: any SQLAlchemy database URL; on a server database such as
PostgreSQL each agency lives in its own schema (``<prefix>hrss``, ...), so that one server holds
the five sources side by side as five agencies' systems would.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from adapters.agencies import Agency

TRUTH = "truth"
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
"""A PostgreSQL schema name we create and accept: lower-case letters, digits, '_' (at most 63)."""
SCHEMA_PREFIX = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")
"""A prefix the agencies' codes are appended to (``<prefix>hrss``, ...): at most 40 characters,
so that every schema name stays within :data:`SCHEMA_NAME`."""
SUPPORTED_DRIVERS = frozenset({"sqlite", "sqlite+pysqlite", "postgresql", "postgresql+psycopg"})
"""The database URLs an adapter opens (the drivers this distribution installs)."""


def check_source_url(url: str) -> str:
    """``url`` if an adapter can open it, else ValueError saying what is accepted (the message
    never repeats the URL: it may hold a password)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError("not a database URL: use sqlite:///PATH or postgresql://HOST/DB") from None
    if parsed.drivername not in SUPPORTED_DRIVERS:
        raise ValueError(
            f"{parsed.drivername!r} databases are not supported: use sqlite:///PATH or postgresql://HOST/DB"
        )
    return url


class SourceConfig(BaseModel):
    """One agency's source: a database URL and, on server databases, the schema holding its tables."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(description="SQLAlchemy URL, e.g. sqlite:////data/hrss.sqlite or postgresql://host/db")
    db_schema: str | None = Field(default=None, description="schema of the agency's tables (server DBs)")
    #: PostgreSQL drivers (libpq, psycopg) never wait less than 2 s to connect: a smaller value
    #: behaves as 2 s for the driver, but a call still gives up at its own deadline
    #: (adapters.resilience.connect_within).
    connect_timeout_s: float = Field(default=3.0, gt=0, le=60)
    call_timeout_s: float = Field(default=2.0, gt=0, le=300)
    #: Server databases: connections an adapter keeps open, i.e. the most calls to the agency in
    #: flight at once (further callers wait for one, within their timeout). Size it to the
    #: gateway's I/O threads. SQLite sources use one connection per calling thread instead.
    pool_size: int = Field(default=32, ge=1, le=1024)

    _url_supported = field_validator("url")(check_source_url)

    @property
    def is_sqlite(self) -> bool:
        return make_url(self.url).get_backend_name() == "sqlite"


def sqlite_sources(data_dir: Path) -> dict[str, SourceConfig]:
    """The embedded default: ``DIR/<agency>.sqlite`` for each agency and ``DIR/truth.sqlite``."""
    names = [a.value for a in Agency] + [TRUTH]
    return {n: SourceConfig(url=f"sqlite:///{(data_dir / f'{n}.sqlite').resolve()}") for n in names}


def server_sources(url: str, schema_prefix: str = "") -> dict[str, SourceConfig]:
    """Every agency (and the truth) in its own schema of one server database."""
    names = [a.value for a in Agency] + [TRUTH]
    return {n: SourceConfig(url=url, db_schema=f"{schema_prefix}{n}") for n in names}


def make_engine(source: SourceConfig, **kw: Any) -> Engine:
    """An engine for ``source`` whose connections give up after ``connect_timeout_s``.

    On SQLite the file must exist unless ``create=True`` is passed (a missing agency database is
    a configuration error, not an empty agency)."""
    create = bool(kw.pop("create", False))
    url = make_url(source.url)
    backend = url.get_backend_name()
    connect_args: dict[str, Any] = {}
    if backend == "sqlite":
        path = url.database or ""
        if not create and path not in ("", ":memory:") and not Path(path).exists():
            raise FileNotFoundError(f"no database file at {path}")
        if not create and path not in ("", ":memory:"):
            url = url.set(database=f"file:{path}?mode=rw", query={"uri": "true"})
        connect_args["timeout"] = source.connect_timeout_s
        connect_args["check_same_thread"] = False
    elif backend == "postgresql":
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        connect_args["connect_timeout"] = max(1, round(source.connect_timeout_s))
    engine = create_engine(url, connect_args=connect_args, **kw)
    if source.db_schema and backend != "sqlite":
        engine = engine.execution_options(schema_translate_map={None: source.db_schema})
    if backend == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    return engine


def tables_of(metadata: MetaData) -> list[str]:
    return sorted(metadata.tables)
