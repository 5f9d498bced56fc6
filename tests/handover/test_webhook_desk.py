"""The webhook desk: the pure conversion of agents' acts, the signed intake over real HTTP on
127.0.0.1 against an in-memory Agents (the core's side), and signed deliveries to a local
receiver standing in for the helpdesk; at the end, the whole path with the real Service and
the simulator, on SQLite and PostgreSQL.

Nothing waits on a sleep: tests wait on the desk's own answers or on the receiver's events."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from adapters.webhook import convert
from bridge import signing
from bridge.channel import (
    DeliveryRejected,
    DeliveryRetryable,
    DeskAction,
    IntakeRefused,
    IntakeUnavailable,
)
from bridge.config import BridgeConfig, HandoverConfig
from bridge.devtools.simulator import RunningSimulator
from bridge.handover import events
from bridge.handover.desk import (
    AgentCommand,
    DeskDelivery,
    HandoverEnded,
    HandoverUnknown,
)
from bridge.handover.webhook import (
    MAX_BODY_BYTES,
    MAX_TEXT_LENGTH,
    AgentTextTooLong,
    InvalidAgentEvent,
    WebhookDesk,
    encode_event,
    parse_agent_event,
)
from bridge.signed_http import answer_error
from bridge.vocabulary import HandoverOutcome, HandoverState
from tests.adapters.webhook.support import (
    FORGERIES,
    Answer,
    Received,
    Receiver,
    forged_headers,
)
from tests.handover.support import MemoryAgents, handover_record
from tests.support.config import config_data, service_config
from tests.support.net import free_port, start_app
from tests.support.service import running_service, service_url
from tests.support.signing import webhook_signed_headers

SECRET = "desk-SECRET-0123456789abcdef"
BOT = "demo"


def desk_config(url: str = "http://127.0.0.1:9/handover", **overrides: Any) -> HandoverConfig:
    return HandoverConfig.model_validate(
        {"desk": "webhook", "url": url, "secret": SECRET, **overrides}
    )


# --- pure: the signature and the conversion ------------------------------------------------------


def test_the_signature_moved_to_the_core_and_the_channel_still_exports_it() -> None:
    assert convert.signature is signing.signature
    assert convert.signed_headers is signing.signed_headers
    assert convert.verify_signature is signing.verify_signature
    assert (convert.TIMESTAMP_HEADER, convert.SIGNATURE_HEADER) == (
        "X-Bridge-Timestamp",
        "X-Bridge-Signature",
    )


def test_signed_headers_verify_and_match_the_documented_rule() -> None:
    body = '{"type":"handover.ended","text":"grüße"}'.encode()
    headers = signing.signed_headers(SECRET.encode(), "1700000000", body)
    # Written out independently (tests/support/signing.py), not taken from the code under test.
    expected = webhook_signed_headers(SECRET, body, "1700000000")
    assert headers[signing.SIGNATURE_HEADER] == expected["X-Bridge-Signature"]
    assert headers[signing.TIMESTAMP_HEADER] == "1700000000"
    ok = signing.verify_signature(
        SECRET.encode(),
        headers[signing.TIMESTAMP_HEADER],
        headers[signing.SIGNATURE_HEADER],
        body,
        now=1700000100,
        tolerance=300,
    )
    assert ok is None
    assert (
        signing.verify_signature(
            SECRET.encode(), "1700000000", headers[signing.SIGNATURE_HEADER], body, 1700000301, 300
        )
        == "stale timestamp"
    )
    assert (
        signing.verify_signature(
            b"another-secret-000000", "1700000000", headers[signing.SIGNATURE_HEADER], body, 1, 1e10
        )
        == "invalid signature"
    )


def raw(body: Any) -> bytes:
    return json.dumps(body).encode()


def test_an_agent_message_becomes_a_message_command() -> None:
    body = {
        "type": "agent.message",
        "handover_id": "h-1",
        "event_id": "zd-77",
        "text": "Hallo, ich bin Anna.",
        "agent": {"name": "Anna", "id": "a-9"},
        "extra": {"kept": "out"},
    }
    assert parse_agent_event(raw(body)) == AgentCommand(
        "h-1", "zd-77", DeskAction.MESSAGE, "Hallo, ich bin Anna.", "a-9", "Anna"
    )


def test_a_resolve_becomes_a_resolve_command_without_text() -> None:
    body = {"type": "handover.resolve", "handover_id": "h-1", "event_id": "zd-78", "text": "x"}
    assert parse_agent_event(raw(body)) == AgentCommand("h-1", "zd-78", DeskAction.RESOLVE)


def test_an_agent_without_a_name_is_anonymous() -> None:
    base = {"type": "agent.message", "handover_id": "h", "event_id": "e", "text": "hi"}
    assert parse_agent_event(raw(base)).agent_name is None
    assert parse_agent_event(raw({**base, "agent": {}})).agent_name is None
    assert parse_agent_event(raw({**base, "agent": {"name": "  "}})).agent_name is None


MESSAGE = {"type": "agent.message", "handover_id": "h-1", "event_id": "e-1", "text": "hi"}

#: bodies the intake must refuse with 400 (or 413), and a word of the reason
MALFORMED: list[tuple[str, bytes, str]] = [
    ("not-json", b"hello", "JSON"),
    ("not-utf8", b'{"type": "\xff"}', "UTF-8"),
    ("empty", b"", "JSON"),
    ("array", b"[1, 2]", "object"),
    ("string", b'"agent.message"', "object"),
    ("deep", b'{"a":' * 70 + b"1" + b"}" * 70, "deep"),
    ("very-deep", b"[" * 100_000 + b"]" * 100_000, ""),  # too large as well: 413 or 400
    ("no-type", raw({k: v for k, v in MESSAGE.items() if k != "type"}), "type"),
    ("type-number", raw({**MESSAGE, "type": 1}), "type"),
    ("unknown-type", raw({**MESSAGE, "type": "agent.typing"}), "unknown type"),
    ("user-type", raw({**MESSAGE, "type": "handover.user_message"}), "unknown type"),
    ("no-handover", raw({k: v for k, v in MESSAGE.items() if k != "handover_id"}), "handover_id"),
    ("handover-number", raw({**MESSAGE, "handover_id": 7}), "handover_id"),
    ("handover-empty", raw({**MESSAGE, "handover_id": ""}), "handover_id"),
    ("handover-long", raw({**MESSAGE, "handover_id": "h" * 256}), "handover_id"),
    ("no-event", raw({k: v for k, v in MESSAGE.items() if k != "event_id"}), "event_id"),
    ("event-null", raw({**MESSAGE, "event_id": None}), "event_id"),
    ("event-list", raw({**MESSAGE, "event_id": ["e"]}), "event_id"),
    ("event-long", raw({**MESSAGE, "event_id": "e" * 256}), "event_id"),
    ("event-nul", raw({**MESSAGE, "event_id": "e\x00"}), "event_id"),
    ("no-text", raw({k: v for k, v in MESSAGE.items() if k != "text"}), "text"),
    ("text-empty", raw({**MESSAGE, "text": ""}), "text"),
    ("text-blank", raw({**MESSAGE, "text": " \n\t"}), "text"),
    ("text-object", raw({**MESSAGE, "text": {"t": "hi"}}), "text"),
    ("text-nul", raw({**MESSAGE, "text": "a\x00b"}), "text"),
    (
        "text-surrogate",
        b'{"type":"agent.message","handover_id":"h-1","event_id":"e","text":"\\ud800"}',
        "text",
    ),
    ("text-long", raw({**MESSAGE, "text": "x" * (MAX_TEXT_LENGTH + 1)}), "text"),
    ("agent-string", raw({**MESSAGE, "agent": "Anna"}), "agent"),
    ("agent-name-number", raw({**MESSAGE, "agent": {"name": 5}}), "name"),
    ("agent-name-long", raw({**MESSAGE, "agent": {"name": "n" * 256}}), "name"),
    (
        "handover-surrogate",
        b'{"type":"handover.resolve","handover_id":"\\udfff","event_id":"e"}',
        "handover_id",
    ),
    ("nan", b'{"type":"agent.message","handover_id":"h","event_id":"e","text":NaN}', "text"),
]


@pytest.mark.parametrize(
    ("body", "word"), [pytest.param(b, w, id=i) for i, b, w in MALFORMED if len(b) < 100_000]
)
def test_malformed_acts_raise_one_line_reasons(body: bytes, word: str) -> None:
    with pytest.raises(InvalidAgentEvent) as caught:
        parse_agent_event(body)
    reason = caught.value.reason
    assert word.lower() in reason.lower()
    assert "\n" not in reason and len(reason) < 120


def test_a_too_long_text_is_413() -> None:
    with pytest.raises(AgentTextTooLong) as caught:
        parse_agent_event(raw({**MESSAGE, "text": "x" * (MAX_TEXT_LENGTH + 1)}))
    assert caught.value.status == 413
    assert parse_agent_event(raw({**MESSAGE, "text": "x" * MAX_TEXT_LENGTH})).text


def test_events_encode_as_compact_utf8_and_refuse_what_json_cannot_carry() -> None:
    assert encode_event({"type": "handover.user_message", "text": "grüße 👋"}) == (
        '{"type":"handover.user_message","text":"grüße 👋"}'.encode()
    )
    assert encode_event({"text": "\ud800"}) == b'{"text":"\\ud800"}'
    with pytest.raises(DeliveryRejected):
        encode_event({"at": float("nan")})


@pytest.mark.parametrize(
    ("status", "headers", "kind", "retry_after", "rate_limited"),
    [
        (200, {}, None, None, False),
        (204, {}, None, None, False),
        (500, {}, DeliveryRetryable, None, False),
        (503, {"Retry-After": "30"}, DeliveryRetryable, 30.0, False),
        (429, {"Retry-After": "7"}, DeliveryRetryable, 7.0, True),
        (429, {}, DeliveryRetryable, None, False),
        (429, {"Retry-After": "0"}, DeliveryRetryable, None, False),
        (400, {}, DeliveryRejected, None, False),
        (401, {}, DeliveryRejected, None, False),
        (410, {}, DeliveryRejected, None, False),
        (302, {"Location": "http://elsewhere/"}, DeliveryRejected, None, False),
    ],
)
def test_a_receivers_answer_decides_the_delivery(
    status: int,
    headers: dict[str, str],
    kind: type[Exception] | None,
    retry_after: float | None,
    rate_limited: bool,
) -> None:
    # The core's mapping (bridge/signed_http.py), shared with the webhook channel.
    error = answer_error("handover url", status, headers, b'{"error": "nope"}\n')
    if kind is None:
        assert error is None
        return
    assert type(error) is kind
    assert str(error).startswith(f"handover url answered {status}: ")
    if isinstance(error, DeliveryRetryable):
        assert (error.retry_after, error.rate_limited) == (retry_after, rate_limited)


def test_the_desk_needs_its_url_and_secret() -> None:
    config = HandoverConfig.model_validate({"desk": "console"})
    with pytest.raises(ValueError, match="url and secret"):
        WebhookDesk(BOT, config)
    assert SECRET not in repr(WebhookDesk(BOT, desk_config()))


# --- the intake over HTTP ------------------------------------------------------------------------


@dataclass
class Intake:
    desk: WebhookDesk
    agents: MemoryAgents
    url: str


OpenIntake = Callable[..., Awaitable[Intake]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(trust_env=False) as session:
        yield session


@pytest.fixture
async def open_intake() -> AsyncIterator[OpenIntake]:
    """A desk (started unless start=False) with in-memory agents, its routes served."""
    runners: list[web.AppRunner] = []
    desks: list[WebhookDesk] = []

    async def make(*, start: bool = True, **overrides: Any) -> Intake:
        desk = WebhookDesk(BOT, desk_config(**overrides))
        desks.append(desk)
        agents = MemoryAgents()
        agents.open("h-1", BOT)
        if start:
            await desk.start(agents)
        app = web.Application()
        app.add_routes(desk.routes())
        runner, port = await start_app(app)
        runners.append(runner)
        return Intake(desk, agents, f"http://127.0.0.1:{port}/handover/{BOT}/events")

    yield make
    for desk in desks:
        await desk.stop()
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def intake(open_intake: OpenIntake) -> Intake:
    return await open_intake()


def sign(body: bytes, timestamp: str | None = None, secret: str = SECRET) -> dict[str, str]:
    return webhook_signed_headers(secret, body, timestamp)


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, headers: Mapping[str, str] | None = None
) -> tuple[int, Any, CIMultiDict[str]]:
    data = body if isinstance(body, bytes) else raw(body)
    async with http.post(url, data=data, headers=sign(data) if headers is None else headers) as r:
        text = await r.text()
        return r.status, json.loads(text), CIMultiDict(r.headers)


async def test_a_signed_message_is_acted_on_once_and_answered_only_once_stored(
    intake: Intake, http: aiohttp.ClientSession
) -> None:
    body = {**MESSAGE, "agent": {"name": "Anna"}}
    status, answer, _ = await post(http, intake.url, body)
    assert (status, answer) == (200, {"ok": True, "duplicate": False})
    assert intake.agents.acts == [
        (BOT, AgentCommand("h-1", "e-1", DeskAction.MESSAGE, "hi", "", "Anna"))
    ]
    # The helpdesk retries (its own timeout): stored once, answered as a duplicate.
    status, answer, _ = await post(http, intake.url, body)
    assert (status, answer) == (200, {"ok": True, "duplicate": True})
    assert len(intake.agents.acts) == 1


async def test_a_signed_resolve_is_acted_on(intake: Intake, http: aiohttp.ClientSession) -> None:
    body = {"type": "handover.resolve", "handover_id": "h-1", "event_id": "r-1"}
    status, answer, _ = await post(http, intake.url, body)
    assert (status, answer) == (200, {"ok": True, "duplicate": False})
    assert intake.agents.acts == [(BOT, AgentCommand("h-1", "r-1", DeskAction.RESOLVE))]


@pytest.mark.parametrize("forgery", FORGERIES)
async def test_unauthentic_acts_get_401_and_nothing_is_acted_on(
    intake: Intake, http: aiohttp.ClientSession, forgery: str
) -> None:
    data = raw(MESSAGE)
    headers = forged_headers(forgery, data, SECRET, raw({**MESSAGE, "text": "something else"}))
    status, answer, _ = await post(http, intake.url, data, headers)
    assert status == 401
    assert set(answer) == {"error"}
    assert intake.agents.calls == 0


async def test_a_narrower_tolerance_is_honoured(
    open_intake: OpenIntake, http: aiohttp.ClientSession
) -> None:
    intake = await open_intake(signature_tolerance_seconds=5)
    data = raw(MESSAGE)
    status, answer, _ = await post(http, intake.url, data, sign(data, str(int(time.time()) - 30)))
    assert (status, answer) == (401, {"error": "stale timestamp"})


@pytest.mark.parametrize(("body", "word"), [pytest.param(b, w, id=i) for i, b, w in MALFORMED])
async def test_malformed_signed_acts_get_4xx_and_nothing_is_acted_on(
    intake: Intake, http: aiohttp.ClientSession, body: bytes, word: str
) -> None:
    status, answer, _ = await post(http, intake.url, body)
    assert status in (400, 413), answer
    assert set(answer) == {"error"}
    assert word.lower() in answer["error"].lower()
    assert intake.agents.calls == 0


async def test_a_huge_body_is_413_before_its_signature_is_checked(
    intake: Intake, http: aiohttp.ClientSession
) -> None:
    # A usable act but for its size (unknown keys are ignored otherwise).
    data = raw({**MESSAGE, "padding": "x" * MAX_BODY_BYTES})
    status, answer, _ = await post(http, intake.url, data, {"Content-Type": "application/json"})
    assert status == 413
    assert "larger than" in answer["error"]
    # Without a Content-Length (chunked): refused all the same once read.

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 8192):
            yield data[start : start + 8192]

    async with http.post(intake.url, data=chunks(), headers=sign(data)) as resp:
        assert resp.status == 413
    assert intake.agents.calls == 0


@pytest.mark.parametrize(
    ("failure", "status", "word"),
    [
        pytest.param(HandoverUnknown("no"), 404, "no such handover", id="unknown"),
        pytest.param(HandoverEnded("ended"), 409, "ended", id="ended"),
        pytest.param(IntakeRefused("nul"), 400, "cannot be stored", id="refused"),
        pytest.param(IntakeUnavailable("db down"), 503, "retry", id="unavailable"),
        pytest.param(RuntimeError("a bug"), 503, "retry", id="bug"),
    ],
)
async def test_what_the_core_says_becomes_the_status(
    intake: Intake,
    http: aiohttp.ClientSession,
    failure: Exception,
    status: int,
    word: str,
) -> None:
    intake.agents.fail = failure
    got, answer, headers = await post(http, intake.url, MESSAGE)
    assert got == status
    assert word in answer["error"]
    assert "Traceback" not in answer["error"] and "a bug" not in answer["error"]
    if status == 503:
        assert headers["Retry-After"] == "5"


async def test_unknown_and_ended_handovers_and_another_bots(
    intake: Intake, http: aiohttp.ClientSession
) -> None:
    intake.agents.open("h-1", BOT, state=HandoverState.ENDED)
    intake.agents.open("h-2", "other")
    assert (await post(http, intake.url, MESSAGE))[0] == 409
    assert (await post(http, intake.url, {**MESSAGE, "handover_id": "h-2"}))[0] == 404
    assert (await post(http, intake.url, {**MESSAGE, "handover_id": "h-3"}))[0] == 404
    assert intake.agents.acts == []


async def test_before_start_and_after_stop_acts_get_503(
    open_intake: OpenIntake, http: aiohttp.ClientSession
) -> None:
    intake = await open_intake(start=False)
    status, answer, headers = await post(http, intake.url, MESSAGE)
    assert (status, answer, headers["Retry-After"]) == (
        503,
        {"error": "desk is not running"},
        "5",
    )
    await intake.desk.start(intake.agents)
    assert (await post(http, intake.url, MESSAGE))[0] == 200
    await intake.desk.stop()
    await intake.desk.stop()  # idempotent
    assert (await post(http, intake.url, {**MESSAGE, "event_id": "e-2"}))[0] == 503
    assert len(intake.agents.acts) == 1


async def test_only_post_on_the_bots_own_path(intake: Intake, http: aiohttp.ClientSession) -> None:
    async with http.get(intake.url) as resp:
        assert resp.status == 405
    other = intake.url.replace(f"/handover/{BOT}/", "/handover/other/")
    data = raw(MESSAGE)
    async with http.post(other, data=data, headers=sign(data)) as resp:
        assert resp.status == 404
    assert intake.agents.calls == 0


# --- deliveries to a receiver --------------------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    fake = Receiver("/desk")
    app = web.Application()
    app.add_routes([web.post("/desk", fake.handle), web.post("/elsewhere", fake.elsewhere)])
    runner, fake.port = await start_app(app)
    yield fake
    fake.release.set()
    await runner.cleanup()


def verified(received: Received, tolerance: float = 60) -> bool:
    """Whether ``received`` carries a valid, fresh signature by the desk's secret."""
    problem = signing.verify_signature(
        SECRET.encode(),
        received.headers.get(signing.TIMESTAMP_HEADER),
        received.headers.get(signing.SIGNATURE_HEADER),
        received.raw,
        now=time.time(),
        tolerance=tolerance,
    )
    return problem is None


