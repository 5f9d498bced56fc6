"""`parloa-bridge inbox list|show|retry`: the operator's view of dead letters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.vocabulary import DeadLetter, InboundKind, Step
from tests.support.config import BOT, BOT_OPTIONS, write_config
from tests.support.database import store_for


async def make_dead_letter(url: str) -> int:
    async with store_for(url, migrated=True) as store:
        _, cid = await store.accept(
            channel="web",
            event_id="e1",
            conversation_key="k",
            requester_id="web:u",
            kind=InboundKind.TEXT,
            text="hello there",
            address=None,
            context={"lang": "de"},
        )
        work = await store.claim(cid, "me", 30)
        assert work is not None and work.inbox is not None
        dead = DeadLetter(reason="BadRequest: nope", at=1.0, attempts=1)
        await store.commit(cid, "me", Step(inbox_id=work.inbox.id, outcome=dead), "web")
        await store.finish(cid, "me", 30)
    return work.inbox.id


async def test_inbox_list_show_retry(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    item_id = await make_dead_letter(database_url)
    config = str(
        write_config(tmp_path, {"database": {"url": database_url}, "bots": {BOT: BOT_OPTIONS}})
    )

    import asyncio

    def cli(*args: str) -> int:
        # the command runs its own event loop: call it from a thread
        return main(["inbox", "--config", config, *args])

    assert await asyncio.to_thread(cli, "list") == 0
    out = capsys.readouterr().out
    assert str(item_id) in out and "BadRequest: nope" in out and "web" in out

    assert await asyncio.to_thread(cli, "show", str(item_id)) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["text"] == "hello there" and shown["status"] == "dead"

    assert await asyncio.to_thread(cli, "show", "999999") == 1
    assert await asyncio.to_thread(cli, "retry") == 2  # neither ids nor --all
    capsys.readouterr()
    assert await asyncio.to_thread(cli, "retry", str(item_id)) == 0
    assert "1 dead letter(s) queued again" in capsys.readouterr().out
    assert await asyncio.to_thread(cli, "list") == 0
    assert "no dead letters" in capsys.readouterr().out
