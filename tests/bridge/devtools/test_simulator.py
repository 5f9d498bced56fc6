"""The TextchatV2 simulator over real HTTP on 127.0.0.1: spec conformance in both directions,
the demo bot's script, sessions, faults and the control routes."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import http.client
import json
import logging
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from jsonschema.protocols import Validator
from multidict import CIMultiDictProxy
from yarl import URL

from bridge.devtools.simulator import (
    Faults,
    RunningSimulator,
    SimulatorState,
    card_png,
    faults_from_headers,
    start_simulator,
)
from bridge.textchat.client import TextchatClient, Timeouts
from bridge.textchat.errors import MalformedResponse, RateLimited, SessionNotFound, Unauthorized
from bridge.textchat.models import (
    CardElement,
    LaunchEvent,
    MessageEvent,
    PayloadElement,
    TextchatResponse,
    TextElement,
    UnknownElement,
    parse_wire,
)
from tests.support.paths import ROOT
from tests.support.spec_schema import request_validator, response_validator, spec_available

TOKEN = "sim-test-token-4711"
RELEASE = "rel-1"
HOOK = f"/dialoghook?dialog={RELEASE}&platform=textchatV2"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def body(event: Any = None, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "apiVersion": "chat/v1",
        "requesterId": "user-1",
        "sessionId": "session-1",
        "event": event if event is not None else {"type": "launch"},
    }
    data.update(fields)
    return data


def message(text: str, **fields: Any) -> dict[str, Any]:
    return body({"type": "message", "text": text}, **fields)


def without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


def ctx(*values: Any) -> list[dict[str, Any]]:
    return [{"key": f"k{i}", "value": v} for i, v in enumerate(values)]


@dataclass
class Answer:
    status: int
    data: Any
    headers: CIMultiDictProxy[str]
    raw: bytes


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with await start_simulator(state=SimulatorState(token=TOKEN, seed=7)) as running:
        yield running


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(trust_env=False, timeout=timeout) as session:
        yield session


class Poster:
    """Sends dialoghook requests to one simulator."""

    def __init__(self, session: aiohttp.ClientSession, sim: RunningSimulator) -> None:
        self.session = session
        self.sim = sim

    async def __call__(
        self,
        payload: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
        path: str = HOOK,
        raw: bytes | None = None,
        give_up_after: float | None = None,
    ) -> Answer:
        sent = {**(AUTH if auth else {}), "Content-Type": "application/json", **(headers or {})}
        data = raw if raw is not None else json.dumps(payload if payload is not None else body())
        kwargs: dict[str, Any] = {}
        if give_up_after is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=give_up_after)
        async with self.session.post(
            self.sim.url + path, data=data, headers=sent, **kwargs
        ) as resp:
            content = await resp.read()
            try:
                parsed: Any = json.loads(content)
            except ValueError:
                parsed = None
            return Answer(resp.status, parsed, resp.headers, content)


@pytest.fixture
def post(http_session: aiohttp.ClientSession, sim: RunningSimulator) -> Poster:
    return Poster(http_session, sim)


def assert_valid_response(answer: Answer) -> TextchatResponse:
    assert answer.status == 200, answer.data
    if spec_available():  # without the spec, the models' checks below still run
        errors = [e.message for e in response_validator().iter_errors(answer.data)]
        assert not errors, errors
    parsed = parse_wire(TextchatResponse, answer.data)
    assert not [e for e in parsed.response_elements if isinstance(e, UnknownElement)]
    return parsed


# --- a simulator on its own thread, for synchronous (hypothesis) tests --------------------------


@dataclass
class ThreadedSimulator:
    host: str
    port: int

    def post(self, payload: Any) -> int:
        """POST a JSON body; the status."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request(
                "POST",
                HOOK,
                body=json.dumps(payload).encode(),
                headers={**AUTH, "Content-Type": "application/json"},
            )
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()


