"""The adapter kit: what every channel adapter needs beside its platform library.

Part of the public channel API (with :mod:`bridge.channel`): a channel shipped as its own
distribution may use it. It knows no platform, no store and no Parloa client.

- :class:`TaskSet` — background tasks: named, referenced until done, failures logged,
  cancelled and awaited on :meth:`TaskSet.close` (no fire-and-forget).
- :func:`body_chunks` — a download's body a chunk at a time for ``Adapter.open_attachment``,
  its failures midway as ``AttachmentRetryable`` (never naming the URL, which may hold a token).
- :func:`is_storable_text` — whether a string from a platform's JSON is text the store can
  keep (not a lone surrogate).
- :func:`retry_after_seconds` — a ``Retry-After`` value (delta-seconds, an HTTP date, a number
  or a ``timedelta``) as finite seconds within a cap, or ``None`` when it says nothing usable.
- :class:`Retrier` — a retry loop by kind of failure, as python-telegram-bot's
  ``network_retry_loop`` does: rate limited → wait what the server said (capped); transient →
  capped exponential backoff with jitter; permanent → raise at once. The adapter says which
  kind an error is (a :class:`Verdict`); the loop decides how long to wait.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from bridge.media.attachments import AttachmentRetryable

# Part of the kit for plugin channels; the Parloa client reads Retry-After the same way.
from bridge.retry_after import MAX_RETRY_AFTER_SECONDS as MAX_RETRY_AFTER_SECONDS
from bridge.retry_after import retry_after_seconds as retry_after_seconds

T = TypeVar("T")

# --- background tasks ---------------------------------------------------------------------


class TaskSet:
    """The background tasks of one part (an adapter, a connection): each is named, kept
    referenced until it ends (the event loop keeps only weak references), and its failure is
    logged instead of vanishing. :meth:`close` cancels and awaits those still running; the set
    can be used again afterwards (an adapter may be started again)."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._log.error("background task %s failed", task.get_name(), exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Cancel every task still running and wait until all have ended."""
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # A task may have spawned another while it was being cancelled: go round again.
            self._tasks.difference_update(tasks)


# --- downloads (Adapter.open_attachment) ------------------------------------------------


#: bytes of a download read at a time (the core re-chunks them for the store)
DOWNLOAD_CHUNK_BYTES = 64 * 1024


async def body_chunks(response: aiohttp.ClientResponse, what: str) -> AsyncIterator[bytes]:
    """A download's body, a chunk at a time, for ``Adapter.open_attachment``: a stall or a
    connection lost midway is AttachmentRetryable (saying ``what`` broke off and how, never
    the URL, which may carry a token)."""
    try:
        async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK_BYTES):
            yield chunk
    except TimeoutError:
        raise AttachmentRetryable(f"{what} stalled") from None
    except aiohttp.ClientError as exc:
        raise AttachmentRetryable(f"{what} broke off: {type(exc).__name__}") from None


# --- inbound text -------------------------------------------------------------------------


def is_storable_text(value: str) -> bool:
    """JSON can carry lone surrogates (``"\\ud800"``), which are not storable text."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- retry by kind of failure -------------------------------------------------------------


class ErrorKind(enum.StrEnum):
    RATE_LIMITED = "rate_limited"  # the server said slow down: wait what it asked (capped)
    TRANSIENT = "transient"  # the network, a 5xx, a timeout: capped backoff with jitter
    PERMANENT = "permanent"  # a refused token, a bad request: trying again will not help


@dataclass(frozen=True, slots=True)
class Verdict:
    """How one failure is treated. ``retry_after``: for ``RATE_LIMITED``, the server's wish in
    seconds (see :func:`retry_after_seconds`); without one the backoff applies."""

    kind: ErrorKind
    retry_after: float | None = None

    @classmethod
    def rate_limited(cls, retry_after: float | None) -> Verdict:
        return cls(ErrorKind.RATE_LIMITED, retry_after)


TRANSIENT = Verdict(ErrorKind.TRANSIENT)
PERMANENT = Verdict(ErrorKind.PERMANENT)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with jitter: the n-th consecutive failure waits
    ``min(maximum, initial * factor ** (n - 1))`` scaled by a random factor in
    ``[1 - jitter, 1]`` (so retries of many callers spread out). A server's ``Retry-After`` is
    honoured up to ``max_retry_after`` seconds."""

    initial: float = 1.0
    maximum: float = 60.0
    factor: float = 2.0
    jitter: float = 0.5
    max_retry_after: float = MAX_RETRY_AFTER_SECONDS

    def delay(self, failures: int, draw: Callable[[float, float], float]) -> float:
        """The wait after ``failures`` consecutive failures (1 for the first)."""
        # Past the cap the exponent does not matter; bounding it avoids an OverflowError.
        exponent = min(max(0, failures - 1), 1024)
        try:
            base = min(self.maximum, self.initial * self.factor**exponent)
        except OverflowError:
            base = self.maximum
        return draw(base * (1.0 - self.jitter), base)


class Retrier:
    """The state of one retry loop: the policy, the consecutive failures so far, and how to
    sleep (injected, so tests run on a fake clock). Kept across calls of :meth:`run` when a
    loop repeats an action for good (polling): its failures count on from one call to the
    next until one succeeds."""

    def __init__(
        self,
        backoff: Backoff | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        draw: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.backoff = backoff or Backoff()
        self.failures = 0
        self._sleep = sleep
        self._draw = draw

    def reset(self) -> None:
        """The remote side answered: the next failure waits the shortest time again."""
        self.failures = 0

    def delay_for(self, verdict: Verdict) -> float:
        """Seconds to wait after a retryable failure; counts it unless the server named the
        wait (a rate limit is the server working, not failing). A rate limit asking for no
        wait at all gets the backoff: retrying at once, uncounted, could go on for ever."""
        if verdict.kind is ErrorKind.RATE_LIMITED and verdict.retry_after is not None:
            wanted = retry_after_seconds(verdict.retry_after, maximum=self.backoff.max_retry_after)
            if wanted:
                return wanted
        self.failures += 1
        return self.backoff.delay(self.failures, self._draw)

    async def run(
        self,
        call: Callable[[], Awaitable[T]],
        classify: Callable[[Exception], Verdict],
        *,
        on_failure: Callable[[Exception, Verdict], None] | None = None,
        max_attempts: int | None = None,
    ) -> T:
        """Await ``call()`` until it succeeds; its result. A failure is classified: permanent
        is raised at once, the others are waited out and retried. ``on_failure`` sees each
        failure first (to log it in the adapter's words, reset the adapter's state); after
        ``max_attempts`` attempts (``None``: no limit) the last error is raised."""
        attempts = 0
        while True:
            attempts += 1
            try:
                result = await call()
            except Exception as exc:
                verdict = classify(exc)
                if on_failure is not None:
                    on_failure(exc, verdict)
                if verdict.kind is ErrorKind.PERMANENT or (
                    max_attempts is not None and attempts >= max_attempts
                ):
                    raise
                await self._sleep(self.delay_for(verdict))
                continue
            self.reset()
            return result
