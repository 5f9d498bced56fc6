"""The Telegram channel end to end inside one process: the real Service (engine, store, HTTP
server) with python-telegram-bot talking to a fake Bot API on 127.0.0.1, and the simulator as
Parloa."""

from __future__ import annotations

import contextlib
import io
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.config import BridgeConfig
from bridge.devtools.simulator import Faults, RunningSimulator
from bridge.logsetup import configure_logging
from bridge.service import Service
from bridge.vocabulary import Conversation
from tests.fakes.telegram import JSON, FakeTelegram
from tests.support.config import config_data, service_config, sqlite_url
from tests.support.service import running_service, service_url
from tests.support.signing import telegram_secret_headers
from tests.support.sqlite_faults import set_query_only
from tests.support.waiting import poll_until

TOKEN = "123456:ABC-test-token-0123456789abcdef"
SECRET = "hook-secret_1234"
PUBLIC_URL = "https://bridge.example.com"


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(tokens=[TOKEN]) as fake:
        yield fake


def config_for(
    database_url: str, tg: FakeTelegram, sim: RunningSimulator, **channel: Any
) -> BridgeConfig:
    options = {
        "name": "tg",
        "type": "telegram",
        "token": TOKEN,
        "api_base_url": tg.api_root,
        "poll_timeout_seconds": 1,
        "leader_lease_seconds": 3,
        "request_timeout_seconds": 5,
        **channel,
    }
    data = config_data(database_url, sim.url, options, http={"public_url": PUBLIC_URL})
    return service_config(data)


def bridge(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator, **channel: Any
) -> contextlib.AbstractAsyncContextManager[Service]:
    """The service with the channel, its database in ``tmp_path``."""
    return running_service(config_for(sqlite_url(tmp_path), tg, sim, **channel))


async def exchange(tg: FakeTelegram, update: JSON, chat_id: int, sent: int) -> None:
    """Push an update, then wait until ``sent`` messages in all went to the chat."""
    tg.push_update(update)
    await tg.wait_for_messages(sent, chat_id=chat_id)


def texts(tg: FakeTelegram, chat_id: int) -> list[str]:
    return [m.content or "" for m in tg.sent_messages(chat_id)]


async def test_private_chat_welcome_chips_answer(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator
) -> None:
    sim.state.faults = Faults(latency=0.6)  # slow enough for a typing indicator
    async with bridge(tmp_path, tg, sim):
        await exchange(
            tg, tg.private_text(42, "hello", first_name="Ada", language_code="de"), 42, 2
        )
        welcome, answer = tg.sent_messages(42)[:2]
        assert "demo bot" in (welcome.content or "")
        buttons = welcome.buttons
        assert [b["text"] for b in buttons] == ["Show me a card", "What can you do?", "bye"]
        assert all(len(b["callback_data"].encode()) <= 64 for b in buttons)
        assert answer.content == "You said: hello"
        events = [(r.event_type, r.text) for r in sim.state.requests]
        assert events == [("launch", None), ("message", "hello")]
        context = {c["key"]: c["value"] for c in sim.state.requests[1].context or []}
        assert context["platform"] == "telegram"
        assert context["languageCode"] == "de"
        assert context["userName"].startswith("Ada")
        assert sim.state.requests[1].requester_id == "tg:42"
        assert tg.chat_actions(42)  # typing while Parloa thought


async def test_chip_press_sends_value_once_and_removes_keyboard(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator
) -> None:
    async with bridge(tmp_path, tg, sim):
        await exchange(tg, tg.private_text(42, "hi"), 42, 2)
        welcome = tg.sent_messages(42)[0]
        buttons = list(welcome.buttons)  # before the press removes them
        card_button = buttons[0]
        message_id = welcome.message["message_id"]
        await exchange(
            tg, tg.callback_query(42, 42, message_id, card_button["callback_data"]), 42, 3
        )
        card = tg.sent_messages(42)[2]
        assert card.photo and "card.png" in str(card.photo)
        assert "card" in (card.caption or "").lower()
        await tg.wait_for(lambda: len(tg.answered_callbacks) == 1)
        await tg.wait_for(lambda: tg.calls_to("editMessageReplyMarkup"))
        # a second press of the same keyboard: answered, nothing sent to Parloa
        tg.push_update(tg.callback_query(42, 42, message_id, buttons[2]["callback_data"]))
        await tg.wait_for(lambda: len(tg.answered_callbacks) == 2)
        assert [r.text for r in sim.state.requests if r.event_type == "message"] == [
            "hi",
            "Show me a card",
        ]
        # an unknown keyboard token is answered too
        tg.push_update(tg.callback_query(42, 42, message_id, "b:unknown:0"))
        await tg.wait_for(lambda: len(tg.answered_callbacks) == 3)


