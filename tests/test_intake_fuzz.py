"""The intake doors under arbitrary input: the Slack HTTP route, the Telegram webhook and the
webhook channel of one real Service (fakes of Slack and Telegram, the simulator as Parloa, a
SQLite database), run on a thread of its own so that hypothesis drives plain blocking HTTP
requests at it. Whatever arrives: never a 5xx, never a traceback in the log, and an event
answered as accepted is in the inbox. Then the server's own limits: a body that dribbles is cut
off within the deadline, a client that goes away mid-body is one line, not an error."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import itertools
import json
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from adapters.webhook.channel import WebhookAdapter, WebhookOptions
from bridge.channel import (
    MAX_CONVERSATION_KEY_LENGTH,
    MAX_EVENT_ID_LENGTH,
    MAX_REQUESTER_ID_LENGTH,
    AcceptResult,
    AdapterServices,
    Inbound,
    InboundKind,
    IntakeRefused,
    inbound_problem,
)
from bridge.devtools.simulator import RunningSimulator, start_simulator
from bridge.http_server import HttpServer, build_app
from bridge.media.attachments import Attachment, AttachmentType
from bridge.metrics import Metrics
from bridge.service import Service
from bridge.store import Store, schema
from tests.fakes.slack import FakeSlack, dm_message, event_callback
from tests.fakes.telegram import FakeTelegram
from tests.support.config import config_data, service_config
from tests.support.engine import CHANNEL, harness
from tests.support.engine import inbound as engine_inbound
from tests.support.intake import MemoryIntake
from tests.support.service import running_service
from tests.support.signing import (
    slack_signed_headers,
    telegram_secret_headers,
    webhook_signed_headers,
)
from tests.support.waiting import poll_until

TEAM = "T0TEAM"
BOT_USER = "U0BOT"
BOT_TOKEN = "xoxb-1111111111111-2222222222222-botTokenSecretValue01"
SIGNING_SECRET = "8f742231b10e8888abcd99signingsecret5"
TG_TOKEN = "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef"
TG_SECRET = "telegram-secret_0123"
HOOK_SECRET = "webhook-secret-0123456789"
USER = "U0ADA"

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# --- the service on a thread ------------------------------------------------------------------


class Captured(logging.Handler):
    """Every record of every logger, whichever thread wrote it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def tracebacks(self) -> list[str]:
        return [
            f"{r.name}: {r.getMessage()}"
            for r in self.records
            if r.exc_info or "Traceback" in r.getMessage()
        ]


