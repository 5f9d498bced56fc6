"""How store calls reach the database (bridge/store/transactions.py): on SQLite one thread,
one kept connection, whole units, group commit; on PostgreSQL the asyncpg pool, dead pooled
connections, and the claim as one statement without BEGIN or COMMIT. A unit's driver errors
come out as the store's (bridge/store/errors.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bridge.store import DataRefused, Store, StoreClosed, StoreUnavailable
from bridge.store.transactions import SqliteThread, WalCheckpointer
from bridge.vocabulary import Done, NewEvent, NewReply, OutboxAck, Sent, SessionOpened, Step
from tests.support.database import closing
from tests.support.store_readers import conversation, head_inbox, head_outbox


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
    async with closing(SqliteThread(sqlite)) as runner:
        yield runner


def put(*keys: str, value: str = "v") -> Any:
    def unit(conn: Connection) -> None:
        conn.execute(
            text(
                "INSERT INTO channel_state (channel, key, value, updated_at) "
                "VALUES ('c', :k, :v, 0)"
            ),
            [{"k": key, "v": value} for key in keys],
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
    with pytest.raises(StoreUnavailable):
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


async def hold_the_thread(units: SqliteThread) -> tuple[asyncio.Task[None], threading.Event]:
    """A unit that keeps the store thread busy until the event is set: whatever is queued
    meanwhile runs as one group."""
    started, release = threading.Event(), threading.Event()

    def blocker(_conn: Connection) -> None:
        started.set()
        release.wait(10)

    task = asyncio.create_task(units.read(blocker))
    await asyncio.to_thread(started.wait, 10)
    return task, release


async def queued(units: SqliteThread, *units_: Any) -> list[asyncio.Task[Any]]:
    """Queue the units (in order) and let each reach the store's queue."""
    tasks = [asyncio.create_task(units.write(unit)) for unit in units_]
    await asyncio.sleep(0)  # each task runs up to its await: its unit is queued
    return tasks


async def as_one_group(units: SqliteThread, *writes: Any) -> list[Any]:
    """Run the writes as one group; each one's result or exception, in order."""
    holder, release = await hold_the_thread(units)
    tasks = await queued(units, *writes)
    release.set()
    await holder
    return list(await asyncio.gather(*tasks, return_exceptions=True))


async def test_queued_writes_share_one_transaction_and_each_failure_stays_its_own(
    units: SqliteThread,
) -> None:
    transactions: list[object] = []

    def put_and_note(key: str) -> Any:
        def unit(conn: Connection) -> None:
            transactions.append(conn.get_transaction())
            put(key)(conn)

        return unit

    def half_then_fail(conn: Connection) -> None:
        put_and_note("half")(conn)
        raise ValueError("bug in the unit")

    a, failed, b = await as_one_group(units, put_and_note("a"), half_then_fail, put_and_note("b"))
    assert a is None and b is None and isinstance(failed, ValueError)
    assert len(transactions) == 3 and len(set(map(id, transactions))) == 1  # one group
    assert await units.read(keys) == ["a", "b"]  # the failed unit's half write is undone


async def test_a_driver_failure_in_a_group_sends_each_unit_round_alone(
    units: SqliteThread,
) -> None:
    def bad_sql(conn: Connection) -> None:
        put("bad")(conn)
        conn.execute(text("INSERT INTO no_such_table VALUES (1)"))

    a, failed, b = await as_one_group(units, put("a"), bad_sql, put("b"))
    assert a is None and b is None and isinstance(failed, StoreUnavailable)
    assert await units.read(keys) == ["a", "b"]


async def test_a_unit_that_ends_the_transaction_itself_costs_the_group_nothing(
    units: SqliteThread,
) -> None:
    """Units must raise to undo themselves; one that rolls back on its own would take the
    group's earlier writes with it, so the group is run again unit by unit."""

    def rolls_back(conn: Connection) -> None:
        put("undone")(conn)
        conn.rollback()

    a, undone, b = await as_one_group(units, put("a"), rolls_back, put("b"))
    assert a is None and undone is None and b is None
    assert await units.read(keys) == ["a", "b"]


