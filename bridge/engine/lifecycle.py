"""The session lifecycle as pure decisions over typed values: no store, no network, no clock.

:func:`decide` reads the conversation and its oldest due event and says what to do; the
worker (bridge/engine/worker.py) does it, calling Parloa, and builds the step it commits with
the functions below from what Parloa answered::

    kind              conversation      plan                      step committed
    unsupported       any               Reply (the notice)        Done + notice
    idle              its session open  Quit(IDLE_TIMEOUT)        Done + Ended(idle)
    idle              any other         Reply (nothing)           Done
    stop              any               Quit(USER_QUIT)           Done + quit's replies + notice
                                                                  + Ended(user quit)
    start, restart    any               Launch (quit first        Done + SessionOpened + welcome
                                        if a session is open)
    agent, timeout    not handed over   Reply (nothing)           Done (the handover ended)
    text, button      no session        LaunchThenMessage         SessionOpened + welcome, then
                                                                  Done + Answered + answer
    text, button      session open      Message                   Done + Answered + answer

A launch after a handover that returned the user to the bot carries the context items
``handoverReturned`` and ``handoverOutcome``; a handed-over conversation's events are
decided in bridge/engine/handover.py.

A failure becomes :func:`dead_letter` (permanent) or :func:`retry_or_give_up` (transient,
within the retry budget); an event whose bot's circuit breaker is open waits
(:func:`park`, bridge/engine/breaker.py).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.config import EngineConfig, MessagesConfig
from bridge.engine.media import MediaRetry
from bridge.textchat.errors import RateLimited
from bridge.textchat.models import TextchatResponse, element_to_wire
from bridge.vocabulary import (
    HANDOVER_KINDS,
    HANDOVER_RETURNS,
    Answered,
    Conversation,
    ConversationState,
    DeadLetter,
    Done,
    Ended,
    EndReason,
    InboundKind,
    InboxItem,
    NewReply,
    RetryLater,
    SessionOpened,
    Step,
)

#: ``uniform(a, b)``: a number between a and b (random.uniform; a fixed choice in tests)
Uniform = Callable[[float, float], float]

#: element types the channels render; any other is counted (parloa_bridge_unknown_elements)
KNOWN_ELEMENTS = frozenset({"text", "payload", "cross_card"})


def backoff(attempt: int, initial: float, cap: float, uniform: Uniform = random.uniform) -> float:
    """Capped exponential backoff with jitter (attempt counts from 1)."""
    ceiling = min(cap, initial * 2 ** max(0, attempt - 1))
    return uniform(ceiling / 2, ceiling)


def text_element(content: str) -> dict[str, Any]:
    return {"type": "text", "content": content}


# --- what to do ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """Nothing to ask Parloa: commit ``step``."""

    step: Step


@dataclass(frozen=True, slots=True)
class Quit:
    """End the conversation for ``reason``, telling Parloa if ``session_id`` is open."""

    session_id: str | None
    reason: EndReason

    @property
    def tells_user(self) -> bool:
        """The user asked to quit: Parloa's answer to the quit and a notice go to them."""
        return self.reason is EndReason.USER_QUIT


@dataclass(frozen=True, slots=True)
class Launch:
    """Open a new session, quitting ``quit_session`` first when one is open; ``context``:
    items Parloa hears besides the event's."""

    quit_session: str | None
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LaunchThenMessage:
    """No session is open: launch one, then send ``text`` in it."""

    text: str
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Message:
    """Send ``text`` in the open session."""

    session_id: str
    text: str


Plan = Reply | Quit | Launch | LaunchThenMessage | Message


def handled(item: InboxItem, now: float) -> Done:
    """The outcome of ``item`` when this attempt handles it."""
    return Done(now, item.attempts + 1)


def returned(conv: Conversation) -> dict[str, Any]:
    """The context items of the first launch after a handover handed the user back."""
    outcome = HANDOVER_RETURNS.get(conv.end_reason) if conv.end_reason else None
    if conv.state is not ConversationState.ENDED or outcome is None:
        return {}
    return {"handoverReturned": True, "handoverOutcome": outcome}


def decide(conv: Conversation, item: InboxItem, now: float, messages: MessagesConfig) -> Plan:
    """What to do with ``item``, the oldest due event of ``conv``."""
    session = conv.session_id if conv.active else None
    if item.kind in HANDOVER_KINDS:
        return Reply(Step(inbox_id=item.id, outcome=handled(item, now)))
    match item.kind:
        case InboundKind.UNSUPPORTED:
            notice = NewReply([text_element(messages.unsupported)], item.address, item.id)
            return Reply(Step(inbox_id=item.id, outcome=handled(item, now), replies=(notice,)))
        case InboundKind.IDLE:
            # Raised for one session (event id "idle:<session>"); a later one is not idle.
            if session is not None and item.event_id == f"idle:{session}":
                return Quit(session, EndReason.IDLE_TIMEOUT)
            return Reply(Step(inbox_id=item.id, outcome=handled(item, now)))
        case InboundKind.STOP:
            return Quit(session, EndReason.USER_QUIT)
        case InboundKind.START | InboundKind.RESTART:
            return Launch(session, returned(conv))
    # text and button: a message, launching first when no session is open.
    if session is None:
        return LaunchThenMessage(item.text or "", returned(conv))
    return Message(session, item.text or "")