HANDOVER = handover_record("h-1", bot=BOT, desk="webhook")


class Progress:
    def __init__(self) -> None:
        self.calls: list[tuple[int, str | None]] = []

    async def __call__(self, part: int, message_id: str | None) -> None:
        self.calls.append((part, message_id))


def delivery(event: dict[str, Any], progress: Progress | None = None) -> DeskDelivery:
    return DeskDelivery(7, HANDOVER, event, progress or Progress())


STARTED = events.started(
    "h-1",
    "h-1:3:started",
    1700000000.0,
    bot=BOT,
    channel="web",
    user_id="u-1",
    context={"userName": "Jo", "language": "de"},
    reason="billing",
    queue=None,
    summary=None,
    transcript=[events.Turn("user", "I want a human ✋", 1699999999.0)],
)


@pytest.fixture
async def desk(receiver: Receiver) -> AsyncIterator[WebhookDesk]:
    made = WebhookDesk(BOT, desk_config(receiver.url, timeout_seconds=5))
    await made.start(MemoryAgents())
    yield made
    await made.stop()


async def test_a_delivery_is_signed_compact_utf8_json(
    desk: WebhookDesk, receiver: Receiver
) -> None:
    progress = Progress()
    await desk.deliver(delivery(STARTED, progress))
    (received,) = receiver.requests
    assert verified(received)
    assert received.headers["Content-Type"] == "application/json"
    assert received.json == STARTED
    assert received.raw == json.dumps(STARTED, separators=(",", ":"), ensure_ascii=False).encode()
    assert "✋".encode() in received.raw
    assert progress.calls == [(0, None)]


