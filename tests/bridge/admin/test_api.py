"""The admin API (bridge/admin/api.py) served on 127.0.0.1 over a real store, on SQLite and
PostgreSQL: the token, the conversation list and its cursor, each filter, a timeline driven
by the real engine against the simulator, dead letters, the erase, statistics, transcripts,
and bad input of every kind answered 400 (a database gone: 503)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.admin import AdminDeps
from bridge.admin.api import MAX_BODY_BYTES, TRANSCRIPT_BATCH, admin_routes
from bridge.devtools.faults import Faults
from bridge.devtools.simulator import RunningSimulator
from bridge.store import Store
from bridge.store.schema import conversations, inbox
from bridge.vocabulary import DeadLetter, InboundKind, NewEvent, Step
from tests.support.database import store_for
from tests.support.engine import CHANNEL, harness
from tests.support.net import free_port, serving
from tests.support.rows import rows, set_columns
from tests.support.waiting import poll_until

TOKEN = "admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
API = "/admin/api"


@dataclass
class Answer:
    status: int
    body: Any
    headers: Any


@dataclass
class Client:
    session: aiohttp.ClientSession
    notified: list[int]

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        async with self.session.request(
            method,
            path,
            json=body,
            data=data,
            headers=AUTH if headers is None else headers,
        ) as response:
            raw = await response.read()
            parsed: Any = raw.decode()
            if response.content_type == "application/json":
                parsed = json.loads(raw)
            return Answer(response.status, parsed, response.headers)

    async def get(self, path: str, **params: Any) -> Any:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        answer = await self.call("GET", f"{path}?{query}" if query else path)
        assert answer.status == 200, (path, answer.status, answer.body)
        return answer.body


@asynccontextmanager
async def api(
    store: Store,
    *,
    token: str | None = TOKEN,
    notify: Callable[[int], None] | None = None,
    clock: Callable[[], float] | None = None,
) -> AsyncIterator[Client]:
    notified: list[int] = []

    def wake(conversation_id: int) -> None:
        notified.append(conversation_id)
        if notify is not None:
            notify(conversation_id)

    deps = AdminDeps(
        store=store,
        token=token,
        channel_bots={"web": "bot", CHANNEL: "bot"},
        adapters={},
        notify=wake,
        **({"clock": clock} if clock is not None else {}),
    )
    app = web.Application()
    app.add_routes(admin_routes(deps))
    async with serving(app) as url, aiohttp.ClientSession(base_url=url) as session:
        yield Client(session, notified)


async def conversation(
    store: Store, key: str, *, channel: str = "web", user: str | None = None, text: str = "hi"
) -> int:
    """A conversation with one pending event, as intake stores it."""
    _, cid = await store.accept(
        channel=channel,
        event_id=f"{channel}-{key}-{text}",
        conversation_key=key,
        requester_id=f"{channel}:{user or 'u-' + key}",
        kind=InboundKind.TEXT,
        text=text,
        address=None,
        context=None,
    )
    return cid


async def kill_head_event(store: Store, cid: int, reason: str = "BadRequest: nope") -> int:
    """The conversation's next event made a dead letter, as a worker would."""
    work = await store.claim(cid, "me", 30)
    assert work is not None and work.inbox is not None
    await store.commit(
        cid, "me", Step(inbox_id=work.inbox.id, outcome=DeadLetter(reason, 1.0, 1)), "web"
    )
    await store.finish(cid, "me", 30)
    return work.inbox.id


ROUTES = [
    ("GET", f"{API}/conversations"),
    ("GET", f"{API}/conversations/1"),
    ("GET", f"{API}/conversations/1/transcript"),
    ("GET", f"{API}/dead-letters"),
    ("POST", f"{API}/dead-letters/retry"),
    ("POST", f"{API}/dead-letters/discard"),
    ("DELETE", f"{API}/users/web/u1"),
    ("GET", f"{API}/stats"),
]


# --- the token ------------------------------------------------------------------------------


