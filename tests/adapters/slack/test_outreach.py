"""Conversations the bot starts on Slack, end to end inside one process: the real Service
(engine, store) with slack-bolt / slack-sdk against the fake Slack (conversations.open,
users.info, chat.postMessage), the simulator as Parloa, and the admin API's start and broadcast
routes (bridge/admin/outreach.py) served over HTTP. The bot writes in its DM with the user; the
user's reply there continues the conversation."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adapters.slack.normalize import BotIdentity, dm_recipient, event_to_inbound
from bridge.admin import AdminDeps
from bridge.admin.api import admin_routes
from bridge.admin.outreach import outreach_routes
from bridge.channel import Inbound
from bridge.devtools.simulator import RunningSimulator
from bridge.service import Service
from tests.fakes.slack import FakeSlack, dm_message, event_callback, post_event
from tests.support.config import config_data, service_config
from tests.support.net import free_port, local_url, serving
from tests.support.service import running_service
from tests.support.store_readers import conversation
from tests.support.waiting import poll_until

# slack-sdk's oauth_v2_access still passes aiohttp.BasicAuth, which aiohttp 3.14 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning")

TEAM = "T0TEAM"
BOT_USER = "U0BOT"
BOT_TOKEN = "xoxb-1111111111111-2222222222222-botTokenSecretValue01"
SIGNING_SECRET = "8f742231b10e8888abcd99signingsecret5"
ADMIN_TOKEN = "admin-token-0123456789"
ADA, GRACE, GONE = "U0ADA", "U0GRACE", "U0GONE"
WELCOME = "Hello! I am the demo bot"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        fake.add_workspace(TEAM, bot_token=BOT_TOKEN, bot_user_id=BOT_USER, bot_id="B0BOT")
        fake.add_user(TEAM, ADA, real_name="Ada Lovelace", display_name="ada", locale="de-DE")
        fake.add_user(TEAM, GRACE, real_name="Grace Hopper")
        fake.add_user(TEAM, GONE, real_name="Left Long Ago", deleted=True)
        yield fake


@contextlib.asynccontextmanager
async def bridge(
    database_url: str, slack: FakeSlack, sim: RunningSimulator
) -> AsyncIterator[tuple[Service, str]]:
    """The service, and the base URL of its start and broadcast routes."""
    port = free_port()
    options = {
        "name": "sl",
        "type": "slack",
        "bot_token": BOT_TOKEN,
        "signing_secret": SIGNING_SECRET,
        "api_base_url": slack.api_url,
    }
    http = {"port": port, "public_url": local_url(port)}
    config = service_config(config_data(database_url, sim.url, options, http=http))
    async with running_service(config) as service:
        assert service.channel_state["sl"] == "started", service.channel_state
        deps = AdminDeps(
            store=service.store,
            token=ADMIN_TOKEN,
            channel_bots={"sl": "demo"},
            adapters=service.adapters,
            notify=service.engine.notify,
            intake=service.engine.intake,
        )
        app = web.Application()
        app.add_routes(admin_routes(deps, extra=outreach_routes(deps)))
        async with serving(app) as url:
            yield service, url


async def post(url: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}{path}", json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def user_says(service: Service, user: str, text: str, channel: str) -> None:
    url = f"{service.config.http.public_url}".rstrip("/") + "/slack/sl/events"
    body = event_callback(TEAM, dm_message(user, text, channel=channel), bot_user_id=BOT_USER)
    assert (await post_event(url, body, SIGNING_SECRET)).status == 200


def launches(sim: RunningSimulator, user: str) -> list[Any]:
    return [
        r
        for r in sim.state.requests
        if r.event_type == "launch" and r.requester_id == f"sl:{user}" and r.status == 200
    ]


def test_a_started_conversation_is_the_one_the_dms_messages_go_to() -> None:
    """The key, address and context of a start are those of a message in that DM."""
    bot = BotIdentity(user_id=BOT_USER, bot_id="B0BOT", team_id=TEAM)
    message = event_to_inbound(dm_message(ADA, "hi", channel="D0ADA"), TEAM, bot)
    assert isinstance(message, Inbound)
    started = dm_recipient(TEAM, "D0ADA", ADA)
    assert (started.conversation_key, started.user_id) == (message.conversation_key, ADA)
    assert dict(started.address) == dict(message.address)
    assert dict(started.context) == dict(message.context)


async def test_a_start_opens_the_dm_once_and_the_reply_continues_it(
    database_url: str, slack: FakeSlack, sim: RunningSimulator
) -> None:
    async with bridge(database_url, slack, sim) as (service, url):
        body = {
            "channel": "sl",
            "recipient": ADA,
            "context": {"campaign": "spring"},
            "idempotency_key": "spring-ada",
        }
        status, started = await post(url, "/admin/api/conversations/start", body)
        assert (status, started["status"]) == (200, "started"), started
        cid = started["conversation_id"]

        [opened] = slack.calls_to("conversations.open")
        dm = "D0ADA"  # the fake's DM with U0ADA
        welcome = await slack.wait_for(lambda: slack.posted(dm))
        assert (welcome[0].text or "").startswith(WELCOME)
        assert welcome[0].thread_ts is None  # in the DM itself, not threaded
        [launch] = launches(sim, ADA)
        context = {item["key"]: item["value"] for item in launch.context or []}
        assert context == {
            "platform": "slack",
            "teamId": TEAM,
            "channelType": "im",
            "userId": ADA,
            "userName": "ada",
            "locale": "de-DE",
            "timezone": "Europe/Berlin",
            "campaign": "spring",
        }

        # The same key again: one conversation, one launch, one welcome; the DM id is kept.
        status, again = await post(url, "/admin/api/conversations/start", body)
        assert (status, again) == (200, {"conversation_id": cid, "status": "duplicate"})
        assert slack.calls_to("conversations.open") == [opened]

        # Ada answers in the DM: the conversation the bot started goes on.
        await user_says(service, ADA, "hello back", dm)
        await poll_until(
            lambda: any("You said: hello back" in (m.text or "") for m in slack.posted(dm)),
            within=10,
        )
        message = next(r for r in sim.state.requests if r.event_type == "message")
        assert message.session_id == launch.session_id
        assert len(launches(sim, ADA)) == 1
        assert (await conversation(service.store, cid)).conversation_key == f"{TEAM}:{dm}"


async def test_unknown_and_deactivated_users_are_refused(
    database_url: str, slack: FakeSlack, sim: RunningSimulator
) -> None:
    async with bridge(database_url, slack, sim) as (_service, url):
        for who, error, detail in (
            ("U0NOBODY", "recipient_unknown", "user_not_found"),
            (GONE, "recipient_gone", "user_disabled"),
            ("T0OTHER:U0ADA", "recipient_unknown", "not installed in team T0OTHER"),
            ("#general", "recipient_unknown", "not a Slack user id"),
        ):
            body = {"channel": "sl", "recipient": who, "idempotency_key": f"k-{who}"}
            status, refused = await post(url, "/admin/api/conversations/start", body)
            assert (status, refused["error"]) == (422, error), (who, refused)
            assert detail in refused["detail"]
        assert not slack.messages
        assert not [r for r in sim.state.requests if r.event_type == "launch"]


async def test_a_broadcast_reports_each_outcome(
    database_url: str, slack: FakeSlack, sim: RunningSimulator
) -> None:
    async with bridge(database_url, slack, sim) as (_service, url):
        body = {
            "channel": "sl",
            "recipients": [ADA, GRACE, GONE, "U0NOBODY", ADA],
            "idempotency_key": "news-1",
            "wait_seconds": 20,
        }
        status, answer = await post(url, "/admin/api/broadcasts", body)
        assert status == 200, answer
        assert [(r["recipient"], r["outcome"]) for r in answer["results"]] == [
            (ADA, "sent"),
            (GRACE, "sent"),
            (GONE, "blocked"),
            ("U0NOBODY", "unknown_chat"),
        ]
        for dm in ("D0ADA", "D0GRACE"):
            [welcome] = slack.posted(dm)
            assert (welcome.text or "").startswith(WELCOME)
        assert len(slack.messages) == 2
