"""How the hot statements (bridge/store/statements.py) are executed inside a unit of work.

``CoreRunner`` executes them through SQLAlchemy's Connection, as everything else is.
``DirectRunner`` runs them on the DBAPI cursor of the same connection and transaction: the
sqlite3 cursor on SQLite, SQLAlchemy's asyncpg adapter cursor on PostgreSQL. SQLAlchemy's
per-execution work (cache lookup, execution context, result objects) costs several times
what SQLite takes to run a hot statement (docs/benchmarks.md, "Hot statements"), and every
message runs several. The statements are still SQLAlchemy's: compiled once for the dialect,
their parameters and results converted by their own column types' processors (JSON in and
out, booleans, floats).

A store call that is a few hot statements in a row is written once, as a *program*: a
generator that yields each ``Query`` and is sent its result. ``run_program`` runs one on a
``StatementRunner`` inside a unit of work; on PostgreSQL ``bridge/store/native.py`` runs the
same program on asyncpg directly, without a greenlet or a pool checkout per call.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, cast

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import Insert

_REQUIRED = object()
Row = Mapping[Any, Any]  # column name -> value
T = TypeVar("T")


class StatementRunner(Protocol):
    def first(self, stmt: Any, params: Mapping[str, Any]) -> Row | None: ...

    def all(self, stmt: Any, params: Mapping[str, Any]) -> list[Row]: ...

    def rowcount(self, stmt: Any, params: Mapping[str, Any]) -> int: ...


@dataclass(frozen=True, slots=True)
class Query:
    """One statement of a program, and which of a runner's methods runs it."""

    kind: Literal["first", "all", "rowcount"]
    stmt: Any
    params: Mapping[str, Any]


# Yields each statement to run, is sent its result (a Row or None, a list of Rows, a count),
# returns the call's result. Must be safe to run again from the start (see Transactions).
Program = Generator[Query, Any, T]


def run_program(program: Program[T], runner: StatementRunner) -> T:
    """Run ``program`` to its end on ``runner`` (inside a unit of work)."""
    try:
        query = next(program)
        while True:
            query = program.send(getattr(runner, query.kind)(query.stmt, query.params))
    except StopIteration as done:
        return cast(T, done.value)


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


def cache_key(stmt: Any, params: Mapping[str, Any]) -> tuple[Any, frozenset[str]]:
    """A statement's entry in a store's cache of Compiled: one per set of parameters given
    (an INSERT's columns are those given)."""
    return (stmt, frozenset(params))


class Compiled:
    """One statement compiled for a dialect: its SQL, and how to bind and read it."""

    __slots__ = ("binds", "columns", "dialect", "names", "readers", "sql")

    def __init__(self, stmt: Any, keys: frozenset[str], dialect: Dialect) -> None:
        # An INSERT's columns are those given, as when SQLAlchemy executes it.
        column_keys = sorted(keys) if isinstance(stmt, Insert) else None
        compiled = stmt.compile(dialect=dialect, column_keys=column_keys)
        self.sql: str = compiled.string
        positions = compiled.positiontup
        if positions is None:  # pragma: no cover - SQLite's qmark and asyncpg's $n are positional
            raise TypeError("DirectRunner needs a positional paramstyle")
        self.binds: list[tuple[str, Any, Processor]] = []
        for name in positions:
            bind = compiled.binds[name]
            literal = _REQUIRED if bind.required else bind.effective_value
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            self.binds.append((name, literal, process))
        self.dialect = dialect
        self.columns = list(stmt.exported_columns) if _returns_rows(stmt) else []
        self.names = [column.key for column in self.columns]
        # Known after the first execution: PostgreSQL's processors depend on the type the
        # server reports (cursor.description), as they do when SQLAlchemy executes.
        self.readers: list[Processor] | None = None

    def learn(self, description: Any) -> None:
        if self.readers is None and description is not None:
            self.readers = [
                column.type.dialect_impl(self.dialect).result_processor(self.dialect, entry[1])
                for column, entry in zip(self.columns, description, strict=True)
            ]

    def values(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        out = []
        for name, literal, process in self.binds:
            value = params[name] if literal is _REQUIRED else params.get(name, literal)
            out.append(process(value) if process is not None else value)
        return tuple(out)

    def mapping(self, row: Sequence[Any]) -> dict[str, Any]:
        readers = self.readers or [None] * len(self.names)
        return {
            name: (read(value) if read is not None else value)
            for name, read, value in zip(self.names, readers, row, strict=True)
        }


def _returns_rows(stmt: Any) -> bool:
    return bool(getattr(stmt, "is_select", False) or getattr(stmt, "_returning", ()))


class DirectRunner:
    """Runs statements on the DBAPI connection under ``conn``, in its open transaction.
    ``cache`` is shared by all units of one store."""

    def __init__(self, conn: Connection, cache: dict[Any, Compiled]) -> None:
        self._conn = conn
        self._dbapi: Any = conn.connection.dbapi_connection
        self._dialect = conn.dialect
        self._cache = cache

    def _run(self, stmt: Any, params: Mapping[str, Any], fetch: bool) -> tuple[Compiled, Any]:
        key = cache_key(stmt, params)
        compiled = self._cache.get(key)
        if compiled is None:
            compiled = self._cache[key] = Compiled(stmt, key[1], self._dialect)
        values = compiled.values(params)
        cursor = self._dbapi.cursor()
        try:
            cursor.execute(compiled.sql, values)
            compiled.learn(cursor.description)
            # fetchall even for first(): SQLite finishes an UPDATE ... RETURNING only then.
            return compiled, cursor.fetchall() if fetch else cursor.rowcount
        except self._dialect.loaded_dbapi.Error as exc:
            raise self._translate(exc, compiled.sql, values, cursor) from exc

    def _translate(self, exc: Any, sql: str, values: Any, cursor: Any) -> DBAPIError:
        """The error as SQLAlchemy raises it (IntegrityError, OperationalError...)."""
        if self._dialect.is_disconnect(exc, self._dbapi, cursor):
            # Let SQLAlchemy see the dead connection fail: it then invalidates it and every
            # pooled one older than it (a server restart kills them all) and raises with
            # connection_invalidated, so the unit runs again on a fresh one (transactions.py).
            self._conn.exec_driver_sql("SELECT 1")
        error = DBAPIError.instance(
            sql, values, exc, self._dialect.loaded_dbapi.Error, dialect=self._dialect
        )
        return cast(DBAPIError, error)

    def first(self, stmt: Any, params: Mapping[str, Any]) -> Row | None:
        compiled, rows = self._run(stmt, params, fetch=True)
        return compiled.mapping(rows[0]) if rows else None

    def all(self, stmt: Any, params: Mapping[str, Any]) -> list[Row]:
        compiled, rows = self._run(stmt, params, fetch=True)
        return [compiled.mapping(row) for row in rows]

    def rowcount(self, stmt: Any, params: Mapping[str, Any]) -> int:
        _compiled, count = self._run(stmt, params, fetch=False)
        return int(count)
