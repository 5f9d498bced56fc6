"""Send budgets that keep a bot within Telegram's limits before Telegram has to say 429:
per private chat, per group, and for the whole bot; plus a pause per chat after a 429."""

from __future__ import annotations

from aiolimiter import AsyncLimiter

from bridge.ratelimit import KeyedLimiter, PauseBoard


class SendBudgets:
    def __init__(
        self, global_per_second: float, chat_per_second: float, group_per_minute: float
    ) -> None:
        self._global = AsyncLimiter(global_per_second, 1)
        self._chats = KeyedLimiter.per_second(chat_per_second)
        self._groups = KeyedLimiter(lambda _key: AsyncLimiter(group_per_minute, 60))
        self._paused = PauseBoard()

    async def acquire(self, chat_id: int, is_group: bool) -> None:
        """Wait until one more message to this chat fits every budget."""
        await (self._groups if is_group else self._chats).acquire(str(chat_id))
        await self._global.acquire()

    async def acquire_lookup(self) -> None:
        """Wait until one more call that is not a send (a getChat for a conversation the bot
        starts) fits the bot's budget: a broadcast's look-ups and its sends share it."""
        await self._global.acquire()

    def pause(self, chat_id: int, seconds: float) -> None:
        """Telegram said 429 for this chat: send nothing there for ``seconds``."""
        self._paused.pause(str(chat_id), seconds)

    def paused_for(self, chat_id: int) -> float:
        """Seconds this chat is still paused (0 when it is not)."""
        return self._paused.remaining(str(chat_id))
