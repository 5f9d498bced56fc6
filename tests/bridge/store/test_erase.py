"""``Store.erase_user`` and ``parloa-bridge erase``: every row about one user goes, in one
transaction; other users' rows stay. Every table of the migrated database is searched for the
user's marks, and the tables searched must be every table there is."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.cli import main
from bridge.engine.intake import requester_id
from bridge.store import Store
from bridge.store.media import NewMedia
from bridge.store.schema import metadata
from bridge.vocabulary import DeadLetter, Done, HandoverOpened, InboundKind, NewReply, Step
from tests.support.config import BOT, BOT_OPTIONS, write_config
from tests.support.database import store_for

# Every table of the schema, and why a user's data can or cannot be in it. A table added
# later fails test_every_table_is_checked until it is listed here (and erase handles it).
USER_TABLES = {"conversations", "inbox", "outbox", "channel_state", "media", "media_chunks"} | {
    "handovers"
}
NOT_USER_DATA = {
    "leases": "named leases: a process's claim, no user's data",
    "alembic_version": "the schema's revision",
    "slack_installations": "a workspace's installation (removed when the app is uninstalled)",
    "slack_bots": "a workspace's bot token",
    "slack_oauth_states": "short-lived OAuth states, purged by housekeeping",
}

CHANNEL = "web"


async def chunks(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def user_data(store: Store, user: str, *, dead: bool) -> None:
    """A conversation of ``user`` with a message answered (inbox done, outbox reply), a
    second one dead-lettered or pending, and a mailbox entry."""
    requester = requester_id(CHANNEL, user)
    for n in range(2):
        _, cid = await store.accept(
            channel=CHANNEL,
            event_id=f"{user}-e{n}",
            conversation_key=f"key-{user}",
            requester_id=requester,
            kind=InboundKind.TEXT,
            text=f"text of {user} #{n}",
            address={"user": user},
            context={"who": user},
        )
    work = await store.claim(cid, "me", 30)
    assert work is not None and work.inbox is not None
    reply = NewReply([{"type": "text", "text": f"reply to {user}"}], {"user": user}, work.inbox.id)
    await store.commit(
        cid,
        "me",
        Step(inbox_id=work.inbox.id, outcome=Done(at=1.0, attempts=1), replies=(reply,)),
        CHANNEL,
    )
    await store.finish(cid, "me", 30)
    # handed over to a person: the handover's summary quotes the user
    work = await store.claim(cid, "me", 30)
    assert work is not None
    opened = HandoverOpened(f"h-{user}", "bot", "console", 1.5, summary=f"{user} asked")
    await store.commit(cid, "me", Step(handover=opened), CHANNEL)
    await store.finish(cid, "me", 30)
    if dead:
        work = await store.claim(cid, "me", 30)
        assert work is not None and work.inbox is not None
        letter = DeadLetter(reason=f"failed for {user}", at=2.0, attempts=3)
        await store.commit(cid, "me", Step(inbox_id=work.inbox.id, outcome=letter), CHANNEL)
        await store.finish(cid, "me", 30)
    await store.state_put(CHANNEL, f"tmp:mailbox:{user}", f'{{"for": "{user}"}}')
    upload = NewMedia(f"m{user[-4:]}", CHANNEL, requester, "text/plain", f"{user}.txt")
    await store.media_put(upload, chunks(f"bytes of {user}".encode()), 1024)


async def tables_and_rows(engine: AsyncEngine) -> dict[str, list[str]]:
    """Every table of the database with its rows, each as one string."""
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        rows: dict[str, list[str]] = {}
        for name in names:
            result = await conn.execute(text(f'SELECT * FROM "{name}"'))
            rows[name] = [repr(tuple(row)) for row in result]
    return rows


def mentioning(rows: dict[str, list[str]], mark: str) -> dict[str, int]:
    return {t: n for t, r in rows.items() if (n := sum(mark in row for row in r))}


async def test_every_table_is_checked(engine: AsyncEngine) -> None:
    rows = await tables_and_rows(engine)
    assert set(rows) == USER_TABLES | set(NOT_USER_DATA)
    assert set(metadata.tables) <= USER_TABLES | set(NOT_USER_DATA)


async def test_erase_removes_every_row_of_one_user(engine: AsyncEngine, store: Store) -> None:
    # Marks long enough not to occur by chance in another row.
    erased_user, kept_user = "user-erase-9f2c", "user-keep-41d7"
    await user_data(store, erased_user, dead=True)
    await user_data(store, kept_user, dead=False)
    await store.state_put(CHANNEL, "offset", "17")  # the channel's own state stays
    # The same user id on another channel is another user.
    await store.state_put("other", f"tmp:mailbox:{erased_user}", "{}")

    before = await tables_and_rows(engine)
    assert set(mentioning(before, erased_user)) == USER_TABLES  # the fixture covers them all

    erased = await store.erase_user(CHANNEL, erased_user, requester_id(CHANNEL, erased_user))

    assert erased.by_table() == {
        "conversations": 1,
        "inbox": 2,
        "dead_letters": 1,
        "outbox": 1,
        "channel_state": 1,
        "media": 1,
    }
    after = await tables_and_rows(engine)
    assert mentioning(after, erased_user) == {"channel_state": 1}  # only the other channel's
    assert mentioning(after, kept_user) == mentioning(before, kept_user)
    assert await store.state_get(CHANNEL, "offset") == "17"
    # Again: nothing left to remove.
    again = await store.erase_user(CHANNEL, erased_user, requester_id(CHANNEL, erased_user))
    assert set(again.by_table().values()) == {0}


async def test_state_keys_match_the_user_id_exactly(store: Store) -> None:
    # LIKE wildcards in an id match only themselves.
    await store.state_put(CHANNEL, "tmp:mailbox:a_b", "x")
    await store.state_put(CHANNEL, "tmp:mailbox:aXb", "x")
    await store.state_put(CHANNEL, "tmp:mailbox:xa_b", "x")
    erased = await store.erase_user(CHANNEL, "a_b", requester_id(CHANNEL, "a_b"))
    assert erased.channel_state == 1
    assert await store.state_get(CHANNEL, "tmp:mailbox:aXb") == "x"
    assert await store.state_get(CHANNEL, "tmp:mailbox:xa_b") == "x"


async def test_erase_command_prints_counts(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with store_for(database_url, migrated=True) as store:
        await user_data(store, "u-cli-1", dead=True)
    data: dict[str, Any] = {"database": {"url": database_url}, "bots": {BOT: BOT_OPTIONS}}
    config = str(write_config(tmp_path, data))
    argv = ["erase", "--config", config, "--channel", CHANNEL, "--user", "u-cli-1"]
    assert await asyncio.to_thread(main, argv) == 0
    out = capsys.readouterr().out
    assert "conversations  1" in out and "inbox          2" in out and "outbox         1" in out
    async with store_for(database_url) as store:
        assert await store.dead_letters() == []
        assert await store.state_get(CHANNEL, "tmp:mailbox:u-cli-1") is None
