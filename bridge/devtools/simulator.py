"""A local Parloa TextchatV2 server with a scripted demo bot.

Used by the test suite, the benchmarks (it has to stay fast under 1000+ concurrent requests),
``parloa-bridge simulator`` and the demo. It speaks the real protocol::

    POST /dialoghook?dialog=<releaseId>&platform=textchatV2      Authorization: Bearer <token>

validates every request exactly as the OpenAPI spec's ``TextchatV2RequestBody`` does (400 with
a reason), answers with bodies that validate against ``TextchatV2ResponseBody``, keeps sessions
in a bounded in-memory LRU (optionally with a TTL) and answers ``message`` for an unknown
session with 404.

The demo bot's script: ``launch`` → a welcome text plus a ``payload`` with ``suggestionChips``;
a message containing "card" → a ``cross_card`` with an image served by the simulator itself;
containing "bye" → a farewell with ``endConversation: true``; anything else → an echo.
``quit`` ends the session (idempotently).

Faults (latency, error statuses, hangs, malformed bodies) come from :class:`Faults` on the
state, overridable per request by ``X-Simulator-*`` headers, so a test or benchmark can use it
as a slow or failing Parloa. Control routes live under ``/_simulator/``.

The Authorization header and the token are never logged or recorded.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import hmac
import json
import logging
import math
import random
import struct
import time
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web
from pydantic import ValidationError
from yarl import URL

from bridge.textchat.models import (
    API_VERSION,
    PLATFORM,
    LaunchEvent,
    MessageEvent,
    QuitEvent,
    TextchatRequest,
    describe_validation_error,
    parse_wire,
)

log = logging.getLogger("bridge.simulator")

MAX_BODY_BYTES: Final = 1024 * 1024
MALFORMED_KINDS: Final = frozenset(
    {"not-json", "not-object", "missing-field", "wrong-type", "oversized"}
)
#: what the welcome's payload offers as buttons
SUGGESTION_CHIPS: Final = ("Show me a card", "What can you do?", "bye")
CARD_SIZES: Final = {"large": (320, 180), "small": (160, 90)}

_OVERSIZED_BYTES: Final = 2 * 1024 * 1024 + 1
# Fault statuses a test may ask for: anything that is not a success.
_FAULT_STATUS_RANGE: Final = range(300, 600)


# --- faults -----------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _non_negative(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


@dataclass
class Faults:
    """What goes wrong, and how slowly. Tests may mutate the state's instance at runtime."""

    latency: float = 0.0  # seconds added before answering
    latency_max: float | None = None  # if set: uniform random latency in [latency, latency_max]
    failure_rate: float = 0.0  # fraction (0..1) of requests answered with failure_status
    failure_status: int = 503
    status: int | None = None  # when set, every dialoghook request gets this status
    retry_after: float | None = None  # Retry-After header value on fault answers
    hang: bool = False  # accept the request and never answer
    malformed: str | None = None  # answer 200 with a broken body; see MALFORMED_KINDS

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str | None:
        """Why these faults are invalid, or None."""
        for name, value, optional in (
            ("latency", self.latency, False),
            ("latency_max", self.latency_max, True),
            ("retry_after", self.retry_after, True),
        ):
            if not (value is None and optional) and not _non_negative(value):
                return f"{name} must be a finite number >= 0"
        if self.latency_max is not None and self.latency_max < self.latency:
            return "latency_max must be >= latency"
        if not _is_number(self.failure_rate) or not 0 <= self.failure_rate <= 1:
            return "failure_rate must be a number between 0 and 1"
        for name, status in (("failure_status", self.failure_status), ("status", self.status)):
            if status is None and name == "status":
                continue
            if not isinstance(status, int) or isinstance(status, bool):
                return f"{name} must be an integer HTTP status"
            if status not in _FAULT_STATUS_RANGE:
                return f"{name} must be between 300 and 599"
        if not isinstance(self.hang, bool):
            return "hang must be a boolean"
        if self.malformed is not None and (
            not isinstance(self.malformed, str) or self.malformed not in MALFORMED_KINDS
        ):
            return f"malformed must be one of {', '.join(sorted(MALFORMED_KINDS))} or null"
        return None

    @classmethod
    def from_json(cls, data: object) -> Faults:
        """Faults from a JSON object with the field names; ValueError on anything else."""
        if not isinstance(data, dict):
            raise ValueError("faults must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(unknown)}")
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def pick_latency(self, rng: random.Random) -> float:
        if self.latency_max is not None:
            return rng.uniform(self.latency, self.latency_max)
        return self.latency


