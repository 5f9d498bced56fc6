"""The console in Chromium against a fake of the admin API (the contract's shapes, canned
data, on 127.0.0.1): sign-in, the list with its filters and pages, a timeline with its retries
and failures, retry and discard, the transcript download, the overview's charts, and a bridge
whose admin API is disabled. The real bridge behind the console: test_console_end_to_end.py.

Skipped, like the web chat's browser test, when Chromium or Playwright is missing."""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bridge.admin.console import console_routes

# Skips this module when Chromium or Playwright is missing.
from tests.support.browser import Browser, Page, artifacts_dir, expect, watch_for_errors
from tests.support.net import serving

TOKEN = "a-console-test-token-0123456789"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def artifacts() -> Path:
    return artifacts_dir("console")


# --- the fake admin API -------------------------------------------------------------------

NOW = time.time()


def conversation(cid: int, **fields: Any) -> dict[str, Any]:
    channel = fields.pop("channel", "telegram-shop")
    user = fields.pop("user", f"user{cid}")
    base = {
        "id": cid,
        "channel": channel,
        "conversation_key": f"chat:{user}",
        "user": user,
        "requester_id": f"{channel}:{user}",
        "state": "active",
        "session_id": f"session-{cid}",
        "end_reason": None,
        "last_activity_at": NOW - 60 * (100 - cid),
        "updated_at": NOW - 60 * (100 - cid),
        "pending": 0,
        "dead_letters": 0,
    }
    base.update(fields)
    return base


def call(event: str, status: int | str, latency: float, elements: int = 1) -> dict[str, Any]:
    return {
        "event": event,
        "session": "session-7",
        "status": status,
        "latency_ms": latency,
        "request_id": f"req-{event}-{status}",
        "correlation_id": "corr-7",
        "elements": elements,
        "at": NOW - 300,
    }


def delivery(outbox_id: int, elements: list[Any], **fields: Any) -> dict[str, Any]:
    base = {
        "outbox_id": outbox_id,
        "status": "sent",
        "attempts": 1,
        "parts_done": len(elements),
        "platform_message_id": f"msg-{outbox_id}",
        "last_error": None,
        "created_at": NOW - 290,
        "finished_at": NOW - 289,
        "elements": elements,
    }
    base.update(fields)
    return base


def event(eid: int, kind: str, text: str | None, **fields: Any) -> dict[str, Any]:
    base = {
        "id": eid,
        "event_id": f"update-{eid}",
        "kind": kind,
        "text": text,
        "status": "done",
        "attempts": 1,
        "last_error": None,
        "created_at": NOW - 400 + eid,
        "finished_at": NOW - 399 + eid,
        "attachments": [],
        "parloa_calls": [],
        "deliveries": [],
    }
    base.update(fields)
    return base


WELCOME = [
    {"type": "text", "content": "Hi! I am the shop's assistant."},
    {"type": "payload", "content": {"suggestionChips": ["Track my order", {"title": "Help"}]}},
]
CARD = {
    "type": "cross_card",
    "title": "Order 1234",
    "subtitle": "On its way",
    "content": "Arrives tomorrow",
    "image": {"accessibilityText": "A parcel", "large": {"url": "https://example.com/p.png"}},
}


