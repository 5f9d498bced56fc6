"""A local Parloa TextchatV2 server with a scripted demo bot.

Used by the test suite, the benchmarks (it has to stay fast under 1000+ concurrent requests),
``parloa-bridge simulator`` and the demo. It speaks the real protocol::

    POST /dialoghook?dialog=<releaseId>&platform=textchatV2      Authorization: Bearer <token>

validates every request exactly as the OpenAPI spec's ``TextchatV2RequestBody`` does (400 with
a reason), answers with bodies that validate against ``TextchatV2ResponseBody``, keeps sessions
in a bounded in-memory LRU (optionally with a TTL) and answers ``message`` for an unknown
session with 404.

The demo bot's script is in :mod:`bridge.devtools.demo_bot`; sessions, recorded requests and
counters in :mod:`bridge.devtools.simulator_state`. Faults (latency, error statuses, hangs,
malformed bodies) come from :class:`~bridge.devtools.faults.Faults` on the state, overridable
per request by ``X-Simulator-*`` headers, so a test or benchmark can use it as a slow or
failing Parloa. Control routes live under ``/_simulator/``.

A developer tool: the bridge imports it only when ``[simulator] enabled`` is set, and the
``simulator`` command.

The Authorization header and the token are never logged or recorded.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web
from pydantic import ValidationError
from yarl import URL

from bridge.devtools.demo_bot import CARD_SIZES, SUGGESTION_CHIPS, card_png, script
from bridge.devtools.faults import MALFORMED_KINDS, Faults, faults_from_headers
from bridge.devtools.simulator_state import RecordedRequest, SimulatorState, Stats
from bridge.textchat.models import (
    API_VERSION,
    PLATFORM,
    TextchatRequest,
    describe_validation_error,
    parse_wire,
)

__all__ = [
    "CARD_SIZES",
    "MALFORMED_KINDS",
    "MAX_BODY_BYTES",
    "STATE_KEY",
    "SUGGESTION_CHIPS",
    "Faults",
    "RecordedRequest",
    "RunningSimulator",
    "SimulatorState",
    "Stats",
    "card_png",
    "create_simulator_app",
    "faults_from_headers",
    "serve_forever",
    "start_simulator",
]

log = logging.getLogger("bridge.simulator")

MAX_BODY_BYTES: Final = 1024 * 1024
_OVERSIZED_BYTES: Final = 2 * 1024 * 1024 + 1

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
    Harmless once the model is exact; the equivalence test in
    tests/bridge/devtools/test_simulator.py guards it."""
    if "apiVersion" not in data:
        return "apiVersion: Field required"
    if "context" in data and data["context"] is None:
        return "context: Input should be a valid array"
    return None


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
    record = state.arrive(release_id, request_id, request.headers.get("traceparent"))
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
            state.answered(record, answered)
        state.left()
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
    turn = script(state, req, release_id, str(request.url.origin()))
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
    return _json(200, {**state.stats().to_json(), "faults": state.faults.to_json()})


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
