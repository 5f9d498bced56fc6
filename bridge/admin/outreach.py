"""Conversations the bot starts: ``POST /admin/api/conversations/start`` (one recipient) and
``POST /admin/api/broadcasts`` (up to :data:`MAX_RECIPIENTS`, each outcome reported).

A start is an inbound event of kind START in the recipient's conversation, accepted through the
channel's Intake like any platform event: the engine launches a new Parloa session for it and
delivers the welcome through the outbox, within the adapter's send budgets. Its event id is
``start:<idempotency key>`` (a broadcast's ``start:<key>:<recipient>``), so the same key twice
starts one conversation. The adapter's ``recipient`` hook turns a platform user or chat into
the conversation key and address its normalisation gives that chat, so the user's reply
continues the same conversation; it paces its own look-ups (getChat, conversations.open).

A broadcast then watches the events' rows for up to ``wait_seconds``: the welcome sent, the
user blocked the bot (the delivery failed with the recipient gone), or still pending."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from bridge.admin import AdminDeps
from bridge.channel import (
    AcceptResult,
    Adapter,
    ContextScalar,
    Inbound,
    InboundKind,
    Intake,
    IntakeRefused,
    IntakeUnavailable,
    RecipientGone,
    RecipientUnavailable,
    RecipientUnknown,
    UnreadableBody,
    inbound_problem,
    loads_object,
)
from bridge.store import Store
from bridge.vocabulary import EndReason, InboxStatus, OutboxStatus

log = logging.getLogger("bridge.admin")

#: recipients one broadcast may name
MAX_RECIPIENTS = 1000
#: longest wait for a broadcast's outcomes
MAX_WAIT_SECONDS = 60
#: request bodies larger than this are refused (a full broadcast with long ids fits)
MAX_BODY_BYTES = 256 * 1024
MAX_KEY_LENGTH = 128
MAX_RECIPIENT_LENGTH = 100
MAX_CONTEXT_ITEMS = 50
MAX_CONTEXT_KEY_LENGTH = 100
MAX_CONTEXT_VALUE_LENGTH = 2000
#: recipients of a broadcast looked up at once (the adapters pace the calls themselves)
LOOKUPS_AT_ONCE = 8
#: how often a broadcast reads its outcomes again while it waits
WATCH_INTERVAL_SECONDS = 0.2
#: events read per query while watching
_CHUNK = 500
#: the outbox error the engine records when a delivery found the recipient gone
#: (bridge/engine/delivery.py)
_GONE_PREFIX = "recipient gone"


# --- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartRequest:
    channel: str
    recipient: str
    context: Mapping[str, ContextScalar]
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class BroadcastRequest:
    channel: str
    recipients: tuple[str, ...]  # distinct, in the order given
    context: Mapping[str, ContextScalar]
    idempotency_key: str
    wait_seconds: float


def _text(body: Mapping[str, Any], name: str, limit: int) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise UnreadableBody(f"{name}: a non-empty string is required")
    value = value.strip()
    if len(value) > limit:
        raise UnreadableBody(f"{name}: longer than {limit} characters")
    return value


def _context(body: Mapping[str, Any]) -> dict[str, ContextScalar]:
    given = body.get("context", {})
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise UnreadableBody("context: an object of string, number or boolean values")
    if len(given) > MAX_CONTEXT_ITEMS:
        raise UnreadableBody(f"context: more than {MAX_CONTEXT_ITEMS} items")
    context: dict[str, ContextScalar] = {}
    for key, value in given.items():
        if not key or len(key) > MAX_CONTEXT_KEY_LENGTH:
            raise UnreadableBody(f"context: keys of 1 to {MAX_CONTEXT_KEY_LENGTH} characters")
        if isinstance(value, float) and not math.isfinite(value):
            raise UnreadableBody(f"context: {key!r} is not a finite number")
        if not isinstance(value, str | int | float | bool):
            raise UnreadableBody(f"context: {key!r} is not a string, number or boolean")
        if isinstance(value, str) and len(value) > MAX_CONTEXT_VALUE_LENGTH:
            raise UnreadableBody(
                f"context: {key!r} is longer than {MAX_CONTEXT_VALUE_LENGTH} characters"
            )
        context[key] = value
    return context


def parse_start(body: Mapping[str, Any]) -> StartRequest:
    """The start request in a JSON body; raises UnreadableBody saying what is wrong."""
    return StartRequest(
        channel=_text(body, "channel", 64),
        recipient=_text(body, "recipient", MAX_RECIPIENT_LENGTH),
        context=_context(body),
        idempotency_key=_text(body, "idempotency_key", MAX_KEY_LENGTH),
    )


def parse_broadcast(body: Mapping[str, Any]) -> BroadcastRequest:
    """The broadcast request in a JSON body; raises UnreadableBody saying what is wrong."""
    given = body.get("recipients")
    if not isinstance(given, list) or not given:
        raise UnreadableBody("recipients: a non-empty list is required")
    if len(given) > MAX_RECIPIENTS:
        raise UnreadableBody(f"recipients: more than {MAX_RECIPIENTS}")
    recipients: dict[str, None] = {}
    for who in given:
        if not isinstance(who, str | int) or isinstance(who, bool):
            raise UnreadableBody("recipients: strings (or numeric ids) only")
        text = str(who).strip()
        if not text or len(text) > MAX_RECIPIENT_LENGTH:
            raise UnreadableBody(f"recipients: ids of 1 to {MAX_RECIPIENT_LENGTH} characters")
        recipients[text] = None
    wait = body.get("wait_seconds", 0)
    if (
        not isinstance(wait, int | float)
        or isinstance(wait, bool)
        or not 0 <= wait <= MAX_WAIT_SECONDS
    ):
        raise UnreadableBody(f"wait_seconds: a number from 0 to {MAX_WAIT_SECONDS}")
    return BroadcastRequest(
        channel=_text(body, "channel", 64),
        recipients=tuple(recipients),
        context=_context(body),
        idempotency_key=_text(body, "idempotency_key", MAX_KEY_LENGTH),
        wait_seconds=float(wait),
    )


async def read_body(request: web.Request, limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The request's JSON object, read no further than ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise UnreadableBody(f"body larger than {limit} bytes")
    data = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise UnreadableBody(f"body larger than {limit} bytes")
    return loads_object(bytes(data))


# --- starting one conversation ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Started:
    """A start accepted (or found already accepted) in conversation ``conversation_id``."""

    event_id: str
    conversation_id: int
    duplicate: bool


def start_event_id(idempotency_key: str, recipient: str | None = None) -> str:
    """The event id of a start: the same key (and recipient) is the same start."""
    if recipient is None:
        return f"start:{idempotency_key}"
    return f"start:{idempotency_key}:{recipient}"


async def start_conversation(
    store: Store,
    adapter: Adapter,
    intake: Intake,
    who: str,
    event_id: str,
    context: Mapping[str, ContextScalar],
) -> Started:
    """Resolve ``who`` through the adapter and accept a START event for their conversation.

    Raises RecipientUnknown, RecipientGone, RecipientUnavailable (from the adapter),
    IntakeRefused (the store would refuse the values), IntakeUnavailable."""
    recipient = await adapter.recipient(who)
    event = Inbound(
        event_id=event_id,
        conversation_key=recipient.conversation_key,
        user_id=recipient.user_id,
        kind=InboundKind.START,
        address=recipient.address,
        # The platform's items first, as on a user's own events; the operator's win.
        context={**recipient.context, **context},
    )
    problem = inbound_problem(intake.channel, event)
    if problem is not None:
        raise IntakeRefused(problem)
    result = await intake.accept(event)
    try:
        found = await conversation_of(store, intake.channel, event_id, event.conversation_key)
    except Exception as exc:
        raise IntakeUnavailable(f"cannot read the conversation: {exc}") from exc
    if found is None:  # the event was accepted, so its conversation exists
        raise IntakeUnavailable("the conversation of the start was not found")
    log.info(
        "channel %s: conversation %s started for %s (%s)",
        intake.channel,
        found,
        who,
        result.value,
    )
    return Started(event_id, found, result is AcceptResult.DUPLICATE)


async def conversation_of(store: Store, channel: str, event_id: str, key: str) -> int | None:
    """The conversation an event was stored in; by the conversation key when the event was
    purged (a start repeated after the retention period)."""
    found = await store.event_conversation(channel, event_id)
    if found is None:
        conversation = await store.find_conversation(channel, key)
        found = conversation.id if conversation is not None else None
    return found


# --- what became of starts ----------------------------------------------------------------------


class Outcome:
    SENT = "sent"
    BLOCKED = "blocked"
    UNKNOWN_CHAT = "unknown_chat"
    PENDING = "pending"
    FAILED = "failed"


def settled(
    inbox_status: str | None,
    deliveries: Sequence[tuple[str, str | None]],
    end_reason: str | None,
) -> str:
    """What became of a start from its event's status, its replies' (status, last error)
    and its conversation's end reason: sent once the event was handled and every reply
    sent; blocked when a reply found the recipient gone; failed when the event went to the
    dead letters or a reply failed for good; else pending."""
    if inbox_status == InboxStatus.DEAD:
        return Outcome.FAILED
    failed = [error or "" for status, error in deliveries if status == OutboxStatus.FAILED]
    if any(error.startswith(_GONE_PREFIX) for error in failed):
        return Outcome.BLOCKED
    if failed:
        return Outcome.FAILED
    if inbox_status == InboxStatus.DONE:
        if all(status == OutboxStatus.SENT for status, _ in deliveries):
            return Outcome.SENT
        if end_reason == EndReason.RECIPIENT_GONE:
            return Outcome.BLOCKED
    return Outcome.PENDING


async def outcomes(store: Store, channel: str, starts: Sequence[Started]) -> dict[str, str]:
    """The outcome of each start (by event id), read from the store."""
    result: dict[str, str] = {}
    for offset in range(0, len(starts), _CHUNK):
        chunk = starts[offset : offset + _CHUNK]
        result.update(await _outcomes(store, channel, chunk))
    return result


async def _outcomes(store: Store, channel: str, starts: Sequence[Started]) -> dict[str, str]:
    states = await store.start_states(channel, [s.event_id for s in starts])
    result: dict[str, str] = {}
    for start in starts:
        state = states.get(start.event_id)
        if state is None:  # purged after the retention period: nothing left to tell
            result[start.event_id] = Outcome.PENDING
            continue
        result[start.event_id] = settled(state.status, state.replies, state.end_reason)
    return result


# --- broadcasts ---------------------------------------------------------------------------------


@dataclass(slots=True)
class BroadcastResult:
    recipient: str
    outcome: str
    started: Started | None = None
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"recipient": self.recipient, "outcome": self.outcome}
        if self.started is not None:
            data["conversation_id"] = self.started.conversation_id
        if self.detail:
            data["detail"] = self.detail
        return data


async def broadcast(
    store: Store,
    adapter: Adapter,
    intake: Intake,
    request: BroadcastRequest,
    *,
    watch_interval: float = WATCH_INTERVAL_SECONDS,
) -> list[BroadcastResult]:
    """Start a conversation with every recipient, then wait up to ``wait_seconds`` for what
    became of each. A recipient's failure is its outcome; it never stops the others."""
    results = [BroadcastResult(who, Outcome.PENDING) for who in request.recipients]
    gate = asyncio.Semaphore(LOOKUPS_AT_ONCE)

    async def one(result: BroadcastResult) -> None:
        event_id = start_event_id(request.idempotency_key, result.recipient)
        async with gate:
            try:
                result.started = await start_conversation(
                    store, adapter, intake, result.recipient, event_id, request.context
                )
            except RecipientUnknown as exc:
                result.outcome, result.detail = Outcome.UNKNOWN_CHAT, str(exc)
            except RecipientGone as exc:
                result.outcome, result.detail = Outcome.BLOCKED, str(exc)
            except (RecipientUnavailable, IntakeRefused, IntakeUnavailable) as exc:
                result.outcome, result.detail = Outcome.FAILED, str(exc)
            except Exception as exc:  # a bug must cost one recipient, not the broadcast
                log.exception("broadcast: start for %s failed", result.recipient)
                result.outcome, result.detail = Outcome.FAILED, f"internal error: {exc!r}"

    await asyncio.gather(*(one(result) for result in results))
    watched = [r for r in results if r.started is not None]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + request.wait_seconds
    while watched:
        try:
            found = await outcomes(store, intake.channel, [r.started for r in watched if r.started])
        except Exception as exc:  # the database is away: report what is known
            log.warning("broadcast: outcomes not read: %s", exc)
            break
        for result in watched:
            assert result.started is not None
            result.outcome = found.get(result.started.event_id, Outcome.PENDING)
        watched = [r for r in watched if r.outcome == Outcome.PENDING]
        if not watched or loop.time() >= deadline:
            break
        await asyncio.sleep(min(watch_interval, max(0.0, deadline - loop.time())))
    return results


