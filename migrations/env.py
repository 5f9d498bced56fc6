"""Alembic environment. The bridge runs migrations with a connection of its own
(``config.attributes["connection"]``); the plain ``alembic`` command line works too, with
``-x url=...`` or the ``PARLOA_BRIDGE_DATABASE_URL`` environment variable."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from bridge.store.schema import metadata

config = context.config


# Tables whose shape slack-sdk owns (created by migration 0002 with its builders).
FOREIGN_TABLES = frozenset({"slack_installations", "slack_bots", "slack_oauth_states"})


def include_object(obj: object, name: str | None, type_: str, reflected: bool, _: object) -> bool:
    table = getattr(obj, "table", obj)
    return getattr(table, "name", name) not in FOREIGN_TABLES


def run_with(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_standalone(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(run_with)
    await engine.dispose()


connection = config.attributes.get("connection")
if connection is not None:
    run_with(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get(
        "PARLOA_BRIDGE_DATABASE_URL"
    )
    if not url:
        raise SystemExit("alembic: pass -x url=... or set PARLOA_BRIDGE_DATABASE_URL")
    asyncio.run(run_standalone(url))