async def test_only_started_user_message_and_ended_are_sent(
    desk: WebhookDesk, receiver: Receiver
) -> None:
    sent = [
        STARTED,
        events.user_message("h-1", "h-1:4:user", 1.0, "hello?"),
        events.agent_message("h-1", "h-1:5:agent", 2.0, "hi", "a-1", "Anna"),
        events.taken("h-1", "h-1:5:taken", 2.0, "a-1", "Anna"),
        events.ended("h-1", "h-1:6:ended", 3.0, HandoverOutcome.RESOLVED),
        {"type": "handover.future", "handover_id": "h-1", "event_id": "x"},
    ]
    for event in sent:
        await desk.deliver(delivery(event))
    assert [e["type"] for e in receiver.events()] == [
        "handover.started",
        "handover.user_message",
        "handover.ended",
    ]
    assert all(verified(r) for r in receiver.requests)


@pytest.mark.parametrize(
    ("answer", "kind", "retry_after", "rate_limited"),
    [
        (Answer(500, b"oops"), DeliveryRetryable, None, False),
        (Answer(503, headers={"Retry-After": "12"}), DeliveryRetryable, 12.0, False),
        (Answer(429, headers={"Retry-After": "3"}), DeliveryRetryable, 3.0, True),
        (Answer(400, b'{"error": "bad"}'), DeliveryRejected, None, False),
        (Answer(404), DeliveryRejected, None, False),
    ],
)
async def test_a_failed_delivery_raises_by_kind_and_the_retry_is_the_same_event(
    desk: WebhookDesk,
    receiver: Receiver,
    answer: Answer,
    kind: type[Exception],
    retry_after: float | None,
    rate_limited: bool,
) -> None:
    receiver.answers = [answer]
    progress = Progress()
    with pytest.raises(kind) as caught:
        await desk.deliver(delivery(STARTED, progress))
    if isinstance(caught.value, DeliveryRetryable):
        assert (caught.value.retry_after, caught.value.rate_limited) == (retry_after, rate_limited)
    assert progress.calls == []
    await desk.deliver(delivery(STARTED, progress))  # the engine's retry
    first, second = receiver.requests
    assert first.json == second.json  # the same event_id: the receiver deduplicates
    assert verified(first) and verified(second)
    assert progress.calls == [(0, None)]


