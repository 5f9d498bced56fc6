"""The web chat channel: a chat page served by the bridge itself, its options, the adapter, and
the registry entry ``WEBCHAT``.

Routes (``{name}`` is the channel's name)::

    GET /webchat/{name}/           the chat page (self-contained: inline CSS and JS, no CDN)
    GET /webchat/{name}/embed.js   <script src=".../embed.js" async></script> on any site adds a
                                   floating button that opens the page in a frame
    GET /webchat/{name}/ws         the WebSocket (403 for a foreign Origin, 503 when stopped)
    POST /webchat/{name}/upload    a file the user sends (see Uploads below)

A browser page may use the chat from its own origin, from an origin in ``allowed_origins``
(``["*"]``: any), and only those origins may frame the page. A client that sends no ``Origin``
is not a browser and is let through: the check protects users' browsers, not the endpoint.

Identity is issued by the server: a hello without a user gets an ``identity`` frame, a random
user id and its token (base64url HMAC-SHA256 over the channel and the id, keyed with
``identity_secret``, or a random key of the process when it is unset). The page keeps both in
``localStorage`` (which works in a cross-origin frame, where third-party cookies do not) and
sends them in every hello; a user id without a valid token is refused (``identity_refused``,
close code 4001), so a guessed id reads and writes nothing. The conversation is that user's
(conversation key = user id), so a reload continues it.

Limits (options): per socket and per client address, events are rate limited by token buckets
(``rate_limited``: nothing stored, the page shows a notice); sockets are capped per user, per
address and in total (``too_many_connections``, close code 4029); a user's events waiting for
the bot in this process are capped (``slow_down``).

Protocol: JSON text frames.

Client → server::

    {"type": "hello", "user": "<id>", "token": "<token>", "since": <last seq seen, 0 after
     a reload>, "language": "<BCP 47, optional>"}  first, exactly once; no user and token:
                                                   a new user (the server issues an identity)
    {"type": "message", "id": "<client id>", "text": "...", "attachments": ["<upload id>", ...]}
                                        attachments (optional, at most 10): the user's own
                                        uploads; text is then the caption and may be empty
    {"type": "button",  "id": "<client id>", "value": "..."}     a chip was pressed
    {"type": "restart", "id": "<client id>"}                     quit and start again
    {"type": "start", "id": "start"}    a new user's page opened: the bot's welcome. Every
                                        start of a user is the one event ``wc:<user>:start``

Server → client::

    {"type": "message", "seq": N, "elements": [...]}   one delivery: TextchatV2 response
        elements in their wire form; a payload with suggestion chips also carries them
        normalised as "chips": [{"title", "value"}], and one with attachments
        (bridge/media/outbound.py) as "files": [{"kind": "image" | "file" | "audio" |
        "video", "url", "label", "caption"?}], which the page shows inline (an image, a
        player, a download link)
    {"type": "identity", "user": "<id>", "token": "<token>"}   a new user's, before "ready"
    {"type": "ready", "last": N}        after the hello: the entries with seq > since were sent
    {"type": "ack", "id": "<client id>"}                 the event is committed
    {"type": "error", "id": "<client id>", "reason": "..."}
    {"type": "typing"}                  the bot is thinking (repeated while it does)

Ids are 1 to 64 letters, digits, ``-`` or ``_`` (user ids at least 8). ``ack`` is sent only
after the event was committed; until then the page shows the message as being sent and, after
a reconnect, sends it again with the same id: the event id ``wc:<user>:<id>`` deduplicates it.
Error reasons: ``invalid_frame``, ``hello_required`` (the connection is closed with 1008),
``identity_refused`` (closed with 4001), ``too_many_connections`` (closed with 4029),
``empty_text``, ``text_too_long``, ``rate_limited``, ``slow_down``, ``invalid_attachment``
(an id that is not an upload of this user, or no longer known), and ``unavailable``
(nothing was stored: send it again). A frame over the size limit closes the socket with 1009,
one that is not UTF-8 with 1007 (one log line each).

Durable delivery: every delivery becomes one mailbox entry with the user's next sequence number
and the time it was written (entries older than ``history_days`` are dropped when the mailbox is
next written, and not sent when it is read), stored in channel state (``tmp:mailbox:<user>``,
the newest ``history_size`` entries, one JSON value), then pushed to the user's open sockets in
this process. A hello replays the entries after ``since``, so a reload shows the history and a
reconnect after a restart gets what was delivered meanwhile. The mailbox is written as an
announced put (``ChannelState.put(..., announce=True)``): an open socket of the user on any
replica syncs from it at once, so a reply delivered by another replica appears without a
reconnect; a slow periodic re-read is the safety net. A retried delivery finds its entry by
outbox id and is not added twice.

Uploads: ``POST /webchat/{name}/upload``, ``multipart/form-data`` with one file part,
authenticated as the socket is: headers ``X-Webchat-User`` and ``X-Webchat-Token`` (the
identity the bridge issued; a page of another origin than the allowed ones is refused as the
socket is). The file is streamed into the bridge's media store as it arrives (the largest is
``[media] max_bytes``; the media row keeps its user, name, content type and size), so a
message naming the id on any replica becomes an event with the
attachment (locator ``stored:<id>``). Answers: 200 ``{"id", "name", "size",
"content_type"}``; 400 not one usable file; 401 identity refused; 403 origin not allowed;
408 slower than ``upload_timeout_seconds``; 413 larger than ``[media] max_bytes``; 429 rate
limited (the user's uploads share the rate of a socket's events, and the address's bucket);
503 stopped, or the store cannot take it (``Retry-After``).

On shutdown the sockets are closed with 1001 (going away) so pages reconnect, to another
replica if there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from adapters.webchat.admission import Admission
from adapters.webchat.assets import Page, build_page, embed_script
from adapters.webchat.options import WebchatOptions
from adapters.webchat.protocol import (
    INVALID_ATTACHMENT,
    INVALID_FRAME,
    UNAVAILABLE,
    FrameError,
    Mailbox,
    accept_language,
    address_user,
    connection_context,
    error_frame,
    mailbox_key,
    normalize_origin,
    origin_allowed,
    parse_event,
    parse_frame,
    render_elements,
    to_inbound,
)
from adapters.webchat.sockets import (
    CLOSE_TOO_MANY,
    Socket,
    identify,
    log_socket_error,
    read_hello,
    refuse,
)
from adapters.webchat.uploads import UploadRoute, named_uploads
from bridge.channel import (
    AcceptResult,
    Adapter,
    AdapterServices,
    AdapterType,
    ChannelState,
    ContextScalar,
    Delivery,
    DeliveryRejected,
    DeliveryRetryable,
    Intake,
    IntakeRefused,
    IntakeUnavailable,
)
from bridge.http_server import streams_body
from bridge.media.attachments import Attachment

log = logging.getLogger("adapters.webchat")

RETRY_AFTER_SECONDS = 5
#: How often an open socket re-reads its mailbox anyway: a delivery wakes it at once (an
#: announced put, whichever replica made it), so this is only the safety net for a lost
#: notice; sooner while the user is active than when idle.
SYNC_ACTIVE_SECONDS = 10.0
SYNC_IDLE_SECONDS = 30.0
ACTIVE_WINDOW_SECONDS = 120.0
#: WebSocket ping interval; proxies drop idle connections otherwise.
HEARTBEAT_SECONDS = 25.0
#: How long closing a socket waits for the page's close frame.
CLOSE_TIMEOUT_SECONDS = 2.0


class WebchatAdapter(Adapter):
    """One web chat channel. Sockets are accepted between :meth:`start` and
    :meth:`stop_intake`; before and after, the WebSocket route answers 503. The page and the
    embed script are static and always served."""

    def __init__(self, name: str, options: WebchatOptions, services: AdapterServices) -> None:
        super().__init__(name)
        self.options = options
        self._services = services
        self._intake: Intake | None = None
        self._state: ChannelState | None = None  # kept after stop_intake: deliver still works
        self._sockets: dict[str, set[Socket]] = {}  # by user, after their hello
        self._open: set[web.WebSocketResponse] = set()  # every open socket, hello or not
        self._admission = Admission(name, options)
        own = normalize_origin(services.public_url) if services.public_url else None
        self._own_origins = (own,) if own else ()
        self._upload_route = UploadRoute(name, options, self._admission, self._own_origins)
        self._page: Page = build_page(
            channel=name,
            title=options.title,
            placeholder=options.placeholder,
            max_text_length=options.max_text_length,
            frame_ancestors=options.allowed_origins,
            uploads=options.uploads,
        )
        self._embed = embed_script()

    def __repr__(self) -> str:
        return f"WebchatAdapter(name={self.name!r})"

    @property
    def _history_seconds(self) -> float:
        return self.options.history_days * 86400.0

    @property
    def base_path(self) -> str:
        return f"/webchat/{self.name}"

    def routes(self) -> Sequence[web.RouteDef]:
        base = self.base_path
        return [
            web.get(base, self._redirect),
            web.get(base + "/", self._serve_page),
            web.get(base + "/embed.js", self._serve_embed),
            web.get(base + "/ws", self._serve_socket),
            web.post(base + "/upload", streams_body(self._handle_upload)),
        ]

    async def start(self, intake: Intake) -> None:
        self._intake = intake
        self._state = intake.state
        log.info("webchat channel %s: serving the chat on %s/", self.name, self.base_path)
        if self.options.identity_secret is None:
            log.warning(
                "webchat channel %s: no identity_secret, so user identities are signed with a "
                "random key of this process: they end with a restart, and several replicas "
                "need one shared secret",
                self.name,
            )

    async def stop_intake(self) -> None:
        # New sockets get 503; open ones are told to go away so pages reconnect elsewhere.
        # Deliveries still go to the mailbox until stop().
        self._intake = None
        await self._close_all()

    async def stop(self) -> None:
        self._intake = None
        await self._close_all()
        if self._state is not None:
            self._state = None
            log.info("webchat channel %s: stopped", self.name)

    async def _close_all(self) -> None:
        sockets = list(self._open)
        if not sockets:
            return
        log.info("webchat channel %s: closing %d socket(s)", self.name, len(sockets))
        await asyncio.gather(
            *(
                ws.close(code=WSCloseCode.GOING_AWAY, message=b"server going away")
                for ws in sockets
            ),
            return_exceptions=True,
        )

    def status(self) -> Mapping[str, Any]:
        return {
            "started": self._intake is not None,
            "users": len(self._sockets),
            "sockets": sum(len(group) for group in self._sockets.values()),
        }

    # --- static routes ----------------------------------------------------------------------

    async def _redirect(self, _request: web.Request) -> web.StreamResponse:
        raise web.HTTPPermanentRedirect(self.base_path + "/")

    async def _serve_page(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=self._page.html,
            content_type="text/html",
            charset="utf-8",
            headers={
                "Content-Security-Policy": self._page.content_security_policy,
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

    async def _serve_embed(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=self._embed,
            content_type="text/javascript",
            charset="utf-8",
            headers={
                "Cache-Control": "public, max-age=300",
                "X-Content-Type-Options": "nosniff",
                # Any site may load the script; whether the frame may show is the page's CSP.
                "Cross-Origin-Resource-Policy": "cross-origin",
            },
        )

    # --- uploads (uploads.py) -------------------------------------------------------------

    async def _handle_upload(self, request: web.Request) -> web.StreamResponse:
        return await self._upload_route.handle(request, self._intake, self._state)

    async def _uploads(self, user: str, ids: Sequence[str]) -> list[Attachment] | None:
        """The attachments a message names: None when one is not an upload of ``user``."""
        intake = self._intake
        if intake is None:
            raise IntakeUnavailable("channel is not running")
        return await named_uploads(intake, user, ids)

    # --- the WebSocket ----------------------------------------------------------------------

    async def _serve_socket(self, request: web.Request) -> web.StreamResponse:
        if self._intake is None or self._state is None:
            return web.json_response(
                {"error": "channel is not running"},
                status=503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        origin = request.headers.get("Origin")
        if origin is not None and not origin_allowed(
            origin, request.host, self.options.allowed_origins, self._own_origins
        ):
            log.info("webchat channel %s: refused a socket from origin %.100s", self.name, origin)
            return web.json_response({"error": "origin not allowed"}, status=403)
        ws = web.WebSocketResponse(
            heartbeat=HEARTBEAT_SECONDS,
            timeout=CLOSE_TIMEOUT_SECONDS,
            # A frame holds at most max_text_length characters (6 bytes each when escaped).
            max_msg_size=max(16 * 1024, self.options.max_text_length * 6 + 1024),
        )
        if not ws.can_prepare(request).ok:
            return web.json_response({"error": "expected a WebSocket upgrade"}, status=426)
        address = request.remote or "unknown"
        await ws.prepare(request)
        # Caps are told over the socket: a browser cannot read a refused upgrade's status.
        too_many = self._admission.over_cap(address, len(self._open))
        if too_many is not None:
            await refuse(ws, CLOSE_TOO_MANY, too_many, self.name)
            return ws
        self._open.add(ws)
        self._admission.opened(address)
        try:
            hello = await read_hello(ws, self.name)
            if hello is not None:
                language = hello.language or accept_language(request.headers.get("Accept-Language"))
                context = connection_context(request.headers.get("User-Agent"), language)
                user = await identify(ws, hello, self._admission, self.name)
                if user is not None:
                    if len(self._sockets.get(user, ())) >= self.options.max_sockets_per_user:
                        reason = "too many connections of this user"
                        await refuse(ws, CLOSE_TOO_MANY, reason, self.name)
                        return ws
                    bucket = self._admission.socket_bucket()
                    since = hello.since if hello.user is not None else 0
                    await self._converse(Socket(ws, user, since, address, bucket), context)
        finally:
            self._open.discard(ws)
            self._admission.closed(address)
            if not ws.closed:
                await ws.close()
        return ws

    async def _converse(self, sock: Socket, context: Mapping[str, ContextScalar]) -> None:
        """Replay the mailbox, then serve the socket's frames until it closes."""
        # Registered before the replay reads the mailbox: a delivery in between is pushed
        # (after the replay, which holds the lock) instead of being missed.
        self._sockets.setdefault(sock.user, set()).add(sock)
        unwatch = sock.watch(self._state, self._history_seconds, self.name)
        try:
            try:
                last = await sock.sync(self._state, self._history_seconds)
            except Exception as exc:
                log.warning("webchat channel %s: cannot read a mailbox: %s", self.name, exc)
                await sock.send(error_frame(UNAVAILABLE))
                await sock.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"try again")
                return
            await sock.send({"type": "ready", "last": last})
            ws = sock.ws
            while not ws.closed:
                idle = time.monotonic() - sock.active_at > ACTIVE_WINDOW_SECONDS
                try:
                    msg = await ws.receive(
                        timeout=SYNC_IDLE_SECONDS if idle else SYNC_ACTIVE_SECONDS
                    )
                except TimeoutError:
                    try:
                        await sock.sync(self._state, self._history_seconds)
                    except Exception as exc:  # the next round tries again
                        log.debug("webchat channel %s: mailbox sync failed: %s", self.name, exc)
                    continue
                if msg.type == WSMsgType.TEXT:
                    sock.active_at = time.monotonic()
                    await self._on_frame(sock, msg.data, context)
                elif msg.type == WSMsgType.BINARY:
                    await sock.send(error_frame(INVALID_FRAME))
                else:  # close, closing, closed, error
                    log_socket_error(msg, self.name)
                    break
        finally:
            unwatch()
            if sock.syncing is not None:
                sock.syncing.cancel()
            group = self._sockets.get(sock.user)
            if group is not None:
                group.discard(sock)
                if not group:
                    del self._sockets[sock.user]

    async def _on_frame(self, sock: Socket, raw: str, context: Mapping[str, ContextScalar]) -> None:
        try:
            frame = parse_frame(raw)
            if frame.get("type") == "hello":
                raise FrameError(INVALID_FRAME, "hello was already sent")
            event = parse_event(frame, self.options.max_text_length)
        except FrameError as exc:
            log.debug("webchat channel %s: refused a frame: %s", self.name, exc.detail)
            await sock.send(error_frame(exc.reason, exc.id))
            return
        intake = self._intake
        if intake is None:
            await sock.send(error_frame(UNAVAILABLE, event.id))
            return
        refusal = self._admission.limit(sock.user, sock.bucket, sock.address)
        if refusal is not None:
            log.debug("webchat channel %s: %s for user %s", self.name, refusal, sock.user)
            await sock.send(error_frame(refusal, event.id))
            return
        try:
            attachments = await self._uploads(sock.user, event.attachments)
            if attachments is None:
                log.info("webchat channel %s: a message named a foreign upload", self.name)
                await sock.send(error_frame(INVALID_ATTACHMENT, event.id))
                return
            inbound = to_inbound(sock.user, event, context, attachments)
            result = await intake.accept(inbound)
        except IntakeRefused as exc:
            log.info("webchat channel %s: refused event %s: %s", self.name, inbound.event_id, exc)
            await sock.send(error_frame(INVALID_FRAME, event.id))
            return
        except IntakeUnavailable as exc:
            log.warning(
                "webchat channel %s: event %s could not be stored (%s); the page sends it again",
                self.name,
                event.id,
                exc,
            )
            await sock.send(error_frame(UNAVAILABLE, event.id))
            return
        if result is AcceptResult.ACCEPTED:
            self._admission.accepted(sock.user)
        # Only now, with the event committed, may the page consider it sent.
        log.debug("webchat channel %s: event %s %s", self.name, inbound.event_id, result.value)
        await sock.send({"type": "ack", "id": event.id})

    # --- outbound ---------------------------------------------------------------------------

    async def deliver(self, delivery: Delivery) -> None:
        # The whole delivery is one part (one mailbox entry).
        if delivery.parts_done >= 1:
            return
        state = self._state
        if state is None:
            raise DeliveryRetryable("webchat channel is not running")
        user = address_user(delivery.address)
        if user is None:
            raise DeliveryRejected("delivery address has no webchat user")
        elements = render_elements(delivery.elements)
        if not elements:
            await delivery.progress(0, None)
            return
        key = mailbox_key(user)
        self._admission.answered(user)
        # Read-modify-write: safe, the core delivers one conversation (= user) at a time.
        try:
            now = time.time()
            mailbox = Mailbox.load(await state.get(key))
            entry = mailbox.find(delivery.outbox_id)
            if entry is None:
                mailbox.expire(now, self._history_seconds)
                entry = mailbox.append(delivery.outbox_id, elements, self.options.history_size, now)
                # Announced: a socket of this user open on another replica syncs at once.
                await state.put(key, mailbox.dump(), announce=True)
        except Exception as exc:
            raise DeliveryRetryable(f"cannot store the message: {type(exc).__name__}") from exc
        sockets = list(self._sockets.get(user, ()))
        await asyncio.gather(*(s.push(entry, self.name) for s in sockets))
        log.debug(
            "webchat channel %s: outbox %s is entry %s (%d socket(s))",
            self.name,
            delivery.outbox_id,
            entry["seq"],
            len(sockets),
        )
        await delivery.progress(0, str(entry["seq"]))

    async def typing(self, address: Mapping[str, Any]) -> None:
        user = address_user(address)
        if user is None:
            return
        for sock in list(self._sockets.get(user, ())):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await sock.send({"type": "typing"})


WEBCHAT = AdapterType(WebchatOptions, WebchatAdapter)
