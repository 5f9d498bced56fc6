"""Handing a conversation to a live agent and back (bridge/handover/ has the desks): the
steps as pure functions over typed values, and :class:`Handing`, the worker's part that reads
what they need (the open handover, the transcript) and counts what they did.

    while handed over    kind                    step committed
                         text, button            Answered + "handover.user_message" to the desk
                         unsupported             the same, with a placeholder text
                         agent (its handover)    the text to the user + AgentReplied
                                                 + "handover.agent_message"
                         agent_take              HandoverTaken + "handover.taken" (once)
                         agent_resolve           closed (resolved): handover_ended notice,
                                                 back to the bot (after = "bot") or ended
                         handover_timeout        closed (timeout, if nobody took it):
                                                 handover_timeout notice, back to the bot
                         idle (its handover)     closed (idle), the conversation ended
                         stop                    closed (user_left) + conversation_ended
                         start, restart          closed (user_left), then the bot launches
    not handed over      agent kinds, timeout    nothing: the handover ended before them
                         a user command          opened: notice + "handover.started"
    Parloa answered      a handover payload      opened: the other elements, the notice,
                                                 "handover.started"
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.config import HandoverConfig, MessagesConfig
from bridge.engine.lifecycle import handled, text_element
from bridge.handover import events
from bridge.metrics import Metrics
from bridge.store import Store
from bridge.textchat.models import wire_text
from bridge.vocabulary import (
    AGENT_KINDS,
    AgentReplied,
    Answered,
    Conversation,
    ConversationState,
    Ended,
    EndReason,
    HandedOver,
    Handover,
    HandoverClosed,
    HandoverOpened,
    HandoverOutcome,
    HandoverState,
    HandoverTaken,
    InboundKind,
    InboxItem,
    NewReply,
    Step,
    Turn,
)

log = logging.getLogger("bridge.engine")

#: what the desk reads for a message the bridge cannot show
UNSUPPORTED_TEXT = "[a message type the bridge cannot show]"


def timeout_event_id(key: str) -> str:
    return f"handover-timeout:{key}"


def idle_event_id(key: str) -> str:
    return f"idle:{key}"


@dataclass(frozen=True, slots=True)
class Request:
    """What asked for a handover: its details (the payload's, or a user command's)."""

    reason: str | None = None
    queue: str | None = None
    summary: str | None = None

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Request:
        return cls(
            events.detail(payload, "reason"),
            events.detail(payload, "queue", 255),
            events.detail(payload, "summary", 4000),
        )


def asks_for_agent(item: InboxItem, settings: HandoverConfig) -> bool:
    """The user's text is one of the bot's handover commands."""
    if item.kind is not InboundKind.TEXT or not item.text:
        return False
    said = item.text.strip().casefold()
    return any(said == command.strip().casefold() for command in settings.user_commands)


def opened(
    conv: Conversation,
    item: InboxItem,
    key: str,
    bot: str,
    settings: HandoverConfig,
    request: Request,
    transcript: Sequence[Turn],
    now: float,
    messages: MessagesConfig,
    before: Sequence[NewReply] = (),
) -> Step:
    """A handover opens for ``item``: ``before`` (the bot's other elements) first, then the
    user's notice, then the desk's "handover.started" with the transcript."""
    assert settings.desk is not None
    notice = NewReply([text_element(messages.handover_started)], item.address, item.id)
    user_id = conv.requester_id.removeprefix(f"{conv.channel}:")
    started = events.started(
        key,
        events.event_id(key, item.id, "started"),
        now,
        bot=bot,
        channel=conv.channel,
        user_id=user_id,
        context=item.context,
        reason=request.reason,
        queue=request.queue,
        summary=request.summary,
        transcript=transcript,
    )
    return Step(
        inbox_id=item.id,
        outcome=handled(item, now),
        conversation=HandedOver(now, item.address or conv.address),
        replies=(*before, notice, events.for_desk(bot, key, started, item.id)),
        handover=HandoverOpened(
            key, bot, settings.desk, now, request.reason, request.queue, request.summary
        ),
    )


def split_answer(step: Step, payload_key: str) -> tuple[tuple[NewReply, ...], Request | None]:
    """The replies of a step Parloa's answer made, without the handover payload, and the
    request when one asked for a handover."""
    kept: list[NewReply] = []
    request: Request | None = None
    for reply in step.replies:
        elements, asked = events.trigger(reply.elements, payload_key)
        if asked is not None and request is None:
            request = Request.from_payload(asked)
        if elements:
            kept.append(dataclasses.replace(reply, elements=elements))
    return tuple(kept), request


def _closed(
    conv: Conversation,
    handover: Handover,
    item: InboxItem,
    outcome: HandoverOutcome,
    now: float,
    end: Ended,
    notices: Sequence[str],
) -> Step:
    """The handover ends: the user's notices, the desk's "handover.ended", the conversation
    ``end``."""
    address = conv.address
    ended = events.ended(
        handover.key, events.event_id(handover.key, item.id, "ended"), now, outcome
    )
    replies = [NewReply([text_element(text)], address, item.id) for text in notices if text]
    replies.append(events.for_desk(handover.bot, handover.key, ended, item.id))
    return Step(
        inbox_id=item.id,
        outcome=handled(item, now),
        conversation=end,
        replies=tuple(replies),
        handover=HandoverClosed(handover.key, outcome, now),
    )


def resolved(
    conv: Conversation,
    handover: Handover,
    item: InboxItem,
    settings: HandoverConfig,
    now: float,
    messages: MessagesConfig,
) -> Step:
    if settings.after == "end":
        end = Ended(EndReason.HANDOVER_ENDED)
        notices = [messages.handover_ended, messages.conversation_ended]
    else:
        end, notices = Ended(EndReason.HANDOVER_RESOLVED), [messages.handover_ended]
    return _closed(conv, handover, item, HandoverOutcome.RESOLVED, now, end, notices)


def while_handed_over(
    conv: Conversation,
    handover: Handover | None,
    item: InboxItem,
    settings: HandoverConfig,
    now: float,
    messages: MessagesConfig,
) -> tuple[Step, bool]:
    """The step for ``item`` of a conversation whose handover is ``handover`` (None: none is
    open), and whether the bot goes on with the item afterwards (a start or restart)."""
    done = Step(inbox_id=item.id, outcome=handled(item, now))
    if handover is None or conv.state is not ConversationState.HANDED_OVER:
        return done, False
    key = handover.key
    mine = (item.context or {}).get("handover") == key
    kind = item.kind
    if kind in AGENT_KINDS and not mine:
        return done, False
    if kind is InboundKind.AGENT_MESSAGE:
        return agent_said(conv, handover, item, settings, now), False
    if kind is InboundKind.AGENT_TAKE:
        if handover.state is not HandoverState.OPEN:
            return done, False
        name, agent_id = _agent(item)
        taken = events.taken(key, events.event_id(key, item.id, "taken"), now, agent_id, name)
        return dataclasses.replace(
            done,
            replies=(events.for_desk(handover.bot, key, taken, item.id),),
            handover=HandoverTaken(key, name or agent_id, now),
        ), False
    if kind is InboundKind.AGENT_RESOLVE:
        return resolved(conv, handover, item, settings, now, messages), False
    if kind is InboundKind.HANDOVER_TIMEOUT:
        if item.event_id != timeout_event_id(key) or handover.state is not HandoverState.OPEN:
            return done, False
        end = Ended(EndReason.HANDOVER_TIMEOUT)
        notices = [messages.handover_timeout]
        return _closed(conv, handover, item, HandoverOutcome.TIMEOUT, now, end, notices), False
    if kind is InboundKind.IDLE:
        if item.event_id != idle_event_id(key):
            return done, False
        end = Ended(EndReason.IDLE_TIMEOUT)
        return _closed(conv, handover, item, HandoverOutcome.IDLE, now, end, ()), False
    if kind is InboundKind.STOP:
        end = Ended(EndReason.USER_QUIT, now)
        notices = [messages.conversation_ended]
        return _closed(conv, handover, item, HandoverOutcome.USER_LEFT, now, end, notices), False
    if kind in (InboundKind.START, InboundKind.RESTART):
        end = Ended(EndReason.USER_QUIT, now)
        closing = _closed(conv, handover, item, HandoverOutcome.USER_LEFT, now, end, ())
        return dataclasses.replace(closing, inbox_id=None, outcome=None), True
    text = UNSUPPORTED_TEXT if kind is InboundKind.UNSUPPORTED else (item.text or "")
    files = events.attachments_of(item.context)
    said = events.user_message(key, events.event_id(key, item.id, "user"), now, text, files)
    return dataclasses.replace(
        done,
        conversation=Answered(now, item.address or conv.address),
        replies=(events.for_desk(handover.bot, key, said, item.id),),
    ), False


def _agent(item: InboxItem) -> tuple[str | None, str]:
    context = item.context or {}
    name = context.get("agentName")
    return (str(name) if name else None), str(context.get("agentId") or "")


def agent_said(
    conv: Conversation, handover: Handover, item: InboxItem, settings: HandoverConfig, now: float
) -> Step:
    """An agent's message: to the user, and to the desk as it went out."""
    key = handover.key
    name, agent_id = _agent(item)
    text = item.text or ""
    to_user = events.agent_text(text, name, settings.show_agent_name)
    echo = events.agent_message(
        key, events.event_id(key, item.id, "agent"), now, text, agent_id, name
    )
    return Step(
        inbox_id=item.id,
        outcome=handled(item, now),
        conversation=Answered(now, conv.address),
        replies=(
            NewReply([text_element(to_user)], conv.address, item.id),
            events.for_desk(handover.bot, key, echo, item.id),
        ),
        handover=AgentReplied(key, name or agent_id, now),
    )


def recipient_gone(handover: Handover, now: float) -> Step:
    """The user blocked the bot or left the platform while handed over: the conversation
    ends, and the desk learns it (the user left)."""
    ended = events.ended(
        handover.key, events.event_id(handover.key, None, "gone"), now, HandoverOutcome.USER_LEFT
    )
    return Step(
        conversation=Ended(EndReason.RECIPIENT_GONE),
        replies=(events.for_desk(handover.bot, handover.key, ended, None),),
        handover=HandoverClosed(handover.key, HandoverOutcome.USER_LEFT, now),
    )


class Handing:
    """The worker's handover part: reads the open handover and the transcript, builds the
    steps above, and counts what was committed."""

    def __init__(
        self,
        store: Store,
        settings: Mapping[str, HandoverConfig],
        messages: MessagesConfig,
        metrics: Metrics,
    ) -> None:
        self.store = store
        #: the bots with a desk, by name
        self.settings = {bot: s for bot, s in settings.items() if s.desk is not None}
        self.messages = messages
        self.metrics = metrics
        self._warned: set[str] = set()

    def desk_of(self, bot: str) -> HandoverConfig | None:
        return self.settings.get(bot)

    async def open_handover(self, conv: Conversation) -> Handover | None:
        if conv.state is not ConversationState.HANDED_OVER:
            return None
        return await self.store.open_handover(conv.id)

    async def open(
        self,
        conv: Conversation,
        item: InboxItem,
        bot: str,
        request: Request,
        now: float,
        before: Sequence[NewReply] = (),
    ) -> Step:
        settings = self.settings[bot]
        turns = await self.store.recent_turns(conv.id, settings.transcript_turns)
        # This turn is not stored yet: the user's text, then what the bot said before.
        if item.text and item.kind in (InboundKind.TEXT, InboundKind.BUTTON):
            turns.append(Turn("user", item.text, now))
        for reply in before:
            if text := wire_text(reply.elements):
                turns.append(Turn("bot", text, now))
        turns = turns[-settings.transcript_turns :] if settings.transcript_turns else []
        key = uuid.uuid4().hex
        return opened(conv, item, key, bot, settings, request, turns, now, self.messages, before)

    async def after_answer(
        self, conv: Conversation, item: InboxItem, bot: str, step: Step, now: float
    ) -> Step:
        """``step`` (Parloa's answer to ``item``) as it goes out: a handover opened when the
        answer asks for one and the bot has a desk."""
        settings = self.settings.get(bot)
        payload_key = settings.payload_key if settings is not None else "handover"
        kept, request = split_answer(step, payload_key)
        if request is None:
            return step
        if settings is None:
            if bot not in self._warned:
                self._warned.add(bot)
                log.warning(
                    "bot %s asked for a handover, but [bots.%s.handover] desk is not set: "
                    "the request is ignored",
                    bot,
                    bot,
                )
            return step
        return await self.open(conv, item, bot, request, now, kept)

    def committed(self, step: Step, handover: Handover | None, channel: str) -> None:
        """Count what a committed step of ``channel``'s conversation did (``handover``: as it
        was before the step)."""
        change = step.handover
        metrics = self.metrics
        if change is not None and isinstance(step.conversation, Ended):
            reason = step.conversation.reason.value
            metrics.sessions_ended.labels(channel, reason).inc()
        match change:
            case HandoverOpened():
                metrics.handovers_started.labels(change.bot, change.desk).inc()
            case HandoverTaken() if handover is not None and handover.taken_at is None:
                metrics.handover_take_seconds.labels(handover.bot).observe(
                    max(0.0, change.at - handover.started_at)
                )
            case AgentReplied() if handover is not None:
                if handover.taken_at is None:
                    metrics.handover_take_seconds.labels(handover.bot).observe(
                        max(0.0, change.at - handover.started_at)
                    )
                if handover.first_reply_at is None:
                    metrics.handover_first_reply_seconds.labels(handover.bot).observe(
                        max(0.0, change.at - handover.started_at)
                    )
            case HandoverClosed() if handover is not None:
                metrics.handovers_ended.labels(
                    handover.bot, handover.desk, change.outcome.value
                ).inc()
