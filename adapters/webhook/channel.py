"""The webhook channel: its options, the adapter, and the registry entry ``WEBHOOK``.

Inbound ``POST /webhook/{channel}/events`` answers:

======  ===========================================================================
200     ``{"status": "accepted"}`` or ``{"status": "duplicate"}`` (committed)
400     the body is not a usable event (not UTF-8 JSON, nested deeper than 64, values the
        database cannot store, an attachment URL not allowed); ``{"error": "<one line>"}``
401     missing, wrong or stale signature; nothing was accepted
408     the body did not arrive within ``[http] body_timeout_seconds``
413     the body or the text is too long
503     the channel is not running or the event could not be stored (``Retry-After``)
======  ===========================================================================

An event may carry ``attachments: [{"url", "name"?, "mime_type"?}]`` (at most 10; ``text`` is
then the caption and may be left out): each URL must be an absolute http(s) URL on a host in
``allowed_attachment_hosts`` (empty by default: no attachments accepted), else the event is
answered 400 with the reason and nothing is stored. The bridge fetches the files later, in the
worker (:mod:`adapters.webhook.attachments`: internal addresses only when listed literally,
checked on the resolved addresses; no redirects, credentials or proxies).

Replies are POSTed to ``deliver_url``: ``{"outbox_id", "conversation_id", "user_id",
"elements"}``, the response elements in their TextchatV2 wire form as Parloa sent them, so a
``payload`` element with ``attachments`` (``{"type": "image" | "file" | "audio" | "video",
"url", "name"?, "caption"?}``, bridge/media/outbound.py) reaches the receiver as it is: the
integrator renders it; the bridge neither downloads nor rewrites those URLs. The receiver's
status decides what happens: 2xx sent, 429 wait (``Retry-After``, seconds or an HTTP date,
honoured from 1 s up to an hour; without one, or under 1 s, the 429 counts as a failed attempt
and is backed off) and retry, 5xx / timeout / connection error retry, 410 the recipient is gone
(the conversation ends), any other status the message is dropped. Redirects are not followed
(a signed request must reach the configured URL). With tracing on (bridge/tracing.py) each
reply carries the W3C ``traceparent`` of its delivery span, in the trace of the event it answers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from yarl import URL

from adapters.webhook.attachments import AttachmentFetcher, HostPolicy, policy_problem
from adapters.webhook.convert import (
    DEFAULT_MAX_TEXT_LENGTH,
    InvalidEvent,
    encode,
    parse_body,
    render,
    to_inbound,
    typing_body,
)
from bridge.channel import (
    AcceptResult,
    Adapter,
    AdapterServices,
    AdapterType,
    Delivery,
    DeliveryRejected,
    DeliveryRetryable,
    Intake,
    IntakeRefused,
    IntakeUnavailable,
    RecipientGone,
    inbound_problem,
)
from bridge.media.attachments import Attachment, Download
from bridge.signed_http import RequestRefused, SignedPoster, answer_error, read_signed_body
from bridge.signed_http import error_response as _error

log = logging.getLogger("adapters.webhook")

#: Seconds a sender is asked to wait when the event could not be stored.
RETRY_AFTER_SECONDS = 5
#: Shortest accepted ``secret``.
MIN_SECRET_LENGTH = 16
#: How much of a receiver's answer is read (for ``message_id`` and error excerpts).
MAX_RESPONSE_BYTES = 64 * 1024


class WebhookOptions(BaseModel):
    """The options of a ``type = "webhook"`` channel (the channel's extra configuration keys)."""

    # hide_input_in_errors: a too-short secret must not be echoed in a validation error.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    #: HMAC-SHA256 key shared with the integrator (at least 16 characters); signs events in
    #: and replies out.
    secret: SecretStr
    #: Where replies (and typing notices) are POSTed; an http:// or https:// URL.
    deliver_url: str
    #: Longest accepted ``text`` in characters; longer events are refused with 413.
    max_text_length: Annotated[int, Field(ge=1)] = DEFAULT_MAX_TEXT_LENGTH
    #: Largest accepted event body in bytes; larger ones are refused with 413.
    max_body_bytes: Annotated[int, Field(ge=256)] = 64 * 1024
    #: Total time for one POST to ``deliver_url`` (connect, send, answer) before it is retried.
    request_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    #: How far ``X-Bridge-Timestamp`` may be from this host's clock (replay protection).
    signature_tolerance_seconds: Annotated[float, Field(gt=0)] = 300.0
    #: POST ``{"typing": true, ...}`` to ``deliver_url`` while the bot is thinking.
    send_typing: bool = False
    #: Hosts an event's ``attachments`` may be fetched from: names (``files.example.com``),
    #: ``*.example.com`` for its subdomains, IP addresses, or ``*`` for any host. Loopback,
    #: private, link-local, multicast, reserved and unspecified addresses are fetched only
    #: from a host listed literally (never through a wildcard). Empty: no attachments.
    allowed_attachment_hosts: list[str] = []
    #: Seconds to connect to an attachment's host, and at most between two reads of its body.
    attachment_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0

    # The messages name their key: bridge.config.describe_errors prints a value error's
    # message without its location.
    @field_validator("secret")
    @classmethod
    def _long_secret(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(f"secret: must be at least {MIN_SECRET_LENGTH} characters")
        return value

    @field_validator("allowed_attachment_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        problem = policy_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("deliver_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        problem = "deliver_url: must be an http:// or https:// URL"
        try:
            url = URL(value)
        except ValueError:
            raise ValueError(problem) from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(problem)
        return value


def _message_id(raw: bytes) -> str | None:
    """``message_id`` from a JSON answer, when there is one."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    value = body.get("message_id")
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


class WebhookAdapter(Adapter):
    """One webhook channel. Intake runs between :meth:`start` and :meth:`stop`; before and
    after, events are answered 503 so the sender retries."""

    def __init__(self, name: str, options: WebhookOptions, services: AdapterServices) -> None:
        super().__init__(name)
        self.options = options
        self._services = services
        self._intake: Intake | None = None
        self._poster = SignedPoster(
            url=options.deliver_url,
            secret=self._secret(),
            timeout_seconds=options.request_timeout_seconds,
            user_agent="parloa-bridge-webhook",
            max_answer_bytes=MAX_RESPONSE_BYTES,
            what="deliver_url",
            owner="webhook channel",
        )
        self._attachment_hosts = HostPolicy.of(options.allowed_attachment_hosts)
        self._fetcher = AttachmentFetcher(
            self._attachment_hosts, options.attachment_timeout_seconds
        )

    def __repr__(self) -> str:
        # The secret stays a SecretStr; name only what helps an operator.
        return f"WebhookAdapter(name={self.name!r}, deliver_url={self.options.deliver_url!r})"

    @property
    def events_path(self) -> str:
        return f"/webhook/{self.name}/events"

    def routes(self) -> Sequence[web.RouteDef]:
        return [web.post(self.events_path, self._handle_event)]

    async def start(self, intake: Intake) -> None:
        await self._poster.start()
        self._intake = intake
        log.info("webhook channel %s: receiving events on %s", self.name, self.events_path)

    async def stop_intake(self) -> None:
        # Events are answered 503 from now on; replies still go out until stop().
        self._intake = None

    async def stop(self) -> None:
        self._intake = None
        await self._fetcher.close()
        if await self._poster.close():
            log.info("webhook channel %s: stopped", self.name)

    def status(self) -> Mapping[str, Any]:
        return {"started": self._intake is not None}

    # --- inbound ----------------------------------------------------------------------------

    def _secret(self) -> bytes:
        return self.options.secret.get_secret_value().encode("utf-8")

    async def _handle_event(self, request: web.Request) -> web.Response:
        intake = self._intake
        unavailable = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        if intake is None:
            return _error(503, "channel is not running", unavailable)
        try:
            raw = await read_signed_body(
                request,
                self._secret(),
                max_bytes=self.options.max_body_bytes,
                tolerance=self.options.signature_tolerance_seconds,
            )
        except RequestRefused as exc:
            if exc.status == 401:
                log.info("webhook channel %s: refused an event: %s", self.name, exc.reason)
            return _error(exc.status, exc.reason)
        try:
            event = to_inbound(
                parse_body(raw),
                max_text_length=self.options.max_text_length,
                attachment_hosts=self._attachment_hosts,
            )
        except InvalidEvent as exc:
            log.info("webhook channel %s: invalid event: %s", self.name, exc.reason)
            return _error(exc.status, exc.reason)
        refused = inbound_problem(self.name, event)
        if refused is not None:
            log.info("webhook channel %s: invalid event: %s", self.name, refused)
            return _error(400, refused)
        try:
            result = await intake.accept(event)
        except IntakeRefused as exc:
            log.warning("webhook channel %s: event %s refused: %s", self.name, event.event_id, exc)
            return _error(400, "the event cannot be stored")
        except IntakeUnavailable:
            log.warning(
                "webhook channel %s: event %s could not be stored; asked the sender to retry",
                self.name,
                event.event_id,
            )
            return _error(503, "temporarily unavailable, retry later", unavailable)
        # Only now, with the event committed, may the sender consider it delivered.
        log.debug("webhook channel %s: event %s %s", self.name, event.event_id, result.value)
        status = "duplicate" if result is AcceptResult.DUPLICATE else "accepted"
        return web.json_response({"status": status})

    def open_attachment(self, attachment: Attachment) -> AbstractAsyncContextManager[Download]:
        """The bytes at the attachment's URL (see :mod:`adapters.webhook.attachments`)."""
        return self._fetcher.open(attachment)

    # --- outbound ---------------------------------------------------------------------------

    async def deliver(self, delivery: Delivery) -> None:
        # The whole delivery is one part: once it was accepted there is nothing left to send.
        if delivery.parts_done >= 1:
            return
        status, headers, answer = await self._poster.post(
            encode(render(delivery)), delivery.traceparent
        )
        error = answer_error(self._poster.what, status, headers, answer)
        if error is None:
            message_id = _message_id(answer)
            log.debug(
                "webhook channel %s: delivered outbox %s (message id %s)",
                self.name,
                delivery.outbox_id,
                message_id,
            )
            await delivery.progress(0, message_id)
            return
        if status == 410:  # read before the core's mapping, which would reject it
            raise RecipientGone(str(error))
        raise error

    async def typing(self, address: Mapping[str, Any]) -> None:
        if not self.options.send_typing:
            return
        try:
            status, _headers, _answer = await self._poster.post(encode(typing_body(address)))
        except (DeliveryRetryable, DeliveryRejected) as exc:
            log.debug("webhook channel %s: typing notice failed: %s", self.name, exc)
            return
        if not 200 <= status < 300:
            log.debug("webhook channel %s: typing notice answered %s", self.name, status)


WEBHOOK = AdapterType(WebhookOptions, WebhookAdapter)
