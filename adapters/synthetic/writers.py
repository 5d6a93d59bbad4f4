"""Bulk writers: SQLite files (raw sqlite3, no journal, one transaction per table, indexes after
loading) and PostgreSQL schemas (COPY through psycopg), plus the targets that make a generation
all-or-nothing: everything is written to temporary files or schemas and moved into place only
when every database is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import MetaData, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.schema import CreateIndex, CreateTable

from adapters.civil_affairs import schema as civil_affairs_schema
from adapters.education import schema as education_schema
from adapters.hrss import schema as hrss_schema
from adapters.market_regulation import schema as market_regulation_schema
from adapters.sources import SCHEMA_PREFIX, TRUTH
from adapters.synthetic import truth
from adapters.synthetic.native import TableRows
from adapters.tax import schema as tax_schema
from gateway.errors import UsageError

AGENCIES: tuple[str, ...] = ("hrss", "education", "civil_affairs", "tax", "market_regulation")
DATABASES: tuple[str, ...] = (*AGENCIES, TRUTH)
METADATA: dict[str, MetaData] = {
    "hrss": hrss_schema.metadata,
    "education": education_schema.metadata,
    "civil_affairs": civil_affairs_schema.metadata,
    "tax": tax_schema.metadata,
    "market_regulation": market_regulation_schema.metadata,
    TRUTH: truth.metadata,
}
_SQLITE = sqlite.dialect()
_POSTGRES = postgresql.dialect()  # type: ignore[no-untyped-call]


def _ddl(element: Any, dialect: Dialect) -> str:
    return str(element.compile(dialect=dialect)).strip()


def link_table(agency: str) -> Table:
    """A part table holding one agency's record_link rows until the truth is assembled."""
    return truth.record_link.to_metadata(MetaData(), name=f"record_link_{agency}")


class Sink(Protocol):
    def write(self, rows: TableRows) -> None: ...

    def close(self) -> None: ...


class SqliteSink:
    """One SQLite file: tables created first, rows loaded with executemany, indexes last."""

    def __init__(
        self, path: Path, tables: Sequence[Table], *, index_tables: Sequence[Table] | None = None
    ) -> None:
        self.path = path
        self.tables = list(tables)
        self.index_tables = list(self.tables if index_tables is None else index_tables)
        self.conn = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "locking_mode=EXCLUSIVE", "temp_store=MEMORY"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.conn.execute("PRAGMA cache_size=-262144")
        for table in self.tables:
            self.conn.execute(_ddl(CreateTable(table), _SQLITE))

    def write(self, rows: TableRows) -> None:
        quote = _SQLITE.identifier_preparer.quote
        marks = ",".join("?" * len(rows.table.columns))
        sql = f"INSERT INTO {quote(rows.table.name)} VALUES ({marks})"
        self.conn.execute("BEGIN")
        self.conn.executemany(sql, zip(*rows.columns, strict=True))
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.execute("BEGIN")
        for table in self.index_tables:
            for index in sorted(table.indexes, key=lambda i: str(i.name)):
                self.conn.execute(_ddl(CreateIndex(index), _SQLITE))
        self.conn.execute("COMMIT")
        self.conn.close()


class PgSink:
    """Tables in one PostgreSQL schema, loaded with COPY, indexes last, committed on close."""

    def __init__(
        self,
        conninfo: str,
        schema: str,
        tables: Sequence[Table],
        *,
        index_tables: Sequence[Table] | None = None,
    ) -> None:
        import psycopg

        self.conn = psycopg.connect(conninfo)
        self.tables = list(tables)
        self.index_tables = list(self.tables if index_tables is None else index_tables)
        quote = _POSTGRES.identifier_preparer.quote
        with self.conn.cursor() as cur:
            cur.execute(f"SET search_path TO {quote(schema)}")
            for table in self.tables:
                cur.execute(_ddl(CreateTable(table), _POSTGRES))

    def write(self, rows: TableRows) -> None:
        quote = _POSTGRES.identifier_preparer.quote
        cols = ", ".join(quote(c.name) for c in rows.table.columns)
        sql = f"COPY {quote(rows.table.name)} ({cols}) FROM STDIN"
        with self.conn.cursor() as cur, cur.copy(sql) as copy:
            for row in zip(*rows.columns, strict=True):
                copy.write_row(row)

    def close(self) -> None:
        with self.conn.cursor() as cur:
            for table in self.index_tables:
                for index in sorted(table.indexes, key=lambda i: str(i.name)):
                    cur.execute(_ddl(CreateIndex(index), _POSTGRES))
        self.conn.commit()
        self.conn.close()


