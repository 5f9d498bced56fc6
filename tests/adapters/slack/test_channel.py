"""The Slack channel end to end inside one process: the real Service (engine, store, HTTP
server) with slack-bolt / slack-sdk talking to the fake Slack on 127.0.0.1, and the simulator as
Parloa. Waits are on conditions (the fake's and the simulator's), never on fixed sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import html
import io
import itertools
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from adapters.slack.channel import SlackAdapter
from adapters.slack.options import SlackOptions
from bridge.channel import AdapterServices, Delivery, DeliveryRetryable
from bridge.channelkit import MAX_RETRY_AFTER_SECONDS
from bridge.config import BridgeConfig
from bridge.devtools.simulator import Faults, RunningSimulator
from bridge.logsetup import configure_logging
from bridge.service import Service
from bridge.textchat.models import parse_element
from tests.fakes import slack as slack_events
from tests.fakes.slack import (
    FakeSlack,
    PostedMessage,
    PostResult,
    app_mention,
    app_uninstalled,
    block_actions_payload,
    channel_message,
    dm_message,
    event_callback,
    file_share,
    new_event_id,
    new_ts,
    post_event,
    url_verification,
)
from tests.support.config import config_data, service_config, sqlite_url
from tests.support.service import running_service, service_url
from tests.support.sqlite_faults import set_query_only
from tests.support.waiting import poll_until

# slack-sdk's oauth_v2_access still passes aiohttp.BasicAuth, which aiohttp 3.14 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning")

T = TypeVar("T")

TEAM = "T0TEAM"
BOT_USER = "U0BOT"
BOT_ID = "B0BOT"
BOT_TOKEN = "xoxb-1111111111111-2222222222222-botTokenSecretValue01"
SIGNING_SECRET = "8f742231b10e8888abcd99signingsecret5"
APP_TOKEN = "xapp-1-A0APP-3333333333333-appTokenSecretValue0123"
USER = "U0ADA"
DM = "D0ADA"
CHAN = "C0GENERAL"
PUBLIC_URL = "https://bridge.example.com"


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        fake.add_workspace(TEAM, bot_token=BOT_TOKEN, bot_user_id=BOT_USER, bot_id=BOT_ID)
        fake.add_user(TEAM, USER, real_name="Ada Lovelace", display_name="ada", locale="de-DE")
        yield fake


def config_for(
    database_url: str,
    slack: FakeSlack,
    sim: RunningSimulator,
    engine: dict[str, Any] | None = None,
    **channel: Any,
) -> BridgeConfig:
    options: dict[str, Any] = {
        "name": "sl",
        "type": "slack",
        "bot_token": BOT_TOKEN,
        "signing_secret": SIGNING_SECRET,
        "api_base_url": slack.api_url,
        **channel,
    }
    options = {k: v for k, v in options.items() if v is not None}  # None: leave the option out
    http = {"public_url": PUBLIC_URL}
    return service_config(config_data(database_url, sim.url, options, http=http, engine=engine))


@asynccontextmanager
async def bridge(
    database_url: str,
    slack: FakeSlack,
    sim: RunningSimulator,
    engine: dict[str, Any] | None = None,
    **channel: Any,
) -> AsyncIterator[Service]:
    async with running_service(config_for(database_url, slack, sim, engine, **channel)) as service:
        assert service.channel_state["sl"] == "started", service.channel_state
        yield service


def oauth_bridge(
    database_url: str, slack: FakeSlack, sim: RunningSimulator
) -> contextlib.AbstractAsyncContextManager[Service]:
    """The channel installed through OAuth (no bot token of its own)."""
    return bridge(
        database_url,
        slack,
        sim,
        bot_token=None,
        client_id=slack.client_id,
        client_secret=slack.client_secret,
    )


def events_url(service: Service) -> str:
    return f"{service_url(service)}/slack/sl/events"


async def send(
    service: Service,
    event: dict[str, Any],
    team: str = TEAM,
    *,
    event_id: str | None = None,
    bot_user_id: str = BOT_USER,
    **kwargs: Any,
) -> PostResult:
    """POST one signed event_callback as Slack does."""
    body = event_callback(team, event, event_id=event_id, bot_user_id=bot_user_id)
    return await post_event(events_url(service), body, SIGNING_SECRET, **kwargs)


def texts(slack: FakeSlack, channel: str, team: str | None = None) -> list[str]:
    return [m.text or "" for m in slack.posted(channel=channel, team_id=team)]


def said(sim: RunningSimulator) -> list[str | None]:
    """What users said to Parloa (message events), in order."""
    return [r.text for r in sim.state.requests if r.event_type == "message"]


def block_types(message: PostedMessage) -> list[str]:
    return [b["type"] for b in message.blocks or []]


def context_of(sim: RunningSimulator, index: int) -> dict[str, Any]:
    return {c["key"]: c["value"] for c in sim.state.requests[index].context or []}


# --- 1. direct messages -----------------------------------------------------------------------


async def test_dm_welcome_chips_answer_and_profile(
    database_url: str, slack: FakeSlack, sim: RunningSimulator
) -> None:
    async with bridge(database_url, slack, sim) as service:
        result = await send(service, dm_message(USER, "hello", channel=DM))
        assert result.status == 200, result
        await slack.wait_for(lambda: len(slack.posted(channel=DM)) >= 2, within=10)
        welcome, answer = slack.posted(channel=DM)[:2]

        assert [(r.event_type, r.text) for r in sim.state.requests] == [
            ("launch", None),
            ("message", "hello"),
        ]
        assert "demo bot" in (welcome.text or "")  # the notification fallback
        assert block_types(welcome) == ["section", "actions"]
        buttons = welcome.blocks[1]["elements"]  # type: ignore[index]
        assert [b["text"]["text"] for b in buttons] == [
            "Show me a card",
            "What can you do?",
            "bye",
        ]
        assert all(b["action_id"].startswith("chip_") for b in buttons)
        assert answer.text == "You said: hello"
        assert answer.blocks == [
            {"type": "section", "text": {"type": "mrkdwn", "text": "You said: hello"}}
        ]
        assert welcome.thread_ts is None and answer.thread_ts is None  # a DM is not threaded
        assert all(m.token == BOT_TOKEN for m in slack.posted(channel=DM))
        assert all(c.params.get("text") for c in slack.calls_to("chat.postMessage"))

        request = sim.state.requests[1]
        assert request.requester_id == f"sl:{USER}"
        context = context_of(sim, 1)
        assert context["platform"] == "slack"
        assert context["teamId"] == TEAM
        assert context["channelType"] == "im"
        assert context["userName"] == "ada"
        assert context["locale"] == "de-DE"

        # a second message: the profile comes from the cache
        assert (await send(service, dm_message(USER, "again", channel=DM))).status == 200
        await slack.wait_for(lambda: "You said: again" in texts(slack, DM), within=10)
        assert len(slack.calls_to("users.info")) == 1
        assert context_of(sim, 2)["userName"] == "ada"
        assert {r.session_id for r in sim.state.requests} == {request.session_id}


# --- 2. url_verification and signatures -----------------------------------------------------


async def test_url_verification_and_bad_signatures(
    tmp_path: Path, slack: FakeSlack, sim: RunningSimulator
) -> None:
    async with bridge(sqlite_url(tmp_path), slack, sim) as service:
        url = events_url(service)
        result = await post_event(url, url_verification("challenge-xyz-123"), SIGNING_SECRET)
        assert result.status == 200
        assert "challenge-xyz-123" in result.body

        forged = event_callback(TEAM, dm_message(USER, "forged", channel=DM))
        result = await post_event(url, forged, "not-the-signing-secret")
        assert result.status == 401
        stale = event_callback(TEAM, dm_message(USER, "stale", channel=DM))
        result = await post_event(url, stale, SIGNING_SECRET, timestamp=int(time.time()) - 6 * 60)
        assert result.status == 401
        # an unsigned request
        async with aiohttp.ClientSession() as http, http.post(url, json=forged) as resp:
            assert resp.status == 401

        # a good event afterwards is processed: only it reached Parloa
        assert (await send(service, dm_message(USER, "genuine", channel=DM))).status == 200
        await slack.wait_for(lambda: "You said: genuine" in texts(slack, DM), within=10)
        assert said(sim) == ["genuine"]
        assert len(slack.posted()) == 2  # welcome + answer


# --- 3. deduplication ---------------------------------------------------------------------


async def test_retries_and_double_deliveries_reach_parloa_once(
    database_url: str, slack: FakeSlack, sim: RunningSimulator
) -> None:
    async with bridge(database_url, slack, sim) as service:
        body = event_callback(TEAM, dm_message(USER, "only once", channel=DM))
        url = events_url(service)
        statuses = [(await post_event(url, body, SIGNING_SECRET)).status]
        for attempt in (1, 2, 3):
            result = await post_event(
                url, body, SIGNING_SECRET, retry_num=attempt, retry_reason="http_timeout"
            )
            statuses.append(result.status)
        assert statuses == [200, 200, 200, 200]
        await slack.wait_for(lambda: "You said: only once" in texts(slack, DM), within=10)

        # one post in a channel, seen as app_mention and as message (two event ids), at once
        ts = new_ts()
        mention = app_mention(USER, "mentioned once", channel=CHAN, ts=ts, bot_user_id=BOT_USER)
        message = channel_message(USER, f"<@{BOT_USER}> mentioned once", channel=CHAN, ts=ts)
        results = await asyncio.gather(
            send(service, message, event_id=new_event_id()),
            send(service, mention, event_id=new_event_id()),
            send(service, mention, event_id=new_event_id(), retry_num=1),
        )
        assert [r.status for r in results] == [200, 200, 200]
        await slack.wait_for(lambda: "You said: mentioned once" in texts(slack, CHAN), within=10)
        # a marker in the same thread, so anything accepted twice would have been answered
        assert (
            await send(
                service, app_mention(USER, "marker", CHAN, thread_ts=ts, bot_user_id=BOT_USER)
            )
        ).status == 200
        await slack.wait_for(lambda: "You said: marker" in texts(slack, CHAN), within=10)
        assert said(sim) == ["only once", "mentioned once", "marker"]
        assert texts(slack, DM).count("You said: only once") == 1
        assert texts(slack, CHAN).count("You said: mentioned once") == 1


# --- 4. channels and threads ----------------------------------------------------------------


async def test_channel_mention_threads_and_ignored_messages(
    database_url: str, slack: FakeSlack, sim: RunningSimulator
) -> None:
    async with bridge(database_url, slack, sim) as service:
        ts = new_ts()
        mention = app_mention(USER, "hello bot", channel=CHAN, ts=ts, bot_user_id=BOT_USER)
        assert (await send(service, mention)).status == 200
        await slack.wait_for(lambda: len(slack.posted(channel=CHAN)) >= 2, within=10)
        assert all(m.thread_ts == ts for m in slack.posted(channel=CHAN))
        assert texts(slack, CHAN)[1] == "You said: hello bot"
        launch = sim.state.requests[0]
        assert context_of(sim, 1)["channelType"] == "channel"

        # a plain reply in that thread (no mention) belongs to the same conversation
        reply = channel_message(USER, "follow up", channel=CHAN, thread_ts=ts)
        assert (await send(service, reply)).status == 200
        await slack.wait_for(lambda: "You said: follow up" in texts(slack, CHAN), within=10)
        follow = slack.posted(channel=CHAN)[-1]
        assert follow.thread_ts == ts
        assert sim.state.requests[-1].session_id == launch.session_id

        # ignored: another thread, a top-level message, bots, ourselves, edits, deletions, joins
        other_thread = new_ts()
        top_level = channel_message(USER, "just chatting", channel=CHAN)
        ignored = [
            channel_message(USER, "elsewhere", channel=CHAN, thread_ts=other_thread),
            top_level,
            slack_events.bot_message("beep", channel=CHAN, thread_ts=ts),
            slack_events.bot_message(
                "beep 2",
                channel=CHAN,
                thread_ts=ts,
                legacy_subtype=False,
                bot_id="B0OTHER",
                user="U0OTHERBOT",
                app_id="A0OTHER",
            ),
            slack_events.bot_message(
                "my own echo",
                channel=CHAN,
                thread_ts=ts,
                legacy_subtype=False,
                bot_id=BOT_ID,
                user=BOT_USER,
                app_id="A0APP",
            ),
            slack_events.message_changed(
                CHAN, {"user": USER, "text": "edited text", "ts": follow.ts, "thread_ts": ts}
            ),
            slack_events.message_deleted(CHAN, follow.ts),
            slack_events.member_joined_channel(USER, CHAN, team=TEAM),
            slack_events.channel_join_message(USER, CHAN),
            dm_message(USER, "", channel=DM),  # empty
            slack_events.bot_message(  # our own post in a DM comes back as message.im
                "echo in the DM",
                channel=DM,
                channel_type="im",
                legacy_subtype=False,
                bot_id=BOT_ID,
                user=BOT_USER,
                app_id="A0APP",
            ),
        ]
        for event in ignored:
            result = await send(service, event)
            assert result.status == 200, (event, result)
        # a marker in the thread: everything before it was taken or dropped at intake
        marker = channel_message(USER, "marker", channel=CHAN, thread_ts=ts)
        assert (await send(service, marker)).status == 200
        await slack.wait_for(lambda: "You said: marker" in texts(slack, CHAN), within=10)
        assert said(sim) == ["hello bot", "follow up", "marker"]
        assert [r.event_type for r in sim.state.requests].count("launch") == 1
        for key in (f"{CHAN}:{other_thread}", f"{CHAN}:{top_level['ts']}", DM):
            assert await service.store.find_conversation("sl", f"{TEAM}:{key}") is None, key
        assert slack.posted(channel=DM) == []


# --- 5. chip buttons ------------------------------------------------------------------------


async def test_chip_click_sends_value_once_and_disables_buttons(
    database_url: str, slack: FakeSlack, sim: RunningSimulator
) -> None:
    async with bridge(database_url, slack, sim) as service:
        assert (await send(service, dm_message(USER, "hi", channel=DM))).status == 200
        await slack.wait_for(lambda: len(slack.posted(channel=DM)) >= 2, within=10)
        welcome = slack.posted(channel=DM)[0]
        shown_blocks = list(welcome.blocks or [])
        buttons = next(b for b in shown_blocks if b["type"] == "actions")["elements"]

        def click(button: dict[str, Any]) -> dict[str, Any]:
            return block_actions_payload(
                USER,
                DM,
                welcome.ts,
                button["action_id"],
                button["value"],
                team_id=TEAM,
                button_text=button["text"]["text"],
                message={
                    "type": "message",
                    "user": BOT_USER,
                    "bot_id": BOT_ID,
                    "ts": welcome.ts,
                    "text": welcome.text,
                    "blocks": shown_blocks,
                    "team": TEAM,
                },
            )

        result = await post_event(events_url(service), click(buttons[0]), SIGNING_SECRET)
        assert result.status == 200, result
        assert result.elapsed < 1.0
        await slack.wait_for(lambda: slack.calls_to("chat.update"), within=10)
        update = slack.calls_to("chat.update")[0]
        assert update.ok, update.response
        assert update.params["ts"] == welcome.ts and update.params["channel"] == DM
        updated = slack.message(DM, welcome.ts)
        assert updated is not None
        assert "actions" not in block_types(updated)
        assert "Show me a card" in str(updated.blocks)  # the choice is shown
        await slack.wait_for(lambda: len(slack.posted(channel=DM)) >= 3, within=10)
        card = slack.posted(channel=DM)[2]
        assert "image" in block_types(card)

        # a second click on the same (stale) message: acknowledged, not sent to Parloa
        result = await post_event(events_url(service), click(buttons[2]), SIGNING_SECRET)
        assert result.status == 200, result
        assert (await send(service, dm_message(USER, "after", channel=DM))).status == 200
        await slack.wait_for(lambda: "You said: after" in texts(slack, DM), within=10)
        assert said(sim) == ["hi", "Show me a card", "after"]
        assert len(slack.calls_to("chat.update")) == 1


# --- 6. files -------------------------------------------------------------------------------


async def test_deleted_file_without_text_gets_the_unsupported_note(
    tmp_path: Path, slack: FakeSlack, sim: RunningSimulator
) -> None:
    async with bridge(sqlite_url(tmp_path), slack, sim) as service:
        gone = file_share(USER, "", [{"id": "F0GONE", "mode": "tombstone"}], channel=DM)
        assert (await send(service, gone)).status == 200
        await slack.wait_for(lambda: slack.posted(channel=DM), within=10)
        assert "only read text" in texts(slack, DM)[0]
        assert sim.state.requests == type(sim.state.requests)()


# --- 7. the 3 s acknowledgement ---------------------------------------------------------------


async def test_events_acknowledged_fast_while_parloa_is_slow(
    database_url: str, slack: FakeSlack, sim: RunningSimulator
) -> None:
    sim.state.faults = Faults(latency=10.0)
    async with bridge(
        database_url,
        slack,
        sim,
        engine={"drain_timeout_seconds": 0.2},
        channel_messages_per_second=50,
    ) as service:
        elapsed: list[float] = []
        for i in range(20):
            user = f"U0USER{i % 10}"
            event = dm_message(user, f"message {i}", channel=f"D0DM{i % 10}")
            result = await send(service, event)
            assert result.status == 200, result
            elapsed.append(result.elapsed)
        burst = await asyncio.gather(
            *(
                send(service, dm_message(f"U0B{i}", f"burst {i}", channel=f"D0B{i}"))
                for i in range(20)
            )
        )
        assert all(r.status == 200 for r in burst)
        print(
            f"\nack latency, 20 sequential events: max {max(elapsed) * 1000:.0f} ms, "
            f"mean {sum(elapsed) / len(elapsed) * 1000:.0f} ms; 20 concurrent: "
            f"max {max(r.elapsed for r in burst) * 1000:.0f} ms"
        )
        assert max(elapsed) < 1.0, elapsed
        assert max(r.elapsed for r in burst) < 1.0, [r.elapsed for r in burst]
        # users.info hanging: the profile is given up after profile_timeout_seconds (1 s)
        slack.set_latency(5.0, "users.info")
        result = await send(service, dm_message("U0SLOWPROFILE", "slow profile", channel="D0SP"))
        assert result.status == 200, result
        print(f"ack with users.info hanging: {result.elapsed * 1000:.0f} ms")
        assert result.elapsed < 2.0, result.elapsed
        assert await service.store.find_conversation("sl", f"{TEAM}:D0SP") is not None
        # all 40 were committed before the acknowledgement; Parloa is still thinking
        for i in range(10):
            assert await service.store.find_conversation("sl", f"{TEAM}:D0DM{i}") is not None
        for i in range(20):
            assert await service.store.find_conversation("sl", f"{TEAM}:D0B{i}") is not None
        assert slack.posted() == []
        assert len(sim.state.requests) >= 1  # Parloa was asked (launches), still thinking


# --- 8. rate limits -------------------------------------------------------------------------


async def test_429_storm_loses_and_reorders_nothing(
    database_url: str, slack: FakeSlack, sim: RunningSimulator
) -> None:
    n = 6
    async with bridge(database_url, slack, sim, channel_messages_per_second=20) as service:
        slack.fail_next("chat.postMessage", status=429, retry_after=1, count=3)
        slack.enforce_rate_limits(per_channel_per_second=1, channel_burst=2)
        started = time.monotonic()
        for i in range(1, n + 1):
            assert (await send(service, dm_message(USER, f"m{i}", channel=DM))).status == 200
        expected = [f"You said: m{i}" for i in range(1, n + 1)]
        await slack.wait_for(
            lambda: [t for t in texts(slack, DM) if t.startswith("You said")] == expected,
            within=20,
        )
        took = time.monotonic() - started
        answers = texts(slack, DM)
        assert len(answers) == n + 1 and "demo bot" in answers[0]  # welcome first, no repeats
        assert said(sim) == [f"m{i}" for i in range(1, n + 1)]
        limited = slack.rate_limited()
        assert len(limited) >= 3
        print(f"\n{n} answers through {len(limited)} x 429 in {took:.1f}s")
        # after a 429 the next attempt waited for Retry-After (1 s) in that channel
        calls = slack.calls_to("chat.postMessage")
        for before, after in itertools.pairwise(calls):
            if before.status == 429 and before.injected and after.params.get("channel") == DM:
                assert after.at - before.at >= 0.9, (before.at, after.at)


@pytest.mark.parametrize(
    ("header", "paused"), [("soon", 1.0), ("inf", MAX_RETRY_AFTER_SECONDS), ("7", 7.0)]
)
async def test_a_429_with_a_garbled_or_endless_retry_after_pauses_a_finite_time(
    slack: FakeSlack, header: str, paused: float
) -> None:
    """Garbage in Retry-After must not crash the delivery (it is a 429 all the same: 1 s),
    and ``inf`` must not pause the channel for ever."""
    options = SlackOptions(
        bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET, api_base_url=slack.api_url
    )
    adapter = SlackAdapter("sl", options, AdapterServices(public_url=None, unsupported_text="?"))
    # the fake sends the header's text as it is given
    slack.fail_next("chat.postMessage", status=429, retry_after=header)

    async def progress(_index: int, _message_id: str | None) -> None:
        raise AssertionError("nothing was sent")

    delivery = Delivery(
        outbox_id=1,
        conversation_key=f"{TEAM}:{DM}",
        address={"team_id": TEAM, "channel": DM},
        elements=[parse_element({"type": "text", "content": "hello"})],
        parts_done=0,
        progress=progress,
    )
    try:
        with pytest.raises(DeliveryRetryable) as caught:
            await adapter.deliver(delivery)
    finally:
        await adapter.stop()
    assert slack.rate_limited(), "the fake did not answer 429"
    assert (caught.value.rate_limited, caught.value.retry_after) == (True, paused)


async def test_a_429_pauses_the_whole_workspace(slack: FakeSlack) -> None:
    """Slack does not say which budget a 429 is about: every channel of the workspace waits
    (without a request), channels of other workspaces do not."""
    options = SlackOptions(
        bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET, api_base_url=slack.api_url
    )
    adapter = SlackAdapter("sl", options, AdapterServices(public_url=None, unsupported_text="?"))
    slack.fail_next("chat.postMessage", status=429, retry_after="30")

    async def progress(_index: int, _message_id: str | None) -> None:
        return None

    def to(team: str, channel: str) -> Delivery:
        return Delivery(
            outbox_id=1,
            conversation_key=f"{team}:{channel}",
            address={"team_id": team, "channel": channel},
            elements=[parse_element({"type": "text", "content": "hello"})],
            parts_done=0,
            progress=progress,
        )

    try:
        with pytest.raises(DeliveryRetryable):
            await adapter.deliver(to(TEAM, DM))
        calls = len(slack.calls_to("chat.postMessage"))
        with pytest.raises(DeliveryRetryable) as caught:
            await adapter.deliver(to(TEAM, CHAN))  # another channel, the same workspace
        assert caught.value.rate_limited and 29 < (caught.value.retry_after or 0) <= 30
        assert len(slack.calls_to("chat.postMessage")) == calls, "asked Slack again"
    finally:
        await adapter.stop()


# --- 9. Socket Mode -------------------------------------------------------------------------


async def test_socket_mode_acks_after_commit_and_reconnects(
    database_url: str, slack: FakeSlack, sim: RunningSimulator
) -> None:
    slack.add_app_token(APP_TOKEN)
    async with bridge(
        database_url, slack, sim, mode="socket", app_token=APP_TOKEN, signing_secret=None
    ) as service:
        await slack.wait_for_socket()
        assert slack.socket_connections == 1
        # users.info (looked up before the commit) takes 0.3 s: an ack sent before the listener
        # finished would come sooner
        slack.set_latency(0.3, "users.info")
        body = event_callback(TEAM, dm_message(USER, "over the socket", channel=DM))
        envelope = await slack.socket_send_event("events_api", body)
        ack = await slack.wait_for_ack(envelope)
        # acknowledged only after the commit
        assert await service.store.find_conversation("sl", f"{TEAM}:{DM}") is not None
        assert ack.latency is not None and 0.3 <= ack.latency < 1.0, ack.latency
        print(f"\nsocket mode ack latency {ack.latency * 1000:.0f} ms (users.info: 300 ms)")
        slack.set_latency(0.0, "users.info")
        await slack.wait_for(lambda: "You said: over the socket" in texts(slack, DM), within=10)

        # a redelivery of the same event (retry_attempt 1) is acked and not processed again
        again = await slack.socket_send_event(
            "events_api", body, retry_attempt=1, retry_reason="timeout"
        )
        await slack.wait_for_ack(again)

        await slack.socket_disconnect("refresh_requested")
        await slack.wait_for(
            lambda: slack.socket_connections == 2 and len(slack.socket_open()) == 1, within=10
        )
        body2 = event_callback(TEAM, dm_message(USER, "after the refresh", channel=DM))
        envelope2 = await slack.socket_send_event("events_api", body2)
        await slack.wait_for_ack(envelope2)
        await slack.wait_for(lambda: "You said: after the refresh" in texts(slack, DM), within=10)
        assert said(sim) == ["over the socket", "after the refresh"]
    assert not slack.socket_open()  # closed on stop


# --- 10. OAuth installs -----------------------------------------------------------------------


async def install(service: Service, slack: FakeSlack, code: str) -> None:
    """One browser install: the install page, its state cookie, the redirect back."""
    pages = f"{service_url(service)}/slack/sl"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.get(f"{pages}/install", allow_redirects=False) as resp:
            assert resp.status in (200, 302), resp.status
            page = await resp.text()
            location = resp.headers.get("Location")
            cookies = resp.headers.getall("Set-Cookie", [])
        if location is None:
            found = re.search(r'href="(https://slack\.com/oauth/v2/authorize\?[^"]+)"', page)
            assert found, page
            location = html.unescape(found[1])
        query = parse_qs(urlsplit(location).query)
        state = query["state"][0]
        assert query["client_id"] == [slack.client_id]
        assert query["redirect_uri"] == [f"{PUBLIC_URL}/slack/sl/oauth_redirect"]
        assert "chat:write" in query["scope"][0].split(",")
        cookie = "; ".join(c.split(";", 1)[0] for c in cookies)
        assert state in cookie
        async with http.get(
            f"{pages}/oauth_redirect",
            params={"code": code, "state": state},
            headers={"Cookie": cookie},
            allow_redirects=False,
        ) as resp:
            body = await resp.text()
            assert resp.status == 200, (resp.status, body)


async def test_oauth_installs_two_workspaces_and_uninstall(
    database_url: str, sim: RunningSimulator
) -> None:
    async with FakeSlack() as slack:
        redirect = f"{PUBLIC_URL}/slack/sl/oauth_redirect"
        one = slack.add_oauth_code(
            "code-one", "T0ONE", bot_user_id="U0BOTONE", redirect_uri=redirect
        )
        two = slack.add_oauth_code(
            "code-two", "T0TWO", bot_user_id="U0BOTTWO", redirect_uri=redirect
        )
        async with oauth_bridge(database_url, slack, sim) as service:
            await install(service, slack, "code-one")
            await install(service, slack, "code-two")
            assert len(slack.calls_to("oauth.v2.access")) == 2
            adapter: Any = service.adapters["sl"]
            for team, entry in (("T0ONE", one), ("T0TWO", two)):
                bot = await adapter.installation_store.async_find_bot(
                    enterprise_id=None, team_id=team
                )
                assert bot is not None and bot.bot_token == entry.bot_token

            # a DM in each workspace, answered with that workspace's token
            for team, entry in (("T0ONE", one), ("T0TWO", two)):
                event = dm_message("U0USER", f"hi from {team}", channel="D0SAME")
                result = await send(service, event, team, bot_user_id=entry.bot_user_id)
                assert result.status == 200, result
            for team in ("T0ONE", "T0TWO"):

                def answered(team: str = team) -> bool:
                    return f"You said: hi from {team}" in texts(slack, "D0SAME", team)

                await slack.wait_for(answered, within=10)
            for team, entry in (("T0ONE", one), ("T0TWO", two)):
                posted = slack.posted(team_id=team)
                assert len(posted) == 2
                assert {m.token for m in posted} == {entry.bot_token}
            assert len({r.session_id for r in sim.state.requests}) == 2

            # workspace two removes the app while an answer is on its way
            sim.state.faults = Faults(latency=1.0)
            event = dm_message("U0USER", "still there?", channel="D0SAME")
            assert (await send(service, event, "T0TWO", bot_user_id=two.bot_user_id)).status == 200
            slack.uninstall("T0TWO")
            uninstalled_at = time.monotonic()
            result = await send(service, app_uninstalled(), "T0TWO", bot_user_id=two.bot_user_id)
            assert result.status == 200, result
            assert (
                await adapter.installation_store.async_find_bot(enterprise_id=None, team_id="T0TWO")
                is None
            )

            async def ended() -> bool:
                conv = await service.store.find_conversation("sl", "T0TWO:D0SAME")
                return conv is not None and conv.state == "ended"

            await poll_until(ended, within=10)
            conv = await service.store.find_conversation("sl", "T0TWO:D0SAME")
            assert conv is not None and conv.end_reason == "recipient_gone"
            late = [c for c in slack.calls_to("chat.postMessage") if c.at >= uninstalled_at]
            assert all(c.token != two.bot_token for c in late)
            assert texts(slack, "D0SAME", "T0TWO").count("You said: still there?") == 0

            # an event from the removed workspace: answered, not processed; workspace one works
            sim.state.faults = Faults()
            before = len(sim.state.requests)
            event = dm_message("U0USER", "ghost", channel="D0SAME")
            result = await send(service, event, "T0TWO", bot_user_id=two.bot_user_id)
            assert result.status == 200, result  # Bolt: "not installed", nothing to retry
            event = dm_message("U0USER", "one still works", channel="D0SAME")
            assert (await send(service, event, "T0ONE", bot_user_id=one.bot_user_id)).status == 200
            await slack.wait_for(
                lambda: "You said: one still works" in texts(slack, "D0SAME", "T0ONE"), within=10
            )
            assert "ghost" not in [r.text for r in list(sim.state.requests)[before:]]
            assert service.channel_state["sl"] == "started"


# --- 11. database outage --------------------------------------------------------------------


async def test_database_refusing_writes_makes_slack_retry(
    tmp_path: Path, slack: FakeSlack, sim: RunningSimulator
) -> None:
    async with bridge(sqlite_url(tmp_path), slack, sim) as service:
        url = events_url(service)
        body = event_callback(TEAM, dm_message(USER, "during the outage", channel=DM))
        await set_query_only(service, True)
        try:
            result = await post_event(url, body, SIGNING_SECRET)
        finally:
            await set_query_only(service, False)
        assert result.status == 503, result
        assert result.elapsed < 3.0
        result = await post_event(url, body, SIGNING_SECRET, retry_num=1, retry_reason="http_error")
        assert result.status == 200, result
        result = await post_event(url, body, SIGNING_SECRET, retry_num=2, retry_reason="http_error")
        assert result.status == 200, result
        await slack.wait_for(lambda: "You said: during the outage" in texts(slack, DM), within=10)
        assert (await send(service, dm_message(USER, "next", channel=DM))).status == 200
        await slack.wait_for(lambda: "You said: next" in texts(slack, DM), within=10)
        assert said(sim) == ["during the outage", "next"]


# --- 12. secrets in logs --------------------------------------------------------------------


async def test_tokens_and_secrets_never_logged(
    tmp_path: Path, slack: FakeSlack, sim: RunningSimulator
) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", "text", [], stream=stream)  # no configured secrets: shapes only
    try:
        async with bridge(sqlite_url(tmp_path), slack, sim) as service:
            assert (await send(service, dm_message(USER, "hi", channel=DM))).status == 200
            await slack.wait_for(lambda: "You said: hi" in texts(slack, DM), within=10)
            slack.fail_next("chat.postMessage", status=500)
            assert (await send(service, dm_message(USER, "again", channel=DM))).status == 200
            await slack.wait_for(lambda: "You said: again" in texts(slack, DM), within=10)
            forged = event_callback(TEAM, dm_message(USER, "forged", channel=DM))
            assert (await post_event(events_url(service), forged, "wrong")).status == 401
        # OAuth: the client secret, and the tokens of installations (stored by slack-sdk)
        installed = slack.add_oauth_code("code-logs", "T0LOGS", bot_user_id="U0BOTLOGS")
        async with oauth_bridge(f"sqlite+aiosqlite:///{tmp_path}/oauth.db", slack, sim) as service:
            await install(service, slack, "code-logs")
            event = dm_message("U0USER", "hi there", channel="D0LOGS")
            result = await send(service, event, "T0LOGS", bot_user_id="U0BOTLOGS")
            assert result.status == 200, result
            await slack.wait_for(lambda: "You said: hi there" in texts(slack, "D0LOGS"), within=10)
    finally:
        logging.getLogger().handlers.clear()
    output = stream.getvalue()
    assert "chat.postMessage" in output and "oauth.v2.access" in output  # slack-sdk did log
    secrets = (
        BOT_TOKEN,
        BOT_TOKEN.split("-", 1)[1],
        SIGNING_SECRET,
        "parloa-tok",
        slack.client_secret,
        installed.bot_token,
        installed.bot_token.split("-", 1)[1],
    )
    for secret in secrets:
        assert secret not in output, secret


async def test_installation_tokens_are_redacted_once_known(tmp_path: Path) -> None:
    """Tokens that arrive with an installation are added to the log redactor, whatever their
    shape (no pattern knows a token Slack may issue tomorrow)."""
    from slack_sdk.oauth.installation_store.models.installation import Installation
    from sqlalchemy.ext.asyncio import create_async_engine

    from adapters.slack.channel import RedactingInstallationStore

    stream = io.StringIO()
    configure_logging("INFO", "text", [], stream=stream)
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/install.db")
    token, refresh = "unshaped-bot-token-0123456789", "unshaped-refresh-0123456789"
    try:
        installs = RedactingInstallationStore(client_id="111.222", engine=engine)
        await installs.create_tables()
        await installs.async_save(
            Installation(
                app_id="A0APP",
                team_id="T0NEW",
                user_id="U0ADMIN",
                bot_token=token,
                bot_refresh_token=refresh,
                bot_id="B0NEW",
                bot_user_id="U0BOTNEW",
            )
        )
        bot = await installs.async_find_bot(enterprise_id=None, team_id="T0NEW")
        assert bot is not None and bot.bot_token == token
        logging.getLogger("adapters.slack").warning("said %s and %s", token, refresh)
    finally:
        logging.getLogger().handlers.clear()
        await engine.dispose()
    output = stream.getvalue()
    assert "said *** and ***" in output, output