def _header_number(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw[:40]!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0")
    return value


_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def faults_from_headers(base: Faults, headers: Mapping[str, str]) -> Faults:
    """``base`` overridden by the request's ``X-Simulator-*`` headers; ValueError if bad."""
    changes: dict[str, Any] = {}
    if (raw := headers.get("X-Simulator-Latency")) is not None:
        low, sep, high = raw.strip().partition("-")
        changes["latency"] = _header_number("X-Simulator-Latency", low)
        changes["latency_max"] = _header_number("X-Simulator-Latency", high) if sep else None
    if (raw := headers.get("X-Simulator-Status")) is not None:
        try:
            changes["status"] = int(raw)
        except ValueError:
            raise ValueError(f"X-Simulator-Status must be an integer, got {raw[:40]!r}") from None
    if (raw := headers.get("X-Simulator-Failure-Rate")) is not None:
        changes["failure_rate"] = _header_number("X-Simulator-Failure-Rate", raw)
    if (raw := headers.get("X-Simulator-Retry-After")) is not None:
        changes["retry_after"] = _header_number("X-Simulator-Retry-After", raw)
    if (raw := headers.get("X-Simulator-Hang")) is not None:
        flag = raw.strip().lower()
        if flag not in _TRUE | _FALSE:
            raise ValueError("X-Simulator-Hang must be 1 or 0")
        changes["hang"] = flag in _TRUE
    if (raw := headers.get("X-Simulator-Malformed")) is not None:
        kind = raw.strip()
        changes["malformed"] = None if kind.lower() in ("", "none") else kind
    if not changes:
        return base
    try:
        return dataclasses.replace(base, **changes)
    except ValueError as exc:
        raise ValueError(f"X-Simulator headers: {exc}") from None


# --- state ------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One dialoghook call, accepted or rejected. ``status`` is 0 while (or if) unanswered,
    e.g. a hung request. ``request_id`` is the X-Request-Id answered with."""

    at: float
    status: int
    release_id: str | None
    event_type: str | None
    text: str | None
    requester_id: str | None
    session_id: str | None
    context: list[dict[str, Any]] | None
    request_id: str | None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Stats(dict[str, Any]):
    """A snapshot of the counters. Calling it returns itself, so ``state.stats["requests"]``
    and ``state.stats()["requests"]`` both work."""

    def __call__(self) -> Stats:
        return self


@dataclass
class _Session:
    conversation_id: str
    requester_id: str
    release_id: str
    last_used: float
    turns: int = 0


class SimulatorState:
    """Sessions, faults, recorded requests and counters of one simulator.

    Not thread-safe: use it from the event loop the simulator runs on.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        faults: Faults | None = None,
        max_sessions: int = 10_000,
        session_ttl: float | None = None,
        max_recorded: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
    ) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")
        self.token = token or None
        self.faults = faults if faults is not None else Faults()
        self.max_sessions = max_sessions
        self.session_ttl = session_ttl
        self.clock = clock
        self.rng = random.Random(seed)
        self.requests: collections.deque[RecordedRequest] = collections.deque(maxlen=max_recorded)
        # Ordered by last use, oldest first: LRU eviction and TTL purge both pop from the front.
        self._sessions: collections.OrderedDict[str, _Session] = collections.OrderedDict()
        self._total = 0
        self._by_status: collections.Counter[int] = collections.Counter()
        self._in_flight = 0
        self._sessions_started = 0
        self._sessions_evicted = 0
        self._sessions_expired = 0
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        # Never show the token.
        return (
            f"SimulatorState(token={'set' if self.token else 'none'}, faults={self.faults!r}, "
            f"sessions={len(self._sessions)}, requests={self._total})"
        )

    # --- sessions ---

    def _purge_expired(self) -> None:
        if self.session_ttl is None:
            return
        deadline = self.clock() - self.session_ttl
        while self._sessions:
            first = next(iter(self._sessions.values()))
            if first.last_used >= deadline:
                break
            self._sessions.popitem(last=False)
            self._sessions_expired += 1

    def _start_session(self, session_id: str, requester_id: str, release_id: str) -> _Session:
        self._purge_expired()
        self._sessions.pop(session_id, None)
        session = _Session(str(uuid.uuid4()), requester_id, release_id, self.clock())
        self._sessions[session_id] = session
        self._sessions_started += 1
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
            self._sessions_evicted += 1
        return session

    def _touch_session(self, session_id: str) -> _Session | None:
        self._purge_expired()
        session = self._sessions.get(session_id)
        if session is not None:
            session.last_used = self.clock()
            self._sessions.move_to_end(session_id)
        return session

    def _end_session(self, session_id: str) -> _Session | None:
        self._purge_expired()
        return self._sessions.pop(session_id, None)

    def expire_sessions(self, session_id: str | None = None) -> int:
        """Forget one session or all of them (their next message gets 404). Returns how many."""
        if session_id is None:
            count = len(self._sessions)
            self._sessions.clear()
        else:
            count = 1 if self._sessions.pop(session_id, None) is not None else 0
        self._sessions_expired += count
        return count

    def has_session(self, session_id: str) -> bool:
        self._purge_expired()
        return session_id in self._sessions

    # --- requests ---

    def _arrive(self, release_id: str | None, request_id: str) -> RecordedRequest:
        record = RecordedRequest(
            at=self.clock(),
            status=0,
            release_id=release_id,
            event_type=None,
            text=None,
            requester_id=None,
            session_id=None,
            context=None,
            request_id=request_id,
        )
        self.requests.append(record)
        self._total += 1
        self._in_flight += 1
        self._notify()
        return record

    def _answered(self, record: RecordedRequest, status: int) -> None:
        record.status = status
        self._by_status[status] += 1
        self._notify()

    def _left(self) -> None:
        self._in_flight -= 1
        self._notify()

    def _notify(self) -> None:
        # Wake every waiter, then start a fresh generation of the event.
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[SimulatorState], bool]) -> None:
        """Wait until ``predicate(state)`` holds, checked on every request arrival and answer.
        Lets tests wait without sleeping; bound it with ``asyncio.timeout``."""
        while not predicate(self):
            await self._changed.wait()

    def events(self, session_id: str | None = None) -> list[tuple[str, str | None]]:
        """``(event_type, text)`` of the accepted (200) requests, in arrival order."""
        return [
            (r.event_type, r.text)
            for r in self.requests
            if r.status == 200
            and r.event_type is not None
            and (session_id is None or r.session_id == session_id)
        ]

    @property
    def stats(self) -> Stats:
        """Counters: ``requests`` (arrived), ``by_status`` (answered; keys are status strings,
        as in the JSON of ``GET /_simulator/state``), ``in_flight``, ``active_sessions``, ..."""
        self._purge_expired()
        return Stats(
            {
                "requests": self._total,
                "by_status": {str(k): v for k, v in sorted(self._by_status.items())},
                "in_flight": self._in_flight,
                "active_sessions": len(self._sessions),
                "sessions_started": self._sessions_started,
                "sessions_evicted": self._sessions_evicted,
                "sessions_expired": self._sessions_expired,
            }
        )