@pytest.fixture(scope="module")
def threaded_sim() -> Iterator[ThreadedSimulator]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="simulator", daemon=True)
    thread.start()
    running = asyncio.run_coroutine_threadsafe(
        start_simulator(state=SimulatorState(token=TOKEN)), loop
    ).result(10)
    url = URL(running.url)
    assert url.host is not None and url.port is not None
    try:
        yield ThreadedSimulator(url.host, url.port)
    finally:
        asyncio.run_coroutine_threadsafe(running.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# --- the simulator rejects exactly what the spec rejects ---------------------------------------

LONG_OK = "x" * 1000
LONG_BAD = "x" * 1001
ASTRAL_OK = "\U0001f600" * 1000  # 1000 code points, 2000 UTF-16 units on the wire
ASTRAL_BAD = "\U0001f600" * 1001

EQUIVALENCE: list[tuple[str, Any, bool]] = [
    # valid
    ("launch", body(), True),
    ("message", message("hello"), True),
    ("quit", body({"type": "quit"}), True),
    ("empty text", message(""), True),
    ("unicode text", message("grüß dich \U0001f44b"), True),
    ("empty ids", body(requesterId="", sessionId=""), True),
    ("context mixed", message("x", context=ctx("s", 1, -2.5, True, False, 0)), True),
    ("context empty", body(context=[]), True),
    ("context 100", body(context=ctx(*range(100))), True),
    ("value 1000 chars", body(context=ctx(LONG_OK)), True),
    ("value 1000 astral", body(context=ctx(ASTRAL_OK)), True),
    ("value huge int", body(context=ctx(10**30)), True),
    ("value exponent", body(context=ctx(1e300)), True),
    ("empty key", body(context=[{"key": "", "value": "v"}]), True),
    # invalid: extra properties at every level
    ("extra top", body(extra=1), False),
    ("extra launch", body({"type": "launch", "text": "hi"}), False),
    ("extra message", body({"type": "message", "text": "hi", "lang": "de"}), False),
    ("extra quit", body({"type": "quit", "reason": "x"}), False),
    ("extra context item", body(context=[{"key": "k", "value": 1, "x": 2}]), False),
    ("snake_case name", {**without(body(), "sessionId"), "session_id": "s"}, False),
    # missing fields
    ("no apiVersion", without(body(), "apiVersion"), False),
    ("no sessionId", without(body(), "sessionId"), False),
    ("no requesterId", without(body(), "requesterId"), False),
    ("no event", without(body(), "event"), False),
    ("no event type", body({}), False),
    ("message no text", body({"type": "message"}), False),
    ("context no value", body(context=[{"key": "k"}]), False),
    ("context no key", body(context=[{"value": "v"}]), False),
    # wrong values and types
    ("apiVersion v2", body(apiVersion="v2"), False),
    ("apiVersion null", body(apiVersion=None), False),
    ("unknown event", body({"type": "typing"}), False),
    ("event a string", body("launch"), False),
    ("text null", body({"type": "message", "text": None}), False),
    ("text number", body({"type": "message", "text": 42}), False),
    ("requesterId number", body(requesterId=7), False),
    ("sessionId null", body(sessionId=None), False),
    ("context null", body(context=None), False),
    ("context object", body(context={"k": "v"}), False),
    ("context 101", body(context=ctx(*range(101))), False),
    ("context item string", body(context=["k=v"]), False),
    ("value 1001 chars", body(context=ctx(LONG_BAD)), False),
    ("value 1001 astral", body(context=ctx(ASTRAL_BAD)), False),
    ("value null", body(context=ctx(None)), False),
    ("value list", body(context=ctx([1])), False),
    ("value object", body(context=ctx({"a": 1})), False),
    ("key number", body(context=[{"key": 1, "value": "v"}]), False),
    ("top-level array", [body()], False),
    ("top-level string", "launch", False),
    ("top-level null", None, False),
]


@pytest.fixture(scope="module")
def request_schema() -> Validator:
    return request_validator()  # skips the test when the spec is absent


@pytest.mark.parametrize(
    ("payload", "valid"),
    [pytest.param(p, v, id=name) for name, p, v in EQUIVALENCE],
)
def test_simulator_rejects_exactly_what_the_spec_rejects(
    threaded_sim: ThreadedSimulator, request_schema: Validator, payload: Any, valid: bool
) -> None:
    assert request_schema.is_valid(payload) is valid  # the table itself is right
    status = threaded_sim.post(payload)
    # A valid message for an unknown session is 404, not 400: it passed validation.
    assert status in ((200, 404) if valid else (400,))


_KEYS = ["apiVersion", "event", "requesterId", "sessionId", "context"]
_KEYS += ["type", "text", "key", "value", "extra", "session_id"]
_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
    st.sampled_from(["launch", "message", "quit", "chat/v1", "", LONG_OK, LONG_BAD, ASTRAL_BAD]),
)
_JSON = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), inner),
    max_leaves=6,
)
_STRINGS = st.one_of(st.text(max_size=6), st.sampled_from([LONG_OK, LONG_BAD, ASTRAL_OK]))
_NUMBERS = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False))
_VALUES = st.one_of(_STRINGS, _NUMBERS, st.booleans())


_EVENTS = st.one_of(
    st.just({"type": "launch"}),
    st.just({"type": "quit"}),
    st.builds(lambda text: {"type": "message", "text": text}, _STRINGS),
)
_CONTEXT_ITEMS = st.builds(lambda k, v: {"key": k, "value": v}, st.text(max_size=5), _VALUES)


