"""The TextchatV2 client over real HTTP against a small, controllable fake Parloa on 127.0.0.1.

Every test waits on conditions (the client's own answer, an event, a gate), never on a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from bridge.textchat.client import TextchatClient, TextchatResult, Timeouts, _parse_body
from bridge.textchat.context import build_context
from bridge.textchat.errors import (
    BadRequest,
    MalformedResponse,
    RateLimited,
    ServerError,
    SessionNotFound,
    TextchatConnectionError,
    TextchatError,
    TextchatStatusError,
    TextchatTimeout,
    TextchatTransportError,
    Unauthorized,
    UnexpectedStatus,
)
from bridge.textchat.models import (
    ContextItem,
    LaunchEvent,
    MessageEvent,
    QuitEvent,
    TextchatResponse,
    TextElement,
)
from tests.support.net import free_port, start_app
from tests.support.spec_schema import SPEC_PATH, request_validator

TOKEN = "tok-SECRET-123"
RELEASE = "rel-42"


def assert_valid_request(body: Any) -> None:
    """Valid per the spec's schema; only the schema check is left out when the spec is absent
    (``test_the_spec_is_available`` reports that as a skip)."""
    if SPEC_PATH.is_file():
        errors = [e.message for e in request_validator().iter_errors(body)]
        assert not errors, errors


def test_the_spec_is_available() -> None:
    assert request_validator() is not None  # skips, with the reason, when it is absent


# --- the fake Parloa ----------------------------------------------------------------------------


@dataclass
class Reply:
    """What the fake answers. ``body=None`` echoes a valid response for the received request."""

    status: int = 200
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    delay: float = 0.0
    hang: bool = False
    #: stream these chunks with chunked transfer encoding (no Content-Length)
    chunks: list[bytes] | None = None
    #: promise a long body, send these bytes, then drop the connection
    cut: bytes | None = None
    #: wait until this many requests are in flight at once before answering
    gate: int = 0


@dataclass
class Received:
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    raw: bytes
    json: Any


def echo_body(req: Received) -> dict[str, Any]:
    event = req.json["event"]
    return {
        "apiVersion": "chat/v1",
        "releaseId": req.query.get("dialog", ""),
        "requesterId": req.json["requesterId"],
        "sessionId": req.json["sessionId"],
        "conversationId": "conv-" + req.json["sessionId"],
        "endConversation": event["type"] == "quit",
        "responseElements": [
            {"type": "text", "id": "el-1", "content": f"echo: {event.get('text', event['type'])}"}
        ],
    }


class FakeParloa:
    def __init__(self) -> None:
        self.reply = Reply()
        self.requests: list[Received] = []
        self.port = 0
        self.inflight = 0
        self.max_inflight = 0
        self.release = asyncio.Event()  # set at teardown: frees hanging handlers
        self._gate_open = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        received = Received(
            request.path, dict(request.query), CIMultiDict(request.headers), raw, body
        )
        self.requests.append(received)
        reply = self.reply
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            if reply.gate:
                if self.inflight >= reply.gate:
                    self._gate_open.set()
                await self._gate_open.wait()
            if reply.hang:
                await self.release.wait()
            if reply.delay:
                await asyncio.sleep(reply.delay)
            return await self._answer(request, received, reply)
        finally:
            self.inflight -= 1

    async def _answer(
        self, request: web.Request, received: Received, reply: Reply
    ) -> web.StreamResponse:
        headers = {"Content-Type": reply.content_type, **reply.headers}
        if reply.cut is not None:
            resp = web.StreamResponse(status=reply.status, headers=headers)
            resp.content_length = len(reply.cut) + 10_000
            await resp.prepare(request)
            await resp.write(reply.cut)
            assert request.transport is not None
            request.transport.close()
            return resp
        if reply.chunks is not None:
            resp = web.StreamResponse(status=reply.status, headers=headers)
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            with contextlib.suppress(ConnectionError):
                for chunk in reply.chunks:
                    await resp.write(chunk)
                await resp.write_eof()
            return resp
        body = reply.body
        if body is None:
            body = json.dumps(echo_body(received)).encode()
        return web.Response(status=reply.status, body=body, headers=headers)


@pytest.fixture
async def fake() -> AsyncIterator[FakeParloa]:
    parloa = FakeParloa()
    app = web.Application()
    app.router.add_post("/dialoghook", parloa.handle)
    runner, parloa.port = await start_app(app)
    yield parloa
    parloa.release.set()
    await runner.cleanup()


MakeClient = Callable[..., Awaitable[TextchatClient]]


@pytest.fixture
async def make_client(fake: FakeParloa) -> AsyncIterator[MakeClient]:
    async with contextlib.AsyncExitStack() as stack:

        async def make(
            base_url: str | None = None,
            *,
            timeouts: Timeouts = Timeouts(connect=1, read=2),  # noqa: B008
            **kwargs: Any,
        ) -> TextchatClient:
            client = TextchatClient(
                base_url or fake.url, RELEASE, TOKEN, timeouts=timeouts, **kwargs
            )
            return await stack.enter_async_context(client)

        yield make


@pytest.fixture
async def client(make_client: MakeClient) -> TextchatClient:
    return await make_client()


# --- 1. what the client sends -------------------------------------------------------------------


async def test_launch_message_quit_bodies_match_the_spec(
    fake: FakeParloa, client: TextchatClient
) -> None:
    launched = await client.launch("user-1", "sess-1")
    answered = await client.message("Hello textchat!", "user-1", "sess-1")
    quitted = await client.quit("user-1", "sess-1")

    def body(event: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "chat/v1",
            "event": event,
            "requesterId": "user-1",
            "sessionId": "sess-1",
        }

    assert [r.json for r in fake.requests] == [
        body({"type": "launch"}),
        body({"type": "message", "text": "Hello textchat!"}),
        body({"type": "quit"}),
    ]
    for received in fake.requests:
        assert_valid_request(received.json)

    assert isinstance(launched, TextchatResult)
    assert launched.status == 200
    assert launched.response.release_id == RELEASE
    assert launched.response.session_id == "sess-1"
    assert launched.response.conversation_id == "conv-sess-1"
    assert launched.response.end_conversation is False
    element = answered.response.response_elements[0]
    assert isinstance(element, TextElement)
    assert element.content == "echo: Hello textchat!"
    assert quitted.response.end_conversation is True
    assert launched.elapsed >= 0


@pytest.mark.parametrize(
    "text",
    [
        'Grüße aus Köln 👋 — 你好, мир! ☃ \u200b\t\n"quoted" \\ back',
        "",
        "x" * 20_000,
        "a lone surrogate \ud83d from a broken channel payload",
    ],
    ids=["unicode", "empty", "long", "lone-surrogate"],
)
async def test_message_text_arrives_intact_as_utf8_json(
    fake: FakeParloa, client: TextchatClient, text: str
) -> None:
    await client.message(text, "user-ü", "sess-✓")

    (received,) = fake.requests
    received.raw.decode("utf-8")  # the body is valid UTF-8
    assert received.json["event"] == {"type": "message", "text": text}
    assert received.json["requesterId"] == "user-ü"
    assert received.json["sessionId"] == "sess-✓"
    assert_valid_request(received.json)


async def test_context_is_sent_within_the_spec(fake: FakeParloa, client: TextchatClient) -> None:
    items = {f"key{i}": ("v" * 5000 if i % 2 else i) for i in range(150)}
    context = build_context(
        {"platform": "telegram", "isBot": False, "score": 1.5, "nan": float("nan")}, items
    )
    assert len(context) == 100

    await client.message("hi", "user-1", "sess-1", context)
    await client.launch("user-1", "sess-2", [ContextItem(key="name", value="Max")])
    await client.quit("user-1", "sess-2", [ContextItem(key="age", value=20)])
    await client.message("no context", "user-1", "sess-3", [])

    sent = [r.json for r in fake.requests]
    for body in sent:
        assert_valid_request(body)
    assert len(sent[0]["context"]) == 100
    assert sent[0]["context"][:4] == [
        {"key": "platform", "value": "telegram"},
        {"key": "isBot", "value": False},
        {"key": "score", "value": 1.5},
        {"key": "nan", "value": "nan"},
    ]
    assert all(
        len(item["value"]) == 1000
        for item in sent[0]["context"]
        if isinstance(item["value"], str) and item["key"].startswith("key")
    )
    assert sent[1]["context"] == [{"key": "name", "value": "Max"}]
    assert sent[2]["context"] == [{"key": "age", "value": 20}]
    assert "context" not in sent[3]  # an empty context is omitted, not sent as []


async def test_url_query_and_headers(fake: FakeParloa, make_client: MakeClient) -> None:
    client = await make_client(fake.url + "/", user_agent="bridge-test/1")
    await client.launch("u", "s")
    await client.message("a", "u", "s")
    await client.send(MessageEvent(text="b"), "u", "s", request_id="my-request-id")
    await client.send(QuitEvent(), "u", "s", headers={"X-Trace": "t-1"})

    assert client.url == f"{fake.url}/dialoghook?dialog={RELEASE}&platform=textchatV2"
    for received in fake.requests:
        assert received.path == "/dialoghook"
        assert received.query == {"dialog": RELEASE, "platform": "textchatV2"}
        assert received.headers["Authorization"] == f"Bearer {TOKEN}"
        assert received.headers["Content-Type"] == "application/json"
        assert received.headers["Accept"] == "application/json"
        assert received.headers["User-Agent"] == "bridge-test/1"
    ids = [r.headers["X-Request-Id"] for r in fake.requests]
    assert all(ids)
    assert len(set(ids)) == len(ids)
    assert ids[2] == "my-request-id"
    assert fake.requests[3].headers["X-Trace"] == "t-1"


async def test_release_id_is_query_encoded(fake: FakeParloa) -> None:
    release = "rel/ä b&c=d"
    async with TextchatClient(fake.url, release, TOKEN) as client:
        result = await client.launch("u", "s")
    assert fake.requests[0].query == {"dialog": release, "platform": "textchatV2"}
    assert result.response.release_id == release


async def test_result_carries_request_ids(fake: FakeParloa, client: TextchatClient) -> None:
    own = await client.launch("u", "s")
    assert own.request_id == fake.requests[0].headers["X-Request-Id"]
    assert own.correlation_id is None

    fake.reply = Reply(headers={"X-Request-Id": "srv-1", "X-Correlation-Id": "corr-1"})
    theirs = await client.launch("u", "s")
    assert (theirs.request_id, theirs.correlation_id) == ("srv-1", "corr-1")

    passed = await client.send(LaunchEvent(), "u", "s", request_id="mine")
    assert passed.request_id == "srv-1"  # the server's id wins when it names one
    assert fake.requests[-1].headers["X-Request-Id"] == "mine"


# --- 2. status codes ----------------------------------------------------------------------------

STATUS_CASES = [
    (400, BadRequest, False),
    (401, Unauthorized, False),
    (403, Unauthorized, False),
    (404, SessionNotFound, False),
    (429, RateLimited, True),
    (500, ServerError, True),
    (502, ServerError, True),
    (503, ServerError, True),
    (418, UnexpectedStatus, False),
    (408, UnexpectedStatus, True),
]


@pytest.mark.parametrize(("status", "cls", "retryable"), STATUS_CASES)
async def test_status_maps_to_its_error(
    fake: FakeParloa,
    client: TextchatClient,
    status: int,
    cls: type[TextchatStatusError],
    retryable: bool,
) -> None:
    fake.reply = Reply(
        status=status,
        body=b'{"error": "nope,\n  really"}',
        headers={"X-Request-Id": "srv-req-7", "X-Correlation-Id": "corr-9"},
    )
    with pytest.raises(TextchatStatusError) as info:
        await client.message("hi", "u", "s")

    exc = info.value
    assert type(exc) is cls
    assert exc.status == status
    assert exc.retryable is retryable
    assert exc.request_id == "srv-req-7"
    assert exc.correlation_id == "corr-9"
    assert exc.body_excerpt == '{"error": "nope, really"}'
    assert str(status) in str(exc)
    assert "srv-req-7" in str(exc)
    assert "corr-9" in str(exc)
    assert exc.hint
    # the client never retries: exactly one request reached Parloa
    assert len(fake.requests) == 1


@pytest.mark.parametrize("status", [400, 401])
async def test_permanent_errors_are_sent_once_and_carry_our_request_id(
    fake: FakeParloa, client: TextchatClient, status: int
) -> None:
    fake.reply = Reply(status=status, body=b"")
    with pytest.raises(TextchatStatusError) as info:
        await client.launch("u", "s")
    assert len(fake.requests) == 1
    assert info.value.retryable is False
    assert info.value.request_id == fake.requests[0].headers["X-Request-Id"]
    assert info.value.correlation_id is None
    assert info.value.body_excerpt == ""
    assert str(info.value).startswith(f"Parloa answered {status} (request_id=")


def _http_date(offset: float) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=offset), usegmt=True)


@pytest.mark.parametrize(
    ("header", "low", "high"),
    [
        ("7", 7.0, 7.0),
        ("0.5", 0.5, 0.5),
        ("-3", 0.0, 0.0),
        (120, 115.0, 121.0),  # an HTTP-date this many seconds from now
        (-3600, 0.0, 0.0),
    ],
    ids=["seconds", "fraction", "negative", "http-date", "past-date"],
)
async def test_rate_limited_retry_after(
    fake: FakeParloa, client: TextchatClient, header: str | int, low: float, high: float
) -> None:
    value = _http_date(header) if isinstance(header, int) else header
    fake.reply = Reply(status=429, body=b"slow down", headers={"Retry-After": value})
    with pytest.raises(RateLimited) as info:
        await client.launch("u", "s")
    assert info.value.retry_after is not None
    assert low <= info.value.retry_after <= high
    assert info.value.status == 429
    assert info.value.retryable is True


@pytest.mark.parametrize("headers", [{}, {"Retry-After": ""}, {"Retry-After": "soon"}])
async def test_rate_limited_without_usable_retry_after(
    fake: FakeParloa, client: TextchatClient, headers: dict[str, str]
) -> None:
    fake.reply = Reply(status=429, body=b"", headers=headers)
    with pytest.raises(RateLimited) as info:
        await client.launch("u", "s")
    assert info.value.retry_after is None


# --- 3. transport failures ----------------------------------------------------------------------


async def test_hanging_server_times_out(fake: FakeParloa, make_client: MakeClient) -> None:
    client = await make_client(timeouts=Timeouts(connect=1, read=0.3))
    fake.reply = Reply(hang=True)
    started = time.monotonic()
    with pytest.raises(TextchatError) as info:
        await client.message("hi", "u", "s")
    elapsed = time.monotonic() - started

    assert type(info.value) is TextchatTimeout
    assert info.value.retryable is True
    assert "read" in str(info.value)
    assert info.value.request_id == fake.requests[0].headers["X-Request-Id"]
    assert 0.25 <= elapsed < 2.0


async def test_body_that_stalls_times_out(
    fake: FakeParloa, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headers arrive, the body never completes: still a timeout, not a hang."""
    client = await make_client(timeouts=Timeouts(connect=1, read=0.3))

    async def stall(request: web.Request, received: Received, reply: Reply) -> Any:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b'{"apiVersion": ')
        await fake.release.wait()
        return resp

    monkeypatch.setattr(fake, "_answer", stall)
    with pytest.raises(TextchatError) as info:
        await client.message("hi", "u", "s")
    assert type(info.value) is TextchatTimeout


