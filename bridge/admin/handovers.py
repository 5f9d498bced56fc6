"""The console's agent inbox (issue 27, desk = "console"): the handovers of the bots whose
desk is the console, their transcripts, and the agents' acts, under ``/admin/api/handovers``.
Served as ``admin_routes(deps, extra=handover_routes(deps))``: behind the admin token, with
the API's answers to bad input (400) and an unavailable database (503).

    GET  /admin/api/handovers              open handovers, newest first (?all=1: ended too)
    GET  /admin/api/handovers/events       server-sent events: "changed" when any changed
    GET  /admin/api/handovers/{key}        one, with its conversation and transcript
    POST /admin/api/handovers/{key}/take       {"agent": {"name"}, "event_id"?}
    POST /admin/api/handovers/{key}/message    {"text", "agent": {"name"}, "event_id"?}
    POST /admin/api/handovers/{key}/resolve    {"agent"?: {"name"}, "event_id"?}

An act is stored through :class:`~bridge.handover.desk.Agents` (the user's inbox,
deduplicated on its event id) and answered once stored: 200 ``{"status": "accepted" |
"duplicate", "event_id"}``. The page sends an ``event_id`` of its own with each reply, so a
reply it sends again (a lost answer) reaches the user once; without one the route makes one.
No such handover (or not a console bot's) 404, ended 409, not storable 400, the database
away 503 with Retry-After.

The event stream is how the page stays live without polling: the console desk
(bridge/handover/console.py) announces every desk event on the agents' shared state, whose
watchers wake in every replica; each wake-up is one ``changed`` event (the page then reads
the list again). A comment every ``keepalive_seconds`` keeps proxies from closing an idle
stream and re-reads the state, the safety net for a missed wake-up. :class:`EventStreams`
ends every stream when the bridge stops, so the server is not kept waiting by them."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bridge.admin import AdminDeps
from bridge.admin.api import BadRequest, handover_json
from bridge.channel import (
    DeskAction,
    loads_object,
)
from bridge.channelkit import is_storable_text
from bridge.handover.console import CHANGED_KEY
from bridge.handover.desk import ACT_ERRORS, AgentCommand, Agents, act_refusal
from bridge.vocabulary import Conversation, Handover, Turn

log = logging.getLogger("bridge.admin.handovers")

PREFIX = "/admin/api/handovers"
#: handovers a list shows: default and most
LIST_DEFAULT, LIST_MAX = 100, 500
#: lines of the conversation before the handover shown with it
TURNS_BEFORE = 10
#: lines of the handover itself shown at most (the latest)
TURNS_MAX = 500
MAX_TEXT_CHARS = 4000
MAX_NAME_CHARS = 100
MAX_EVENT_ID_CHARS = 200
MAX_BODY_BYTES = 64 * 1024
KEEPALIVE_SECONDS = 15.0
#: how often a stream looks whether its page is still connected
LIVENESS_SECONDS = 0.5
#: how long a page waits before reconnecting a stream that ended (the SSE "retry" field)
RECONNECT_MS = 2000
RETRY_AFTER_SECONDS = 5


# --- what the routes answer -----------------------------------------------------------------


def conversation_summary(c: Conversation) -> dict[str, Any]:
    """Who the agent talks to: the channel and the user's id on it."""
    return {
        "id": c.id,
        "channel": c.channel,
        "user": c.requester_id.removeprefix(f"{c.channel}:"),
        "state": str(c.state),
        "last_activity_at": c.last_activity_at,
    }


def handover_transcript(h: Handover, before: Sequence[Turn], during: Sequence[Turn]) -> list[Turn]:
    """The last :data:`TURNS_BEFORE` lines before the handover started, then its own (up to
    its end). ``before``: the conversation's latest lines; ``during``: those since the start."""
    earlier = [t for t in before if t.at < h.started_at][-TURNS_BEFORE:]
    own = [t for t in during if h.ended_at is None or t.at <= h.ended_at]
    return [*earlier, *own]


# --- what the acts say ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActRequest:
    text: str
    agent_name: str | None
    event_id: str | None


def _string(body: Mapping[str, Any], name: str, limit: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name}: a string")
    value = value.strip()
    if not value:
        return None
    if len(value) > limit:
        raise BadRequest(f"{name}: longer than {limit} characters")
    if "\x00" in value or not is_storable_text(value):
        raise BadRequest(f"{name}: not a text the bridge stores")
    return value


def parse_act(body: Mapping[str, Any], action: DeskAction) -> ActRequest:
    """An act's body: ``text`` (a message's, required), ``agent`` ({"name"}), ``event_id``.
    Raises BadRequest saying what is wrong."""
    allowed = {"agent", "event_id"} | ({"text"} if action is DeskAction.MESSAGE else set())
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    agent = body.get("agent")
    if agent is not None and not isinstance(agent, dict):
        raise BadRequest('agent: an object, {"name": "..."}')
    name = _string(agent or {}, "name", MAX_NAME_CHARS)
    text = _string(body, "text", MAX_TEXT_CHARS) or ""
    if action is DeskAction.MESSAGE and not text:
        raise BadRequest("text: a non-empty string is required")
    event_id = _string(body, "event_id", MAX_EVENT_ID_CHARS)
    return ActRequest(text, name, event_id)