@st.composite
def valid_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """Bodies the spec accepts, with values at the edges (1000 chars, 100 items, ...)."""
    data = body(draw(_EVENTS), requesterId=draw(st.text(max_size=8)))
    data["sessionId"] = draw(st.text(max_size=8))
    length = draw(st.sampled_from([None, 0, 1, 3, 100]))
    if length is not None:
        data["context"] = [draw(_CONTEXT_ITEMS) for _ in range(min(length, 3))]
        data["context"] += [{"key": "k", "value": 1}] * (length - len(data["context"]))
    return copy.deepcopy(data)  # nothing shared: mutated_bodies changes it in place


def _similar(value: Any) -> st.SearchStrategy[Any]:
    """Mostly a scalar that could stand where ``value`` stands; sometimes any scalar."""
    if isinstance(value, str | int | float):  # strings, numbers, booleans: context values
        return st.one_of(_VALUES, _VALUES, _LEAVES)
    return _LEAVES


def _slots(node: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key-or-index) below ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield node, key
            yield from _slots(value)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield node, index
            yield from _slots(value)


def _containers(node: Any) -> Iterator[Any]:
    if isinstance(node, dict | list):
        yield node
        for value in node.values() if isinstance(node, dict) else node:
            yield from _containers(value)


@st.composite
def mutated_bodies(draw: st.DrawFn) -> Any:
    """A valid body with one to three mutations (a few of them stay valid)."""
    data: Any = draw(valid_bodies())
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        op = draw(st.sampled_from(["leaf", "replace", "replace", "delete", "add", "grow", "root"]))
        slots = list(_slots(data))
        if op == "leaf" and slots:
            # Same shape, another scalar: mostly keeps the body valid, probes the edges.
            container, key = draw(st.sampled_from(slots))
            container[key] = draw(_similar(container[key]))
        elif op in ("replace", "delete") and slots:
            container, key = draw(st.sampled_from(slots))
            if op == "delete":
                del container[key]
            else:
                container[key] = draw(_JSON)
        elif op == "add" and (dicts := [c for c in _containers(data) if isinstance(c, dict)]):
            draw(st.sampled_from(dicts))[draw(st.sampled_from(_KEYS))] = draw(_JSON)
        elif op == "grow" and (lists := [c for c in _containers(data) if isinstance(c, list)]):
            target = draw(st.sampled_from(lists))
            target.extend([target[-1] if target else draw(_JSON)] * draw(st.sampled_from([1, 2])))
        elif op == "root":
            data = draw(_JSON)
    return data


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(payload=st.one_of(valid_bodies(), mutated_bodies(), mutated_bodies()))
def test_simulator_agrees_with_the_spec_on_mutated_bodies(
    threaded_sim: ThreadedSimulator, request_schema: Validator, payload: Any
) -> None:
    valid = request_schema.is_valid(payload)
    note(f"schema valid: {valid}")
    status = threaded_sim.post(payload)
    assert status in ((200, 404) if valid else (400,))


