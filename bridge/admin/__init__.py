"""The operator's admin API and console (issue 26): what their routes need of the running
bridge. The routes are in api.py (the JSON API), outreach.py (conversations the bot starts,
broadcasts) and console.py (the page); auth.py guards them with the bearer token."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from bridge.channel import Adapter, Intake
from bridge.handover.desk import Agents
from bridge.store import Store


@dataclass(frozen=True)
class AdminDeps:
    """The parts of a running bridge the admin routes use."""

    store: Store
    #: the bearer token; None: the admin API is disabled (every route answers 404)
    token: str | None
    #: channel name -> the name of the bot that answers it
    channel_bots: Mapping[str, str]
    #: channel name -> its adapter
    adapters: Mapping[str, Adapter]
    #: the engine's wake-up for a conversation that has work again (a dead letter retried)
    notify: Callable[[int], None]
    clock: Callable[[], float] = field(default=time.time)
    #: the Intake of a channel (the engine's ``Engine.intake``), for conversations the bot starts
    intake: Callable[[str], Intake] | None = None
    #: agents' acts on handovers (bridge/handover/agents.py); None without any desk
    agents: Agents | None = None
    #: the bots whose handover desk is the console
    console_bots: frozenset[str] = frozenset()

    @property
    def channels(self) -> frozenset[str]:
        """Every channel the bridge knows of."""
        return frozenset(self.channel_bots) | frozenset(self.adapters)