async def test_a_group_keeps_queue_order_around_reads(units: SqliteThread) -> None:
    holder, release = await hold_the_thread(units)
    first = await queued(units, put("a"))
    between = asyncio.create_task(units.read(keys))
    await asyncio.sleep(0)
    last = await queued(units, put("b"))
    release.set()
    await asyncio.gather(holder, *first, *last)
    assert await between == ["a"]  # saw the write queued before it, not the one after
    assert await units.read(keys) == ["a", "b"]


async def test_a_failed_commit_fails_only_the_unit_that_cannot_be_stored(
    units: SqliteThread,
) -> None:
    """The group's COMMIT is refused (a deferred foreign key one unit broke): every unit of
    the group runs again alone, so the others are stored and only that one fails."""

    def orphan(conn: Connection) -> None:
        conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")  # checked at COMMIT
        conn.execute(
            text(
                "INSERT INTO inbox (channel, event_id, conversation_id, kind, status, "
                "attempts, next_attempt_at, created_at) "
                "VALUES ('c', 'e', 424242, 'text', 'pending', 0, 0, 0)"
            )
        )

    a, failed, b = await as_one_group(units, put("a"), orphan, put("b"))
    assert a is None and b is None and isinstance(failed, DataRefused)
    assert await units.read(keys) == ["a", "b"]
    assert await units.read(lambda c: c.execute(text("SELECT count(*) FROM inbox")).scalar()) == 0


async def test_the_store_connection_leaves_checkpoints_to_the_checkpointer(
    sqlite: AsyncEngine,
) -> None:
    """A commit that crosses SQLite's usual 1000 pages does not checkpoint inline (that fsync
    was the latency p99); the checkpointer copies the log back, off the store's thread."""
    units = SqliteThread(sqlite)
    units._checkpointer.stop()  # this test runs the rounds itself
    path = sqlite.url.database or ""
    try:
        before = await asyncio.to_thread(os.path.getsize, path)
        await units.write(put(*(f"k{i}" for i in range(3000)), value="x" * 2000))  # ~6 MB
        # Still only in the log: no checkpoint ran inside that commit.
        assert await asyncio.to_thread(os.path.getsize, path) - before < 1_000_000
        checkpointer = WalCheckpointer(path, restart_pages=10**9)
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            pages, copied = checkpointer.checkpoint(conn)
        assert pages > 1000 and copied == pages  # all of it back in the database file
        assert await asyncio.to_thread(os.path.getsize, path) - before > 5_000_000
    finally:
        await units.close()


def test_a_log_that_keeps_growing_is_restarted(tmp_path: Path) -> None:
    path = str(tmp_path / "db.sqlite")
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE t (v TEXT)")
    writer.executemany("INSERT INTO t VALUES (?)", [("x" * 2000,)] * 500)
    checkpointer = WalCheckpointer(path, restart_pages=100)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        pages, copied = checkpointer.checkpoint(conn)
        assert pages == copied > 100
        writer.execute("INSERT INTO t VALUES ('after')")  # RESTART: this one starts afresh
        assert conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1] < 10
    writer.close()


