"""The console desk and the agent inbox's routes (bridge/handover/console.py,
bridge/admin/handovers.py): the pure parts; the routes over real HTTP on 127.0.0.1 behind the
admin token, against an in-memory Agents and the store's reads in memory; the event stream;
and at the end the whole path with the real Service and the simulator on SQLite and
PostgreSQL: a webhook user asks for a human, the agent takes, replies (a retried reply reaches
the user once), resolves, and the user is back with the bot.

Nothing waits on a sleep: tests wait on the stream's events, the receiver's deliveries, or
poll the API against a deadline."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web

from bridge.admin import AdminDeps
from bridge.admin.api import BadRequest, admin_routes
from bridge.admin.handovers import (
    ActRequest,
    EventStreams,
    act_event_id,
    handover_routes,
    handover_transcript,
    parse_act,
)
from bridge.channel import (
    DeliveryRetryable,
    DeskAction,
    IntakeRefused,
    IntakeUnavailable,
)
from bridge.config import BridgeConfig, HandoverConfig
from bridge.devtools.simulator import RunningSimulator
from bridge.handover.console import CHANGED_KEY, ConsoleDesk
from bridge.handover.desk import DeskDelivery, HandoverEnded, HandoverUnknown
from bridge.store import Store
from bridge.vocabulary import (
    Conversation,
    ConversationState,
    Handover,
    HandoverOutcome,
    HandoverState,
    Turn,
)
from tests.handover.support import MemoryAgents, handover_record
from tests.support.config import config_data, service_config
from tests.support.intake import MemoryState
from tests.support.net import serving
from tests.support.process import CHANNEL, Receiver, Sender, webhook_channel
from tests.support.service import running_service, service_url
from tests.support.waiting import poll_until

TOKEN = "console-desk-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BOT = "demo"
T0 = 1_700_000_000.0


# --- the pure parts -----------------------------------------------------------------------------


def handover(key: str = "h1", **fields: Any) -> Handover:
    base: dict[str, Any] = {
        "conversation_id": 7,
        "bot": BOT,
        "reason": "the user asked for a person",
        "queue": "support",
        "summary": "wants a refund",
        "started_at": T0,
    }
    return handover_record(key, **{**base, **fields})


def test_an_acts_body_is_read_strictly() -> None:
    wanted = parse_act({"text": "  hello ", "agent": {"name": " Anna "}}, DeskAction.MESSAGE)
    assert wanted == ActRequest("hello", "Anna", None)
    assert parse_act({}, DeskAction.RESOLVE) == ActRequest("", None, None)
    assert parse_act({"event_id": "e1"}, DeskAction.TAKE).event_id == "e1"
    for body, action, reason in (
        ({}, DeskAction.MESSAGE, "text"),
        ({"text": "   "}, DeskAction.MESSAGE, "text"),
        ({"text": 5}, DeskAction.MESSAGE, "text: a string"),
        ({"text": "x" * 4001}, DeskAction.MESSAGE, "longer than 4000"),
        ({"text": "a\x00b"}, DeskAction.MESSAGE, "not a text"),
        ({"text": "hi"}, DeskAction.TAKE, "unknown field"),
        ({"text": "hi", "to": "x"}, DeskAction.MESSAGE, "unknown field"),
        ({"text": "hi", "agent": "Anna"}, DeskAction.MESSAGE, "agent"),
        ({"text": "hi", "agent": {"name": "A" * 101}}, DeskAction.MESSAGE, "longer than 100"),
        ({"text": "hi", "event_id": "e" * 201}, DeskAction.MESSAGE, "longer than 200"),
    ):
        with pytest.raises(BadRequest, match=reason):
            parse_act(body, action)


def test_an_acts_id_is_the_pages_else_one_per_take_or_resolve() -> None:
    given = ActRequest("hi", "Anna", "page-1")
    assert act_event_id("h1", DeskAction.MESSAGE, given, "fresh") == "console:page-1"
    bare = ActRequest("hi", "Anna", None)
    assert act_event_id("h1", DeskAction.MESSAGE, bare, "fresh") == "console:fresh"
    assert act_event_id("h1", DeskAction.TAKE, bare, "x") == "console:take:h1:Anna"
    assert act_event_id("h1", DeskAction.RESOLVE, bare, "x") == "console:resolve:h1"


def test_the_transcript_is_some_turns_before_and_the_handovers_own() -> None:
    before = [Turn("user", f"u{n}", T0 - 100 + n) for n in range(15)]
    during = [Turn("user", "help", T0 + 1), Turn("agent", "hi", T0 + 2)]
    after = [Turn("bot", "welcome back", T0 + 20)]
    shown = handover_transcript(handover(), [*before, *during], during)
    assert [t.text for t in shown] == [f"u{n}" for n in range(5, 15)] + ["help", "hi"]
    ended = handover(state=HandoverState.ENDED, ended_at=T0 + 10)
    shown = handover_transcript(ended, [*before[-2:], *during, *after], [*during, *after])
    assert [t.text for t in shown] == ["u13", "u14", "help", "hi"]


# --- the desk -----------------------------------------------------------------------------------


def delivery(key: str = "h1", kind: str = "handover.user_message") -> DeskDelivery:
    async def progress(_part: int, _message_id: str | None) -> None:
        return None

    event = {"type": kind, "handover_id": key, "event_id": f"{key}:1:x", "at": T0}
    return DeskDelivery(11, handover(key), event, progress)


async def test_the_desk_announces_each_event_to_every_console() -> None:
    agents = MemoryAgents()
    desk = ConsoleDesk(BOT, HandoverConfig(desk="console"), clock=lambda: T0 + 5)
    assert desk.kind == "console"
    with pytest.raises(DeliveryRetryable):  # not started yet: the engine tries again later
        await desk.deliver(delivery())
    await desk.start(agents)
    woken: list[int] = []
    agents.state.watch(CHANGED_KEY, lambda: woken.append(1))
    await desk.deliver(delivery("h2", "handover.started"))
    assert woken == [1]
    assert json.loads(agents.state.values[CHANGED_KEY]) == {
        "bot": BOT,
        "handover": "h2",
        "type": "handover.started",
        "outbox_id": 11,
        "at": T0 + 5,
    }
    assert desk.status() == {"running": True, "events": 1}
    await desk.stop()
    await desk.stop()  # idempotent
    with pytest.raises(DeliveryRetryable):
        await desk.deliver(delivery())


async def test_a_state_that_cannot_be_written_is_a_retryable_delivery() -> None:
    class Broken(MemoryState):
        async def put(self, key: str, value: str, *, announce: bool = False) -> None:
            raise OSError("database away")

    agents = MemoryAgents(state=Broken())
    desk = ConsoleDesk(BOT, HandoverConfig(desk="console"))
    await desk.start(agents)
    with pytest.raises(DeliveryRetryable, match="database away"):
        await desk.deliver(delivery())


# --- the routes against memory ------------------------------------------------------------------


@dataclass
class MemoryReads:
    """The store's reads the inbox makes, over lists in memory."""

    handover_rows: list[Handover] = field(default_factory=list)
    conversations: dict[int, Conversation] = field(default_factory=dict)
    turns: dict[int, list[Turn]] = field(default_factory=dict)
    asked_bots: list[Collection[str] | None] = field(default_factory=list)

    async def handovers(
        self,
        *,
        open_only: bool = False,
        bots: Collection[str] | None = None,
        conversation_id: int | None = None,
        limit: int = 100,
    ) -> list[Handover]:
        self.asked_bots.append(bots)
        rows = sorted(self.handover_rows, key=lambda h: h.id, reverse=True)
        rows = [h for h in rows if (h.open or not open_only) and (bots is None or h.bot in bots)]
        return rows[:limit]

    async def handover(self, key: str) -> Handover | None:
        return next((h for h in self.handover_rows if h.key == key), None)

    async def conversation_by_id(self, conversation_id: int) -> Conversation | None:
        return self.conversations.get(conversation_id)

    async def recent_turns(
        self, conversation_id: int, limit: int, since: float | None = None
    ) -> list[Turn]:
        turns = [t for t in self.turns.get(conversation_id, []) if since is None or t.at >= since]
        return turns[-limit:]


