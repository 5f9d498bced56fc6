"""The Slack channel on slack-bolt (async) and slack-sdk, inside the service's event loop.

Bolt runs with ``process_before_response``: a listener commits the event to the inbox and only
then does Bolt answer Slack (HTTP) or ack the envelope (Socket Mode) — well within Slack's 3 s,
and never after Parloa. When the commit fails the request gets 503, so Slack sends it again.
Retries and double deliveries (an ``app_mention`` and a ``message`` for one post) share one
deduplication key, so they never reach Parloa twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import ClientError, web
from aiolimiter import AsyncLimiter
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import AsyncSQLAlchemyOAuthStateStore
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.normalize import (
    BotIdentity,
    Ignored,
    ThreadReply,
    action_to_inbound,
    command_to_inbound,
    event_to_inbound,
    pressed_message,
)
from adapters.slack.options import SlackOptions
from adapters.slack.render import RenderOptions, pressed_blocks, render
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
from bridge.channelkit import TaskSet, retry_after_seconds
from bridge.ratelimit import KeyedLimiter, PauseBoard

log = logging.getLogger("adapters.slack")

# Errors after which nobody will read what we send there.
_GONE = {
    "channel_not_found",
    "is_archived",
    "not_in_channel",
    "account_inactive",
    "token_revoked",
    "team_access_not_granted",
    "user_not_found",
}
_RETRYABLE = {
    "ratelimited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
}
_CHIP = re.compile(r"^chip_")
#: A 429 without a usable Retry-After pauses the channel this long.
DEFAULT_RETRY_AFTER_SECONDS = 1.0


class SlackAdapter(Adapter):
    def __init__(self, name: str, options: SlackOptions, services: AdapterServices) -> None:
        super().__init__(name)
        self.options = options
        self._services = services
        token = options.bot_token.get_secret_value() if options.bot_token else None
        self.client = AsyncWebClient(token=token, base_url=options.api_base_url)
        self._render = RenderOptions(chips_prompt=options.chips_prompt)
        self._channels = KeyedLimiter.per_second(options.channel_messages_per_second)
        self._workspaces = KeyedLimiter(
            lambda _key: AsyncLimiter(options.workspace_messages_per_minute, 60)
        )
        self._paused = PauseBoard()
        self._profiles: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
        self._intake: Intake | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._background = TaskSet(log)
        self._identity: BotIdentity | None = None  # single-workspace mode
        self.installation_store: AsyncSQLAlchemyInstallationStore | None = None
        self.app = self._build_app()

    def __repr__(self) -> str:
        return f"SlackAdapter(name={self.name!r}, mode={self.options.mode!r})"

    # --- bolt -------------------------------------------------------------------------------

    @property
    def base_path(self) -> str:
        return f"/slack/{self.name}"

    def _build_app(self) -> AsyncApp:
        opts = self.options
        signing = opts.signing_secret.get_secret_value() if opts.signing_secret else "unused"
        common: dict[str, Any] = {
            "client": self.client,
            "signing_secret": signing,
            "process_before_response": True,
            "request_verification_enabled": opts.mode == "http",
            "logger": logging.getLogger("adapters.slack.bolt"),
        }
        if opts.oauth:
            assert opts.client_id is not None and opts.client_secret is not None
            engine = self._services.sql_engine
            if engine is None:
                raise RuntimeError("Slack OAuth needs the bridge's database")
            self.installation_store = AsyncSQLAlchemyInstallationStore(
                client_id=opts.client_id, engine=engine
            )
            public = (self._services.public_url or "").rstrip("/")
            app = AsyncApp(
                **common,
                installation_store=self.installation_store,
                oauth_settings=AsyncOAuthSettings(
                    client_id=opts.client_id,
                    client_secret=opts.client_secret.get_secret_value(),
                    scopes=opts.scopes,
                    install_path=f"{self.base_path}/install",
                    redirect_uri_path=f"{self.base_path}/oauth_redirect",
                    redirect_uri=f"{public}{self.base_path}/oauth_redirect" if public else None,
                    installation_store=self.installation_store,
                    state_store=AsyncSQLAlchemyOAuthStateStore(
                        expiration_seconds=600, engine=engine
                    ),
                ),
            )
            app.enable_token_revocation_listeners()
        else:
            app = AsyncApp(**common)  # the client carries the bot token
        app.event("message")(self._on_event)
        app.event("app_mention")(self._on_event)
        app.action(_CHIP)(self._on_action)
        app.command(re.compile(r".*"))(self._on_command)
        if not opts.oauth:
            app.event("app_uninstalled")(self._on_uninstalled)
            app.event("tokens_revoked")(self._on_uninstalled)
        # Every other event type is acknowledged (200) and dropped: Bolt would answer 404,
        # which Slack retries and counts towards disabling the subscription.
        app.event(re.compile(r".*"))(self._on_other_event)
        app.error(self._on_error)
        return app

    def routes(self) -> Sequence[web.RouteDef]:
        routes = [web.post(f"{self.base_path}/events", self._handle_http)]
        if self.options.oauth:
            routes += [
                web.get(f"{self.base_path}/install", self._handle_http),
                web.get(f"{self.base_path}/oauth_redirect", self._handle_http),
            ]
        return routes

    async def _handle_http(self, request: web.Request) -> web.Response:
        if self._intake is None or self.options.mode != "http":
            return web.json_response(
                {"error": "not running"}, status=503, headers={"Retry-After": "5"}
            )
        bolt_request = await to_bolt_request(request)
        oauth = self.app.oauth_flow
        if request.method == "GET" and oauth is not None:
            if request.path == oauth.install_path:
                return await to_aiohttp_response(await oauth.handle_installation(bolt_request))
            if request.path == oauth.redirect_uri_path:
                return await to_aiohttp_response(await oauth.handle_callback(bolt_request))
        return await to_aiohttp_response(await self.app.async_dispatch(bolt_request))

    async def _on_error(self, error: Exception, body: Any) -> BoltResponse:
        if isinstance(error, IntakeUnavailable):
            log.warning(
                "slack channel %s: event not stored (%s); Slack will retry", self.name, error
            )
            return BoltResponse(status=503, body="", headers={"Retry-After": "5"})
        log.error("slack channel %s: event failed: %r", self.name, error)
        return BoltResponse(status=500, body="")

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self, intake: Intake) -> None:
        if not self.options.oauth:
            try:
                auth = await self.client.auth_test()
            except SlackApiError as exc:
                raise RuntimeError(
                    f"Slack refused the bot token: {exc.response.get('error')}"
                ) from None
            except (ClientError, TimeoutError) as exc:
                raise RuntimeError(f"cannot reach the Slack Web API: {exc!r}") from None
            self._identity = BotIdentity(
                user_id=str(auth["user_id"]),
                bot_id=auth.get("bot_id"),
                team_id=str(auth["team_id"]),
            )
        self._intake = intake
        if self.options.mode == "socket":
            assert self.options.app_token is not None
            self._socket = AsyncSocketModeHandler(
                self.app,
                self.options.app_token.get_secret_value(),
                web_client=AsyncWebClient(base_url=self.options.api_base_url),
            )
            await self._socket.connect_async()  # type: ignore[no-untyped-call]
        log.info(
            "slack channel %s started (%s%s)",
            self.name,
            self.options.mode,
            ", OAuth installs" if self.options.oauth else "",
        )

    async def stop_intake(self) -> None:
        self._intake = None
        socket, self._socket = self._socket, None
        if socket is not None:
            with contextlib.suppress(Exception):
                await socket.close_async()  # type: ignore[no-untyped-call]

    async def stop(self) -> None:
        await self.stop_intake()
        await self._background.close()

    def status(self) -> Mapping[str, Any]:
        return {"mode": self.options.mode, "oauth": self.options.oauth}

    # --- intake -----------------------------------------------------------------------------

    def _bot(self, context: AsyncBoltContext, team_id: str) -> BotIdentity:
        if self._identity is not None and not self.options.oauth:
            return self._identity
        return BotIdentity(
            user_id=context.bot_user_id or "", bot_id=context.bot_id, team_id=team_id
        )

    def _live_intake(self) -> Intake:
        intake = self._intake
        if intake is None:
            raise IntakeUnavailable("channel is not running")
        return intake

    async def _on_event(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        intake = self._live_intake()
        event = body.get("event") or {}
        team_id = str(body.get("team_id") or context.team_id or "")
        result = event_to_inbound(event, team_id, self._bot(context, team_id))
        if isinstance(result, Ignored):
            log.debug("slack channel %s: event ignored: %s", self.name, result.reason)
            return
        if isinstance(result, ThreadReply):
            # A reply in a thread is ours only where the bot holds a conversation.
            if not await intake.conversation_exists(result.thread_key):
                return
            result = result.inbound
        await intake.accept(await self._with_profile(result, team_id, context))

    async def _on_action(self, ack: Any, body: dict[str, Any], context: AsyncBoltContext) -> None:
        intake = self._live_intake()
        team_id = str((body.get("team") or {}).get("id") or context.team_id or "")
        result = action_to_inbound(body, self._bot(context, team_id))
        if not isinstance(result, Ignored):
            accepted = await intake.accept(await self._with_profile(result, team_id, context))
            message = pressed_message(body)
            if message is not None and accepted is AcceptResult.ACCEPTED:
                self._background.spawn(
                    self._mark_pressed(body, message, result.text, context), "slack-mark-pressed"
                )
        await ack()

    async def _on_command(self, ack: Any, body: dict[str, Any], context: AsyncBoltContext) -> None:
        intake = self._live_intake()
        team_id = str(body.get("team_id") or context.team_id or "")
        result = command_to_inbound(body, self._bot(context, team_id))
        if not isinstance(result, Ignored):
            await intake.accept(await self._with_profile(result, team_id, context))
        await ack()

    async def _on_other_event(self, body: dict[str, Any]) -> None:
        kind = (body.get("event") or {}).get("type")
        log.debug("slack channel %s: event %r ignored", self.name, kind)

    async def _on_uninstalled(self, body: dict[str, Any]) -> None:
        log.error(
            "slack channel %s: the app was uninstalled or its tokens revoked in team %s",
            self.name,
            body.get("team_id"),
        )

    async def _mark_pressed(
        self, body: dict[str, Any], message: tuple[str, str], chosen: str, context: AsyncBoltContext
    ) -> None:
        channel, ts = message
        blocks = (body.get("message") or {}).get("blocks") or []
        title = chosen
        for action in body.get("actions") or []:
            text = (action.get("text") or {}).get("text")
            if action.get("value") == chosen and isinstance(text, str):
                title = text
        try:
            await self.client.chat_update(
                token=context.bot_token,
                channel=channel,
                ts=ts,
                text=(body.get("message") or {}).get("text") or title,
                blocks=pressed_blocks(blocks, title),
            )
        except (SlackApiError, ClientError, TimeoutError) as exc:
            log.info("slack channel %s: buttons not updated: %s", self.name, exc)

    async def _with_profile(
        self, inbound: Inbound, team_id: str, context: AsyncBoltContext
    ) -> Inbound:
        """Add the user's name and locale (users.info, cached; never slower than the limit)."""
        profile = await self._profile(team_id, inbound.user_id, context.bot_token)
        if not profile:
            return inbound
        return dataclasses.replace(inbound, context={**inbound.context, **profile})

    async def _profile(self, team_id: str, user_id: str, token: str | None) -> dict[str, str]:
        key = (team_id, user_id)
        cached = self._profiles.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.options.profile_cache_seconds:
            return cached[1]
        profile: dict[str, str] = {}
        try:
            async with asyncio.timeout(self.options.profile_timeout_seconds):
                info = await self.client.users_info(token=token, user=user_id, include_locale=True)
            user = info.get("user") or {}
            names = user.get("profile") or {}
            name = names.get("display_name") or names.get("real_name") or user.get("real_name")
            if name:
                profile["userName"] = str(name)
            if user.get("locale"):
                profile["locale"] = str(user["locale"])
            if user.get("tz"):
                profile["timezone"] = str(user["tz"])
        except (SlackApiError, ClientError, TimeoutError) as exc:
            log.debug("slack channel %s: no profile for %s: %s", self.name, user_id, exc)
            return {}
        self._profiles[key] = (now, profile)
        if len(self._profiles) > 10_000:
            self._profiles.pop(next(iter(self._profiles)))
        return profile

    # --- delivery ---------------------------------------------------------------------------

    async def _token(self, team_id: str) -> str | None:
        if self.installation_store is None:
            return None  # the client's own token
        bot = await self.installation_store.async_find_bot(enterprise_id=None, team_id=team_id)
        if bot is None:
            raise RecipientGone(f"the app is not installed in team {team_id}")
        return str(bot.bot_token)

    async def deliver(self, delivery: Delivery) -> None:
        address = delivery.address
        channel = address.get("channel")
        team_id = str(address.get("team_id") or "")
        if not isinstance(channel, str):
            raise DeliveryRejected(f"no Slack channel in the reply address {dict(address)!r}")
        key = f"{team_id}:{channel}"
        token = await self._token(team_id)
        messages = render(delivery.elements, self._render)
        for index in range(delivery.parts_done, len(messages)):
            paused = self._paused.remaining(key) or self._paused.remaining(team_id)
            if paused:
                raise DeliveryRetryable("paused after a 429", paused, rate_limited=True)
            await self._channels.acquire(key)
            await self._workspaces.acquire(team_id)
            message = messages[index]
            try:
                response = await self.client.chat_postMessage(
                    token=token,
                    channel=channel,
                    text=message.text,
                    blocks=list(message.blocks),
                    thread_ts=address.get("thread_ts"),
                )
            except SlackApiError as exc:
                raise self._delivery_error(exc, key) from None
            except (ClientError, TimeoutError) as exc:
                raise DeliveryRetryable(f"Slack request failed: {exc!r}") from None
            await delivery.progress(index, str(response.get("ts")))

    def _delivery_error(self, exc: SlackApiError, key: str) -> Exception:
        response = exc.response
        error = str(response.get("error") or "")
        if response.status_code == 429 or error == "ratelimited":
            retry_after = (
                retry_after_seconds(response.headers.get("Retry-After"))
                or DEFAULT_RETRY_AFTER_SECONDS
            )
            self._paused.pause(key, retry_after)
            return DeliveryRetryable(f"Slack said 429 ({error})", retry_after, rate_limited=True)
        if error in _GONE or error == "invalid_auth":
            return RecipientGone(error)
        if error in _RETRYABLE or response.status_code >= 500:
            return DeliveryRetryable(f"Slack failed: {error or response.status_code}")
        return DeliveryRejected(error or f"HTTP {response.status_code}")


SLACK = AdapterType(SlackOptions, SlackAdapter)
