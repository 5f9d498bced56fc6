"""The store's unit runner on SQLite: one thread, one kept connection, whole units."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.store.transactions import SqliteThread, StoreClosed


def migrated(request: pytest.FixtureRequest, url: str, backend: str, why: str) -> AsyncEngine:
    """conftest's migrated ``engine``, for tests of one backend only (the other is skipped
    before any database is migrated)."""
    if not url.startswith(backend):
        pytest.skip(why)
    engine: AsyncEngine = request.getfixturevalue("engine")
    return engine


@pytest.fixture
def sqlite(request: pytest.FixtureRequest, database_url: str) -> AsyncEngine:
    return migrated(request, database_url, "sqlite", "SQLite only: the store thread")


@pytest.fixture
async def units(sqlite: AsyncEngine) -> AsyncIterator[SqliteThread]:
    runner = SqliteThread(sqlite)
    try:
        yield runner
    finally:
        await runner.close()


def put(key: str) -> Any:
    def unit(conn: Connection) -> None:
        conn.execute(
            text(
                "INSERT INTO channel_state (channel, key, value, updated_at) "
                "VALUES ('c', :k, 'v', 0)"
            ),
            {"k": key},
        )

    return unit


def keys(conn: Connection) -> list[str]:
    return [r[0] for r in conn.execute(text("SELECT key FROM channel_state ORDER BY key"))]


async def test_write_commits_read_does_not_and_a_failing_unit_leaves_nothing(
    units: SqliteThread,
) -> None:
    await units.write(put("a"))
    await units.read(put("from-a-read"))  # a read unit's writes are rolled back

    def half_then_fail(conn: Connection) -> None:
        put("half")(conn)
        raise ValueError("bug in the unit")

    with pytest.raises(ValueError):
        await units.write(half_then_fail)
    assert await units.read(keys) == ["a"]


async def test_units_run_on_one_thread_other_than_the_loop(units: SqliteThread) -> None:
    seen = await asyncio.gather(*(units.read(lambda _c: threading.get_ident()) for _ in range(20)))
    assert len(set(seen)) == 1 and seen[0] != threading.get_ident()


async def test_a_driver_failure_replaces_the_connection(units: SqliteThread) -> None:
    def refuse_writes(conn: Connection) -> None:
        conn.connection.driver_connection.execute("PRAGMA query_only = 1")  # type: ignore[union-attr]

    await units.read(refuse_writes)
    with pytest.raises(OperationalError):
        await units.write(put("refused"))
    await units.write(put("after"))  # a fresh connection: writes again
    assert await units.read(keys) == ["after"]


async def test_a_cancelled_caller_does_not_cut_its_unit_short(units: SqliteThread) -> None:
    started, release = threading.Event(), threading.Event()

    def slow(conn: Connection) -> None:
        started.set()
        release.wait(10)
        put("slow")(conn)

    task = asyncio.create_task(units.write(slow))
    await asyncio.to_thread(started.wait, 10)
    task.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await units.read(keys) == ["slow"]  # queued behind it: sees its commit


async def test_closed_runner_refuses_new_units(sqlite: AsyncEngine) -> None:
    runner = SqliteThread(sqlite)
    await runner.write(put("x"))
    await runner.close()
    await runner.close()  # twice is fine
    with pytest.raises(StoreClosed):
        await runner.read(keys)


# --- PostgreSQL: dead pooled connections ------------------------------------------------------


@pytest.fixture
def pg_engine(request: pytest.FixtureRequest, database_url: str) -> AsyncEngine:
    return migrated(
        request, database_url, "postgresql", "PostgreSQL only: SQLite has no server to lose"
    )


async def kill_server_connections(url: str) -> int:
    """What a server restart does to a pool: every connection to the database is dropped."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    name = make_url(url).database
    admin = create_async_engine(make_url(url).set(database="postgres"))
    try:
        async with admin.connect() as conn:
            killed = await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            return len(killed.all())
    finally:
        await admin.dispose()


async def test_postgres_dead_pooled_connections_cost_no_failed_call(
    pg_engine: AsyncEngine, database_url: str
) -> None:
    from bridge.store.transactions import AsyncTransactions

    units = AsyncTransactions(pg_engine)
    # Fill the pool with idle connections, as a running bridge has.
    await asyncio.gather(*(units.write(put(f"before-{i}")) for i in range(3)))
    assert await kill_server_connections(database_url) >= 1
    await units.write(put("after"))  # on a dead connection first, then again on a fresh one
    assert "after" in await units.read(keys)
    # Every connection the pool held is gone now: later calls do not fail either.
    await asyncio.gather(*(units.write(put(f"later-{i}")) for i in range(3)))


async def test_postgres_other_failures_are_not_retried(pg_engine: AsyncEngine) -> None:
    from bridge.store.transactions import AsyncTransactions

    units = AsyncTransactions(pg_engine)
    calls = 0

    def bad_sql(conn: Connection) -> None:
        nonlocal calls
        calls += 1
        conn.execute(text("SELECT no_such_column FROM channel_state"))

    with pytest.raises(Exception, match="no_such_column"):
        await units.write(bad_sql)
    assert calls == 1


async def test_postgres_dead_connection_under_the_direct_runner_is_replaced(
    pg_engine: AsyncEngine, database_url: str
) -> None:
    """The hot statements bypass SQLAlchemy's execution (runners.py), not its handling of a
    dead connection: it is invalidated and the store call runs again on a fresh one."""
    from bridge.store.repository import Store

    store = Store(pg_engine)
    try:
        await asyncio.gather(*(store.claim(10_000 + i, "me", 30) for i in range(3)))
        assert await kill_server_connections(database_url) >= 1
        assert await store.claim(10_000, "me", 30) is None  # no such conversation, no error
        await asyncio.gather(*(store.claim(10_000 + i, "me", 30) for i in range(3)))
    finally:
        await store.close()