def test_the_checkpointer_reports_a_failure_once_and_keeps_going(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_database = tmp_path / "garbage"
    not_a_database.write_bytes(b"this is not a database file" * 200)
    checkpointer = WalCheckpointer(str(not_a_database))
    conn = None
    with caplog.at_level(logging.WARNING, logger="bridge.store"):
        for _ in range(3):
            conn = checkpointer.run_once(conn)
            assert conn is None  # every round fails and starts afresh the next time
    warnings = [r for r in caplog.records if "checkpoint failed" in r.getMessage()]
    assert len(warnings) == 1
    not_a_database.unlink()  # now an empty database: the next round succeeds
    conn = checkpointer.run_once(conn)
    assert conn is not None
    conn.close()


async def test_a_begin_that_fails_is_raised_as_the_store_being_unavailable(
    units: SqliteThread,
) -> None:
    """The store thread begins on the driver itself (database.py); a BEGIN IMMEDIATE that
    fails still surfaces as SQLAlchemy's OperationalError inside the store (which tells a
    driver failure by it and starts afresh on a new connection), and as StoreUnavailable to
    the caller."""

    def refuse_writes(conn: Connection) -> None:
        conn.connection.driver_connection.execute("PRAGMA query_only = 1")  # type: ignore[union-attr]

    await units.read(refuse_writes)
    with pytest.raises(StoreUnavailable, match="readonly"):
        await units.write(put("x"))
    await units.write(put("y"))  # a fresh connection, which writes
    assert await units.read(keys) == ["y"]


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
        request,
        database_url,
        "postgresql",
        "PostgreSQL only: its server connections, sessions and transactions",
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


@pytest.mark.parametrize("call", ["write", "each_statement"])
async def test_postgres_dead_pooled_connections_cost_no_failed_call(
    pg_engine: AsyncEngine, database_url: str, call: str
) -> None:
    from bridge.store.transactions import AsyncTransactions

    units = AsyncTransactions(pg_engine)
    run = getattr(units, call)
    # Fill the pool with idle connections, as a running bridge has.
    await asyncio.gather(*(units.write(put(f"before-{i}")) for i in range(3)))
    assert await kill_server_connections(database_url) >= 1
    await run(put("after"))  # on a dead connection first, then again on a fresh one
    assert "after" in await units.read(keys)
    # Every connection the pool held is gone now: later calls do not fail either.
    await asyncio.gather(*(run(put(f"later-{i}")) for i in range(3)))
    # A statement that fails leaves nothing behind, with or without BEGIN.
    with pytest.raises(DataRefused):
        await run(put("after"))
    assert (await units.read(keys)).count("after") == 1


async def test_postgres_other_failures_are_not_retried(pg_engine: AsyncEngine) -> None:
    from bridge.store.transactions import AsyncTransactions

    units = AsyncTransactions(pg_engine)
    calls = 0

    def bad_sql(conn: Connection) -> None:
        nonlocal calls
        calls += 1
        conn.execute(text("SELECT no_such_column FROM channel_state"))

    with pytest.raises(StoreUnavailable, match="no_such_column"):
        await units.write(bad_sql)
    assert calls == 1


async def test_postgres_a_cancelled_caller_leaves_nothing_behind(pg_engine: AsyncEngine) -> None:
    """Cancelled while its unit waits on the server: the unit is rolled back inside the
    greenlet, its connection goes back to the pool, and later units run as usual."""
    from bridge.store.transactions import AsyncTransactions

    units = AsyncTransactions(pg_engine)
    await units.write(put("locked"))

    def put_then_wait(conn: Connection) -> None:
        put("cancelled")(conn)
        conn.execute(text("UPDATE channel_state SET value = 'w' WHERE key = 'locked'"))

    async with pg_engine.connect() as other:  # holds the row's lock
        await other.execute(text("UPDATE channel_state SET value = 'o' WHERE key = 'locked'"))
        task = asyncio.create_task(units.write(put_then_wait))
        await wait_for_lock_waiter(pg_engine, task)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await other.rollback()
    assert pg_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert await units.read(keys) == ["locked"]
    await units.write(put("after"))
    assert await units.read(keys) == ["after", "locked"]


async def test_postgres_dead_connection_under_the_direct_runner_is_replaced(
    pg_engine: AsyncEngine, database_url: str
) -> None:
    """The hot statements bypass SQLAlchemy's execution (runners.py), not its handling of a
    dead connection: it is invalidated and the store call runs again on a fresh one."""

    store = Store(pg_engine)
    try:
        await asyncio.gather(*(store.claim(10_000 + i, "me", 30) for i in range(3)))
        assert await kill_server_connections(database_url) >= 1
        assert await store.claim(10_000, "me", 30) is None  # no such conversation, no error
        await asyncio.gather(*(store.claim(10_000 + i, "me", 30) for i in range(3)))
    finally:
        await store.close()


async def test_postgres_never_opens_more_connections_than_the_pool_size(
    pg_engine: AsyncEngine, database_url: str
) -> None:
    """database.pool_size bounds a replica's connections (replicas x pool_size must fit the
    server's max_connections); callers beyond it wait for a pooled one. Extra connections
    opened under load and closed again each cost a connect and the preparing anew of every
    statement they run."""
    from bridge.store.database import create_engine

    engine = create_engine(database_url, pool_size=2)
    opened = 0

    def on_connect(_dbapi_connection: Any, _record: Any) -> None:
        nonlocal opened
        opened += 1

    event.listen(engine.sync_engine, "connect", on_connect)
    store = Store(engine)
    try:
        events = [NewEvent(f"e{n}", f"k{n}", "u", "text", "hi", None, None) for n in range(40)]
        cids = [cid for _, cid in await store.accept_many("c", events)]
        works = await asyncio.gather(*(store.claim(cid, "me", 30) for cid in cids))
        assert all(work is not None and work.inbox is not None for work in works)
        kept = await asyncio.gather(*(store.finish(cid, "me", 30) for cid in cids))
        assert all(work is not None for work in kept)  # each event is still pending
        assert opened == 2
    finally:
        await store.close()
        await engine.dispose()


async def test_store_with_database_echo_commits_as_without(
    engine: AsyncEngine, database_url: str
) -> None:
    """database.echo sends the hot statements through SQLAlchemy's execute (it logs them),
    which opens a transaction of its own around PostgreSQL's one-statement units: they are
    committed all the same, and their connection goes back to the pool clean."""
    from bridge.store.database import create_engine

    echoing = create_engine(database_url, pool_size=1, echo=True)
    store, other = Store(echoing), Store(engine)
    try:
        cid = await one_event_done(store)  # claim and commit, each seen by others at once
        assert await other.claim(cid, "other", 30) is None
        assert await store.finish(cid, "me", 30) is None  # nothing left: released
        work = await other.claim(cid, "other", 30)
        assert work is not None and work.inbox is None
        await store.renew(cid, "me", 30)  # a transaction on the same pooled connection
    finally:
        await store.close()
        await other.close()
        await echoing.dispose()


@contextlib.asynccontextmanager
async def server_commands(engine: AsyncEngine, store: Any) -> AsyncIterator[list[str]]:
    """The commands asyncpg logs on the connections ``engine`` opens from now on: the
    simple-protocol ones (BEGIN, COMMIT, ROLLBACK...) and the statements the store runs on
    asyncpg directly (native.py), not those SQLAlchemy runs as prepared statements. The
    store's kept connections and the pool are emptied first. asyncpg hands each record to
    the logger with ``call_soon``: read the list after a turn of the loop."""
    seen: list[str] = []
    await store.close()  # its kept connections would not have the logger
    await engine.dispose()  # nor would pooled ones

    def log(record: Any) -> None:
        seen.append(record.query.split()[0].rstrip(";").upper())

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(log)

    event.listen(engine.sync_engine, "connect", on_connect)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "connect", on_connect)


