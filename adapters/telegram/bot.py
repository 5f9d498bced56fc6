"""python-telegram-bot's ``Bot`` with the calls the bridge makes on its own terms."""

from __future__ import annotations

import warnings
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from telegram import Bot
from telegram.error import BadRequest, RetryAfter
from telegram.warnings import PTBDeprecationWarning

from bridge.channelkit import retry_after_seconds

#: The update types the bridge asks for (polling and webhook alike).
ALLOWED_UPDATES = ["message", "callback_query"]


class BridgeBot(Bot):
    """PTB's Bot plus raw getUpdates: each update is parsed on its own, so one update PTB
    cannot read is skipped instead of failing (and endlessly repeating) the whole batch.
    Extends the protected ``_post`` the way PTB's own ExtBot does."""

    async def get_raw_updates(
        self, offset: int | None, poll_seconds: int, read_timeout: float
    ) -> list[Any]:
        result = await self._post(
            "getUpdates",
            {
                "offset": offset,
                "limit": 100,
                "timeout": poll_seconds,
                "allowed_updates": ALLOWED_UPDATES,
            },
            read_timeout=read_timeout,
        )
        return result if isinstance(result, list) else []

    async def send_for_id(self, method: str, params: dict[str, Any]) -> str | None:
        """``sendMessage`` / ``sendPhoto`` / ... with PTB's parameter encoding and error mapping,
        but without building the sent ``Message`` (a real cost per reply: docs/benchmarks.md,
        "Telegram adapter"): only its id is kept (an album's: its first message's). ``None``
        when Telegram's answer has none: the message was sent all the same, so this is not an
        error (a retry would send it twice)."""
        result = await self._post(method, params)
        if isinstance(result, list):
            result = result[0] if result else None
        message_id = result.get("message_id") if isinstance(result, dict) else None
        return str(message_id) if isinstance(message_id, int) else None

    async def file_location(self, file_id: str) -> tuple[str, int | None]:
        """getFile: the URL to download ``file_id`` from (valid for an hour, and carrying the
        token: never log it) and its size when Telegram says."""
        result = await self._post("getFile", {"file_id": file_id})
        path = result.get("file_path") if isinstance(result, dict) else None
        if not isinstance(path, str) or not path:
            raise BadRequest("getFile answered without a file path")
        size = result.get("file_size")
        url = f"{self.base_file_url}/{quote(path)}"
        return url, size if isinstance(size, int) and not isinstance(size, bool) else None


def retry_seconds(exc: RetryAfter) -> float | None:
    """Telegram's flood-control wait, finite and capped."""
    # PTB 22 warns that retry_after becomes a timedelta; both forms are handled.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value: int | timedelta = exc.retry_after
    return retry_after_seconds(value)
