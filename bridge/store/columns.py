"""The vocabulary's changes as column values, and rows as the vocabulary's records: the one
place the store turns typed values into SQL values and back. Pure functions."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from bridge.media.attachments import Attachment
from bridge.vocabulary import (
    MAX_CALLS_KEPT,
    Answered,
    Conversation,
    ConversationChange,
    ConversationState,
    DeadLetter,
    DeliveryFailed,
    DeliveryOutcome,
    DeliveryRetry,
    Done,
    Ended,
    EndReason,
    HandedOver,
    Handover,
    HandoverOutcome,
    HandoverState,
    InboundKind,
    InboxItem,
    InboxOutcome,
    InboxStatus,
    OutboxItem,
    OutboxStatus,
    ParloaCall,
    RetryLater,
    Sent,
    SessionOpened,
    Step,
)

R = TypeVar("R")

# Longest error texts kept in last_error.
INBOX_ERROR_CHARS = 2000
OUTBOX_ERROR_CHARS = 1000


def conversation_columns(change: ConversationChange | None) -> dict[str, Any]:
    """The conversations columns a change writes (its shape picks the statement: keep each
    variant's set of keys stable)."""
    match change:
        case None:
            return {}
        case SessionOpened():
            return {
                "state": ConversationState.ENDED
                if change.ended_by_bot
                else ConversationState.ACTIVE,
                "session_id": change.session_id,
                "end_reason": EndReason.BOT_ENDED if change.ended_by_bot else None,
                "parloa_conversation_id": change.parloa_conversation_id,
                "last_activity_at": change.at,
                "address": dict(change.address) if change.address else None,
            }
        case Answered():
            values: dict[str, Any] = {
                "last_activity_at": change.at,
                "address": dict(change.address) if change.address else None,
            }
            if change.parloa_conversation_id:
                values["parloa_conversation_id"] = change.parloa_conversation_id
            if change.ended_by_bot:
                values.update(state=ConversationState.ENDED, end_reason=EndReason.BOT_ENDED)
            return values
        case Ended():
            values = {"state": ConversationState.ENDED, "end_reason": change.reason}
            if change.at is not None:
                values["last_activity_at"] = change.at
            return values
        case HandedOver():
            return {
                "state": ConversationState.HANDED_OVER,
                "end_reason": None,
                "last_activity_at": change.at,
                "address": dict(change.address) if change.address else None,
            }


def inbox_columns(outcome: InboxOutcome | None) -> dict[str, Any]:
    match outcome:
        case None:
            return {}
        case Done():
            return {
                "status": InboxStatus.DONE,
                "finished_at": outcome.at,
                "attempts": outcome.attempts,
                "last_error": None,
            }
        case DeadLetter():
            return {
                "status": InboxStatus.DEAD,
                "last_error": outcome.reason[:INBOX_ERROR_CHARS],
                "finished_at": outcome.at,
                "attempts": outcome.attempts,
            }
        case RetryLater():
            return {
                "attempts": outcome.attempts,
                "next_attempt_at": outcome.next_attempt_at,
                "last_error": outcome.error[:INBOX_ERROR_CHARS],
            }


def step_inbox_columns(step: Step) -> dict[str, Any]:
    """What a step writes to its inbox item: the outcome's columns, and the Parloa calls
    made for it (the latest MAX_CALLS_KEPT) when there are any."""
    values = inbox_columns(step.outcome)
    if values and step.calls:
        values["parloa_calls"] = [c.to_json() for c in step.calls[-MAX_CALLS_KEPT:]]
    return values


def outbox_columns(outcome: DeliveryOutcome) -> dict[str, Any]:
    match outcome:
        case Sent():
            return {
                "status": OutboxStatus.SENT,
                "finished_at": outcome.at,
                "parts_done": outcome.parts_done,
                "platform_message_id": outcome.platform_message_id,
            }
        case DeliveryRetry():
            return {
                "attempts": outcome.attempts,
                "next_attempt_at": outcome.next_attempt_at,
                "last_error": outcome.error[:OUTBOX_ERROR_CHARS],
                "parts_done": outcome.parts_done,
                "platform_message_id": outcome.platform_message_id,
            }
        case DeliveryFailed():
            values: dict[str, Any] = {
                "status": OutboxStatus.FAILED,
                "finished_at": outcome.at,
                "last_error": outcome.reason[:OUTBOX_ERROR_CHARS],
            }
            if outcome.parts_done is not None:
                values.update(
                    parts_done=outcome.parts_done,
                    platform_message_id=outcome.platform_message_id,
                )
            return values


def _mapping(row: Any) -> Mapping[str, Any]:
    return getattr(row, "_mapping", row)  # type: ignore[no-any-return]  # a Row or a mapping


def _reader(record: Callable[..., R], **typed: Callable[[Any], Any]) -> Callable[[Any], R]:
    """How ``record`` (a dataclass) is read from a row: each field from the column of its
    name, those in ``typed`` converted (a stored string to its enum). Positional and
    precomputed: records are read on the hot path."""
    names = [field.name for field in dataclasses.fields(record)]  # type: ignore[arg-type]
    columns = operator.itemgetter(*names)
    conversions = [(names.index(name), convert) for name, convert in typed.items()]

    def read(row: Any) -> R:
        values = list(columns(_mapping(row)))
        for index, convert in conversions:
            values[index] = convert(values[index])
        return record(*values)

    return read


def _unless_none(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else convert(value)


conversation_record = _reader(
    Conversation, state=ConversationState, end_reason=_unless_none(EndReason)
)


def _attachments(value: Any) -> tuple[Attachment, ...]:
    return tuple(Attachment.from_json(a) for a in value) if value else ()


def _calls(value: Any) -> tuple[ParloaCall, ...]:
    return tuple(ParloaCall.from_json(c) for c in value) if value else ()


inbox_record = _reader(
    InboxItem,
    kind=InboundKind,
    status=InboxStatus,
    attachments=_attachments,
    parloa_calls=_calls,
)
outbox_record = _reader(OutboxItem, status=OutboxStatus)
handover_record = _reader(Handover, state=HandoverState, outcome=_unless_none(HandoverOutcome))