async def test_postgres_claim_is_one_statement_without_begin_or_commit(
    pg_engine: AsyncEngine,
) -> None:
    """A claim on PostgreSQL is one round trip: the statement is its own transaction."""

    store = Store(pg_engine)
    try:
        ((_, cid),) = await store.accept_many(
            "c", [NewEvent("e1", "k1", "u1", "text", "hi", None, None)]
        )
        async with server_commands(pg_engine, store) as seen:
            work = await store.claim(cid, "me", 30)
            await asyncio.sleep(0)  # the logger's records arrive
            assert work is not None and work.inbox is not None
            assert (work.conversation.id, work.inbox.event_id, work.outbox) == (cid, "e1", [])
            assert "BEGIN" not in seen and "COMMIT" not in seen, seen
            # The lease was taken and is visible to others at once: it was committed.
            assert await store.claim(cid, "other", 30) is None
            await asyncio.sleep(0)
            seen.clear()
            await store.renew(cid, "me", 30)  # an ordinary write, for contrast
            await asyncio.sleep(0)
            assert seen[0] == "BEGIN" and "COMMIT" in seen, seen
    finally:
        await store.close()


async def test_postgres_commit_is_one_statement_unless_it_adds_several_replies(
    pg_engine: AsyncEngine,
) -> None:
    """A worker's usual commit (the conversation, its inbox item, one reply, acks) is one
    statement on PostgreSQL; several replies at once take a transaction, so that their ids
    follow their order."""

    store = Store(pg_engine)
    try:
        ((_, cid),) = await store.accept_many(
            "c", [NewEvent("e1", "k1", "u1", "text", "hi", None, None)]
        )
        work = await store.claim(cid, "me", 30)
        assert work is not None and work.inbox is not None
        async with server_commands(pg_engine, store) as seen:
            step = Step(
                inbox_id=work.inbox.id,
                outcome=Done(time.time(), 1),
                conversation=SessionOpened("s-1", None, time.time(), None),
                replies=(NewReply([{"text": "one"}], {"chat_id": 7}, work.inbox.id),),
            )
            (reply,) = await store.commit(cid, "me", step, "c")
            await asyncio.sleep(0)
            assert "BEGIN" not in seen and "COMMIT" not in seen, seen
            assert await head_outbox(store, cid) == reply
            assert (reply.elements, reply.address, reply.inbox_id) == (
                [{"text": "one"}],
                {"chat_id": 7},
                work.inbox.id,
            )
            assert await head_inbox(store, cid) is None  # the item is done
            conv = await conversation(store, cid)
            assert (conv.state, conv.session_id) == ("active", "s-1")

            await asyncio.sleep(0)
            seen.clear()
            step = Step(replies=tuple(NewReply([{"text": t}], None) for t in ("two", "three")))
            sent = OutboxAck(reply.id, Sent(time.time(), 1, None))
            two, three = await store.commit(cid, "me", step, "c", [sent])
            await asyncio.sleep(0)
            assert seen[0] == "BEGIN" and seen[-1] == "COMMIT", seen
            assert reply.id < two.id < three.id
            assert await head_outbox(store, cid) == two  # the first reply was recorded sent
    finally:
        await store.close()


