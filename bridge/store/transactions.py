"""How a store call reaches the database: each call is one synchronous unit of work.

Every Store method is a plain function over a SQLAlchemy ``Connection`` that runs whole and
atomically: all of it is committed, or none of it. A unit never commits or rolls back itself
(it raises to undo what it did), and may run again from the start:

* SQLite: on one dedicated thread with a synchronous pysqlite connection. A call costs one
  thread hop, where aiosqlite costs three or four per statement — SQL had been the largest
  part of the bridge's CPU (docs/benchmarks.md, "SQLite store thread"). Writes that queue up
  meanwhile share one transaction (group commit, below). One connection on one thread also
  keeps SQLite's single writer an orderly queue. A caller that is cancelled does not
  interrupt the unit: it commits or rolls back on its own, so no connection is left holding
  the write lock.
* PostgreSQL: asyncpg, natively asynchronous, the whole unit in one pass through SQLAlchemy's
  greenlet bridge. A unit whose writes are all in its first statement (the claim, a worker's
  usual commit) may skip BEGIN and COMMIT (``each_statement``): each statement is then its
  own transaction, and a statement is atomic.

Errors: what a unit raises reaches its caller as it is, but for the drivers' exceptions,
which are raised as the store's (bridge/store/errors.py) once nothing here needs them any
more (to run a unit again on a fresh connection, or a group's units alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from bridge.store.database import READ_ONLY, is_sqlite, sqlite_sync_engine
from bridge.store.errors import StoreClosed, translated

T = TypeVar("T")
log = logging.getLogger("bridge.store")
Unit = Callable[[Connection], T]


class Transactions(Protocol):
    async def write(self, unit: Callable[[Connection], T]) -> T:
        """Run ``unit`` in a transaction that commits if it returns, rolls back if it raises."""
        ...

    async def read(self, unit: Callable[[Connection], T]) -> T:
        """Run ``unit`` on a connection; nothing it does is committed."""
        ...

    async def each_statement(self, unit: Callable[[Connection], T]) -> T:
        """Run ``unit`` with each of its statements a transaction of its own where that saves
        round trips (PostgreSQL: no BEGIN, no COMMIT); elsewhere as write(). Only for a unit
        whose writes are all in its first statement and which may run again whole."""
        ...

    async def close(self) -> None: ...


class _DeadConnection(Exception):
    """A unit's statement met a pooled connection that had died: run the unit again."""

    def __init__(self, error: DBAPIError) -> None:
        super().__init__(str(error))
        self.error = error


