"""The typed values the message path carries between the engine and the store.

States and kinds are StrEnums (stored as their string values); what one step of a worker
changes is a frozen dataclass, turned into column values only inside the store
(bridge/store/columns.py). The records the store reads back (:class:`Conversation`,
:class:`InboxItem`, :class:`OutboxItem`) carry the same enums.

    inbound event ──► NewEvent ──► inbox row (InboxItem, InboundKind, InboxStatus)
    worker step   ──► Step: InboxOutcome (Done | DeadLetter | RetryLater)
                        + ConversationChange (SessionOpened | Answered | Ended)
                        + NewReply … ──► outbox rows (OutboxItem, OutboxStatus)
    delivery      ──► OutboxAck: DeliveryOutcome (Sent | DeliveryRetry | DeliveryFailed)
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.media.attachments import Attachment

# --- states and kinds --------------------------------------------------------------------


class ConversationState(enum.StrEnum):
    NEW = "new"  # created by intake; no Parloa session yet
    ACTIVE = "active"  # a Parloa session is open
    ENDED = "ended"  # the session was closed; the next message opens a new one
    HANDED_OVER = "handed_over"  # a live agent has the conversation (a Handover is open)


class EndReason(enum.StrEnum):
    IDLE_TIMEOUT = "idle_timeout"
    USER_QUIT = "user_quit"
    BOT_ENDED = "bot_ended"
    RECIPIENT_GONE = "recipient_gone"
    # a handover ended and the conversation returns to the bot: the next message opens a
    # session told so (context items handoverReturned, handoverOutcome)
    HANDOVER_RESOLVED = "handover_resolved"
    HANDOVER_TIMEOUT = "handover_timeout"
    HANDOVER_ENDED = "handover_ended"  # resolved with after = "end": nothing more to say


#: end reasons after which the next message tells Parloa how the handover ended
HANDOVER_RETURNS = {
    EndReason.HANDOVER_RESOLVED: "resolved",
    EndReason.HANDOVER_TIMEOUT: "timeout",
}


class InboundKind(enum.StrEnum):
    TEXT = "text"  # a user's message
    BUTTON = "button"  # a chip pressed; ``text`` is the chip's value
    START = "start"  # start a new conversation (Telegram /start)
    STOP = "stop"  # the user quits
    RESTART = "restart"  # quit and start again
    UNSUPPORTED = "unsupported"  # a sticker, photo, voice note, ...: answered with a note
    IDLE = "idle"  # raised by the engine itself when a conversation went quiet; never by an adapter
    # from the desk of a handed-over conversation (bridge/handover/), never by an adapter;
    # context: handover (its key), agentName, agentId
    AGENT_MESSAGE = "agent"  # an agent's text for the user
    AGENT_TAKE = "agent_take"  # an agent takes the handover
    AGENT_RESOLVE = "agent_resolve"  # an agent ends it
    HANDOVER_TIMEOUT = "handover_timeout"  # raised by the engine: no agent took it in time


#: the kinds a desk raises
AGENT_KINDS = frozenset(
    {InboundKind.AGENT_MESSAGE, InboundKind.AGENT_TAKE, InboundKind.AGENT_RESOLVE}
)
#: the kinds only an open handover has a use for (later ones are dropped: it ended)
HANDOVER_KINDS = AGENT_KINDS | {InboundKind.HANDOVER_TIMEOUT}


class InboxStatus(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"
    DEAD = "dead"  # a dead letter: kept until an operator retries it


#: the outbox "channel" of events for a handover's desk (no channel name can be this);
#: the row's address says which: {"bot": ..., "handover": <key>}
DESK_CHANNEL = "@desk"


class OutboxStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


# --- records the store reads -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Conversation:
    id: int
    channel: str
    conversation_key: str
    requester_id: str
    state: ConversationState
    session_id: str | None
    parloa_conversation_id: str | None
    end_reason: EndReason | None
    address: Mapping[str, Any] | None
    last_activity_at: float

    @property
    def active(self) -> bool:
        """A Parloa session is open."""
        return self.state is ConversationState.ACTIVE and self.session_id is not None


@dataclass(frozen=True, slots=True)
class ParloaCall:
    """One request to Parloa made for an inbound event, as the operator's timeline shows it:
    ``status`` is the HTTP status, or the kind of error when there was none (``timeout``...);
    ``elements`` how many response elements came back."""

    event: str
    session: str
    status: int | str
    latency_ms: float
    request_id: str | None
    correlation_id: str | None
    elements: int
    at: float

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ParloaCall:
        return cls(
            event=str(data.get("event", "")),
            session=str(data.get("session", "")),
            status=data.get("status", ""),
            latency_ms=float(data.get("latency_ms", 0.0)),
            request_id=data.get("request_id"),
            correlation_id=data.get("correlation_id"),
            elements=int(data.get("elements", 0)),
            at=float(data.get("at", 0.0)),
        )


#: the Parloa calls kept per event (the latest: an event retried for long keeps its last ones)
MAX_CALLS_KEPT = 20


@dataclass(frozen=True, slots=True)
class InboxItem:
    id: int
    channel: str
    event_id: str
    conversation_id: int
    kind: InboundKind
    text: str | None
    address: Mapping[str, Any] | None
    context: Mapping[str, Any] | None
    status: InboxStatus
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float
    finished_at: float | None
    attachments: tuple[Attachment, ...] = ()
    parloa_calls: tuple[ParloaCall, ...] = ()
    traceparent: str | None = None  # the W3C trace context of the event's intake


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    conversation_id: int
    inbox_id: int | None
    channel: str
    address: Mapping[str, Any] | None
    elements: list[Any]
    parts_done: int
    status: OutboxStatus
    attempts: int
    next_attempt_at: float
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Work:
    """A claimed conversation with the heads of its queues."""

    conversation: Conversation
    inbox: InboxItem | None
    outbox: list[OutboxItem]


@dataclass(frozen=True, slots=True)
class InboxStats:
    pending: int
    oldest_pending_age: float
    dead: int
    outbox_pending: int


class HandoverState(enum.StrEnum):
    OPEN = "open"  # waiting for an agent
    TAKEN = "taken"  # an agent has it
    ENDED = "ended"


class HandoverOutcome(enum.StrEnum):
    RESOLVED = "resolved"  # an agent resolved it
    TIMEOUT = "timeout"  # no agent took it within agent_timeout_seconds
    USER_LEFT = "user_left"  # the user quit or restarted
    IDLE = "idle"  # nobody wrote for idle_timeout_seconds


@dataclass(frozen=True, slots=True)
class Handover:
    """A live agent's turn in a conversation; ``key`` is its public id (the desks'
    ``handover_id``), ``thread`` where its desk keeps it (a Slack thread: "<room>:<ts>")."""

    id: int
    key: str
    conversation_id: int
    bot: str
    desk: str
    state: HandoverState
    reason: str | None
    queue: str | None
    summary: str | None
    started_at: float
    taken_at: float | None
    taken_by: str | None
    first_reply_at: float | None
    ended_at: float | None
    outcome: HandoverOutcome | None
    thread: str | None

    @property
    def open(self) -> bool:
        return self.state is not HandoverState.ENDED


@dataclass(frozen=True, slots=True)
class Turn:
    """One line of a conversation's transcript, as a desk shows it."""

    role: str  # user | bot | agent
    text: str
    at: float

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "text": self.text, "at": self.at}


