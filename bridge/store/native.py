"""PostgreSQL: the hot store calls' statements run on asyncpg itself, on connections the
store keeps checked out.

Through SQLAlchemy, each one-statement store call (claim, commit, finish, one event's
intake) also paid for a pool checkout and checkin and a greenlet around the unit: more than
twice the CPU of the statement on the asyncpg connection itself (docs/benchmarks.md,
"PostgreSQL store calls"). The statements are still SQLAlchemy's, compiled for the dialect
and their values and rows converted by their column types' processors (runners.Compiled); a
statement runs here only after SQLAlchemy has run it once (the row processors depend on
the types the server reports).

Bound: the connections are checked out of the engine's pool and kept, at most half of
``pool_size``: ``database.pool_size`` still bounds the replica's connections, and the other
half is left to the pool for everything else (intake batches, the dispatcher's scans,
renewals). When every kept connection is busy, a call waits for one: going through the
pool instead costs far more, and under load most calls did (docs/benchmarks.md,
"PostgreSQL store calls").

Failures: a statement the server refuses, and a connection that died, send the whole call
through SQLAlchemy instead (``Transactions.each_statement``): its handling of a dead
connection applies, and its errors come out as the store's (bridge/store/errors.py: a
refused value as DataRefused, a failure as StoreUnavailable), as any raised here do. A
program's statements may run again from the start (runners.Program). A kept connection
that died is dropped (an idle one when it is next taken). A call cancelled mid-statement
keeps its connection: asyncpg asks the server to cancel the statement, and the
connection's next statement waits for that to be done.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool
from sqlalchemy.util import greenlet_spawn

from bridge.store.errors import translated
from bridge.store.runners import Compiled, Program, Query, cache_key

T = TypeVar("T")
log = logging.getLogger("bridge.store")


class _NotLearned(Exception):
    """A statement SQLAlchemy has not run yet: its row processors are not known."""


class _DriverFailed(Exception):
    """asyncpg raised (the server refused a statement, or the connection failed)."""


@dataclass(slots=True)
class _Kept:
    conn: Connection  # SQLAlchemy's, checked out of the pool
    adapter: Any  # SQLAlchemy's asyncpg adapter connection
    driver: Any  # the asyncpg connection


def _status_count(status: str) -> int:
    """The row count of a command tag ("UPDATE 3", "INSERT 0 1"); -1 when it has none."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else -1


