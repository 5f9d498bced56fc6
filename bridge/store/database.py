"""Engines and migrations.

SQLite runs in WAL mode and takes its write lock at BEGIN, so two processes never deadlock
upgrading a read lock. The store reaches it through one synchronous connection on a thread of
its own (bridge/store/transactions.py); the async engine (aiosqlite, one pooled connection)
serves migrations and the Slack installation store. PostgreSQL uses asyncpg with a pool."""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import migrations
from bridge.store.errors import BadDatabaseUrl, SchemaOutdated, SchemaTooNew, translated

log = logging.getLogger("bridge.store")

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent
# Serialises concurrent `migrate` runs of several replicas on one PostgreSQL database.
_PG_MIGRATION_LOCK = 0x7061726C6F61


# conn.info key: the next transaction on this SQLite connection only reads.
READ_ONLY = "parloa_bridge_read_only"


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def create_engine(
    url: str, *, pool_size: int = 10, echo: bool = False, pool_timeout: float = 30.0
) -> AsyncEngine:
    """An async engine for ``sqlite+aiosqlite://`` or ``postgresql+asyncpg://`` URLs.
    ``pool_timeout``: how long a PostgreSQL store call waits for a connection."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise BadDatabaseUrl(f"database.url is not a database URL: {url!r}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.drivername != "sqlite+aiosqlite":
            raise BadDatabaseUrl(
                "database.url: SQLite needs the async driver: sqlite+aiosqlite:///"
            )
        database = parsed.database or ""
        if database in ("", ":memory:"):
            raise BadDatabaseUrl("database.url: use a SQLite file, not an in-memory database")
        path = Path(database).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        create_private_file(path)
        engine = create_async_engine(
            parsed,
            echo=echo,
            pool_size=1,
            max_overflow=0,
            pool_timeout=60,
            connect_args={"timeout": 30},
        )
        _tune_sqlite(engine.sync_engine)
        return engine
    if backend == "postgresql":
        if parsed.drivername != "postgresql+asyncpg":
            parsed = parsed.set(drivername="postgresql+asyncpg")
        try:
            return create_async_engine(
                parsed,
                echo=echo,
                pool_size=pool_size,
                pool_timeout=pool_timeout,
                # pool_size is the replica's bound (the contract's database.pool_size). No
                # overflow: under load, connections opened past it and closed again churned
                # ten or more a second, each a connect and every statement prepared anew.
                max_overflow=0,
                # No ping per checkout (a round trip each): a dead pooled connection fails
                # its first statement, SQLAlchemy then discards every connection older than
                # that failure, and the store runs the unit again (transactions.py).
                pool_pre_ping=False,
            )
        except NoSuchModuleError as exc:  # pragma: no cover - asyncpg is a dependency
            raise BadDatabaseUrl(f"database.url: {exc}") from None
    raise BadDatabaseUrl(
        f"database.url: unsupported database {backend!r} "
        "(use sqlite+aiosqlite or postgresql+asyncpg)"
    )


def create_private_file(path: Path) -> None:
    """Create ``path`` empty (an empty file is an empty SQLite database), readable and writable
    by its owner only, unless it exists. SQLite gives the ``-wal`` and ``-shm`` files it
    creates the database file's permissions, so they are private too."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def sqlite_sync_engine(engine: AsyncEngine) -> Engine:
    """A synchronous engine on the same SQLite file, for use from one thread at a time."""
    sync = create_sync_engine(
        engine.url.set(drivername="sqlite+pysqlite"),
        echo=engine.echo,
        pool_size=1,
        max_overflow=0,
        pool_timeout=60,
        # Used from the store's own thread only; disposing may happen from another.
        connect_args={"timeout": 30, "check_same_thread": False},
    )
    # The store's WAL is copied back by a thread of its own (transactions.WalCheckpointer);
    # the store's connection does it only as a backstop, at a much larger log.
    _tune_sqlite(sync, autocheckpoint=BACKSTOP_CHECKPOINT_PAGES)
    return sync


# SQLite's own default is 1000 pages (4 MiB).
BACKSTOP_CHECKPOINT_PAGES = 50_000


def _tune_sqlite(engine: Engine, autocheckpoint: int | None = None) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from the driver so BEGIN IMMEDIATE can be used.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        pragmas = [
            "PRAGMA journal_mode=WAL",
            # NORMAL in WAL mode: a commit survives a process crash (SIGKILL); only an OS
            # crash or power loss can take the last commits back.
            "PRAGMA synchronous=NORMAL",
            "PRAGMA foreign_keys=ON",
            "PRAGMA busy_timeout=30000",
        ]
        if autocheckpoint is not None:
            pragmas.append(f"PRAGMA wal_autocheckpoint={int(autocheckpoint)}")
        for pragma in pragmas:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A read-only unit (READ_ONLY set in conn.info) reads a WAL snapshot without the lock.
        sql = "BEGIN" if conn.info.get(READ_ONLY) else "BEGIN IMMEDIATE"
        driver = conn.connection.dbapi_connection
        if not isinstance(driver, sqlite3.Connection):  # aiosqlite: through SQLAlchemy
            conn.exec_driver_sql(sql)
            return
        # The store thread's synchronous connection: on the driver itself. SQLAlchemy's
        # execution machinery costs more than SQLite takes to begin, and every unit (one per
        # group) begins (docs/benchmarks.md, "SQLite store thread").
        try:
            driver.execute(sql)
        except sqlite3.Error as exc:  # raised as SQLAlchemy raises it (OperationalError...)
            raise DBAPIError.instance(sql, None, exc, sqlite3.Error, dialect=conn.dialect) from exc


# --- migrations ------------------------------------------------------------------------------


def alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    current: str | None
    head: str
    known: bool  # the current revision is one this code knows

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def _known(conn: Connection) -> SchemaStatus:
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    assert head is not None
    current = MigrationContext.configure(conn).get_current_revision()
    known = True
    if current is not None:
        try:
            known = script.get_revision(current) is not None
        except Exception:  # alembic raises various errors for unknown revisions
            known = False
    return SchemaStatus(current, head, known)


async def schema_status(engine: AsyncEngine) -> SchemaStatus:
    with translated():
        async with engine.connect() as conn:
            return await conn.run_sync(_known)


def _too_new(status: SchemaStatus) -> SchemaTooNew:
    return SchemaTooNew(
        f"the database schema is at revision {status.current}, which this parloa-bridge does "
        f"not know (its newest is {status.head}): the database was migrated by a newer "
        "version; run that version or restore a backup"
    )


def _upgrade(conn: Connection) -> SchemaStatus:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
    status = _known(conn)
    if not status.known:
        raise _too_new(status)
    if not status.up_to_date:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return status


async def migrate(engine: AsyncEngine) -> SchemaStatus:
    """Bring the schema to the newest revision. Refuses a database newer than this code."""
    with translated():
        async with engine.begin() as conn:
            before = await conn.run_sync(_upgrade)
    after = await schema_status(engine)
    if before.current != after.current:
        log.info("database migrated from %s to %s", before.current or "empty", after.current)
    return after


async def check_schema(engine: AsyncEngine) -> SchemaStatus:
    """Refuse to run against a schema that is newer, or older, than this code."""
    status = await schema_status(engine)
    if not status.known:
        raise _too_new(status)
    if not status.up_to_date:
        raise SchemaOutdated(
            f"the database schema is at revision {status.current or 'empty'}, not "
            f"{status.head}: run `parloa-bridge migrate` or set database.auto_migrate = true"
        )
    return status
