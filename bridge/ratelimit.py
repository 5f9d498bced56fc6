"""Send budgets for adapters: a rate limit per key (a chat, a channel, a workspace) and a pause
per key after the platform said 429. Both are bounded: a limiter whose budget refilled and a
pause that ran out are forgotten, and neither keeps more than ``max_keys`` keys."""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable

from aiolimiter import AsyncLimiter

MAX_TRACKED_KEYS = 10_000


class KeyedLimiter:
    """A rate limit per key: each key gets its own limiter, made by ``make(key)`` on its first
    use; at most ``max_keys`` are kept (idle ones are forgotten first, then the least recently
    used). :meth:`per_second` builds the common case."""

    def __init__(self, make: Callable[[str], AsyncLimiter], max_keys: int = MAX_TRACKED_KEYS):
        self._make = make
        self._max = max_keys
        self._limiters: OrderedDict[str, AsyncLimiter] = OrderedDict()

    @classmethod
    def per_second(cls, rate: float, burst: float = 3) -> KeyedLimiter:
        """About ``rate`` sends per second for each key on average, bursts of ``burst``
        tolerated (as the platforms do)."""
        return cls(lambda _key: AsyncLimiter(burst, burst / rate))

    async def acquire(self, key: str) -> None:
        limiter = self._limiters.get(key)
        if limiter is None:
            self._forget_idle()
            limiter = self._limiters[key] = self._make(key)
            if len(self._limiters) > self._max:
                self._limiters.popitem(last=False)
        else:
            self._limiters.move_to_end(key)
        await limiter.acquire()

    def _forget_idle(self) -> None:
        """Drop the least recently used limiters whose budget has refilled: a new one would
        be the same. Keeps only recently active keys alive (each limiter is a handful of
        objects every full garbage collection walks)."""
        while self._limiters:
            key, oldest = next(iter(self._limiters.items()))
            if not oldest.has_capacity(oldest.max_rate):
                return
            del self._limiters[key]

    def __len__(self) -> int:
        return len(self._limiters)


class PauseBoard:
    """Keys the platform asked us to leave alone for a while (429 Retry-After).

    Bounded: a pause that ran out is dropped when any key is paused (not only when its own key
    is read again: most never are), and at most ``max_keys`` pauses are kept — past that the
    one ending soonest is dropped (at worst the platform says 429 there once more)."""

    def __init__(
        self, max_keys: int = MAX_TRACKED_KEYS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max = max_keys
        self._clock = clock
        self._until: dict[str, float] = {}
        # (until, key) in order of ending; an entry is stale once its key was paused longer
        # or dropped (checked against _until).
        self._ends: list[tuple[float, str]] = []

    def pause(self, key: str, seconds: float) -> None:
        now = self._clock()
        until = now + seconds
        if until <= self._until.get(key, now):
            return
        self._until[key] = until
        heapq.heappush(self._ends, (until, key))
        self._drop(lambda first: first <= now)
        self._drop(lambda _first: len(self._until) > self._max)
        if len(self._ends) > 2 * len(self._until) + 64:  # many stale entries: rebuild
            self._ends = [(end, k) for k, end in self._until.items()]
            heapq.heapify(self._ends)

    def _drop(self, condition: Callable[[float], bool]) -> None:
        """Drop the pauses ending first while ``condition(their end)`` holds."""
        while self._ends and condition(self._ends[0][0]):
            end, key = heapq.heappop(self._ends)
            if self._until.get(key) == end:
                del self._until[key]

    def remaining(self, key: str) -> float:
        until = self._until.get(key)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._until[key]
            return 0.0
        return left

    def __len__(self) -> int:
        return len(self._until)