@dataclass
class Door:
    port: int
    database: Path
    log: Captured
    _serial: itertools.count[int] = field(default_factory=itertools.count)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        """POST ``body``; the status."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    def stored(self, channel: str, event_id: str) -> bool:
        with contextlib.closing(sqlite3.connect(self.database)) as db:
            row = db.execute(
                "SELECT 1 FROM inbox WHERE channel = ? AND event_id = ?", (channel, event_id)
            ).fetchone()
        return row is not None

    def stored_text(self, channel: str, marker: str) -> bool:
        """Whether a text starting with ``marker`` is in the inbox (the adapters normalise
        what follows: whitespace, markup)."""
        with contextlib.closing(sqlite3.connect(self.database)) as db:
            row = db.execute(
                "SELECT 1 FROM inbox WHERE channel = ? AND substr(text, 1, ?) = ?",
                (channel, len(marker), marker),
            ).fetchone()
        return row is not None

    def unique(self) -> str:
        return f"{time.time_ns()}-{next(self._serial)}"


@contextlib.asynccontextmanager
async def _service(tmp: Path) -> AsyncIterator[Service]:
    async with (
        await start_simulator() as sim,
        FakeSlack() as slack,
        FakeTelegram(tokens=[TG_TOKEN]) as tg,
    ):
        slack.add_workspace(TEAM, bot_token=BOT_TOKEN, bot_user_id=BOT_USER, bot_id="B0BOT")
        slack.add_user(TEAM, USER, real_name="Ada")
        data = config_data(
            f"sqlite+aiosqlite:///{tmp / 'bridge.db'}",
            sim.url,
            {},
            http={"public_url": "https://bridge.example.com"},
        )
        bot = data["channels"][0]["bot"]
        data["channels"] = [
            {
                "name": "sl",
                "type": "slack",
                "bot": bot,
                "bot_token": BOT_TOKEN,
                "signing_secret": SIGNING_SECRET,
                "api_base_url": slack.api_url,
            },
            {
                "name": "tg",
                "type": "telegram",
                "bot": bot,
                "token": TG_TOKEN,
                "api_base_url": tg.api_root,
                "mode": "webhook",
                "webhook_secret": TG_SECRET,
            },
            {
                "name": "wh",
                "type": "webhook",
                "bot": bot,
                "secret": HOOK_SECRET,
                "deliver_url": f"{sim.url}/nowhere",
            },
        ]
        async with running_service(service_config(data)) as service:
            yield service


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    tmp = tmp_path_factory.mktemp("fuzz")
    captured = Captured()
    root = logging.getLogger()
    level = root.level
    root.addHandler(captured)
    root.setLevel(logging.INFO)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzzed-bridge", daemon=True)
    thread.start()
    context = _service(tmp)
    try:
        service = asyncio.run_coroutine_threadsafe(context.__aenter__(), loop).result(60)
        assert service.http is not None
        yield Door(service.http.port, tmp / "bridge.db", captured)
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(context.__aexit__(None, None, None), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        root.removeHandler(captured)
        root.setLevel(level)


# --- what arrives -----------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def deep_json(draw: st.DrawFn) -> bytes:
    """Nesting near and far beyond the limit, as lists or objects."""
    levels = draw(st.sampled_from([10, 63, 64, 65, 200, 5000, 100_000]))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    return (opener * levels + "1" + closer * levels).encode()


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


garbage = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=40).map(lambda b: b"\xff\xfe" + b),  # never UTF-8
    deep_json(),
    json_values.map(dumps),
    st.sampled_from([b"", b"[]", b"{}", b"null", b"1e999", b"NaN", b'"x"', b"{" * 3]),
    st.sampled_from(["[]", "{}", "1", "x", "", "[" * 500]).map(
        lambda p: urlencode({"payload": p}).encode()
    ),
)
content_types = st.sampled_from(
    ["application/json", "application/x-www-form-urlencoded", "text/plain", ""]
)


def unstorable(*values: str) -> bool:
    """What the database cannot store: a NUL, a lone surrogate."""
    for value in values:
        if "\x00" in value:
            return True
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
    return False


def assert_clean(door: Door, status: int) -> None:
    assert status < 500, status
    assert door.log.tracebacks() == []


# --- Slack ------------------------------------------------------------------------------------


@FUZZ
@given(
    body=garbage,
    content_type=content_types,
    signing=st.sampled_from(["right", "wrong", "none", "stale"]),
)
def test_slack_garbage_is_refused_with_a_4xx(
    door: Door, body: bytes, content_type: str, signing: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    if signing == "right":
        headers.update(slack_signed_headers(SIGNING_SECRET, body))
    elif signing == "wrong":
        headers.update(slack_signed_headers("not-the-secret-at-all", body))
    elif signing == "stale":
        headers.update(slack_signed_headers(SIGNING_SECRET, body, int(time.time()) - 3600))
    status = door.post("/slack/sl/events", body, headers)
    note(f"status {status}")
    assert_clean(door, status)
    if signing != "right":
        assert status == 401


@FUZZ
@given(text=st.text(min_size=1, max_size=60), user=st.sampled_from([USER, "U" + "X" * 300]))
def test_slack_events_are_stored_or_refused(door: Door, text: str, user: str) -> None:
    marker = door.unique()
    marked = f"{marker} {text}"
    event = dm_message(user, marked, team=TEAM)
    body = json.dumps(event_callback(TEAM, event, bot_user_id=BOT_USER)).encode()
    headers = {"Content-Type": "application/json", **slack_signed_headers(SIGNING_SECRET, body)}
    status = door.post("/slack/sl/events", body, headers)
    assert_clean(door, status)
    if unstorable(marked) or len(user) > 200:
        assert status == 400
        return
    assert status == 200
    assert door.stored_text("sl", marker)


# --- Telegram webhook -------------------------------------------------------------------------


@FUZZ
@given(body=garbage, secret=st.sampled_from([TG_SECRET, "wrong-secret-0000000", None]))
def test_telegram_webhook_garbage_is_refused_with_a_4xx(
    door: Door, body: bytes, secret: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers.update(telegram_secret_headers(secret))
    status = door.post("/telegram/tg", body, headers)
    assert_clean(door, status)
    if secret != TG_SECRET:
        assert status == 401


@FUZZ
@given(text=st.text(min_size=1, max_size=60), shape=json_values)
def test_telegram_updates_are_stored_refused_or_skipped(door: Door, text: str, shape: Any) -> None:
    update_id = time.time_ns() % 2**31
    marker = door.unique()
    marked = f"{marker} {text}"
    update = {
        "update_id": update_id,
        "message": {
            "message_id": 1,
            "date": int(time.time()),
            "chat": {"id": 7, "type": "private", "first_name": "Ada"},
            "from": {"id": 7, "is_bot": False, "first_name": "Ada"},
            "text": marked,
        },
    }
    headers = {"Content-Type": "application/json", **telegram_secret_headers(TG_SECRET)}
    status = door.post("/telegram/tg", dumps(update), headers)
    assert_clean(door, status)
    assert status == 200  # stored, or skipped with a log line: never sent again for ever
    assert door.stored_text("tg", marker) is not unstorable(marked)
    # the same update with a field of the wrong type: read or skipped, never a 5xx
    update["message"]["chat"] = shape
    assert_clean(door, door.post("/telegram/tg", dumps(update), headers))


# --- webhook channel --------------------------------------------------------------------------


@FUZZ
@given(body=garbage, signed=st.booleans())
def test_webhook_channel_garbage_is_refused_with_a_4xx(
    door: Door, body: bytes, signed: bool
) -> None:
    headers = (
        webhook_signed_headers(HOOK_SECRET, body) if signed else {"Content-Type": "text/plain"}
    )
    status = door.post("/webhook/wh/events", body, headers)
    assert_clean(door, status)
    if not signed:
        assert status in (401, 413)  # a body over the channel's limit is not even verified


ids = st.one_of(st.text(min_size=1, max_size=20), st.text(min_size=250, max_size=260))


@FUZZ
@given(
    user_id=ids,
    text=st.text(min_size=1, max_size=60),
    context=st.dictionaries(st.text(min_size=1, max_size=8), json_scalars, max_size=3),
)
def test_webhook_channel_events_are_stored_or_refused(
    door: Door, user_id: str, text: str, context: dict[str, Any]
) -> None:
    event_id = door.unique()
    event = {"event_id": event_id, "user_id": user_id, "text": text, "context": context}
    body = dumps(event)
    status = door.post("/webhook/wh/events", body, webhook_signed_headers(HOOK_SECRET, body))
    note(f"status {status}")
    assert_clean(door, status)
    if status == 200:
        assert door.stored("wh", event_id)
    else:
        assert 400 <= status < 500
        assert not door.stored("wh", event_id)
    storable_context = all(
        v is not None and (not isinstance(v, str) or (len(v) <= 1000 and not unstorable(k, v)))
        for k, v in context.items()
    )
    if (
        len("wh:" + user_id) <= MAX_REQUESTER_ID_LENGTH
        and not unstorable(user_id, text)
        and text.strip()
        and storable_context
    ):
        assert status == 200, "a storable event was refused"


# --- the rule the doors share -----------------------------------------------------------------


def test_the_limits_are_the_columns() -> None:
    """The limits inbound_problem checks are the store's column lengths."""
    assert schema.inbox.c.event_id.type.length == MAX_EVENT_ID_LENGTH  # type: ignore[attr-defined]
    conversations = schema.conversations.c
    assert conversations.conversation_key.type.length == MAX_CONVERSATION_KEY_LENGTH  # type: ignore[attr-defined]
    assert conversations.requester_id.type.length == MAX_REQUESTER_ID_LENGTH  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("change", "refused"),
    [
        ({}, False),
        ({"text": "a\x00b"}, True),
        ({"text": "\ud800"}, True),
        ({"event_id": "e" * 256}, True),
        ({"conversation_key": "k" * 256}, True),
        ({"user_id": "u" * (255 - len("ch:"))}, False),
        ({"user_id": "u" * (256 - len("ch:"))}, True),
        ({"address": {"chat": ["x\x00"]}}, True),
        ({"context": {"k\x00": 1}}, True),
        ({"attachments": (Attachment(AttachmentType.PHOTO, "f1", name="a.jpg"),)}, False),
        ({"attachments": (Attachment(AttachmentType.PHOTO, "f1", name="a\x00.jpg"),)}, True),
        ({"attachments": (Attachment(AttachmentType.CONTACT, contact_name="\udfff"),)}, True),
        ({"attachments": (Attachment(AttachmentType.PHOTO, "f"),) * 10}, False),
        ({"attachments": (Attachment(AttachmentType.PHOTO, "f"),) * 11}, True),
    ],
)
def test_inbound_problem(change: dict[str, Any], refused: bool) -> None:
    fields: dict[str, Any] = {
        "event_id": "e1",
        "conversation_key": "k1",
        "user_id": "u1",
        "kind": InboundKind.TEXT,
        "text": "hi",
        **change,
    }
    assert (inbound_problem("ch", Inbound(**fields)) is not None) is refused


