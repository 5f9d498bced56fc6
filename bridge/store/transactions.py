"""How a store call reaches the database: each call is one synchronous unit of work.

Every Store method is a plain function over a SQLAlchemy ``Connection`` that runs whole, in
one transaction:

* SQLite: on one dedicated thread with a synchronous pysqlite connection. A call costs one
  thread hop, where aiosqlite costs three or four per statement — most of the bridge's CPU
  per message went there (docs/benchmarks.md). One connection on one thread also keeps
  SQLite's single writer an orderly queue. A caller that is cancelled does not interrupt the
  unit: it commits or rolls back on its own, so no connection is left holding the write lock.
* PostgreSQL: asyncpg, natively asynchronous, through ``AsyncConnection.run_sync``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.store.database import READ_ONLY, StoreError, is_sqlite, sqlite_sync_engine

T = TypeVar("T")
Unit = Callable[[Connection], T]


class StoreClosed(StoreError):
    """The store was closed (the service is shutting down)."""


class Transactions(Protocol):
    async def write(self, unit: Callable[[Connection], T]) -> T:
        """Run ``unit`` in a transaction that commits if it returns, rolls back if it raises."""
        ...

    async def read(self, unit: Callable[[Connection], T]) -> T:
        """Run ``unit`` on a connection; nothing it does is committed."""
        ...

    async def close(self) -> None: ...


class AsyncTransactions:
    """PostgreSQL: the unit runs in the async engine's greenlet bridge.

    A pooled connection that died (the server restarted, a proxy dropped it) fails the
    unit's first statement; the unit is then run once more on a fresh connection. Nothing
    of it can have been committed: a commit is never retried. This replaces a ping on every
    checkout (pool_pre_ping), which cost a round trip and a quarter of a unit's CPU."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def _run(self, unit: Callable[[Connection], T], commit: bool) -> T:
        for attempt in (1, 2):
            async with self._engine.connect() as conn:
                try:
                    await conn.begin()
                    result = await conn.run_sync(unit)
                except DBAPIError as exc:
                    if exc.connection_invalidated and attempt == 1:
                        continue  # the pool has discarded it; the next one is fresh
                    raise
                if commit:
                    await conn.commit()
                return result  # a read: leaving the block rolls back
        raise AssertionError("unreachable")

    async def write(self, unit: Callable[[Connection], T]) -> T:
        return await self._run(unit, commit=True)

    async def read(self, unit: Callable[[Connection], T]) -> T:
        return await self._run(unit, commit=False)

    async def close(self) -> None:
        return None  # the engine belongs to the caller


class SqliteThread:
    """SQLite: every unit on one thread, through one synchronous connection."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._sync: Engine = sqlite_sync_engine(engine)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-store")
        # Kept open between units (on the thread only): a pool checkout and its reset per
        # unit cost more than a short transaction itself.
        self._conn: Connection | None = None
        self._closed = False

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.invalidated or self._conn.closed:
            if self._conn is not None:
                self._conn.close()
            self._conn = self._sync.connect()
        return self._conn

    def _run(self, unit: Callable[[Connection], T], commit: bool) -> T:
        conn = self._connection()
        conn.info[READ_ONLY] = not commit
        try:
            with conn.begin() as transaction:
                result = unit(conn)
                if not commit and transaction.is_active:
                    transaction.rollback()
                return result
        except DBAPIError:
            # The driver failed (disk, file gone, locked too long): start afresh next time.
            self._drop()
            raise

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()  # closed for good, not returned to the pool
                conn.close()

    def _write(self, unit: Callable[[Connection], T]) -> T:
        return self._run(unit, commit=True)

    def _read(self, unit: Callable[[Connection], T]) -> T:
        return self._run(unit, commit=False)

    def _dispose(self) -> None:
        self._drop()
        self._sync.dispose()

    async def _submit(self, run: Callable[[Callable[[Connection], T]], T], unit: Unit[T]) -> T:
        if self._closed:
            raise StoreClosed("the store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._thread, run, unit)

    async def write(self, unit: Callable[[Connection], T]) -> T:
        return await self._submit(self._write, unit)

    async def read(self, unit: Callable[[Connection], T]) -> T:
        return await self._submit(self._read, unit)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Queued behind any unit still running: that one finishes first.
        await asyncio.get_running_loop().run_in_executor(self._thread, self._dispose)
        self._thread.shutdown(wait=False)


def transactions_for(engine: AsyncEngine) -> Transactions:
    return SqliteThread(engine) if is_sqlite(engine) else AsyncTransactions(engine)
