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

from bridge.store.database import create_engine, migrate
from bridge.store.transactions import SqliteThread, StoreClosed


@pytest.fixture
async def sqlite(tmp_path: Any) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'units.db'}")
    await migrate(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


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
