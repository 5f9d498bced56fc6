"""The "slack" desk: the Slack adapter hosting an agents' room (adapters/slack/desk.py) and
SlackDesk (bridge/handover/slack.py), through slack-bolt / slack-sdk against the fake Slack on
127.0.0.1. The first part runs the adapter alone, with the desk's Agents in memory (a small
fake of the protocol); the end-to-end part runs the real Service and the simulator."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web

from adapters.slack.channel import SlackAdapter
from adapters.slack.desk import (
    FILES_NOTE,
    RESOLVE_ACTION,
    TAKE_ACTION,
    action_act,
    message_act,
    parse_room,
    render_post,
)
from adapters.slack.normalize import BotIdentity, Ignored
from adapters.slack.options import SlackOptions
from bridge.channel import (
    AdapterServices,
    AgentAct,
    DeliveryRejected,
    DeliveryRetryable,
    DeskAction,
    DeskPost,
    IntakeUnavailable,
)
from bridge.config import HandoverConfig
from bridge.devtools.simulator import RunningSimulator
from bridge.handover import events
from bridge.handover.desk import AgentCommand, DeskDelivery
from bridge.handover.slack import SlackDesk, root_record
from bridge.service import Service
from bridge.store import StoreUnavailable
from bridge.vocabulary import HandoverOutcome
from tests.fakes.slack import (
    FakeSlack,
    PostedMessage,
    PostResult,
    app_mention,
    dm_message,
    event_callback,
    file_share,
    post_event,
    validate_blocks,
)
from tests.handover.support import MemoryAgents
from tests.support.config import config_data, service_config
from tests.support.intake import MemoryIntake, MemoryState
from tests.support.net import serving
from tests.support.service import running_service, service_url
from tests.support.signing import webhook_signed_headers
from tests.support.waiting import poll_until

TEAM = "T0TEAM"
BOT_USER = "U0BOT"
BOT_ID = "B0BOT"
BOT_TOKEN = "xoxb-1111111111111-2222222222222-botTokenSecretValue01"
SIGNING_SECRET = "8f742231b10e8888abcd99signingsecret5"
AGENTS = "C0AGENTS"
AGENT = "U0GRACE"
OTHER_AGENT = "U0ALAN"
USER = "U0ADA"
BOT = "demo"
DM = "D0ADA"
BOT_IDENTITY = BotIdentity(user_id=BOT_USER, bot_id=BOT_ID, team_id=TEAM)


# --- the core's side in memory --------------------------------------------------------------


class SharedState(MemoryState):
    """The desks' shared state; ``down``: reads fail as the store's do."""

    down = False

    async def get(self, key: str) -> str | None:
        if self.down:
            raise StoreUnavailable("database is down")
        return await super().get(key)


def memory_agents() -> MemoryAgents:
    """The desk's Agents in memory (tests/handover/support.py) over a :class:`SharedState`."""
    return MemoryAgents(
        state=SharedState(),
        desk="slack",
        queue="tier1",
        summary="The user wants a refund.",
        started_at=time.time(),
    )


@dataclass
class Desk:
    """The adapter (started, its routes served) hosting the agents' room for SlackDesk."""

    slack: FakeSlack
    adapter: SlackAdapter
    desk: SlackDesk
    agents: MemoryAgents
    intake: MemoryIntake
    url: str  # the Events API route
    progress: list[tuple[int, str | None]]

    async def send(self, event: dict[str, Any], **kwargs: Any) -> PostResult:
        body = event_callback(TEAM, event, bot_user_id=BOT_USER, event_id=kwargs.pop("eid", None))
        return await post_event(self.url, body, SIGNING_SECRET, **kwargs)

    async def press(self, message: PostedMessage, user: str, action_id: str) -> PostResult:
        return await post_event(
            self.url, self.slack.press(message, user, action_id), SIGNING_SECRET
        )

    async def deliver(self, key: str, event: dict[str, Any]) -> None:
        async def progress(index: int, message_id: str | None) -> None:
            self.progress.append((index, message_id))

        handover = self.agents.handovers[key]
        await self.desk.deliver(DeskDelivery(len(self.progress) + 1, handover, event, progress))

    async def start(self, key: str = "h-1") -> PostedMessage:
        """A handover opened and its root posted; the root message."""
        self.agents.open(key)
        await self.deliver(key, started(key))
        return self.slack.posted(channel=AGENTS)[-1]