class NativeStatements:
    """Runs programs (runners.Program) on kept asyncpg connections; see the module's doc."""

    def __init__(
        self, engine: AsyncEngine, cache: dict[Any, Compiled], limit: int, wait_seconds: float
    ) -> None:
        self._sync = engine.sync_engine
        self._cache = cache
        self._limit = limit
        # How long a call waits for a kept connection before it goes through the pool: as
        # long as a checkout waits for the pool's own (database.create_engine's pool_timeout).
        self._wait_seconds = wait_seconds
        self._idle: list[_Kept] = []
        self._count = 0  # kept connections, idle or busy
        # Calls waiting for a kept connection, since when; None wakes one to open one anew.
        self._waiters: deque[tuple[float, asyncio.Future[_Kept | None]]] = deque()
        # One timer for every waiter's timeout, not one per wait (docs/benchmarks.md,
        # "Timers, not tasks").
        self._sweeper: asyncio.TimerHandle | None = None

    @classmethod
    def for_engine(cls, engine: AsyncEngine, cache: dict[Any, Compiled]) -> NativeStatements | None:
        """For a PostgreSQL engine that does not log its statements (database.echo goes
        through SQLAlchemy, which logs them) and has a queue pool of more than one."""
        pool = engine.pool
        if (
            engine.dialect.name != "postgresql"
            or engine.echo
            or not isinstance(pool, QueuePool)
            or pool.size() < 2
        ):
            return None
        return cls(engine, cache, pool.size() // 2, pool.timeout())

    async def run(self, make: Callable[[], Program[T]], fallback: Callable[[], Awaitable[T]]) -> T:
        """Run the program ``make()`` on a kept connection; through ``fallback`` (the same
        program as a SQLAlchemy unit) when none could be had or asyncpg raised."""
        with translated():
            kept = await self._take()
            if kept is None:
                return await fallback()
            try:
                return await self._drive(make(), kept.driver)
            except (_NotLearned, _DriverFailed):
                pass  # the program's own exceptions (LeaseLost...) and cancellation propagate
            finally:
                self._give(kept)
            return await fallback()

    async def close(self) -> None:
        """Give every idle kept connection back to the pool (later calls keep new ones)."""
        idle, self._idle = self._idle, []
        for kept in idle:
            kept.adapter.autocommit = False
            try:
                await greenlet_spawn(kept.conn.close)
            except Exception as exc:
                log.debug("a kept connection did not close cleanly: %s", exc)
                self._drop(kept)
            else:
                self._count -= 1

    async def _take(self) -> _Kept | None:
        while True:
            while self._idle:
                kept = self._idle.pop()
                if not kept.driver.is_closed():
                    return kept
                self._drop(kept)  # the server closed it while it was idle
            if self._count < self._limit:
                return await self._open()
            try:
                woken = await self._wait()
            except TimeoutError:
                return None  # go through the pool
            if woken is not None:
                return woken

    async def _wait(self) -> _Kept | None:
        """Until a kept connection is given back (it) or one was dropped (None: look again);
        TimeoutError after the wait (the pool's timeout)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[_Kept | None] = loop.create_future()
        self._waiters.append((loop.time(), waiter))
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._wait_seconds / 2, self._sweep)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.cancelled():
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the caller was cancelled
                raise TimeoutError from None  # by _sweep
            # Given a connection in the same turn as the caller was cancelled: pass it on.
            result = waiter.result()
            if result is not None:
                self._give(result)
            raise

    def _sweep(self) -> None:
        """Time out the calls that waited the pool's timeout or more (each within half as
        long again); look again later while any wait."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for since, waiter in self._waiters:
            if now - since >= self._wait_seconds:
                waiter.cancel()
        self._waiters = deque(entry for entry in self._waiters if not entry[1].done())
        if self._waiters:
            self._sweeper = loop.call_later(self._wait_seconds / 2, self._sweep)

    async def _open(self) -> _Kept | None:
        self._count += 1
        try:
            conn = await greenlet_spawn(self._sync.connect)
        except Exception:
            self._count -= 1
            return None  # the pool's path fails the same way, with SQLAlchemy's error
        except BaseException:
            self._count -= 1
            raise
        adapter: Any = conn.connection.dbapi_connection
        # Each statement is its own transaction, as Transactions.each_statement runs them.
        adapter.autocommit = True
        return _Kept(conn, adapter, adapter.driver_connection)

    def _give(self, kept: _Kept) -> None:
        if kept.driver.is_closed():
            self._drop(kept)  # idle ones the server closed too are dropped when taken
            self._wake(None)  # a waiter may open one in its place
            return
        if not self._wake(kept):
            self._idle.append(kept)

    def _wake(self, kept: _Kept | None) -> bool:
        while self._waiters:
            _since, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(kept)
                return True
        return False

    def _drop(self, kept: _Kept) -> None:
        """Close a kept connection at once and give its slot back to the pool."""
        self._count -= 1
        try:
            # Outside a greenlet SQLAlchemy terminates the socket without waiting on it.
            kept.conn.invalidate()
            kept.conn.close()
        except Exception as exc:  # pragma: no cover - invalidate does not do I/O here
            log.debug("dropping a kept connection: %s", exc)

    async def _drive(self, program: Program[T], driver: Any) -> T:
        try:
            query = next(program)
            while True:
                query = program.send(await self._execute(query, driver))
        except StopIteration as done:
            return cast(T, done.value)

    async def _execute(self, query: Query, driver: Any) -> Any:
        compiled = self._cache.get(cache_key(query.stmt, query.params))
        if compiled is None or (compiled.columns and compiled.readers is None):
            raise _NotLearned
        try:
            values = compiled.values(query.params)
            if query.kind == "rowcount":
                return _status_count(await driver.execute(compiled.sql, *values))
            rows = await driver.fetch(compiled.sql, *values)
        except Exception as exc:
            raise _DriverFailed(str(exc)) from exc
        if query.kind == "first":
            return compiled.mapping(rows[0]) if rows else None
        return [compiled.mapping(row) for row in rows]