async def test_postgres_finish_is_one_statement_without_begin_or_commit(
    pg_engine: AsyncEngine,
) -> None:
    """A finish that records an ack and releases the lease is one round trip on PostgreSQL;
    one that keeps the lease reads its work in a second statement, no transaction either."""

    store = Store(pg_engine)
    try:
        cid = await one_event_done(store)
        (reply,) = await store.commit(cid, "me", Step(replies=(NewReply([{"t": 1}], None),)), "c")
        async with server_commands(pg_engine, store) as seen:
            sent = OutboxAck(reply.id, Sent(time.time(), 1, None))
            assert await store.finish(cid, "me", 30, [sent]) is None
            await asyncio.sleep(0)
            assert "BEGIN" not in seen and "COMMIT" not in seen, seen
            assert await head_outbox(store, cid) is None  # recorded sent
            assert await store.claim(cid, "other", 30) is not None  # released

            await store.accept_many("c", [NewEvent("e2", "k1", "u1", "text", "2", None, None)])
            await asyncio.sleep(0)
            seen.clear()
            work = await store.finish(cid, "other", 30)
            await asyncio.sleep(0)
            assert "BEGIN" not in seen and "COMMIT" not in seen, seen
            assert work is not None and work.inbox is not None and work.inbox.event_id == "e2"
    finally:
        await store.close()