# --- the card image ---------------------------------------------------------------------------


@functools.cache
def card_png(width: int = 320, height: int = 180) -> bytes:
    """A small RGB gradient PNG, built once per size with zlib and struct."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + tag
            + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type "none"
        blue = 255 - 200 * y // max(1, height - 1)
        for x in range(width):
            red = 40 + 200 * x // max(1, width - 1)
            rows += bytes((red, 90 + 100 * y // max(1, height - 1), blue))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + chunk(b"IEND", b"")
    )


# --- HTTP -------------------------------------------------------------------------------------

STATE_KEY: Final = web.AppKey("simulator_state", SimulatorState)
_HANGING_KEY: Final = web.AppKey("simulator_hanging", set[asyncio.Task[Any]])


def _reject_constant(name: str) -> Any:
    raise ValueError(f"body is not valid JSON: {name} is not a JSON value")


def _loads(raw: bytes) -> Any:
    """Strict JSON (NaN/Infinity literals are not JSON); ValueError with a reason if bad."""
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"body is not valid JSON: {exc.msg} at position {exc.pos}") from None
    except UnicodeDecodeError:
        raise ValueError("body is not valid JSON: not UTF-8") from None
    except RecursionError:
        raise ValueError("body is not valid JSON: nested too deeply") from None


def _json(status: int, body: object, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(body, ensure_ascii=False),
        content_type="application/json",
        headers=headers,
    )


def _error(status: int, reason: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return _json(status, {"error": reason}, headers)


def _bearer_problem(request: web.Request, token: str | None) -> str | None:
    """Why the request's bearer is not acceptable, or None. Never echoes what was sent."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        return "missing bearer token"
    if token is not None and not hmac.compare_digest(given.encode(), token.encode()):
        return "invalid token"
    return None


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}".rstrip("0").rstrip(".")


