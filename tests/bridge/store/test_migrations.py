"""Migrations and engines: Alembic is the only source of the schema, it must match the table
definitions the queries use, and a database newer than the code is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.store.database import check_schema, create_engine, migrate, schema_status
from bridge.store.errors import (
    BadDatabaseUrl,
    SchemaOutdated,
    SchemaRefused,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
)
from bridge.store.schema import metadata
from tests.support.config import sqlite_url
from tests.support.database import engine_for

TABLES = {"alembic_version", "channel_state", "conversations", "inbox", "outbox", "leases"} | {
    "media",
    "media_chunks",
    "handovers",
    "slack_installations",
    "slack_bots",
    "slack_oauth_states",
}


@pytest.fixture
async def empty_engine(database_url: str) -> Any:
    """An engine on an empty database (no schema)."""
    async with engine_for(database_url) as eng:
        yield eng


def _table_names(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


async def test_migrate_from_empty_is_idempotent_and_passes_check(
    empty_engine: AsyncEngine,
) -> None:
    before = await schema_status(empty_engine)
    assert before.current is None
    assert not before.up_to_date

    first = await migrate(empty_engine)
    assert first.up_to_date and first.known
    assert first.current == first.head

    second = await migrate(empty_engine)  # nothing left to do
    assert second == first

    checked = await check_schema(empty_engine)
    assert checked.up_to_date

    async with empty_engine.connect() as conn:
        assert await conn.run_sync(_table_names) == TABLES
        versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    assert [v[0] for v in versions] == [first.head]


async def test_check_schema_on_empty_database_says_migrate(empty_engine: AsyncEngine) -> None:
    with pytest.raises(SchemaOutdated) as excinfo:
        await check_schema(empty_engine)
    assert isinstance(excinfo.value, SchemaRefused)  # what the CLI prints (a StoreError)
    message = str(excinfo.value)
    assert "parloa-bridge migrate" in message
    assert "empty" in message


def _expected_metadata() -> MetaData:
    """Our tables plus the ones slack-sdk's stores own (built with its builders)."""
    from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
    from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore

    expected = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.tables.values():
        table.to_metadata(expected)
    SQLAlchemyInstallationStore.build_installations_table(expected, "slack_installations")
    SQLAlchemyInstallationStore.build_bots_table(expected, "slack_bots")
    SQLAlchemyOAuthStateStore.build_oauth_states_table(expected, "slack_oauth_states")
    return expected


def _diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, _expected_metadata()))


async def test_migrated_schema_matches_metadata(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        diff = await conn.run_sync(_diff)
    assert diff == []


async def test_schema_comparison_detects_drift(engine: AsyncEngine) -> None:
    """The comparison above is not vacuous: a missing index shows up."""
    async with engine.begin() as conn:
        await conn.execute(text("DROP INDEX ix_conversations_due_at"))
    async with engine.connect() as conn:
        diff = await conn.run_sync(_diff)
    assert [(d[0], d[1].name) for d in diff] == [("add_index", "ix_conversations_due_at")]


async def test_database_newer_than_code_is_refused(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = 'ffff_future'"))

    status = await schema_status(engine)
    assert status.current == "ffff_future"
    assert not status.known

    with pytest.raises(SchemaTooNew) as migrating:
        await migrate(engine)
    assert "ffff_future" in str(migrating.value)
    assert "newer" in str(migrating.value)

    with pytest.raises(SchemaTooNew) as checking:
        await check_schema(engine)
    assert "newer" in str(checking.value)
    assert isinstance(checking.value, SchemaRefused)

    # The refusal changed nothing.
    async with engine.connect() as conn:
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    assert version == "ffff_future"


async def test_foreign_keys_are_enforced(engine: AsyncEngine) -> None:
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO inbox (channel, event_id, conversation_id, kind, status, "
                    "attempts, next_attempt_at, created_at) "
                    "VALUES ('t', 'e1', 424242, 'message', 'pending', 0, 1.0, 1.0)"
                )
            )


# --- create_engine ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("this is not a url", "not a database URL"),
        ("sqlite:///x.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite://", "in-memory"),
        ("sqlite+aiosqlite:///:memory:", "in-memory"),
        ("mysql://user@localhost/bridge", "unsupported database 'mysql'"),
    ],
)
def test_create_engine_rejects_bad_urls(url: str, needle: str) -> None:
    with pytest.raises(BadDatabaseUrl) as excinfo:
        create_engine(url)
    assert isinstance(excinfo.value, StoreError)
    message = str(excinfo.value)
    assert message.startswith("database.url")
    assert needle in message


async def test_migrating_an_unreachable_database_says_it_is_unavailable(tmp_path: Path) -> None:
    """A driver's failure comes out as the store's error, which the CLI prints (no traceback)."""
    (tmp_path / "bridge.db").mkdir()  # a directory: SQLite cannot open it (even as root)
    async with engine_for(sqlite_url(tmp_path)) as eng:
        with pytest.raises(StoreUnavailable, match="unable to open database file"):
            await migrate(eng)
        with pytest.raises(StoreUnavailable):
            await check_schema(eng)


async def test_create_engine_upgrades_postgresql_to_asyncpg() -> None:
    async with engine_for("postgresql://bridge:secret@db.invalid:5432/bridge") as eng:
        assert eng.url.drivername == "postgresql+asyncpg"
        assert eng.url.database == "bridge"
        assert eng.url.password == "secret"
        assert eng.dialect.name == "postgresql"


async def test_create_engine_keeps_asyncpg_url() -> None:
    async with engine_for("postgresql+asyncpg://bridge@db.invalid/bridge") as eng:
        assert eng.url.drivername == "postgresql+asyncpg"


async def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    async with engine_for(sqlite_url(tmp_path / "nested")) as eng, eng.connect() as conn:
        journal = (await conn.execute(text("PRAGMA journal_mode"))).scalar()
        foreign_keys = (await conn.execute(text("PRAGMA foreign_keys"))).scalar()
    assert str(journal).lower() == "wal"
    assert foreign_keys == 1
    assert (tmp_path / "nested" / "bridge.db").exists()  # the folder was created