# --- the step to commit, from what Parloa answered ------------------------------------------


def replies(response: TextchatResponse, item: InboxItem) -> tuple[NewReply, ...]:
    """The response's elements as one reply to ``item`` (none when it has no elements)."""
    elements = [element_to_wire(e) for e in response.response_elements]
    return (NewReply(elements, item.address, item.id),) if elements else ()


def unknown_types(response: TextchatResponse) -> list[str]:
    """Types of the response's elements no channel renders (``?`` when it has none)."""
    return [e.type or "?" for e in response.response_elements if e.type not in KNOWN_ELEMENTS]


def launched(
    session_id: str,
    response: TextchatResponse,
    item: InboxItem,
    now: float,
    *,
    quiet: bool = False,
) -> Step:
    """Parloa answered ``launch`` in ``session_id``: the session opened and its welcome
    (none when ``quiet``: a session reopened behind the user's back)."""
    opened = SessionOpened(
        session_id=session_id,
        parloa_conversation_id=response.conversation_id,
        at=now,
        address=item.address,
        ended_by_bot=response.end_conversation,
    )
    return Step(conversation=opened, replies=() if quiet else replies(response, item))


def ended_by_welcome(launch: Step) -> bool:
    """The welcome of this launch ended the conversation: there is no session to talk to."""
    return isinstance(launch.conversation, SessionOpened) and launch.conversation.ended_by_bot


def settle(step: Step, item: InboxItem, done: Done) -> Step:
    """``step`` as the outcome of ``item``."""
    return dataclasses.replace(step, inbox_id=item.id, outcome=done)


def answered(item: InboxItem, response: TextchatResponse, done: Done, now: float) -> Step:
    """Parloa answered ``item``'s message."""
    change = Answered(
        at=now,
        address=item.address,
        parloa_conversation_id=response.conversation_id or None,
        ended_by_bot=response.end_conversation,
    )
    return Step(
        inbox_id=item.id, outcome=done, conversation=change, replies=replies(response, item)
    )


def quitted(
    plan: Quit,
    item: InboxItem,
    response: TextchatResponse | None,
    done: Done,
    messages: MessagesConfig,
) -> Step:
    """The conversation ended as ``plan`` said; ``response``: Parloa's answer to the quit,
    None when there was no session or Parloa did not answer (a quit is a courtesy)."""
    if not plan.tells_user:
        return Step(inbox_id=item.id, outcome=done, conversation=Ended(plan.reason))
    said = replies(response, item) if response is not None else ()
    notice = NewReply([text_element(messages.conversation_ended)], item.address, item.id)
    return Step(
        inbox_id=item.id,
        outcome=done,
        replies=(*said, notice),
        conversation=Ended(plan.reason, done.at),
    )


def dead_letter(item: InboxItem, reason: str, notice: str, now: float) -> Step:
    """``item`` cannot be handled: keep it for an operator and tell the user ``notice``."""
    return Step(
        inbox_id=item.id,
        outcome=DeadLetter(reason, now, item.attempts + 1),
        replies=(NewReply([text_element(notice)], item.address, item.id),) if notice else (),
    )


def retry_or_give_up(
    item: InboxItem,
    error: Exception,
    now: float,
    config: EngineConfig,
    messages: MessagesConfig,
    uniform: Uniform = random.uniform,
) -> Step:
    """A transient failure: try again later, or give up once the retry budget is spent."""
    attempts = item.attempts + 1
    age = now - item.created_at
    if age >= config.retry_budget_seconds:
        reason = f"gave up after {attempts} attempts over {age:.0f}s: {error}"
        return dead_letter(item, reason, messages.unavailable, now)
    delay = backoff(attempts, config.retry_initial_seconds, config.retry_max_seconds, uniform)
    if isinstance(error, RateLimited | MediaRetry) and error.retry_after is not None:
        delay = max(delay, error.retry_after)
    return Step(inbox_id=item.id, outcome=RetryLater(attempts, now + delay, str(error)))


def park(
    item: InboxItem, now: float, config: EngineConfig, messages: MessagesConfig, reason: str
) -> Step:
    """Parloa keeps failing for the event's bot (its breaker is open): the event waits
    without a call, released early when the breaker closes, otherwise due again a retry
    interval later, never past its retry budget, which still ends in a dead letter. It
    counts as an attempt: an event never tried is due whatever its time says."""
    age = now - item.created_at
    if age >= config.retry_budget_seconds:
        reason = f"gave up after {item.attempts} attempts over {age:.0f}s: {reason}"
        return dead_letter(item, reason, messages.unavailable, now)
    until = min(now + config.retry_max_seconds, item.created_at + config.retry_budget_seconds)
    return Step(inbox_id=item.id, outcome=RetryLater(max(1, item.attempts), until, reason))