# --- the script -------------------------------------------------------------------------------


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_the_whole_script_answers_with_spec_valid_bodies(
    post: Poster, http_session: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    launch = await post(body())
    welcome = assert_valid_response(launch)
    assert welcome.end_conversation is False
    assert welcome.release_id == RELEASE and welcome.session_id == "session-1"
    assert welcome.requester_id == "user-1" and welcome.conversation_id
    assert welcome.transaction_id
    kinds = [type(e) for e in welcome.response_elements]
    assert kinds == [TextElement, PayloadElement]
    payload = welcome.response_elements[1]
    assert isinstance(payload, PayloadElement)
    assert payload.content == {"suggestionChips": ["Show me a card", "What can you do?", "bye"]}
    text = welcome.response_elements[0]
    assert isinstance(text, TextElement) and text.id and uuid.UUID(text.id)

    card_answer = assert_valid_response(await post(message("Show me a CARD please")))
    (card,) = card_answer.response_elements
    assert isinstance(card, CardElement)
    assert card.title and card.subtitle and card.content and card.id
    assert card.image and card.image.large and card.image.small
    assert card.image.accessibility_text
    assert card_answer.conversation_id == welcome.conversation_id
    for variant in (card.image.large, card.image.small):
        assert variant.url.startswith(sim.url + "/_simulator/card.png")
        async with http_session.get(variant.url) as resp:  # no bearer needed
            assert resp.status == 200 and resp.content_type == "image/png"
            assert png_size(await resp.read()) == (
                int(variant.width or 0),
                int(variant.height or 0),
            )

    echo = assert_valid_response(await post(message("hello there")))
    assert [e.content for e in echo.response_elements if isinstance(e, TextElement)] == [
        "You said: hello there"
    ]
    helpful = assert_valid_response(await post(message("What can you do?")))
    assert len(helpful.response_elements) == 2
    assert not helpful.end_conversation

    bye = assert_valid_response(await post(message("ok, Bye!")))
    assert bye.end_conversation is True
    assert (await post(message("still there?"))).status == 404

    relaunch = assert_valid_response(await post(body()))
    assert relaunch.conversation_id != welcome.conversation_id
    quit_answer = assert_valid_response(await post(body({"type": "quit"})))
    assert quit_answer.end_conversation is True and quit_answer.response_elements == []
    assert quit_answer.conversation_id == relaunch.conversation_id
    assert (await post(message("hello?"))).status == 404
    # quitting is idempotent
    again = assert_valid_response(await post(body({"type": "quit"})))
    assert again.end_conversation is True

    assert sim.state.events("session-1") == [
        ("launch", None),
        ("message", "Show me a CARD please"),
        ("message", "hello there"),
        ("message", "What can you do?"),
        ("message", "ok, Bye!"),
        ("launch", None),
        ("quit", None),
        ("quit", None),
    ]


async def test_asking_for_a_person_answers_with_the_handover_payload(post: Poster) -> None:
    assert_valid_response(await post(body()))
    for text in ("I want a HUMAN please", "agent!", "Can I talk to an agent?", "humans?"):
        answer = assert_valid_response(await post(message(text)))
        first, second = answer.response_elements
        assert isinstance(first, TextElement) and first.content == "Let me get a colleague."
        assert isinstance(second, PayloadElement)
        handover = second.content["handover"]
        assert handover["reason"] == "the user asked for a person"
        assert handover["queue"] == "support"
        assert text in handover["summary"]
        assert not answer.end_conversation
    for text in ("agentur", "inhumane", "humanity"):  # the words, not parts of others
        echo = assert_valid_response(await post(message(text)))
        assert [type(e) for e in echo.response_elements] == [TextElement]
    # back from a handover: a new session greets the user shortly, with no chips
    context = [
        {"key": "handoverReturned", "value": True},
        {"key": "handoverOutcome", "value": "resolved"},
    ]
    back = assert_valid_response(await post(body(sessionId="s2", context=context)))
    (greeting,) = back.response_elements
    assert isinstance(greeting, TextElement) and "Welcome back" in greeting.content


async def test_request_and_correlation_ids(post: Poster, sim: RunningSimulator) -> None:
    sent = await post(body(), headers={"X-Request-Id": "req-123"})
    assert sent.headers["X-Request-Id"] == "req-123"
    generated = await post(body())
    assert uuid.UUID(generated.headers["X-Request-Id"])
    assert generated.headers["X-Correlation-Id"] != sent.headers["X-Correlation-Id"]
    rejected = await post(body(), auth=False, headers={"X-Request-Id": "req-401"})
    assert rejected.headers["X-Request-Id"] == "req-401" and rejected.headers["X-Correlation-Id"]
    assert sim.state.requests[0].request_id == "req-123"


async def test_sessions_are_per_session_id_and_launch_resets(post: Poster) -> None:
    first = assert_valid_response(await post(body(sessionId="a")))
    assert (await post(message("hi", sessionId="b"))).status == 404
    again = assert_valid_response(await post(body(sessionId="a")))
    assert again.conversation_id != first.conversation_id
    assert (await post(message("hi", sessionId="a"))).status == 200


# --- rejections -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwdw==", "Bearer wrong-token", f"Token {TOKEN}"],
)
async def test_bearer_is_required(
    post: Poster, sim: RunningSimulator, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    answer = await post(body(), auth=False, headers=headers)
    assert answer.status == 401
    assert isinstance(answer.data, dict) and answer.data["error"]
    assert sim.state.requests[-1].status == 401
    assert sim.state.stats().active_sessions == 0


async def test_without_configured_token_any_bearer_is_accepted(
    http_session: aiohttp.ClientSession,
) -> None:
    running = await start_simulator(state=SimulatorState())
    try:
        poster = Poster(http_session, running)
        assert (
            await poster(body(), auth=False, headers={"Authorization": "Bearer x"})
        ).status == 200
        assert (await poster(body(), auth=False)).status == 401
        assert (
            await poster(body(), auth=False, headers={"Authorization": "bearer y"})
        ).status == 200
    finally:
        await running.close()


async def test_the_token_is_never_recorded_or_logged(
    post: Poster,
    http_session: aiohttp.ClientSession,
    sim: RunningSimulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await post(body())
    await post(body(), auth=False, headers={"Authorization": f"Bearer {TOKEN}x"})
    async with http_session.get(sim.url + "/_simulator/requests", headers=AUTH) as resp:
        listed = await resp.text()
    for text in (listed, repr(list(sim.state.requests)), repr(sim.state), caplog.text):
        assert TOKEN not in text


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/dialoghook?platform=textchatV2", "dialog"),
        ("/dialoghook?dialog=&platform=textchatV2", "dialog"),
        ("/dialoghook?dialog=r", "platform"),
        ("/dialoghook?dialog=r&platform=textchatV1", "platform"),
    ],
)
async def test_bad_query_is_400(post: Poster, path: str, reason: str) -> None:
    answer = await post(body(), path=path)
    assert answer.status == 400 and reason in answer.data["error"]