async def test_every_route_refuses_a_request_without_the_token(store: Store) -> None:
    await conversation(store, "k1", user="u1")
    refused = [
        {},
        {"Authorization": "Bearer wrong-token-0123456789abc"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ]
    async with api(store) as client:
        for method, path in ROUTES:
            for headers in refused:
                answer = await client.call(method, path, body={"ids": [1]}, headers=headers)
                assert answer.status == 401, (method, path, headers)
                assert "unauthorized" in answer.body["error"]
                assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        # nothing was done for them: the user is still there
        assert (await client.get(f"{API}/conversations"))["conversations"]
        # with the token, the scheme's case does not matter
        answer = await client.call(
            "GET", f"{API}/stats", headers={"Authorization": f"bearer {TOKEN}"}
        )
        assert answer.status == 200


async def test_without_a_token_the_api_is_not_there(store: Store) -> None:
    async with api(store, token=None) as client:
        for method, path in ROUTES:
            for headers in ({}, AUTH):
                answer = await client.call(method, path, body={"all": True}, headers=headers)
                assert answer.status == 404, (method, path)
                assert "disabled" in answer.body["error"]


# --- the conversation list ------------------------------------------------------------------


async def test_pages_follow_the_cursor_newest_first_and_stay_stable(
    store: Store, engine: AsyncEngine
) -> None:
    ids = [await conversation(store, f"k{n}") for n in range(7)]
    # Two share an updated_at: the id breaks the tie.
    times = [100.0, 300.0, 200.0, 300.0, 50.0, 250.0, 150.0]
    for cid, at in zip(ids, times, strict=True):
        await set_columns(engine, conversations, cid, updated_at=at)
    expected = [cid for _, cid in sorted(zip(times, ids, strict=True), reverse=True)]
    async with api(store) as client:
        first = await client.get(f"{API}/conversations", limit=2)
        assert [c["id"] for c in first["conversations"]] == expected[:2]
        assert first["conversations"][0]["updated_at"] == 300.0
        second = await client.get(f"{API}/conversations", limit=2, cursor=first["next_cursor"])
        assert [c["id"] for c in second["conversations"]] == expected[2:4]
        # Meanwhile one on a later page is updated: it moves up, and shows on no later page.
        await set_columns(engine, conversations, expected[4], updated_at=999.0)
        third = await client.get(f"{API}/conversations", limit=2, cursor=second["next_cursor"])
        assert [c["id"] for c in third["conversations"]] == expected[5:7]
        assert third["next_cursor"] is None
        # The same cursor gives the same page again.
        again = await client.get(f"{API}/conversations", limit=2, cursor=first["next_cursor"])
        assert again == second
        everything = await client.get(f"{API}/conversations")
        assert everything["conversations"][0]["id"] == expected[4]
        assert everything["next_cursor"] is None and len(everything["conversations"]) == 7
        one = everything["conversations"][0]
    assert one == {
        "id": expected[4],
        "channel": "web",
        "conversation_key": one["conversation_key"],
        "user": one["requester_id"].removeprefix("web:"),
        "requester_id": one["requester_id"],
        "state": "new",
        "session_id": None,
        "end_reason": None,
        "last_activity_at": one["last_activity_at"],
        "updated_at": 999.0,
        "pending": 1,
        "dead_letters": 0,
    }


async def test_each_filter(store: Store, engine: AsyncEngine) -> None:
    alice = await conversation(store, "a", user="alice")
    bob = await conversation(store, "b", user="bob")
    alice_test = await conversation(store, "a", channel=CHANNEL, user="alice")
    ended = await conversation(store, "e", user="eve")
    await set_columns(engine, conversations, ended, state="ended", end_reason="user_quit")
    await kill_head_event(store, bob)
    for at, cid in enumerate((alice, bob, alice_test, ended)):
        await set_columns(engine, conversations, cid, updated_at=1000.0 + at)

    async def listed(**params: Any) -> list[int]:
        page = await client.get(f"{API}/conversations", **params)
        return sorted(c["id"] for c in page["conversations"])

    async with api(store) as client:
        assert await listed() == sorted([alice, bob, alice_test, ended])
        assert await listed(channel="web") == sorted([alice, bob, ended])
        assert await listed(channel=CHANNEL) == [alice_test]
        assert await listed(channel="nowhere") == []
        assert await listed(state="ended") == [ended]
        assert await listed(state="new") == sorted([alice, bob, alice_test])
        assert await listed(state="active") == []
        assert await listed(user="alice") == sorted([alice, alice_test])
        assert await listed(user="alice", channel=CHANNEL) == [alice_test]
        assert await listed(user="nobody") == []
        assert await listed(dead="true") == [bob]
        assert await listed(dead="false") == sorted([alice, alice_test, ended])
        assert await listed(since="1002") == sorted([alice_test, ended])
        assert await listed(since="1002.5") == [ended]
        assert await listed(channel="web", dead="false", since="1001") == [ended]
        # an unset filter, as a form sends it, is no filter
        assert await listed(channel="", state="", user="") == await listed()
        page = await client.get(f"{API}/conversations", dead="true")
        (row,) = page["conversations"]
        assert row["dead_letters"] == 1 and row["pending"] == 0 and row["user"] == "bob"


# --- bad input --------------------------------------------------------------------------------


async def test_bad_input_is_answered_400_with_a_reason(store: Store) -> None:
    cid = await conversation(store, "k")
    conv = f"{API}/conversations"
    bad_gets = [
        f"{conv}?colour=red",
        f"{conv}?limit=0",
        f"{conv}?limit=201",
        f"{conv}?limit=abc",
        f"{conv}?limit=-1",
        f"{conv}?limit=99999999999999999999999999",
        f"{conv}?limit=5&limit=6",
        f"{conv}?cursor=not-a-cursor!",
        f"{conv}?cursor=" + "QUJD",  # base64 of ABC: not JSON
        f"{conv}?cursor=WzEsImEiXQ",  # [1,"a"]
        f"{conv}?cursor=WzEsMCwzXQ",  # [1,0,3]
        f"{conv}?cursor=" + "A" * 300,
        f"{conv}?since=yesterday",
        f"{conv}?since=1e400",
        f"{conv}?dead=maybe",
        f"{conv}?state=asleep",
        f"{conv}?channel=" + "c" * 300,
        f"{conv}?channel=a%00b",
        f"{conv}/abc",
        f"{conv}/0",
        f"{conv}/-3",
        f"{conv}/1.5",
        f"{conv}/99999999999999999999999",
        f"{conv}/{cid}?verbose=1",
        f"{conv}/abc/transcript",
        f"{API}/dead-letters?limit=100000",
        f"{API}/dead-letters?channel=web&extra=1",
        f"{API}/stats?minutes=0",
        f"{API}/stats?minutes=1441",
        f"{API}/stats?minutes=sixty",
    ]
    retry, discard = f"{API}/dead-letters/retry", f"{API}/dead-letters/discard"
    bad_posts: list[tuple[str, bytes]] = [
        (retry, b"not json"),
        (retry, b"\xff\xfe"),
        (retry, b"[1, 2]"),
        (retry, b"{}"),
        (retry, b'{"ids": [1], "all": true}'),
        (retry, b'{"all": false}'),
        (retry, b'{"all": "yes"}'),
        (retry, b'{"ids": []}'),
        (retry, b'{"ids": "1"}'),
        (retry, b'{"ids": ["1"]}'),
        (retry, b'{"ids": [true]}'),
        (retry, b'{"ids": [0]}'),
        (retry, b'{"ids": [1.5]}'),
        (retry, b'{"ids": [99999999999999999999999]}'),
        (retry, json.dumps({"ids": list(range(1, 1002))}).encode()),
        (retry, b'{"ids": [1], "colour": "red"}'),
        (retry, b"[" * 100 + b"]" * 100),
        (discard, b"{}"),
        (discard, b'{"all": true}'),
        (discard, b'{"ids": null}'),
    ]
    async with api(store) as client:
        for path in bad_gets:
            answer = await client.call("GET", path)
            assert answer.status == 400, (path, answer.status, answer.body)
            assert answer.body["error"], path
        for path, data in bad_posts:
            answer = await client.call("POST", path, data=data)
            assert answer.status == 400, (path, data, answer.status, answer.body)
            assert answer.body["error"], (path, data)
        answer = await client.call(
            "POST", retry, data=b'{"ids": [1], "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
        )
        assert answer.status == 413
        answer = await client.call("DELETE", f"{API}/users/web/a%00b")
        assert answer.status == 400 and "user" in answer.body["error"]
        answer = await client.call("DELETE", f"{API}/users/{'c' * 65}/u")
        assert answer.status == 400 and "channel" in answer.body["error"]
        assert (await client.call("DELETE", f"{API}/users/web/")).status == 404
        assert (await client.call("GET", f"{conv}/{cid + 1000}")).status == 404
        assert (await client.call("GET", f"{conv}/{cid + 1000}/transcript")).status == 404
        # the reasons say what was wrong
        answer = await client.call("GET", f"{conv}?limit=500")
        assert "limit" in answer.body["error"] and "200" in answer.body["error"]
        answer = await client.call("GET", f"{conv}?colour=red")
        assert "colour" in answer.body["error"]
    # nothing was changed by any of it
    assert [v.conversation.id for v in await store.conversation_page(_any(), 10)] == [cid]


def _any() -> Any:
    from bridge.store.admin_views import ConversationFilter

    return ConversationFilter()


def unreachable(database_url: str) -> str:
    """A URL like ``database_url`` of a database that cannot be reached."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return url.set(database="/nonexistent-directory/bridge.db").render_as_string(False)
    return url.set(host="127.0.0.1", port=free_port()).render_as_string(False)


async def test_a_database_gone_is_503_with_retry_after(database_url: str) -> None:
    async with store_for(unreachable(database_url)) as store, api(store) as client:
        for method, path in ROUTES:
            if path.endswith("/retry") or path.endswith("/discard"):
                answer = await client.call(method, path, body={"ids": [1]})
            else:
                answer = await client.call(method, path)
            assert answer.status == 503, (method, path, answer.status)
            assert int(answer.headers["Retry-After"]) > 0
            assert "unavailable" in answer.body["error"]


# --- a timeline, driven by the real engine --------------------------------------------------


async def test_a_timeline_shows_a_503_retried_then_answered(
    store: Store, sim: RunningSimulator
) -> None:
    sim.state.faults = Faults(status=503)
    async with harness(store, sim) as h, api(store, notify=h.engine.notify) as client:
        await h.send("c1", "hello")
        async with asyncio.timeout(10):
            await sim.state.wait_for(lambda s: s.stats().by_status.get(503, 0) >= 1)
        sim.state.faults = Faults()
        await h.adapter.wait_for(lambda: "You said: hello" in h.adapter.texts("c1"))
        page = await client.get(f"{API}/conversations", user="user-c1", channel=CHANNEL)
        (listed,) = page["conversations"]

        async def delivered() -> Any:
            timeline = await client.get(f"{API}/conversations/{listed['id']}")
            replies = [d for e in timeline["events"] for d in e["deliveries"]]
            return timeline if replies and all(d["status"] == "sent" for d in replies) else None

        timeline = await poll_until(delivered)
    assert timeline["conversation"]["id"] == listed["id"]
    assert timeline["conversation"]["state"] == "active"
    assert timeline["conversation"]["session_id"]
    (event,) = timeline["events"]
    assert event["kind"] == "text" and event["text"] == "hello" and event["status"] == "done"
    assert event["attempts"] >= 2 and event["finished_at"] >= event["created_at"]
    calls = event["parloa_calls"]
    statuses = [(c["event"], c["status"]) for c in calls]
    assert statuses[0] == ("launch", 503)
    assert statuses[-2:] == [("launch", 200), ("message", 200)]
    assert set(calls[0]) == {
        "event",
        "session",
        "status",
        "latency_ms",
        "request_id",
        "correlation_id",
        "elements",
        "at",
    }
    answered = {r.request_id for r in sim.state.requests if r.status == 200}
    assert {c["request_id"] for c in calls if c["status"] == 200} == answered
    (reply,) = [
        d for d in event["deliveries"] if any("hello" in json.dumps(e) for e in d["elements"])
    ]
    assert reply["status"] == "sent" and reply["platform_message_id"]
    assert reply["attempts"] == 0 and reply["parts_done"] >= 1
    assert reply["elements"][0]["type"] == "text"
    assert isinstance(timeline["other_deliveries"], list)


async def test_stats_count_the_engines_work(store: Store, sim: RunningSimulator) -> None:
    sim.state.faults = Faults(status=503)
    async with harness(store, sim) as h, api(store) as client:
        await h.send("c1", "one")
        async with asyncio.timeout(10):
            await sim.state.wait_for(lambda s: s.stats().by_status.get(503, 0) >= 1)
        sim.state.faults = Faults()
        await h.adapter.wait_for(lambda: "You said: one" in h.adapter.texts("c1"))
        await h.send("c2", "two")
        await h.adapter.wait_for(lambda: "You said: two" in h.adapter.texts("c2"))
        stats = await client.get(f"{API}/stats", minutes=5)
    requests = sim.state.requests
    failed = [r for r in requests if r.status != 200]
    assert stats["until"] - stats["since"] == 300
    assert len(stats["per_minute"]) in (5, 6)  # the window's minutes, the current one too
    assert [m["minute"] % 60 for m in stats["per_minute"]] == [0] * len(stats["per_minute"])
    total = {k: sum(m[k] for m in stats["per_minute"]) for k in ("inbound", "answered", "dead")}
    assert total == {"inbound": 2, "answered": 2, "dead": 0}
    assert sum(m["parloa_errors"] for m in stats["per_minute"]) == len(failed) >= 1
    assert stats["channels"][CHANNEL] == {"inbound": 2, "answered": 2, "dead": 0}
    assert stats["channels"]["web"] == {"inbound": 0, "answered": 0, "dead": 0}
    bot = stats["bots"]["bot"]
    assert bot["calls"] == len(requests) and bot["errors"] == len(failed)
    latency = bot["latency_ms"]
    assert 0 <= latency["p50"] <= latency["p90"] <= latency["p99"]


async def test_stats_percentiles_and_window(store: Store, engine: AsyncEngine) -> None:
    now = 1_800_000_000.0  # a minute's start
    inside = [await conversation(store, f"k{n}", text=f"t{n}") for n in range(4)]
    ids = [r["id"] for r in await rows(engine, inbox)]

    def call(at: float, latency: float, status: int | str = 200) -> dict[str, Any]:
        return {
            "event": "message",
            "session": "s",
            "status": status,
            "latency_ms": latency,
            "request_id": None,
            "correlation_id": None,
            "elements": 1,
            "at": at,
        }

    # Latencies 1..100 ms over three events finished in the window, three of them failed.
    latencies = [float(n) for n in range(1, 101)]
    groups = [latencies[:40], latencies[40:80], latencies[80:]]
    for row_id, group, minute in zip(ids, groups, (1, 2, 3), strict=False):
        at = now - minute * 60 + 1
        calls = [call(at, ms) for ms in group]
        await set_columns(
            engine,
            inbox,
            row_id,
            status="done",
            created_at=at - 1,
            finished_at=at,
            parloa_calls=calls,
        )
    await set_columns(
        engine,
        inbox,
        ids[0],
        parloa_calls=[
            call(now - 59, 0.5, 503),
            call(now - 59, 0.5, "timeout"),
            call(now - 59, 0.5, 400),
        ]
        + [call(now - 59, ms) for ms in groups[0]],
    )
    # One finished long before the window: not counted.
    await set_columns(
        engine,
        inbox,
        ids[3],
        status="dead",
        created_at=now - 7200,
        finished_at=now - 7200,
        parloa_calls=[call(now - 7200, 5000.0, 503)],
    )
    assert len(inside) == 4
    async with api(store, clock=lambda: now) as client:
        stats = await client.get(f"{API}/stats", minutes=10)
        short = await client.get(f"{API}/stats", minutes=1)
    assert stats["since"] == now - 600 and stats["until"] == now
    assert [m["minute"] for m in stats["per_minute"]] == [now - 600 + 60 * k for k in range(11)]
    by_minute = {m["minute"]: m for m in stats["per_minute"]}
    assert by_minute[now - 60] == {
        "minute": now - 60,
        "inbound": 1,
        "answered": 1,
        "dead": 0,
        "parloa_errors": 3,
    }
    assert by_minute[now - 120]["answered"] == 1 and by_minute[now - 180]["answered"] == 1
    bot = stats["bots"]["bot"]
    assert bot["calls"] == 103 and bot["errors"] == 3
    # nearest rank over 0.5 x3 and 1..100
    assert bot["latency_ms"] == {"p50": 49.0, "p90": 90.0, "p99": 99.0}
    assert stats["channels"]["web"] == {"inbound": 3, "answered": 3, "dead": 0}
    assert short["bots"]["bot"]["calls"] == 43 and short["bots"]["bot"]["errors"] == 3
    assert len(short["per_minute"]) == 2


async def test_stats_with_nothing_done_yet(store: Store) -> None:
    async with api(store) as client:
        stats = await client.get(f"{API}/stats")
    assert len(stats["per_minute"]) in (60, 61)
    assert stats["bots"] == {
        "bot": {"calls": 0, "errors": 0, "latency_ms": {"p50": None, "p90": None, "p99": None}}
    }


# --- dead letters ---------------------------------------------------------------------------


async def test_dead_letters_listed_retried_and_answered_at_once(
    store: Store, sim: RunningSimulator
) -> None:
    # The engine does not poll: only the API's wake-up makes it look at a retried event.
    async with (
        harness(store, sim, poll_interval=3600) as h,
        api(store, notify=h.engine.notify) as client,
    ):
        await h.send("a", "hi")
        await h.adapter.wait_for(lambda: "You said: hi" in h.adapter.texts("a"))
        sim.state.faults = Faults(status=400)
        await h.send("a", "bad")
        await h.send("b", "worse")
        await h.adapter.wait_for(lambda: len(h.adapter.texts("b")) >= 1)
        await h.adapter.wait_for(lambda: len(h.adapter.texts("a")) >= 3)
        sim.state.faults = Faults()
        listed = (await client.get(f"{API}/dead-letters"))["dead_letters"]
        assert [(d["text"], d["channel"], d["status"]) for d in listed] == [
            ("bad", CHANNEL, "dead"),
            ("worse", CHANNEL, "dead"),
        ]
        assert "BadRequest" in listed[0]["last_error"]
        assert [(c["event"], c["status"]) for c in listed[0]["parloa_calls"]] == [("message", 400)]
        # (compared by id: the notice's delivery may be acknowledged in between)
        first = (await client.get(f"{API}/dead-letters", limit=1))["dead_letters"]
        assert [d["id"] for d in first] == [listed[0]["id"]]
        # the notice that told the user is the dead letter's delivery
        (notice,) = listed[0]["deliveries"]
        assert "could not process" in json.dumps(notice["elements"])
        assert (await client.get(f"{API}/dead-letters", channel="web"))["dead_letters"] == []
        page = await client.get(f"{API}/conversations", dead="true")
        assert {c["dead_letters"] for c in page["conversations"]} == {1}

        answer = await client.call(
            "POST", f"{API}/dead-letters/retry", body={"ids": [listed[0]["id"], 10**9]}
        )
        assert (answer.status, answer.body) == (200, {"retried": 1})
        assert client.notified == [listed[0]["conversation_id"]]
        await h.adapter.wait_for(lambda: h.adapter.texts("a")[-1] == "You said: bad")

        answer = await client.call(
            "POST", f"{API}/dead-letters/discard", body={"ids": [listed[1]["id"]]}
        )
        assert (answer.status, answer.body) == (200, {"discarded": 1})
        assert (await client.get(f"{API}/dead-letters"))["dead_letters"] == []
        # discarding what is no dead letter (any more) does nothing
        answer = await client.call(
            "POST", f"{API}/dead-letters/discard", body={"ids": [listed[0]["id"]]}
        )
        assert answer.body == {"discarded": 0}
        timeline = await client.get(f"{API}/conversations/{listed[0]['conversation_id']}")
        assert [e["text"] for e in timeline["events"]] == ["hi", "bad"]
        assert timeline["events"][1]["status"] == "done"
        assert (
            texts_of(await client.get(f"{API}/conversations/{listed[1]['conversation_id']}")) == []
        )


def texts_of(timeline: dict[str, Any]) -> list[str]:
    return [e["text"] for e in timeline["events"]]


async def test_retry_all_wakes_every_conversation_with_dead_letters(
    store: Store, engine: AsyncEngine
) -> None:
    a = await conversation(store, "a")
    b = await conversation(store, "b")
    c = await conversation(store, "c")
    await kill_head_event(store, a)
    await kill_head_event(store, b)
    async with api(store) as client:
        answer = await client.call("POST", f"{API}/dead-letters/retry", body={"all": True})
        assert (answer.status, answer.body) == (200, {"retried": 2})
        assert sorted(client.notified) == sorted([a, b])
        answer = await client.call("POST", f"{API}/dead-letters/retry", body={"all": True})
        assert answer.body == {"retried": 0}
    statuses = {r["conversation_id"]: r["status"] for r in await rows(engine, inbox)}
    assert statuses == {a: "pending", b: "pending", c: "pending"}


# --- erase, transcript ----------------------------------------------------------------------


async def test_delete_user_erases_what_is_stored_about_them(
    store: Store, engine: AsyncEngine
) -> None:
    gone = await conversation(store, "k1", user="u/1")
    await conversation(store, "k2", user="u/1", text="again")
    await kill_head_event(store, gone)
    kept = await conversation(store, "k3", user="other")
    async with api(store) as client:
        answer = await client.call("DELETE", f"{API}/users/web/u%2F1")
        assert answer.status == 200, answer.body
        assert answer.body == {
            "erased": {
                "conversations": 2,
                "inbox": 2,
                "dead_letters": 1,
                "outbox": answer.body["erased"]["outbox"],
                "channel_state": 0,
                "media": 0,
            }
        }
        answer = await client.call("DELETE", f"{API}/users/web/u%2F1")
        assert answer.body["erased"]["conversations"] == 0
        page = await client.get(f"{API}/conversations")
    assert [c["id"] for c in page["conversations"]] == [kept]
    assert {r["conversation_id"] for r in await rows(engine, inbox)} == {kept}


async def test_transcript_is_json_lines_of_the_chat(store: Store, sim: RunningSimulator) -> None:
    async with harness(store, sim) as h, api(store) as client:
        for text in ("one", "two"):
            await h.send("c1", text)
            await h.adapter.wait_for(lambda t=text: f"You said: {t}" in h.adapter.texts("c1"))
        page = await client.get(f"{API}/conversations", user="user-c1")
        cid = page["conversations"][0]["id"]
        answer = await client.call("GET", f"{API}/conversations/{cid}/transcript")
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/x-ndjson")
    assert f"conversation-{cid}.ndjson" in answer.headers["Content-Disposition"]
    lines = [json.loads(line) for line in answer.body.splitlines()]
    users = [(x["kind"], x["text"]) for x in lines if x["from"] == "user"]
    assert users == [("text", "one"), ("text", "two")]
    bot_texts = [x.get("text") for x in lines if x["from"] == "bot"]
    assert "You said: one" in bot_texts and "You said: two" in bot_texts
    assert bot_texts.index("You said: one") < bot_texts.index("You said: two")
    # each user line comes before its answer
    order = [x.get("text") for x in lines]
    assert order.index("one") < order.index("You said: one") < order.index("two")
    assert order.index("two") < order.index("You said: two")
    for line in lines:
        assert {"at", "from", "kind"} <= set(line)
        if line["from"] == "bot":
            assert line["elements"] and line["status"] in ("sent", "pending", "failed")
        else:
            assert line["status"] in ("done", "pending", "dead")


async def test_transcript_of_many_events_reads_them_in_batches(store: Store) -> None:
    cid = await conversation(store, "k", text="first")
    many = [
        NewEvent(f"e{n}", "k", "web:u-k", InboundKind.TEXT, f"m{n}")
        for n in range(2 * TRANSCRIPT_BATCH + 1)
    ]
    await store.accept_many("web", many)
    async with api(store) as client:
        answer = await client.call("GET", f"{API}/conversations/{cid}/transcript")
    lines = [json.loads(line) for line in answer.body.splitlines()]
    assert [x["text"] for x in lines] == ["first", *(e.text for e in many)]
    assert {x["from"] for x in lines} == {"user"}
