"""The hot statements of the adapters, compiled once and run on the driver's cursor.

Every query of ``fetch`` / ``evaluate`` / ``evaluate_many`` is a SQLAlchemy Core ``Select`` with
one *expanding* parameter (``anchor.stored_id IN (:ids)``, ``child.key IN (:keys)``). Executing
it through ``Connection.execute`` costs about 100 µs of interpreter work per statement (cache
key, expanding the IN list, execution context, result metadata), several times what SQLite
itself spends. ``select_in`` gives the same rows for a fraction of that:

- the statement is compiled for the connection's dialect and schema translation once per
  *shape* (number of IN values) and kept: the SQL string, a template of the parameters and the
  slots the IN values go into;
- the IN list is padded to a few bucket sizes (1..8 exactly, then 16, 32, ... up to ``IN_BATCH``)
  by repeating its last value, which changes no result (``x IN (a, b, b)`` is ``x IN (a, b)``) and
  keeps the number of shapes per statement small;
- it runs on the DBAPI cursor of the SQLAlchemy connection (same connection, same transaction,
  same ``statement_timeout`` or progress handler), and driver errors go through SQLAlchemy's own
  handling (``Connection._handle_dbapi_exception``: wrapped as ``DBAPIError``, a lost connection
  invalidated), so failures look exactly as they did;
- rows are named tuples with the keys SQLAlchemy's ``Row`` would have (the labels of the compiled
  SQL: ``row.JTBH``, ``row[1]``).

A statement whose parameters or result columns need type processing on the dialect (none of the
adapters' do: they are strings and integers) is run through ``Connection.execute`` instead.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections import namedtuple
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Select
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.sql.compiler import SQLCompiler

__all__ = ["IN_BATCH", "bucket", "select_in"]

#: Most bound parameters put into one ``IN (...)`` (SQLite allows 32766, PostgreSQL 65535).
IN_BATCH = 1000
_EXACT = 8


def bucket(n: int) -> int:
    """The IN-list length a batch of ``n`` values is padded to: n up to 8, then the next power of
    two, at most IN_BATCH."""
    if n <= _EXACT:
        return n
    size = 1 << (n - 1).bit_length()
    return min(size, IN_BATCH)


@dataclass(slots=True)
class _Shape:
    """One statement compiled for one dialect, schema translation and IN-list length."""

    statement: Select[Any]  # kept so that its id() stays unique while the entry lives
    sql: str
    positional: bool
    #: positional: the parameter list with the IN slots empty; named: the constant parameters.
    template: list[Any] | dict[str, Any]
    #: positional: index of the first IN slot (the slots are contiguous); named: the slot names.
    start: int
    names: tuple[str, ...]
    size: int
    row: Any = field(default=None)  # the namedtuple class, made from the first cursor description

    def params(self, values: Sequence[Any]) -> Any:
        padded = list(values)
        if len(padded) < self.size:
            padded.extend([padded[-1]] * (self.size - len(padded)))
        if self.positional:
            assert isinstance(self.template, list)
            out = list(self.template)
            out[self.start : self.start + self.size] = padded
            return tuple(out)
        assert isinstance(self.template, dict)
        named = dict(self.template)
        named.update(zip(self.names, padded, strict=True))
        return named


#: dialect -> (id(statement), parameter name, IN length, schema translation) -> shape, or None
#: when the statement needs SQLAlchemy's type processing.
_CACHE: weakref.WeakKeyDictionary[Dialect, dict[tuple[Any, ...], _Shape | None]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _needs_processing(compiled: SQLCompiler, state_processors: Any, statement: Select[Any]) -> bool:
    if state_processors:
        return True
    dialect = compiled.dialect
    for column in statement.selected_columns:
        if column.type.dialect_impl(dialect).result_processor(dialect, None) is not None:
            return True
    return False


def _compile(dialect: Dialect, statement: Select[Any], name: str, size: int, translate: Any) -> _Shape | None:
    kw: dict[str, Any] = {}
    if translate:
        kw = {"schema_translate_map": translate, "render_schema_translate": True}
    compiled = statement.compile(dialect=dialect, **kw)
    assert isinstance(compiled, SQLCompiler)
    placeholder = [f"\x00{i}" for i in range(size)]
    state = compiled.construct_expanded_state({name: placeholder})
    if _needs_processing(compiled, state.processors, statement):
        return None
    slots = tuple(state.parameter_expansion.get(name, ()))
    if len(slots) != size or len(state.parameter_expansion) != 1:
        return None
    if state.positiontup is not None:
        order = list(state.positiontup)
        positions = [order.index(s) for s in slots]
        start = positions[0]
        if positions != list(range(start, start + size)):
            return None
        template: list[Any] | dict[str, Any] = [state.parameters[k] for k in order]
        return _Shape(statement, state.statement, True, template, start, slots, size)
    constants = {k: v for k, v in state.parameters.items() if k not in set(slots)}
    return _Shape(statement, state.statement, False, constants, 0, slots, size)


def _shape(conn: Connection, statement: Select[Any], name: str, n: int) -> _Shape | None:
    dialect = conn.dialect
    translate = conn.get_execution_options().get("schema_translate_map")
    size = bucket(n)
    key = (id(statement), name, size, tuple(sorted(translate.items(), key=repr)) if translate else None)
    shapes = _CACHE.get(dialect)
    if shapes is not None:
        try:
            return shapes[key]
        except KeyError:
            pass
    shape = _compile(dialect, statement, name, size, translate)
    with _LOCK:
        _CACHE.setdefault(dialect, {})[key] = shape
    return shape


def select_in(conn: Connection, statement: Select[Any], name: str, values: Sequence[Any]) -> list[Any]:
    """The rows of ``statement`` with its expanding parameter ``name`` bound to ``values`` (at most
    IN_BATCH; at least one), as ``conn.execute(statement, {name: values}).all()`` would give
    them."""
    if not values or len(values) > IN_BATCH:
        raise ValueError("select_in takes 1 to IN_BATCH values")
    shape = _shape(conn, statement, name, len(values))
    if shape is None:
        return list(conn.execute(statement, {name: list(values)}).all())
    params = shape.params(values)
    proxied = conn.connection
    cursor = proxied.cursor()
    try:
        cursor.execute(shape.sql, params)
        raw_rows = cursor.fetchall()
        if shape.row is None:
            names = [d[0] for d in cursor.description or ()]
            shape.row = namedtuple("Row", names, rename=True)  # type: ignore[misc]
        make = shape.row._make
    except BaseException as exc:
        conn._handle_dbapi_exception(exc, shape.sql, params, cursor, None)
    finally:
        with contextlib.suppress(Exception):  # a connection that went away meanwhile
            cursor.close()
    return [make(r) for r in raw_rows]