async def test_a_redirect_is_not_followed(desk: WebhookDesk, receiver: Receiver) -> None:
    elsewhere = receiver.url.replace("/desk", "/elsewhere")
    receiver.answers = [Answer(307, headers={"Location": elsewhere})]
    with pytest.raises(DeliveryRejected, match="307"):
        await desk.deliver(delivery(STARTED))
    assert len(receiver.requests) == 1


async def test_a_huge_answer_is_read_only_in_part(desk: WebhookDesk, receiver: Receiver) -> None:
    receiver.answers = [Answer(400, b"x" * (4 * 1024 * 1024))]
    with pytest.raises(DeliveryRejected) as caught:
        await desk.deliver(delivery(STARTED))
    assert len(str(caught.value)) < 300


async def test_a_hanging_receiver_times_out_as_retryable(receiver: Receiver) -> None:
    desk = WebhookDesk(BOT, desk_config(receiver.url, timeout_seconds=0.3))
    await desk.start(MemoryAgents())
    receiver.answers = [Answer(hang=True)]
    try:
        with pytest.raises(DeliveryRetryable, match=r"did not answer within 0\.3s"):
            await desk.deliver(delivery(STARTED))
    finally:
        await desk.stop()


async def test_an_unreachable_receiver_is_retryable() -> None:
    desk = WebhookDesk(BOT, desk_config(f"http://127.0.0.1:{free_port()}/desk"))
    await desk.start(MemoryAgents())
    try:
        with pytest.raises(DeliveryRetryable, match="unreachable"):
            await desk.deliver(delivery(STARTED))
    finally:
        await desk.stop()


