"""The SQLite direct runner gives what SQLAlchemy gives for the same statements."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from bridge.store.database import create_engine, migrate
from bridge.store.runners import CoreRunner, DirectRunner, StatementRunner
from bridge.store.statements import HotStatements, params
from tests.support.database import engine_for


@pytest.fixture
async def sync_engine(tmp_path: Path) -> AsyncIterator[Engine]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'runners.db'}"
    engine = create_engine(url)
    await migrate(engine)
    await engine.dispose()
    sync = create_sync_engine(f"sqlite:///{tmp_path / 'runners.db'}")
    try:
        yield sync
    finally:
        sync.dispose()


NOW = time.time()
ADDRESS = {"chat_id": 7, "thread_id": None, "nested": {"ü": [1, 2.5, True, None]}}
ELEMENTS = [{"type": "text", "content": "hi"}, {"type": "payload", "value": {"a": None}}]


def exercise(conn: Connection, sql: StatementRunner, key: str) -> dict[str, Any]:
    """Every kind of hot statement once: insert with RETURNING (JSON, and JSON null), guarded
    UPDATE (rowcount), UPDATE ... RETURNING with a boolean, selects with JSON columns."""
    q = HotStatements(conn.dialect.name)
    now = NOW
    conn.execute(
        text(
            "INSERT INTO conversations (channel, conversation_key, requester_id, state, "
            "created_at, updated_at, last_activity_at) VALUES ('c', :k, 'r', 'new', 0, 0, 0)"
        ),
        {"k": key},
    )
    cid = conn.execute(
        text("SELECT id FROM conversations WHERE conversation_key = :k"), {"k": key}
    ).scalar_one()
    claimed = sql.first(q.claim, {"p_cid": cid, "p_owner": "o", "p_now": now, "p_until": now + 30})
    out_ids = []
    for address in (ADDRESS, None):
        row = sql.first(
            q.new_outbox,
            {
                "conversation_id": cid,
                "inbox_id": None,
                "channel": "c",
                "address": address,
                "elements": ELEMENTS,
                "parts_done": 0,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            },
        )
        assert row is not None
        out_ids.append(row["id"])
    values = {"address": ADDRESS, "state": "active", "updated_at": now}
    updated = sql.rowcount(
        q.update_held_conversation(values), params(values, cid=cid, owner="o", now=now)
    )
    missed = sql.rowcount(
        q.update_held_conversation(values), params(values, cid=cid, owner="other", now=now)
    )
    again = sql.first(q.claim, {"p_cid": cid, "p_owner": "o", "p_now": now, "p_until": now + 60})
    heads = sql.all(q.outbox_heads, {"p_cid": cid})
    held = sql.first(q.held_with_heads, {"p_cid": cid, "p_owner": "o", "p_now": now})
    nobody = sql.first(q.held_with_heads, {"p_cid": cid, "p_owner": "x", "p_now": now})
    strip = lambda m: {k: v for k, v in dict(m).items() if k not in ("id", "conversation_id")}  # noqa: E731
    assert claimed is not None and again is not None and held is not None
    return {
        "claimed": strip(claimed),
        "again_has_outbox": again["has_outbox"],
        "updated": updated,
        "missed": missed,
        "heads": [strip(h) for h in heads],
        "held_address": held["address"],
        "held_outbox_next": held["outbox_next"] is not None,
        "nobody": nobody,
        "outbox_count": len(out_ids),
    }


def test_direct_runner_matches_sqlalchemy(sync_engine: Engine) -> None:
    cache: dict[Any, Any] = {}
    with sync_engine.begin() as conn:
        core = exercise(conn, CoreRunner(conn), "core")
        direct = exercise(conn, DirectRunner(conn, cache), "direct")
        direct_again = exercise(conn, DirectRunner(conn, cache), "direct-2")  # cached
    assert core["claimed"]["has_outbox"] is False and core["again_has_outbox"] is True
    assert core["updated"] == 1 and core["missed"] == 0 and core["nobody"] is None
    assert core["heads"][0]["address"] == ADDRESS and core["heads"][1]["address"] is None
    assert core["heads"][0]["elements"] == ELEMENTS and core["held_address"] == ADDRESS
    core["claimed"].pop("conversation_key")
    for other in (direct, direct_again):
        other["claimed"].pop("conversation_key")
        assert other == core
    # Both wrote the same bytes: what one runner stored, the other reads back alike.
    with sync_engine.connect() as conn:
        stored = conn.execute(
            text("SELECT conversation_id, address, elements FROM outbox ORDER BY id")
        ).all()
    assert len({(a, e) for _cid, a, e in stored}) == 2  # JSON and JSON null, per runner alike


def test_direct_runner_reports_errors_as_sqlalchemy_does(sync_engine: Engine) -> None:
    q = HotStatements("sqlite")
    row = {"conversation_id": 1, "inbox_id": None, "channel": None, "address": None}
    row |= {"elements": [], "parts_done": 0, "status": "pending", "attempts": 0}
    row |= {"next_attempt_at": NOW, "created_at": NOW}
    failures = []
    for runner in (CoreRunner, lambda conn: DirectRunner(conn, {})):
        with sync_engine.connect() as conn, pytest.raises(IntegrityError) as caught:
            runner(conn).first(q.new_outbox, row)  # channel is NOT NULL
        failures.append(type(caught.value))
    assert failures[0] is failures[1]


async def test_direct_runner_matches_sqlalchemy_on_postgres(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("the PostgreSQL variant of the test above")
    cache: dict[Any, Any] = {}
    async with engine_for(database_url, migrated=True) as engine, engine.connect() as conn:
        await conn.begin()
        core = await conn.run_sync(lambda c: exercise(c, CoreRunner(c), "pg-core"))
        direct = await conn.run_sync(lambda c: exercise(c, DirectRunner(c, cache), "pg-d"))
        again = await conn.run_sync(lambda c: exercise(c, DirectRunner(c, cache), "pg-d2"))
        await conn.rollback()  # leaves nothing behind in the shared test database
    assert core["updated"] == 1 and core["missed"] == 0 and core["nobody"] is None
    assert core["heads"][0]["address"] == ADDRESS and core["heads"][0]["elements"] == ELEMENTS
    core["claimed"].pop("conversation_key")
    for other in (direct, again):
        other["claimed"].pop("conversation_key")
        assert other == core