async def test_auth_is_checked_before_the_query(post: Poster) -> None:
    assert (await post(body(), path="/dialoghook", auth=False)).status == 401


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"not json", b'{"a": NaN}', b"[Infinity]", b"-Infinity", b"\xff\xfe{", b"[" * 5000],
)
async def test_bodies_that_are_not_json_are_400(post: Poster, raw: bytes) -> None:
    answer = await post(raw=raw)
    assert answer.status == 400 and "not valid JSON" in answer.data["error"]


async def test_validation_reasons_name_the_field(post: Poster, sim: RunningSimulator) -> None:
    answer = await post(body(context=ctx(LONG_BAD)))
    assert answer.status == 400 and "context.0.value" in answer.data["error"]
    assert LONG_BAD not in answer.data["error"]  # no input values echoed
    recorded = sim.state.requests[-1]
    assert recorded.status == 400 and recorded.event_type == "launch"
    assert recorded.session_id == "session-1" and recorded.context == ctx(LONG_BAD)
    assert "extra" in (await post(body(extra=True))).data["error"]
    assert (await post(without(body(), "apiVersion"))).data["error"].startswith("apiVersion")
    assert sim.state.events() == []


async def test_bodies_over_one_mib_are_413(post: Poster) -> None:
    big = message("x" * (1024 * 1024))
    answer = await post(big)
    assert answer.status == 413 and answer.data["error"]


# --- sessions ---------------------------------------------------------------------------------


async def test_sessions_are_evicted_least_recently_used_first(
    http_session: aiohttp.ClientSession,
) -> None:
    state = SimulatorState(token=TOKEN, max_sessions=2)
    running = await start_simulator(state=state)
    try:
        poster = Poster(http_session, running)
        for sid in ("a", "b"):
            assert (await poster(body(sessionId=sid))).status == 200
        assert (await poster(message("hi", sessionId="a"))).status == 200  # a is now fresher
        assert (await poster(body(sessionId="c"))).status == 200  # evicts b
        assert (await poster(message("hi", sessionId="b"))).status == 404
        assert (await poster(message("hi", sessionId="a"))).status == 200
        assert (await poster(message("hi", sessionId="c"))).status == 200
        assert state.stats().active_sessions == 2 and state.stats().sessions_evicted == 1
    finally:
        await running.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_sessions_expire_after_the_ttl_since_last_use(
    http_session: aiohttp.ClientSession,
) -> None:
    clock = FakeClock()
    state = SimulatorState(token=TOKEN, session_ttl=10.0, clock=clock)
    running = await start_simulator(state=state)
    try:
        poster = Poster(http_session, running)
        assert (await poster(body(sessionId="a"))).status == 200
        assert (await poster(body(sessionId="b"))).status == 200
        clock.now += 8
        assert (await poster(message("hi", sessionId="a"))).status == 200  # touches a
        clock.now += 8  # a: 8s since last use, b: 16s
        assert state.stats().active_sessions == 1
        assert (await poster(message("hi", sessionId="b"))).status == 404
        assert (await poster(message("hi", sessionId="a"))).status == 200
        clock.now += 10.5
        assert (await poster(message("hi", sessionId="a"))).status == 404
        assert state.stats().sessions_expired == 2
    finally:
        await running.close()


async def test_expire_sessions(post: Poster, sim: RunningSimulator) -> None:
    for sid in ("a", "b", "c"):
        await post(body(sessionId=sid))
    assert sim.state.expire_sessions("a") == 1
    assert sim.state.expire_sessions("a") == 0
    assert (await post(message("hi", sessionId="a"))).status == 404
    assert (await post(message("hi", sessionId="b"))).status == 200
    assert sim.state.expire_sessions() == 2
    assert (await post(message("hi", sessionId="c"))).status == 404
    assert sim.state.stats().active_sessions == 0


