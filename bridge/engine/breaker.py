"""A circuit breaker per bot: when Parloa keeps failing, the conversations waiting on it stop
running their own backoff timers, one probe at a time checks Parloa, and when it answers they
are all released at once.

The state machine is pure (:func:`failed`, :func:`answered`, :func:`abandoned`, :func:`admit`
over a frozen :class:`Breaker`); :class:`Breakers` is the small shell the worker and the
Parloa caller use::

    closed ──(N transient failures in a row, within the window)──► open
    open ──(probe_at reached: the next call is the probe)──► half-open
    half-open ──(the probe answered)──► closed: every waiting event released at once
    half-open ──(the probe failed)──► open, the probe interval doubled up to its cap
    any ──(Parloa answered any call)──► closed

The probe is the next waiting event's own call, not a request of its own: TextchatV2 has no
request without effects (a launch opens a session at Parloa), and a real call proves the whole
path (token, release) and answers a user the moment it succeeds. While the breaker is open,
the shell's probe task makes one waiting event due at each probe time so that a probe goes
even when no new message arrives.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bridge.config import EngineConfig
from bridge.metrics import Metrics
from bridge.textchat.errors import SessionNotFound, TextchatError

log = logging.getLogger("bridge.engine")

#: the first probe's delay after the breaker opens (then doubled up to the configured cap)
PROBE_MIN_SECONDS = 1.0


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """``failures`` transient failures in a row (0: never open) within ``window`` seconds
    open the breaker; probes go ``probe_min`` seconds apart, doubling up to ``probe_max``."""

    failures: int = 5
    window: float = 60.0
    probe_min: float = 1.0
    probe_max: float = 5.0


@dataclass(frozen=True, slots=True)
class Breaker:
    """One bot's breaker. ``since``: when it last opened (open, half-open) or closed;
    ``failures``: transient failures in a row, the first at ``first_failure_at``;
    ``probe_at``: when an open breaker lets the next call through as the probe, waiting
    ``probe_interval`` after a failed one."""

    state: BreakerState = BreakerState.CLOSED
    since: float = 0.0
    failures: int = 0
    first_failure_at: float = 0.0
    probe_at: float = 0.0
    probe_interval: float = 0.0


def is_outage(error: BaseException) -> bool:
    """A failure that says Parloa is not answering (timeouts, connection errors, 429, 5xx),
    not one where it answered and refused this event (400, 401, 404 on a session)."""
    return (
        isinstance(error, TextchatError)
        and error.retryable
        and not isinstance(error, SessionNotFound)
    )


def failed(b: Breaker, policy: BreakerPolicy, now: float) -> Breaker:
    """A call failed transiently at ``now``."""
    if b.state is BreakerState.HALF_OPEN:  # the probe failed: wait longer for the next one
        interval = min(policy.probe_max, max(policy.probe_min, b.probe_interval * 2))
        return dataclasses.replace(
            b,
            state=BreakerState.OPEN,
            failures=b.failures + 1,
            probe_at=now + interval,
            probe_interval=interval,
        )
    if b.state is BreakerState.OPEN:  # a call already in flight when it opened
        return dataclasses.replace(b, failures=b.failures + 1)
    if b.failures == 0 or now - b.first_failure_at > policy.window:
        b = dataclasses.replace(b, failures=1, first_failure_at=now)
    else:
        b = dataclasses.replace(b, failures=b.failures + 1)
    if policy.failures <= 0 or b.failures < policy.failures:
        return b
    return dataclasses.replace(
        b,
        state=BreakerState.OPEN,
        since=now,
        probe_at=now + policy.probe_min,
        probe_interval=policy.probe_min,
    )


def answered(b: Breaker, now: float) -> Breaker:
    """Parloa answered a call (whatever it said): the breaker closes."""
    if b.state is BreakerState.CLOSED:
        return b if b.failures == 0 else dataclasses.replace(b, failures=0)
    return Breaker(BreakerState.CLOSED, since=now)


def abandoned(b: Breaker, now: float) -> Breaker:
    """A call ended without an answer or a failure of Parloa's (cancelled, or the worker
    failed): a probe that never finished lets the next call probe at once."""
    if b.state is BreakerState.HALF_OPEN:
        return dataclasses.replace(b, state=BreakerState.OPEN, probe_at=now)
    return b


def admit(b: Breaker, now: float) -> tuple[Breaker, bool]:
    """May a call go to Parloa at ``now``? An open breaker lets one through (the probe) once
    ``probe_at`` is reached and turns half-open until it ends."""
    if b.state is BreakerState.CLOSED:
        return b, True
    if b.state is BreakerState.OPEN and now >= b.probe_at:
        return dataclasses.replace(b, state=BreakerState.HALF_OPEN), True
    return b, False


# --- the shell ------------------------------------------------------------------------------

#: ``release(bot, limit)``: make up to ``limit`` (None: all) waiting conversations of ``bot``
#: due now and wake their workers; returns how many
Release = Callable[[str, int | None], Awaitable[int]]


class Breakers:
    """The bots' breakers, their metrics, and the tasks that probe and release. The worker
    asks :meth:`admits` before calling Parloa (a set lookup while closed); the Parloa caller
    reports every call's outcome."""

    def __init__(
        self,
        policy: BreakerPolicy,
        metrics: Metrics,
        bots: Iterable[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.metrics = metrics
        self.clock = clock
        self._release: Release | None = None
        self._states: dict[str, Breaker] = {}
        # Bots whose breaker is not closed: the only ones admits() has to look at.
        self._open: set[str] = set()
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._again: set[tuple[str, str]] = set()
        self._stopping = False
        for bot in bots:  # 0 from the start: an alert can tell "closed" from "no data"
            self._states[bot] = Breaker(since=clock())
            metrics.breaker_open.labels(bot).set(0)

    def start(self, release: Release) -> None:
        self._release = release
        self._stopping = False

    async def stop(self) -> None:
        self._stopping = True
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def admits(self, bot: str) -> bool:
        """May a call for ``bot`` go to Parloa now (False: park the event)."""
        if bot not in self._open:
            return True
        state, allowed = admit(self._states[bot], self.clock())
        self._set(bot, state)
        return allowed

    def failed(self, bot: str) -> None:
        self._set(bot, failed(self._state(bot), self.policy, self.clock()))

    def answered(self, bot: str) -> None:
        b = self._state(bot)
        if b.state is BreakerState.CLOSED and b.failures == 0:
            return  # the hot path: nothing to change
        self._set(bot, answered(b, self.clock()))

    def abandoned(self, bot: str) -> None:
        if bot in self._open:
            self._set(bot, abandoned(self._states[bot], self.clock()))

    def status(self) -> Mapping[str, Mapping[str, Any]]:
        """Per bot: state, since (Unix time), failures in a row (for /readyz)."""
        return {
            bot: {"state": b.state.value, "since": round(b.since, 3), "failures": b.failures}
            for bot, b in self._states.items()
        }

    def _state(self, bot: str) -> Breaker:
        b = self._states.get(bot)
        if b is None:
            b = self._states[bot] = Breaker(since=self.clock())
        return b

    def _set(self, bot: str, new: Breaker) -> None:
        old = self._states.get(bot)
        self._states[bot] = new
        was_closed = old is None or old.state is BreakerState.CLOSED
        if new.state is BreakerState.CLOSED:
            self._open.discard(bot)
            if not was_closed:
                log.info("bot %s: Parloa answers again; releasing the waiting conversations", bot)
                self.metrics.breaker_open.labels(bot).set(0)
                self._spawn(bot, lambda: self._release_all(bot), "release")
            return
        self._open.add(bot)
        if was_closed:
            log.warning(
                "bot %s: Parloa failed %d times in a row; waiting conversations pause, "
                "probing every %.0f-%.0fs",
                bot,
                new.failures,
                self.policy.probe_min,
                self.policy.probe_max,
            )
            self.metrics.breaker_open.labels(bot).set(1)
            self.metrics.breaker_openings.labels(bot).inc()
            self._spawn(bot, lambda: self._probe(bot), "probe")

    def _spawn(self, bot: str, work: Callable[[], Awaitable[None]], kind: str) -> None:
        """Run ``work`` as a named task, one of each kind per bot at a time (a probe loop
        still running goes on; it ends by itself once the breaker closes)."""
        if self._stopping or self._release is None:
            return
        key = (bot, kind)
        running = self._tasks.get(key)
        if running is not None and not running.done():
            if kind == "release":
                self._again.add(key)  # the one under way may have read before this close
            return
        task = asyncio.create_task(_logged(work(), bot, kind), name=f"breaker-{kind}-{bot}")
        self._tasks[key] = task
        task.add_done_callback(lambda t: self._forget(key, t))

    def _forget(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]

    async def _release_all(self, bot: str) -> None:
        assert self._release is not None
        released = await self._release(bot, None)
        while (bot, "release") in self._again:  # it closed again while this one ran
            self._again.discard((bot, "release"))
            released += await self._release(bot, None)
        if released:
            log.info("bot %s: %d waiting conversations released", bot, released)

    async def _probe(self, bot: str) -> None:
        """While open: at each probe time, make one waiting event due (its call probes)."""
        assert self._release is not None
        while bot in self._open:
            b = self._states[bot]
            wait = b.probe_at - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if b.state is BreakerState.OPEN:
                await self._release(bot, 1)
            await asyncio.sleep(max(self.policy.probe_min, b.probe_interval))


async def _logged(work: Awaitable[None], bot: str, kind: str) -> None:
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        # The store is unavailable, say: the scan of due work releases them later.
        log.warning("bot %s: breaker %s failed: %s", bot, kind, exc)


def policy_from(config: EngineConfig) -> BreakerPolicy:
    """The breaker's settings from ``[engine]``."""
    return BreakerPolicy(
        failures=config.breaker_failures,
        window=config.breaker_window_seconds,
        probe_min=min(PROBE_MIN_SECONDS, config.breaker_probe_max_seconds),
        probe_max=config.breaker_probe_max_seconds,
    )
