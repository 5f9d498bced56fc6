"""Durable polling intake: one replica holds the ``poller`` lease and calls getUpdates; an
update's offset is passed on (which confirms it to Telegram) only after the update was
committed to the inbox. Failures are retried by kind (:class:`bridge.channelkit.Retrier`):
Telegram's flood control is waited out, everything else backs off — and polling never ends
on its own, since a dead poller would silently stop the bot while /readyz still said
"leader"."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from telegram.error import Conflict, InvalidToken, RetryAfter, TelegramError

from adapters.telegram.bot import retry_seconds
from adapters.telegram.options import TelegramOptions
from bridge.channel import Intake, IntakeUnavailable
from bridge.channelkit import TRANSIENT, Backoff, Retrier, Verdict

log = logging.getLogger("adapters.telegram")

LEASE_RENEW_SECONDS = 1.0
#: Waits between failed polling turns: 1 s doubling up to 60 s, with jitter.
POLL_BACKOFF = Backoff(initial=1.0, maximum=60.0)

#: Commits one getUpdates batch and the offset after it; returns the new offset.
StoreUpdates = Callable[[Intake, Sequence[Any], int | None], Awaitable[int | None]]


class PollingBot(Protocol):
    """What polling needs of the bot (:class:`adapters.telegram.bot.BridgeBot`)."""

    async def get_raw_updates(
        self, offset: int | None, poll_seconds: int, read_timeout: float
    ) -> list[Any]: ...

    async def delete_webhook(self, drop_pending_updates: bool | None = None) -> bool: ...


def poll_verdict(exc: Exception) -> Verdict:
    """How a failed polling turn is retried: flood control is waited out as Telegram says,
    anything else (a conflict, a refused token, the network, the database, a bug) backs off
    and tries again — nothing ends polling."""
    if isinstance(exc, RetryAfter):
        return Verdict.rate_limited(retry_seconds(exc))
    return TRANSIENT


class Poller:
    """The polling loop of one bot; :attr:`role` is ``standby`` or ``leader``. Run as a
    task, ended by cancelling it."""

    def __init__(
        self,
        channel: str,
        bot: PollingBot,
        options: TelegramOptions,
        store: StoreUpdates,
        retrier: Retrier | None = None,
    ) -> None:
        self._channel = channel
        self._bot = bot
        self._options = options
        self._store = store
        self._retrier = retrier or Retrier(POLL_BACKOFF)
        # The lease outlives one long poll by 5 s, so a renewal up to a second old still
        # covers the next poll.
        self.lease_ttl = max(options.leader_lease_seconds, options.poll_timeout_seconds + 5)
        self.role = "standby"
        self._offset: int | None = None
        self._renewed = -LEASE_RENEW_SECONDS

    async def run(self, intake: Intake) -> None:
        """Leader election, then getUpdates → commit → confirm, until cancelled."""
        while True:
            await self._retrier.run(
                lambda: self._turn(intake), poll_verdict, on_failure=self._failed
            )

    async def _turn(self, intake: Intake) -> None:
        if not await self._lead(intake):
            await asyncio.sleep(min(5.0, self.lease_ttl / 4))
            return
        updates = await self._bot.get_raw_updates(
            self._offset,
            self._options.poll_timeout_seconds,
            self._options.poll_timeout_seconds + self._options.request_timeout_seconds,
        )
        # Telegram answered: a failure to store this batch waits the shortest time.
        self._retrier.reset()
        # On IntakeUnavailable the offset stays: Telegram keeps the updates, we ask again.
        self._offset = await self._store(intake, updates, self._offset)

    async def _lead(self, intake: Intake) -> bool:
        """Take or renew the poller lease; on becoming leader, prepare to poll."""
        leader = self.role == "leader"
        # Renewed at most once a second: under load getUpdates returns at once and this loop
        # turns many times a second.
        if not leader or time.monotonic() - self._renewed >= LEASE_RENEW_SECONDS:
            try:
                leader = await intake.state.acquire_lease(
                    "poller", intake.instance_id, self.lease_ttl
                )
                self._renewed = time.monotonic()
            except Exception as exc:
                log.warning(
                    "telegram channel %s: cannot take the poller lease: %s", self._channel, exc
                )
                leader = False
        if not leader:
            if self.role == "leader":
                log.warning("telegram channel %s: lost the poller lease", self._channel)
            self.role = "standby"
            self._offset = None
            return False
        if self.role != "leader":
            log.info("telegram channel %s: this replica polls", self._channel)
            with contextlib.suppress(TelegramError):
                # getUpdates does not work while a webhook is set
                await self._bot.delete_webhook(
                    drop_pending_updates=self._options.drop_pending_updates
                )
            stored = await intake.state.get("offset")
            self._offset = int(stored) if stored else None
            self.role = "leader"
        return True

    def _failed(self, exc: Exception, _verdict: Verdict) -> None:
        """Log a failed turn in this channel's words; after an unforeseen error, start over
        from the lease and the stored offset."""
        name = self._channel
        if isinstance(exc, RetryAfter):
            log.debug("telegram channel %s: getUpdates: %s", name, exc)
        elif isinstance(exc, Conflict):
            log.warning(
                "telegram channel %s: %s (another poller or a webhook is active)",
                name,
                exc.message,
            )
        elif isinstance(exc, InvalidToken):
            log.error("telegram channel %s: Telegram refused the bot token", name)
        elif isinstance(exc, TelegramError):  # NetworkError and TimedOut included
            log.warning("telegram channel %s: getUpdates failed: %s", name, exc)
        elif isinstance(exc, IntakeUnavailable):
            log.warning("telegram channel %s: cannot store updates: %s", name, exc)
        else:
            # A database blip, a bug: polling must go on, from a clean slate.
            log.error("telegram channel %s: polling failed; retrying", name, exc_info=exc)
            self.role = "standby"
            self._offset = None