class AsyncTransactions:
    """PostgreSQL: the whole unit — checkout, BEGIN, its statements, COMMIT, checkin — runs
    in one pass through SQLAlchemy's greenlet bridge, on the sync face of the async engine.
    Going through ``AsyncConnection`` instead costs a greenlet per step (connect, begin,
    run_sync, commit, close): a large part of a short unit's CPU (docs/benchmarks.md,
    "PostgreSQL store calls").

    A pooled connection that died (the server restarted, a proxy dropped it) fails the
    unit's first statement; the unit is then run once more on a fresh connection. Nothing
    of it can have been committed: a commit is never retried. This replaces a ping on every
    checkout (pool_pre_ping), which cost a round trip per unit (docs/benchmarks.md,
    "PostgreSQL store calls").

    A caller cancelled mid-unit cancels the statement it waits on; the unit then unwinds
    inside the greenlet like any failure (rolled back, the connection returned)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._sync: Engine = engine.sync_engine

    def _once(self, unit: Callable[[Connection], T], commit: bool, each_statement: bool) -> T:
        with self._sync.connect() as conn:
            transaction = None
            driver: Any = conn.connection.dbapi_connection
            if each_statement:
                # The driver's own autocommit: no BEGIN is sent, so nothing to COMMIT. Set
                # on the driver, not as the Connection's isolation level: SQLAlchemy would
                # then also reset it at every checkin (docs/benchmarks.md, "PostgreSQL store
                # calls").
                driver.autocommit = True
            else:
                transaction = conn.begin()
            try:
                result = unit(conn)
            except DBAPIError as exc:
                if exc.connection_invalidated:
                    raise _DeadConnection(exc) from exc
                raise
            finally:
                if each_statement and not conn.invalidated:
                    driver.autocommit = False
                    if conn.in_transaction():  # SQLAlchemy's own autobegin (database.echo)
                        conn.commit()
            # Outside the try: a failed COMMIT is never run again.
            if transaction is not None:
                if commit:
                    transaction.commit()
                else:
                    transaction.rollback()  # a read
            return result

    def _unit(self, unit: Callable[[Connection], T], commit: bool, each_statement: bool) -> T:
        try:
            return self._once(unit, commit, each_statement)
        except _DeadConnection:
            pass  # the pool has discarded it (and every connection older): the next is fresh
        try:
            return self._once(unit, commit, each_statement)
        except _DeadConnection as again:
            raise again.error from None  # the driver's error, as any other failure

    async def _run(
        self, unit: Callable[[Connection], T], commit: bool, each_statement: bool = False
    ) -> T:
        with translated():
            result: T = await greenlet_spawn(self._unit, unit, commit, each_statement)
        return result

    async def write(self, unit: Callable[[Connection], T]) -> T:
        return await self._run(unit, commit=True)

    async def read(self, unit: Callable[[Connection], T]) -> T:
        return await self._run(unit, commit=False)

    async def each_statement(self, unit: Callable[[Connection], T]) -> T:
        return await self._run(unit, commit=True, each_statement=True)

    async def close(self) -> None:
        return None  # the engine belongs to the caller


@dataclass(slots=True)
class _Job:
    """One unit queued for the store thread, and what came of it."""

    unit: Callable[[Connection], Any]
    commit: bool
    future: asyncio.Future[Any]
    ok: bool = False
    outcome: Any = None  # the unit's result, or the exception it raised


class _Stop:
    """Queued by close(): units queued before it still run."""


class SqliteThread:
    """SQLite: every unit on one thread, through one synchronous connection.

    Group commit: the writes that queued up while the thread was busy run in one
    transaction, each inside a savepoint of its own, and are answered together after the one
    COMMIT. Under load most of a short unit's cost is its transaction (BEGIN IMMEDIATE,
    COMMIT, the WAL write) and its two thread hops; a group pays them once. A unit that
    raises is rolled back to its savepoint alone. A driver failure, or a failed COMMIT, sends
    every unit of the group round again on its own, so each gets exactly its own outcome:
    units are plain functions over a connection and nothing of the group was committed."""

    # Bounds how long the first unit of a group waits for the others (a few ms under load).
    MAX_GROUP = 32

    def __init__(self, engine: AsyncEngine) -> None:
        self._sync: Engine = sqlite_sync_engine(engine)
        self._queue: queue.SimpleQueue[_Job | _Stop] = queue.SimpleQueue()
        # Kept open between units (on the thread only): a pool checkout and its reset per
        # unit cost more than a short transaction itself (docs/benchmarks.md, "SQLite store
        # thread").
        self._conn: Connection | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="sqlite-store", daemon=True)
        self._thread.start()
        self._checkpointer = WalCheckpointer(os.path.abspath(self._sync.url.database or ""))
        self._checkpointer.start()

    # --- on the store thread -----------------------------------------------------------

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            group = [first]
            while len(group) < self.MAX_GROUP and not isinstance(group[-1], _Stop):
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            jobs = [job for job in group if isinstance(job, _Job)]
            writes: list[_Job] = []
            for job in jobs:  # in queue order: a read sees every write queued before it
                if job.commit:
                    writes.append(job)
                    continue
                self._write_group(writes)
                writes = []
                self._alone(job)
            self._write_group(writes)
            self._answer(jobs)
            if isinstance(group[-1], _Stop):
                self._drop()
                self._sync.dispose()
                return

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.invalidated or self._conn.closed:
            if self._conn is not None:
                self._conn.close()
            self._conn = self._sync.connect()
        return self._conn

    def _alone(self, job: _Job) -> None:
        try:
            job.outcome, job.ok = self._run(job.unit, job.commit), True
        except Exception as exc:
            job.outcome, job.ok = exc, False

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

    def _write_group(self, jobs: list[_Job]) -> None:
        if len(jobs) <= 1:
            for job in jobs:
                self._alone(job)
            return
        try:
            conn = self._connection()
            conn.info[READ_ONLY] = False
            driver: Any = conn.connection.driver_connection
            with conn.begin():
                for job in jobs:
                    driver.execute("SAVEPOINT unit")
                    try:
                        job.outcome, job.ok = job.unit(conn), True
                    except DBAPIError:
                        raise
                    except Exception as exc:  # the unit's own failure: undo it alone
                        driver.execute("ROLLBACK TO unit")
                        job.outcome, job.ok = exc, False
                    driver.execute("RELEASE unit")
        except (DBAPIError, sqlite3.Error):
            self._drop()
            for job in jobs:
                self._alone(job)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()  # closed for good, not returned to the pool
                conn.close()

    def _answer(self, jobs: list[_Job]) -> None:
        """One wake-up of the event loop for the whole group."""
        loops = {job.future.get_loop() for job in jobs}
        for loop in loops:
            mine = [job for job in jobs if job.future.get_loop() is loop]
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, mine)

    # --- on the event loop -------------------------------------------------------------

    async def _submit(self, unit: Callable[[Connection], T], commit: bool) -> T:
        if self._closed:
            raise StoreClosed("the store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put(_Job(unit, commit, future))
        # A caller that is cancelled stops waiting; its unit still runs whole.
        with translated():
            return await future

    async def write(self, unit: Callable[[Connection], T]) -> T:
        return await self._submit(unit, commit=True)

    async def read(self, unit: Callable[[Connection], T]) -> T:
        return await self._submit(unit, commit=False)

    async def each_statement(self, unit: Callable[[Connection], T]) -> T:
        # One writer at a time, and a group shares its COMMIT already: nothing to save.
        return await self._submit(unit, commit=True)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Behind every unit already queued: those finish first.
        self._queue.put(_Stop())
        await asyncio.to_thread(self._thread.join)
        await asyncio.to_thread(self._checkpointer.stop)


def _settle(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.future.done():
            continue  # its caller was cancelled
        if job.ok:
            job.future.set_result(job.outcome)
        else:
            job.future.set_exception(job.outcome)


class WalCheckpointer:
    """Copies SQLite's write-ahead log back into the database file, on a thread of its own.

    SQLite does it by itself every 1000 pages, inside the commit that crossed the mark; the
    copy ends with an fsync, and every unit queued behind that commit waited for it: that set
    the p99 of the bridge's added latency (docs/benchmarks.md, "SQLite store thread"). So the
    store's connection checkpoints only as a backstop, at a much larger log, and this thread
    runs a PASSIVE checkpoint every ``interval`` seconds, which never blocks the writer. A
    writer that never pauses can keep PASSIVE checkpoints from reaching the end of the log
    (only then does the log start afresh); once it holds ``restart_pages`` a RESTART
    checkpoint waits for the write under way and lets the next one start the log anew."""

    def __init__(self, path: str, interval: float = 0.5, restart_pages: int = 20_000) -> None:
        self._path = path
        self._interval = interval
        self._restart_pages = restart_pages
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._last_error = ""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def checkpoint(self, conn: sqlite3.Connection) -> tuple[int, int]:
        """One round: (pages in the log, pages copied back) after it."""
        _busy, pages, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if pages >= self._restart_pages:
            _busy, pages, copied = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        return int(pages), int(copied)

    def run_once(self, conn: sqlite3.Connection | None) -> sqlite3.Connection | None:
        """One round of the thread: connect if need be, checkpoint; the connection to use
        next time (None after a failure, which is logged once until a round succeeds)."""
        try:
            if conn is None:
                conn = sqlite3.connect(
                    self._path, timeout=30, isolation_level=None, check_same_thread=False
                )
            self.checkpoint(conn)
            self._last_error = ""
            return conn
        except sqlite3.Error as exc:
            # The store's own calls report an unusable database; say it here once.
            if str(exc) != self._last_error:
                log.warning("SQLite WAL checkpoint failed: %s", exc)
                self._last_error = str(exc)
            if conn is not None:
                conn.close()
            return None

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while not self._stopping.wait(self._interval):
            conn = self.run_once(conn)
        if conn is not None:
            conn.close()


def transactions_for(engine: AsyncEngine) -> Transactions:
    return SqliteThread(engine) if is_sqlite(engine) else AsyncTransactions(engine)
