"""Send budgets that keep a bot within Telegram's limits before Telegram has to say 429:
per private chat, per group, and for the whole bot; plus a pause per chat after a 429."""

from __future__ import annotations

import time
from collections import OrderedDict

from aiolimiter import AsyncLimiter

MAX_TRACKED_CHATS = 10_000
CHAT_BURST = 3


class SendBudgets:
    def __init__(
        self,
        global_per_second: float,
        chat_per_second: float,
        group_per_minute: float,
    ) -> None:
        self._global = AsyncLimiter(global_per_second, 1)
        self._chat_rate = chat_per_second
        self._group_rate = group_per_minute
        self._limiters: OrderedDict[int, AsyncLimiter] = OrderedDict()
        self._paused_until: dict[int, float] = {}

    def _limiter(self, chat_id: int, is_group: bool) -> AsyncLimiter:
        limiter = self._limiters.get(chat_id)
        if limiter is None:
            if is_group:
                limiter = AsyncLimiter(self._group_rate, 60)
            else:
                # about chat_per_second on average, short bursts tolerated (as Telegram does)
                limiter = AsyncLimiter(CHAT_BURST, CHAT_BURST / self._chat_rate)
            self._limiters[chat_id] = limiter
            if len(self._limiters) > MAX_TRACKED_CHATS:
                self._limiters.popitem(last=False)
        else:
            self._limiters.move_to_end(chat_id)
        return limiter

    async def acquire(self, chat_id: int, is_group: bool) -> None:
        """Wait until one more message to this chat fits every budget."""
        await self._limiter(chat_id, is_group).acquire()
        await self._global.acquire()

    def pause(self, chat_id: int, seconds: float) -> None:
        """Telegram said 429 for this chat: send nothing there for ``seconds``."""
        self._paused_until[chat_id] = time.monotonic() + seconds

    def paused_for(self, chat_id: int) -> float:
        """Seconds this chat is still paused (0 when it is not)."""
        until = self._paused_until.get(chat_id)
        if until is None:
            return 0.0
        left = until - time.monotonic()
        if left <= 0:
            del self._paused_until[chat_id]
            return 0.0
        return left
