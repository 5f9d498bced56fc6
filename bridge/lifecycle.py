"""Parts started in order and stopped in reverse, every stop guarded.

A part that fails to stop is logged with its name and the others still stop: one broken close
must not leave the database, the HTTP server or the Parloa clients open (aiohttp's
``CleanupContext``, mautrix's shutdown actions). The service and the CLI's commands hold
their parts in one :class:`Lifecycle`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Action = Callable[[], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class StopFailure:
    """A part whose stop raised."""

    part: str
    error: Exception


class Lifecycle:
    """The stops of the parts started so far, last started first. Also an async context
    manager that stops everything on exit."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._stops: list[tuple[str, Action]] = []

    @property
    def parts(self) -> list[str]:
        """The parts to stop, in the order they were started."""
        return [part for part, _ in self._stops]

    def on_stop(self, part: str, stop: Action) -> None:
        """Stop ``part`` with ``stop`` before every part registered earlier."""
        self._stops.append((part, stop))

    async def start(self, part: str, start: Action, stop: Action) -> None:
        """Start ``part``, then stop it with the others. A part whose start raises is not
        stopped; the parts started before it are, by :meth:`stop`."""
        await start()
        self.on_stop(part, stop)

    async def stop(self) -> list[StopFailure]:
        """Stop every part, last started first. A stop that raises is logged with the part's
        name and the rest still stop; a cancellation is passed on after the rest stopped.
        Returns the failures. Idempotent: what was stopped is forgotten."""
        failures: list[StopFailure] = []
        cancelled: asyncio.CancelledError | None = None
        while self._stops:
            part, stop = self._stops.pop()
            self._log.debug("stopping %s", part)
            try:
                await stop()
            except asyncio.CancelledError as exc:
                cancelled = cancelled or exc
            except Exception as exc:
                self._log.exception("%s did not stop cleanly", part)
                failures.append(StopFailure(part, exc))
        if cancelled is not None:
            raise cancelled
        return failures

    async def __aenter__(self) -> Lifecycle:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
