"""The webhook channel over real HTTP on 127.0.0.1: a fake intake (the core's side), the
adapter's routes served by aiohttp, and a fake receiver standing in for ``deliver_url``.

Nothing waits on a sleep: tests wait on the adapter's own answers or on events."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from pydantic import ValidationError

from adapters.webhook.channel import WEBHOOK, WebhookAdapter, WebhookOptions
from adapters.webhook.convert import (
    InvalidEvent,
    TextTooLong,
    parse_body,
    render,
    to_inbound,
    verify_signature,
)
from bridge.channel import (
    AdapterServices,
    ChannelType,
    Delivery,
    DeliveryError,
    DeliveryRejected,
    DeliveryRetryable,
    Inbound,
    InboundKind,
    RecipientGone,
)
from bridge.channelkit import MAX_RETRY_AFTER_SECONDS
from bridge.channels import channel_type
from bridge.textchat.models import ResponseElement, parse_element
from tests.adapters.webhook.support import FORGERIES, Answer, Receiver, forged_headers
from tests.support.intake import MemoryIntake
from tests.support.net import free_port, local_url, start_app
from tests.support.signing import webhook_signature, webhook_signed_headers

SECRET = "whsec-SECRET-0123456789abcdef"
SERVICES = AdapterServices(public_url=None, unsupported_text="text only, please")


async def serve(routes: Sequence[web.RouteDef]) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.add_routes(routes)
    return await start_app(app)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    fake = Receiver()
    runner, fake.port = await serve([web.post("/deliver", fake.handle)])
    yield fake
    fake.release.set()
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(trust_env=False) as session:
        yield session


MakeAdapter = Callable[..., Awaitable[WebhookAdapter]]


@pytest.fixture
async def make_adapter(receiver: Receiver) -> AsyncIterator[MakeAdapter]:
    """A started adapter (unless start=False) with options overridden by keyword."""
    made: list[WebhookAdapter] = []

    async def make(
        *, start: bool = True, intake: MemoryIntake | None = None, **options: Any
    ) -> WebhookAdapter:
        opts = WebhookOptions.model_validate(
            {"secret": SECRET, "deliver_url": receiver.url, **options}
        )
        adapter = WebhookAdapter("web", opts, SERVICES)
        made.append(adapter)
        if start:
            await adapter.start(intake or MemoryIntake("web"))
        return adapter

    yield make
    for adapter in made:
        await adapter.stop()


@dataclass
class Channel:
    adapter: WebhookAdapter
    intake: MemoryIntake
    url: str  # the events route


OpenChannel = Callable[..., Awaitable[Channel]]


@pytest.fixture
async def open_channel(make_adapter: MakeAdapter) -> AsyncIterator[OpenChannel]:
    """An adapter (started unless start=False, options overridden by keyword) with its own
    in-memory intake, its routes served over HTTP."""
    runners: list[web.AppRunner] = []

    async def make(*, start: bool = True, **options: Any) -> Channel:
        intake = MemoryIntake("web")
        adapter = await make_adapter(start=start, intake=intake, **options)
        runner, port = await serve(adapter.routes())
        runners.append(runner)
        return Channel(adapter, intake, f"{local_url(port)}/webhook/web/events")

    yield make
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def channel(open_channel: OpenChannel) -> Channel:
    return await open_channel()


def sign(raw: bytes, timestamp: str | None = None, secret: str = SECRET) -> dict[str, str]:
    return webhook_signed_headers(secret, raw, timestamp)


def event(**fields: Any) -> dict[str, Any]:
    return {"event_id": "ev-1", "user_id": "u-1", "text": "hello", **fields}


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: Any,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, Any], CIMultiDict[str]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(url, data=raw, headers=headers if headers is not None else sign(raw)) as r:
        return r.status, await r.json(), CIMultiDict(r.headers)


# --- inbound over HTTP ---------------------------------------------------------------------------


async def test_a_signed_event_is_accepted_as_the_right_inbound(
    channel: Channel, http: aiohttp.ClientSession
) -> None:
    body = event(conversation_id="c-9", context={"page": "/help", "vip": True, "n": 3, "x": 1.5})
    status, answer, _ = await post(http, channel.url, body)
    assert (status, answer) == (200, {"status": "accepted"})
    context = {"platform": "webhook", "page": "/help", "vip": True, "n": 3, "x": 1.5}
    address = {"conversation_id": "c-9", "user_id": "u-1"}
    assert channel.intake.accepted == [
        Inbound("ev-1", "c-9", "u-1", InboundKind.TEXT, "hello", address, context)
    ]


async def test_a_redelivered_event_is_a_duplicate(
    channel: Channel, http: aiohttp.ClientSession
) -> None:
    assert (await post(http, channel.url, event()))[:2] == (200, {"status": "accepted"})
    assert (await post(http, channel.url, event(text="again")))[:2] == (
        200,
        {"status": "duplicate"},
    )
    assert [e.text for e in channel.intake.accepted] == ["hello"]


@pytest.mark.parametrize("forgery", FORGERIES)
async def test_unauthentic_requests_get_401_and_nothing_is_accepted(
    channel: Channel, http: aiohttp.ClientSession, forgery: str
) -> None:
    raw = json.dumps(event()).encode()
    changed = json.dumps(event(text="something else")).encode()
    headers = forged_headers(forgery, raw, SECRET, changed)
    status, answer, _ = await post(http, channel.url, raw, headers)
    assert status == 401
    assert set(answer) == {"error"}
    assert channel.intake.accepted == []
    assert not channel.intake.entered.is_set()


async def test_a_signature_within_the_tolerance_is_accepted(
    channel: Channel, http: aiohttp.ClientSession
) -> None:
    raw = json.dumps(event()).encode()
    status, _, _ = await post(http, channel.url, raw, sign(raw, str(int(time.time()) - 250)))
    assert status == 200


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"event_id": "e", "user_id": "u", "text": "x", "context": {"a": NaN}}', "NaN"),
        (b"[1, 2]", "must be a JSON object"),
        (json.dumps({"user_id": "u", "text": "hi"}).encode(), "event_id is required"),
        (json.dumps({"event_id": "e", "text": "hi"}).encode(), "user_id is required"),
        (json.dumps(event(event_id="")).encode(), "event_id must be 1 to 255"),
        (json.dumps(event(user_id="u" * 256)).encode(), "user_id must be 1 to 255"),
        (json.dumps(event(conversation_id=7)).encode(), "conversation_id must be a string"),
        (json.dumps(event(type="photo")).encode(), "unknown type"),
        (json.dumps({"event_id": "e", "user_id": "u"}).encode(), "text is required"),
        (json.dumps(event(type="button", text=" ")).encode(), "must not be empty"),
        (json.dumps(event(text=["hi"])).encode(), "text must be a string"),
        (json.dumps(event(context=[1])).encode(), "context must be an object"),
        (
            json.dumps(event(context={f"k{i}": i for i in range(51)})).encode(),
            "more than 50 keys",
        ),
        (json.dumps(event(context={"a": {"b": 1}})).encode(), "context.a must be a string"),
        (json.dumps(event(context={"a": None})).encode(), "context.a must be a string"),
        (json.dumps(event(context={"a": "x" * 1001})).encode(), "longer than 1000"),
    ],
)
async def test_unusable_bodies_get_400_with_a_one_line_reason(
    channel: Channel, http: aiohttp.ClientSession, raw: bytes, reason: str
) -> None:
    status, answer, _ = await post(http, channel.url, raw)
    assert status == 400
    assert reason in answer["error"]
    assert "\n" not in answer["error"]
    assert channel.intake.accepted == []


async def test_too_long_text_gets_413_with_a_reason(
    open_channel: OpenChannel, http: aiohttp.ClientSession
) -> None:
    ch = await open_channel(max_text_length=10)
    assert (await post(http, ch.url, event(text="x" * 10)))[0] == 200
    status, answer, _ = await post(http, ch.url, event(event_id="ev-2", text="x" * 11))
    assert status == 413
    assert "longer than 10 characters" in answer["error"]
    assert [e.event_id for e in ch.intake.accepted] == ["ev-1"]


async def test_too_large_body_gets_413(
    open_channel: OpenChannel, http: aiohttp.ClientSession
) -> None:
    ch = await open_channel(max_body_bytes=1024)
    status, answer, _ = await post(http, ch.url, event(padding="p" * 2000))
    assert status == 413
    assert "larger than 1024 bytes" in answer["error"]

    # Without a Content-Length (chunked), the limit holds while reading.
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b" " * 512

    async with http.post(ch.url, data=chunks(), headers=sign(b"")) as resp:
        assert resp.status == 413
    assert ch.intake.accepted == []


async def test_intake_unavailable_gets_503_with_retry_after(
    channel: Channel, http: aiohttp.ClientSession
) -> None:
    channel.intake.unavailable = True
    status, answer, headers = await post(http, channel.url, event())
    assert status == 503
    assert headers["Retry-After"] == "5"
    assert "error" in answer
    channel.intake.unavailable = False
    assert (await post(http, channel.url, event()))[:2] == (200, {"status": "accepted"})


async def test_before_start_and_after_stop_events_get_503(
    open_channel: OpenChannel, http: aiohttp.ClientSession
) -> None:
    ch = await open_channel(start=False)
    adapter, intake = ch.adapter, ch.intake
    status, _, headers = await post(http, ch.url, event())
    assert (status, headers["Retry-After"]) == (503, "5")
    assert adapter.status() == {"started": False}

    await adapter.start(intake)
    assert (await post(http, ch.url, event()))[0] == 200
    await adapter.stop()
    await adapter.stop()  # idempotent
    assert (await post(http, ch.url, event(event_id="ev-2")))[0] == 503
    assert [e.event_id for e in intake.accepted] == ["ev-1"]


async def test_the_answer_waits_for_the_commit(
    channel: Channel, http: aiohttp.ClientSession
) -> None:
    channel.intake.hold = asyncio.Event()
    request = asyncio.create_task(post(http, channel.url, event()))
    await channel.intake.entered.wait()
    # accept has not returned: the handler is suspended inside it, no answer can exist yet.
    assert not request.done()
    channel.intake.hold.set()
    assert (await request)[:2] == (200, {"status": "accepted"})


# --- inbound, the pure conversion ---------------------------------------------------------------


def test_to_inbound_defaults() -> None:
    inbound = to_inbound({"event_id": "e", "user_id": "u", "text": "hi", "future_field": 1})
    address = {"conversation_id": "u", "user_id": "u"}
    assert inbound == Inbound(
        "e", "u", "u", InboundKind.TEXT, "hi", address, {"platform": "webhook"}
    )


@pytest.mark.parametrize("kind", ["start", "stop", "restart", "unsupported"])
def test_to_inbound_kinds_without_text(kind: str) -> None:
    inbound = to_inbound({"event_id": "e", "user_id": "u", "type": kind})
    assert (inbound.kind, inbound.text) == (InboundKind(kind), "")


def test_to_inbound_button_carries_the_chip_value() -> None:
    inbound = to_inbound(
        {"event_id": "e", "user_id": "u", "conversation_id": "c", "type": "button", "text": "yes"}
    )
    assert (inbound.kind, inbound.text, inbound.conversation_key) == (
        InboundKind.BUTTON,
        "yes",
        "c",
    )


def test_to_inbound_limits_and_errors() -> None:
    assert to_inbound(event(text="x" * 5), max_text_length=5).text == "xxxxx"
    with pytest.raises(TextTooLong) as too_long:
        to_inbound(event(text="x" * 6), max_text_length=5)
    assert too_long.value.status == 413
    with pytest.raises(InvalidEvent) as bad:
        to_inbound(event(type="sticker"))
    assert bad.value.status == 400
    assert "unknown type" in bad.value.reason
    with pytest.raises(InvalidEvent, match="not valid Unicode"):
        to_inbound(event(text="\ud800"))
    with pytest.raises(InvalidEvent, match="finite"):
        to_inbound(event(context={"f": float("inf")}))
    with pytest.raises(InvalidEvent, match="context keys"):
        to_inbound(event(context={"": 1}))
    assert to_inbound(event(context={f"k{i}": i for i in range(50)})).context["k49"] == 49
    with pytest.raises(InvalidEvent, match="must be a JSON object"):
        to_inbound("hello")
    with pytest.raises(InvalidEvent, match="not valid JSON"):
        parse_body(b'{"a": Infinity}')


def test_verify_signature() -> None:
    raw = b'{"a":1}'
    headers = sign(raw, "1000")
    key = SECRET.encode()
    good = headers["X-Bridge-Signature"]
    assert verify_signature(key, "1000", good, raw, now=1000, tolerance=300) is None
    assert verify_signature(key, "1000", good.upper().replace("V1=", "v1="), raw, 1000, 300) is None
    assert verify_signature(key, "1000", good, raw, now=1301, tolerance=300) == "stale timestamp"
    assert verify_signature(key, "1000", good, raw + b" ", 1000, 300) == "invalid signature"
    assert verify_signature(key, "1000", "v1=é", raw, 1000, 300) == "invalid signature"
    assert verify_signature(key, None, good, raw, 1000, 300) == "missing signature headers"
    assert verify_signature(key, "inf", good, raw, 1000, 300) == "invalid timestamp"


# --- delivery -----------------------------------------------------------------------------------

ELEMENTS: list[ResponseElement] = [
    parse_element({"type": "text", "content": "Hi there", "id": "el-1"}),
    parse_element({"type": "payload", "content": {"suggestionChips": ["yes", "no"]}}),
    parse_element({"type": "hologram", "beam": 3}),
]


@dataclass
class Progress:
    calls: list[tuple[int, str | None]] = field(default_factory=list)

    async def __call__(self, index: int, message_id: str | None) -> None:
        self.calls.append((index, message_id))


def delivery(progress: Progress, parts_done: int = 0, **address: Any) -> Delivery:
    return Delivery(
        outbox_id=41,
        conversation_key="c-1",
        address=address or {"conversation_id": "c-1", "user_id": "u-1"},
        elements=ELEMENTS,
        parts_done=parts_done,
        progress=progress,
    )


def test_render() -> None:
    assert render(delivery(Progress())) == {
        "outbox_id": 41,
        "conversation_id": "c-1",
        "user_id": "u-1",
        "elements": [
            {"type": "text", "content": "Hi there", "id": "el-1"},
            {"type": "payload", "content": {"suggestionChips": ["yes", "no"]}},
            {"type": "hologram", "beam": 3},
        ],
    }
    with pytest.raises(DeliveryRejected, match="conversation_id"):
        render(delivery(Progress(), chat="elsewhere"))


async def test_deliver_posts_signed_json_the_receiver_can_verify(
    make_adapter: MakeAdapter, receiver: Receiver
) -> None:
    adapter = await make_adapter()
    progress = Progress()
    await adapter.deliver(delivery(progress))
    [request] = receiver.requests
    assert request.json == render(delivery(progress))
    assert request.headers["Content-Type"] == "application/json"
    ts = request.headers["X-Bridge-Timestamp"]
    assert abs(int(ts) - time.time()) < 60
    assert request.headers["X-Bridge-Signature"] == webhook_signature(SECRET, ts, request.raw)
    assert progress.calls == [(0, "m-1")]


async def test_deliver_without_a_message_id(make_adapter: MakeAdapter, receiver: Receiver) -> None:
    adapter = await make_adapter()
    receiver.answers = [Answer(status=204, body=b""), Answer(status=200, body=b"ok")]
    first, second = Progress(), Progress()
    await adapter.deliver(delivery(first))
    await adapter.deliver(delivery(second))
    assert first.calls == second.calls == [(0, None)]


async def test_an_already_sent_delivery_sends_nothing(
    make_adapter: MakeAdapter, receiver: Receiver
) -> None:
    adapter = await make_adapter()
    progress = Progress()
    await adapter.deliver(delivery(progress, parts_done=1))
    assert receiver.requests == []
    assert progress.calls == []


async def test_429_is_rate_limited_with_retry_after(
    make_adapter: MakeAdapter, receiver: Receiver
) -> None:
    adapter = await make_adapter()
    receiver.default = Answer(
        status=429, body=b'{"error":"slow down"}', headers={"Retry-After": "7"}
    )
    progress = Progress()
    with pytest.raises(DeliveryRetryable) as caught:
        await adapter.deliver(delivery(progress))
    assert (caught.value.rate_limited, caught.value.retry_after) == (True, 7.0)
    assert "429" in str(caught.value)
    assert progress.calls == []


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("inf", MAX_RETRY_AFTER_SECONDS), ("1e309", MAX_RETRY_AFTER_SECONDS), ("nan", None)],
)
async def test_a_retry_after_of_for_ever_is_capped(
    make_adapter: MakeAdapter, receiver: Receiver, header: str, seconds: float | None
) -> None:
    """A receiver answering ``Retry-After: inf`` must not stall the conversation's outbox for
    good; one answering nonsense leaves the wait to the engine's backoff."""
    adapter = await make_adapter()
    receiver.default = Answer(status=429, body=b"", headers={"Retry-After": header})
    with pytest.raises(DeliveryRetryable) as caught:
        await adapter.deliver(delivery(Progress()))
    assert caught.value.retry_after == seconds