async def test_recorded_requests_are_bounded() -> None:
    state = SimulatorState(max_recorded=3)
    running = await start_simulator(state=state)
    try:
        async with aiohttp.ClientSession(trust_env=False) as session:
            poster = Poster(session, running)
            for i in range(5):
                await poster(body(sessionId=f"s{i}"))
        assert [r.session_id for r in state.requests] == ["s2", "s3", "s4"]
        stats = state.stats()
        assert (stats.requests, stats.by_status, stats.answered(200)) == (5, {200: 5}, 5)
    finally:
        await running.close()


def test_the_bridge_does_not_import_the_simulator_unless_enabled() -> None:
    probe = (
        "import json, sys\n"
        "import bridge.cli, bridge.service, bridge.engine, bridge.parts\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('bridge.devtools'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_stats_are_a_typed_snapshot() -> None:
    state = SimulatorState()
    before = state.stats()
    state.start_session("s-1", "user-1", RELEASE)
    after = state.stats()
    assert (before.active_sessions, after.active_sessions, after.sessions_started) == (0, 1, 1)
    assert not isinstance(before, dict) and not callable(before)
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.requests = 1  # type: ignore[misc]
    assert after.to_json()["by_status"] == {} and after.answered(200) == 0


# --- faults -----------------------------------------------------------------------------------


async def test_latency_delays_every_answer(post: Poster, sim: RunningSimulator) -> None:
    sim.state.faults.latency = 0.15
    started = time.monotonic()
    assert (await post(body())).status == 200
    assert time.monotonic() - started >= 0.15
    started = time.monotonic()
    assert (await post(body(), auth=False)).status == 401
    assert time.monotonic() - started >= 0.15
    # the header overrides the state: a range, and zero
    started = time.monotonic()
    assert (await post(body(), headers={"X-Simulator-Latency": "0.05-0.1"})).status == 200
    assert time.monotonic() - started >= 0.05
    started = time.monotonic()
    assert (await post(body(), headers={"X-Simulator-Latency": "0"})).status == 200
    assert time.monotonic() - started < 0.15


async def test_status_override_answers_everything(post: Poster, sim: RunningSimulator) -> None:
    sim.state.faults = Faults(status=503, retry_after=2)
    answer = await post(body())
    assert answer.status == 503 and answer.data["error"]
    assert answer.headers["Retry-After"] == "2"
    assert answer.headers["X-Request-Id"] and answer.headers["X-Correlation-Id"]
    assert sim.state.stats().active_sessions == 0  # the bot never saw it
    # validation still comes first
    assert (await post(body(extra=1))).status == 400
    # a header overrides the state's status
    assert (await post(body(), headers={"X-Simulator-Status": "500"})).status == 500
    assert sim.state.events() == []


async def test_failure_rate(post: Poster, sim: RunningSimulator) -> None:
    sim.state.faults = Faults(failure_rate=1.0, failure_status=429, retry_after=0.5)
    answers = [await post(body()) for _ in range(3)]
    assert {a.status for a in answers} == {429}
    assert answers[0].headers["Retry-After"] == "0.5"
    sim.state.faults.failure_rate = 0.0
    assert (await post(body())).status == 200
    mixed = [
        (await post(body(), headers={"X-Simulator-Failure-Rate": "0.5"})).status for _ in range(40)
    ]
    assert set(mixed) == {200, 429}  # seeded: deterministic


async def test_retry_after_header_override(post: Poster) -> None:
    answer = await post(
        body(), headers={"X-Simulator-Status": "429", "X-Simulator-Retry-After": "3"}
    )
    assert answer.status == 429 and answer.headers["Retry-After"] == "3"
    plain = await post(body(), headers={"X-Simulator-Status": "502"})
    assert plain.status == 502 and "Retry-After" not in plain.headers


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"X-Simulator-Latency": "slow"}, "X-Simulator-Latency"),
        ({"X-Simulator-Latency": "0.5-0.1"}, "latency_max"),
        ({"X-Simulator-Latency": "-1"}, "X-Simulator-Latency"),
        ({"X-Simulator-Status": "abc"}, "X-Simulator-Status"),
        ({"X-Simulator-Status": "200"}, "status"),
        ({"X-Simulator-Failure-Rate": "2"}, "failure_rate"),
        ({"X-Simulator-Retry-After": "inf"}, "X-Simulator-Retry-After"),
        ({"X-Simulator-Hang": "maybe"}, "X-Simulator-Hang"),
        ({"X-Simulator-Malformed": "garbled"}, "malformed"),
    ],
)
async def test_bad_fault_headers_are_400(
    post: Poster, headers: dict[str, str], reason: str
) -> None:
    answer = await post(body(), headers=headers)
    assert answer.status == 400 and reason in answer.data["error"]