@dataclass(frozen=True, slots=True)
class HandoverOpened:
    key: str
    bot: str
    desk: str
    at: float
    reason: str | None = None
    queue: str | None = None
    summary: str | None = None


@dataclass(frozen=True, slots=True)
class HandoverTaken:
    """An agent took it (kept as the first taker's when taken again)."""

    key: str
    agent: str
    at: float


@dataclass(frozen=True, slots=True)
class AgentReplied:
    """An agent wrote to the user: the first reply's time is kept; taken if it was not."""

    key: str
    agent: str
    at: float


@dataclass(frozen=True, slots=True)
class HandoverClosed:
    key: str
    outcome: HandoverOutcome
    at: float


HandoverChange = HandoverOpened | HandoverTaken | AgentReplied | HandoverClosed


# --- what intake hands the store ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An inbound event to accept."""

    event_id: str
    conversation_key: str
    requester_id: str
    kind: InboundKind
    text: str | None = None
    address: Mapping[str, Any] | None = None  # where to answer
    context: Mapping[str, Any] | None = None  # context items for Parloa
    attachments: tuple[Attachment, ...] = ()  # what the user sent besides text
    traceparent: str | None = None  # the W3C trace context of its intake, when traced


@dataclass(frozen=True, slots=True)
class Claim:
    """Take the lease of up to ``limit`` idle conversations while accepting their events,
    for ``ttl`` seconds, as ``owner``."""

    owner: str
    ttl: float
    limit: int


@dataclass(frozen=True, slots=True)
class Accepted:
    """What intake did: (accepted, conversation id) per event, in order, and the work of
    each conversation whose lease it took, as a claim would have read it."""

    results: list[tuple[bool, int]]
    claimed: dict[int, Work]