# --- routes -------------------------------------------------------------------------------------


def _error(status: int, error: str, detail: str | None = None, **headers: str) -> web.Response:
    body: dict[str, Any] = {"error": error}
    if detail is not None:
        body["detail"] = detail
    return web.json_response(body, status=status, headers=headers or None)


def _unavailable(detail: str, retry_after: float | None = None) -> web.Response:
    seconds = max(1, math.ceil(retry_after)) if retry_after else 5
    return _error(503, "unavailable", detail, **{"Retry-After": str(seconds)})


Wanted = TypeVar("Wanted", StartRequest, BroadcastRequest)


async def _target(
    deps: AdminDeps, request: web.Request, parse: Callable[[Mapping[str, Any]], Wanted]
) -> tuple[Wanted, Adapter, Intake] | web.Response:
    """The request's body as ``parse`` reads it, with its channel's adapter and intake; or the
    answer when there is none (400 a bad body, 404 an unknown channel, 503 no intake here)."""
    try:
        wanted = parse(await read_body(request))
    except UnreadableBody as exc:
        return _error(400, str(exc))
    adapter = deps.adapters.get(wanted.channel)
    if adapter is None:
        return _error(404, f"unknown channel: {wanted.channel}")
    if deps.intake is None:
        return _unavailable("conversations cannot be started in this process")
    return wanted, adapter, deps.intake(wanted.channel)