async def test_connection_refused(make_client: MakeClient) -> None:
    client = await make_client(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TextchatError) as info:
        await client.launch("u", "s")
    assert type(info.value) is TextchatConnectionError
    assert info.value.retryable is True
    assert info.value.request_id
    assert "127.0.0.1" in str(info.value)


async def test_connection_dropped_mid_response(fake: FakeParloa, client: TextchatClient) -> None:
    fake.reply = Reply(cut=b'{"apiVersion": "chat/v1", "releaseId": ')
    with pytest.raises(TextchatError) as info:
        await client.launch("u", "s")
    assert isinstance(info.value, TextchatTransportError)
    assert info.value.retryable is True
    # the client still works afterwards (the broken connection left the pool)
    fake.reply = Reply()
    assert (await client.launch("u", "s")).status == 200


# --- 4. malformed responses ---------------------------------------------------------------------

VALID: dict[str, Any] = {
    "apiVersion": "chat/v1",
    "releaseId": RELEASE,
    "requesterId": "u",
    "sessionId": "s",
    "endConversation": False,
    "responseElements": [{"type": "text", "content": "hi"}],
}
REQUIRED = [
    "apiVersion",
    "releaseId",
    "requesterId",
    "sessionId",
    "endConversation",
    "responseElements",
]


