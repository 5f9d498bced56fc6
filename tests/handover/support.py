"""A recording desk for engine-level handover tests, and the engine harness set up with it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from bridge.channel import AcceptResult, Adapter, DeliveryError, DeskAction, IntakeRefused
from bridge.config import EngineConfig, HandoverConfig, MessagesConfig
from bridge.devtools.simulator import RunningSimulator
from bridge.engine.media import Media
from bridge.handover.agents import MAX_AGENT_TEXT, AgentDesks
from bridge.handover.desk import (
    AgentCommand,
    Agents,
    Desk,
    DeskDelivery,
    HandoverEnded,
    HandoverUnknown,
)
from bridge.store import Store
from bridge.vocabulary import (
    DESK_CHANNEL,
    Conversation,
    Handover,
    HandoverOutcome,
    HandoverState,
)
from tests.support.engine import FAST, FakeAdapter, Harness, harness
from tests.support.intake import MemoryState

T = TypeVar("T")


class RecordingDesk(Desk):
    """Records the desk events delivered to it, in order; failures can be scripted."""

    kind = "console"

    def __init__(self, bot: str = "bot", config: HandoverConfig | None = None) -> None:
        super().__init__(bot, config or HandoverConfig(desk="console"))
        self.events: list[dict[str, Any]] = []
        self.failures: list[DeliveryError] = []
        self.agents: Agents | None = None
        self._changed = asyncio.Condition()

    async def start(self, agents: Agents) -> None:
        self.agents = agents

    async def stop(self) -> None:
        self.agents = None

    async def deliver(self, delivery: DeskDelivery) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.events.append(dict(delivery.event))
        async with self._changed:
            self._changed.notify_all()

    def types(self) -> list[str]:
        return [str(e["type"]) for e in self.events]

    def last(self, kind: str) -> dict[str, Any]:
        return next(e for e in reversed(self.events) if e["type"] == kind)

    async def wait_for(self, predicate: Callable[[], T], within: float = 10.0) -> T:
        try:
            async with asyncio.timeout(within), self._changed:
                return await self._changed.wait_for(predicate)
        except TimeoutError:
            raise AssertionError(f"condition not met within {within}s; {self.types()}") from None


@dataclass
class HandoverHarness:
    h: Harness
    desk: RecordingDesk
    agents: AgentDesks
    counter: list[int] = field(default_factory=lambda: [0])

    async def act(
        self, key: str, action: DeskAction, text: str = "", event_id: str = "", name: str = "Anna"
    ) -> AcceptResult:
        self.counter[0] += 1
        command = AgentCommand(
            key, event_id or f"act-{self.counter[0]}", action, text, "agent-1", name
        )
        return await self.agents.act("bot", command)

    async def started_key(self) -> str:
        await self.desk.wait_for(lambda: "handover.started" in self.desk.types())
        return str(self.desk.last("handover.started")["handover_id"])


@asynccontextmanager
async def handover_harness(
    store: Store,
    simulator: RunningSimulator,
    settings: HandoverConfig | None = None,
    config: EngineConfig = FAST,
    messages: MessagesConfig | None = None,
    adapter: FakeAdapter | None = None,
    media: Callable[[Store, Mapping[str, Adapter]], Media] | None = None,
) -> AsyncIterator[HandoverHarness]:
    settings = settings or HandoverConfig(desk="console")
    desk = RecordingDesk("bot", settings)
    async with harness(
        store,
        simulator,
        config,
        messages=messages,
        adapter=adapter,
        media=media,
        handover={"bot": settings},
        desks={"bot": desk},
    ) as h:
        agents = AgentDesks(store, h.engine.intake, h.engine.intake(DESK_CHANNEL).state)
        await desk.start(agents)
        yield HandoverHarness(h, desk, agents)


# --- the desks' tests: Agents in memory ------------------------------------------------------

#: When a test's handovers started (a fixed clock reading).
STARTED_AT = 1_700_000_000.0


def handover_record(key: str = "h-1", **fields: Any) -> Handover:
    """A Handover as the store keeps it: open, for bot "demo" on the console; ``fields``
    override."""
    base: dict[str, Any] = {
        "id": 1,
        "key": key,
        "conversation_id": 1,
        "bot": "demo",
        "desk": "console",
        "state": HandoverState.OPEN,
        "reason": "billing",
        "queue": None,
        "summary": None,
        "started_at": STARTED_AT,
        "taken_at": None,
        "taken_by": None,
        "first_reply_at": None,
        "ended_at": None,
        "outcome": None,
        "thread": None,
    }
    return Handover(**{**base, **fields})


class MemoryAgents:
    """The Agents protocol in memory, behaving as AgentDesks does: handovers by key (another
    bot's is unknown); a text longer than MAX_AGENT_TEXT refused; acts deduplicated on (bot,
    event id), a stored act's retry a duplicate even after the end; an act on an ended
    handover refused; a resolve ends it. ``fail``: every act raises it while set.
    ``defaults``: the fields :meth:`open` gives a handover."""

    def __init__(
        self,
        handovers: Iterable[Handover] = (),
        state: MemoryState | None = None,
        **defaults: Any,
    ) -> None:
        self._state = state or MemoryState()
        self.handovers: dict[str, Handover] = {h.key: h for h in handovers}
        self.defaults = defaults
        self.acts: list[tuple[str, AgentCommand]] = []  # stored acts, in order
        self.calls = 0
        self.fail: Exception | None = None

    @property
    def state(self) -> MemoryState:
        return self._state

    @property
    def commands(self) -> list[AgentCommand]:
        return [command for _, command in self.acts]

    def open(self, key: str = "h-1", bot: str = "demo", **fields: Any) -> Handover:
        """Keep a handover (replacing one with that key); returns it."""
        found = handover_record(
            key, **{"id": len(self.handovers) + 1, "bot": bot, **self.defaults, **fields}
        )
        self.handovers[key] = found
        return found

    async def act(self, bot: str, command: AgentCommand) -> AcceptResult:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        found = self.handovers.get(command.handover)
        if found is None or found.bot != bot:
            raise HandoverUnknown("no such handover")
        if len(command.text) > MAX_AGENT_TEXT:
            raise IntakeRefused(f"the message is longer than {MAX_AGENT_TEXT} characters")
        if (bot, command.event_id) in {(b, c.event_id) for b, c in self.acts}:
            return AcceptResult.DUPLICATE
        if not found.open:
            raise HandoverEnded("the handover has ended")
        self.acts.append((bot, command))
        if command.action is DeskAction.RESOLVE:
            self.handovers[found.key] = replace(
                found, state=HandoverState.ENDED, outcome=HandoverOutcome.RESOLVED
            )
        return AcceptResult.ACCEPTED

    async def handover(self, bot: str, key: str) -> Handover | None:
        found = self.handovers.get(key)
        return found if found is not None and found.bot == bot else None

    async def by_thread(self, bot: str, thread: str) -> Handover | None:
        return next(
            (h for h in self.handovers.values() if h.bot == bot and h.thread == thread), None
        )

    async def set_thread(self, key: str, thread: str) -> None:
        self.handovers[key] = replace(self.handovers[key], thread=thread)

    async def conversation(self, conversation_id: int) -> Conversation | None:
        return None