def outreach_routes(deps: AdminDeps) -> list[web.RouteDef]:
    """The start and broadcast routes; serve them as ``admin_routes(deps, extra=...)``, which
    puts them behind the admin token with the API's error answers."""

    async def start(request: web.Request) -> web.Response:
        target = await _target(deps, request, parse_start)
        if isinstance(target, web.Response):
            return target
        wanted, adapter, intake = target
        event_id = start_event_id(wanted.idempotency_key)
        try:
            started = await start_conversation(
                deps.store, adapter, intake, wanted.recipient, event_id, wanted.context
            )
        except RecipientUnknown as exc:
            return _error(422, "recipient_unknown", str(exc))
        except RecipientGone as exc:
            return _error(422, "recipient_gone", str(exc))
        except RecipientUnavailable as exc:
            return _unavailable(str(exc), exc.retry_after)
        except IntakeRefused as exc:
            return _error(400, str(exc))
        except IntakeUnavailable as exc:
            return _unavailable(str(exc))
        status = "duplicate" if started.duplicate else "started"
        return web.json_response({"conversation_id": started.conversation_id, "status": status})

    async def broadcasts(request: web.Request) -> web.Response:
        target = await _target(deps, request, parse_broadcast)
        if isinstance(target, web.Response):
            return target
        wanted, adapter, intake = target
        results = await broadcast(deps.store, adapter, intake, wanted)
        counts: dict[str, int] = {}
        for result in results:
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
        log.info("channel %s: broadcast %s: %s", wanted.channel, wanted.idempotency_key, counts)
        return web.json_response({"results": [r.to_json() for r in results]})

    return [
        web.post("/admin/api/conversations/start", start),
        web.post("/admin/api/broadcasts", broadcasts),
    ]