async def test_malformed_answers(post: Poster) -> None:
    def malformed(kind: str) -> dict[str, str]:
        return {"X-Simulator-Malformed": kind}

    not_json = await post(body(), headers=malformed("not-json"))
    assert not_json.status == 200 and not_json.data is None
    not_object = await post(body(), headers=malformed("not-object"))
    assert not_object.status == 200 and isinstance(not_object.data, list)
    missing = await post(body(), headers=malformed("missing-field"))
    assert missing.status == 200 and "endConversation" not in missing.data
    assert "responseElements" in missing.data
    wrong = await post(body(), headers=malformed("wrong-type"))
    assert wrong.status == 200 and wrong.data["endConversation"] == "yes"
    oversized = await post(body(), headers=malformed("oversized"))
    assert oversized.status == 200 and len(oversized.raw) > 2 * 1024 * 1024
    # malformed answers do not hide real errors
    assert (
        await post(message("hi", sessionId="nope"), headers=malformed("not-json"))
    ).status == 404
    if spec_available():
        assert not response_validator().is_valid(missing.data)
        assert not response_validator().is_valid(wrong.data)
        assert response_validator().is_valid(oversized.data)  # valid, just too big


async def test_hang_never_answers(post: Poster, sim: RunningSimulator) -> None:
    sim.state.faults.hang = True
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await post(body(), give_up_after=0.2)
    assert time.monotonic() - started < 2
    # the client gave up: the simulator lets go of the request too
    async with asyncio.timeout(5):
        await sim.state.wait_for(lambda s: s.stats().in_flight == 0)
    assert sim.state.requests[-1].status == 0 and sim.state.stats().by_status == {}
    # the header turns it off again for one request
    assert (await post(body(), headers={"X-Simulator-Hang": "0"})).status == 200


async def test_close_drops_hanging_requests_at_once(
    http_session: aiohttp.ClientSession,
) -> None:
    running = await start_simulator(state=SimulatorState(token=TOKEN))
    poster = Poster(http_session, running)
    pending = asyncio.create_task(poster(body(), headers={"X-Simulator-Hang": "1"}))
    async with asyncio.timeout(5):
        await running.state.wait_for(lambda s: s.stats().in_flight == 1)
    started = time.monotonic()
    await running.close()
    assert time.monotonic() - started < 0.5
    with pytest.raises(aiohttp.ClientError):
        await pending
    await running.close()  # idempotent


# --- control routes ---------------------------------------------------------------------------


async def test_control_routes(
    post: Poster, http_session: aiohttp.ClientSession, sim: RunningSimulator
) -> None:
    base = sim.url + "/_simulator"
    await post(body(sessionId="a"))
    await post(body(sessionId="b"))

    async with http_session.get(base + "/state") as resp:
        assert resp.status == 401  # a token is configured
    async with http_session.get(base + "/state", headers=AUTH) as resp:
        state = await resp.json()
    assert state["requests"] == 2 and state["by_status"] == {"200": 2}
    assert state["active_sessions"] == 2 and state["faults"]["latency"] == 0.0

    async with http_session.put(
        base + "/faults", json={"status": 429, "retry_after": 1}, headers=AUTH
    ) as resp:
        assert resp.status == 200 and (await resp.json())["status"] == 429
    assert sim.state.faults == Faults(status=429, retry_after=1)
    assert (await post(body())).status == 429
    for bad in ({"latency": -1}, {"bogus": 1}, {"hang": "yes"}, [1], {"failure_rate": True}):
        async with http_session.put(base + "/faults", json=bad, headers=AUTH) as resp:
            assert resp.status == 400 and (await resp.json())["error"]
    async with http_session.put(base + "/faults", data=b"{nope", headers=AUTH) as resp:
        assert resp.status == 400
    async with http_session.put(base + "/faults", json={}, headers=AUTH) as resp:
        assert resp.status == 200
    assert sim.state.faults == Faults()

    async with http_session.delete(base + "/sessions/a", headers=AUTH) as resp:
        assert (await resp.json()) == {"expired": 1}
    assert (await post(message("hi", sessionId="a"))).status == 404
    async with http_session.delete(base + "/sessions", headers=AUTH) as resp:
        assert (await resp.json()) == {"expired": 1}
    assert (await post(message("hi", sessionId="b"))).status == 404

    async with http_session.get(base + "/requests", headers=AUTH) as resp:
        recorded = await resp.json()
    assert [r["status"] for r in recorded] == [200, 200, 429, 404, 404]
    assert recorded[0]["session_id"] == "a" and recorded[0]["event_type"] == "launch"
    assert set(recorded[0]) == {
        "at",
        "status",
        "release_id",
        "event_type",
        "text",
        "requester_id",
        "session_id",
        "context",
        "request_id",
        "traceparent",
    }
    async with http_session.get(base + "/requests?session_id=b", headers=AUTH) as resp:
        assert len(await resp.json()) == 2

    async with http_session.get(base + "/card.png") as resp:
        assert resp.status == 200 and png_size(await resp.read()) == (320, 180)


