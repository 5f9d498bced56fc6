"""The session lifecycle's decisions and the steps built from Parloa's answers, as pure
functions: no store, no simulator, no clock (times and jitter are given)."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.channel import DeliveryRetryable
from bridge.config import EngineConfig, MessagesConfig
from bridge.engine import backoff, lifecycle
from bridge.engine.delivery import Progress, after_retryable
from bridge.engine.lifecycle import Launch, LaunchThenMessage, Message, Quit, Reply
from bridge.textchat.errors import RateLimited, ServerError
from bridge.textchat.models import TextchatResponse, parse_wire
from bridge.vocabulary import (
    Answered,
    Conversation,
    ConversationState,
    DeadLetter,
    DeliveryFailed,
    DeliveryRetry,
    Done,
    Ended,
    EndReason,
    InboundKind,
    InboxItem,
    InboxStatus,
    NewReply,
    OutboxItem,
    OutboxStatus,
    RetryLater,
    SessionOpened,
    Step,
    apply_change,
)

NOW = 1_000_000.0
MESSAGES = MessagesConfig()
CONFIG = EngineConfig(
    retry_budget_seconds=900, retry_initial_seconds=1, retry_max_seconds=60, delivery_attempts=3
)
ADDRESS = {"chat": 7}


def highest(low: float, high: float) -> float:
    """The jitter that always picks the top of its range."""
    return high


def conversation(
    *, session: str | None = None, state: ConversationState | None = None
) -> Conversation:
    if state is None:
        state = ConversationState.ACTIVE if session else ConversationState.NEW
    return Conversation(
        id=1,
        channel="test",
        conversation_key="k",
        requester_id="test:u",
        state=state,
        session_id=session,
        parloa_conversation_id=None,
        end_reason=None,
        address=ADDRESS,
        last_activity_at=NOW - 60,
    )


def event(
    kind: InboundKind = InboundKind.TEXT,
    text: str | None = "hello",
    *,
    event_id: str = "e1",
    attempts: int = 0,
    age: float = 0.0,
) -> InboxItem:
    return InboxItem(
        id=10,
        channel="test",
        event_id=event_id,
        conversation_id=1,
        kind=kind,
        text=text,
        address=ADDRESS,
        context=None,
        status=InboxStatus.PENDING,
        attempts=attempts,
        next_attempt_at=NOW - age,
        last_error=None,
        created_at=NOW - age,
        finished_at=None,
    )


def response(
    *texts: str,
    end: bool = False,
    conversation_id: str | None = "pc-1",
    extra: list[dict[str, Any]] | None = None,
) -> TextchatResponse:
    body: dict[str, Any] = {
        "apiVersion": "chat/v1",
        "releaseId": "rel",
        "requesterId": "test:u",
        "sessionId": "s-new",
        "endConversation": end,
        "responseElements": [{"type": "text", "content": t} for t in texts] + (extra or []),
    }
    if conversation_id is not None:
        body["conversationId"] = conversation_id
    return parse_wire(TextchatResponse, body)


def text_reply(*texts: str) -> NewReply:
    return NewReply([{"type": "text", "content": t} for t in texts], ADDRESS, 10)


DONE = Done(NOW, 1)


# --- what to do, by kind and conversation ---------------------------------------------------


@pytest.mark.parametrize("kind", [InboundKind.TEXT, InboundKind.BUTTON])
@pytest.mark.parametrize(
    "conv",
    [
        conversation(),
        conversation(session="s-old", state=ConversationState.ENDED),
        conversation(state=ConversationState.ACTIVE),  # active, but no session id recorded
    ],
    ids=["new", "ended", "no-session"],
)
def test_a_message_without_an_open_session_launches_first(
    kind: InboundKind, conv: Conversation
) -> None:
    assert lifecycle.decide(conv, event(kind, "hi"), NOW, MESSAGES) == LaunchThenMessage("hi")


@pytest.mark.parametrize("kind", [InboundKind.TEXT, InboundKind.BUTTON])
def test_a_message_in_an_open_session_is_sent_in_it(kind: InboundKind) -> None:
    plan = lifecycle.decide(conversation(session="s1"), event(kind, "hi"), NOW, MESSAGES)
    assert plan == Message("s1", "hi")


def test_a_message_without_text_sends_an_empty_one() -> None:
    plan = lifecycle.decide(conversation(session="s1"), event(text=None), NOW, MESSAGES)
    assert plan == Message("s1", "")


@pytest.mark.parametrize("kind", [InboundKind.START, InboundKind.RESTART])
def test_start_and_restart_quit_an_open_session_then_launch(kind: InboundKind) -> None:
    assert lifecycle.decide(conversation(session="s1"), event(kind), NOW, MESSAGES) == Launch("s1")
    assert lifecycle.decide(conversation(), event(kind), NOW, MESSAGES) == Launch(None)


def test_stop_quits_and_tells_the_user() -> None:
    item = event(InboundKind.STOP, None)
    plan = lifecycle.decide(conversation(session="s1"), item, NOW, MESSAGES)
    assert plan == Quit("s1", EndReason.USER_QUIT)
    assert isinstance(plan, Quit)
    step = lifecycle.quitted(plan, item, response("Goodbye!"), DONE, MESSAGES)
    assert step == Step(
        inbox_id=10,
        outcome=DONE,
        replies=(text_reply("Goodbye!"), text_reply(MESSAGES.conversation_ended)),
        conversation=Ended(EndReason.USER_QUIT, NOW),
    )


def test_stop_without_a_session_or_an_answer_still_ends_with_the_notice() -> None:
    item = event(InboundKind.STOP, None)
    plan = lifecycle.decide(conversation(), item, NOW, MESSAGES)
    assert plan == Quit(None, EndReason.USER_QUIT)
    assert isinstance(plan, Quit)
    step = lifecycle.quitted(plan, item, None, DONE, MESSAGES)
    assert step.replies == (text_reply(MESSAGES.conversation_ended),)
    assert step.conversation == Ended(EndReason.USER_QUIT, NOW)


def test_idle_timeout_of_the_open_session_quits_quietly() -> None:
    item = event(InboundKind.IDLE, None, event_id="idle:s1")
    plan = lifecycle.decide(conversation(session="s1"), item, NOW, MESSAGES)
    assert plan == Quit("s1", EndReason.IDLE_TIMEOUT)
    assert isinstance(plan, Quit)
    # Whatever Parloa answers to the quit, the user hears nothing.
    step = lifecycle.quitted(plan, item, response("Bye"), DONE, MESSAGES)
    assert step == Step(inbox_id=10, outcome=DONE, conversation=Ended(EndReason.IDLE_TIMEOUT))


@pytest.mark.parametrize(
    "conv",
    [conversation(session="s2"), conversation(session="s1", state=ConversationState.ENDED)],
    ids=["a-later-session", "already-ended"],
)
def test_a_stale_idle_timeout_is_done_and_nothing_else(conv: Conversation) -> None:
    item = event(InboundKind.IDLE, None, event_id="idle:s1")
    plan = lifecycle.decide(conv, item, NOW, MESSAGES)
    assert plan == Reply(Step(inbox_id=10, outcome=DONE))


def test_unsupported_content_gets_the_notice_without_parloa() -> None:
    item = event(InboundKind.UNSUPPORTED, "sticker", attempts=2)
    plan = lifecycle.decide(conversation(session="s1"), item, NOW, MESSAGES)
    assert plan == Reply(
        Step(inbox_id=10, outcome=Done(NOW, 3), replies=(text_reply(MESSAGES.unsupported),))
    )


# --- steps from Parloa's answers -------------------------------------------------------------


def test_a_launch_opens_the_session_with_its_welcome() -> None:
    item = event()
    step = lifecycle.launched("s-new", response("Welcome", "Hi"), item, NOW + 1)
    assert step == Step(
        conversation=SessionOpened("s-new", "pc-1", NOW + 1, ADDRESS),
        replies=(text_reply("Welcome", "Hi"),),
    )
    assert not lifecycle.ended_by_welcome(step)
    quiet = lifecycle.launched("s-new", response("Welcome"), item, NOW + 1, quiet=True)
    assert quiet.replies == () and quiet.conversation == step.conversation


def test_a_welcome_that_ends_the_conversation_is_the_events_outcome() -> None:
    item = event(text="hi")
    launch = lifecycle.launched("s-new", response("Closed today", end=True), item, NOW)
    assert lifecycle.ended_by_welcome(launch)
    step = lifecycle.settle(launch, item, DONE)
    assert (step.inbox_id, step.outcome, step.replies) == (10, DONE, (text_reply("Closed today"),))
    after = apply_change(conversation(), step.conversation)
    assert (after.state, after.end_reason, after.session_id) == (
        ConversationState.ENDED,
        EndReason.BOT_ENDED,
        "s-new",
    )


def test_an_answer_is_the_events_outcome() -> None:
    item = event(text="hi")
    step = lifecycle.answered(item, response("You said: hi"), DONE, NOW + 2)
    assert step == Step(
        inbox_id=10,
        outcome=DONE,
        conversation=Answered(NOW + 2, ADDRESS, "pc-1"),
        replies=(text_reply("You said: hi"),),
    )
    silent = lifecycle.answered(item, response(end=True, conversation_id=None), DONE, NOW)
    assert silent.replies == ()
    assert silent.conversation == Answered(NOW, ADDRESS, None, ended_by_bot=True)
    after = apply_change(conversation(session="s1"), silent.conversation)
    assert (after.state, after.end_reason) == (ConversationState.ENDED, EndReason.BOT_ENDED)


def test_elements_no_channel_renders_are_named() -> None:
    body = response("hi", extra=[{"type": "video", "url": "x"}, {"content": "no type"}])
    assert lifecycle.unknown_types(body) == ["video", "?"]
    assert lifecycle.unknown_types(response("hi")) == []


# --- failures ---------------------------------------------------------------------------------


def test_a_dead_letter_keeps_the_event_and_tells_the_user() -> None:
    step = lifecycle.dead_letter(event(attempts=1), "BadRequest: no", MESSAGES.rejected, NOW)
    assert step == Step(
        inbox_id=10,
        outcome=DeadLetter("BadRequest: no", NOW, 2),
        replies=(text_reply(MESSAGES.rejected),),
    )
    assert lifecycle.dead_letter(event(), "channel gone", "", NOW).replies == ()


def test_a_transient_failure_within_the_budget_is_retried_with_backoff() -> None:
    error = ServerError("503", status=503)
    step = lifecycle.retry_or_give_up(
        event(attempts=2, age=10), error, NOW, CONFIG, MESSAGES, highest
    )
    # the third attempt: 1 s doubled twice, the top of the jitter
    assert step == Step(inbox_id=10, outcome=RetryLater(3, NOW + 4.0, str(error)))


def test_a_transient_failure_past_the_budget_is_a_dead_letter() -> None:
    error = ServerError("503", status=503)
    step = lifecycle.retry_or_give_up(
        event(attempts=7, age=900), error, NOW, CONFIG, MESSAGES, highest
    )
    assert isinstance(step.outcome, DeadLetter)
    assert step.outcome.reason.startswith("gave up after 8 attempts over 900s")
    assert step.replies == (text_reply(MESSAGES.unavailable),)


@pytest.mark.parametrize(("retry_after", "delay"), [(30.0, 30.0), (0.5, 2.0), (None, 2.0)])
def test_parloas_retry_after_is_waited_at_least(retry_after: float | None, delay: float) -> None:
    error = RateLimited("429", retry_after=retry_after)
    step = lifecycle.retry_or_give_up(
        event(attempts=1, age=5), error, NOW, CONFIG, MESSAGES, highest
    )
    assert step.outcome == RetryLater(2, NOW + delay, str(error))


def test_backoff_doubles_up_to_the_cap_with_jitter_below() -> None:
    assert [backoff(n, 1, 10, highest) for n in range(1, 6)] == [1, 2, 4, 8, 10]
    assert backoff(0, 1, 10, highest) == 1
    assert backoff(3, 1, 10, lambda low, high: low) == 2


# --- what an adapter's "try again" means for a reply -------------------------------------------


def reply(attempts: int = 0) -> OutboxItem:
    return OutboxItem(
        id=5,
        conversation_id=1,
        inbox_id=10,
        channel="test",
        address=ADDRESS,
        elements=[],
        parts_done=0,
        status=OutboxStatus.PENDING,
        attempts=attempts,
        next_attempt_at=NOW,
        last_error=None,
    )


def test_a_rate_limited_delivery_waits_what_the_platform_said_without_spending_an_attempt() -> None:
    error = DeliveryRetryable("429", retry_after=7.0, rate_limited=True)
    outcome = after_retryable(reply(attempts=2), error, Progress(1, "m1"), NOW, CONFIG, highest)
    assert outcome == DeliveryRetry(2, NOW + 7.0, "429", 1, "m1")


def test_a_failed_delivery_backs_off_then_gives_up_after_its_attempts() -> None:
    error = DeliveryRetryable("network")
    retry = after_retryable(reply(attempts=1), error, Progress(0), NOW, CONFIG, highest)
    assert retry == DeliveryRetry(2, NOW + 2.0, "network", 0, None)
    given_up = after_retryable(reply(attempts=2), error, Progress(2, "m2"), NOW, CONFIG, highest)
    assert given_up == DeliveryFailed("gave up: network", NOW, 2, "m2")