# --- slow and vanishing clients ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def small_server(body_timeout: float) -> AsyncIterator[tuple[int, MemoryIntake]]:
    """The bridge's HTTP server with one webhook channel, its body deadline ``body_timeout``."""
    options = WebhookOptions(secret=HOOK_SECRET, deliver_url="http://127.0.0.1:9/")
    adapter = WebhookAdapter("wh", options, AdapterServices(None, "unsupported"))
    intake = MemoryIntake("wh")

    async def ready() -> tuple[bool, dict[str, Any]]:
        return True, {}

    app = build_app(Metrics(), ready, adapter.routes(), body_timeout_seconds=body_timeout)
    server = HttpServer(app, "127.0.0.1", 0)
    await adapter.start(intake)
    await server.start()
    try:
        yield server.port, intake
    finally:
        await server.stop()
        await adapter.stop()


async def test_a_dribbling_client_is_cut_off_within_the_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with small_server(body_timeout=0.5) as (port, intake):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /webhook/wh/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        await writer.drain()
        started = time.monotonic()

        async def dribble() -> None:
            with contextlib.suppress(ConnectionError):
                while True:
                    await asyncio.sleep(0.05)  # the pace of the slow client itself
                    writer.write(b" ")
                    await writer.drain()

        dribbling = asyncio.create_task(dribble(), name="dribble")
        try:
            answer = await asyncio.wait_for(reader.read(), timeout=10)
        finally:
            dribbling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dribbling
            writer.close()
        elapsed = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert elapsed < 3, f"cut off after {elapsed:.1f}s"
        assert intake.accepted == []
    assert not [r for r in caplog.records if r.exc_info]
    assert any("did not arrive" in r.getMessage() for r in caplog.records)