def test_card_png_is_a_real_png() -> None:
    import zlib

    data = card_png()
    assert png_size(data) == (320, 180)
    assert card_png() is data  # built once
    # walk the chunks and check their CRCs and the pixel data length
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, chunk = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(tag + chunk)
        if tag == b"IDAT":
            idat += chunk
        pos += 12 + length
    assert len(zlib.decompress(idat)) == 180 * (1 + 320 * 3)


# --- the Faults type ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"latency": -0.1},
        {"latency": float("nan")},
        {"latency": 1.0, "latency_max": 0.5},
        {"failure_rate": 1.5},
        {"failure_status": 200},
        {"status": 700},
        {"retry_after": -1},
        {"malformed": "nope"},
    ],
)
def test_faults_reject_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Faults(**kwargs)


def test_fault_headers() -> None:
    base = Faults(latency=1.0, status=503)
    assert faults_from_headers(base, {}) is base
    changed = faults_from_headers(
        base,
        {
            "X-Simulator-Latency": "0.1-0.5",
            "X-Simulator-Hang": "true",
            "X-Simulator-Malformed": "wrong-type",
            "X-Simulator-Failure-Rate": "0.25",
        },
    )
    assert changed == Faults(
        latency=0.1,
        latency_max=0.5,
        status=503,
        hang=True,
        malformed="wrong-type",
        failure_rate=0.25,
    )
    assert base == Faults(latency=1.0, status=503)  # not mutated
    assert (
        faults_from_headers(Faults(malformed="not-json"), {"X-Simulator-Malformed": "none"})
        == Faults()
    )


# --- against the real client, and under load --------------------------------------------------


async def test_the_client_understands_the_simulator(sim: RunningSimulator) -> None:
    async with TextchatClient(sim.url, RELEASE, TOKEN, timeouts=Timeouts(2, 2)) as client:
        launched = await client.launch("u", "s")
        assert launched.response.release_id == RELEASE
        assert launched.request_id == sim.state.requests[-1].request_id
        answered = await client.message("a card", "u", "s")
        assert isinstance(answered.response.response_elements[0], CardElement)
        with pytest.raises(SessionNotFound):
            await client.message("hi", "u", "unknown")
        with pytest.raises(MalformedResponse):
            await client.send(
                MessageEvent(text="hi"), "u", "s", headers={"X-Simulator-Malformed": "oversized"}
            )
        with pytest.raises(RateLimited) as limited:
            await client.send(
                LaunchEvent(),
                "u",
                "s",
                headers={"X-Simulator-Status": "429", "X-Simulator-Retry-After": "7"},
            )
        assert limited.value.retry_after == 7
    async with TextchatClient(sim.url, RELEASE, "wrong") as client:
        with pytest.raises(Unauthorized):
            await client.launch("u", "s")


async def test_a_thousand_concurrent_conversations(http_session: aiohttp.ClientSession) -> None:
    running = await start_simulator(state=SimulatorState(token=TOKEN))
    try:
        connector = aiohttp.TCPConnector(limit=1000)
        async with aiohttp.ClientSession(
            trust_env=False, connector=connector, timeout=aiohttp.ClientTimeout(total=30)
        ) as session:
            poster = Poster(session, running)
            started = time.monotonic()
            launches = await asyncio.gather(*(poster(body(sessionId=f"s{i}")) for i in range(1000)))
            messages = await asyncio.gather(
                *(poster(message(f"hi {i}", sessionId=f"s{i}")) for i in range(1000))
            )
            elapsed = time.monotonic() - started
        assert {a.status for a in launches} == {200} and {a.status for a in messages} == {200}
        assert messages[123].data["responseElements"][0]["content"] == "You said: hi 123"
        assert running.state.stats().active_sessions == 1000
        assert elapsed < 20, elapsed
    finally:
        await running.close()


async def test_events_keep_arrival_order_per_session(post: Poster, sim: RunningSimulator) -> None:
    await post(body(sessionId="x"))
    await post(body(sessionId="y"))
    for i in range(3):
        await post(message(f"x{i}", sessionId="x"))
        await post(message(f"y{i}", sessionId="y"))
    assert sim.state.events("x") == [("launch", None)] + [("message", f"x{i}") for i in range(3)]
    assert len(sim.state.events()) == 8
