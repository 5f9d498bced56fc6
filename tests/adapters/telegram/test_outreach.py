"""Conversations the bot starts on Telegram, end to end inside one process: the real Service
(engine, store) with python-telegram-bot against the fake Bot API (getChat, sendMessage), the
simulator as Parloa, and the admin API's start and broadcast routes (bridge/admin/outreach.py)
served over HTTP. The fake knows only the chats it was told of (``strict_chats``): any other
user never started the bot, and getChat answers "chat not found", as Telegram does."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from telegram import Chat, Update

from adapters.telegram.normalize import BotIdentity, Ignored, NormalizeOptions, to_inbound
from adapters.telegram.recipients import recipient_of
from bridge.admin import AdminDeps
from bridge.admin.api import admin_routes
from bridge.admin.outreach import outreach_routes
from bridge.channel import Inbound
from bridge.devtools.simulator import RunningSimulator
from bridge.service import Service
from bridge.vocabulary import EndReason
from tests.fakes.telegram import FakeTelegram
from tests.support.config import config_data, service_config, sqlite_url
from tests.support.net import serving
from tests.support.service import running_service
from tests.support.store_readers import conversation
from tests.support.waiting import poll_until

TOKEN = "123456:ABC-test-token-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789"
WELCOME = "Hello! I am the demo bot"


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(tokens=[TOKEN], strict_chats=True) as fake:
        for user, name in ((41, "Ada"), (42, "Grace"), (43, "Alan")):
            fake.user(user, first_name=name, username=name.lower())
            fake.add_chat(user, "private")
        yield fake


@contextlib.asynccontextmanager
async def bridge(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator, **options: Any
) -> AsyncIterator[tuple[Service, str]]:
    """The service (``options``: more channel options), and the base URL of its start and
    broadcast routes."""
    channel = {
        "name": "tg",
        "type": "telegram",
        "token": TOKEN,
        "api_base_url": tg.api_root,
        "poll_timeout_seconds": 1,
        "leader_lease_seconds": 3,
        "request_timeout_seconds": 5,
        **options,
    }
    config = service_config(config_data(sqlite_url(tmp_path), sim.url, channel))
    async with running_service(config) as service:
        assert service.channel_state["tg"] == "started", service.channel_state
        deps = AdminDeps(
            store=service.store,
            token=ADMIN_TOKEN,
            channel_bots={"tg": "demo"},
            adapters=service.adapters,
            notify=service.engine.notify,
            intake=service.engine.intake,
        )
        app = web.Application()
        app.add_routes(admin_routes(deps, extra=outreach_routes(deps)))
        async with serving(app) as url:
            yield service, url


async def post(
    url: str, path: str, body: dict[str, Any], token: str | None = ADMIN_TOKEN
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}{path}", json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


def launches(sim: RunningSimulator, user: int) -> list[Any]:
    return [
        r
        for r in sim.state.requests
        if r.event_type == "launch" and r.requester_id == f"tg:{user}" and r.status == 200
    ]


def texts(tg: FakeTelegram, chat_id: int) -> list[str]:
    return [m.content or "" for m in tg.sent_messages(chat_id)]


def group_message(chat: dict[str, Any], text: str) -> dict[str, Any]:
    user = {"id": 42, "is_bot": False, "first_name": "Grace", "username": "grace"}
    message = {"message_id": 5, "date": 1_700_000_000, "chat": chat, "from": user, "text": text}
    if text.startswith("@"):
        message["entities"] = [{"type": "mention", "offset": 0, "length": text.index(" ")}]
    return {"update_id": 1, "message": message}


@pytest.mark.parametrize("mode", ["per_user", "per_chat"])
def test_a_started_conversation_is_the_one_the_chats_messages_go_to(mode: Any) -> None:
    """The key and address of a start are those of a message in that chat (its reply)."""
    options = NormalizeOptions(group_mode=mode)
    bot = BotIdentity(id=7001, username="OurBot")
    private = {"id": 42, "type": "private", "first_name": "Grace", "username": "grace"}
    group = {"id": -1001, "type": "supergroup", "title": "Team"}
    for chat, text in ((private, "hi"), (group, "@OurBot hi")):
        started = recipient_of(Chat.de_json(chat, None), options)
        message = to_inbound(Update.de_json(group_message(chat, text), None), bot, options)
        assert isinstance(message, Inbound)
        if chat is group and mode == "per_user":
            assert isinstance(started, Ignored)  # a conversation is a member's: none to start
            continue
        assert not isinstance(started, Ignored)
        # In a group a reply quotes the message it answers; a start has none to quote.
        expected = {**message.address, "reply_to_message_id": None}
        assert (started.conversation_key, dict(started.address)) == (
            message.conversation_key,
            expected,
        )
        assert started.context.items() <= message.context.items()
    channel = {"id": -1002, "type": "channel", "title": "News"}
    assert isinstance(recipient_of(Chat.de_json(channel, None), options), Ignored)


async def test_a_start_sends_the_welcome_once_and_the_reply_continues_it(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator
) -> None:
    async with bridge(tmp_path, tg, sim) as (service, url):
        body = {
            "channel": "tg",
            "recipient": "42",
            "context": {"campaign": "spring", "priority": 2},
            "idempotency_key": "spring-42",
        }
        status, started = await post(url, "/admin/api/conversations/start", body)
        assert (status, started["status"]) == (200, "started"), started
        cid = started["conversation_id"]

        welcome = await tg.wait_for_messages(1, chat_id=42)
        assert welcome[0].content is not None and welcome[0].content.startswith(WELCOME)
        [launch] = launches(sim, 42)
        context = {item["key"]: item["value"] for item in launch.context or []}
        assert context == {
            "platform": "telegram",
            "chatType": "private",
            "userName": "Grace",
            "userHandle": "grace",
            "campaign": "spring",
            "priority": 2,
        }

        # The same key again: the same conversation, no second launch, no second welcome.
        status, again = await post(url, "/admin/api/conversations/start", body)
        assert (status, again) == (200, {"conversation_id": cid, "status": "duplicate"})

        # The user answers in their chat: the conversation the bot started goes on.
        tg.push_update(tg.private_text(42, "hello back", first_name="Grace"))
        await tg.wait_for(lambda: any("You said: hello back" in t for t in texts(tg, 42)))
        message = next(r for r in sim.state.requests if r.event_type == "message")
        assert message.session_id == launch.session_id
        assert len(launches(sim, 42)) == 1
        assert len(tg.sent_messages(42)) == 2
        assert (await conversation(service.store, cid)).conversation_key == "42"

        # Another key is another start: a new session in the same conversation.
        body["idempotency_key"] = "summer-42"
        status, other = await post(url, "/admin/api/conversations/start", body)
        assert (status, other) == (200, {"conversation_id": cid, "status": "started"})
        await poll_until(lambda: len(launches(sim, 42)) == 2, within=10)


async def test_a_user_who_never_started_the_bot_is_refused(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator
) -> None:
    async with bridge(tmp_path, tg, sim) as (_service, url):
        body = {"channel": "tg", "recipient": "77", "idempotency_key": "k1"}
        status, refused = await post(url, "/admin/api/conversations/start", body)
        assert status == 422
        assert refused["error"] == "recipient_unknown"
        assert "chat not found" in refused["detail"].lower()
        assert [c.params.get("chat_id") for c in tg.calls_to("getChat")] == [77]

        for wrong, why in (
            ({**body, "recipient": "@someone"}, "recipient_unknown"),
            ({**body, "channel": "nope"}, None),
        ):
            status, answer = await post(url, "/admin/api/conversations/start", wrong)
            assert status == (422 if why else 404), answer
            if why:
                assert answer["error"] == why
        assert not tg.messages
        assert not [r for r in sim.state.requests if r.event_type == "launch"]


async def test_the_routes_need_the_token_and_a_readable_body(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator
) -> None:
    async with bridge(tmp_path, tg, sim) as (_service, url):
        body = {"channel": "tg", "recipient": "42", "idempotency_key": "k1"}
        for path in ("/admin/api/conversations/start", "/admin/api/broadcasts"):
            assert (await post(url, path, body, token=None))[0] == 401
            assert (await post(url, path, body, token="wrong-token-0123456789"))[0] == 401
        for bad, reason in (
            ({"channel": "tg", "recipient": "42"}, "idempotency_key"),
            ({**body, "context": {"nested": {"a": 1}}}, "context"),
            ({**body, "context": ["a"]}, "context"),
            ({**body, "recipient": ""}, "recipient"),
        ):
            status, answer = await post(url, "/admin/api/conversations/start", bad)
            assert status == 400 and reason in answer["error"], answer
        many = {
            "channel": "tg",
            "recipients": [str(n) for n in range(1001)],
            "idempotency_key": "b",
        }
        for bad, reason in (
            (many, "more than 1000"),
            ({**many, "recipients": []}, "recipients"),
            ({**many, "recipients": ["1"], "wait_seconds": 61}, "wait_seconds"),
        ):
            status, answer = await post(url, "/admin/api/broadcasts", bad)
            assert status == 400 and reason in answer["error"], answer
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{url}/admin/api/broadcasts",
                data=b"[1, 2",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            ) as response,
        ):
            assert response.status == 400
        assert not tg.calls_to("getChat")


async def test_a_broadcast_reports_each_outcome(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator
) -> None:
    tg.block(43)  # Alan blocked the bot: sendMessage answers 403
    async with bridge(tmp_path, tg, sim) as (service, url):
        body = {
            "channel": "tg",
            "recipients": ["41", "42", "43", "77"],
            "idempotency_key": "news-1",
            "wait_seconds": 20,
        }
        status, answer = await post(url, "/admin/api/broadcasts", body)
        assert status == 200, answer
        outcomes = {r["recipient"]: r["outcome"] for r in answer["results"]}
        assert outcomes == {"41": "sent", "42": "sent", "43": "blocked", "77": "unknown_chat"}
        assert [r["recipient"] for r in answer["results"]] == ["41", "42", "43", "77"]
        assert "conversation_id" not in answer["results"][3]
        for user in (41, 42):
            assert texts(tg, user)[0].startswith(WELCOME)
        assert not tg.sent_messages(43)
        blocked = answer["results"][2]["conversation_id"]
        assert (await conversation(service.store, blocked)).end_reason is EndReason.RECIPIENT_GONE

        # The same broadcast again starts nobody twice: the outcomes are read again.
        status, again = await post(url, "/admin/api/broadcasts", body)
        assert status == 200
        assert [r["outcome"] for r in again["results"]] == [
            "sent",
            "sent",
            "blocked",
            "unknown_chat",
        ]
        assert [r.get("conversation_id") for r in again["results"]] == [
            r.get("conversation_id") for r in answer["results"]
        ]
        for user in (41, 42, 43):
            assert len(launches(sim, user)) == 1
        assert len(tg.sent_messages(41)) == len(tg.sent_messages(42)) == 1


async def test_a_broadcast_looks_up_and_sends_within_the_bots_budget(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator
) -> None:
    users = list(range(101, 107))
    for user in users:
        tg.add_chat(user, "private")
    rate = 6  # the bot's budget per second: getChat and sends share it
    async with bridge(tmp_path, tg, sim, rate_limit_per_second=rate) as (_service, url):
        body = {
            "channel": "tg",
            "recipients": [str(u) for u in users],
            "idempotency_key": "paced",
            "wait_seconds": 20,
        }
        status, answer = await post(url, "/admin/api/broadcasts", body)
        assert status == 200, answer
        assert {r["outcome"] for r in answer["results"]} == {"sent"}
    calls = sorted(
        c.at
        for c in tg.calls
        if c.method in ("getChat", "sendMessage") and c.params.get("chat_id") in users
    )
    assert len(calls) == 2 * len(users)
    # A full budget at once, then the rate: within any half second at most rate * 1.5 calls
    # (unpaced, all of them would go out at once).
    window = 0.5
    busiest = max(sum(1 for t in calls if start <= t < start + window) for start in calls)
    assert busiest <= rate + rate * window, calls
