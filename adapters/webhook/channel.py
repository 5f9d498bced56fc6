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
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from yarl import URL

from adapters.webhook.attachments import AttachmentFetcher, HostPolicy, policy_problem
from adapters.webhook.convert import (
    DEFAULT_MAX_TEXT_LENGTH,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    InvalidEvent,
    encode,
    parse_body,
    render,
    signed_headers,
    to_inbound,
    typing_body,
    verify_signature,
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
from bridge.channelkit import retry_after_seconds
from bridge.media.attachments import Attachment, Download

log = logging.getLogger("adapters.webhook")

#: Seconds a sender is asked to wait when the event could not be stored.
RETRY_AFTER_SECONDS = 5
#: Shortest accepted ``secret``.
MIN_SECRET_LENGTH = 16
#: The shortest Retry-After honoured as a rate limit (see :func:`rate_limited`).
MIN_RETRY_AFTER_SECONDS = 1.0
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


def _excerpt(raw: bytes, limit: int = 200) -> str:
    return " ".join(raw[:limit].decode("utf-8", "replace").split())


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


async def _read_capped(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """Up to ``limit`` bytes of a body; the rest is left unread."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


def rate_limited(message: str, header: str | None) -> DeliveryRetryable:
    """The retry a 429 asks for. A wait from ``MIN_RETRY_AFTER_SECONDS`` up to an hour is
    honoured without spending an attempt; a 429 without a usable wait (none, ``0``, a date in
    the past) is an ordinary failed attempt, backed off and counted, so a receiver answering
    ``Retry-After: 0`` for ever does not keep the conversation retrying at once for ever."""
    wait = retry_after_seconds(header)  # finite, capped at an hour
    if wait is None or wait < MIN_RETRY_AFTER_SECONDS:
        return DeliveryRetryable(message + " (no usable Retry-After)")
    return DeliveryRetryable(message, retry_after=wait, rate_limited=True)


def _error(status: int, reason: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": reason}, status=status, headers=headers)


class _BodyTooLarge(Exception):
    pass


class WebhookAdapter(Adapter):
    """One webhook channel. Intake runs between :meth:`start` and :meth:`stop`; before and
    after, events are answered 503 so the sender retries."""

    def __init__(self, name: str, options: WebhookOptions, services: AdapterServices) -> None:
        super().__init__(name)
        self.options = options
        self._services = services
        self._intake: Intake | None = None
        self._session: aiohttp.ClientSession | None = None
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
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.options.request_timeout_seconds),
                # Proxies from the environment are not wanted for a configured endpoint.
                trust_env=False,
                headers={"User-Agent": "parloa-bridge-webhook"},
            )
        self._intake = intake
        log.info("webhook channel %s: receiving events on %s", self.name, self.events_path)

    async def stop_intake(self) -> None:
        # Events are answered 503 from now on; replies still go out until stop().
        self._intake = None

    async def stop(self) -> None:
        self._intake = None
        await self._fetcher.close()
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()
            log.info("webhook channel %s: stopped", self.name)

    def status(self) -> Mapping[str, Any]:
        return {"started": self._intake is not None}

    # --- inbound ----------------------------------------------------------------------------

    def _secret(self) -> bytes:
        return self.options.secret.get_secret_value().encode("utf-8")

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.options.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _BodyTooLarge
        # The server has read the body already, within its own size limit and deadline
        # (bridge/http_server.py); this channel's limit may be smaller.
        raw = await request.read()
        if len(raw) > limit:
            raise _BodyTooLarge
        return raw

    async def _handle_event(self, request: web.Request) -> web.Response:
        intake = self._intake
        unavailable = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        if intake is None:
            return _error(503, "channel is not running", unavailable)
        try:
            raw = await self._read_body(request)
        except _BodyTooLarge:
            return _error(413, f"body is larger than {self.options.max_body_bytes} bytes")
        problem = verify_signature(
            self._secret(),
            request.headers.get(TIMESTAMP_HEADER),
            request.headers.get(SIGNATURE_HEADER),
            raw,
            now=time.time(),
            tolerance=self.options.signature_tolerance_seconds,
        )
        if problem is not None:
            log.info("webhook channel %s: refused an event: %s", self.name, problem)
            return _error(401, problem)
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

    async def _post(
        self, body: Mapping[str, Any], traceparent: str | None = None
    ) -> tuple[int, Mapping[str, str], bytes]:
        session = self._session
        if session is None or session.closed:
            raise DeliveryRetryable("webhook channel is not running")
        raw = encode(body)
        headers = {
            "Content-Type": "application/json",
            **signed_headers(self._secret(), str(int(time.time())), raw),
        }
        if traceparent is not None:
            # The receiver's own spans can join the trace of the event this answers.
            headers["traceparent"] = traceparent
        try:
            async with session.post(
                self.options.deliver_url, data=raw, headers=headers, allow_redirects=False
            ) as resp:
                answer = await _read_capped(resp.content, MAX_RESPONSE_BYTES)
                return resp.status, dict(resp.headers), answer
        except TimeoutError:
            raise DeliveryRetryable(
                f"deliver_url did not answer within {self.options.request_timeout_seconds}s"
            ) from None
        except aiohttp.ClientError as exc:
            raise DeliveryRetryable(f"deliver_url unreachable: {type(exc).__name__}") from None

    async def deliver(self, delivery: Delivery) -> None:
        # The whole delivery is one part: once it was accepted there is nothing left to send.
        if delivery.parts_done >= 1:
            return
        status, headers, answer = await self._post(render(delivery), delivery.traceparent)
        if 200 <= status < 300:
            message_id = _message_id(answer)
            log.debug(
                "webhook channel %s: delivered outbox %s (message id %s)",
                self.name,
                delivery.outbox_id,
                message_id,
            )
            await delivery.progress(0, message_id)
            return
        excerpt = _excerpt(answer)
        message = f"deliver_url answered {status}" + (f": {excerpt}" if excerpt else "")
        if status == 429:
            raise rate_limited(message, headers.get("Retry-After"))
        if status >= 500:
            raise DeliveryRetryable(
                message, retry_after=retry_after_seconds(headers.get("Retry-After"))
            )
        if status == 410:
            raise RecipientGone(message)
        raise DeliveryRejected(message)

    async def typing(self, address: Mapping[str, Any]) -> None:
        if not self.options.send_typing:
            return
        try:
            status, _headers, _answer = await self._post(typing_body(address))
        except (DeliveryRetryable, DeliveryRejected) as exc:
            log.debug("webhook channel %s: typing notice failed: %s", self.name, exc)
            return
        if not 200 <= status < 300:
            log.debug("webhook channel %s: typing notice answered %s", self.name, status)


WEBHOOK = AdapterType(WebhookOptions, WebhookAdapter)
