"""The Telegram channel, on python-telegram-bot's ``Bot`` inside the service's event loop.

Intake is durable in both modes. Polling (polling.py): one replica holds the ``poller`` lease
and calls getUpdates; an update's offset is passed on (which confirms it to Telegram) only
after the update was committed to the inbox. Webhook: the update is committed before the 2xx;
when the database is unavailable Telegram gets 503 with Retry-After and sends the update again.

Media: a photo, document, voice note, audio, video, video note, sticker, location, venue or
contact is an event with its caption as text and the file described as an attachment (its file
id; media.py); nothing is downloaded at intake. The core's worker later asks
``open_attachment`` for the bytes: getFile, then the file streamed from the Bot API's file URL on
a connection pool of its own (files.py). Files Parloa sends go out by URL (media_render.py).

A chip press is deduplicated per keyboard (its event id names the keyboard), so a keyboard
can be used once however often it is pressed. Its value is read back from the stored reply
(keyboards.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from aiohttp import web
from telegram import Update
from telegram.error import InvalidToken, TelegramError

from adapters.telegram.aiohttp_request import AiohttpRequest
from adapters.telegram.bot import ALLOWED_UPDATES, BridgeBot
from adapters.telegram.budgets import SendBudgets
from adapters.telegram.delivery import Sender
from adapters.telegram.files import download_request, open_file
from adapters.telegram.keyboards import (
    LEGACY_STATE_KEY,
    LegacyButton,
    ReplyButton,
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
from adapters.telegram.polling import Poller
from adapters.telegram.recipients import look_up
from adapters.telegram.render import RenderOptions, render
from adapters.telegram.webhook import refused, secret_refusal, unavailable
from bridge.channel import (
    AcceptResult,
    Adapter,
    AdapterServices,
    AdapterType,
    Delivery,
    Inbound,
    Intake,
    IntakeRefused,
    IntakeUnavailable,
    Recipient,
    RecipientUnavailable,
    UnreadableBody,
    inbound_problem,
    loads_object,
)
from bridge.channelkit import TaskSet
from bridge.media.attachments import Attachment, Download

log = logging.getLogger("adapters.telegram")


def build_bot(options: TelegramOptions) -> BridgeBot:
    """The channel's bot: one connection pool for sending, a small one for getUpdates."""
    root = options.api_base_url
    timeout = options.request_timeout_seconds
    return BridgeBot(
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


class TelegramAdapter(Adapter):
    def __init__(self, name: str, options: TelegramOptions, services: AdapterServices) -> None:
        super().__init__(name)
        self.options = options
        self._services = services
        self.bot = build_bot(options)
        self._budgets = budgets = SendBudgets(
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
        self._sender = Sender(name, self.bot, budgets, self._render)
        # Downloads get a pool of their own: a large file must not hold up replies.
        self._downloads = download_request(options)
        self._identity: BotIdentity | None = None
        self._intake: Intake | None = None
        self._poller: asyncio.Task[None] | None = None
        self._polling: Poller | None = None
        self._background = TaskSet(log)
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
        role = self._polling.role if self._polling is not None else self._role
        return {"mode": self.options.mode, "role": role, "bot": bot}

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
            self._polling = Poller(self.name, self.bot, self.options, self._store_updates)
            self._poller = asyncio.create_task(
                self._polling.run(intake), name=f"telegram-poll-{self.name}"
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
        polling, self._polling = self._polling, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await poller
        if intake is not None and polling is not None and polling.role == "leader":
            with contextlib.suppress(Exception):
                await intake.state.release_lease("poller", intake.instance_id)
        if self._role != "stopped":
            self._role = "stopping"

    async def stop(self) -> None:
        await self.stop_intake()
        await self._background.close()
        await self._downloads.shutdown()
        if self._initialized:
            with contextlib.suppress(Exception):
                await self.bot.shutdown()
            self._initialized = False
        self._role = "stopped"

    # --- polling (the loop is polling.py) ---------------------------------------------------

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
                    await self._accept_batch(intake, batch, None)
                    batch = []
                try:
                    await self._press(intake, normal)
                except IntakeRefused as exc:
                    self._skipped(update_id, exc)
            elif isinstance(normal, Inbound):
                batch.append(normal)
            if isinstance(update_id, int):
                offset = update_id + 1
        if batch or (updates and offset is not None):
            state = {"offset": str(offset)} if offset is not None else None
            await self._accept_batch(intake, batch, state)
        return offset

    async def _accept_batch(
        self, intake: Intake, batch: list[Inbound], state: Mapping[str, str] | None
    ) -> None:
        """accept_many; when the store refuses an event for good, the others are stored one
        by one and it is skipped, so that polling never asks for the same batch for ever."""
        try:
            await intake.accept_many(batch, state)
        except IntakeRefused:
            for event in batch:
                try:
                    await intake.accept(event)
                except IntakeRefused as exc:
                    self._skipped(event.event_id, exc)
            if state is not None:
                await intake.accept_many([], state)

    def _skipped(self, update_id: object, exc: Exception) -> None:
        log.warning(
            "telegram channel %s: update %s refused by the store; skipped: %s",
            self.name,
            update_id,
            exc,
        )

    # --- webhook ----------------------------------------------------------------------------

    async def _handle_webhook(self, request: web.Request) -> web.Response:
        refusal = secret_refusal(request, self.options.webhook_secret, self.name)
        if refusal is not None:
            return refusal
        intake = self._intake
        if intake is None or self.options.mode != "webhook":
            return unavailable("not running")
        try:
            data = loads_object(await request.read())
        except UnreadableBody as exc:
            log.info("telegram channel %s: webhook request refused: %s", self.name, exc)
            return refused(exc)
        try:
            await self._handle_update(intake, data)
        except IntakeUnavailable:
            return unavailable("temporarily unavailable")
        except IntakeRefused as exc:
            log.warning("telegram channel %s: update refused: %s", self.name, exc)
            return refused(exc)
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
        """An update as an event to accept, a chip press, or None (skipped, logged). An
        event the store would refuse (NUL characters, ids too long) is skipped here."""
        try:
            normal = self._read(data)
            if isinstance(normal, Inbound):
                problem = inbound_problem(self.name, normal)
                if problem is not None:
                    log.warning(
                        "telegram channel %s: update %s skipped: %s",
                        self.name,
                        normal.event_id,
                        problem,
                    )
                    return None
            return normal
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
                self._background.spawn(
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
            self._background.spawn(
                self._answer(press.callback_query_id, "This choice is no longer available."),
                "telegram-answer-callback",
            )
            return
        # The keyboard is the event id: a second press of it is a duplicate.
        event = dataclasses.replace(press.inbound(value), event_id=f"tg:kb:{pressed.keyboard}")
        problem = inbound_problem(self.name, event)
        if problem is not None:
            raise IntakeRefused(problem)
        result = await intake.accept(event)
        note = None if result is AcceptResult.ACCEPTED else "Already chosen."
        self._background.spawn(
            self._answer(press.callback_query_id, note), "telegram-answer-callback"
        )
        if result is AcceptResult.ACCEPTED and press.chat_id and press.message_id:
            self._background.spawn(
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

    # --- attachments (files.py) -------------------------------------------------------------

    def open_attachment(self, attachment: Attachment) -> AbstractAsyncContextManager[Download]:
        """getFile, then the file streamed from the Bot API's file URL."""
        return open_file(self.bot, self._downloads, attachment)

    # --- conversations the bot starts (recipients.py) ---------------------------------------

    async def recipient(self, who: str) -> Recipient:
        if not self._initialized:
            raise RecipientUnavailable(f"telegram channel {self.name} is not started")
        return await look_up(self.bot, self._budgets, who, self._normalize)

    # --- delivery (delivery.py) -------------------------------------------------------------

    async def typing(self, address: Mapping[str, Any]) -> None:
        await self._sender.typing(address)

    async def deliver(self, delivery: Delivery) -> None:
        await self._sender.deliver(delivery)


TELEGRAM = AdapterType(TelegramOptions, TelegramAdapter)
