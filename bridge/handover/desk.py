"""What a desk is: where the agents of one bot work. The engine delivers each desk event
stored in the outbox (bridge/handover/events.py) to the bot's desk, in the conversation's
order, as it delivers replies to adapters; a desk hands agents' acts to :class:`Agents`.

Errors, one tree (a desk's delivery failures are the adapters' DeliveryError tree)::

    DeskRefused (bridge/channel.py)   the act cannot be taken: tell the agent why
    ├── HandoverUnknown               no such handover for this bot (HTTP 404)
    └── HandoverEnded                 it has ended (HTTP 409)

:func:`act_refusal` is the one mapping of what :meth:`Agents.act` raises to an HTTP answer,
for the desks that take acts over HTTP (the webhook desk, the console's routes).
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from bridge.channel import (
    AcceptResult,
    ChannelState,
    DeskAction,
    DeskRefused,
    IntakeRefused,
    IntakeUnavailable,
)
from bridge.config import HandoverConfig
from bridge.vocabulary import Conversation, Handover


class HandoverUnknown(DeskRefused):
    """No handover with that id for this bot."""


class HandoverEnded(DeskRefused):
    """The handover has ended; nothing more reaches the user through it."""


#: What :meth:`Agents.act` raises for an act it did not take (for ``except``).
ACT_ERRORS = (DeskRefused, IntakeRefused, IntakeUnavailable)
#: The answer to a sender of an act that was not taken and should be retried (503).
ACT_UNAVAILABLE = "temporarily unavailable, retry later"


def act_refusal(
    exc: DeskRefused | IntakeRefused | IntakeUnavailable, *, detail: bool = False
) -> tuple[int, str]:
    """The HTTP status and one line for the sender of an act that ``exc`` refused. A 503
    wants a ``Retry-After``. ``detail``: say why the intake refused it (for the operator's
    console; an outside sender is not shown the store's reasons)."""
    if isinstance(exc, HandoverUnknown):
        return 404, "no such handover"
    if isinstance(exc, HandoverEnded):
        return 409, "the handover has ended"
    if isinstance(exc, DeskRefused):
        return 409, " ".join(str(exc).split())[:200] or "the act was refused"
    if isinstance(exc, IntakeRefused):
        reason = " ".join(str(exc).split())[:200] if detail else ""
        return 400, reason or "the act cannot be stored"
    return 503, ACT_UNAVAILABLE


@dataclass(frozen=True, slots=True)
class AgentCommand:
    """An agent's act on the handover ``handover`` (its key). ``event_id``: the desk's own
    id of the act, the deduplication key (a retried act is stored once)."""

    handover: str
    event_id: str
    action: DeskAction
    text: str = ""
    agent_id: str = ""
    agent_name: str | None = None


class Agents(Protocol):
    """What a desk is given on start (bridge/handover/agents.py)."""

    @property
    def state(self) -> ChannelState:
        """Persisted state shared by every desk and replica (announced puts wake watchers
        in every replica: the console's live view)."""
        ...

    async def act(self, bot: str, command: AgentCommand) -> AcceptResult:
        """Store the act in the conversation's inbox (deduplicated on its event id); returns
        once stored. Raises HandoverUnknown, HandoverEnded, IntakeUnavailable (not stored:
        try again), IntakeRefused (never storable)."""
        ...

    async def handover(self, bot: str, key: str) -> Handover | None:
        """``bot``'s handover by its key. Raises IntakeUnavailable."""
        ...

    async def by_thread(self, bot: str, thread: str) -> Handover | None:
        """``bot``'s handover kept in the desk thread ``thread``. Raises IntakeUnavailable."""
        ...

    async def set_thread(self, key: str, thread: str) -> None:
        """Remember where the desk keeps the handover (a Slack thread)."""
        ...

    async def conversation(self, conversation_id: int) -> Conversation | None: ...


@dataclass(frozen=True, slots=True)
class DeskDelivery:
    """One desk event to deliver: ``event`` is its wire form (events.py), ``handover`` the
    handover as stored when the delivery began."""

    outbox_id: int
    handover: Handover
    event: Mapping[str, Any]
    progress: Callable[[int, str | None], Awaitable[None]]


class Desk(abc.ABC):
    """One bot's desk. ``deliver`` raises the adapters' DeliveryError tree (retryable,
    rejected); an event type the desk has no use for is delivered by doing nothing."""

    kind: str = ""

    def __init__(self, bot: str, config: HandoverConfig) -> None:
        self.bot = bot
        self.config = config

    def routes(self) -> Sequence[web.RouteDef]:
        """HTTP routes on the bridge's main listener (served for the process's life)."""
        return ()

    def operator_routes(self) -> Sequence[web.RouteDef]:
        """Routes for the operator listener, behind the admin token (the console's)."""
        return ()

    @abc.abstractmethod
    async def start(self, agents: Agents) -> None:
        """Begin taking agents' acts; called after the adapters started."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop; idempotent."""

    @abc.abstractmethod
    async def deliver(self, delivery: DeskDelivery) -> None:
        """Deliver one desk event; raises a DeliveryError."""

    def status(self) -> Mapping[str, Any]:
        return {}


__all__ = [
    "ACT_ERRORS",
    "ACT_UNAVAILABLE",
    "AgentCommand",
    "Agents",
    "Desk",
    "DeskAction",
    "DeskDelivery",
    "DeskRefused",
    "HandoverEnded",
    "HandoverUnknown",
    "act_refusal",
]
