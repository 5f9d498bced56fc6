"""The "webhook" desk: a helpdesk integration (Zendesk, Freshdesk, Chatwoot, a contact-centre
platform) takes handovers over HTTP, signed both ways with the webhook channel's scheme
(bridge/signing.py) and the desk's ``secret``.

Out: ``handover.started``, ``handover.user_message`` and ``handover.ended`` (their wire form:
bridge/handover/events.py) are POSTed as compact UTF-8 JSON to ``url``. The receiver's status
decides: 2xx delivered; 429 wait (``Retry-After``) and retry; 5xx, a timeout or a connection
error retry; any other status the event is dropped. Redirects are not followed (a signed
request must reach the configured URL). A receiver deduplicates on ``event_id``.

In: ``POST /handover/{bot}/events`` takes one signed act of an agent::

    {"type": "agent.message", "handover_id", "event_id", "text", "agent"?: {"name"?, "id"?}}
    {"type": "handover.resolve", "handover_id", "event_id", "agent"?: {...}}

======  ===========================================================================
200     ``{"ok": true, "duplicate": false|true}``: stored (a repeated ``event_id`` is
        stored once and answered ``duplicate``)
400     not a usable act (not UTF-8 JSON, nested too deeply, a field missing or not a
        string, unknown type, empty text, values the database cannot store)
401     missing, wrong or stale signature; nothing was accepted
404     no such handover for this bot
409     the handover has ended
413     the body or the text is too long
503     the desk is not running or the act could not be stored (``Retry-After``)
======  ===========================================================================

Every error answer is ``{"error": "<one line>"}``.

Errors of the conversion, one tree::

    InvalidAgentEvent     the body is not a usable act: answer 400 with ``reason``
    └── AgentTextTooLong  the text is longer than the desk takes: answer 413
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from bridge.channel import (
    AcceptResult,
    DeliveryRejected,
    DeskAction,
    IntakeUnavailable,
    UnreadableBody,
    loads_object,
)
from bridge.channelkit import is_storable_text
from bridge.config import HandoverConfig
from bridge.handover import events
from bridge.handover.desk import (
    ACT_ERRORS,
    ACT_UNAVAILABLE,
    AgentCommand,
    Agents,
    Desk,
    DeskDelivery,
    act_refusal,
)
from bridge.signed_http import RequestRefused, SignedPoster, answer_error, read_signed_body
from bridge.signed_http import error_response as _error

log = logging.getLogger("bridge.handover.webhook")

AGENT_MESSAGE = "agent.message"
RESOLVE = "handover.resolve"
#: the acts the intake takes, by their ``type``
ACTIONS: Mapping[str, DeskAction] = {AGENT_MESSAGE: DeskAction.MESSAGE, RESOLVE: DeskAction.RESOLVE}
#: the desk events this desk sends; the others (agent_message, taken) are the integrator's
#: own acts echoed back, of no use to it
SENT_TYPES = frozenset({events.STARTED, events.USER_MESSAGE, events.ENDED})

#: Largest accepted act body in bytes.
MAX_BODY_BYTES = 64 * 1024
#: Longest agent's text in characters (a long one is split by the user's channel).
MAX_TEXT_LENGTH = 4096
#: Longest handover id and agent id or name.
MAX_ID_LENGTH = 255
#: Longest event id (the core keeps a long one in the inbox by its hash).
MAX_EVENT_ID_LENGTH = 255
#: Seconds a sender is asked to wait when the act could not be stored.
RETRY_AFTER_SECONDS = 5
#: How much of a receiver's answer is read (for the log).
MAX_RESPONSE_BYTES = 4096


class InvalidAgentEvent(ValueError):
    """The act cannot be used; ``reason`` is one line for the sender (field names, never
    values). ``status`` is the HTTP status to answer with."""

    status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AgentTextTooLong(InvalidAgentEvent):
    """The text is longer than :data:`MAX_TEXT_LENGTH`."""

    status = 413


# --- conversion (pure) ----------------------------------------------------------------------


def _storable(value: str) -> bool:
    # A NUL is refused by PostgreSQL, a lone surrogate (JSON can carry one) by UTF-8.
    return "\x00" not in value and is_storable_text(value)


def _optional(payload: Mapping[str, Any], key: str, limit: int) -> str | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidAgentEvent(f"{key} must be a string")
    if not 1 <= len(value) <= limit:
        raise InvalidAgentEvent(f"{key} must be 1 to {limit} characters")
    if not _storable(value):
        raise InvalidAgentEvent(f"{key} is not valid Unicode text")
    return value


def _required(payload: Mapping[str, Any], key: str, limit: int) -> str:
    value = _optional(payload, key, limit)
    if value is None:
        raise InvalidAgentEvent(f"{key} is required")
    return value


def _text(payload: Mapping[str, Any]) -> str:
    value = payload.get("text")
    if value is None:
        raise InvalidAgentEvent("text is required for type agent.message")
    if not isinstance(value, str):
        raise InvalidAgentEvent("text must be a string")
    if not value.strip():
        raise InvalidAgentEvent("text must not be empty")
    if len(value) > MAX_TEXT_LENGTH:
        raise AgentTextTooLong(f"text is longer than {MAX_TEXT_LENGTH} characters")
    if not _storable(value):
        raise InvalidAgentEvent("text is not valid Unicode text")
    return value


def _agent(payload: Mapping[str, Any]) -> tuple[str, str | None]:
    """The agent's id ("" when not given) and display name."""
    value = payload.get("agent")
    if value is None:
        return "", None
    if not isinstance(value, dict):
        raise InvalidAgentEvent("agent must be an object")
    name = _optional(value, "name", MAX_ID_LENGTH)
    agent_id = _optional(value, "id", MAX_ID_LENGTH)
    if name is not None and not name.strip():
        name = None
    return agent_id or "", name