async def test_before_start_a_delivery_is_retryable(receiver: Receiver) -> None:
    desk = WebhookDesk(BOT, desk_config(receiver.url))
    with pytest.raises(DeliveryRetryable, match="not running"):
        await desk.deliver(delivery(STARTED))
    assert receiver.requests == []


# --- end to end: the real Service, the simulator's demo bot, a webhook user -----------------------

USER_SECRET = "user-SECRET-0123456789abcdef"


@pytest.fixture
async def helpdesk() -> AsyncIterator[tuple[Receiver, Receiver]]:
    """Two receivers on one server: the webhook channel's ``deliver_url`` (what the user
    sees) and the desk's ``url`` (what the helpdesk is sent)."""
    user, desk = Receiver("/user"), Receiver("/desk")
    app = web.Application()
    app.add_routes([web.post("/user", user.handle), web.post("/desk", desk.handle)])
    runner, port = await start_app(app)
    user.port = desk.port = port
    yield user, desk
    user.release.set()
    desk.release.set()
    await runner.cleanup()


def user_texts(received: list[Received]) -> list[str]:
    """The texts the user was sent, in order."""
    return [
        element["content"]
        for r in received
        for element in r.json.get("elements", ())
        if element.get("type") == "text"
    ]


def bridge_config(database_url: str, sim_url: str, user: Receiver, desk: Receiver) -> BridgeConfig:
    """The bot ``demo`` (the simulator's demo bot) with a webhook desk at ``desk``, its users
    on the webhook channel ``web`` whose replies go to ``user``."""
    channel = {"name": "web", "type": "webhook", "secret": USER_SECRET, "deliver_url": user.url}
    handover = {"desk": "webhook", "url": desk.url, "secret": SECRET, "timeout_seconds": 5}
    return service_config(config_data(database_url, sim_url, channel, bot={"handover": handover}))