@pytest.mark.parametrize("header", ["0", "0.2", "-5", "Wed, 21 Oct 2015 07:28:00 GMT", None])
async def test_a_429_without_a_usable_wait_counts_as_an_attempt(
    make_adapter: MakeAdapter, receiver: Receiver, header: str | None
) -> None:
    """``Retry-After: 0`` (or none, or a past date) from a receiver that keeps answering 429
    must not retry at once for ever: it is an ordinary retry, backed off and counted against
    the delivery's attempts (a rate-limited retry is not counted)."""
    adapter = await make_adapter()
    headers = {"Retry-After": header} if header is not None else {}
    receiver.default = Answer(status=429, body=b"", headers=headers)
    with pytest.raises(DeliveryRetryable) as caught:
        await adapter.deliver(delivery(Progress()))
    assert (caught.value.rate_limited, caught.value.retry_after) == (False, None)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, DeliveryRetryable),
        (503, DeliveryRetryable),
        (410, RecipientGone),
        (400, DeliveryRejected),
        (401, DeliveryRejected),
        (404, DeliveryRejected),
        (302, DeliveryRejected),
    ],
)
async def test_status_outcomes(
    make_adapter: MakeAdapter, receiver: Receiver, status: int, error: type[DeliveryError]
) -> None:
    adapter = await make_adapter()
    receiver.default = Answer(status=status, body=b"nope", headers={"Location": "/elsewhere"})
    progress = Progress()
    with pytest.raises(error) as caught:
        await adapter.deliver(delivery(progress))
    assert type(caught.value) is error
    if isinstance(caught.value, DeliveryRetryable):
        assert not caught.value.rate_limited
    assert progress.calls == []
    assert len(receiver.requests) == 1  # no redirect followed