def started(key: str, **overrides: Any) -> dict[str, Any]:
    transcript = [
        events.Turn("user", "I want my money back", 1.0),
        events.Turn("bot", "Let me get someone for you.", 2.0),
    ]
    fields: dict[str, Any] = {
        "bot": BOT,
        "channel": "web",
        "user_id": "visitor-7",
        "context": {"userName": "Ada", "language": "de"},
        "reason": "billing",
        "queue": "tier1",
        "summary": "The user wants a refund.",
        "transcript": transcript,
        **overrides,
    }
    return events.started(key, f"{key}:1:started", 3.0, **fields)


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        fake.add_workspace(TEAM, bot_token=BOT_TOKEN, bot_user_id=BOT_USER, bot_id=BOT_ID)
        fake.add_user(TEAM, AGENT, real_name="Grace Hopper", display_name="Grace")
        fake.add_user(TEAM, OTHER_AGENT, real_name="Alan Turing", display_name="")
        fake.add_user(TEAM, USER, real_name="Ada Lovelace", display_name="ada")
        fake.add_channel(TEAM, AGENTS, name="agents")
        fake.add_channel(TEAM, "C0GENERAL", name="general")
        fake.add_channel(TEAM, DM, user=USER)
        yield fake


@asynccontextmanager
async def hosted(
    slack: FakeSlack, options: dict[str, Any] | None = None, **handover: Any
) -> AsyncIterator[Desk]:
    """SlackDesk on a started SlackAdapter (``options`` over the test's), its Agents in
    memory."""
    options_model = SlackOptions.model_validate(
        {
            "bot_token": BOT_TOKEN,
            "signing_secret": SIGNING_SECRET,
            "api_base_url": slack.api_url,
            "channel_messages_per_second": 50,
            **(options or {}),
        }
    )
    services = AdapterServices(public_url=None, unsupported_text="?")
    adapter = SlackAdapter("sl", options_model, services)
    config = HandoverConfig(desk="slack", slack_channel="sl", agents_channel_id=AGENTS, **handover)
    desk = SlackDesk(BOT, config, adapter)  # hosts the room before the adapter starts
    agents = memory_agents()
    intake = MemoryIntake("sl")
    app = web.Application()
    app.add_routes(adapter.routes())
    await adapter.start(intake)
    await desk.start(agents)
    try:
        async with serving(app) as base:
            yield Desk(slack, adapter, desk, agents, intake, f"{base}/slack/sl/events", [])
    finally:
        await desk.stop()
        await adapter.stop()


def current(slack: FakeSlack, root: PostedMessage) -> PostedMessage:
    """The root post as it shows now (after chat.update)."""
    found = slack.message(root.channel, root.ts)
    assert found is not None
    return found


def buttons(message: PostedMessage) -> list[str]:
    return [
        element["action_id"]
        for block in message.blocks or []
        if block["type"] == "actions"
        for element in block["elements"]
    ]


def shown(message: PostedMessage) -> str:
    """Every text of the message's blocks, joined."""
    parts: list[str] = []
    for block in message.blocks or []:
        if "text" in block:
            parts.append(block["text"]["text"])
        parts.extend(field["text"] for field in block.get("fields") or [])
    return "\n".join(parts)


# --- pure: posts and acts -------------------------------------------------------------------


def test_render_post_is_block_kit_within_limits() -> None:
    post = DeskPost(
        handover="h-1",
        title="Ada <on web> asks for a person",
        text="Refund & more",
        fields=(("Channel", "web"), ("Language", ""), ("Reason", "billing")),
        lines=("Ada: hi *there*", "Bot: hello"),
        actions=(DeskAction.TAKE, DeskAction.RESOLVE),
    )
    message = render_post(post)
    blocks = list(message.blocks)
    assert validate_blocks(blocks) == []
    assert blocks[0]["text"]["text"] == "*Ada &lt;on web&gt; asks for a person*"
    assert [f["text"] for f in blocks[1]["fields"]] == ["*Channel*\nweb", "*Reason*\nbilling"]
    assert blocks[2]["text"]["text"] == "> Ada: hi *there*\n> Bot: hello"
    assert blocks[3]["text"]["text"] == "Refund &amp; more"
    assert [(b["action_id"], b["value"]) for b in blocks[4]["elements"]] == [
        (TAKE_ACTION, "h-1"),
        (RESOLVE_ACTION, "h-1"),
    ]
    assert message.text == "Ada &lt;on web&gt; asks for a person"

    # a huge transcript keeps the latest lines and Slack's limits
    many = DeskPost(handover="h", title="t", lines=[f"{i}: " + "&" * 900 for i in range(300)])
    blocks = list(render_post(many).blocks)
    assert validate_blocks(blocks) == [] and len(blocks) <= 50
    assert blocks[1]["text"]["text"] == "> …" and "299: " in blocks[-1]["text"]["text"]
    # a body-only post (a thread message) has no buttons and a fallback text
    only = render_post(DeskPost(handover="h", title="Ada", text="still there?"))
    assert only.text == "Ada" and [b["type"] for b in only.blocks] == ["section", "section"]


