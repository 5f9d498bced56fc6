"""The store as the engine, the CLI and the service use it: one facade over the parts, each
named for what it stores (intake, leases, commits, housekeeping, dead letters, channel
state), and the dialect's hot path chosen once (hotpath.py).

Transactions are short and never span a network call. Every failure is one of the store's
errors (bridge/store/errors.py)."""

from __future__ import annotations

import time

from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.store.admin_views import AdminViews
from bridge.store.channel_state import ChannelStates
from bridge.store.commits import Commits
from bridge.store.core import Clock, StoreCore
from bridge.store.dead_letters import DeadLetters
from bridge.store.erase import Erasure
from bridge.store.handovers import Handovers
from bridge.store.hotpath import hot_path_for
from bridge.store.housekeeping import Housekeeping
from bridge.store.intake import Intake
from bridge.store.leases import Leases
from bridge.store.media import MediaFiles
from bridge.store.retries import Retries


class Store(
    Intake,
    Leases,
    Commits,
    Housekeeping,
    DeadLetters,
    ChannelStates,
    Erasure,
    Retries,
    MediaFiles,
    AdminViews,
    Handovers,
):
    """Every query the bridge makes, by the part that makes it (see each part for what a
    call does): intake (intake.py), the conversations' leases (leases.py), the worker's
    writes (commits.py), housekeeping (housekeeping.py), dead letters (dead_letters.py),
    channel state and named leases (channel_state.py), erasure of a user (erase.py), waiting
    events released together (retries.py), media files (media.py), the admin API's reads
    (admin_views.py), human handovers (handovers.py). The parts share one core and one hot
    path; a call is the part's method itself, so the facade adds no call of its own."""

    def __init__(self, engine: AsyncEngine, clock: Clock = time.time) -> None:
        self.engine = engine
        core = StoreCore(engine, clock)
        super().__init__(core, hot_path_for(core))

    async def close(self) -> None:
        """Release the store's own connections (SQLite's; on PostgreSQL those it keeps for
        the hot statements, which later calls would take anew); the engine is the
        caller's."""
        await self._path.close()
        await self._core.tx.close()