@dataclass
class FakeAdminApi:
    """The admin API of issue 26's contract (console.md) over canned data; ``token`` None: the
    API is disabled (404 everywhere). Records what the console asked for."""

    token: str | None = TOKEN
    conversations: list[dict[str, Any]] = field(default_factory=list)
    events: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    retried: list[Any] = field(default_factory=list)
    discarded: list[int] = field(default_factory=list)
    #: reads of a retried event's conversation still showing it pending (the worker's turn)
    pending_reads: int = 1

    def __post_init__(self) -> None:
        # 55 conversations: two pages of 50; number 7 had a 503 retried and a dead letter.
        self.conversations = [conversation(i) for i in range(1, 56)]
        self.conversations[6] = conversation(
            7, user="alice", pending=0, dead_letters=1, channel="telegram-shop"
        )
        self.conversations[8] = conversation(
            9, channel="slack-support", state="ended", end_reason="idle_timeout", user="bob"
        )
        self.events[7] = [
            event(
                1,
                "start",
                None,
                parloa_calls=[call("launch", 200, 212.0, 2)],
                deliveries=[delivery(1, WELCOME)],
            ),
            event(
                2,
                "text",
                "Where is my order?",
                attempts=2,
                parloa_calls=[call("message", 503, 1840.0, 0), call("message", 200, 340.0)],
                deliveries=[delivery(2, [CARD])],
            ),
            event(
                3,
                "text",
                "hello?",
                status="dead",
                finished_at=NOW - 390,
                last_error="parloa answered 400: invalid request",
                parloa_calls=[call("message", 400, 95.0, 0)],
            ),
        ]

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(console_routes())
        app.add_routes(
            [
                web.get("/admin/api/conversations", self.list_conversations),
                web.get("/admin/api/conversations/{id}", self.one_conversation),
                web.get("/admin/api/conversations/{id}/transcript", self.transcript),
                web.get("/admin/api/dead-letters", self.dead_letters),
                web.post("/admin/api/dead-letters/retry", self.retry),
                web.post("/admin/api/dead-letters/discard", self.discard),
                web.get("/admin/api/stats", self.stats),
            ]
        )
        return app

    def check(self, request: web.Request) -> None:
        self.requests.append(
            (request.method, request.path_qs, request.headers.get("Authorization"))
        )
        if self.token is None:
            raise web.HTTPNotFound(
                text=json.dumps({"error": "not found"}), content_type="application/json"
            )
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": "unauthorized"}), content_type="application/json"
            )

    def dead_of(self, cid: int) -> list[dict[str, Any]]:
        return [e for e in self.events.get(cid, []) if e["status"] == "dead"]

    async def list_conversations(self, request: web.Request) -> web.Response:
        self.check(request)
        q = request.query
        rows = sorted(self.conversations, key=lambda c: (c["updated_at"], c["id"]), reverse=True)
        if q.get("channel"):
            rows = [c for c in rows if c["channel"] == q["channel"]]
        if q.get("state"):
            rows = [c for c in rows if c["state"] == q["state"]]
        if q.get("user"):
            rows = [c for c in rows if c["user"] == q["user"]]
        if q.get("dead") in ("true", "false"):
            rows = [c for c in rows if (c["dead_letters"] > 0) == (q["dead"] == "true")]
        start = int(q.get("cursor") or 0)
        limit = int(q.get("limit") or 50)
        page = rows[start : start + limit]
        more = start + limit < len(rows)
        return web.json_response(
            {"conversations": page, "next_cursor": str(start + limit) if more else None}
        )

    async def one_conversation(self, request: web.Request) -> web.Response:
        self.check(request)
        cid = int(request.match_info["id"])
        found = [c for c in self.conversations if c["id"] == cid]
        if not found:
            raise web.HTTPNotFound(
                text=json.dumps({"error": "no such conversation"}), content_type="application/json"
            )
        events = self.events.get(cid, [])
        for e in events:
            if e["status"] == "pending" and e["id"] in self.retried:
                if self.pending_reads > 0:
                    self.pending_reads -= 1
                else:  # the worker answered it
                    e.update(status="done", attempts=2, finished_at=NOW - 10, last_error=None)
                    e["parloa_calls"].append(call("message", 200, 120.0))
                    e["deliveries"].append(
                        delivery(9, [{"type": "text", "content": "You said: hello?"}])
                    )
                    found[0]["dead_letters"] = 0
        notice = delivery(
            8,
            [{"type": "text", "content": "Sorry, something went wrong."}],
            created_at=NOW - 389,
            finished_at=NOW - 388,
        )
        return web.json_response(
            {
                "conversation": found[0],
                "events": events,
                "other_deliveries": [notice] if cid == 7 else [],
            }
        )

    async def transcript(self, request: web.Request) -> web.Response:
        self.check(request)
        cid = int(request.match_info["id"])
        lines = []
        for e in self.events.get(cid, []):
            lines.append(
                {
                    "at": e["created_at"],
                    "from": "user",
                    "kind": e["kind"],
                    "text": e["text"],
                    "status": e["status"],
                }
            )
            for d in e["deliveries"]:
                lines.append(
                    {
                        "at": d["created_at"],
                        "from": "bot",
                        "kind": "reply",
                        "elements": d["elements"],
                    }
                )
        body = "".join(json.dumps(line) + "\n" for line in lines)
        return web.Response(text=body, content_type="application/x-ndjson")

    async def dead_letters(self, request: web.Request) -> web.Response:
        self.check(request)
        rows = []
        for cid in self.events:
            channel = next(c["channel"] for c in self.conversations if c["id"] == cid)
            if request.query.get("channel") and request.query["channel"] != channel:
                continue
            rows += [{**e, "conversation_id": cid, "channel": channel} for e in self.dead_of(cid)]
        return web.json_response({"dead_letters": rows})

    async def retry(self, request: web.Request) -> web.Response:
        self.check(request)
        body = await request.json()
        ids = body.get("ids") or []
        n = 0
        for events in self.events.values():
            for e in events:
                if e["status"] == "dead" and (body.get("all") or e["id"] in ids):
                    e["status"] = "pending"
                    self.retried.append(e["id"])
                    n += 1
        return web.json_response({"retried": n})

    async def discard(self, request: web.Request) -> web.Response:
        self.check(request)
        ids = (await request.json())["ids"]
        n = 0
        for cid, events in self.events.items():
            for e in events:
                if e["status"] == "dead" and e["id"] in ids:
                    e.update(status="done", last_error="discarded by an operator")
                    self.discarded.append(e["id"])
                    n += 1
            if not self.dead_of(cid):
                for c in self.conversations:
                    if c["id"] == cid:
                        c["dead_letters"] = 0
        return web.json_response({"discarded": n})

    async def stats(self, request: web.Request) -> web.Response:
        self.check(request)
        minutes = int(request.query.get("minutes", "60"))
        until = int(NOW)
        since = until - 60 * minutes
        first = since - since % 60
        per_minute = [
            {
                "minute": first + 60 * i,
                "inbound": (i * 7) % 11,
                "answered": (i * 7) % 11 - (i % 5 == 0),
                "dead": 1 if i in (13, 40) else 0,
                "parloa_errors": 2 if i in (13, 41, 42) else 0,
            }
            for i in range(minutes)
            if i % 9 != 3  # minutes without a row: the page fills in zeros
        ]
        for row in per_minute:
            row["answered"] = max(0, row["answered"])
        return web.json_response(
            {
                "since": since,
                "until": until,
                "per_minute": per_minute,
                "channels": {
                    "telegram-shop": {"inbound": 250, "answered": 240, "dead": 2},
                    "slack-support": {"inbound": 41, "answered": 41, "dead": 0},
                },
                "bots": {
                    "shop": {
                        "calls": 260,
                        "errors": 6,
                        "latency_ms": {"p50": 180.0, "p90": 420.0, "p99": 1650.0},
                    },
                    "support": {
                        "calls": 41,
                        "errors": 0,
                        "latency_ms": {"p50": 95.0, "p90": 160.0, "p99": 240.0},
                    },
                },
            }
        )


