"""How the hot statements (bridge/store/statements.py) are executed inside a unit of work.

``CoreRunner`` executes them through SQLAlchemy's Connection, as everything else is.
``SqliteDirectRunner`` runs them on the sqlite3 cursor of the same connection and
transaction: SQLAlchemy's per-execution work (cache lookup, execution context, result
objects) cost about 65 µs a statement against about 14 µs for SQLite to run it
(docs/benchmarks.md), and each message takes about eight of them on the store's single
thread. The statements are still SQLAlchemy's: compiled once for SQLite, their parameters
and results converted by their own column types' processors (JSON in and out, booleans).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.dml import Insert

_REQUIRED = object()
Row = Mapping[Any, Any]  # column name -> value


class StatementRunner(Protocol):
    def first(self, stmt: Any, params: Mapping[str, Any]) -> Row | None: ...

    def all(self, stmt: Any, params: Mapping[str, Any]) -> list[Row]: ...

    def rowcount(self, stmt: Any, params: Mapping[str, Any]) -> int: ...


class CoreRunner:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def first(self, stmt: Any, params: Mapping[str, Any]) -> Row | None:
        return self._conn.execute(stmt, params).mappings().first()

    def all(self, stmt: Any, params: Mapping[str, Any]) -> list[Row]:
        return list(self._conn.execute(stmt, params).mappings())

    def rowcount(self, stmt: Any, params: Mapping[str, Any]) -> int:
        return int(self._conn.execute(stmt, params).rowcount)


Processor = Callable[[Any], Any] | None


class _Compiled:
    """One statement compiled for SQLite: its SQL, and how to bind and read it."""

    __slots__ = ("binds", "names", "readers", "sql")

    def __init__(self, stmt: Any, keys: frozenset[str], dialect: Dialect) -> None:
        # An INSERT's columns are those given, as when SQLAlchemy executes it.
        column_keys = sorted(keys) if isinstance(stmt, Insert) else None
        compiled = stmt.compile(dialect=dialect, column_keys=column_keys)
        self.sql: str = compiled.string
        positions = compiled.positiontup
        if positions is None:  # pragma: no cover - SQLite's paramstyle is positional
            raise TypeError("SqliteDirectRunner needs a positional paramstyle")
        self.binds: list[tuple[str, Any, Processor]] = []
        for name in positions:
            bind = compiled.binds[name]
            literal = _REQUIRED if bind.required else bind.effective_value
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            self.binds.append((name, literal, process))
        columns = list(stmt.exported_columns) if _returns_rows(stmt) else []
        self.names = [column.key for column in columns]
        self.readers: list[Processor] = [
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in columns
        ]

    def values(self, params: Mapping[str, Any]) -> list[Any]:
        out = []
        for name, literal, process in self.binds:
            value = params[name] if literal is _REQUIRED else params.get(name, literal)
            out.append(process(value) if process is not None else value)
        return out

    def mapping(self, row: tuple[Any, ...]) -> dict[str, Any]:
        return {
            name: (read(value) if read is not None else value)
            for name, read, value in zip(self.names, self.readers, row, strict=True)
        }


def _returns_rows(stmt: Any) -> bool:
    return bool(getattr(stmt, "is_select", False) or getattr(stmt, "_returning", ()))


class SqliteDirectRunner:
    """Runs statements on the sqlite3 connection under ``conn``, in its open transaction.
    ``cache`` is shared by all units of one store (they run on one thread)."""

    def __init__(self, conn: Connection, cache: dict[Any, _Compiled]) -> None:
        self._driver: Any = conn.connection.driver_connection
        self._dialect = conn.dialect
        self._cache = cache

    def _run(self, stmt: Any, params: Mapping[str, Any]) -> tuple[_Compiled, Any]:
        key = (stmt, frozenset(params))
        compiled = self._cache.get(key)
        if compiled is None:
            compiled = self._cache[key] = _Compiled(stmt, key[1], self._dialect)
        return compiled, self._driver.execute(compiled.sql, compiled.values(params))

    def first(self, stmt: Any, params: Mapping[str, Any]) -> Row | None:
        compiled, cursor = self._run(stmt, params)
        rows = cursor.fetchall()  # all: SQLite finishes an UPDATE ... RETURNING only then
        return compiled.mapping(rows[0]) if rows else None

    def all(self, stmt: Any, params: Mapping[str, Any]) -> list[Row]:
        compiled, cursor = self._run(stmt, params)
        return [compiled.mapping(row) for row in cursor.fetchall()]

    def rowcount(self, stmt: Any, params: Mapping[str, Any]) -> int:
        _compiled, cursor = self._run(stmt, params)
        return int(cursor.rowcount)