async def test_a_client_that_goes_away_mid_body_is_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with small_server(body_timeout=5) as (port, intake):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /webhook/wh/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"event_id":'
        )
        await writer.drain()
        writer.transport.abort()  # gone, with 990 bytes still announced

        def noted() -> bool:
            return any("not completed" in r.getMessage() for r in caplog.records)

        await poll_until(noted, failure=lambda: str([r.getMessage() for r in caplog.records]))
        assert intake.accepted == []
        del reader
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


# --- the store's refusal is permanent ---------------------------------------------------------


@pytest.mark.parametrize("text", ["a\x00b"])
async def test_a_value_the_database_refuses_is_refused_for_good(
    database_url: str, store: Store, sim: RunningSimulator, text: str
) -> None:
    """Past the adapters' own check, the store's "data refused" is IntakeRefused (a 4xx, a
    skipped update), never IntakeUnavailable (a 503 the platform retries for ever)."""
    async with harness(store, sim) as h:
        intake = h.engine.intake(CHANNEL)
        if database_url.startswith("postgresql"):
            with pytest.raises(IntakeRefused):
                await intake.accept(engine_inbound("c1", text))
        else:  # SQLite stores a NUL
            assert await intake.accept(engine_inbound("c1", text)) is AcceptResult.ACCEPTED
        assert await intake.accept(engine_inbound("c1", "fine")) is AcceptResult.ACCEPTED