@pytest.fixture
def fake() -> FakeAdminApi:
    return FakeAdminApi()


@pytest.fixture
async def console(fake: FakeAdminApi) -> AsyncIterator[str]:
    async with serving(fake.app()) as base:
        yield base + "/admin/"


@pytest.fixture
def page_errors() -> Iterator[list[list[str]]]:
    collected: list[list[str]] = []
    yield collected
    for problems in collected:
        assert problems == []


async def signed_in(browser: Browser, url: str, errors: list[list[str]]) -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors.append(watch_for_errors(page))
    page.on("dialog", lambda dialog: dialog.accept())
    await page.goto(url)
    await page.get_by_label("Admin token").fill(TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Conversations")).to_be_visible()
    return page


# --- the tests ------------------------------------------------------------------------------


async def test_sign_in_asks_for_the_token_once_and_sends_it_with_every_call(
    browser: Browser, console: str, fake: FakeAdminApi, page_errors: list[list[str]]
) -> None:
    page = await browser.new_page()
    page_errors.append(watch_for_errors(page))
    await page.goto(console)
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    # a wrong token is refused and asked again
    await page.get_by_label("Admin token").fill("not-the-token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("The token was refused.")
    await expect(page.get_by_label("Admin token")).to_be_focused()
    await page.get_by_label("Admin token").fill(TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#conversations-rows tr")).to_have_count(50)
    # a reload keeps the token (this tab's sessionStorage)
    await page.reload()
    await expect(page.locator("#conversations-rows tr")).to_have_count(50)
    calls = [r for r in fake.requests if r[1] != "/admin/api/stats?minutes=1"]
    assert calls and all(auth == f"Bearer {TOKEN}" for _m, _p, auth in calls)
    # the probe before sign-in goes without a token: 401 says there is an API
    assert fake.requests[0] == ("GET", "/admin/api/stats?minutes=1", None)
    # a token the bridge stops accepting (rotated) sends the operator back to sign-in
    fake.token = "a-rotated-token-0123456789"
    await page.get_by_role("link", name="Dead letters").click()
    await expect(page.get_by_role("alert")).to_have_text("The token was refused. Enter it again.")
    assert await page.evaluate("() => sessionStorage.length") == 0
    await page.close()


async def test_a_disabled_admin_api_is_said_so(
    browser: Browser, fake: FakeAdminApi, page_errors: list[list[str]]
) -> None:
    fake.token = None
    async with serving(fake.app()) as base:
        page = await browser.new_page()
        page_errors.append(watch_for_errors(page))
        await page.goto(base + "/admin")  # redirected to /admin/
        await expect(page.get_by_role("heading", name="The admin API is disabled")).to_be_visible()
        await expect(page.get_by_label("Admin token")).to_be_hidden()
        await expect(page.get_by_role("navigation", name="Views")).to_be_hidden()
        # with a token kept from before, the first API call says the same
        await page.evaluate(f"() => sessionStorage.setItem('parloa-bridge:admin:token', '{TOKEN}')")
        await page.reload()
        await expect(page.get_by_role("heading", name="The admin API is disabled")).to_be_visible()
        await page.close()


async def test_the_list_filters_and_pages(
    browser: Browser,
    console: str,
    fake: FakeAdminApi,
    artifacts: Path,
    page_errors: list[list[str]],
) -> None:
    page = await signed_in(browser, console, page_errors)
    view = page.locator("#view-conversations")
    rows = page.locator("#conversations-rows tr")
    await expect(rows).to_have_count(50)
    await expect(rows.first.locator("td").first).to_have_text("#55")  # newest first
    # the conversation with a dead letter stands out
    alice = page.locator("tr.has-dead")
    await expect(alice).to_have_count(1)
    await expect(alice).to_contain_text("alice")
    await expect(alice.locator(".badge.bad")).to_have_text("1")
    await page.screenshot(path=artifacts / "01-conversations.png", full_page=False)

    # the next page, and back to the first
    await page.get_by_role("link", name="Next page").click()
    await expect(rows).to_have_count(5)
    await expect(rows.first.locator("td").first).to_have_text("#5")
    await expect(page.get_by_role("link", name="Next page")).to_be_hidden()
    await page.get_by_role("link", name="First page").click()
    await expect(rows).to_have_count(50)

    # search by user; filters by channel, state, dead letters
    await view.get_by_label("User").fill("alice")
    await page.get_by_role("button", name="Search").click()
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("telegram-shop")
    await page.get_by_role("button", name="Clear").click()
    await expect(rows).to_have_count(50)
    await view.get_by_label("Channel").fill("slack-support")
    await view.get_by_label("State").select_option("ended")
    await page.get_by_role("button", name="Search").click()
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("bob")
    await expect(rows.first).to_contain_text("idle_timeout")
    await page.get_by_role("button", name="Clear").click()
    await view.get_by_label("Dead letters").select_option("true")
    await page.get_by_role("button", name="Search").click()
    await expect(rows).to_have_count(1)
    await expect(page).to_have_url(console + "#/conversations?dead=true")
    await view.get_by_label("State").select_option("new")
    await page.get_by_role("button", name="Search").click()
    await expect(page.get_by_text("No conversation matches.")).to_be_visible()
    asked = [p for _m, p, _a in fake.requests if p.startswith("/admin/api/conversations?")]
    assert "/admin/api/conversations?user=alice&limit=50" in asked
    assert "/admin/api/conversations?channel=slack-support&state=ended&limit=50" in asked
    assert "/admin/api/conversations?cursor=50&limit=50" in asked
    await page.close()


async def test_a_timeline_shows_calls_retries_failures_and_a_retried_dead_letter(
    browser: Browser,
    console: str,
    fake: FakeAdminApi,
    artifacts: Path,
    page_errors: list[list[str]],
) -> None:
    page = await signed_in(browser, console, page_errors)
    await page.get_by_role("link", name="#7", exact=True).click()
    await expect(page.get_by_role("heading", name="Conversation #7")).to_be_visible()
    timeline = page.get_by_role("list", name="Timeline")
    items = timeline.locator(":scope > li")
    await expect(items).to_have_count(4)  # three events and a notice, in time order

    # the welcome: launch 200, text and chips
    welcome = page.locator("#event-1")
    await expect(welcome.locator(".msg.user .bubble")).to_have_text("(started the conversation)")
    await expect(welcome.locator(".msg.bot .bubble")).to_have_text("Hi! I am the shop's assistant.")
    chips = welcome.get_by_role("list", name="Suggestions").get_by_role("listitem")
    await expect(chips).to_have_text(["Track my order", "Help"])
    await expect(welcome.locator(".call")).to_contain_text(
        "launch → HTTP 200 · 212 ms · 2 elements"
    )

    # a 503 then a 200: both calls beside the event, the failed one marked, the retry said
    order = page.locator("#event-2")
    await expect(order.locator(".msg.user .bubble")).to_have_text("Where is my order?")
    await expect(order.locator(".call")).to_have_count(2)
    await expect(order.locator(".call.bad")).to_contain_text("message → HTTP 503 · 1.84 s")
    await expect(order.locator(".call.bad")).to_contain_text("request req-message-503")
    await expect(order.locator(".call:not(.bad)")).to_contain_text("HTTP 200 · 340 ms")
    await expect(order.locator(".trace h3 .badge")).to_have_text(["done", "2 attempts", "retried"])
    card = order.locator("article.card")
    await expect(card.get_by_role("heading")).to_have_text("Order 1234")
    await expect(card).to_contain_text("Image: A parcel — https://example.com/p.png")
    await expect(order.locator(".delivery")).to_contain_text("#2 sent")

    # the dead letter: red, its error, Retry and Discard
    dead = page.locator("#event-3")
    await expect(dead).to_have_class("event dead")
    await expect(dead.locator(".trace h3 .badge.bad")).to_have_text("dead letter")
    await expect(dead).to_contain_text("Last error: parloa answered 400: invalid request")
    await expect(dead.locator(".call.bad")).to_contain_text("HTTP 400")
    assert await dead.evaluate("e => getComputedStyle(e).borderTopColor") == "rgb(180, 35, 24)"
    # the bridge's notice, between the events by time
    await expect(items.nth(3)).to_contain_text("Sorry, something went wrong.")
    await expect(items.nth(3)).to_contain_text("A notice of the bridge")
    await page.screenshot(path=artifacts / "02-timeline-dead-letter.png", full_page=True)

    # Retry: pending first (the worker's turn), then answered, read again without a click
    await dead.get_by_role("button", name="Retry event 3").click()
    await expect(page.get_by_role("status")).to_have_text("Retried 1 dead letter.")
    await expect(dead.locator(".msg.bot .bubble")).to_have_text("You said: hello?", timeout=15_000)
    await expect(dead).to_have_class("event")
    await expect(dead.get_by_role("button", name="Retry event 3")).to_have_count(0)
    await expect(dead.locator(".call")).to_have_count(2)
    assert fake.retried == [3]
    await page.screenshot(path=artifacts / "03-timeline-retried.png", full_page=True)
    await page.close()


async def test_the_transcript_downloads_as_json_lines(
    browser: Browser,
    console: str,
    fake: FakeAdminApi,
    tmp_path: Path,
    page_errors: list[list[str]],
) -> None:
    page = await signed_in(browser, console, page_errors)
    await page.goto(console + "#/conversation/7")
    await expect(page.locator("#event-3")).to_be_visible()
    async with page.expect_download() as waiting:
        await page.get_by_role("button", name="Download transcript (JSON lines)").click()
    download = await waiting.value
    assert download.suggested_filename == "conversation-7.jsonl"
    saved = tmp_path / "transcript.jsonl"
    await download.save_as(saved)
    lines = [json.loads(line) for line in saved.read_text().splitlines()]
    assert [(line["from"], line.get("text")) for line in lines] == [
        ("user", None),
        ("bot", None),
        ("user", "Where is my order?"),
        ("bot", None),
        ("user", "hello?"),
    ]
    assert ("GET", "/admin/api/conversations/7/transcript", f"Bearer {TOKEN}") in fake.requests
    # an unknown conversation is said so, not shown empty and silent
    await page.goto(console + "#/conversation/999")
    await expect(page.get_by_role("status")).to_have_text(
        "Conversation #999 does not exist (or was erased)."
    )
    await page.close()


async def test_dead_letters_are_listed_retried_and_discarded(
    browser: Browser, console: str, fake: FakeAdminApi, page_errors: list[list[str]]
) -> None:
    fake.events[9] = [event(20, "text", "anyone?", status="dead", attempts=5, last_error="timeout")]
    page = await signed_in(browser, console, page_errors)
    await page.get_by_role("link", name="Dead letters").click()
    rows = page.locator("#dead-rows tr")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0)).to_contain_text("hello?")
    await expect(rows.nth(1)).to_contain_text("slack-support")
    await expect(rows.nth(1)).to_contain_text("timeout")
    # filtered by channel
    channel = page.locator("#view-dead-letters").get_by_label("Channel")
    await channel.fill("slack-support")
    await page.get_by_role("button", name="Show").click()
    await expect(rows).to_have_count(1)
    # discard (confirmed) one; retry the other from the unfiltered list
    await page.get_by_role("button", name="Discard event 20").click()
    await expect(page.get_by_role("status")).to_have_text("Discarded 1 dead letter.")
    await expect(page.get_by_text("No dead letters.")).to_be_visible()
    await channel.fill("")
    await page.get_by_role("button", name="Show").click()
    await expect(rows).to_have_count(1)
    await page.get_by_role("button", name="Retry event 3").click()
    await expect(page.get_by_role("status")).to_have_text("Retried 1 dead letter.")
    await expect(rows).to_have_count(0)
    await expect(page.get_by_role("button", name="Retry all")).to_be_disabled()
    assert (fake.discarded, fake.retried) == ([20], [3])
    await page.close()


async def test_the_overview_draws_its_charts_from_the_stats(
    browser: Browser,
    console: str,
    fake: FakeAdminApi,
    artifacts: Path,
    page_errors: list[list[str]],
) -> None:
    page = await signed_in(browser, console, page_errors)
    await page.get_by_role("link", name="Overview").click()
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    messages = page.locator("#chart-messages svg")
    await expect(messages).to_have_attribute("role", "img")
    # one point per minute of the window (the minutes the API left out are zeros)
    points = await messages.locator("polyline[data-series=inbound]").get_attribute("points")
    assert points is not None and len(points.split()) == 61
    label = await messages.get_attribute("aria-label")
    assert label is not None and label.startswith("Messages per minute: ")
    bars = page.locator("#chart-failures rect")
    await expect(bars).to_have_count(2 + 3)  # two minutes with a dead letter, three with errors
    await expect(page.locator("#chart-failures .legend")).to_contain_text("Dead letters: 2")
    await expect(page.locator("#chart-failures .legend")).to_contain_text("Parloa errors: 6")
    latency = page.locator("#chart-latency svg")
    await expect(latency.locator("rect")).to_have_count(6)  # two bots, three percentiles
    await expect(latency).to_contain_text("p99 1.65 s")
    await expect(page.locator("#bot-rows tr").first).to_contain_text("shop2606180 ms420 ms1.65 s")
    await expect(page.locator("#channel-rows tr")).to_have_count(2)
    # the page is at least as wide as its charts need: nothing spills out
    assert await page.evaluate("() => document.documentElement.scrollWidth <= innerWidth")
    await page.screenshot(path=artifacts / "04-overview.png", full_page=True)
    await page.close()