def test_messages_in_the_room_become_acts_or_are_ignored() -> None:
    room = parse_room(AGENTS)

    def act(**event: Any) -> AgentAct | Ignored:
        base = {"type": "message", "user": AGENT, "ts": "2.0", "thread_ts": "1.0", "text": "hi"}
        return message_act({**base, **event}, TEAM, room, BOT_IDENTITY)

    reply = act(text=f"<@{BOT_USER}> on it &amp; more")
    assert reply == AgentAct(
        room=AGENTS,
        thread="1.0",
        event_id=f"slack:{TEAM}:{AGENTS}:2.0",
        action=DeskAction.MESSAGE,
        agent_id=AGENT,
        text="on it & more",
    )
    broadcast = act(subtype="thread_broadcast")  # "also send to the channel": still a reply
    assert isinstance(broadcast, AgentAct) and broadcast.text == "hi"
    resolve = act(text=" /Resolve ")
    assert isinstance(resolve, AgentAct) and resolve.action is DeskAction.RESOLVE
    assert resolve.text == ""
    assert isinstance(act(text="/resolve now"), AgentAct)  # a message, not the command
    ignored = [
        act(thread_ts=None),  # outside a thread
        act(thread_ts="2.0"),  # a thread's root
        act(user=BOT_USER),  # our bot user
        act(bot_id="B0OTHER"),  # any bot
        act(subtype="bot_message"),
        act(subtype="message_changed", hidden=True),
        act(subtype="channel_join"),
        act(text=""),
        act(ts=None),
    ]
    assert all(isinstance(i, Ignored) for i in ignored), ignored
    with pytest.raises(ValueError):
        parse_room("T1/C2/C3")
    assert parse_room("T1/C2").team == "T1"


def test_button_presses_become_acts() -> None:
    room = parse_room(AGENTS)
    body = {
        "type": "block_actions",
        "user": {"id": AGENT},
        "container": {"message_ts": "1.0", "channel_id": AGENTS},
        "message": {"ts": "1.0"},
        "actions": [{"action_id": TAKE_ACTION, "value": "h-1"}],
    }
    take = action_act(body, TEAM, room, BOT_IDENTITY)
    assert take == AgentAct(
        room=AGENTS,
        thread="1.0",
        event_id=f"slack:{TEAM}:{AGENTS}:1.0:take:{AGENT}",
        action=DeskAction.TAKE,
        agent_id=AGENT,
        handover="h-1",
    )
    resolve = action_act(
        {**body, "actions": [{"action_id": RESOLVE_ACTION, "value": "h-1"}]},
        TEAM,
        room,
        BOT_IDENTITY,
    )
    assert isinstance(resolve, AgentAct) and resolve.action is DeskAction.RESOLVE
    assert isinstance(action_act({**body, "actions": []}, TEAM, room, BOT_IDENTITY), Ignored)
    no_value = {**body, "actions": [{"action_id": TAKE_ACTION, "value": ""}]}
    assert isinstance(action_act(no_value, TEAM, room, BOT_IDENTITY), Ignored)


def test_root_record_names_the_user_and_the_transcript() -> None:
    record = root_record(started("h-1"))
    assert record["title"] == "Ada on web asks for a person"
    assert record["fields"] == [
        ["Channel", "web"],
        ["User", "Ada"],
        ["Language", "de"],
        ["Reason", "billing"],
        ["Queue", "tier1"],
    ]
    assert record["lines"] == ["Ada: I want my money back", "Bot: Let me get someone for you."]
    anonymous = root_record(started("h-2", context=None, reason=None, transcript=[]))
    assert anonymous["title"] == "visitor-7 on web asks for a person"
    assert ["Reason", "billing"] not in anonymous["fields"] and anonymous["lines"] == []


# --- the adapter hosting the room, SlackDesk, Agents in memory -----------------------------


async def test_a_handover_opens_a_thread_with_the_transcript_and_buttons(
    slack: FakeSlack,
) -> None:
    async with hosted(slack) as desk:
        root = await desk.start("h-1")
        assert root.channel == AGENTS and root.thread_ts is None
        assert validate_blocks(root.blocks) == []
        text = shown(root)
        assert "*Ada on web asks for a person*" in text
        assert "*Reason*\nbilling" in text and "*Language*\nde" in text
        assert "> Ada: I want my money back\n> Bot: Let me get someone for you." in text
        assert "The user wants a refund." in text
        assert buttons(root) == [TAKE_ACTION, RESOLVE_ACTION]
        assert desk.agents.handovers["h-1"].thread == f"{AGENTS}:{root.ts}"
        assert desk.progress == [(0, root.ts)]

        # delivered again after a crash once the thread was recorded: not posted twice
        await desk.deliver("h-1", started("h-1"))
        assert len(slack.posted(channel=AGENTS)) == 1
        assert desk.progress[-1] == (0, root.ts)

        # the user's messages appear in the thread
        await desk.deliver("h-1", events.user_message("h-1", "h-1:5:user", 4.0, "Hello? <b>"))
        reply = slack.posted(channel=AGENTS)[-1]
        assert reply.thread_ts == root.ts
        assert shown(reply) == "*Ada*\nHello? &lt;b&gt;"
        # agents' own messages are not posted again
        agent_said = events.agent_message("h-1", "h-1:6:agent", 5.0, "Hi", AGENT, "Grace")
        await desk.deliver("h-1", agent_said)
        assert len(slack.posted(channel=AGENTS)) == 2


