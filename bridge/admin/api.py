"""The admin API (JSON over HTTP, issue 26): conversations and their timelines, transcripts,
dead letters, the erase of a user, statistics. The console (console.py) uses exactly these
routes; the routes that start conversations and broadcasts are outreach.py's, served with
the same guard and error handling through ``admin_routes(deps, extra=...)``.

Every route is behind the bearer token (auth.py). Bad input of any kind — a body that is not
a JSON object, an unknown parameter or field, an id that is not one, a limit out of range, a
cursor that is not ours — is answered 400 with the reason; a database that cannot be reached
503 with Retry-After. The writes are the store's own, the CLI's: ``retry_dead`` and
``discard_dead`` (``parloa-bridge inbox``), ``erase_user`` (``parloa-bridge erase``).

Statistics come from the bridge's own tables: counts per minute and channel from the inbox
(events received, answered, dead), and per bot the Parloa calls recorded with each event —
read from the latest ``MAX_STATS_EVENTS`` events of the window (store/admin_views.py), of
whose calls the latest ``MAX_STATS_CALLS`` are kept: the latency percentiles (nearest rank,
in Python) are over those, exact below the bound and of the most recent calls above it."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import math
import re
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web

from bridge.admin import AdminDeps
from bridge.admin.auth import guarded
from bridge.channel import UnreadableBody, loads_object
from bridge.channelkit import is_storable_text
from bridge.engine.intake import requester_id
from bridge.store.admin_views import (
    ConversationFilter,
    ConversationView,
    DeliveryView,
    Keyset,
)
from bridge.store.errors import DataRefused, StoreUnavailable
from bridge.textchat.models import wire_text
from bridge.vocabulary import ConversationState, Handover, InboxItem, InboxStatus, ParloaCall

log = logging.getLogger("bridge.admin")

PREFIX = "/admin/api"
#: largest request body a route reads
MAX_BODY_BYTES = 64 * 1024
#: conversations per page: default and most
PAGE_DEFAULT, PAGE_MAX = 50, 200
#: dead letters per list: default and most
DEAD_DEFAULT, DEAD_MAX = 100, 500
#: ids one retry or discard may name
MAX_IDS = 1000
#: statistics window in minutes: default and most
MINUTES_DEFAULT, MINUTES_MAX = 60, 1440
#: Parloa calls the latency percentiles are computed over (the latest)
MAX_STATS_CALLS = 10_000
#: events a transcript reads per store call
TRANSCRIPT_BATCH = 500
#: seconds a client is told to wait when the database is unavailable
RETRY_AFTER_SECONDS = 5
#: the largest id a database column holds (BIGINT)
MAX_ID = 2**63 - 1
#: longest text a filter takes (the columns' width)
MAX_FILTER_CHARS = 255

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_DIGITS = re.compile(r"[0-9]{1,19}")
_NUMBER = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")


class BadRequest(Exception):
    """The request cannot be served as sent: 400 with this reason."""

    status = 400


class BodyTooLarge(BadRequest):
    status = 413


def answering(handler: Handler) -> Handler:
    """``handler`` with the API's answers to what goes wrong: bad input 400, the database
    unavailable 503 with Retry-After. Anything else is a bug, left to the server (500)."""

    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except BadRequest as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        except UnreadableBody as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except DataRefused as exc:  # a value the database will not take: the request's
            return web.json_response({"error": str(exc)}, status=400)
        except StoreUnavailable as exc:
            log.warning("%s %s: %s", request.method, request.path, exc)
            return web.json_response(
                {"error": "the database is unavailable; try again later"},
                status=503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )

    return answer


def admin_route(route: web.RouteDef, token: str | None) -> web.RouteDef:
    """``route`` behind the token, with the API's error answers (for outreach.py's routes)."""
    handler: Handler = route.handler
    return web.RouteDef(route.method, route.path, guarded(answering(handler), token), route.kwargs)


def admin_routes(deps: AdminDeps, extra: Sequence[web.RouteDef] = ()) -> list[web.RouteDef]:
    """The API's routes (and ``extra`` ones, e.g. outreach.py's), each behind the token."""
    api = _Api(deps)
    routes = [
        web.get(f"{PREFIX}/conversations", api.conversations),
        web.get(f"{PREFIX}/conversations/{{id}}", api.conversation),
        web.get(f"{PREFIX}/conversations/{{id}}/transcript", api.transcript),
        web.get(f"{PREFIX}/dead-letters", api.dead_letters),
        web.post(f"{PREFIX}/dead-letters/retry", api.retry),
        web.post(f"{PREFIX}/dead-letters/discard", api.discard),
        web.delete(f"{PREFIX}/users/{{channel}}/{{user:.+}}", api.erase),
        web.get(f"{PREFIX}/stats", api.stats),
        *extra,
    ]
    return [admin_route(route, deps.token) for route in routes]


# --- reading requests ---------------------------------------------------------------------


def _query(request: web.Request, allowed: Iterable[str]) -> dict[str, str]:
    """The query parameters, each given at most once and known; an empty one is not given
    (a form's unset filter)."""
    names = set(request.query)
    unknown = sorted(names - set(allowed))
    if unknown:
        raise BadRequest(f"unknown parameter(s): {', '.join(unknown)}")
    values: dict[str, str] = {}
    for name in names:
        given = request.query.getall(name)
        if len(given) > 1:
            raise BadRequest(f"{name}: given more than once")
        if given[0] != "":
            values[name] = given[0]
    return values


def _text(value: str, name: str, max_chars: int = MAX_FILTER_CHARS) -> str:
    if len(value) > max_chars:
        raise BadRequest(f"{name}: longer than {max_chars} characters")
    if "\x00" in value or not is_storable_text(value):
        raise BadRequest(f"{name}: not a text the bridge stores")
    return value


def _bounded(value: str | None, name: str, low: int, high: int, default: int) -> int:
    if value is None:
        return default
    if not _DIGITS.fullmatch(value) or not low <= int(value) <= high:
        raise BadRequest(f"{name}: a whole number from {low} to {high}")
    return int(value)


def _id(value: str, name: str = "id") -> int:
    if not _DIGITS.fullmatch(value) or not 1 <= int(value) <= MAX_ID:
        raise BadRequest(f"{name}: not an id (a positive whole number)")
    return int(value)


def _flag(value: str, name: str) -> bool:
    if value not in ("true", "false"):
        raise BadRequest(f"{name}: true or false")
    return value == "true"


def _time(value: str, name: str) -> float:
    if not _NUMBER.fullmatch(value):
        raise BadRequest(f"{name}: a time in epoch seconds")
    return float(value)


def encode_cursor(keyset: Keyset) -> str:
    """The opaque cursor of a page's last row: base64url of its (updated_at, id)."""
    raw = json.dumps([keyset[0], keyset[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> Keyset:
    bad = BadRequest("cursor: not one this API gave")
    if len(cursor) > 200:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise bad from None
    if not (isinstance(value, list) and len(value) == 2):
        raise bad
    updated_at, last_id = value
    if not isinstance(updated_at, int | float) or isinstance(updated_at, bool):
        raise bad
    if not isinstance(last_id, int) or isinstance(last_id, bool) or not 1 <= last_id <= MAX_ID:
        raise bad
    if not math.isfinite(updated_at):
        raise bad
    return float(updated_at), last_id


async def _body(request: web.Request, allowed: Iterable[str]) -> dict[str, Any]:
    """The request's JSON object, with only ``allowed`` fields."""
    raw = await request.read()
    if len(raw) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"request body larger than {MAX_BODY_BYTES} bytes")
    body = loads_object(raw)
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    return body


def _ids(value: Any) -> list[int]:
    """A body's ``ids``: a non-empty list of ids."""
    if not isinstance(value, list) or not value:
        raise BadRequest("ids: a non-empty list of ids")
    if len(value) > MAX_IDS:
        raise BadRequest(f"ids: at most {MAX_IDS}")
    for item in value:
        if not isinstance(item, int) or isinstance(item, bool) or not 1 <= item <= MAX_ID:
            raise BadRequest("ids: each a positive whole number")
    return list(value)


# --- writing answers ----------------------------------------------------------------------


def conversation_json(view: ConversationView) -> dict[str, Any]:
    c = view.conversation
    prefix = f"{c.channel}:"
    user = c.requester_id.removeprefix(prefix)
    return {
        "id": c.id,
        "channel": c.channel,
        "conversation_key": c.conversation_key,
        "user": user,
        "requester_id": c.requester_id,
        "state": str(c.state),
        "session_id": c.session_id,
        "end_reason": None if c.end_reason is None else str(c.end_reason),
        "last_activity_at": c.last_activity_at,
        "updated_at": view.updated_at,
        "pending": view.pending,
        "dead_letters": view.dead_letters,
    }


def delivery_json(d: DeliveryView) -> dict[str, Any]:
    return {
        "outbox_id": d.id,
        "status": str(d.status),
        "attempts": d.attempts,
        "parts_done": d.parts_done,
        "platform_message_id": d.platform_message_id,
        "last_error": d.last_error,
        "created_at": d.created_at,
        "finished_at": d.finished_at,
        "elements": d.elements,
    }


def handover_json(h: Handover) -> dict[str, Any]:
    """A handover as the API shows it (the timeline, the agent inbox): its fields, without the
    row id and where a desk keeps it."""
    return {k: v for k, v in dataclasses.asdict(h).items() if k not in ("id", "thread")}


def event_json(item: InboxItem, deliveries: Sequence[DeliveryView]) -> dict[str, Any]:
    return {
        "id": item.id,
        "event_id": item.event_id,
        "kind": str(item.kind),
        "text": item.text,
        "status": str(item.status),
        "attempts": item.attempts,
        "last_error": item.last_error,
        "created_at": item.created_at,
        "finished_at": item.finished_at,
        "attachments": [a.to_json() for a in item.attachments],
        "parloa_calls": [call.to_json() for call in item.parloa_calls],
        "deliveries": [delivery_json(d) for d in deliveries],
    }


def _by_event(deliveries: Iterable[DeliveryView]) -> dict[int | None, list[DeliveryView]]:
    grouped: dict[int | None, list[DeliveryView]] = defaultdict(list)
    for d in deliveries:
        grouped[d.inbox_id].append(d)
    return grouped


def _bot_text(elements: Sequence[Any]) -> str | None:
    return wire_text(list(elements), "\n") or None


def _user_line(item: InboxItem) -> dict[str, Any]:
    line: dict[str, Any] = {"at": item.created_at, "from": "user", "kind": str(item.kind)}
    if item.text is not None:
        line["text"] = item.text
    line["status"] = str(item.status)
    return line


def _bot_line(d: DeliveryView) -> dict[str, Any]:
    line: dict[str, Any] = {
        "at": d.created_at,
        "from": "bot",
        "kind": "reply" if d.inbox_id is not None else "notice",
    }
    text = _bot_text(d.elements)
    if text is not None:
        line["text"] = text
    line["elements"] = d.elements
    line["status"] = str(d.status)
    return line


def _ndjson(line: Mapping[str, Any]) -> bytes:
    return (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile of ascending ``ordered`` (None when empty)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return round(ordered[rank - 1], 1)


def _failed(call: ParloaCall) -> bool:
    """Whether a Parloa call failed: an error kind, or an HTTP status other than 2xx."""
    return not (isinstance(call.status, int) and 200 <= call.status < 300)


# --- the routes ---------------------------------------------------------------------------


class _Api:
    def __init__(self, deps: AdminDeps) -> None:
        self.deps = deps
        self.store = deps.store

    async def conversations(self, request: web.Request) -> web.Response:
        q = _query(request, ("channel", "state", "user", "dead", "since", "limit", "cursor"))
        channel = _text(q["channel"], "channel") if "channel" in q else None
        state = None
        if "state" in q:
            try:
                state = ConversationState(q["state"])
            except ValueError:
                names = ", ".join(s.value for s in ConversationState)
                raise BadRequest(f"state: one of {names}") from None
        requesters = None
        if "user" in q:
            user = _text(q["user"], "user")
            # A user's id is the requester id without its channel's prefix: that channel's,
            # or any the bridge knows of.
            channels = [channel] if channel is not None else sorted(self.deps.channels)
            requesters = tuple(requester_id(name, user) for name in channels)
        which = ConversationFilter(
            channel=channel,
            state=state,
            requester_ids=requesters,
            dead=_flag(q["dead"], "dead") if "dead" in q else None,
            since=_time(q["since"], "since") if "since" in q else None,
        )
        limit = _bounded(q.get("limit"), "limit", 1, PAGE_MAX, PAGE_DEFAULT)
        after = decode_cursor(q["cursor"]) if "cursor" in q else None
        # One more than the page: whether another page follows.
        rows = await self.store.conversation_page(which, limit + 1, after)
        page = rows[:limit]
        more = len(rows) > limit
        return web.json_response(
            {
                "conversations": [conversation_json(v) for v in page],
                "next_cursor": encode_cursor(page[-1].keyset) if more else None,
            }
        )

    async def conversation(self, request: web.Request) -> web.Response:
        _query(request, ())
        conversation_id = _id(request.match_info["id"])
        timeline = await self.store.timeline(conversation_id)
        if timeline is None:
            return web.json_response({"error": "no such conversation"}, status=404)
        replies = _by_event(timeline.deliveries)
        shown = {e.id for e in timeline.events}
        handovers = await self.store.handovers(conversation_id=conversation_id, limit=20)
        return web.json_response(
            {
                "conversation": conversation_json(timeline.conversation),
                "handovers": [handover_json(h) for h in reversed(handovers)],
                "events": [event_json(e, replies.get(e.id, ())) for e in timeline.events],
                "other_deliveries": [
                    delivery_json(d) for d in timeline.deliveries if d.inbox_id not in shown
                ],
            }
        )

    async def transcript(self, request: web.Request) -> web.StreamResponse:
        """The conversation as JSON lines, oldest first: each event, then its replies; the
        bridge's notices where they fall in time. Read a batch of events at a time."""
        _query(request, ())
        conversation_id = _id(request.match_info["id"])
        if not await self.store.conversation_exists(conversation_id):
            return web.json_response({"error": "no such conversation"}, status=404)
        notices = deque(await self.store.notices(conversation_id))
        events, replies = await self.store.transcript_batch(conversation_id, 0, TRANSCRIPT_BATCH)
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/x-ndjson; charset=utf-8",
                "Content-Disposition": (
                    f'attachment; filename="conversation-{conversation_id}.ndjson"'
                ),
            }
        )
        await response.prepare(request)
        while events:
            grouped = _by_event(replies)
            for event in events:
                while notices and notices[0].created_at < event.created_at:
                    await response.write(_ndjson(_bot_line(notices.popleft())))
                await response.write(_ndjson(_user_line(event)))
                for reply in grouped.get(event.id, ()):
                    await response.write(_ndjson(_bot_line(reply)))
            events, replies = await self.store.transcript_batch(
                conversation_id, events[-1].id, TRANSCRIPT_BATCH
            )
        for notice in notices:
            await response.write(_ndjson(_bot_line(notice)))
        await response.write_eof()
        return response

    async def dead_letters(self, request: web.Request) -> web.Response:
        q = _query(request, ("channel", "limit"))
        channel = _text(q["channel"], "channel") if "channel" in q else None
        limit = _bounded(q.get("limit"), "limit", 1, DEAD_MAX, DEAD_DEFAULT)
        items = await self.store.dead_letters(channel, limit)
        replies = _by_event(await self.store.deliveries_of(items))
        letters = []
        for item in items:
            letter = event_json(item, replies.get(item.id, ()))
            letter.update(conversation_id=item.conversation_id, channel=item.channel)
            letters.append(letter)
        return web.json_response({"dead_letters": letters})

    async def retry(self, request: web.Request) -> web.Response:
        _query(request, ())
        body = await _body(request, ("ids", "all"))
        if "all" in body:
            if body["all"] is not True or "ids" in body:
                raise BadRequest('either "ids": [...] or "all": true')
            ids = None
        else:
            if "ids" not in body:
                raise BadRequest('either "ids": [...] or "all": true')
            ids = _ids(body["ids"])
        # Their conversations read first: once retried, they are pending like any event.
        woken = await self.store.dead_letter_conversations(ids)
        retried = await self.store.retry_dead(ids)
        for conversation_id in sorted(woken):
            self.deps.notify(conversation_id)
        return web.json_response({"retried": retried})

    async def discard(self, request: web.Request) -> web.Response:
        _query(request, ())
        body = await _body(request, ("ids",))
        if "ids" not in body:
            raise BadRequest('"ids": [...] names the dead letters to discard')
        discarded = await self.store.discard_dead(_ids(body["ids"]))
        return web.json_response({"discarded": discarded})

    async def erase(self, request: web.Request) -> web.Response:
        _query(request, ())
        channel = _text(request.match_info["channel"], "channel", 64)
        user = _text(request.match_info["user"], "user")
        erased = await self.store.erase_user(channel, user, requester_id(channel, user))
        # The user's id is not logged: what they asked to be forgotten stays forgotten.
        log.info("admin API: erased a user of channel %r: %s", channel, erased.by_table())
        return web.json_response({"erased": erased.by_table()})

    async def stats(self, request: web.Request) -> web.Response:
        q = _query(request, ("minutes",))
        minutes = _bounded(q.get("minutes"), "minutes", 1, MINUTES_MAX, MINUTES_DEFAULT)
        until = self.deps.clock()
        since = until - minutes * 60
        activity = await self.store.activity(since)

        first = int(since // 60) * 60
        per_minute = {
            minute: {"minute": minute, "inbound": 0, "answered": 0, "dead": 0, "parloa_errors": 0}
            for minute in range(first, int(until // 60) * 60 + 1, 60)
        }
        channel_names = sorted(self.deps.channels)
        channels = {name: {"inbound": 0, "answered": 0, "dead": 0} for name in channel_names}

        def minute_of(minute: int) -> dict[str, int]:
            # Clamped: a time just outside the window (rounded, or from a clock running ahead
            # on another replica) counts in the nearest minute of it.
            return per_minute[min(max(minute, first), first + (len(per_minute) - 1) * 60)]

        for channel, minute, count in activity.inbound:
            minute_of(minute)["inbound"] += count
            channels.setdefault(channel, {"inbound": 0, "answered": 0, "dead": 0})
            channels[channel]["inbound"] += count
        for channel, minute, status, count in activity.finished:
            key = "answered" if status is InboxStatus.DONE else "dead"
            minute_of(minute)[key] += count
            channels.setdefault(channel, {"inbound": 0, "answered": 0, "dead": 0})
            channels[channel][key] += count

        calls = sorted(activity.calls, key=lambda pair: pair[1].at)[-MAX_STATS_CALLS:]
        latencies: dict[str, list[float]] = {bot: [] for bot in self.deps.channel_bots.values()}
        errors: dict[str, int] = dict.fromkeys(latencies, 0)
        for channel, call in calls:
            failed = _failed(call)
            if failed:
                minute_of(int(call.at // 60) * 60)["parloa_errors"] += 1
            bot = self.deps.channel_bots.get(channel)
            if bot is None:  # a channel no longer configured: no bot to count it for
                continue
            latencies[bot].append(call.latency_ms)
            errors[bot] += failed
        bots = {}
        for bot in sorted(latencies):
            ordered = sorted(latencies[bot])
            bots[bot] = {
                "calls": len(ordered),
                "errors": errors[bot],
                "latency_ms": {f"p{p}": percentile(ordered, p) for p in (50, 90, 99)},
            }
        return web.json_response(
            {
                "since": since,
                "until": until,
                "per_minute": list(per_minute.values()),
                "channels": channels,
                "bots": bots,
            }
        )