async def test_postgres_one_event_is_accepted_in_one_statement(pg_engine: AsyncEngine) -> None:
    """An event on its own (a webhook, a Slack event, a quiet poll with its offset) is one
    round trip on PostgreSQL: conversation, event and channel state in one statement."""

    store = Store(pg_engine)
    try:
        async with server_commands(pg_engine, store) as seen:
            first = NewEvent("e1", "k1", "u1", "text", "hi", {"chat_id": 7}, None)
            ((accepted, cid),) = await store.accept_many("c", [first], {"offset": "11"})
            await asyncio.sleep(0)
            assert "BEGIN" not in seen and "COMMIT" not in seen, seen
            assert accepted
            assert await store.state_get("c", "offset") == "11"
            head = await head_inbox(store, cid)
            assert head is not None and (head.event_id, head.address) == ("e1", {"chat_id": 7})
            # the same event again: a duplicate, in the same conversation, stored once
            assert await store.accept_many("c", [first], {"offset": "12"}) == [(False, cid)]
            assert await store.state_get("c", "offset") == "12"
            second = NewEvent("e2", "k1", "u1", "text", "again", None, None)
            assert await store.accept_many("c", [second]) == [(True, cid)]
            work = await store.claim(cid, "me", 30)
            assert work is not None and work.inbox is not None and work.inbox.event_id == "e1"
            assert (work.conversation.requester_id, work.conversation.state) == ("u1", "new")
    finally:
        await store.close()


async def test_postgres_event_accepted_while_a_claim_waits_is_not_lost(
    pg_engine: AsyncEngine,
) -> None:
    """The one-statement claim reads the inbox with the snapshot it started with. An event
    whose intake held the conversation's row lock while the claim waited for it can be
    missing from the claim's work; finish() then finds it."""

    store = Store(pg_engine)
    try:
        cid = await one_event_done(store)
        assert await store.finish(cid, "me", 30) is None  # nothing left: released

        async with intake_holding_the_row(pg_engine, cid, "e2") as intake:
            claim = asyncio.create_task(store.claim(cid, "me", 30))
            await wait_for_lock_waiter(pg_engine, claim)
            await intake.commit()
        work = await claim
        assert work is not None
        seen = [work.inbox.event_id] if work.inbox else []
        if not seen:  # not in the claim's snapshot: the worker finishes, and finish has it
            work = await store.finish(cid, "me", 30)
            assert work is not None and work.inbox is not None
            seen.append(work.inbox.event_id)
        assert seen == ["e2"]
    finally:
        await store.close()


async def test_postgres_event_accepted_while_finish_waits_is_not_lost(
    pg_engine: AsyncEngine,
) -> None:
    """finish() is one statement that reads the queues with the snapshot it started with.
    An intake that held the conversation's row meanwhile left a newer version of the row:
    finish keeps the lease for it and hands back the event, read afresh."""

    store = Store(pg_engine)
    try:
        cid = await one_event_done(store)
        # Nothing is left to do: only an event that arrives now keeps the lease.
        async with intake_holding_the_row(pg_engine, cid, "e2") as intake:
            finishing = asyncio.create_task(store.finish(cid, "me", 30))
            await wait_for_lock_waiter(pg_engine, finishing)
            await intake.commit()
        work = await finishing
        assert work is not None and work.inbox is not None and work.inbox.event_id == "e2"
        assert await store.claim(cid, "other", 30) is None  # the lease was kept
    finally:
        await store.close()


async def one_event_done(store: Any, key: str = "k1", event_id: str = "e1") -> int:
    """A conversation whose one event ``event_id`` was claimed by "me" and committed done;
    the lease is still held (the worker has not finished). Its id."""

    ((_, cid),) = await store.accept_many(
        "c", [NewEvent(event_id, key, "u1", "text", "one", None, None)]
    )
    work = await store.claim(cid, "me", 30)
    assert work is not None and work.inbox is not None
    done = Done(time.time(), 1)
    await store.commit(cid, "me", Step(inbox_id=work.inbox.id, outcome=done), "c")
    return int(cid)