def act_event_id(key: str, action: DeskAction, wanted: ActRequest, fresh: str) -> str:
    """The act's id, the key it is deduplicated on: the page's own (the same reply sent again
    is one reply); else a take of one agent or a resolve is one act per handover, and a
    message a new one (``fresh``)."""
    if wanted.event_id is not None:
        return f"console:{wanted.event_id}"
    if action is DeskAction.MESSAGE:
        return f"console:{fresh}"
    if action is DeskAction.TAKE:
        return f"console:take:{key}:{wanted.agent_name or ''}"
    return f"console:resolve:{key}"


def agent_id(name: str | None) -> str:
    """The console knows its agents by the name they gave only."""
    return f"console:{name}" if name else "console"


# --- the event streams ----------------------------------------------------------------------


class EventStreams:
    """The open event streams, ended together when the bridge stops (:meth:`close`)."""

    def __init__(self) -> None:
        self._wakes: set[Callable[[], None]] = set()
        self.closed = False

    def add(self, wake: Callable[[], None]) -> None:
        self._wakes.add(wake)

    def discard(self, wake: Callable[[], None]) -> None:
        self._wakes.discard(wake)

    def __len__(self) -> int:
        return len(self._wakes)

    async def close(self) -> None:
        """End every stream (each wakes, sees it is closed and finishes); idempotent."""
        self.closed = True
        for wake in list(self._wakes):
            wake()


