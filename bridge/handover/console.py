"""The "console" desk: the operator console's agent inbox (bridge/admin/handovers.py).

The console reads handovers and transcripts from the store itself, so delivering a desk event
is only telling every open console that something changed: an announced put of
:data:`CHANGED_KEY` in the agents' shared state, which wakes the watchers of every replica
(each console's event stream, bridge/admin/handovers.py). Agents act through the admin API,
which hands their acts to :class:`~bridge.handover.desk.Agents`."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from bridge.channel import DeliveryRetryable
from bridge.config import HandoverConfig
from bridge.handover.desk import Agents, Desk, DeskDelivery

log = logging.getLogger("bridge.handover.console")

#: the agents' state entry whose announced puts wake the consoles
CHANGED_KEY = "console:changed"


def changed_value(bot: str, delivery: DeskDelivery, at: float) -> str:
    """What the console learns of a change: which handover, what happened, which event."""
    return json.dumps(
        {
            "bot": bot,
            "handover": delivery.handover.key,
            "type": str(delivery.event.get("type", "")),
            "outbox_id": delivery.outbox_id,
            "at": at,
        },
        separators=(",", ":"),
    )


class ConsoleDesk(Desk):
    """One bot's console desk: every desk event wakes the consoles."""

    kind = "console"

    def __init__(
        self, bot: str, config: HandoverConfig, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(bot, config)
        self._agents: Agents | None = None
        self._clock = clock
        self._delivered = 0

    async def start(self, agents: Agents) -> None:
        self._agents = agents

    async def stop(self) -> None:
        self._agents = None

    async def deliver(self, delivery: DeskDelivery) -> None:
        agents = self._agents
        if agents is None:  # stopping (or not started): the engine tries again later
            raise DeliveryRetryable("the console desk is not running")
        value = changed_value(self.bot, delivery, self._clock())
        try:
            await agents.state.put(CHANGED_KEY, value, announce=True)
        except Exception as exc:  # the store's errors: the consoles learn it on a retry
            raise DeliveryRetryable(f"the consoles could not be told: {exc}") from exc
        self._delivered += 1

    def status(self) -> Mapping[str, Any]:
        return {"running": self._agents is not None, "events": self._delivered}