def _fill_record(record: RecordedRequest, data: object) -> None:
    """Best effort: what a (possibly invalid) body says, for tests to assert on."""
    if not isinstance(data, dict):
        return
    event = data.get("event")
    if isinstance(event, dict):
        kind, text = event.get("type"), event.get("text")
        record.event_type = kind if isinstance(kind, str) else None
        record.text = text if isinstance(text, str) else None
    for attr, key in (("requester_id", "requesterId"), ("session_id", "sessionId")):
        value = data.get(key)
        if isinstance(value, str):
            setattr(record, attr, value)
    context = data.get("context")
    if isinstance(context, list) and all(isinstance(item, dict) for item in context):
        record.context = context


def _wire_gap(data: dict[str, Any]) -> str | None:
    """What the spec rejects but :class:`TextchatRequest` accepts when parsing wire data: the
    model fills in a missing apiVersion (its Python default) and allows ``context: null``.
    Harmless once the model is exact; the equivalence test in tests/test_simulator.py guards it."""
    if "apiVersion" not in data:
        return "apiVersion: Field required"
    if "context" in data and data["context"] is None:
        return "context: Input should be a valid array"
    return None


def _element_id() -> str:
    return str(uuid.uuid4())


def _text(content: str) -> dict[str, Any]:
    return {"type": "text", "id": _element_id(), "content": content}


def _card(origin: str) -> dict[str, Any]:
    image_url = URL(origin + "/_simulator/card.png")
    variants = {
        size: {
            "url": str(image_url if size == "large" else image_url.with_query(size=size)),
            "width": str(width),
            "height": str(height),
        }
        for size, (width, height) in CARD_SIZES.items()
    }
    return {
        "type": "cross_card",
        "id": _element_id(),
        "title": "A card from the simulator",
        "subtitle": "Rendered by your channel",
        "content": 'Cards have a title, a subtitle, text and an image. Say "bye" to finish.',
        "image": {"accessibilityText": "A colourful gradient", **variants},
    }


@dataclass(frozen=True, slots=True)
class _Turn:
    """What the bot answers to one event."""

    conversation_id: str
    end: bool
    elements: list[dict[str, Any]]


def _script(
    state: SimulatorState, req: TextchatRequest, release_id: str, origin: str
) -> _Turn | None:
    """The demo bot. None: a message for a session that does not exist (404)."""
    event = req.event
    if isinstance(event, LaunchEvent):
        session = state._start_session(req.session_id, req.requester_id, release_id)
        welcome = [
            _text(
                "Hello! I am the demo bot of the parloa-bridge simulator. "
                'Ask me for a card, or say "bye".'
            ),
            # The spec's payload element has no "id" property (additionalProperties: false).
            {"type": "payload", "content": {"suggestionChips": list(SUGGESTION_CHIPS)}},
        ]
        return _Turn(session.conversation_id, False, welcome)
    if isinstance(event, QuitEvent):
        # Quitting is idempotent: an unknown session is answered like a known one.
        ended = state._end_session(req.session_id)
        return _Turn(ended.conversation_id if ended else str(uuid.uuid4()), True, [])
    assert isinstance(event, MessageEvent)
    current = state._touch_session(req.session_id)
    if current is None:
        return None
    current.turns += 1
    lowered = event.text.lower()
    if "card" in lowered:
        return _Turn(current.conversation_id, False, [_card(origin)])
    if "bye" in lowered:
        state._end_session(req.session_id)
        return _Turn(current.conversation_id, True, [_text("Bye! See you later :)")])
    elements = [_text(f"You said: {event.text}")]
    if "what can you do" in lowered:
        elements.append(
            _text(
                'I can show you a card (say "card"), repeat what you write, '
                'and end our conversation when you say "bye".'
            )
        )
    return _Turn(current.conversation_id, False, elements)