def keyboard_state_rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM channel_state WHERE key LIKE 'tmp:kb:%'"
        ).fetchone()
    return int(count)


async def test_a_chip_is_read_back_from_the_stored_reply_in_its_own_chat_only(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator
) -> None:
    """A keyboard costs no write of its own: a press renders the stored reply again. Its
    callback data is whatever a client sends, so a press counts only in the chat the reply
    went to, and only where that button still is."""
    db = tmp_path / "bridge.db"
    async with bridge(tmp_path, tg, sim):
        tg.push_update(tg.private_text(42, "hi"))
        tg.push_update(tg.private_text(43, "hello"))
        await tg.wait_for_messages(2, chat_id=42)
        await tg.wait_for_messages(2, chat_id=43)
        assert keyboard_state_rows(db) == 0
        welcome = tg.sent_messages(42)[0]
        data = [b["callback_data"] for b in welcome.buttons]
        message_id = welcome.message["message_id"]
        # chat 42's keyboard pressed from chat 43, and a button moved to another place
        other = tg.sent_messages(43)[0].message["message_id"]
        tg.push_update(tg.callback_query(43, 43, other, data[1]))
        kind, outbox_id, part, _index, check = data[1].split(":")
        moved = f"{kind}:{outbox_id}:{part}:2:{check}"
        tg.push_update(tg.callback_query(42, 42, message_id, moved))
        await tg.wait_for(lambda: len(tg.answered_callbacks) == 2)
        assert {c.text for c in tg.answered_callbacks} == {"This choice is no longer available."}
        # the real press still counts, once
        tg.push_update(tg.callback_query(42, 42, message_id, data[1]))
        await tg.wait_for(lambda: len(tg.sent_messages(42)) >= 3)
        messages = [r.text for r in sim.state.requests if r.event_type == "message"]
        assert sorted(messages) == ["What can you do?", "hello", "hi"]