def say_as(
    http: aiohttp.ClientSession, base: str, user_id: str = "u-1"
) -> Callable[[str, str], Awaitable[None]]:
    """Sends what the user writes to the webhook channel, signed, as its integrator does."""

    async def say(event_id: str, text: str) -> None:
        body = raw({"event_id": event_id, "user_id": user_id, "text": text})
        headers = webhook_signed_headers(USER_SECRET, body)
        async with http.post(f"{base}/webhook/web/events", data=body, headers=headers) as resp:
            assert resp.status == 200, await resp.text()

    return say


def user_got(text: str) -> Callable[[list[Received]], bool]:
    return lambda got: any(text in t for t in user_texts(got))


async def test_a_webhook_user_is_handed_over_to_a_helpdesk_and_back(
    sim: RunningSimulator, database_url: str, helpdesk: tuple[Receiver, Receiver]
) -> None:
    user, desk = helpdesk
    config = bridge_config(database_url, sim.url, user, desk)
    async with running_service(config) as service, aiohttp.ClientSession(trust_env=False) as http:
        base = service_url(service)
        acts_url = f"{base}/handover/{BOT}/events"
        say = say_as(http, base)

        await say("ev-1", "hello")
        await user.wait_for(user_got("You said: hello"), within=15)

        # The user asks for a person: the bot's text, the notice, and a signed start.
        await say("ev-2", "I want a human please")
        await user.wait_for(user_got(config.messages.handover_started), within=15)
        started = (await desk.wait_for(lambda _: desk.events("handover.started"), within=15))[0]
        assert verified(desk.requests[0])
        key = started["handover_id"]
        assert started["channel"] == "web" and started["bot"] == BOT
        assert started["user"]["id"] == "u-1"
        assert started["reason"] == "the user asked for a person"
        turns = [(t["role"], t["text"]) for t in started["transcript"]]
        assert ("user", "hello") in turns and ("bot", "You said: hello") in turns

        # The user's next message goes to the desk, not to Parloa.
        asked = len([r for r in sim.state.requests if r.event_type == "message"])
        await say("ev-3", "my card was charged twice")
        said = await desk.wait_for(lambda _: desk.events("handover.user_message"), within=15)
        assert said[0]["text"] == "my card was charged twice" and said[0]["handover_id"] == key

        # The agent answers, and the helpdesk sends the same act twice: delivered once.
        reply = {
            "type": "agent.message",
            "handover_id": key,
            "event_id": "zd-1",
            "text": "Hi, Anna here. Let me look.",
            "agent": {"name": "Anna"},
        }
        assert (await post(http, acts_url, reply))[:2] == (200, {"ok": True, "duplicate": False})
        assert (await post(http, acts_url, reply))[:2] == (200, {"ok": True, "duplicate": True})
        await user.wait_for(user_got("Anna: Hi, Anna here. Let me look."), within=15)
        unknown = {**reply, "handover_id": "no-such-handover", "event_id": "zd-x"}
        assert (await post(http, acts_url, unknown))[0] == 404
        unsigned = {"Content-Type": "application/json"}
        assert (await post(http, acts_url, {**reply, "event_id": "zd-y"}, unsigned))[0] == 401

        # Resolved: the helpdesk is told, the user gets the notice, and is back with the bot.
        resolve = {"type": "handover.resolve", "handover_id": key, "event_id": "zd-2"}
        assert (await post(http, acts_url, resolve))[:2] == (200, {"ok": True, "duplicate": False})
        ended = await desk.wait_for(lambda _: desk.events("handover.ended"), within=15)
        assert ended[0]["handover_id"] == key and ended[0]["outcome"] == "resolved"
        await user.wait_for(user_got(config.messages.handover_ended), within=15)
        assert (await post(http, acts_url, {**reply, "event_id": "zd-3"}))[0] == 409

        await say("ev-4", "thanks, one more thing")
        await user.wait_for(user_got("You said: thanks, one more thing"), within=15)
        messages = [r for r in sim.state.requests if r.event_type == "message"]
        assert "my card was charged twice" not in [r.text for r in messages]
        assert len(messages) == asked + 1

        texts = user_texts(user.requests)
        assert texts.count("Anna: Hi, Anna here. Let me look.") == 1
        order = [
            "You said: hello",
            config.messages.handover_started,
            "Anna: Hi, Anna here. Let me look.",
            config.messages.handover_ended,
            "You said: thanks, one more thing",
        ]
        assert [t for t in texts if t in order] == order
        assert all(verified(r) for r in desk.requests)
        kinds = [e["type"] for e in desk.events()]
        assert kinds == ["handover.started", "handover.user_message", "handover.ended"]