def _malformed_body(kind: str, body: dict[str, Any]) -> bytes:
    if kind == "not-json":
        return b"<html><body>502 Bad Gateway</body></html>"
    if kind == "not-object":
        return json.dumps([body]).encode()
    if kind == "missing-field":
        return json.dumps({k: v for k, v in body.items() if k != "endConversation"}).encode()
    if kind == "wrong-type":
        return json.dumps({**body, "endConversation": "yes"}).encode()
    # "oversized": valid JSON, and even a valid response, just too big.
    padding = {"type": "text", "content": "x" * _OVERSIZED_BYTES}
    return json.dumps({**body, "responseElements": [*body["responseElements"], padding]}).encode()


async def _dialoghook(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    request_id = request.headers.get("X-Request-Id") or str(uuid.uuid4())
    headers = {"X-Request-Id": request_id, "X-Correlation-Id": str(uuid.uuid4())}
    release_id = request.query.get("dialog")
    record = state._arrive(release_id, request_id)
    answered = 0
    try:
        # Header overrides are parsed first so that latency applies to every answer; a bad
        # header is reported in its place in the check order (after the body).
        fault_error: str | None = None
        try:
            faults = faults_from_headers(state.faults, request.headers)
        except ValueError as exc:
            faults, fault_error = state.faults, str(exc)
        delay = faults.pick_latency(state.rng)
        if delay > 0:
            await asyncio.sleep(delay)
        response = await _answer(request, state, record, faults, fault_error, headers)
        answered = response.status
        return response
    finally:
        if answered:
            state._answered(record, answered)
        state._left()
        log.debug(
            "dialoghook release=%s session=%s event=%s status=%s request_id=%s",
            release_id,
            record.session_id,
            record.event_type,
            answered or "unanswered",
            request_id,
        )


async def _answer(
    request: web.Request,
    state: SimulatorState,
    record: RecordedRequest,
    faults: Faults,
    fault_error: str | None,
    headers: dict[str, str],
) -> web.Response:
    # 1. bearer
    if problem := _bearer_problem(request, state.token):
        return _error(401, problem, {**headers, "WWW-Authenticate": "Bearer"})
    # 2. query
    release_id = request.query.get("dialog", "")
    if not release_id:
        return _error(400, "query parameter dialog (the releaseId) is required", headers)
    if request.query.get("platform") != PLATFORM:
        return _error(400, f"query parameter platform must be {PLATFORM}", headers)
    # 3. JSON object
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"request body exceeds {MAX_BODY_BYTES} bytes", headers)
    try:
        data = _loads(raw)
    except ValueError as exc:
        return _error(400, str(exc), headers)
    _fill_record(record, data)
    if not isinstance(data, dict):
        return _error(400, "body must be a JSON object", headers)
    # 4. the schema
    if gap := _wire_gap(data):
        return _error(400, gap, headers)
    try:
        req = parse_wire(TextchatRequest, data)
    except ValidationError as exc:
        return _error(400, describe_validation_error(exc), headers)
    # 5. faults
    if fault_error:
        return _error(400, fault_error, headers)
    if faults.hang:
        # Never answer. The task ends when the client disconnects (aiohttp cancels it) or
        # when the simulator closes (close() cancels it): the connection drops unanswered.
        hanging = request.app[_HANGING_KEY]
        task = asyncio.current_task()
        assert task is not None
        hanging.add(task)
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            hanging.discard(task)
    fault_headers = dict(headers)
    if faults.retry_after is not None:
        fault_headers["Retry-After"] = _format_seconds(faults.retry_after)
    if faults.status is not None:
        return _error(faults.status, f"simulated HTTP {faults.status}", fault_headers)
    if faults.failure_rate > 0 and state.rng.random() < faults.failure_rate:
        status = faults.failure_status
        return _error(status, f"simulated HTTP {status} (failure_rate)", fault_headers)
    # 6. the script
    turn = _script(state, req, release_id, str(request.url.origin()))
    if turn is None:
        return _error(404, "session not found", headers)
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "releaseId": release_id,
        "requesterId": req.requester_id,
        "sessionId": req.session_id,
        "conversationId": turn.conversation_id,
        "transactionId": str(uuid.uuid4()),
        "endConversation": turn.end,
        "responseElements": turn.elements,
    }
    if faults.malformed:
        return web.Response(
            status=200,
            body=_malformed_body(faults.malformed, body),
            content_type="application/json",
            headers=headers,
        )
    return _json(200, body, headers)