def agent_command(payload: Mapping[str, Any]) -> AgentCommand:
    """The :class:`AgentCommand` of one parsed act. Unknown keys are ignored, so a sender may
    add fields. Raises InvalidAgentEvent."""
    kind = payload.get("type")
    if kind is None:
        raise InvalidAgentEvent("type is required")
    if not isinstance(kind, str):
        raise InvalidAgentEvent("type must be a string")
    action = ACTIONS.get(kind)
    if action is None:
        raise InvalidAgentEvent(f"unknown type (known: {', '.join(ACTIONS)})")
    handover = _required(payload, "handover_id", MAX_ID_LENGTH)
    event_id = _required(payload, "event_id", MAX_EVENT_ID_LENGTH)
    text = _text(payload) if action is DeskAction.MESSAGE else ""
    agent_id, agent_name = _agent(payload)
    return AgentCommand(
        handover=handover,
        event_id=event_id,
        action=action,
        text=text,
        agent_id=agent_id,
        agent_name=agent_name,
    )


def parse_agent_event(body: bytes) -> AgentCommand:
    """The :class:`AgentCommand` of a request body (UTF-8 JSON). Raises InvalidAgentEvent."""
    try:
        payload = loads_object(body)
    except UnreadableBody as exc:
        raise InvalidAgentEvent(str(exc)) from None
    return agent_command(payload)


