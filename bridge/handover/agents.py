"""Agents' acts into the conversation they are about: an act on a handover becomes an event
in the user's conversation inbox (deduplicated on the desk's event id), which the
conversation's worker then carries out in order (bridge/engine/handover.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bridge.channel import (
    MAX_EVENT_ID_LENGTH,
    AcceptResult,
    ChannelState,
    DeskAction,
    Inbound,
    Intake,
    IntakeRefused,
    IntakeUnavailable,
    inbound_problem,
)
from bridge.handover.desk import AgentCommand, HandoverEnded, HandoverUnknown
from bridge.store import Store, StoreError
from bridge.vocabulary import Conversation, Handover, InboundKind

T = TypeVar("T")

#: longest text an agent may send in one message
MAX_AGENT_TEXT = 8000

_KINDS = {
    DeskAction.MESSAGE: InboundKind.AGENT_MESSAGE,
    DeskAction.TAKE: InboundKind.AGENT_TAKE,
    DeskAction.RESOLVE: InboundKind.AGENT_RESOLVE,
}


def inbox_event_id(bot: str, event_id: str) -> str:
    """The inbox's event id of a desk's act: the desk's own id, within the bot's desk (a
    long one by its hash)."""
    plain = f"desk:{bot}:{event_id}"
    if len(plain) <= MAX_EVENT_ID_LENGTH:
        return plain
    return f"desk:{hashlib.sha256(plain.encode()).hexdigest()}"


def to_inbound(conv: Conversation, handover: Handover, command: AgentCommand) -> Inbound:
    """The act as an event of the handed-over user's conversation."""
    context: dict[str, str] = {"handover": handover.key}
    if command.agent_id:
        context["agentId"] = command.agent_id[:255]
    if command.agent_name:
        context["agentName"] = command.agent_name[:255]
    return Inbound(
        event_id=inbox_event_id(handover.bot, command.event_id),
        conversation_key=conv.conversation_key,
        user_id=conv.requester_id.removeprefix(f"{conv.channel}:"),
        kind=_KINDS[command.action],
        text=command.text if command.action is DeskAction.MESSAGE else "",
        context=context,
    )


class AgentDesks:
    """The :class:`~bridge.handover.desk.Agents` every desk is given."""

    def __init__(self, store: Store, intake: Callable[[str], Intake], state: ChannelState) -> None:
        self._store = store
        self._intake = intake
        self._state = state

    @property
    def state(self) -> ChannelState:
        return self._state

    async def act(self, bot: str, command: AgentCommand) -> AcceptResult:
        if not command.event_id:
            raise IntakeRefused("an act needs an event id")
        if command.action is DeskAction.MESSAGE:
            if not command.text.strip():
                raise IntakeRefused("the message is empty")
            if len(command.text) > MAX_AGENT_TEXT:
                raise IntakeRefused(f"the message is longer than {MAX_AGENT_TEXT} characters")
        handover = await self.handover(bot, command.handover)
        if handover is None:
            raise HandoverUnknown(f"no handover {command.handover!r} for bot {bot}")
        conv = await self.conversation(handover.conversation_id)
        if conv is None:
            raise HandoverUnknown(f"the conversation of handover {handover.key} is gone")
        event = to_inbound(conv, handover, command)
        if not handover.open:
            # A desk's retry of an act stored before the end (its answer was lost) is a
            # duplicate, not a refusal.
            stored = self._store.event_conversation(conv.channel, event.event_id)
            if await _read(stored) is not None:
                return AcceptResult.DUPLICATE
            raise HandoverEnded(f"handover {handover.key} has ended")
        problem = inbound_problem(conv.channel, event)
        if problem is not None:
            raise IntakeRefused(problem)
        return await self._intake(conv.channel).accept(event)

    async def handover(self, bot: str, key: str) -> Handover | None:
        found = await _read(self._store.handover(key))
        return found if found is not None and found.bot == bot else None

    async def by_thread(self, bot: str, thread: str) -> Handover | None:
        return await _read(self._store.handover_by_thread(bot, thread))

    async def set_thread(self, key: str, thread: str) -> None:
        await _read(self._store.set_handover_thread(key, thread))

    async def conversation(self, conversation_id: int) -> Conversation | None:
        return await _read(self._store.conversation_by_id(conversation_id))


async def _read(call: Awaitable[T]) -> T:
    """The store's errors as intake's: the desk answers "try again"."""
    try:
        return await call
    except StoreError as exc:
        raise IntakeUnavailable(str(exc)) from exc