@contextlib.asynccontextmanager
async def intake_holding_the_row(
    engine: AsyncEngine, cid: int, event_id: str
) -> AsyncIterator[AsyncConnection]:
    """Another replica's accept of ``event_id`` into conversation ``cid``, its transaction
    left open: it holds the conversation's row lock until the caller commits."""
    async with engine.connect() as intake:
        await intake.execute(
            text("UPDATE conversations SET due_at = :now WHERE id = :cid"),
            {"now": time.time(), "cid": cid},
        )
        await intake.execute(
            text(
                "INSERT INTO inbox (channel, event_id, conversation_id, kind, text, "
                "status, attempts, next_attempt_at, created_at) VALUES "
                "('c', :event_id, :cid, 'text', 'two', 'pending', 0, :now, :now)"
            ),
            {"now": time.time(), "cid": cid, "event_id": event_id},
        )
        yield intake


async def wait_for_lock_waiter(
    engine: AsyncEngine, task: asyncio.Task[Any] | None, waiting: bool = True
) -> None:
    """Until a session of this database waits for a row lock, or with ``waiting=False``
    until none does (bounded; fails if ``task``, the one meant to wait, ends first)."""
    database = engine.url.database
    async with engine.connect() as conn:
        for _ in range(500):
            assert task is None or not task.done(), "the task did not wait for the row lock"
            waiters = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = :db AND wait_event_type = 'Lock'"
                ),
                {"db": database},
            )
            if bool(waiters) == waiting:
                return
            # pg_stat_activity is read once per transaction: look again in a new one.
            await conn.rollback()
            await asyncio.sleep(0.01)
    raise AssertionError("no session waited for the row lock" if waiting else "one still waits")


# --- PostgreSQL: the hot statements on kept asyncpg connections (native.py) -------------------


async def one_message(store: Any, key: str) -> None:
    """A message's store calls as a worker makes them: accept, claim, commit, finish."""
    cid = await one_event_done(store, key, f"e-{key}")
    assert await store.finish(cid, "me", 30) is None


async def test_postgres_hot_statements_run_on_kept_asyncpg_connections(
    database_url: str, pg_engine: AsyncEngine
) -> None:
    """Once SQLAlchemy has run a hot statement, the store runs it on asyncpg itself (asyncpg
    logs those; SQLAlchemy's prepared statements it does not), each its own transaction, on
    connections it keeps: at most half the pool, all given back by close()."""
    from bridge.store.database import create_engine

    engine = create_engine(database_url, pool_size=4)
    store = Store(engine)
    try:
        await one_message(store, "k0")  # SQLAlchemy runs each statement once
        async with server_commands(engine, store) as seen:
            for n in range(1, 4):
                await one_message(store, f"k{n}")
            await asyncio.sleep(0)
            # accept, claim, commit, finish: one statement each, all on asyncpg
            assert seen == ["WITH"] * 12, seen
            assert engine.pool.checkedout() == 1  # type: ignore[attr-defined]
            seen.clear()
            # 20 at once: they wait for the 2 kept connections rather than take the pool's
            await asyncio.gather(*(one_message(store, f"m{n}") for n in range(20)))
            await asyncio.sleep(0)
            assert len(seen) == 80 and "BEGIN" not in seen, seen
            assert engine.pool.checkedout() == 2  # type: ignore[attr-defined]
        await store.close()
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        await one_message(store, "after")  # a closed store keeps connections anew
    finally:
        await store.close()
        await engine.dispose()