@pytest.mark.parametrize("team", [None, TEAM])
async def test_an_agents_reply_in_the_thread_reaches_the_desk_once(
    slack: FakeSlack, team: str | None
) -> None:
    """The room named by its channel, or by workspace and channel (an OAuth channel's)."""
    async with hosted(slack, agents_team_id=team) as desk:
        root = await desk.start("h-1")
        room = f"{team}/{AGENTS}" if team else AGENTS
        assert desk.agents.handovers["h-1"].thread == f"{room}:{root.ts}"
        event = slack.user_posts(TEAM, AGENT, AGENTS, "Hi Ada, Grace here", thread_ts=root.ts)
        first = await desk.send(event, eid="Ev01")
        assert first.status == 200, first
        assert desk.agents.commands == [
            AgentCommand(
                handover="h-1",
                event_id=f"slack:{TEAM}:{AGENTS}:{event['ts']}",
                action=DeskAction.MESSAGE,
                text="Hi Ada, Grace here",
                agent_id=AGENT,
                agent_name="Grace",
            )
        ]
        # Slack's retry of the same event, and its app_mention twin: stored once
        again = await desk.send(event, eid="Ev01", retry_num=1, retry_reason="http_timeout")
        assert again.status == 200, again
        mention = {**app_mention(AGENT, "Hi", AGENTS, event["ts"], thread_ts=root.ts)}
        assert (await desk.send(mention, eid="Ev02")).status == 200
        assert len(desk.agents.commands) == 1 and desk.agents.calls == 3
        # the bot's own posts, a message outside the thread, another bot: ignored
        assert (await desk.send(slack.echo(root))).status == 200
        outside = slack.user_posts(TEAM, AGENT, AGENTS, "coffee anyone?")
        assert (await desk.send(outside)).status == 200
        assert desk.agents.calls == 3
        assert desk.intake.accepted == []  # nothing of the room reached intake
        # the user still reaches the bot everywhere else
        assert (await desk.send(dm_message(USER, "hello", channel=DM))).status == 200
        assert [e.text for e in desk.intake.accepted] == ["hello"]


async def test_take_and_resolve_buttons_and_the_root_updates(slack: FakeSlack) -> None:
    async with hosted(slack) as desk:
        root = await desk.start("h-1")
        pressed = await desk.press(root, OTHER_AGENT, TAKE_ACTION)
        assert pressed.status == 200, pressed
        take = desk.agents.commands[-1]
        assert (take.handover, take.action, take.agent_id) == ("h-1", DeskAction.TAKE, OTHER_AGENT)
        assert take.agent_name == "Alan Turing"  # no display name: the real name
        assert (await desk.press(root, OTHER_AGENT, TAKE_ACTION)).status == 200  # double click
        assert len(desk.agents.commands) == 1

        await desk.deliver("h-1", events.taken("h-1", "h-1:7:taken", 6.0, OTHER_AGENT, "Alan"))
        updated = current(slack, root)
        assert updated is not None and validate_blocks(updated.blocks) == []
        assert buttons(updated) == [RESOLVE_ACTION]
        assert "*Status*\nTaken by Alan" in shown(updated)
        assert "> Ada: I want my money back" in shown(updated)  # the transcript stays
        assert shown(slack.posted(channel=AGENTS)[-1]) == "Alan took this handover."

        assert (await desk.press(updated, OTHER_AGENT, RESOLVE_ACTION)).status == 200
        assert desk.agents.commands[-1].action is DeskAction.RESOLVE
        ended = events.ended("h-1", "h-1:8:ended", 7.0, HandoverOutcome.RESOLVED)
        await desk.deliver("h-1", ended)
        final = current(slack, root)
        assert final is not None and buttons(final) == []
        assert "*Status*\nResolved (taken by Alan)" in shown(final)
        note = slack.posted(channel=AGENTS)[-1]
        assert note.thread_ts == root.ts
        assert shown(note) == "Resolved. The user is back with the bot."


