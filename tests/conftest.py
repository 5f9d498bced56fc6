"""Shared fixtures. Storage tests take ``database_url`` and run once on SQLite and once on
PostgreSQL (a fresh database per test) when ``PARLOA_BRIDGE_TEST_POSTGRES_URL`` is set."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bridge.devtools.simulator import RunningSimulator, start_simulator
from bridge.store import Store
from tests.support.database import closing, engine_for

POSTGRES_ENV = "PARLOA_BRIDGE_TEST_POSTGRES_URL"

# No internet here, and slack-sdk and httpx take *_PROXY from the environment (slack-sdk ignores
# NO_PROXY): no test may use a proxy. This runs before any test module is imported.
for _var in [v for v in os.environ if v.lower().endswith("_proxy")]:
    del os.environ[_var]


@pytest.fixture(autouse=True)
def _no_stream_handler_left() -> Iterator[None]:
    """A test that calls ``configure_logging`` leaves a stream handler on the root logger,
    writing to a stream that is closed once the test ends: the next test's log lines would
    then fail to write ("Logging error"). Remove the stream handlers a test added."""
    root = logging.getLogger()
    before = set(root.handlers)
    yield
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and handler not in before:
            root.removeHandler(handler)


def postgres_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database (no schema yet)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}"
        return
    base = postgres_url()
    if not base:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV} (CI sets it)")
    name = f"pb_test_{uuid.uuid4().hex[:12]}"
    admin_url = make_url(base)
    import asyncio

    async def admin(sql: str) -> None:
        engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(sql))
        finally:
            await engine.dispose()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # the server is not reachable
        pytest.skip(f"PostgreSQL at {admin_url.render_as_string(hide_password=True)}: {exc}")
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated engine."""
    async with engine_for(database_url, migrated=True) as eng:
        yield eng


@pytest.fixture
async def store(engine: AsyncEngine) -> AsyncIterator[Store]:
    async with closing(Store(engine)) as st:
        yield st


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """A headless Chromium for the browser tests, closed after the test. Imported here, not at
    the top: tests/support/browser.py skips the tests that use it when Chromium is missing."""
    from tests.support.browser import chromium

    async with chromium() as launched:
        yield launched


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    """The Parloa simulator (its default state) on a free port of 127.0.0.1."""
    async with await start_simulator() as simulator:
        yield simulator