async def test_postgres_kept_connection_killed_mid_statement_is_replaced(
    pg_engine: AsyncEngine,
) -> None:
    """A kept connection that dies under a statement: the call runs again through the pool
    and succeeds; the dead connection's slot goes back to the pool."""

    store = Store(pg_engine)
    try:
        cid = await one_event_done(store)  # claim and commit learned
        assert await store.finish(cid, "me", 30) is None
        async with intake_holding_the_row(pg_engine, cid, "e2") as intake:
            claim = asyncio.create_task(store.claim(cid, "me", 30))
            await wait_for_lock_waiter(pg_engine, claim)
            killed = await intake.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :db AND wait_event_type = 'Lock'"
                ),
                {"db": pg_engine.url.database},
            )
            assert killed == 1
            await wait_for_lock_waiter(pg_engine, claim)  # again, through the pool
            await intake.commit()
        work = await claim
        assert work is not None
        if work.inbox is None:  # not in the claim's snapshot: finish has it
            work = await store.finish(cid, "me", 30)
        assert work is not None and work.inbox is not None and work.inbox.event_id == "e2"
    finally:
        await store.close()
    assert pg_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_postgres_cancelled_native_call_leaves_no_statement_behind(
    pg_engine: AsyncEngine,
) -> None:
    """A caller cancelled while its statement waits on asyncpg: the server cancels the
    statement (the lease is not taken behind the caller's back) and the kept connection
    serves the next call."""

    store, other = Store(pg_engine), Store(pg_engine)
    try:
        cid = await one_event_done(store)
        assert await store.finish(cid, "me", 30) is None
        async with intake_holding_the_row(pg_engine, cid, "e2") as intake:
            claim = asyncio.create_task(store.claim(cid, "me", 30))
            await wait_for_lock_waiter(pg_engine, claim)
            claim.cancel()
            with pytest.raises(asyncio.CancelledError):
                await claim
            await wait_for_lock_waiter(pg_engine, None, waiting=False)
            await intake.commit()
        work = await other.claim(cid, "other", 30)
        assert work is not None  # the cancelled claim did not take the lease
        assert await store.claim(cid, "me", 30) is None  # the kept connection still works
    finally:
        await store.close()
        await other.close()
    assert pg_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_postgres_a_call_waits_for_a_kept_connection_then_goes_through_the_pool(
    database_url: str, pg_engine: AsyncEngine
) -> None:
    """Every kept connection busy (here the one of a pool of 2, its claim waiting on a row
    lock): another call waits for it, as long as the pool's timeout, then goes through the
    pool instead. A waiter that is cancelled leaves the kept connection to the others."""
    from bridge.store.database import create_engine

    engine = create_engine(database_url, pool_size=2, pool_timeout=0.2)
    store = Store(engine)
    try:
        cid = await one_event_done(store)
        assert await store.finish(cid, "me", 30) is None
        await one_message(store, "warm")  # every statement learned, one connection kept
        async with intake_holding_the_row(pg_engine, cid, "e2") as intake:
            blocked = asyncio.create_task(store.claim(cid, "me", 30))
            await wait_for_lock_waiter(pg_engine, blocked)
            cancelled = asyncio.create_task(store.claim(cid + 1000, "me", 30))
            await asyncio.sleep(0.05)
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            started = time.monotonic()
            # through the pool, after the wait
            await asyncio.wait_for(one_message(store, "meanwhile"), 5)
            assert 0.2 <= time.monotonic() - started < 5
            assert not blocked.done()
            await intake.commit()
        assert await blocked is not None
        async with server_commands(engine, store) as seen:
            await one_message(store, "after")
            await asyncio.sleep(0)
            assert len(seen) == 4 and "BEGIN" not in seen, seen  # on a kept connection
    finally:
        await store.close()
        await engine.dispose()


def test_command_tags_give_their_row_counts() -> None:
    """asyncpg's execute() answers with the command tag; a rowcount statement run natively
    reads its count from it, as SQLAlchemy's adapter does."""
    from bridge.store.native import _status_count

    assert _status_count("UPDATE 3") == 3
    assert _status_count("INSERT 0 1") == 1
    assert _status_count("DELETE 0") == 0
    assert _status_count("BEGIN") == -1