async def test_resolve_in_the_thread_and_refusals_told_to_the_agent(slack: FakeSlack) -> None:
    async with hosted(slack) as desk:
        root = await desk.start("h-1")
        # what cannot reach the user: told to the agent, answered 200 (no retries)
        long = slack.user_posts(TEAM, AGENT, AGENTS, "x" * 8001, thread_ts=root.ts)
        assert (await desk.send(long)).status == 200
        await slack.wait_for(lambda: slack.ephemerals)
        assert slack.ephemerals[0].text == (
            "Not sent to the user: the message is longer than 8000 characters"
        )
        shared = file_share(
            AGENT, "", [slack.add_file(TEAM, b"%PDF")], AGENTS, channel_type="channel"
        )
        assert (await desk.send({**shared, "thread_ts": root.ts})).status == 200
        await slack.wait_for(lambda: len(slack.ephemerals) == 2)
        assert slack.ephemerals[1].text == FILES_NOTE and slack.ephemerals[1].user == AGENT
        assert desk.agents.commands == []
        slack.ephemerals.clear()
        done = slack.user_posts(TEAM, AGENT, AGENTS, "/resolve", thread_ts=root.ts)
        assert (await desk.send(done)).status == 200
        assert [c.action for c in desk.agents.commands] == [DeskAction.RESOLVE]

        # the handover has ended: the agent is told, only them, in the thread
        late = slack.user_posts(TEAM, AGENT, AGENTS, "one more thing", thread_ts=root.ts)
        assert (await desk.send(late)).status == 200
        note = await slack.wait_for(lambda: slack.ephemerals)
        assert (note[0].user, note[0].thread_ts, note[0].text) == (
            AGENT,
            root.ts,
            "This handover has ended: nothing written here reaches the user any more.",
        )
        # a thread that is no handover's
        other = slack.user_posts(TEAM, AGENT, AGENTS, "root", thread_ts=None)
        stray = slack.user_posts(TEAM, AGENT, AGENTS, "hello?", thread_ts=other["ts"])
        assert (await desk.send(stray)).status == 200
        await slack.wait_for(lambda: len(slack.ephemerals) == 2)
        assert "No handover" in (slack.ephemerals[1].text or "")
        assert len(desk.agents.commands) == 1


async def test_an_act_not_stored_makes_slack_send_it_again(slack: FakeSlack) -> None:
    async with hosted(slack) as desk:
        root = await desk.start("h-1")
        desk.agents.fail = IntakeUnavailable("database is down")
        event = slack.user_posts(TEAM, AGENT, AGENTS, "Hi", thread_ts=root.ts)
        refused = await desk.send(event, eid="Ev09")
        assert refused.status == 503, refused
        pressed = await desk.press(root, AGENT, TAKE_ACTION)
        assert pressed.status >= 500, pressed  # the agent sees an error and presses again
        desk.agents.fail = None
        again = await desk.send(event, eid="Ev09", retry_num=1, retry_reason="http_error")
        assert again.status == 200, again
        assert [c.text for c in desk.agents.commands] == ["Hi"]


async def test_socket_mode_acks_an_act_once_it_is_stored(slack: FakeSlack) -> None:
    app_token = "xapp-1-A0APP-3333333333333-appTokenSecretValue0123"
    slack.add_app_token(app_token)
    async with hosted(slack, {"mode": "socket", "app_token": app_token}) as desk:
        root = await desk.start("h-1")
        slack.set_latency(0.3, "users.info")  # the agent's name, looked up before the act
        event = slack.user_posts(TEAM, AGENT, AGENTS, "over the socket", thread_ts=root.ts)
        envelope = await slack.socket_send_event("events_api", event_callback(TEAM, event))
        ack = await slack.wait_for_ack(envelope)
        assert ack.latency is not None and ack.latency >= 0.3, ack.latency
        assert [c.text for c in desk.agents.commands] == ["over the socket"]
        slack.set_latency(0.0, "users.info")

        pressed = await slack.socket_send_event(
            "interactive", slack.press(root, AGENT, RESOLVE_ACTION)
        )
        await slack.wait_for_ack(pressed)
        assert desk.agents.commands[-1].action is DeskAction.RESOLVE
        assert desk.intake.accepted == []


async def test_room_posts_map_slack_errors(slack: FakeSlack) -> None:
    async with hosted(slack) as desk:
        desk.agents.open("h-1")
        # the user's message before the root is posted: try again later
        with pytest.raises(DeliveryRetryable):
            await desk.deliver("h-1", events.user_message("h-1", "h-1:2:user", 1.0, "hi"))
        post = DeskPost(handover="h-1", text="x")
        with pytest.raises(DeliveryRejected):
            await desk.adapter.post_to_room("C0NOWHERE", post)  # channel_not_found
        with pytest.raises(DeliveryRejected):
            await desk.adapter.post_to_room("a/b/c", post)
        with pytest.raises(DeliveryRejected):
            await desk.adapter.update_in_room(AGENTS, "1.000", post)  # message_not_found
        # the shared state unreadable: try again later
        root = await desk.start("h-2")
        cast(SharedState, desk.agents.state).down = True
        with pytest.raises(DeliveryRetryable):
            await desk.deliver("h-2", events.user_message("h-2", "h-2:2:user", 1.0, "hi"))
        cast(SharedState, desk.agents.state).down = False
        assert len(slack.thread(AGENTS, root.ts)) == 1
        slack.fail_next("chat.postMessage", status=429, retry_after="7")
        with pytest.raises(DeliveryRetryable) as caught:
            await desk.deliver("h-1", started("h-1"))
        assert caught.value.rate_limited and 6 < (caught.value.retry_after or 0) <= 7
        assert desk.agents.handovers["h-1"].thread is None


