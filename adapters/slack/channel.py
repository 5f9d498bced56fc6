"""The Slack channel on slack-bolt (async) and slack-sdk, inside the service's event loop.

Bolt runs with ``process_before_response``: a listener commits the event to the inbox and only
then does Bolt answer Slack (HTTP) or ack the envelope (Socket Mode) — well within Slack's 3 s,
and never after Parloa. When the commit fails the request gets 503, so Slack sends it again;
an event the database could never store gets 400 (Socket Mode: acknowledged and skipped).
Over HTTP the signature is checked on the raw bytes, and the body read as Bolt will read it,
before Bolt parses anything (intake.py): garbage is 401 or 400, never a 500.
Retries and double deliveries (an ``app_mention`` and a ``message`` for one post) share one
deduplication key, so they never reach Parloa twice.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from aiohttp import ClientError, web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.desk import ACTION_PREFIX, DeskRooms, RoomCalls
from adapters.slack.download import SlackFiles, bot_token_for
from adapters.slack.http_intake import bolt_request_or_refusal
from adapters.slack.normalize import (
    BotIdentity,
    Ignored,
    ThreadReply,
    action_to_inbound,
    command_to_inbound,
    event_to_inbound,
    pressed_message,
)
from adapters.slack.oauth import RedactingInstallationStore, oauth_page, oauth_settings
from adapters.slack.options import SlackOptions
from adapters.slack.pacing import Pacing
from adapters.slack.profiles import Profiles
from adapters.slack.recipients import Recipients
from adapters.slack.render import (
    RenderOptions,
    SlackMessage,
    pressed_blocks,
    render,
    without_images,
)
from bridge.channel import (
    AcceptResult,
    Adapter,
    AdapterServices,
    AdapterType,
    Delivery,
    DeliveryRejected,
    DeliveryRetryable,
    DeskListener,
    DeskPost,
    Inbound,
    Intake,
    IntakeRefused,
    IntakeUnavailable,
    Recipient,
    RecipientGone,
    RecipientUnavailable,
    inbound_problem,
)
from bridge.channelkit import TaskSet
from bridge.media.attachments import Attachment, Download

log = logging.getLogger("adapters.slack")

_CHIP = re.compile(r"^chip_")


class SlackAdapter(Adapter):
    def __init__(self, name: str, options: SlackOptions, services: AdapterServices) -> None:
        super().__init__(name)
        self.options = options
        self._services = services
        token = options.bot_token.get_secret_value() if options.bot_token else None
        self.client = AsyncWebClient(token=token, base_url=options.api_base_url)
        self._render = RenderOptions(chips_prompt=options.chips_prompt)
        self._pacing = Pacing(options)
        self._profiles = Profiles(name, options, self.client)
        self._files = SlackFiles(self.client)
        self._recipients = Recipients(options, self.client, self._profiles, self._token)
        self._intake: Intake | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._background = TaskSet(log)
        self._identity: BotIdentity | None = None  # single-workspace mode
        # agents' rooms (human handover): kept out of intake
        rooms = RoomCalls(name, options.oauth, self._pacing, self._token, self._default_team)
        self._desks = DeskRooms(name, self.client, self._profiles, self._background, rooms)
        self.installation_store: RedactingInstallationStore | None = None
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
            assert opts.client_id is not None
            engine = self._services.sql_engine
            if engine is None:
                raise RuntimeError("Slack OAuth needs the bridge's database")
            store = RedactingInstallationStore(client_id=opts.client_id, engine=engine)
            self.installation_store = store
            public_url = self._services.public_url
            settings = oauth_settings(opts, store, engine, self.base_path, public_url)
            app = AsyncApp(**common, installation_store=store, oauth_settings=settings)
            app.enable_token_revocation_listeners()
        else:
            app = AsyncApp(**common)  # the client carries the bot token
        app.event("message")(self._on_event)
        app.event("app_mention")(self._on_event)
        app.action(_CHIP)(self._on_action)
        app.action(re.compile(f"^{ACTION_PREFIX}"))(self._on_desk_action)
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
        oauth = self.app.oauth_flow
        if request.method == "GET" and oauth is not None:
            page = await oauth_page(request, oauth)
            if page is not None:
                return page
        # The signature is checked on the raw bytes, and the body read as Bolt will read it,
        # before Bolt parses anything: Bolt has no guard against garbage.
        raw = await request.read()
        assert self.options.signing_secret is not None  # required in http mode
        secret = self.options.signing_secret.get_secret_value().encode()
        bolt_request = bolt_request_or_refusal(request, raw, secret, self.name)
        if isinstance(bolt_request, web.Response):
            return bolt_request
        return await to_aiohttp_response(await self.app.async_dispatch(bolt_request))

    async def _on_error(self, error: Exception, body: Any) -> BoltResponse:
        if isinstance(error, IntakeUnavailable):
            log.warning(
                "slack channel %s: event not stored (%s); Slack will retry", self.name, error
            )
            return BoltResponse(status=503, body="", headers={"Retry-After": "5"})
        # Sent again, these would fail again: 400 over HTTP; in Socket Mode, where only an
        # acknowledgement stops Slack sending it again, the envelope is acknowledged (skipped).
        refused = 200 if self.options.mode == "socket" else 400
        if isinstance(error, IntakeRefused):
            log.warning("slack channel %s: event refused: %s", self.name, error)
            return BoltResponse(status=refused, body="")
        # A payload of a shape Slack never sends (it was signed, so it is ours to refuse).
        log.warning("slack channel %s: event not understood: %r", self.name, error)
        return BoltResponse(status=refused, body="")

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
        await self._files.close()

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

    async def _accept(self, intake: Intake, event: Inbound) -> AcceptResult:
        """Accept ``event``, unless the store would refuse its values (IntakeRefused)."""
        problem = inbound_problem(self.name, event)
        if problem is not None:
            raise IntakeRefused(problem)
        return await intake.accept(event)

    async def _on_event(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        intake = self._live_intake()
        event = body.get("event") or {}
        team_id = str(body.get("team_id") or context.team_id or "")
        if await self._desks.message(
            event, team_id, self._bot(context, team_id), context.bot_token
        ):
            return  # an agents' room's
        result = event_to_inbound(event, team_id, self._bot(context, team_id))
        if isinstance(result, Ignored):
            log.debug("slack channel %s: event ignored: %s", self.name, result.reason)
            return
        if isinstance(result, ThreadReply):
            # A reply in a thread is ours only where the bot holds a conversation.
            if not await intake.conversation_exists(result.thread_key):
                return
            result = result.inbound
        await self._accept(intake, await self._profiles.enrich(result, team_id, context))

    async def _on_action(self, ack: Any, body: dict[str, Any], context: AsyncBoltContext) -> None:
        intake = self._live_intake()
        team_id = str((body.get("team") or {}).get("id") or context.team_id or "")
        result = action_to_inbound(body, self._bot(context, team_id))
        if not isinstance(result, Ignored):
            accepted = await self._accept(
                intake, await self._profiles.enrich(result, team_id, context)
            )
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
            await self._accept(intake, await self._profiles.enrich(result, team_id, context))
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

    # --- a handover desk in an agents' room (desk.py) ---------------------------------------

    def host_desk(self, room: str, listener: DeskListener) -> None:
        self._desks.host(room, listener)

    async def _on_desk_action(
        self, ack: Any, body: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        self._live_intake()  # not running: Slack shows the agent an error
        team_id = str((body.get("team") or {}).get("id") or context.team_id or "")
        await self._desks.action(body, self._bot(context, team_id), context.bot_token)
        await ack()

    async def post_to_room(self, room: str, post: DeskPost, thread: str | None = None) -> str:
        return await self._desks.post(room, post, thread)

    async def update_in_room(self, room: str, message_id: str, post: DeskPost) -> None:
        await self._desks.update(room, message_id, post)

    def _default_team(self) -> str:
        """The workspace of a single-workspace app, once started."""
        return self._identity.team_id if self._identity is not None else ""

    # --- delivery ---------------------------------------------------------------------------

    async def _token(self, team_id: str) -> str | None:
        if self.installation_store is None:
            return None  # the client's own token
        bot = await self.installation_store.async_find_bot(enterprise_id=None, team_id=team_id)
        if bot is None:
            raise RecipientGone(f"the app is not installed in team {team_id}")
        return str(bot.bot_token)

    # --- conversations the bot starts (recipients.py) ---------------------------------------

    async def recipient(self, who: str) -> Recipient:
        if self._intake is None:
            raise RecipientUnavailable(f"slack channel {self.name} is not started")
        team = self._identity.team_id if self._identity is not None else None
        return await self._recipients.look_up(who, team, only_default=not self.options.oauth)

    @contextlib.asynccontextmanager
    async def open_attachment(self, attachment: Attachment) -> AsyncIterator[Download]:
        team_id = attachment.locator.partition(":")[0]
        token = await bot_token_for(self.options, self.installation_store, team_id)
        async with self._files.open(attachment, token) as download:
            yield download

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
            await self._pacing.turn(key, team_id)
            message = messages[index]
            try:
                try:
                    response = await self._post(token, address, message)
                except SlackApiError as exc:
                    # Slack refuses a whole message whose image it cannot fetch: the images
                    # go again as links.
                    linked = without_images(message)
                    if exc.response.get("error") != "invalid_blocks" or linked is None:
                        raise
                    log.info("slack channel %s: image refused, sent as a link", self.name)
                    response = await self._post(token, address, linked)
            except SlackApiError as exc:
                raise self._pacing.error(exc, key, team_id) from None
            except (ClientError, TimeoutError) as exc:
                raise DeliveryRetryable(f"Slack request failed: {exc!r}") from None
            await delivery.progress(index, str(response.get("ts")))

    async def _post(
        self, token: str | None, address: Mapping[str, Any], message: SlackMessage
    ) -> Any:
        return await self.client.chat_postMessage(
            token=token,
            channel=address["channel"],
            text=message.text,
            blocks=list(message.blocks),
            thread_ts=address.get("thread_ts"),
        )


SLACK = AdapterType(SlackOptions, SlackAdapter)