def conversation(cid: int, user: str) -> Conversation:
    return Conversation(
        id=cid,
        channel="web",
        conversation_key=f"c-{user}",
        requester_id=f"web:{user}",
        state=ConversationState.HANDED_OVER,
        session_id=None,
        parloa_conversation_id=None,
        end_reason=None,
        address=None,
        last_activity_at=T0 + 3,
    )


@dataclass
class Inbox:
    url: str
    agents: MemoryAgents
    reads: MemoryReads
    streams: EventStreams
    http: aiohttp.ClientSession

    async def get(self, path: str, auth: bool = True) -> tuple[int, Any]:
        headers = AUTH if auth else {}
        async with self.http.get(f"{self.url}{path}", headers=headers) as response:
            return response.status, await response.json()

    async def post(self, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
        async with self.http.post(f"{self.url}{path}", data=data, headers=AUTH) as response:
            return response.status, await response.json()


@asynccontextmanager
async def inbox(
    agents: MemoryAgents | None = None,
    console_bots: frozenset[str] = frozenset({BOT}),
    keepalive: float = 15.0,
) -> AsyncIterator[Inbox]:
    reads = MemoryReads(
        handover_rows=[
            handover("h1", id=1),
            handover("h2", id=2, conversation_id=8, state=HandoverState.TAKEN, taken_by="Anna"),
            handover(
                "h3",
                id=3,
                state=HandoverState.ENDED,
                ended_at=T0 + 50,
                outcome=HandoverOutcome.RESOLVED,
            ),
            handover("other", id=4, bot="sales", desk="webhook"),
        ],
        conversations={7: conversation(7, "ada"), 8: conversation(8, "bob")},
        turns={
            7: [
                Turn("user", "hi", T0 - 10),
                Turn("bot", "You said: hi", T0 - 9),
                Turn("user", "a human please", T0 - 1),
                Turn("bot", "Let me get a colleague.", T0),
                Turn("user", "are you there?", T0 + 2),
            ]
        },
    )
    if agents is None:
        agents = MemoryAgents(reads.handover_rows)
    deps = AdminDeps(
        store=cast(Store, reads),
        token=TOKEN,
        channel_bots={"web": BOT},
        adapters={},
        notify=lambda _cid: None,
        agents=agents,
        console_bots=console_bots,
    )
    streams = EventStreams()
    app = web.Application()
    app.add_routes(
        admin_routes(deps, extra=handover_routes(deps, streams, keepalive_seconds=keepalive))
    )
    async with (
        serving(app) as url,
        aiohttp.ClientSession(trust_env=False, timeout=aiohttp.ClientTimeout(total=10)) as http,
    ):
        try:
            yield Inbox(url, agents, reads, streams, http)
        finally:
            await streams.close()


async def test_the_list_shows_the_console_bots_open_handovers_newest_first() -> None:
    async with inbox() as box:
        assert (await box.get("/admin/api/handovers", auth=False))[0] == 401
        status, data = await box.get("/admin/api/handovers")
        assert status == 200 and data["enabled"] is True
        assert [h["key"] for h in data["handovers"]] == ["h2", "h1"]
        assert box.reads.asked_bots[-1] == frozenset({BOT})
        taken = data["handovers"][0]
        assert taken["state"] == "taken" and taken["taken_by"] == "Anna"
        assert taken["conversation"] == {
            "id": 8,
            "channel": "web",
            "user": "bob",
            "state": "handed_over",
            "last_activity_at": T0 + 3,
        }
        status, data = await box.get("/admin/api/handovers?all=1")
        assert [h["key"] for h in data["handovers"]] == ["h3", "h2", "h1"]
        assert data["handovers"][0]["outcome"] == "resolved"
        assert [h["key"] for h in (await box.get("/admin/api/handovers?limit=1"))[1]["handovers"]]
        for bad in ("?all=maybe", "?limit=0", "?limit=x", "?sort=new", "?all=1&all=0"):
            status, data = await box.get(f"/admin/api/handovers{bad}")
            assert status == 400, bad


async def test_without_a_console_desk_the_inbox_says_so() -> None:
    async with inbox(console_bots=frozenset()) as box:
        status, data = await box.get("/admin/api/handovers")
        assert (status, data) == (200, {"enabled": False, "handovers": []})
        assert (await box.get("/admin/api/handovers/events"))[0] == 404
        assert (await box.post("/admin/api/handovers/h1/take", {}))[0] == 404


async def test_one_handover_with_its_conversation_and_transcript() -> None:
    async with inbox() as box:
        status, data = await box.get("/admin/api/handovers/h1")
        assert status == 200
        assert data["handover"]["key"] == "h1" and data["handover"]["reason"]
        assert data["conversation"]["user"] == "ada"
        assert [(t["role"], t["text"]) for t in data["transcript"]] == [
            ("user", "hi"),
            ("bot", "You said: hi"),
            ("user", "a human please"),
            ("bot", "Let me get a colleague."),
            ("user", "are you there?"),
        ]
        for missing in ("nope", "other", "x" * 300):  # another desk's is not the console's
            assert (await box.get(f"/admin/api/handovers/{missing}"))[0] == 404


async def test_acts_reach_the_agents_and_a_retried_reply_is_one_act() -> None:
    async with inbox() as box:
        reply = {"text": "Hello, I am Anna", "agent": {"name": "Anna"}, "event_id": "p-1"}
        assert await box.post("/admin/api/handovers/h1/message", reply) == (
            200,
            {"status": "accepted", "event_id": "console:p-1"},
        )
        assert await box.post("/admin/api/handovers/h1/message", reply) == (
            200,
            {"status": "duplicate", "event_id": "console:p-1"},
        )
        # without an id of the page's: each post is a new message
        bare = {"text": "More", "agent": {"name": "Anna"}}
        ids = {(await box.post("/admin/api/handovers/h1/message", bare))[1]["event_id"]}
        ids.add((await box.post("/admin/api/handovers/h1/message", bare))[1]["event_id"])
        assert len(ids) == 2
        assert (await box.post("/admin/api/handovers/h1/take", {"agent": {"name": "Anna"}}))[1] == {
            "status": "accepted",
            "event_id": "console:take:h1:Anna",
        }
        status, data = await box.post("/admin/api/handovers/h1/resolve", raw=b"")
        assert (status, data["status"]) == (200, "accepted")
        acts = [(c.action, c.text, c.agent_name, c.agent_id) for _, c in box.agents.acts]
        assert acts == [
            (DeskAction.MESSAGE, "Hello, I am Anna", "Anna", "console:Anna"),
            (DeskAction.MESSAGE, "More", "Anna", "console:Anna"),
            (DeskAction.MESSAGE, "More", "Anna", "console:Anna"),
            (DeskAction.TAKE, "", "Anna", "console:Anna"),
            (DeskAction.RESOLVE, "", None, "console"),
        ]
        assert {bot for bot, _ in box.agents.acts} == {BOT}


async def test_what_goes_wrong_becomes_the_status() -> None:
    async with inbox() as box:
        path = "/admin/api/handovers/h1/message"
        body = {"text": "hi", "agent": {"name": "Anna"}}
        assert (await box.post("/admin/api/handovers/h3/message", body))[0] == 409  # ended
        assert (await box.post("/admin/api/handovers/other/message", body))[0] == 404
        assert (await box.post("/admin/api/handovers/nope/take", {}))[0] == 404
        for failure, status in (
            (HandoverUnknown("gone"), 404),
            (HandoverEnded("over"), 409),
            (IntakeRefused("too long"), 400),
            (IntakeUnavailable("database away"), 503),
        ):
            box.agents.fail = failure
            async with box.http.post(f"{box.url}{path}", json=body, headers=AUTH) as response:
                assert response.status == status, failure
                if status == 503:
                    assert response.headers["Retry-After"] == "5"
        for raw in (b"{", b"[]", b"\xff", b'{"text": ""}', b"x" * (65 * 1024)):
            assert (await box.post(path, raw=raw))[0] == 400, raw[:10]
        assert (await box.post(f"{path}?x=1", body))[0] == 400
        assert box.agents.acts == []


# --- the event stream ---------------------------------------------------------------------------


async def next_event(response: aiohttp.ClientResponse, within: float = 5.0) -> tuple[str, Any]:
    """The next event of a stream (comments as ("comment", text)); ("eof", None) at its end."""
    async with asyncio.timeout(within):
        while True:
            block = await response.content.readuntil(b"\n\n")
            if not block:
                return "eof", None
            text = block.decode().strip("\n")
            if text.startswith(":"):
                return "comment", text[1:].strip()
            fields = dict(line.split(": ", 1) for line in text.split("\n") if ": " in line)
            if "event" in fields:
                return fields["event"], json.loads(fields.get("data", "{}"))


async def test_the_stream_says_changed_on_each_announcement_and_ends_on_close() -> None:
    async with inbox() as box:
        assert (
            await box.http.get(f"{box.url}/admin/api/handovers/events")
        ).status == 401  # the token, as every route
        async with box.http.get(f"{box.url}/admin/api/handovers/events", headers=AUTH) as stream:
            assert stream.status == 200
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            assert stream.headers["Cache-Control"] == "no-cache"
            assert await next_event(stream) == ("ready", {})
            assert len(box.streams) == 1
            desk = ConsoleDesk(BOT, HandoverConfig(desk="console"), clock=lambda: T0)
            await desk.start(box.agents)
            await desk.deliver(delivery("h1", "handover.started"))
            name, data = await next_event(stream)
            assert name == "changed"
            assert data == {
                "bot": BOT,
                "handover": "h1",
                "type": "handover.started",
                "outbox_id": 11,
                "at": T0,
            }
            await desk.deliver(delivery("h1", "handover.user_message"))
            assert (await next_event(stream))[1]["type"] == "handover.user_message"
            started = time.monotonic()
            await box.streams.close()
            assert await next_event(stream) == ("eof", None)
            assert time.monotonic() - started < 2
        # the watcher was let go; a closed bridge takes no new stream
        assert box.agents.state.watchers[CHANGED_KEY] == []
        async with box.http.get(f"{box.url}/admin/api/handovers/events", headers=AUTH) as late:
            assert late.status == 503


async def test_a_quiet_stream_keeps_alive_and_catches_a_missed_change() -> None:
    async with (
        inbox(keepalive=0.05) as box,
        box.http.get(f"{box.url}/admin/api/handovers/events", headers=AUTH) as stream,
    ):
        assert (await next_event(stream))[0] == "ready"
        assert await next_event(stream) == ("comment", "keep-alive")
        # a change put without a wake-up reaching this replica: the next tick reads it
        await box.agents.state.put(CHANGED_KEY, json.dumps({"handover": "h9", "x": 1}))
        event = await next_event(stream)
        while event[0] == "comment":
            event = await next_event(stream)
        assert event == ("changed", {"handover": "h9"})
        # the state unreadable for a moment: the stream goes on
        box.agents.state.fail_reads = 2
        assert (await next_event(stream))[0] == "comment"


async def test_a_page_that_goes_away_lets_its_watcher_go() -> None:
    async with inbox() as box:  # long before the next keep-alive
        async with box.http.get(f"{box.url}/admin/api/handovers/events", headers=AUTH) as stream:
            assert (await next_event(stream))[0] == "ready"
        watchers = box.agents.state.watchers[CHANGED_KEY]
        # the stream looks at its connection twice a second
        await poll_until(lambda: not watchers and not len(box.streams), within=5)


# --- the whole path -----------------------------------------------------------------------------


def console_config(database_url: str, sim_url: str, deliver_url: str) -> BridgeConfig:
    """A bridge with a webhook channel whose bot hands over to the console."""
    data = config_data(
        database_url, sim_url, webhook_channel(deliver_url), bot={"handover": {"desk": "console"}}
    )
    data["admin"] = {"token": TOKEN}
    return service_config(data)


async def test_a_webhook_user_is_handed_over_to_the_console_and_back(
    sim: RunningSimulator, database_url: str
) -> None:
    receiver = Receiver()
    await receiver.start()
    config = console_config(database_url, sim.url, receiver.url)
    try:
        async with (
            running_service(config) as service,
            aiohttp.ClientSession(trust_env=False) as http,
            Sender([f"{service_url(service)}/webhook/{CHANNEL}/events"]) as sender,
        ):
            api = f"{service_url(service)}/admin/api/handovers"

            async def say(text: str) -> None:
                await sender.send("ada", text, deadline=time.monotonic() + 10)

            def got(text: str) -> int:
                return sum(r.texts.count(text) for r in receiver.deliveries)

            async def act(what: str, body: Mapping[str, Any]) -> Any:
                async with http.post(f"{api}/{key}/{what}", json=body, headers=AUTH) as resp:
                    assert resp.status == 200, await resp.text()
                    return await resp.json()

            async def read(path: str = "") -> Any:
                async with http.get(f"{api}{path}", headers=AUTH) as resp:
                    assert resp.status == 200, await resp.text()
                    return await resp.json()

            await say("hello")
            await receiver.wait_for(lambda r: got("You said: hello") == 1, within=15)
            assert (await read())["handovers"] == []

            async with http.get(f"{api}/events", headers=AUTH) as stream:
                assert (await next_event(stream))[0] == "ready"
                # The user asks for a person: the bot's text, the notice, a live change.
                await say("Can I talk to a human?")
                name, change = await next_event(stream, within=15)
                assert (name, change["type"]) == ("changed", "handover.started")
                key = change["handover"]
                await receiver.wait_for(
                    lambda r: got(config.messages.handover_started) == 1, within=15
                )
                assert got("Let me get a colleague.") == 1
                (listed,) = (await read())["handovers"]
                assert listed["key"] == key and listed["state"] == "open"
                assert listed["reason"] == "the user asked for a person"
                assert listed["conversation"]["user"] == "ada"

                # Her next message goes to the console, not to Parloa.
                asked = [r.text for r in sim.state.requests if r.event_type == "message"]
                await say("my card was charged twice")
                # A wake-up may repeat the last change (handover.started): skip to this one.
                name, change = await next_event(stream, within=15)
                while name == "changed" and change["type"] == "handover.started":
                    name, change = await next_event(stream, within=15)
                assert (name, change["type"]) == ("changed", "handover.user_message")
                detail = await read(f"/{key}")
                turns = [(t["role"], t["text"]) for t in detail["transcript"]]
                assert turns.index(("user", "hello")) < turns.index(("bot", "You said: hello"))
                assert turns[-1] == ("user", "my card was charged twice")

                # Taken, then a reply the page sends twice (its answer was lost): once.
                assert (await act("take", {"agent": {"name": "Anna"}}))["status"] == "accepted"
                await poll_until(lambda: _state(read(f"/{key}"), "taken"), within=15)
                reply = {"text": "Hi, Anna here.", "agent": {"name": "Anna"}, "event_id": "r-1"}
                assert (await act("message", reply))["status"] == "accepted"
                assert (await act("message", reply))["status"] == "duplicate"
                await receiver.wait_for(lambda r: got("Anna: Hi, Anna here.") >= 1, within=15)
                detail = await read(f"/{key}")
                assert detail["handover"]["taken_by"] == "Anna"
                assert ("agent", "Hi, Anna here.") in [
                    (t["role"], t["text"]) for t in detail["transcript"]
                ]

                # Resolved: the user is told, and is back with the bot.
                assert (await act("resolve", {"agent": {"name": "Anna"}}))["status"] == "accepted"
                await receiver.wait_for(
                    lambda r: got(config.messages.handover_ended) == 1, within=15
                )
                # A new message after the end is refused (a retry of r-1 would be a duplicate).
                late_reply = {**reply, "event_id": "r-2"}
                async with http.post(f"{api}/{key}/message", json=late_reply, headers=AUTH) as late:
                    assert late.status == 409
                assert (await read())["handovers"] == []
                ended = (await read("?all=1"))["handovers"][0]
                assert (ended["state"], ended["outcome"]) == ("ended", "resolved")

            await say("thanks, one more thing")
            await receiver.wait_for(
                lambda r: got("You said: thanks, one more thing") == 1, within=15
            )
            messages = [r.text for r in sim.state.requests if r.event_type == "message"]
            assert messages == [*asked, "thanks, one more thing"]
            assert got("Anna: Hi, Anna here.") == 1
            order = [
                "You said: hello",
                "Let me get a colleague.",
                config.messages.handover_started,
                "Anna: Hi, Anna here.",
                config.messages.handover_ended,
                "You said: thanks, one more thing",
            ]
            texts = [t for r in receiver.deliveries for t in r.texts]
            assert [t for t in texts if t in order] == order
    finally:
        await receiver.close()


async def _state(detail: Any, state: str) -> bool:
    return bool((await detail)["handover"]["state"] == state)


async def test_every_replicas_console_hears_of_a_change(
    sim: RunningSimulator, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("replicas share a PostgreSQL database (SQLite serves one process)")
    receiver = Receiver()
    await receiver.start()
    config = console_config(database_url, sim.url, receiver.url)
    try:
        async with (
            running_service(config) as one,
            running_service(config) as two,
            aiohttp.ClientSession(trust_env=False) as http,
            Sender([f"{service_url(one)}/webhook/{CHANNEL}/events"]) as sender,
        ):
            streams = [
                await http.get(f"{service_url(s)}/admin/api/handovers/events", headers=AUTH)
                for s in (one, two)
            ]
            try:
                for stream in streams:
                    assert (await next_event(stream))[0] == "ready"
                await sender.send("ada", "a human, please", deadline=time.monotonic() + 10)
                # both hear it long before a keep-alive: one of them from the other replica
                for stream in streams:
                    name, change = await next_event(stream, within=10)
                    assert (name, change["type"]) == ("changed", "handover.started")
                key = change["handover"]
                reply = {"text": "Hello from two", "agent": {"name": "Bo"}, "event_id": "r-2"}
                url = f"{service_url(two)}/admin/api/handovers/{key}/message"
                async with http.post(url, json=reply, headers=AUTH) as resp:
                    assert resp.status == 200, await resp.text()
                await receiver.wait_for(
                    lambda r: any("Bo: Hello from two" in d.texts for d in r.deliveries),
                    within=15,
                )
            finally:
                for stream in streams:
                    stream.close()
    finally:
        await receiver.close()