async def test_an_agents_first_message_shows_as_taken_and_a_lost_root_is_skipped(
    slack: FakeSlack,
) -> None:
    async with hosted(slack) as desk:
        root = await desk.start("h-1")
        said = events.agent_message("h-1", "h-1:3:agent", 4.0, "Hi", AGENT, "Grace")
        await desk.deliver("h-1", said)
        updated = current(slack, root)
        assert updated is not None and buttons(updated) == [RESOLVE_ACTION]
        assert "*Status*\nTaken by Grace" in shown(updated)
        assert len(slack.posted(channel=AGENTS)) == 1  # nothing posted: she wrote it there
        updates = len(slack.calls_to("chat.update"))
        await desk.deliver("h-1", said)  # a later message: the root stays as it is
        assert len(slack.calls_to("chat.update")) == updates

        # someone deleted the root: the end is still told in the thread
        current(slack, root).deleted = True
        await desk.deliver("h-1", events.ended("h-1", "h-1:9:ended", 8.0, HandoverOutcome.IDLE))
        assert shown(slack.posted(channel=AGENTS)[-1]) == (
            "Ended: nobody wrote for too long. The user is back with the bot."
        )


async def test_one_room_per_desk(slack: FakeSlack) -> None:
    async with hosted(slack) as desk:
        config = HandoverConfig(desk="slack", slack_channel="sl", agents_channel_id=AGENTS)
        with pytest.raises(DeliveryRejected, match="already"):
            SlackDesk("other", config, desk.adapter)


# --- end to end: the real Service, the simulator, a Slack DM user ---------------------------

HANDOVER = {"desk": "slack", "slack_channel": "sl", "agents_channel_id": AGENTS}


@asynccontextmanager
async def bridge(
    database_url: str,
    slack: FakeSlack,
    sim: RunningSimulator,
    extra: dict[str, Any] | None = None,
    **handover: Any,
) -> AsyncIterator[Service]:
    """The service with the Slack channel "sl" hosting the agents' room (and ``extra``, one
    more channel of the bot)."""
    channel = {
        "name": "sl",
        "type": "slack",
        "bot_token": BOT_TOKEN,
        "signing_secret": SIGNING_SECRET,
        "api_base_url": slack.api_url,
        "channel_messages_per_second": 50,
    }
    data = config_data(database_url, sim.url, channel, bot={"handover": {**HANDOVER, **handover}})
    if extra is not None:
        data["channels"].append({"bot": "demo", **extra})
    async with running_service(service_config(data)) as service:
        assert service.channel_state["sl"] == "started", service.channel_state
        yield service


async def send_to(service: Service, event: dict[str, Any], **kwargs: Any) -> PostResult:
    body = event_callback(TEAM, event, bot_user_id=BOT_USER, event_id=kwargs.pop("eid", None))
    return await post_event(
        f"{service_url(service)}/slack/sl/events", body, SIGNING_SECRET, **kwargs
    )


async def opened_thread(service: Service, slack: FakeSlack) -> PostedMessage:
    """The root post of the handover, once its thread is recorded (an agent's reply in a
    thread no handover has yet is refused: agents do not answer within milliseconds)."""
    root = await slack.wait_for(lambda: next(iter(slack.posted(channel=AGENTS)), None), 10)
    await poll_until(lambda: service.store.handover_by_thread(BOT, f"{AGENTS}:{root.ts}"), 10)
    return root


def dm_texts(slack: FakeSlack) -> list[str]:
    return [m.text or "" for m in slack.posted(channel=DM)]