async def test_a_helpdesk_that_fails_gets_the_same_signed_event_again_in_order(
    sim: RunningSimulator, database_url: str, helpdesk: tuple[Receiver, Receiver]
) -> None:
    user, desk = helpdesk
    desk.answers = [Answer(500, b"busy"), Answer(503), Answer(), Answer(400, b"bad")]
    config = bridge_config(database_url, sim.url, user, desk)
    async with running_service(config) as service, aiohttp.ClientSession(trust_env=False) as http:
        say = say_as(http, service_url(service))
        await say("ev-1", "agent!")
        await say("ev-2", "are you there?")
        await say("ev-3", "hello?")
        await desk.wait_for(lambda _: len(desk.events("handover.user_message")) >= 2)
        # The start failed twice (retried: the same event, id and all), then went through;
        # the first user message was refused for good (400: dropped), the next one follows.
        answered = [(r.json["type"], r.answered) for r in desk.requests]
        assert answered == [
            ("handover.started", 500),
            ("handover.started", 503),
            ("handover.started", 200),
            ("handover.user_message", 400),
            ("handover.user_message", 200),
        ]
        assert len({json.dumps(e, sort_keys=True) for e in desk.events("handover.started")}) == 1
        texts = [e["text"] for e in desk.events("handover.user_message")]
        assert texts == ["are you there?", "hello?"]
        assert all(verified(r) for r in desk.requests)