async def test_a_press_whose_reply_cannot_be_rendered_again_does_not_stall_polling(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in rendering a stored reply again is answered like a keyboard that is gone;
    the poller moves on to the next update instead of asking for this one for ever."""
    from adapters.telegram import channel

    async with bridge(tmp_path, tg, sim):
        await exchange(tg, tg.private_text(42, "hi"), 42, 2)
        welcome = tg.sent_messages(42)[0]

        def broken(*_args: Any) -> Any:
            raise RuntimeError("render bug")

        monkeypatch.setattr(channel, "render", broken)
        data = welcome.buttons[0]["callback_data"]
        tg.push_update(tg.callback_query(42, 42, welcome.message["message_id"], data))
        await tg.wait_for(lambda: len(tg.answered_callbacks) == 1)
        assert tg.answered_callbacks[0].text == "This choice is no longer available."
        monkeypatch.undo()
        tg.push_update(tg.private_text(42, "still there?"))
        await tg.wait_for(lambda: texts(tg, 42)[-1:] == ["You said: still there?"])


async def test_an_update_the_normaliser_fails_on_is_skipped_not_polled_for_ever(
    tmp_path: Path,
    tg: FakeTelegram,
    sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug in reading one kind of update costs that update (logged with its id), not the
    bot: the updates after it in the same batch and later ones are answered."""
    from adapters.telegram import channel

    real = channel.to_inbound

    def broken_for_groups(update: Any, *args: Any) -> Any:
        if update.effective_chat is not None and update.effective_chat.type != "private":
            raise RuntimeError("normaliser bug")
        return real(update, *args)

    real_plain = channel.private_text

    def broken_on_boom(data: Any, *args: Any) -> Any:  # the plain-text fast path too
        if data.get("message", {}).get("text") == "boom":
            raise RuntimeError("fast path bug")
        return real_plain(data, *args)

    monkeypatch.setattr(channel, "to_inbound", broken_for_groups)
    monkeypatch.setattr(channel, "private_text", broken_on_boom)
    async with bridge(tmp_path, tg, sim):
        bad = tg.push_update(tg.group_text(-100, 42, "@bot hello"))
        tg.push_update(tg.private_text(42, "hi"))
        await tg.wait_for(lambda: texts(tg, 42)[-1:] == ["You said: hi"])
        boom = tg.push_update(tg.private_text(42, "boom"))
        tg.push_update(tg.private_text(42, "still there?"))
        await tg.wait_for(lambda: texts(tg, 42)[-1:] == ["You said: still there?"])
        assert f"update {bad} could not be read; skipped" in caplog.text
        assert f"update {boom} could not be read; skipped" in caplog.text
        assert tg.sent_messages(-100) == []
        assert "You said: boom" not in texts(tg, 42)


async def test_a_keyboard_sent_by_an_earlier_version_still_works(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator
) -> None:
    """Earlier versions kept a keyboard's values in channel state (``b:<token>:<index>``)."""
    async with bridge(tmp_path, tg, sim) as service:
        await exchange(tg, tg.private_text(42, "hi"), 42, 2)
        await service.store.state_put("tg", "tmp:kb:tok123", '[["Bye", "bye"]]')
        tg.push_update(tg.callback_query(42, 42, 1, "b:tok123:0"))
        await tg.wait_for(lambda: len(tg.answered_callbacks) == 1)
        await tg.wait_for(
            lambda: (
                [r.text for r in sim.state.requests if r.event_type == "message"][-1:] == ["bye"]
            )
        )
        tg.push_update(tg.callback_query(42, 42, 1, "b:tok123:0"))  # pressed again
        tg.push_update(tg.callback_query(42, 42, 1, "b:tok123:1"))  # no such button
        await tg.wait_for(lambda: len(tg.answered_callbacks) == 3)
        assert sorted(str(c.text) for c in tg.answered_callbacks[1:]) == [
            "Already chosen.",
            "This choice is no longer available.",
        ]


async def test_commands_groups_topics_and_unsupported(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator
) -> None:
    async with bridge(tmp_path, tg, sim):
        await exchange(tg, tg.command(7, "/start"), 7, 1)
        await exchange(tg, tg.command(7, "/stop"), 7, 2)
        assert "ended" in texts(tg, 7)[1]
        assert [r.event_type for r in sim.state.requests] == ["launch", "quit"]

        group = -1001
        tg.push_update(tg.group_text(group, 1, "not for the bot", chat_type="supergroup"))
        tg.push_update(tg.group_text(group, 1, "hi bot", chat_type="supergroup", mention=True))
        tg.push_update(tg.group_text(group, 2, "me too", chat_type="supergroup", mention=True))
        tg.push_update(
            tg.group_text(group, 1, "topic", chat_type="supergroup", mention=True, thread_id=9)
        )
        await tg.wait_for_messages(6, chat_id=group, within=10)
        requesters = {r.requester_id for r in sim.state.requests if r.event_type == "launch"}
        assert {"tg:1", "tg:2"} <= requesters
        sessions = {r.session_id for r in sim.state.requests if r.requester_id == "tg:1"}
        assert len(sessions) == 2  # the forum topic is a conversation of its own
        said = [r.text for r in sim.state.requests if r.event_type == "message"]
        assert "not for the bot" not in said and "hi bot" in said
        replies = tg.sent_messages(group)
        assert any(m.reply_to_message_id for m in replies)  # answers thread to the asker
        assert any(m.message_thread_id == 9 for m in replies)

        before = len(sim.state.requests)
        await exchange(tg, tg.dice(8), 8, 1)
        assert "only read text" in texts(tg, 8)[0]
        assert len(sim.state.requests) == before
        await exchange(tg, tg.photo(8, caption="what is this"), 8, 3)
        assert "You said: what is this" in texts(tg, 8)
        tg.push_update(tg.edited_message(8, "edited"))
        tg.push_update(tg.private_text(8, "after edit"))
        await tg.wait_for(lambda: "You said: after edit" in texts(tg, 8))
        assert "edited" not in [r.text for r in sim.state.requests]


async def test_long_answers_are_split_and_429_is_honoured_in_order(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator
) -> None:
    async with bridge(tmp_path, tg, sim):
        await exchange(tg, tg.private_text(5, "first"), 5, 2)
        long_text = ("Lorem ipsum dolor sit amet. " * 150).strip()  # echo > 4096
        await exchange(tg, tg.private_text(5, long_text), 5, 4)
        parts = texts(tg, 5)[2:4]
        assert all(len(p) <= 4096 for p in parts)
        assert "".join(parts).replace(" ", "") == f"You said: {long_text}".replace(" ", "")

        tg.fail_next("sendMessage", status=429, retry_after=1, chat_id=5)
        started = time.monotonic()
        tg.push_update(tg.private_text(5, "m1"))
        tg.push_update(tg.private_text(5, "m2"))
        await tg.wait_for(lambda: texts(tg, 5)[-2:] == ["You said: m1", "You said: m2"], within=10)
        assert time.monotonic() - started >= 1.0  # retry_after honoured
        assert texts(tg, 5).count("You said: m1") == 1


async def test_sent_message_ids_are_kept_and_an_answer_without_one_is_not_resent(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator
) -> None:
    db = tmp_path / "bridge.db"
    # Telegram accepts the welcome but its answer names no message: sent all the same.
    tg.fail_next("sendMessage", status=200, body=b'{"ok": true, "result": true}', chat_id=7)
    async with bridge(tmp_path, tg, sim):
        await exchange(tg, tg.private_text(7, "hi"), 7, 1)
    # Replies go out in order: the answer was sent only after the welcome was settled.
    assert texts(tg, 7) == ["You said: hi"]
    assert len([c for c in tg.calls_to("sendMessage") if str(c.params.get("chat_id")) == "7"]) == 2
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT status, platform_message_id FROM outbox ORDER BY id").fetchall()
    answer_id = str(tg.sent_messages(7)[0].message_id)
    assert [(status, message_id) for status, message_id in rows] == [
        ("sent", None),
        ("sent", answer_id),
    ]


async def test_blocked_user_ends_the_conversation(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator
) -> None:
    async with bridge(tmp_path, tg, sim) as service:
        tg.block(9)
        tg.push_update(tg.private_text(9, "hi"))
        await sim.state.wait_for(lambda s: len(s.requests) >= 2)

        async def ended() -> Conversation | None:
            conv = await service.store.find_conversation("tg", "9")
            return conv if conv is not None and conv.state == "ended" else None

        conv = await poll_until(ended, within=10, every=0.05)
        assert conv.end_reason == "recipient_gone"


async def test_token_never_logged(tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", "text", [], stream=stream)  # no configured secrets: shapes only
    try:
        async with bridge(tmp_path, tg, sim):
            await exchange(tg, tg.private_text(3, "hi"), 3, 2)
            tg.fail_next("sendMessage", status=500, description="Internal Server Error")
            tg.push_update(tg.private_text(3, "again"))
            await tg.wait_for(lambda: "You said: again" in texts(tg, 3), within=10)
    finally:
        import logging

        logging.getLogger().handlers.clear()
    output = stream.getvalue()
    assert "getUpdates" in output or "sendMessage" in output  # the HTTP library did log URLs
    assert TOKEN not in output and TOKEN.split(":")[1] not in output


async def test_webhook_mode_secret_and_database_outage(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator
) -> None:
    async with bridge(tmp_path, tg, sim, mode="webhook", webhook_secret=SECRET) as service:
        hook = tg.webhook()
        assert hook is not None and hook.url == "https://bridge.example.com/telegram/tg"
        assert hook.secret_token == SECRET
        url = f"{service_url(service)}/telegram/tg"
        update = {"update_id": 900, **tg.private_text(11, "via webhook")}
        async with aiohttp.ClientSession() as http:
            for headers in ({}, telegram_secret_headers("wrong")):
                async with http.post(url, json=update, headers=headers) as resp:
                    assert resp.status == 401
            assert sim.state.requests == type(sim.state.requests)()  # nothing processed
            # the database refuses writes: 503 with Retry-After, Telegram will send it again
            await set_query_only(service, True)
            ok = telegram_secret_headers(SECRET)
            async with http.post(url, json=update, headers=ok) as resp:
                assert resp.status == 503 and resp.headers["Retry-After"]
            await set_query_only(service, False)
            async with http.post(url, json=update, headers=ok) as resp:
                assert resp.status == 200
            async with http.post(url, json=update, headers=ok) as resp:  # redelivery
                assert resp.status == 200
        await tg.wait_for_messages(2, chat_id=11)
        assert [r.text for r in sim.state.requests if r.event_type == "message"] == ["via webhook"]


async def test_300_chats_at_once_with_slow_parloa(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator
) -> None:
    sim.state.faults = Faults(latency=1.0)
    async with bridge(tmp_path, tg, sim, rate_limit_per_second=1000):
        started = time.monotonic()
        for user in range(1000, 1300):
            tg.push_update(tg.private_text(user, f"hello {user}"))
        await tg.wait_for(
            lambda: (
                sum(1 for m in tg.sent_messages() if (m.content or "").startswith("You said"))
                == 300
            ),
            within=60,
        )
        elapsed = time.monotonic() - started
        # launch + message = 2 s of Parloa latency; serial handling would take 600 s.
        print(f"300 chats answered in {elapsed:.1f}s")
        assert elapsed < 20, f"300 chats took {elapsed:.1f}s"


def test_a_webhook_secret_needs_16_characters() -> None:
    from pydantic import ValidationError

    from adapters.telegram.options import TelegramOptions

    with pytest.raises(ValidationError, match="16-256 characters"):
        TelegramOptions(token=TOKEN, mode="webhook", webhook_secret="fifteen-chars-x")
    assert TelegramOptions(token=TOKEN, mode="webhook", webhook_secret="sixteen-chars-xy")


async def test_polling_skips_an_update_the_database_would_refuse(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator
) -> None:
    """A NUL in a text is refused at the adapter: the update is skipped (one log line), the
    offset moves on, and the next update is answered; nothing is polled for ever."""
    async with bridge(tmp_path, tg, sim):
        tg.push_update(tg.private_text(77, "bad\x00text"))
        await exchange(tg, tg.private_text(77, "good"), 77, 2)
    said = [r.text for r in sim.state.requests if r.event_type == "message"]
    assert said == ["good"]
