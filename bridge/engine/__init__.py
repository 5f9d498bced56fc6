"""The conversation engine: from the inbox, through Parloa, to the outbox and the adapters.

One worker per conversation at a time (holding the conversation's lease in the database), many
conversations at once. A worker delivers the conversation's pending replies in order, then takes
its oldest pending inbound event, runs the session lifecycle for it, and commits the outcome in
one transaction. Nothing is done twice unless a process dies between a network call and the
commit that records it (the crash window named in the README).

The modules follow the path an event takes::

    intake     adapter ──► accept (stored, deduplicated; idle conversations leased at once)
    dispatch   worker slots, notices, scans of the database, housekeeping
    shared     what every part is given (store, settings, metrics, identity)
    worker     one conversation under its lease (heartbeat: the lease renewal)
    lifecycle  what to do with an event, and the step to commit: pure decisions
    parloa     the call, with the typing indicator and the bots' health
    breaker    per bot: when Parloa keeps failing, waiting conversations pause and resume
               together once a probe succeeds
    delivery   one reply through its adapter, and what the adapter's answer means
    media      attachments fetched, stored, signed and described before Parloa hears them
    handover   a live agent takes over (the desks: bridge/handover/): pure steps, and the
               worker's reads for them

:class:`Engine` is the facade the service uses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import uuid
from collections.abc import Mapping
from typing import Any

from bridge.channel import Adapter
from bridge.config import EngineConfig, HandoverConfig, MessagesConfig
from bridge.engine.board import Board
from bridge.engine.breaker import Breakers, policy_from
from bridge.engine.delivery import Deliverer
from bridge.engine.dispatch import Dispatcher
from bridge.engine.handover import Handing
from bridge.engine.intake import Acceptor, ChannelIntake
from bridge.engine.lifecycle import Uniform, backoff
from bridge.engine.media import Media
from bridge.engine.parloa import TYPING_DELAY, Bot, BotHealth, Parloa
from bridge.engine.shared import Shared
from bridge.engine.worker import Worker
from bridge.handover.desk import Desk
from bridge.metrics import Metrics
from bridge.store import Store
from bridge.tracing import Tracing

__all__ = ["TYPING_DELAY", "Bot", "BotHealth", "Engine", "backoff"]

log = logging.getLogger("bridge.engine")


class Engine:
    """The engine's parts wired together: start, stop, the intake of each channel."""

    def __init__(
        self,
        store: Store,
        *,
        bots: Mapping[str, Bot],
        channel_bots: Mapping[str, str],
        adapters: Mapping[str, Adapter],
        config: EngineConfig,
        messages: MessagesConfig,
        metrics: Metrics,
        instance_id: str | None = None,
        poll_interval: float = 1.0,
        housekeeping_interval: float = 30.0,
        typing_delay: float = TYPING_DELAY,
        uniform: Uniform = random.uniform,
        media: Media | None = None,
        tracing: Tracing | None = None,
        handover: Mapping[str, HandoverConfig] | None = None,
        desks: Mapping[str, Desk] | None = None,
    ) -> None:
        self.store = store
        self.bots = bots
        self.metrics = metrics
        self.health = BotHealth()
        for name in bots:  # 0 from the start: an alert can tell "fine" from "no data"
            metrics.bot_refused.labels(name).set(0)
        self.instance_id = instance_id or f"{uuid.uuid4().hex[:12]}"
        shared = Shared(
            store,
            config,
            messages,
            metrics,
            self.instance_id,
            uniform,
            tracing=tracing or Tracing(),
        )
        if media is not None:
            shared = dataclasses.replace(shared, max_media_bytes=media.settings.max_bytes)
        self.board = Board(config.max_concurrent_conversations)
        self.breakers = Breakers(policy_from(config), metrics, bots)
        self._bot_channels: dict[str, list[str]] = {}
        for channel, bot in channel_bots.items():
            self._bot_channels.setdefault(bot, []).append(channel)
        self.worker = Worker(
            shared,
            self.board,
            Deliverer(shared, adapters, desks),
            Parloa(adapters, messages, metrics, self.health, self.breakers, typing_delay),
            bots,
            channel_bots,
            media,
            Handing(store, handover or {}, messages, metrics),
        )
        self.dispatcher = Dispatcher(
            shared, self.board, self.worker, poll_interval, housekeeping_interval
        )
        self.acceptor = Acceptor(shared, self.board, self.dispatcher)

    def intake(self, channel: str) -> ChannelIntake:
        """The Intake to give ``channel``'s adapter."""
        return ChannelIntake(self.acceptor, channel)

    def notify(self, conversation_id: int) -> None:
        """``conversation_id`` may have work (e.g. a dead letter retried): look at it."""
        self.board.notify(conversation_id)

    def breaker_status(self) -> Mapping[str, Mapping[str, Any]]:
        """Per bot: its circuit breaker's state (closed, open, half-open), since when (Unix
        time) and the transient failures in a row."""
        return self.breakers.status()

    async def _release(self, bot: str, limit: int | None) -> int:
        """The breaker's release: ``bot``'s waiting events due now, their workers woken."""
        released = await self.store.release_waiting(self._bot_channels.get(bot, []), limit)
        for cid in released:
            self.board.notify(cid)
        return len(released)

    @property
    def busy(self) -> int:
        """Conversations with a worker in this process."""
        return len(self.board.workers)

    async def start(self) -> None:
        self.breakers.start(self._release)
        await self.dispatcher.start()

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop taking work, let the loops and the running workers end (within
        ``drain_timeout`` seconds in all, then cancelled), release the leases."""
        await self.breakers.stop()
        await self.dispatcher.stop(drain_timeout)
        with contextlib.suppress(Exception):
            released = await self.store.release_all(self.instance_id)
            if released:
                log.info("released %d conversation leases", released)

    async def run_housekeeping(self) -> None:
        """Idle timeouts, retention, gauges. Safe to run from several processes."""
        await self.dispatcher.run_housekeeping()

    async def refresh_gauges(self) -> None:
        await self.dispatcher.refresh_gauges()