async def test_a_slack_user_handed_over_to_agents_in_a_thread_and_back(
    database_url: str, slack: FakeSlack, sim: RunningSimulator
) -> None:
    async with bridge(database_url, slack, sim) as service:
        url = f"{service_url(service)}/slack/sl/events"
        assert (await send_to(service, dm_message(USER, "hello", channel=DM))).status == 200
        await slack.wait_for(lambda: "You said: hello" in dm_texts(slack), within=10)
        assert (
            await send_to(service, dm_message(USER, "a human please", channel=DM))
        ).status == 200

        # a thread opens in the agents' room: who, why, the transcript, Take and Resolve
        root = await opened_thread(service, slack)
        text = shown(root)
        assert "*ada on sl asks for a person*" in text, text
        assert "*Reason*\nthe user asked for a person" in text and "*Queue*\nsupport" in text
        assert "> ada: hello" in text and "> Bot: You said: hello" in text
        assert "> ada: a human please" in text
        assert buttons(root) == [TAKE_ACTION, RESOLVE_ACTION]
        await slack.wait_for(
            lambda: "I am connecting you with a person. Please hold on." in dm_texts(slack), 10
        )
        parloa_calls = len(sim.state.requests)

        # Take: the root shows who has it
        assert (
            await post_event(url, slack.press(root, AGENT, TAKE_ACTION), SIGNING_SECRET)
        ).status == 200
        await slack.wait_for(lambda: buttons(current(slack, root)) == [RESOLVE_ACTION], 10)
        assert "Taken by Grace" in shown(current(slack, root))

        # the agent's reply reaches the user, once, even when Slack sends it again
        reply = slack.user_posts(TEAM, AGENT, AGENTS, "Hi Ada, Grace here.", thread_ts=root.ts)
        assert (await send_to(service, reply, eid="EvAGENT1")).status == 200
        await slack.wait_for(lambda: "Grace: Hi Ada, Grace here." in dm_texts(slack), 10)
        again = await send_to(
            service, reply, eid="EvAGENT1", retry_num=1, retry_reason="http_timeout"
        )
        assert again.status == 200, again

        # the user's answer appears in the thread, not at Parloa
        assert (await send_to(service, dm_message(USER, "thanks!", channel=DM))).status == 200
        await slack.wait_for(
            lambda: any(shown(m) == "*ada*\nthanks!" for m in slack.thread(AGENTS, root.ts)), 10
        )
        assert dm_texts(slack).count("Grace: Hi Ada, Grace here.") == 1

        # Resolve: the user is told, the root shows the outcome, the bot answers again
        resolve = slack.press(current(slack, root), AGENT, RESOLVE_ACTION)
        assert (await post_event(url, resolve, SIGNING_SECRET)).status == 200
        await slack.wait_for(
            lambda: "The agent has closed the conversation. Thank you!" in dm_texts(slack), 10
        )
        await slack.wait_for(lambda: buttons(current(slack, root)) == [], 10)
        assert "Resolved (taken by Grace)" in shown(current(slack, root))
        assert len(sim.state.requests) == parloa_calls
        assert (await send_to(service, dm_message(USER, "back again", channel=DM))).status == 200
        await slack.wait_for(lambda: "You said: back again" in dm_texts(slack), 10)
        assert dm_texts(slack).count("Grace: Hi Ada, Grace here.") == 1
        thread = [shown(m) for m in slack.thread(AGENTS, root.ts)]
        assert "*ada*\nback again" not in thread


OTHER_TEAM = "T0SHOP"
OTHER_TOKEN = "xoxb-3333333333333-4444444444444-otherTokenSecretVal1"
CUSTOMER = "U0CUST"
CUSTOMER_DM = "D0CUST"


async def test_a_user_of_another_workspace_and_resolve_typed_in_the_thread(
    database_url: str, slack: FakeSlack, sim: RunningSimulator
) -> None:
    """The customer writes to the bot in their own workspace (channel "cust"); the agents
    work in theirs (channel "sl"), and end it with "/resolve" in the thread."""
    slack.add_workspace(OTHER_TEAM, bot_token=OTHER_TOKEN, bot_user_id="U0BOT2")
    slack.add_user(OTHER_TEAM, CUSTOMER, real_name="Charles Babbage", display_name="charles")
    slack.add_channel(OTHER_TEAM, CUSTOMER_DM, user=CUSTOMER)
    customer = {
        "name": "cust",
        "type": "slack",
        "bot_token": OTHER_TOKEN,
        "signing_secret": SIGNING_SECRET,
        "api_base_url": slack.api_url,
        "channel_messages_per_second": 50,
    }
    async with bridge(database_url, slack, sim, show_agent_name=False, extra=customer) as service:
        url = f"{service_url(service)}/slack/cust/events"

        async def say(text: str) -> None:
            body = event_callback(
                OTHER_TEAM, dm_message(CUSTOMER, text, channel=CUSTOMER_DM), bot_user_id="U0BOT2"
            )
            assert (await post_event(url, body, SIGNING_SECRET)).status == 200

        def seen() -> list[str]:
            return [m.text or "" for m in slack.posted(channel=CUSTOMER_DM)]

        await say("I want to talk to an agent")
        root = await opened_thread(service, slack)
        assert root.team_id == TEAM and root.token == BOT_TOKEN  # the agents' workspace
        assert "*charles on cust asks for a person*" in shown(root)
        assert "> charles: I want to talk to an agent" in shown(root)

        reply = slack.user_posts(TEAM, AGENT, AGENTS, "How can I help?", thread_ts=root.ts)
        assert (await send_to(service, reply)).status == 200
        await slack.wait_for(lambda: "How can I help?" in seen(), 10)  # no name: configured so
        # the implicit take shows on the root
        await slack.wait_for(lambda: "Taken by Grace" in shown(current(slack, root)), 10)

        done = slack.user_posts(TEAM, AGENT, AGENTS, "/resolve", thread_ts=root.ts)
        assert (await send_to(service, done)).status == 200
        await slack.wait_for(
            lambda: "The agent has closed the conversation. Thank you!" in seen(), 10
        )
        await slack.wait_for(lambda: buttons(current(slack, root)) == [], 10)
        assert "/resolve" not in seen()

        # a late reply in the ended thread: only the agent is told
        late = slack.user_posts(TEAM, AGENT, AGENTS, "anything else?", thread_ts=root.ts)
        assert (await send_to(service, late)).status == 200
        note = await slack.wait_for(lambda: slack.ephemerals, 10)
        assert note[0].user == AGENT and note[0].thread_ts == root.ts
        await say("hello bot")
        await slack.wait_for(lambda: "You said: hello bot" in seen(), 10)
        assert "anything else?" not in seen()


