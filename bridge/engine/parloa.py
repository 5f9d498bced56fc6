"""The call to Parloa: the typing indicator while it thinks, its metrics, which bots it refuses,
each call's outcome told to the bot's circuit breaker (breaker.py), and its errors sorted into
permanent (a dead letter) and transient (retried)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from bridge.channel import Adapter
from bridge.config import MessagesConfig
from bridge.engine.breaker import Breakers, is_outage
from bridge.metrics import Metrics
from bridge.textchat.client import TextchatClient, TextchatResult
from bridge.textchat.context import build_context
from bridge.textchat.errors import SessionNotFound, TextchatError, Unauthorized
from bridge.textchat.models import Event, LaunchEvent, QuitEvent
from bridge.vocabulary import ParloaCall

log = logging.getLogger("bridge.engine")

TYPING_REFRESH = 4.0  # Telegram's typing indicator lasts about 5 s
# An answer quicker than this needs no indicator: it would flash for an instant and cost a
# platform API call (and a share of the chat's send budget) per message (docs/benchmarks.md,
# "Typing indicator delay").
TYPING_DELAY = 0.5

#: ``call(event, session)``: one Parloa request for the event being handled
Call = Callable[[Event, str], Awaitable[TextchatResult]]


@dataclass(frozen=True, slots=True)
class Bot:
    name: str
    client: TextchatClient
    context: Mapping[str, Any]


class BotHealth:
    """Which bots Parloa is refusing (401, unknown release): shown on /readyz."""

    def __init__(self) -> None:
        self.refused: dict[str, str] = {}

    def ok(self, bot: str) -> bool:
        """Parloa answered this bot; True when it had been refusing it until now."""
        return self.refused.pop(bot, None) is not None

    def refuse(self, bot: str, reason: str) -> None:
        self.refused[bot] = reason


class Permanent(Exception):
    """This event cannot be processed; dead-letter it and tell the user ``notice``."""

    def __init__(self, reason: str, notice: str, refused_bot: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.notice = notice
        self.refused_bot = refused_bot


class Typing(Protocol):
    """Until when the typing indicator shown last is still visible (monotonic): back-to-back
    calls (a launch, then the message) share one indicator instead of sending two."""

    typing_until: float


@dataclass(slots=True)
class Parloa:
    """Calls Parloa for the worker, showing the typing indicator while it thinks."""

    adapters: Mapping[str, Adapter]
    messages: MessagesConfig
    metrics: Metrics
    health: BotHealth
    breakers: Breakers
    typing_delay: float = TYPING_DELAY

    def caller(
        self,
        typing: Typing,
        bot: Bot,
        channel: str,
        requester: str,
        address: Mapping[str, Any] | None,
        context: Mapping[str, Any] | None,
        calls: list[ParloaCall] | None = None,
    ) -> Call:
        """Calls for one event of a conversation: Parloa's refusals raise :class:`Permanent`,
        a 404 on a message SessionNotFound (the session expired), the rest TextchatError.
        Each call made is appended to ``calls`` (the event's timeline)."""

        async def call(event: Event, session: str) -> TextchatResult:
            try:
                return await self._send(
                    typing, bot, channel, address, event, requester, session, context, calls
                )
            except Unauthorized as exc:
                raise Permanent(
                    f"Parloa refused the API token ({exc.status}): {exc}",
                    self.messages.unavailable,
                    refused_bot=True,
                ) from exc
            except SessionNotFound as exc:
                if isinstance(event, LaunchEvent):
                    raise Permanent(
                        f"Parloa does not know the release (404 on launch): {exc}",
                        self.messages.unavailable,
                        refused_bot=True,
                    ) from exc
                raise
            except TextchatError as exc:
                if not exc.retryable:
                    raise Permanent(f"{type(exc).__name__}: {exc}", self.messages.rejected) from exc
                raise

        return call

    def refused(self, bot: Bot, reason: str) -> None:
        """Parloa refuses ``bot`` (its token or release): /readyz and the gauge say so."""
        self.health.refuse(bot.name, reason)
        self.metrics.bot_refused.labels(bot.name).set(1)

    async def _send(
        self,
        typing: Typing,
        bot: Bot,
        channel: str,
        address: Mapping[str, Any] | None,
        event: Event,
        requester: str,
        session: str,
        context: Mapping[str, Any] | None,
        calls: list[ParloaCall] | None = None,
    ) -> TextchatResult:
        items = build_context(bot.context, context or {})
        adapter = self.adapters.get(channel)
        started = time.monotonic()
        status = "error"
        answer: TextchatResult | TextchatError | None = None
        try:
            async with self._typing(typing, adapter, address, event):
                result = await bot.client.send(event, requester, session, items)
            answer = result
            status = str(result.status)
            self.breakers.answered(bot.name)
            if self.health.ok(bot.name):
                self.metrics.bot_refused.labels(bot.name).set(0)
            return result
        except TextchatError as exc:
            answer = exc
            status = str(getattr(exc, "status", type(exc).__name__))
            if is_outage(exc):
                self.breakers.failed(bot.name)
            else:
                self.breakers.answered(bot.name)  # it answered, if only to refuse the event
            raise
        except BaseException:
            self.breakers.abandoned(bot.name)  # cancelled: a probe in flight must not hang
            raise
        finally:
            elapsed = time.monotonic() - started
            self.metrics.parloa_requests.labels(bot.name, event.type, status).inc()
            self.metrics.parloa_latency.labels(bot.name).observe(elapsed)
            if calls is not None and answer is not None:
                calls.append(call_record(event.type, session, status, elapsed, answer))

    @contextlib.asynccontextmanager
    async def _typing(
        self,
        typing: Typing,
        adapter: Adapter | None,
        address: Mapping[str, Any] | None,
        event: Event,
    ) -> AsyncIterator[None]:
        if adapter is None or address is None or isinstance(event, QuitEvent):
            yield
            return

        async def keep_typing() -> None:
            while True:
                still_shown = typing.typing_until - time.monotonic()
                if still_shown > 0:
                    await asyncio.sleep(still_shown)
                try:
                    await adapter.typing(address)
                except Exception as exc:  # a typing indicator is never worth failing for
                    log.debug("typing indicator failed: %s", exc)
                typing.typing_until = time.monotonic() + TYPING_REFRESH

        shown: asyncio.Task[None] | None = None

        def show() -> None:
            nonlocal shown
            shown = asyncio.create_task(keep_typing(), name="typing-indicator")

        # A timer until the indicator is due, not a task: most answers come before it.
        timer = asyncio.get_running_loop().call_later(self.typing_delay, show)
        try:
            yield
        finally:
            timer.cancel()
            if shown is not None:
                shown.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await shown


def call_record(
    event: str,
    session: str,
    status: str,
    elapsed: float,
    answer: TextchatResult | TextchatError,
) -> ParloaCall:
    """What the timeline keeps of one call: its answer's status and ids, or its error's."""
    request_id = getattr(answer, "request_id", None)
    correlation_id = getattr(answer, "correlation_id", None)
    elements = len(answer.response.response_elements) if isinstance(answer, TextchatResult) else 0
    return ParloaCall(
        event=event,
        session=session,
        status=int(status) if status.isdigit() else status,
        latency_ms=round(elapsed * 1000, 1),
        request_id=request_id,
        correlation_id=correlation_id,
        elements=elements,
        at=time.time(),
    )


async def quit_quietly(call: Call, session: str | None) -> TextchatResult | None:
    """Quit is a courtesy to Parloa: a failure never blocks the user."""
    if session is None:
        return None
    try:
        return await call(QuitEvent(), session)
    except (TextchatError, Permanent) as exc:
        log.info("quit for session %s not delivered: %s", session, exc)
        return None