class Target(Protocol):
    def prepare(self) -> None: ...
    def sink(self, name: str) -> Sink: ...
    def link_sink(self, agency: str) -> Sink: ...
    def assemble(self) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...
    def locations(self) -> dict[str, str]: ...
    def sizes(self) -> dict[str, int]: ...


def _truth_tables() -> tuple[list[Table], list[Table]]:
    tables = list(truth.metadata.sorted_tables)
    return tables, [t for t in tables if t is not truth.record_link]


class SqliteTarget:
    """``DIR/<agency>.sqlite`` and ``DIR/truth.sqlite``, written in ``DIR/.generate-<pid>/``."""

    def __init__(self, out: Path, force: bool) -> None:
        self.out = out
        self.final = {name: out / f"{name}.sqlite" for name in DATABASES}
        self.tmp = out / f".generate-{os.getpid()}"
        self.created_out = not out.exists()
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} is not a directory")
        existing = [p.name for p in self.final.values() if p.exists()]
        if existing and not force:
            raise UsageError(f"{out} already holds {', '.join(existing)} (use --force to replace)")

    def prepare(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=False)

    def sink(self, name: str) -> Sink:
        if name == TRUTH:
            tables, indexed = _truth_tables()
            return SqliteSink(self.tmp / f"{name}.sqlite", tables, index_tables=indexed)
        return SqliteSink(self.tmp / f"{name}.sqlite", METADATA[name].sorted_tables)

    def link_sink(self, agency: str) -> Sink:
        return SqliteSink(self.tmp / f"link-{agency}.sqlite", [link_table(agency)], index_tables=[])

    def assemble(self) -> None:
        conn = sqlite3.connect(self.tmp / f"{TRUTH}.sqlite", isolation_level=None)
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")
        for agency in AGENCIES:
            conn.execute("ATTACH DATABASE ? AS part", (str(self.tmp / f"link-{agency}.sqlite"),))
            conn.execute("BEGIN")
            conn.execute(f"INSERT INTO record_link SELECT * FROM part.record_link_{agency} ORDER BY rowid")
            conn.execute("COMMIT")
            conn.execute("DETACH DATABASE part")
            (self.tmp / f"link-{agency}.sqlite").unlink()
        conn.execute("BEGIN")
        for index in sorted(truth.record_link.indexes, key=lambda i: str(i.name)):
            conn.execute(_ddl(CreateIndex(index), _SQLITE))
        conn.execute("COMMIT")
        conn.close()

    def commit(self) -> None:
        for name in DATABASES:
            os.replace(self.tmp / f"{name}.sqlite", self.final[name])
        shutil.rmtree(self.tmp, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.created_out:
            with contextlib.suppress(OSError):
                self.out.rmdir()  # only if still empty

    def locations(self) -> dict[str, str]:
        return {name: str(path.resolve()) for name, path in self.final.items()}

    def sizes(self) -> dict[str, int]:
        return {name: path.stat().st_size for name, path in self.final.items() if path.exists()}


def postgres_conninfo(url: str) -> str:
    """A libpq URI for a SQLAlchemy PostgreSQL URL; UsageError for other back ends."""
    try:
        parsed = make_url(url)
    except Exception:
        raise UsageError("--url is not a database URL") from None
    if parsed.get_backend_name() != "postgresql":
        raise UsageError(f"--url back end {parsed.get_backend_name()!r} not supported (PostgreSQL only)")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresTarget:
    """One schema per database (``<prefix><agency>``, ``<prefix>truth``), written into
    ``<name>__new`` schemas and swapped in within one transaction."""

    def __init__(self, url: str, prefix: str, force: bool) -> None:
        import psycopg

        if prefix and not SCHEMA_PREFIX.match(prefix):
            raise UsageError("--schema-prefix must be lower-case letters, digits and '_' (at most 40)")
        self.conninfo = postgres_conninfo(url)
        self.final = {name: f"{prefix}{name}" for name in DATABASES}
        self.tmp = {name: f"{prefix}{name}__new" for name in DATABASES}
        self.force = force
        try:
            with psycopg.connect(self.conninfo, connect_timeout=5) as conn:
                rows = conn.execute(
                    "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", (list(self.final.values()),)
                ).fetchall()
        except psycopg.Error as exc:
            raise UsageError(f"cannot reach the database: {str(exc).strip().splitlines()[0]}") from None
        existing = sorted(r[0] for r in rows)
        if existing and not force:
            raise UsageError(f"schemas {', '.join(existing)} already exist (use --force to replace)")

    def _quote(self, name: str) -> str:
        out: str = _POSTGRES.identifier_preparer.quote(name)
        return out

    def _run(self, statements: Sequence[str]) -> None:
        import psycopg

        with psycopg.connect(self.conninfo) as conn:
            for sql in statements:
                conn.execute(sql)

    def prepare(self) -> None:
        stmts = [f"DROP SCHEMA IF EXISTS {self._quote(s)} CASCADE" for s in self.tmp.values()]
        stmts += [f"CREATE SCHEMA {self._quote(s)}" for s in self.tmp.values()]
        self._run(stmts)

    def sink(self, name: str) -> Sink:
        if name == TRUTH:
            tables, indexed = _truth_tables()
            return PgSink(self.conninfo, self.tmp[name], tables, index_tables=indexed)
        return PgSink(self.conninfo, self.tmp[name], METADATA[name].sorted_tables)

    def link_sink(self, agency: str) -> Sink:
        return PgSink(self.conninfo, self.tmp[TRUTH], [link_table(agency)], index_tables=[])

    def assemble(self) -> None:
        schema = self._quote(self.tmp[TRUTH])
        stmts = [f"SET search_path TO {schema}"]
        for agency in AGENCIES:
            stmts.append(f"INSERT INTO record_link SELECT * FROM record_link_{agency}")
            stmts.append(f"DROP TABLE record_link_{agency}")
        stmts += [
            _ddl(CreateIndex(i), _POSTGRES)
            for i in sorted(truth.record_link.indexes, key=lambda i: str(i.name))
        ]
        self._run(stmts)

    def commit(self) -> None:
        stmts = []
        for name in DATABASES:
            stmts.append(f"DROP SCHEMA IF EXISTS {self._quote(self.final[name])} CASCADE")
            stmts.append(
                f"ALTER SCHEMA {self._quote(self.tmp[name])} RENAME TO {self._quote(self.final[name])}"
            )
        self._run(stmts)

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # the original error matters more
            self._run([f"DROP SCHEMA IF EXISTS {self._quote(s)} CASCADE" for s in self.tmp.values()])

    def locations(self) -> dict[str, str]:
        return {name: f"schema {schema}" for name, schema in self.final.items()}

    def sizes(self) -> dict[str, int]:
        import psycopg

        out: dict[str, int] = {}
        with psycopg.connect(self.conninfo) as conn:
            for name, schema in self.final.items():
                row = conn.execute(
                    "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
                    (schema,),
                ).fetchone()
                out[name] = int(row[0]) if row else 0
        return out
