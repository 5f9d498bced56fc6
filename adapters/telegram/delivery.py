"""Delivery to Telegram: the send budgets, the parts a reply renders to, the send calls, and
what each Telegram failure means for the outbox (retry, wait, drop, recipient gone)."""

from __future__ import annotations

import dataclasses
import html
import logging
import re
from collections.abc import Mapping
from typing import Any

from telegram import InputMediaPhoto
from telegram.error import BadRequest, ChatMigrated, Forbidden, RetryAfter, TelegramError

from adapters.telegram.bot import BridgeBot, retry_seconds
from adapters.telegram.budgets import SendBudgets
from adapters.telegram.keyboards import inline_keyboard
from adapters.telegram.parts import AlbumPart, MediaPart, Part, PhotoPart, TextPart
from adapters.telegram.render import RenderOptions, render
from bridge.channel import (
    Delivery,
    DeliveryRejected,
    DeliveryRetryable,
    RecipientGone,
)

log = logging.getLogger("adapters.telegram")

#: Telegram's flood control named no usable wait: pause the chat this long.
DEFAULT_FLOOD_WAIT_SECONDS = 1.0
# Telegram could not fetch or read a file sent by URL: its fallback (a link) is sent instead.
_MEDIA_FAILURES = re.compile(
    r"wrong file identifier|failed to get http url content|wrong type of the web page|"
    r"image_process_failed|wrong remote file|photo_invalid|webpage_curl_failed|"
    r"webpage_media_empty|media_empty|failed to send message #",
    re.IGNORECASE,
)
_PARSE_FAILURE = re.compile(r"can't parse entities|can't find end", re.IGNORECASE)
_GONE = re.compile(r"chat not found|user is deactivated|bot was kicked|not a member", re.I)


class Sender:
    """Sends one channel's replies and typing notices within Telegram's limits."""

    def __init__(
        self, channel: str, bot: BridgeBot, budgets: SendBudgets, options: RenderOptions
    ) -> None:
        self._channel = channel
        self.bot = bot
        self._budgets = budgets
        self._render = options

    async def typing(self, address: Mapping[str, Any]) -> None:
        chat_id = address.get("chat_id")
        if isinstance(chat_id, int) and not self._budgets.paused_for(chat_id):
            await self.bot.send_chat_action(
                chat_id, "typing", message_thread_id=address.get("thread_id")
            )

    async def deliver(self, delivery: Delivery) -> None:
        address = delivery.address
        chat_id = address.get("chat_id")
        if not isinstance(chat_id, int):
            raise DeliveryRejected(f"no Telegram chat in the reply address {dict(address)!r}")
        is_group = address.get("chat_type") in ("group", "supergroup")
        parts = render(delivery.elements, self._render)
        for index in range(delivery.parts_done, len(parts)):
            paused = self._budgets.paused_for(chat_id)
            if paused:
                raise DeliveryRetryable("chat paused after a 429", paused, rate_limited=True)
            await self._budgets.acquire(chat_id, is_group)
            markup = inline_keyboard(parts[index].buttons, delivery.outbox_id, index)
            message_id = await self._send(parts[index], chat_id, address, markup)
            await delivery.progress(index, message_id)

    async def _send_media(
        self,
        part: PhotoPart | MediaPart | AlbumPart,
        markup: dict[str, Any] | None,
        common: dict[str, Any],
    ) -> str | None:
        if isinstance(part, AlbumPart):
            media = [InputMediaPhoto(item.url, caption=item.caption) for item in part.items]
            return await self.bot.send_for_id("sendMediaGroup", {"media": media, **common})
        if isinstance(part, PhotoPart):
            params = {"photo": part.url, "caption": part.caption, "parse_mode": part.parse_mode}
        else:
            params = {part.kind: part.url, "caption": part.caption}
        method = f"send{part.kind.capitalize()}" if isinstance(part, MediaPart) else "sendPhoto"
        return await self.bot.send_for_id(method, {**params, "reply_markup": markup, **common})

    async def _send(
        self,
        part: Part,
        chat_id: int,
        address: Mapping[str, Any],
        markup: dict[str, Any] | None,
    ) -> str | None:
        common: dict[str, Any] = {"chat_id": chat_id}
        if address.get("thread_id"):
            common["message_thread_id"] = address["thread_id"]
        if address.get("reply_to_message_id"):
            common["reply_parameters"] = {
                "message_id": address["reply_to_message_id"],
                "allow_sending_without_reply": True,
            }
        try:
            if not isinstance(part, TextPart):
                try:
                    return await self._send_media(part, markup, common)
                except BadRequest as exc:
                    if not _MEDIA_FAILURES.search(exc.message):
                        raise
                    log.info(
                        "telegram channel %s: file not sent (%s); sending its link",
                        self._channel,
                        exc.message,
                    )
                    part = dataclasses.replace(part.fallback, buttons=part.buttons)
            try:
                return await self.bot.send_for_id(
                    "sendMessage",
                    {
                        "text": part.text,
                        "parse_mode": part.parse_mode,
                        "reply_markup": markup,
                        **common,
                    },
                )
            except BadRequest as exc:
                if part.parse_mode is None or not _PARSE_FAILURE.search(exc.message):
                    raise
                # Formatting Telegram cannot parse: the words matter more than the bold.
                plain = html.unescape(re.sub(r"<[^>]+>", "", part.text))
                return await self.bot.send_for_id(
                    "sendMessage", {"text": plain, "reply_markup": markup, **common}
                )
        except RetryAfter as exc:
            seconds = retry_seconds(exc) or DEFAULT_FLOOD_WAIT_SECONDS
            self._budgets.pause(chat_id, seconds)
            raise DeliveryRetryable(
                f"Telegram said 429: {exc}", seconds, rate_limited=True
            ) from None
        except (Forbidden, ChatMigrated) as exc:
            raise RecipientGone(exc.message) from None
        except BadRequest as exc:
            if _GONE.search(exc.message):
                raise RecipientGone(exc.message) from None
            raise DeliveryRejected(exc.message) from None
        except TelegramError as exc:  # NetworkError and TimedOut included
            raise DeliveryRetryable(f"Telegram request failed: {exc}") from None