# --- what a worker's step changes ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionOpened:
    """Parloa answered ``launch``: a new session (ended at once if the welcome ended it)."""

    session_id: str
    parloa_conversation_id: str | None
    at: float
    address: Mapping[str, Any] | None
    ended_by_bot: bool = False


@dataclass(frozen=True, slots=True)
class Answered:
    """Parloa answered a message in the open session."""

    at: float
    address: Mapping[str, Any] | None
    parloa_conversation_id: str | None = None  # None: unchanged
    ended_by_bot: bool = False


@dataclass(frozen=True, slots=True)
class Ended:
    """The session ended for ``reason``; ``at``: the user's last activity, when it was theirs."""

    reason: EndReason
    at: float | None = None


@dataclass(frozen=True, slots=True)
class HandedOver:
    """A live agent takes over: messages go to the desk until the handover ends (an Ended
    change)."""

    at: float
    address: Mapping[str, Any] | None


ConversationChange = SessionOpened | Answered | Ended | HandedOver


def apply_change(conv: Conversation, change: ConversationChange | None) -> Conversation:
    """The conversation as it is once ``change`` is committed."""
    match change:
        case None:
            return conv
        case SessionOpened():
            return dataclasses.replace(
                conv,
                state=ConversationState.ENDED if change.ended_by_bot else ConversationState.ACTIVE,
                session_id=change.session_id,
                end_reason=EndReason.BOT_ENDED if change.ended_by_bot else None,
                parloa_conversation_id=change.parloa_conversation_id,
                last_activity_at=change.at,
                address=change.address,
            )
        case Answered():
            updated = dataclasses.replace(conv, last_activity_at=change.at, address=change.address)
            if change.parloa_conversation_id is not None:
                updated = dataclasses.replace(
                    updated, parloa_conversation_id=change.parloa_conversation_id
                )
            if change.ended_by_bot:
                updated = dataclasses.replace(
                    updated, state=ConversationState.ENDED, end_reason=EndReason.BOT_ENDED
                )
            return updated
        case Ended():
            updated = dataclasses.replace(
                conv, state=ConversationState.ENDED, end_reason=change.reason
            )
            if change.at is not None:
                updated = dataclasses.replace(updated, last_activity_at=change.at)
            return updated
        case HandedOver():
            return dataclasses.replace(
                conv,
                state=ConversationState.HANDED_OVER,
                end_reason=None,
                last_activity_at=change.at,
                address=change.address,
            )


@dataclass(frozen=True, slots=True)
class Done:
    """The event was handled (answered, or nothing to answer)."""

    at: float
    attempts: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The event cannot be handled: kept for an operator (``parloa-bridge inbox retry``)."""

    reason: str
    at: float
    attempts: int


@dataclass(frozen=True, slots=True)
class RetryLater:
    """A transient failure: try again at ``next_attempt_at``."""

    attempts: int
    next_attempt_at: float
    error: str


InboxOutcome = Done | DeadLetter | RetryLater


@dataclass(frozen=True, slots=True)
class NewReply:
    """Response elements (wire form) to deliver to ``address``, answering inbox ``inbox_id``."""

    elements: list[Any]
    address: Mapping[str, Any] | None
    inbox_id: int | None = None
    #: another target than the conversation's channel (DESK_CHANNEL: the handover's desk)
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """The outcome of one piece of work on a conversation, committed atomically."""

    inbox_id: int | None = None
    outcome: InboxOutcome | None = None
    conversation: ConversationChange | None = None
    replies: tuple[NewReply, ...] = ()
    #: every Parloa call made for the inbox item so far (written with its outcome)
    calls: tuple[ParloaCall, ...] = ()
    handover: HandoverChange | None = None


# --- what a delivery did -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sent:
    at: float
    parts_done: int
    platform_message_id: str | None


@dataclass(frozen=True, slots=True)
class DeliveryRetry:
    """Try again at ``next_attempt_at``; the parts sent so far are recorded."""

    attempts: int
    next_attempt_at: float
    error: str
    parts_done: int
    platform_message_id: str | None


@dataclass(frozen=True, slots=True)
class DeliveryFailed:
    """Given up for good; ``parts_done`` None when nothing was tried."""

    reason: str
    at: float
    parts_done: int | None = None
    platform_message_id: str | None = None


DeliveryOutcome = Sent | DeliveryRetry | DeliveryFailed


@dataclass(frozen=True, slots=True)
class OutboxAck:
    """A delivery's outcome, recorded with the worker's next write (a commit or a finish)
    rather than in a transaction of its own."""

    outbox_id: int
    outcome: DeliveryOutcome