def _without(name: str) -> bytes:
    return json.dumps({k: v for k, v in VALID.items() if k != name}).encode()


def _with(**fields: Any) -> bytes:
    return json.dumps({**VALID, **fields}).encode()


def _nested(levels: int) -> Any:
    value: Any = {}
    for _ in range(levels - 1):
        value = {"x": value}
    return value


MALFORMED: list[Any] = [
    pytest.param(b"not json at all", "application/json", id="not-json"),
    pytest.param(b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html", id="html"),
    pytest.param(b"", "application/json", id="empty"),
    pytest.param(b"   \n", "application/json", id="whitespace"),
    pytest.param(b"[]", "application/json", id="json-array"),
    pytest.param(json.dumps([VALID]).encode(), "application/json", id="array-of-valid"),
    pytest.param(b'"a json string"', "application/json", id="json-string"),
    pytest.param(b"null", "application/json", id="json-null"),
    pytest.param(b"42", "application/json", id="json-number"),
    pytest.param(b'{"apiVersion": "chat/v1",', "application/json", id="truncated"),
    *(pytest.param(_without(name), "application/json", id=f"missing-{name}") for name in REQUIRED),
    pytest.param(_with(endConversation="true"), "application/json", id="endConversation-str"),
    pytest.param(_with(endConversation=1), "application/json", id="endConversation-int"),
    pytest.param(
        _with(responseElements={"type": "text", "content": "hi"}),
        "application/json",
        id="responseElements-object",
    ),
    pytest.param(_with(responseElements=None), "application/json", id="responseElements-null"),
    pytest.param(_with(sessionId=5), "application/json", id="sessionId-int"),
    pytest.param(_with(apiVersion=None), "application/json", id="apiVersion-null"),
    pytest.param(_with(conversationId=7), "application/json", id="conversationId-int"),
    pytest.param(_with(note="x")[:-2] + b'\xff\xfe"}', "application/json", id="invalid-utf8"),
    pytest.param(b"\xff\xfe\x00\x00garbage", "application/json", id="binary"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, "application/json", id="deeply-nested"),
    pytest.param(_with(deep=_nested(64)), "application/json", id="object-65-levels-deep"),
]


@pytest.mark.parametrize(("body", "content_type"), MALFORMED)
async def test_malformed_response(
    fake: FakeParloa, client: TextchatClient, body: bytes, content_type: str
) -> None:
    fake.reply = Reply(body=body, content_type=content_type, headers={"X-Request-Id": "srv-m"})
    with pytest.raises(TextchatError) as info:
        await client.message("hi", "u", "s")
    assert type(info.value) is MalformedResponse
    assert info.value.retryable is False
    assert info.value.request_id == "srv-m"
    assert len(str(info.value)) < 500  # a reason, not the whole body


async def test_oversized_body_with_content_length(
    fake: FakeParloa, make_client: MakeClient
) -> None:
    client = await make_client(max_body_bytes=1024)
    fake.reply = Reply(body=_with(padding="x" * 4096))
    with pytest.raises(TextchatError) as info:
        await client.launch("u", "s")
    assert type(info.value) is MalformedResponse
    assert "1024 byte limit" in str(info.value)

    fake.reply = Reply()  # a normal answer still fits
    assert (await client.launch("u", "s")).status == 200


async def test_oversized_chunked_body(fake: FakeParloa, make_client: MakeClient) -> None:
    client = await make_client(max_body_bytes=1024)
    fake.reply = Reply(chunks=[b'{"padding": "'] + [b"x" * 1000] * 20 + [b'"}'])
    with pytest.raises(TextchatError) as info:
        await client.launch("u", "s")
    assert type(info.value) is MalformedResponse
    assert "1024 byte limit" in str(info.value)


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"deep": _nested(63)}, id="64-levels-deep"),
        pytest.param({"note": "[{" * 500}, id="brackets-inside-a-string"),
    ],
)
async def test_deep_but_allowed_bodies_are_accepted(
    fake: FakeParloa, client: TextchatClient, extra: dict[str, Any]
) -> None:
    fake.reply = Reply(body=_with(**extra))
    assert (await client.launch("u", "s")).status == 200


