"""The store's errors (bridge/store/errors.py): every driver exception translated in one place
into one tree, on SQLite and on PostgreSQL (see ``database_url`` in conftest), and the
translation itself per driver exception class."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy.exc
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.ext.asyncio import AsyncEngine

import bridge.store
from bridge.store import DataRefused, LeaseLost, Store, StoreClosed, StoreError, StoreUnavailable
from bridge.store.errors import store_error, translated
from bridge.store.schema import conversations, inbox
from bridge.vocabulary import (
    Conversation,
    ConversationState,
    Done,
    InboundKind,
    NewEvent,
    NewReply,
    Sent,
    Step,
)
from tests.support.config import sqlite_url
from tests.support.database import store_for
from tests.support.rows import count, rows

TTL = 30.0


def event(event_id: str, text: str | None = "hello", key: str = "chat-1") -> NewEvent:
    return NewEvent(event_id, key, "user-1", InboundKind.TEXT, text, {"chat_id": 1}, None)


def is_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


# --- the translation, per driver exception class ---------------------------------------------


def asyncpg_through_sqlalchemy(error: Exception) -> sqlalchemy.exc.DBAPIError:
    """asyncpg's exception as SQLAlchemy raises it: its asyncpg adapter's error (caused by
    asyncpg's) wrapped in a DBAPIError, with the statement and its parameters."""
    adapted = AsyncAdapt_asyncpg_dbapi.Error(str(error), error)
    adapted.__cause__ = error
    wrapped = sqlalchemy.exc.DBAPIError.instance(
        "INSERT INTO inbox (text) VALUES ($1)",
        {"text": "a secret message"},
        adapted,
        AsyncAdapt_asyncpg_dbapi.Error,
    )
    assert isinstance(wrapped, sqlalchemy.exc.DBAPIError)
    return wrapped


def sqlite_through_sqlalchemy(error: sqlite3.Error) -> sqlalchemy.exc.DBAPIError:
    wrapped = sqlalchemy.exc.DBAPIError.instance(
        "INSERT INTO inbox (text) VALUES (?)", ("a secret message",), error, sqlite3.Error
    )
    assert isinstance(wrapped, sqlalchemy.exc.DBAPIError)
    return wrapped


PG = asyncpg.exceptions

TRANSLATIONS: list[tuple[str, BaseException, type[StoreError]]] = [
    # sqlite3, raw and as SQLAlchemy raises it
    ("sqlite locked", sqlite3.OperationalError("database is locked"), StoreUnavailable),
    ("sqlite not a db", sqlite3.DatabaseError("file is not a database"), StoreUnavailable),
    ("sqlite closed", sqlite3.ProgrammingError("Cannot operate on a closed db"), StoreUnavailable),
    ("sqlite unique", sqlite3.IntegrityError("UNIQUE constraint failed: x"), DataRefused),
    ("sqlite too big", sqlite3.DataError("string or blob too big"), DataRefused),
    (
        "sqlite lone surrogate",
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
        DataRefused,
    ),
    (
        "sqlalchemy sqlite readonly",
        sqlite_through_sqlalchemy(sqlite3.OperationalError("attempt to write a readonly db")),
        StoreUnavailable,
    ),
    (
        "sqlalchemy sqlite not null",
        sqlite_through_sqlalchemy(sqlite3.IntegrityError("NOT NULL constraint failed: x")),
        DataRefused,
    ),
    # asyncpg, raw (the native runner's) and through SQLAlchemy's adapter
    ("asyncpg NUL", PG.CharacterNotInRepertoireError("invalid byte sequence"), DataRefused),
    ("asyncpg untranslatable", PG.UntranslatableCharacterError("\\u0000"), DataRefused),
    ("asyncpg too long", PG.StringDataRightTruncationError("value too long"), DataRefused),
    ("asyncpg unique", PG.UniqueViolationError("duplicate key"), DataRefused),
    ("asyncpg foreign key", PG.ForeignKeyViolationError("violates fk"), DataRefused),
    ("asyncpg serialization", PG.SerializationError("could not serialize"), StoreUnavailable),
    ("asyncpg deadlock", PG.DeadlockDetectedError("deadlock detected"), StoreUnavailable),
    ("asyncpg starting", PG.CannotConnectNowError("the database is starting up"), StoreUnavailable),
    ("asyncpg shutdown", PG.AdminShutdownError("terminating connection"), StoreUnavailable),
    ("asyncpg no table", PG.UndefinedTableError('relation "x" does not exist'), StoreUnavailable),
    ("asyncpg gone", PG.ConnectionDoesNotExistError("connection was closed"), StoreUnavailable),
    ("asyncpg interface", asyncpg.InterfaceError("cannot perform operation"), StoreUnavailable),
    ("asyncpg client", PG.InternalClientError("protocol state"), StoreUnavailable),
    (
        "sqlalchemy asyncpg NUL",
        asyncpg_through_sqlalchemy(PG.CharacterNotInRepertoireError("invalid byte sequence")),
        DataRefused,
    ),
    (
        "sqlalchemy asyncpg not null",
        asyncpg_through_sqlalchemy(PG.NotNullViolationError("null value in column")),
        DataRefused,
    ),
    (
        "sqlalchemy asyncpg admin shutdown",
        asyncpg_through_sqlalchemy(PG.AdminShutdownError("terminating connection")),
        StoreUnavailable,
    ),
    (
        "sqlalchemy asyncpg interface",
        asyncpg_through_sqlalchemy(asyncpg.InterfaceError("connection is closed")),
        StoreUnavailable,
    ),
    # SQLAlchemy's own, and the connection's
    ("pool timeout", sqlalchemy.exc.TimeoutError("QueuePool limit reached"), StoreUnavailable),
    (
        "unconvertible value",
        sqlalchemy.exc.StatementError("not JSON", "INSERT", {}, TypeError("not serializable")),
        DataRefused,
    ),
    ("refused", ConnectionRefusedError(111, "Connection refused"), StoreUnavailable),
    ("os error", OSError(5, "Input/output error"), StoreUnavailable),
    ("connect timeout", TimeoutError(), StoreUnavailable),
]


@pytest.mark.parametrize(
    ("driver_error", "expected"),
    [pytest.param(error, kind, id=name) for name, error, kind in TRANSLATIONS],
)
def test_a_driver_exception_becomes_the_stores_error(
    driver_error: BaseException, expected: type[StoreError]
) -> None:
    error = store_error(driver_error)
    assert type(error) is expected
    with pytest.raises(expected) as raised, translated():
        raise driver_error
    assert raised.value.__cause__ is driver_error
    # The driver's class and message, never SQLAlchemy's text with the statement and values.
    assert "secret" not in str(error) and "INSERT" not in str(error)


def test_a_refused_value_names_the_drivers_error() -> None:
    error = store_error(
        asyncpg_through_sqlalchemy(PG.CharacterNotInRepertoireError('encoding "UTF8": 0x00'))
    )
    assert str(error) == (
        'the database refused a value: CharacterNotInRepertoireError: encoding "UTF8": 0x00'
    )


@pytest.mark.parametrize(
    "other",
    [
        ValueError("a bug in a unit"),
        LeaseLost("lost"),
        StoreUnavailable("already the store's"),
        DataRefused("already the store's"),
        asyncio.CancelledError(),
        KeyboardInterrupt(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_anything_else_goes_through_unchanged(other: BaseException) -> None:
    assert store_error(other) is None
    with pytest.raises(type(other)) as raised, translated():
        raise other
    assert raised.value is other


def test_the_tree() -> None:
    assert issubclass(StoreClosed, StoreUnavailable)
    for kind in (StoreUnavailable, LeaseLost, DataRefused):
        assert issubclass(kind, StoreError)
    # Permanent and transient are apart: whoever retries the unavailable never retries these.
    assert not issubclass(DataRefused, StoreUnavailable)
    assert not issubclass(LeaseLost, StoreUnavailable)


def test_the_package_exports_the_facade_and_its_errors() -> None:
    names: dict[str, Any] = {}
    exec("from bridge.store import *", names)  # what the package says its API is
    for name in ("Store", "StoreError", "StoreUnavailable", "LeaseLost", "DataRefused"):
        assert names[name] is getattr(bridge.store, name)


def test_no_store_module_declares_an_api_of_its_own() -> None:
    """The modules are reached by name (``from bridge.store.intake import Intake``); an
    ``__all__`` there would only say less than the module offers."""
    declared = []
    for info in pkgutil.iter_modules(bridge.store.__path__, "bridge.store."):
        if hasattr(importlib.import_module(info.name), "__all__"):
            declared.append(info.name)
    assert declared == []


# --- a value the database will not take --------------------------------------------------------


async def test_a_nul_character_is_refused_by_postgresql_and_kept_by_sqlite(
    store: Store, engine: AsyncEngine
) -> None:
    assert await store.accept_many("c", [event("e1")]) == [(True, 1)]  # statements learned
    with_nul = "before\x00after"
    if is_postgres(engine):
        # One event (one statement, on asyncpg itself) and a batch (a unit) alike.
        with pytest.raises(DataRefused, match="CharacterNotInRepertoire"):
            await store.accept_many("c", [event("e2", with_nul)])
        with pytest.raises(DataRefused):
            await store.accept_many("c", [event("e3"), event("e4", with_nul, "chat-2")])
        assert await count(engine, inbox) == 1  # nothing of either was kept
        assert await store.accept_many("c", [event("e5")]) == [(True, 1)]  # and it goes on
        return
    assert await store.accept_many("c", [event("e2", with_nul)]) == [(True, 1)]
    (row,) = await rows(engine, inbox, inbox.c.event_id == "e2")
    assert row["text"] == with_nul


async def test_a_value_too_long_for_its_column_is_refused_by_postgresql(
    store: Store, engine: AsyncEngine
) -> None:
    long_id = "e" * 300  # inbox.event_id is VARCHAR(255)
    if is_postgres(engine):
        with pytest.raises(DataRefused, match="StringDataRightTruncation"):
            await store.accept_many("c", [event(long_id)])
        assert await count(engine, inbox) == 0
        return
    await store.accept_many("c", [event(long_id)])  # SQLite does not enforce lengths
    assert [r["event_id"] for r in await rows(engine, inbox)] == [long_id]


async def test_a_broken_constraint_is_refused(store: Store, engine: AsyncEngine) -> None:
    nobody = Conversation(424242, "c", "k", "u", ConversationState.ACTIVE, "s", None, None, None, 0)
    with pytest.raises(DataRefused):  # the inbox's foreign key: no such conversation
        await store.enqueue_internal(nobody, InboundKind.IDLE, "idle:s")
    assert await count(engine, inbox) == 0


# --- a lost lease -------------------------------------------------------------------------------


async def test_writes_under_a_lease_held_by_another_raise_lease_lost(
    store: Store, engine: AsyncEngine
) -> None:
    ((_, cid),) = await store.accept_many("c", [event("e1")])
    work = await store.claim(cid, "a", TTL)
    assert work is not None and work.inbox is not None
    (reply,) = await store.commit(cid, "a", Step(replies=(NewReply([{"text": "hi"}], None),)), "c")
    await store.release_all("a")
    assert await store.claim(cid, "b", TTL) is not None
    done = Step(inbox_id=work.inbox.id, outcome=Done(0, 1))
    with pytest.raises(LeaseLost):
        await store.commit(cid, "a", done, "c")
    with pytest.raises(LeaseLost):
        await store.update_outbox(cid, "a", reply.id, Sent(0, 1, None))
    (row,) = await rows(engine, conversations, conversations.c.id == cid)
    assert row["lease_owner"] == "b"


# --- an unavailable store -------------------------------------------------------------------------


async def test_a_closed_sqlite_store_is_unavailable(store: Store, engine: AsyncEngine) -> None:
    if is_postgres(engine):
        pytest.skip("a closed PostgreSQL store takes connections anew (bridge/store/native.py)")
    await store.close()
    with pytest.raises(StoreClosed):
        await store.accept_many("c", [event("e1")])
    with pytest.raises(StoreUnavailable):
        await store.ping()


@pytest.fixture(params=["sqlite", "postgresql"])
async def unreachable_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        # The database path is a directory: SQLite cannot open it (even as root).
        (tmp_path / "bridge.db").mkdir()
        url = sqlite_url(tmp_path)
    else:
        url = "postgresql+asyncpg://postgres@127.0.0.1:1/bridge"  # nothing listens on port 1
    async with store_for(url) as st:
        yield st


CALLS: list[tuple[str, Callable[[Store], Awaitable[Any]]]] = [
    ("accept", lambda s: s.accept_many("c", [event("e1")])),
    ("claim", lambda s: s.claim(1, "a", TTL)),
    ("commit", lambda s: s.commit(1, "a", Step(outcome=Done(0, 1), inbox_id=1), "c")),
    ("finish", lambda s: s.finish(1, "a", TTL)),
    ("state_put", lambda s: s.state_put("c", "offset", "1")),
    ("state_get", lambda s: s.state_get("c", "offset")),
    ("dead_letters", lambda s: s.dead_letters()),
    ("ping", lambda s: s.ping()),
]


@pytest.mark.parametrize("call", [c for _, c in CALLS], ids=[name for name, _ in CALLS])
async def test_every_call_on_an_unreachable_database_raises_store_unavailable(
    unreachable_store: Store, call: Callable[[Store], Awaitable[Any]]
) -> None:
    with pytest.raises(StoreUnavailable) as raised:
        await call(unreachable_store)
    assert raised.value.__cause__ is not None  # the driver's error, kept for the log