async def test_a_closed_port_is_retryable(make_adapter: MakeAdapter) -> None:
    adapter = await make_adapter(deliver_url=f"http://127.0.0.1:{free_port()}/deliver")
    with pytest.raises(DeliveryRetryable, match="unreachable"):
        await adapter.deliver(delivery(Progress()))


async def test_a_timeout_is_retryable(make_adapter: MakeAdapter, receiver: Receiver) -> None:
    adapter = await make_adapter(request_timeout_seconds=0.2)
    receiver.default = Answer(hang=True)
    progress = Progress()
    with pytest.raises(DeliveryRetryable, match="did not answer"):
        await adapter.deliver(delivery(progress))
    assert progress.calls == []


async def test_deliver_when_not_started_is_retryable(make_adapter: MakeAdapter) -> None:
    adapter = await make_adapter(start=False)
    with pytest.raises(DeliveryRetryable, match="not running"):
        await adapter.deliver(delivery(Progress()))


async def test_typing_is_sent_only_when_configured(
    make_adapter: MakeAdapter, receiver: Receiver
) -> None:
    address = {"conversation_id": "c-1", "user_id": "u-1"}
    await (await make_adapter()).typing(address)
    assert receiver.requests == []

    typing_adapter = await make_adapter(send_typing=True)
    await typing_adapter.typing(address)
    [request] = receiver.requests
    assert request.json == {"typing": True, "conversation_id": "c-1", "user_id": "u-1"}
    ts = request.headers["X-Bridge-Timestamp"]
    assert request.headers["X-Bridge-Signature"] == webhook_signature(SECRET, ts, request.raw)

    # Failures are swallowed.
    receiver.default = Answer(status=500)
    await typing_adapter.typing(address)
    await typing_adapter.typing({"somewhere": "else"})
    closed = await make_adapter(
        send_typing=True, deliver_url=f"http://127.0.0.1:{free_port()}/deliver"
    )
    await closed.typing(address)


