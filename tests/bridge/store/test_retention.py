"""Retention (housekeeping's purge): dead letters are kept until an operator acts, idle
conversation mappings go after the configured time, expired Slack OAuth states go."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.cli import main
from bridge.store import Store
from bridge.store.schema import conversations, inbox
from bridge.vocabulary import DeadLetter, Done, InboundKind, InboxStatus, Step
from tests.support.clock import T0, FakeClock
from tests.support.config import BOT, BOT_OPTIONS, write_config
from tests.support.database import closing, store_for
from tests.support.rows import count, rows

DAY = 86400.0


@pytest.fixture
async def store(engine: AsyncEngine, clock: FakeClock) -> AsyncIterator[Store]:
    async with closing(Store(engine, clock=clock)) as st:
        yield st


async def message(store: Store, key: str, outcome: Done | DeadLetter | None) -> int:
    """A conversation ``key`` with one message, handled with ``outcome`` (None: pending)."""
    _, cid = await store.accept(
        channel="web",
        event_id=f"{key}-1",
        conversation_key=key,
        requester_id=f"web:{key}",
        kind=InboundKind.TEXT,
        text="hi",
        address=None,
        context=None,
    )
    if outcome is not None:
        work = await store.claim(cid, "me", 30)
        assert work is not None and work.inbox is not None
        await store.commit(cid, "me", Step(inbox_id=work.inbox.id, outcome=outcome), "web")
    await store.finish(cid, "me", 30)
    return cid


async def test_dead_letters_outlive_retention(
    store: Store, engine: AsyncEngine, clock: FakeClock
) -> None:
    await message(store, "done", Done(T0, 1))
    await message(store, "dead", DeadLetter("bad", T0, 1))
    clock.now += 400 * DAY
    assert await store.purge(30 * DAY) == (1, 0)
    left = await rows(engine, inbox)
    assert [r["status"] for r in left] == [InboxStatus.DEAD]
    assert len(await store.dead_letters()) == 1
    # Nor does the conversation purge take it (by cascade).
    await store.purge(30 * DAY, conversations_idle_seconds=DAY)
    assert len(await store.dead_letters()) == 1


async def test_idle_conversations_are_purged_after_the_configured_time(
    store: Store, engine: AsyncEngine, clock: FakeClock
) -> None:
    old = await message(store, "old", Done(T0, 1))
    await message(store, "pending", None)  # old but still has work: stays
    clock.now += 100 * DAY
    recent = await message(store, "recent", Done(clock.now, 1))
    clock.now += 1 * DAY
    await store.purge(0.5 * DAY)  # content only: the mappings stay without the option
    assert await count(engine, conversations) == 3

    await store.purge(0.5 * DAY, conversations_idle_seconds=50 * DAY)
    keys = sorted(r["conversation_key"] for r in await rows(engine, conversations))
    assert keys == ["pending", "recent"]
    assert old not in {r["id"] for r in await rows(engine, conversations)}

    # A user who writes again after the purge starts a fresh conversation.
    _, again = await store.accept(
        channel="web",
        event_id="old-2",
        conversation_key="old",
        requester_id="web:old",
        kind=InboundKind.TEXT,
        text="back",
        address=None,
        context=None,
    )
    assert again not in (old, recent)


async def test_expired_slack_oauth_states_are_purged(
    store: Store, engine: AsyncEngine, clock: FakeClock
) -> None:
    def naive(epoch: float) -> datetime:
        return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)

    async with engine.begin() as conn:
        for state, expires in (("gone", clock.now - 1), ("valid", clock.now + 600)):
            await conn.execute(
                text("INSERT INTO slack_oauth_states (state, expire_at) VALUES (:s, :e)"),
                {"s": state, "e": naive(expires)},
            )
    await store.purge(30 * DAY)
    async with engine.connect() as conn:
        left = (await conn.execute(text("SELECT state FROM slack_oauth_states"))).scalars()
        assert list(left) == ["valid"]


async def test_inbox_discard_removes_only_dead_letters(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with store_for(database_url, migrated=True) as st:
        await message(st, "dead", DeadLetter("bad", T0, 1))
        pending = await message(st, "pending", None)
        (dead,) = [item.id for item in await st.dead_letters()]
        pending_item = (await st.claim(pending, "me", 30)).inbox  # type: ignore[union-attr]
        assert pending_item is not None
    config = str(
        write_config(tmp_path, {"database": {"url": database_url}, "bots": {BOT: BOT_OPTIONS}})
    )

    def cli(*args: str) -> int:
        return main(["inbox", "--config", config, "discard", *args])

    # The pending item is no dead letter: left alone, and the command says so.
    assert await asyncio.to_thread(cli, str(dead), str(pending_item.id)) == 1
    assert "1 dead letter(s) discarded" in capsys.readouterr().out
    async with store_for(database_url) as st:
        assert await st.dead_letters() == []
        assert await st.inbox_item(pending_item.id) is not None
