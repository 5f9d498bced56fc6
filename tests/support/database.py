"""Engines and stores a test opens on a database URL of its own choosing (the ``engine`` and
``store`` fixtures of conftest are the usual way in), each closed when its block ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.store import Store
from bridge.store.database import create_engine, migrate


def skip_unless_replicas_can_share(database_url: str) -> None:
    """Skip the calling test on SQLite: one host, one process (several replicas on one
    database is a PostgreSQL deployment)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("several replicas on one database is a PostgreSQL deployment")


class Closable(Protocol):
    async def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


@asynccontextmanager
async def closing(resource: C) -> AsyncIterator[C]:
    """``resource`` for the block, its ``close()`` awaited after it (a store, a runner)."""
    try:
        yield resource
    finally:
        await resource.close()


@asynccontextmanager
async def engine_for(
    url: str, *, migrated: bool = False, **options: Any
) -> AsyncIterator[AsyncEngine]:
    """The bridge's engine on ``url`` (``options`` as ``create_engine`` takes them), migrated
    first when ``migrated``; disposed after the block."""
    engine = create_engine(url, **options)
    try:
        if migrated:
            await migrate(engine)
        yield engine
    finally:
        await engine.dispose()


@asynccontextmanager
async def store_for(url: str, *, migrated: bool = False, **options: Any) -> AsyncIterator[Store]:
    """A store on an engine of its own (:func:`engine_for`); closed, then the engine disposed."""
    async with (
        engine_for(url, migrated=migrated, **options) as engine,
        closing(Store(engine)) as store,
    ):
        yield store