def sse(event: str, data: Mapping[str, Any]) -> bytes:
    """One server-sent event (the data on one line: JSON has no raw newlines)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _changed_data(value: str | None) -> dict[str, Any]:
    """The console desk's note of the last change (console.py), as the event's data."""
    if value is None:
        return {}
    try:
        data = loads_object(value)
    except ValueError:
        return {}
    return {k: data[k] for k in ("bot", "handover", "type", "outbox_id", "at") if k in data}


# --- the routes -----------------------------------------------------------------------------


def _error(status: int, error: str, **headers: str) -> web.Response:
    return web.json_response({"error": error}, status=status, headers=headers or None)


def _unavailable(detail: str) -> web.Response:
    return _error(
        503, f"unavailable: {detail}; try again", **{"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


def _query(request: web.Request, allowed: Sequence[str]) -> dict[str, str]:
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown parameter(s): {', '.join(unknown)}")
    values = {}
    for name in set(request.query):
        given = request.query.getall(name)
        if len(given) > 1:
            raise BadRequest(f"{name}: given more than once")
        values[name] = given[0]
    return values


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()  # (the server's client_max_size bounds it first)
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(f"request body larger than {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    return loads_object(raw)


def handover_routes(
    deps: AdminDeps,
    streams: EventStreams | None = None,
    *,
    keepalive_seconds: float = KEEPALIVE_SECONDS,
) -> list[web.RouteDef]:
    """The agent inbox's routes; serve them as ``admin_routes(deps, extra=...)``. ``streams``:
    close it when the bridge stops, before the HTTP server (a new one when not given)."""
    streams = streams if streams is not None else EventStreams()
    return _Inbox(deps, streams, keepalive_seconds).routes()


class _Inbox:
    def __init__(self, deps: AdminDeps, streams: EventStreams, keepalive: float) -> None:
        self.deps = deps
        self.store = deps.store
        self.streams = streams
        self.keepalive = keepalive

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(PREFIX, self.listing),
            # before "{key}": the stream's path is not a handover's
            web.get(f"{PREFIX}/events", self.events),
            web.get(f"{PREFIX}/{{key}}", self.one),
            web.post(f"{PREFIX}/{{key}}/take", self.take),
            web.post(f"{PREFIX}/{{key}}/message", self.message),
            web.post(f"{PREFIX}/{{key}}/resolve", self.resolve),
        ]

    @property
    def enabled(self) -> bool:
        return self.deps.agents is not None and bool(self.deps.console_bots)

    async def _find(self, key: str) -> Handover | None:
        """The console bot's handover ``key`` (another desk's is not the console's to show)."""
        if len(key) > MAX_EVENT_ID_CHARS:
            return None
        found = await self.store.handover(key)
        if found is None or found.bot not in self.deps.console_bots:
            return None
        return found

    async def listing(self, request: web.Request) -> web.Response:
        q = _query(request, ("all", "limit"))
        every = q.get("all", "") in ("1", "true")
        if q.get("all", "") not in ("", "0", "1", "true", "false"):
            raise BadRequest("all: 1 or 0")
        limit = LIST_DEFAULT
        if "limit" in q:
            if not q["limit"].isdigit() or not 1 <= int(q["limit"]) <= LIST_MAX:
                raise BadRequest(f"limit: a whole number from 1 to {LIST_MAX}")
            limit = int(q["limit"])
        if not self.enabled:
            return web.json_response({"enabled": False, "handovers": []})
        found = await self.store.handovers(
            open_only=not every, bots=self.deps.console_bots, limit=limit
        )
        listed = []
        conversations: dict[int, Conversation | None] = {}
        for h in found:
            if h.conversation_id not in conversations:
                conversations[h.conversation_id] = await self.store.conversation_by_id(
                    h.conversation_id
                )
            c = conversations[h.conversation_id]
            item = handover_json(h)
            item["conversation"] = None if c is None else conversation_summary(c)
            listed.append(item)
        return web.json_response({"enabled": True, "handovers": listed})

    async def one(self, request: web.Request) -> web.Response:
        _query(request, ())
        found = await self._find(request.match_info["key"])
        if found is None:
            return _error(404, "no such handover")
        c = await self.store.conversation_by_id(found.conversation_id)
        during = await self.store.recent_turns(
            found.conversation_id, TURNS_MAX, since=found.started_at
        )
        before = await self.store.recent_turns(
            found.conversation_id, TURNS_BEFORE + len(during) + 1
        )
        transcript = handover_transcript(found, before, during)
        return web.json_response(
            {
                "handover": handover_json(found),
                "conversation": None if c is None else conversation_summary(c),
                "transcript": [t.to_json() for t in transcript],
            }
        )

    async def take(self, request: web.Request) -> web.Response:
        return await self._act(request, DeskAction.TAKE)

    async def message(self, request: web.Request) -> web.Response:
        return await self._act(request, DeskAction.MESSAGE)

    async def resolve(self, request: web.Request) -> web.Response:
        return await self._act(request, DeskAction.RESOLVE)

    async def _act(self, request: web.Request, action: DeskAction) -> web.Response:
        _query(request, ())
        wanted = parse_act(await _body(request), action)
        agents = self.deps.agents
        key = request.match_info["key"]
        found = await self._find(key) if agents is not None else None
        if agents is None or found is None:
            return _error(404, "no such handover")
        event_id = act_event_id(key, action, wanted, uuid.uuid4().hex)
        command = AgentCommand(
            handover=key,
            event_id=event_id,
            action=action,
            text=wanted.text,
            agent_id=agent_id(wanted.agent_name),
            agent_name=wanted.agent_name,
        )
        try:
            result = await agents.act(found.bot, command)
        except ACT_ERRORS as exc:
            status, reason = act_refusal(exc, detail=True)
            if status == 503:
                log.warning("handover %s: %s not stored: %s", key, action.value, exc)
                return _unavailable("the act was not stored")
            return _error(status, reason)
        return web.json_response({"status": result.value, "event_id": event_id})

    async def events(self, request: web.Request) -> web.StreamResponse:
        _query(request, ())
        agents = self.deps.agents
        if agents is None or not self.deps.console_bots:
            return _error(404, "no bot hands over to the console")
        if self.streams.closed:
            return _unavailable("the bridge is stopping")
        woken = asyncio.Event()
        unsubscribe = agents.state.watch(CHANGED_KEY, woken.set)
        self.streams.add(woken.set)
        try:
            response = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    "X-Accel-Buffering": "no",  # a proxy must not hold the events back
                }
            )
            await response.prepare(request)
            last = await _changed(agents)
            await response.write(f"retry: {RECONNECT_MS}\n\n".encode())
            await response.write(sse("ready", _changed_data(last)))
            await self._stream(request, agents, response, woken, last)
        except ConnectionError:  # the page went away: nothing more to say
            pass
        finally:
            unsubscribe()
            self.streams.discard(woken.set)
        return response

    async def _stream(
        self,
        request: web.Request,
        agents: Agents,
        response: web.StreamResponse,
        woken: asyncio.Event,
        last: str | None,
    ) -> None:
        """A ``changed`` event per wake-up, a comment per quiet ``keepalive``, until the
        bridge stops or the page goes away."""
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        while not self.streams.closed:
            # aiohttp does not cancel a handler whose client left: look at the connection
            # every LIVENESS_SECONDS, so that a closed page's stream ends (and lets the
            # server stop) without waiting for a write to fail.
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            try:
                await asyncio.wait_for(woken.wait(), min(self.keepalive, LIVENESS_SECONDS))
            except TimeoutError:
                if loop.time() - quiet_since < self.keepalive:
                    continue
                quiet_since = loop.time()
                # The safety net: a change whose wake-up this replica missed.
                value = await _changed(agents)
                if value is not None and value != last:
                    last = value
                    await response.write(sse("changed", _changed_data(value)))
                else:
                    await response.write(b": keep-alive\n\n")
                continue
            woken.clear()
            if self.streams.closed:
                break
            quiet_since = loop.time()
            last = await _changed(agents)
            await response.write(sse("changed", _changed_data(last)))
        await response.write_eof()


async def _changed(agents: Agents) -> str | None:
    """The last change noted, or None when it cannot be read (the wake-up still counts)."""
    try:
        return await agents.state.get(CHANGED_KEY)
    except Exception as exc:  # the store's errors: a stream outlives a database outage
        log.debug("console: the last change cannot be read: %s", exc)
        return None