# --- options, registry, secrecy -----------------------------------------------------------------


def test_options() -> None:
    opts = WebhookOptions.model_validate({"secret": SECRET, "deliver_url": "https://x.test/hook"})
    assert (opts.max_text_length, opts.max_body_bytes, opts.send_typing) == (4096, 65536, False)
    assert (opts.request_timeout_seconds, opts.signature_tolerance_seconds) == (10.0, 300.0)
    for bad in (
        {"secret": "too-short", "deliver_url": "https://x.test/"},
        {"secret": SECRET, "deliver_url": "ftp://x.test/"},
        {"secret": SECRET, "deliver_url": "not a url"},
        {"secret": SECRET},
        {"secret": SECRET, "deliver_url": "https://x.test/", "colour": "blue"},
        {"secret": SECRET, "deliver_url": "https://x.test/", "request_timeout_seconds": 0},
    ):
        with pytest.raises(ValidationError) as caught:
            WebhookOptions.model_validate(bad)
        assert "too-short" not in str(caught.value)


def test_registry_entry() -> None:
    entry: ChannelType = channel_type("webhook")
    assert entry is WEBHOOK
    assert entry.options_model is WebhookOptions
    adapter = entry.create("web", {"secret": SECRET, "deliver_url": "http://h.test/"}, SERVICES)
    assert isinstance(adapter, WebhookAdapter)
    assert [r.path for r in adapter.routes()] == ["/webhook/web/events"]


async def test_the_secret_never_shows(
    channel: Channel,
    make_adapter: MakeAdapter,
    receiver: Receiver,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await post(http, channel.url, event())
    await post(http, channel.url, event())
    await post(http, channel.url, event(), {"X-Bridge-Timestamp": "1", "X-Bridge-Signature": "x"})
    await post(http, channel.url, b"{")
    channel.intake.unavailable = True
    await post(http, channel.url, event(event_id="ev-2"))

    adapter = await make_adapter(send_typing=True)
    await adapter.deliver(delivery(Progress()))
    await adapter.typing({"conversation_id": "c", "user_id": "u"})
    errors: list[BaseException] = []
    for status in (429, 500, 410, 400):
        receiver.default = Answer(status=status)
        try:
            await adapter.deliver(delivery(Progress()))
        except DeliveryError as exc:
            errors.append(exc)
    assert len(errors) == 4
    await adapter.stop()

    assert caplog.records, "expected some logging"
    assert SECRET not in caplog.text
    assert all(SECRET not in str(e) and SECRET not in repr(e) for e in errors)
    assert SECRET not in repr(adapter)
    assert SECRET not in repr(adapter.options)
    assert SECRET not in str(adapter.status())
