"""The Telegram channel, on python-telegram-bot's ``Bot`` inside the service's event loop.

Intake is durable in both modes. Polling: one replica holds the ``poller`` lease and calls
getUpdates; an update's offset is passed on (which confirms it to Telegram) only after the
update was committed to the inbox. Webhook: the update is committed before the 2xx; when the
database is unavailable Telegram gets 503 with Retry-After and sends the update again.

A chip press is deduplicated per keyboard (its event id names the keyboard), so a keyboard
can be used once however often it is pressed. Its value is read back from the stored reply
(keyboards.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import html
import json
import logging
import random
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from aiohttp import web
from telegram import Bot, Update
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.warnings import PTBDeprecationWarning

from adapters.telegram.aiohttp_request import AiohttpRequest
from adapters.telegram.budgets import SendBudgets
from adapters.telegram.keyboards import (
    LEGACY_STATE_KEY,
    LegacyButton,
    ReplyButton,
    inline_keyboard,
    pressed_value,
    read_press,
)
from adapters.telegram.normalize import (
    BotIdentity,
    ButtonPress,
    Ignored,
    NormalizeOptions,
    private_text,
    to_inbound,
)
from adapters.telegram.options import TelegramOptions
from adapters.telegram.render import PhotoPart, RenderOptions, TextPart, render
from bridge.channel import (
    AcceptResult,
    Adapter,
    AdapterServices,
    AdapterType,
    Delivery,
    DeliveryRejected,
    DeliveryRetryable,
    Inbound,
    Intake,
    IntakeUnavailable,
    RecipientGone,
)

log = logging.getLogger("adapters.telegram")

ALLOWED_UPDATES = ["message", "callback_query"]
RETRY_AFTER_SECONDS = 5
LEASE_RENEW_SECONDS = 1.0
_PHOTO_FAILURES = re.compile(
    r"wrong file identifier|failed to get http url content|wrong type of the web page|"
    r"image_process_failed|wrong remote file|photo_invalid",
    re.IGNORECASE,
)
_PARSE_FAILURE = re.compile(r"can't parse entities|can't find end", re.IGNORECASE)
_GONE = re.compile(r"chat not found|user is deactivated|bot was kicked|not a member", re.I)


class _Bot(Bot):
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
        """``sendMessage`` / ``sendPhoto`` with PTB's parameter encoding and error mapping, but
        without building the sent ``Message`` (about a tenth of the bridge's CPU per reply):
        only its id is kept. ``None`` when Telegram's answer has none: the message was sent
        all the same, so this is not an error (a retry would send it twice)."""
        result = await self._post(method, params)
        message_id = result.get("message_id") if isinstance(result, dict) else None
        return str(message_id) if isinstance(message_id, int) else None


def _retry_seconds(exc: RetryAfter) -> float:
    # PTB 22 warns that retry_after becomes a timedelta; both forms are handled here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return float(value.total_seconds() if isinstance(value, timedelta) else value)


class TelegramAdapter(Adapter):
    def __init__(self, name: str, options: TelegramOptions, services: AdapterServices) -> None:
        super().__init__(name)
        self.options = options
        self._services = services
        root = options.api_base_url
        timeout = options.request_timeout_seconds
        self.bot = _Bot(
            options.token.get_secret_value(),
            base_url=f"{root}/bot",
            base_file_url=f"{root}/file/bot",
            request=AiohttpRequest(
                connection_pool_size=options.connection_pool_size,
                read_timeout=timeout,
                connect_timeout=timeout,
                pool_timeout=timeout,
            ),
            get_updates_request=AiohttpRequest(
                connection_pool_size=2,
                read_timeout=timeout,
                connect_timeout=timeout,
                pool_timeout=timeout,
            ),
        )
        self._budgets = SendBudgets(
            options.rate_limit_per_second,
            options.chat_messages_per_second,
            options.group_messages_per_minute,
        )
        self._normalize = NormalizeOptions(
            group_mode=options.group_mode, forward_captions=options.forward_captions
        )
        self._render = RenderOptions(
            text_format=options.text_format, chips_prompt=options.chips_prompt
        )
        self._identity: BotIdentity | None = None
        self._intake: Intake | None = None
        self._poller: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._role = "stopped"
        self._initialized = False

    def __repr__(self) -> str:
        return f"TelegramAdapter(name={self.name!r}, mode={self.options.mode!r})"

    @property
    def webhook_path(self) -> str:
        return f"/telegram/{self.name}"

    def routes(self) -> Sequence[web.RouteDef]:
        return [web.post(self.webhook_path, self._handle_webhook)]

    def status(self) -> Mapping[str, Any]:
        bot = self._identity.username if self._identity else None
        return {"mode": self.options.mode, "role": self._role, "bot": bot}

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self, intake: Intake) -> None:
        if self.options.mode == "webhook" and not self._services.public_url:
            raise RuntimeError("webhook mode needs [http] public_url (where Telegram reaches us)")
        try:
            if not self._initialized:
                await self.bot.initialize()  # getMe: proves the token
                self._initialized = True
        except InvalidToken:
            raise RuntimeError("Telegram refused the bot token (check its token)") from None
        except TelegramError as exc:
            raise RuntimeError(f"cannot reach the Telegram Bot API: {exc.message}") from None
        me = self.bot.bot
        self._identity = BotIdentity(id=me.id, username=me.username or "")
        with contextlib.suppress(TelegramError):
            await self.bot.set_my_commands(
                [
                    ("start", "Start a new conversation"),
                    ("stop", "End the conversation"),
                    ("restart", "Start over"),
                ]
            )
        self._intake = intake
        if self.options.mode == "webhook":
            assert self.options.webhook_secret is not None
            url = f"{self._services.public_url.rstrip('/')}{self.webhook_path}"  # type: ignore[union-attr]
            await self.bot.set_webhook(
                url=url,
                secret_token=self.options.webhook_secret.get_secret_value(),
                allowed_updates=ALLOWED_UPDATES,
                drop_pending_updates=self.options.drop_pending_updates,
            )
            self._role = "webhook"
            log.info("telegram channel %s: webhook registered at %s", self.name, url)
        else:
            self._role = "standby"
            self._poller = asyncio.create_task(
                self._poll(intake), name=f"telegram-poll-{self.name}"
            )
        log.info(
            "telegram channel %s: bot @%s started (%s)",
            self.name,
            self._identity.username,
            self.options.mode,
        )

    async def stop_intake(self) -> None:
        intake, self._intake = self._intake, None
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await poller
        if intake is not None and self._role == "leader":
            with contextlib.suppress(Exception):
                await intake.state.release_lease("poller", intake.instance_id)
        if self._role != "stopped":
            self._role = "stopping"

    async def stop(self) -> None:
        await self.stop_intake()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._initialized:
            with contextlib.suppress(Exception):
                await self.bot.shutdown()
            self._initialized = False
        self._role = "stopped"

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- polling ----------------------------------------------------------------------------

    async def _poll(self, intake: Intake) -> None:
        """Leader election, then getUpdates → commit → confirm, forever."""
        owner = intake.instance_id
        lease_ttl = max(self.options.leader_lease_seconds, self.options.poll_timeout_seconds + 5)
        backoff = 1.0
        offset: int | None = None
        renewed = -LEASE_RENEW_SECONDS
        while True:
            try:
                # Renewed at most once a second: under load getUpdates returns at once and
                # this loop turns many times a second. The lease outlives one long poll by
                # 5 s (lease_ttl), so a renewal up to a second old still covers the next poll.
                leader = self._role == "leader"
                if not leader or time.monotonic() - renewed >= LEASE_RENEW_SECONDS:
                    try:
                        leader = await intake.state.acquire_lease("poller", owner, lease_ttl)
                        renewed = time.monotonic()
                    except Exception as exc:
                        log.warning(
                            "telegram channel %s: cannot take the poller lease: %s",
                            self.name,
                            exc,
                        )
                        leader = False
                if not leader:
                    if self._role == "leader":
                        log.warning("telegram channel %s: lost the poller lease", self.name)
                    self._role = "standby"
                    offset = None
                    await asyncio.sleep(min(5.0, lease_ttl / 4))
                    continue
                if self._role != "leader":
                    log.info("telegram channel %s: this replica polls", self.name)
                    with contextlib.suppress(TelegramError):
                        # getUpdates does not work while a webhook is set
                        await self.bot.delete_webhook(
                            drop_pending_updates=self.options.drop_pending_updates
                        )
                    stored = await intake.state.get("offset")
                    offset = int(stored) if stored else None
                    self._role = "leader"
                try:
                    updates = await self.bot.get_raw_updates(
                        offset,
                        self.options.poll_timeout_seconds,
                        self.options.poll_timeout_seconds + self.options.request_timeout_seconds,
                    )
                except Conflict as exc:
                    log.warning(
                        "telegram channel %s: %s (another poller or a webhook is active)",
                        self.name,
                        exc.message,
                    )
                    await self._sleep_backoff(backoff)
                    backoff = min(60.0, backoff * 2)
                    continue
                except InvalidToken:
                    log.error("telegram channel %s: Telegram refused the bot token", self.name)
                    await self._sleep_backoff(backoff)
                    backoff = min(60.0, backoff * 2)
                    continue
                except RetryAfter as exc:
                    await asyncio.sleep(_retry_seconds(exc))
                    continue
                except (NetworkError, TelegramError) as exc:
                    log.warning("telegram channel %s: getUpdates failed: %s", self.name, exc)
                    await self._sleep_backoff(backoff)
                    backoff = min(60.0, backoff * 2)
                    continue
                backoff = 1.0
                confirmed = offset
                try:
                    offset = await self._store_updates(intake, updates, offset)
                except IntakeUnavailable as exc:
                    # Not confirmed: Telegram keeps the updates and we ask again after a pause.
                    log.warning("telegram channel %s: cannot store updates: %s", self.name, exc)
                    offset = confirmed
                    await self._sleep_backoff(backoff)
                    backoff = min(60.0, backoff * 2)
            except Exception:
                # Whatever went wrong (a database blip, a bug), polling must go on: a dead
                # poller would silently stop this bot while /readyz still said "leader".
                log.exception("telegram channel %s: polling failed; retrying", self.name)
                self._role = "standby"
                offset = None
                await self._sleep_backoff(backoff)
                backoff = min(60.0, backoff * 2)

    async def _store_updates(
        self, intake: Intake, updates: Sequence[Any], offset: int | None
    ) -> int | None:
        """Commit one getUpdates batch and the offset after it in one transaction; returns
        the new offset. Chip presses (which read channel state) are accepted on their own."""
        batch: list[Inbound] = []
        for data in updates:
            update_id = data.get("update_id") if isinstance(data, dict) else None
            normal = self._classify(data)
            if isinstance(normal, ButtonPress):
                if batch:
                    await intake.accept_many(batch)
                    batch = []
                await self._press(intake, normal)
            elif normal is not None:
                batch.append(normal)
            if isinstance(update_id, int):
                offset = update_id + 1
        if batch or (updates and offset is not None):
            state = {"offset": str(offset)} if offset is not None else None
            await intake.accept_many(batch, state)
        return offset

    @staticmethod
    async def _sleep_backoff(seconds: float) -> None:
        await asyncio.sleep(seconds * random.uniform(0.5, 1.0))

    # --- webhook ----------------------------------------------------------------------------

    async def _handle_webhook(self, request: web.Request) -> web.Response:
        unavailable = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        expected = self.options.webhook_secret
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if expected is None or not hmac.compare_digest(
            given.encode("utf-8", "surrogateescape"), expected.get_secret_value().encode()
        ):
            log.info("telegram channel %s: webhook request with a wrong secret", self.name)
            return web.json_response({"error": "unauthorized"}, status=401)
        intake = self._intake
        if intake is None or self.options.mode != "webhook":
            return web.json_response({"error": "not running"}, status=503, headers=unavailable)
        try:
            data = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return web.json_response({"error": "body is not JSON"}, status=400)
        try:
            await self._handle_update(intake, data)
        except IntakeUnavailable:
            return web.json_response(
                {"error": "temporarily unavailable"}, status=503, headers=unavailable
            )
        return web.json_response({"ok": True})

    # --- one update -------------------------------------------------------------------------

    async def _handle_update(self, intake: Intake, data: Any) -> None:
        """Normalise and commit one update. Raises IntakeUnavailable when it was not stored."""
        normal = self._classify(data)
        if isinstance(normal, ButtonPress):
            await self._press(intake, normal)
        elif normal is not None:
            await intake.accept(normal)

    def _classify(self, data: Any) -> Inbound | ButtonPress | None:
        """An update as an event to accept, a chip press, or None (skipped, logged)."""
        try:
            return self._read(data)
        except Exception:
            # A bug on an update nobody foresaw: skipped, with its id and the traceback.
            # Raised, it would stall the poller on this batch for good (Telegram sends it
            # again on every getUpdates), and with it every chat of this bot.
            update_id = data.get("update_id") if isinstance(data, dict) else None
            log.exception(
                "telegram channel %s: update %s could not be read; skipped", self.name, update_id
            )
            return None

    def _read(self, data: Any) -> Inbound | ButtonPress | None:
        assert self._identity is not None
        plain = private_text(data, self._identity)
        if plain is not None:
            return plain
        try:
            update = Update.de_json(data, self.bot)
        except Exception as exc:  # malformed: expected now and then, no traceback needed
            log.warning("telegram channel %s: unreadable update skipped: %s", self.name, exc)
            return None
        if update is None:
            return None
        normal = to_inbound(update, self._identity, self._normalize)
        if isinstance(normal, Ignored):
            if update.callback_query is not None:  # always answered: no endless spinner
                self._spawn(
                    self._answer(update.callback_query.id, None), "telegram-answer-callback"
                )
            log.debug(
                "telegram channel %s: update %s ignored: %s",
                self.name,
                update.update_id,
                normal.reason,
            )
            return None
        return normal

    async def _press(self, intake: Intake, press: ButtonPress) -> None:
        pressed = read_press(press.data)
        value: str | None = None
        if isinstance(pressed, ReplyButton):
            value = await self._reply_value(intake, press, pressed)
        elif isinstance(pressed, LegacyButton):
            value = await self._legacy_value(intake, pressed)
        if pressed is None or value is None:
            self._spawn(
                self._answer(press.callback_query_id, "This choice is no longer available."),
                "telegram-answer-callback",
            )
            return
        # The keyboard is the event id: a second press of it is a duplicate.
        event = dataclasses.replace(press.inbound(value), event_id=f"tg:kb:{pressed.keyboard}")
        result = await intake.accept(event)
        note = None if result is AcceptResult.ACCEPTED else "Already chosen."
        self._spawn(self._answer(press.callback_query_id, note), "telegram-answer-callback")
        if result is AcceptResult.ACCEPTED and press.chat_id and press.message_id:
            self._spawn(
                self._remove_keyboard(press.chat_id, press.message_id), "telegram-remove-keyboard"
            )

    async def _reply_value(
        self, intake: Intake, press: ButtonPress, pressed: ReplyButton
    ) -> str | None:
        reply = await intake.stored_reply(pressed.outbox_id)
        # Only in the chat the reply went to: callback data is whatever a client sends.
        if reply is None or press.chat_id is None or reply.address.get("chat_id") != press.chat_id:
            return None
        try:
            parts = render(reply.elements, self._render)
        except Exception as exc:  # a bug must not stall the poller on this update for good
            log.warning(
                "telegram channel %s: reply %s not rendered again: %s",
                self.name,
                pressed.outbox_id,
                exc,
            )
            return None
        return pressed_value(parts, pressed)

    async def _legacy_value(self, intake: Intake, pressed: LegacyButton) -> str | None:
        try:
            stored = await intake.state.get(LEGACY_STATE_KEY + pressed.token)
        except Exception as exc:
            raise IntakeUnavailable(f"cannot read channel state: {exc}") from exc
        try:
            buttons = json.loads(stored) if stored is not None else []
            value = buttons[pressed.index][1]
        except (ValueError, LookupError, TypeError):
            return None
        return value if isinstance(value, str) else None

    async def _answer(self, callback_query_id: str, text: str | None) -> None:
        try:
            await self.bot.answer_callback_query(callback_query_id, text=text)
        except TelegramError as exc:
            log.info("telegram channel %s: callback not answered: %s", self.name, exc)

    async def _remove_keyboard(self, chat_id: int, message_id: int) -> None:
        try:
            await self.bot.edit_message_reply_markup(chat_id, message_id, reply_markup=None)
        except TelegramError as exc:
            log.info("telegram channel %s: keyboard not removed: %s", self.name, exc)

    # --- delivery ---------------------------------------------------------------------------

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

    async def _send(
        self,
        part: TextPart | PhotoPart,
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
            if isinstance(part, PhotoPart):
                try:
                    return await self.bot.send_for_id(
                        "sendPhoto",
                        {
                            "photo": part.url,
                            "caption": part.caption,
                            "parse_mode": part.parse_mode,
                            "reply_markup": markup,
                            **common,
                        },
                    )
                except BadRequest as exc:
                    if not _PHOTO_FAILURES.search(exc.message):
                        raise
                    log.info(
                        "telegram channel %s: photo not sent (%s); sending text",
                        self.name,
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
            seconds = _retry_seconds(exc)
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
        except (NetworkError, TelegramError) as exc:  # TimedOut is a NetworkError
            raise DeliveryRetryable(f"Telegram request failed: {exc}") from None


TELEGRAM = AdapterType(TelegramOptions, TelegramAdapter)