async def test_chunked_valid_body_is_accepted(fake: FakeParloa, client: TextchatClient) -> None:
    body = _with(sessionId="s")
    fake.reply = Reply(chunks=[body[i : i + 7] for i in range(0, len(body), 7)])
    result = await client.message("hi", "u", "s")
    assert result.response.session_id == "s"


JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
ELEMENTS = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "payload", "cross_card", "carousel", ""])},
        optional={
            "content": JSON_VALUES,
            "id": JSON_VALUES,
            "title": JSON_VALUES,
            "image": JSON_VALUES,
        },
    ),
)
NEAR_VALID = st.builds(
    lambda base, drop, extra, elements: {
        **{k: v for k, v in base.items() if k not in drop},
        **extra,
        **({"responseElements": elements} if elements is not None else {}),
    },
    st.just(VALID),
    st.sets(st.sampled_from(REQUIRED), max_size=2),
    st.dictionaries(
        st.sampled_from([*REQUIRED, "conversationId", "transactionId", "somethingNew"]),
        JSON_VALUES,
        max_size=2,
    ),
    st.none() | st.lists(ELEMENTS, max_size=5),
)
BODIES = st.one_of(
    st.binary(max_size=200),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    NEAR_VALID.map(lambda v: json.dumps(v, ensure_ascii=False).encode()),
    NEAR_VALID.map(lambda v: json.dumps(v).encode()[: len(json.dumps(v)) // 2]),
)


@settings(
    derandomize=True,
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(BODIES)
def test_fuzz_body_parsing_only_yields_a_response_or_malformed(raw: bytes) -> None:
    try:
        parsed = _parse_body(raw, "rid", "cid")
    except MalformedResponse as exc:
        assert exc.request_id == "rid"
        assert exc.correlation_id == "cid"
        str(exc)
        return
    assert isinstance(parsed, TextchatResponse)
    parsed.to_wire()
    for element in parsed.response_elements:
        assert element.type is not None


# --- 6. concurrency -----------------------------------------------------------------------------


@pytest.mark.slow  # a wall-clock bound: run alone (the next test is its deterministic twin)
async def test_hundred_concurrent_sessions_are_not_serialised(
    fake: FakeParloa, client: TextchatClient
) -> None:
    fake.reply = Reply(delay=0.2)
    started = time.monotonic()
    results = await asyncio.gather(
        *(client.message(f"hi {i}", f"user-{i}", f"sess-{i}") for i in range(100))
    )
    elapsed = time.monotonic() - started

    assert elapsed < 1.5, f"100 conversations with 200 ms latency took {elapsed:.2f}s"
    assert [r.response.session_id for r in results] == [f"sess-{i}" for i in range(100)]
    assert len(fake.requests) == 100


async def test_hundred_requests_are_in_flight_at_once(
    fake: FakeParloa, client: TextchatClient
) -> None:
    """Deterministic: no request is answered before all 100 have arrived at the fake."""
    fake.reply = Reply(gate=100)
    async with asyncio.timeout(10):
        results = await asyncio.gather(
            *(client.launch(f"user-{i}", f"sess-{i}") for i in range(100))
        )
    assert fake.max_inflight == 100
    assert len(results) == 100


# --- 7. the token never leaks -------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__]


async def test_token_never_leaks(
    fake: FakeParloa, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in (
        "aiohttp",
        "aiohttp.client",
        "aiohttp.access",
        "aiohttp.server",
        "aiohttp.web",
        "aiohttp.internal",
        "asyncio",
        "bridge",
        "bridge.textchat",
    ):
        caplog.set_level(logging.DEBUG, logger=name)

    client = await make_client()
    slow = await make_client(timeouts=Timeouts(connect=1, read=0.3))
    small = await make_client(max_body_bytes=64)
    refused = await make_client(f"http://127.0.0.1:{free_port()}")

    await client.launch("u", "s", build_context({"name": "Max"}))
    await client.message("hello", "u", "s")
    await client.quit("u", "s")

    errors: list[TextchatError] = []

    async def fails(c: TextchatClient, reply: Reply | None = None) -> None:
        if reply is not None:
            fake.reply = reply
        with pytest.raises(TextchatError) as info:
            await c.message("hi", "u", "s")
        errors.append(info.value)

    for status, *_ in STATUS_CASES:
        await fails(client, Reply(status=status, body=b'{"error": "x"}'))
    await fails(client, Reply(status=429, headers={"Retry-After": "3"}))
    for body, _ in (p.values for p in MALFORMED):
        await fails(client, Reply(body=body))
    await fails(small, Reply())
    await fails(client, Reply(chunks=[b"x" * 100] * 20))
    await fails(small, Reply(chunks=[b"x" * 100] * 20))
    await fails(client, Reply(cut=b"{"))
    await fails(slow, Reply(hang=True))
    await fails(refused)

    # the token was really sent, so not finding it below means something
    assert fake.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert {type(e) for e in errors} >= {
        BadRequest,
        Unauthorized,
        SessionNotFound,
        RateLimited,
        ServerError,
        UnexpectedStatus,
        MalformedResponse,
        TextchatTimeout,
        TextchatConnectionError,
    }

    texts = [repr(client), str(client), repr(vars(client)), client.url, caplog.text]
    texts += [record.getMessage() for record in caplog.records]
    texts += [repr(record.args) for record in caplog.records]
    for error in errors:
        for exc in _chain(error):
            texts += [str(exc), repr(exc), repr(vars(exc)) if hasattr(exc, "__dict__") else ""]
        texts.append("".join(traceback.format_exception(error)))
    leaks = [text for text in texts if TOKEN in text]
    assert not leaks, leaks[:3]


# --- 9. lifecycle -------------------------------------------------------------------------------


async def test_send_before_start_raises() -> None:
    client = TextchatClient("http://127.0.0.1:1", RELEASE, TOKEN)
    with pytest.raises(RuntimeError, match="start"):
        await client.launch("u", "s")
    await client.close()  # closing a never-started client is fine


async def test_async_with_opens_and_closes(fake: FakeParloa) -> None:
    client = TextchatClient(fake.url, RELEASE, TOKEN)
    async with client as entered:
        assert entered is client
        assert (await client.launch("u", "s")).status == 200
    with pytest.raises(RuntimeError):
        await client.launch("u", "s")
    await client.close()
    await client.close()  # twice is fine


async def test_start_is_idempotent_and_restartable(fake: FakeParloa) -> None:
    client = TextchatClient(fake.url, RELEASE, TOKEN)
    await client.start()
    await client.start()
    await client.launch("u", "s")
    await client.close()
    await client.start()
    await client.launch("u", "s")
    await client.close()
    await client.close()
    assert len(fake.requests) == 2