async def test_no_agent_in_time_closes_the_thread(
    database_url: str, slack: FakeSlack, sim: RunningSimulator
) -> None:
    async with bridge(database_url, slack, sim, agent_timeout_seconds=0.2) as service:
        assert (await send_to(service, dm_message(USER, "human!", channel=DM))).status == 200
        root = await opened_thread(service, slack)
        as_first_shown = replace(root, blocks=copy.deepcopy(root.blocks))
        engine = service.engine
        assert engine is not None
        notice = "Sorry, nobody is available right now. You are back with the assistant."

        async def timed_out() -> bool:
            await engine.run_housekeeping()  # the engine's periodic scan, now
            return notice in dm_texts(slack)

        await poll_until(timed_out, within=10)
        await slack.wait_for(lambda: buttons(current(slack, root)) == [], 10)
        assert "*Status*\nNo agent took it in time" in shown(current(slack, root))
        said = "No agent took it in time. The user is back with the bot."
        await slack.wait_for(
            lambda: [shown(m) for m in slack.thread(AGENTS, root.ts)][1:] == [said], 10
        )
        # Take on the stale root (an old client view): refused, told to the agent only
        take = slack.press(as_first_shown, AGENT, TAKE_ACTION)
        assert (
            await post_event(f"{service_url(service)}/slack/sl/events", take, SIGNING_SECRET)
        ).status == 200
        await slack.wait_for(lambda: slack.ephemerals, 10)


WEBHOOK_SECRET = "webhook-secret-0123456789abcdef"


class Integrator:
    """The webhook channel's other end: receives the replies (deliver_url)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.texts.extend(e["content"] for e in body["elements"] if e["type"] == "text")
        self.changed.set()
        return web.json_response({"message_id": f"m-{len(self.texts)}"})

    async def wait_for(self, text: str) -> None:
        async with asyncio.timeout(10):
            while text not in self.texts:
                self.changed.clear()
                await self.changed.wait()


async def test_a_webhook_user_handed_over_to_the_slack_desk(
    database_url: str, slack: FakeSlack, sim: RunningSimulator
) -> None:
    integrator = Integrator()
    app = web.Application()
    app.router.add_post("/deliver", integrator.handle)
    async with serving(app) as receiver:
        web_channel = {
            "name": "web",
            "type": "webhook",
            "secret": WEBHOOK_SECRET,
            "deliver_url": f"{receiver}/deliver",
        }
        async with (
            bridge(database_url, slack, sim, extra=web_channel) as service,
            aiohttp.ClientSession(trust_env=False) as http,
        ):
            count = iter(range(1, 100))

            async def say(text: str) -> None:
                body = {
                    "event_id": f"ev-{next(count)}",
                    "user_id": "zoe-1",
                    "text": text,
                    "context": {"userName": "Zoe", "language": "fr"},
                }
                raw = json.dumps(body).encode()
                url = f"{service_url(service)}/webhook/web/events"
                async with http.post(
                    url, data=raw, headers=webhook_signed_headers(WEBHOOK_SECRET, raw)
                ) as r:
                    assert r.status == 200, await r.text()

            await say("I need a human")
            root = await opened_thread(service, slack)
            assert "*Zoe on web asks for a person*" in shown(root)
            assert "*Language*\nfr" in shown(root) and "> Zoe: I need a human" in shown(root)
            await integrator.wait_for("I am connecting you with a person. Please hold on.")

            reply = slack.user_posts(TEAM, AGENT, AGENTS, "Bonjour Zoe!", thread_ts=root.ts)
            assert (await send_to(service, reply)).status == 200
            await integrator.wait_for("Grace: Bonjour Zoe!")
            await say("merci")
            await slack.wait_for(
                lambda: "*Zoe*\nmerci" in [shown(m) for m in slack.thread(AGENTS, root.ts)], 10
            )
            resolve = slack.press(current(slack, root), AGENT, RESOLVE_ACTION)
            assert (
                await post_event(f"{service_url(service)}/slack/sl/events", resolve, SIGNING_SECRET)
            ).status == 200
            await integrator.wait_for("The agent has closed the conversation. Thank you!")
            await say("and now?")
            await integrator.wait_for("You said: and now?")
            assert integrator.texts.count("Grace: Bonjour Zoe!") == 1