def encode_event(event: Mapping[str, Any]) -> bytes:
    """A desk event as the compact UTF-8 JSON body sent. Raises DeliveryRejected for an
    event JSON cannot carry (no retry can fix it)."""
    try:
        text = json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DeliveryRejected(f"the event is not JSON: {exc}") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (not storable, but be safe): JSON's escapes carry it.
        escaped = json.dumps(event, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
        return escaped.encode("ascii")


# --- the desk -------------------------------------------------------------------------------


class WebhookDesk(Desk):
    """One bot's webhook desk. Acts are taken between :meth:`start` and :meth:`stop`; before
    and after, they are answered 503 so the sender retries."""

    kind = "webhook"

    def __init__(self, bot: str, config: HandoverConfig) -> None:
        super().__init__(bot, config)
        if not config.url or config.secret is None:
            raise ValueError("the webhook desk needs url and secret")
        self.url = config.url
        self._secret = config.secret.get_secret_value().encode("utf-8")
        self._agents: Agents | None = None
        self._poster = SignedPoster(
            url=config.url,
            secret=self._secret,
            timeout_seconds=config.timeout_seconds,
            user_agent="parloa-bridge-handover",
            max_answer_bytes=MAX_RESPONSE_BYTES,
            what="handover url",
            owner="the webhook desk",
        )

    def __repr__(self) -> str:
        # The secret stays out of any log line.
        return f"WebhookDesk(bot={self.bot!r}, url={self.url!r})"

    @property
    def events_path(self) -> str:
        return f"/handover/{self.bot}/events"

    def routes(self) -> Sequence[web.RouteDef]:
        return [web.post(self.events_path, self._handle_act)]

    async def start(self, agents: Agents) -> None:
        await self._poster.start()
        self._agents = agents
        log.info("webhook desk of bot %s: taking agents' acts on %s", self.bot, self.events_path)

    async def stop(self) -> None:
        self._agents = None
        if await self._poster.close():
            log.info("webhook desk of bot %s: stopped", self.bot)

    def status(self) -> Mapping[str, Any]:
        return {"started": self._agents is not None}

    # --- out ----------------------------------------------------------------------------------

    async def deliver(self, delivery: DeskDelivery) -> None:
        event = delivery.event
        if event.get("type") not in SENT_TYPES:
            return
        status, headers, answer = await self._poster.post(encode_event(event))
        error = answer_error(self._poster.what, status, headers, answer)
        if error is not None:
            raise error
        log.debug(
            "webhook desk of bot %s: delivered %s of handover %s",
            self.bot,
            event.get("type"),
            delivery.handover.key,
        )
        await delivery.progress(0, None)

    # --- in -----------------------------------------------------------------------------------

    async def _handle_act(self, request: web.Request) -> web.Response:
        unavailable = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        if self._agents is None:
            return _error(503, "desk is not running", unavailable)
        try:
            raw = await read_signed_body(
                request,
                self._secret,
                max_bytes=MAX_BODY_BYTES,
                tolerance=self.config.signature_tolerance_seconds,
            )
        except RequestRefused as exc:
            if exc.status == 401:
                log.info("webhook desk of bot %s: refused an act: %s", self.bot, exc.reason)
            return _error(exc.status, exc.reason)
        try:
            command = parse_agent_event(raw)
        except InvalidAgentEvent as exc:
            log.info("webhook desk of bot %s: invalid act: %s", self.bot, exc.reason)
            return _error(exc.status, exc.reason)
        return await self._act(command, unavailable)

    async def _act(self, command: AgentCommand, unavailable: Mapping[str, str]) -> web.Response:
        agents = self._agents
        if agents is None:  # stopped while the body arrived
            return _error(503, "desk is not running", unavailable)
        try:
            result = await agents.act(self.bot, command)
        except ACT_ERRORS as exc:
            status, reason = act_refusal(exc)
            if isinstance(exc, IntakeUnavailable):
                log.warning(
                    "webhook desk of bot %s: act %r could not be stored; asked the sender to retry",
                    self.bot,
                    command.event_id,
                )
            elif status == 400:  # the sender is not told why: the operator is
                log.warning(
                    "webhook desk of bot %s: act %r refused: %s", self.bot, command.event_id, exc
                )
            return _error(status, reason, unavailable if status == 503 else None)
        except Exception:
            # Never a traceback nor a 500 to the sender: it retries, the operator reads the log.
            log.exception("webhook desk of bot %s: act %r failed", self.bot, command.event_id)
            return _error(503, ACT_UNAVAILABLE, unavailable)
        # Only now, with the act committed, may the sender consider it delivered.
        # The sender's id in %r: a control character cannot forge a log line.
        log.debug("webhook desk of bot %s: act %r %s", self.bot, command.event_id, result.value)
        return web.json_response({"ok": True, "duplicate": result is AcceptResult.DUPLICATE})


__all__ = [
    "AgentTextTooLong",
    "InvalidAgentEvent",
    "WebhookDesk",
    "agent_command",
    "encode_event",
    "parse_agent_event",
]