# --- control routes ---------------------------------------------------------------------------


def _control_auth(request: web.Request) -> web.Response | None:
    state = request.app[STATE_KEY]
    if state.token is None:
        return None
    if problem := _bearer_problem(request, state.token):
        return _error(401, problem, {"WWW-Authenticate": "Bearer"})
    return None


async def _get_state(request: web.Request) -> web.Response:
    if denied := _control_auth(request):
        return denied
    state = request.app[STATE_KEY]
    return _json(200, {**state.stats, "faults": state.faults.to_json()})


async def _put_faults(request: web.Request) -> web.Response:
    if denied := _control_auth(request):
        return denied
    state = request.app[STATE_KEY]
    try:
        faults = Faults.from_json(_loads(await request.read()))
    except (ValueError, TypeError) as exc:
        return _error(400, str(exc))
    state.faults = faults
    log.info("simulator faults set: %s", faults)
    return _json(200, faults.to_json())


async def _delete_sessions(request: web.Request) -> web.Response:
    if denied := _control_auth(request):
        return denied
    state = request.app[STATE_KEY]
    return _json(200, {"expired": state.expire_sessions(request.match_info.get("session_id"))})


async def _get_requests(request: web.Request) -> web.Response:
    if denied := _control_auth(request):
        return denied
    state = request.app[STATE_KEY]
    session_id = request.query.get("session_id")
    return _json(
        200,
        [r.to_json() for r in state.requests if session_id is None or r.session_id == session_id],
    )


async def _get_card(request: web.Request) -> web.Response:
    size = request.query.get("size", "large")
    if size not in CARD_SIZES:
        return _error(400, f"size must be one of {', '.join(CARD_SIZES)}")
    return web.Response(
        body=card_png(*CARD_SIZES[size]),
        content_type="image/png",
        headers={"Cache-Control": "public, max-age=86400"},
    )


def create_simulator_app(state: SimulatorState) -> web.Application:
    """The simulator as an aiohttp application (bodies over 1 MiB get 413)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATE_KEY] = state
    app[_HANGING_KEY] = set()
    app.router.add_post("/dialoghook", _dialoghook)
    app.router.add_get("/_simulator/state", _get_state)
    app.router.add_put("/_simulator/faults", _put_faults)
    app.router.add_delete("/_simulator/sessions", _delete_sessions)
    app.router.add_delete("/_simulator/sessions/{session_id}", _delete_sessions)
    app.router.add_get("/_simulator/requests", _get_requests)
    app.router.add_get("/_simulator/card.png", _get_card)
    return app


@dataclass
class RunningSimulator:
    """A simulator serving on a real socket; ``url`` is the base_url for a TextchatClient."""

    url: str
    state: SimulatorState
    _runner: web.AppRunner = field(repr=False)

    async def close(self) -> None:
        """Stop serving. Hung requests are dropped at once; idempotent."""
        hanging = self._runner.app[_HANGING_KEY]
        for task in tuple(hanging):
            task.cancel()
        await self._runner.cleanup()

    async def __aenter__(self) -> RunningSimulator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def start_simulator(
    host: str = "127.0.0.1", port: int = 0, state: SimulatorState | None = None
) -> RunningSimulator:
    """Serve a simulator on ``host:port`` (port 0: any free port; ``url`` has the real one)."""
    state = state if state is not None else SimulatorState()
    runner = web.AppRunner(
        create_simulator_app(state),
        access_log=None,  # a benchmark would drown in it
        handler_cancellation=True,  # a client that gives up ends its (hung) request
        shutdown_timeout=1.0,  # in-flight slow answers do not hold up close() for long
    )
    await runner.setup()
    # A large backlog, so a burst of 1000+ new connections is not throttled by SYN retries.
    site = web.TCPSite(runner, host, port, backlog=4096)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1]
    url = str(URL.build(scheme="http", host=host, port=bound_port))
    return RunningSimulator(url=url, state=state, _runner=runner)


async def serve_forever(host: str, port: int, state: SimulatorState) -> None:
    """Run a simulator until cancelled (for ``parloa-bridge simulator``)."""
    running = await start_simulator(host, port, state)
    log.info("simulator listening on %s", running.url)
    try:
        await asyncio.Event().wait()
    finally:
        await running.close()
