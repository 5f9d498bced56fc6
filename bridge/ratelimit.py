"""Send budgets for adapters: a rate limit per key (a chat, a channel, a workspace) and a pause
per key after the platform said 429. Bounded: the least recently used keys are forgotten."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from aiolimiter import AsyncLimiter

MAX_TRACKED_KEYS = 10_000


class KeyedLimiter:
    """``rate`` sends per ``period`` seconds for each key, bursts of ``burst`` allowed."""

    def __init__(self, make: Callable[[str], AsyncLimiter], max_keys: int = MAX_TRACKED_KEYS):
        self._make = make
        self._max = max_keys
        self._limiters: OrderedDict[str, AsyncLimiter] = OrderedDict()

    @classmethod
    def per_second(cls, rate: float, burst: float = 3) -> KeyedLimiter:
        # about `rate` per second on average, short bursts tolerated (as the platforms do)
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
    """Keys the platform asked us to leave alone for a while (429 Retry-After)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def pause(self, key: str, seconds: float) -> None:
        self._until[key] = max(self._until.get(key, 0.0), time.monotonic() + seconds)

    def remaining(self, key: str) -> float:
        until = self._until.get(key)
        if until is None:
            return 0.0
        left = until - time.monotonic()
        if left <= 0:
            del self._until[key]
            return 0.0
        return left
