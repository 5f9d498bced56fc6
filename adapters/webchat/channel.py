"""The web chat channel: a chat page served by the bridge itself, its options, the adapter, and
the registry entry ``WEBCHAT``.

Routes (``{name}`` is the channel's name)::

    GET /webchat/{name}/           the chat page (self-contained: inline CSS and JS, no CDN)
    GET /webchat/{name}/embed.js   <script src=".../embed.js" async></script> on any site adds a
                                   floating button that opens the page in a frame
    GET /webchat/{name}/ws         the WebSocket (403 for a foreign Origin, 503 when stopped)

A browser page may use the chat from its own origin, from an origin in ``allowed_origins``
(``["*"]``: any), and only those origins may frame the page. A client that sends no ``Origin``
is not a browser and is let through: the check protects users' browsers, not the endpoint.

The page keeps a random user id in ``localStorage``; the conversation is that user's
(conversation key = user id), so a reload continues it.

Protocol: JSON text frames.

Client → server::

    {"type": "hello", "user": "<id>", "since": <last seq seen, 0 after a reload>,
     "language": "<BCP 47, optional>"}                          first, exactly once
    {"type": "message", "id": "<client id>", "text": "..."}
    {"type": "button",  "id": "<client id>", "value": "..."}     a chip was pressed
    {"type": "restart", "id": "<client id>"}                     quit and start again

Server → client::

    {"type": "message", "seq": N, "elements": [...]}   one delivery: TextchatV2 response
        elements in their wire form; a payload with suggestion chips also carries them
        normalised as "chips": [{"title", "value"}]
    {"type": "ready", "last": N}        after the hello: the entries with seq > since were sent
    {"type": "ack", "id": "<client id>"}                 the event is committed
    {"type": "error", "id": "<client id>", "reason": "..."}
    {"type": "typing"}                  the bot is thinking (repeated while it does)

Ids are 1 to 64 letters, digits, ``-`` or ``_`` (user ids at least 8). ``ack`` is sent only
after the event was committed; until then the page shows the message as being sent and, after
a reconnect, sends it again with the same id: the event id ``wc:<user>:<id>`` deduplicates it.
Error reasons: ``invalid_frame``, ``hello_required`` (the connection is closed with 1008),
``empty_text``, ``text_too_long``, and ``unavailable`` (nothing was stored: send it again).

Durable delivery: every delivery becomes one mailbox entry with the user's next sequence
number, stored in channel state (``tmp:mailbox:<user>``, the newest ``history_size`` entries,
one JSON value), then pushed to the user's open sockets in this process. A hello replays the
entries after ``since``, so a reload shows the history and a reconnect after a restart gets what
was delivered meanwhile; open sockets also re-read the mailbox every few seconds, so a reply
delivered by another replica (during a rolling restart) appears without a reconnect. A retried
delivery finds its entry by outbox id and is not added twice.

On shutdown the sockets are closed with 1001 (going away) so pages reconnect, to another
replica if there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapters.webchat.assets import Page, build_page, embed_script
from adapters.webchat.protocol import (
    HELLO_REQUIRED,
    INVALID_FRAME,
    UNAVAILABLE,
    FrameError,
    Hello,
    Mailbox,
    accept_language,
    address_user,
    connection_context,
    encode,
    error_frame,
    mailbox_key,
    message_frame,
    normalize_origin,
    origin_allowed,
    parse_event,
    parse_frame,
    parse_hello,
    render_elements,
    to_inbound,
)
from bridge.channel import (
    Adapter,
    AdapterServices,
    AdapterType,
    ChannelState,
    ContextScalar,
    Delivery,
    DeliveryRejected,
    DeliveryRetryable,
    Intake,
    IntakeUnavailable,
)

log = logging.getLogger("adapters.webchat")

RETRY_AFTER_SECONDS = 5
#: How long a new connection may take to say hello.
HELLO_TIMEOUT_SECONDS = 30.0
#: How often an open socket re-reads its mailbox: often while the user is active (a reply
#: may be delivered by another replica), rarely when idle.
SYNC_ACTIVE_SECONDS = 2.0
SYNC_IDLE_SECONDS = 30.0
ACTIVE_WINDOW_SECONDS = 120.0
#: How long a push to one socket may wait (for its lock) before the mailbox sync takes over.
PUSH_TIMEOUT_SECONDS = 5.0
#: WebSocket ping interval; proxies drop idle connections otherwise.
HEARTBEAT_SECONDS = 25.0
#: How long closing a socket waits for the page's close frame.
CLOSE_TIMEOUT_SECONDS = 2.0


class WebchatOptions(BaseModel):
    """The options of a ``type = "webchat"`` channel (the channel's extra configuration keys)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Origins (``https://shop.example.com``) whose pages may open the WebSocket and embed the
    #: chat in a frame, besides the page's own origin, which is always allowed; ``["*"]``
    #: allows every origin.
    allowed_origins: list[str] = []
    #: The page's title and heading.
    title: Annotated[str, Field(min_length=1, max_length=200)] = "Chat with us"
    #: Longest accepted message (or chip value) in characters; longer ones get an error frame.
    max_text_length: Annotated[int, Field(ge=1, le=100_000)] = 4000
    #: Deliveries kept per user (the mailbox), shown again after a reload or a reconnect.
    history_size: Annotated[int, Field(ge=1, le=10_000)] = 100
    #: The hint shown in the empty message field.
    placeholder: Annotated[str, Field(max_length=200)] = "Write a message…"

    # The messages name their key: bridge.config.describe_errors prints a value error's
    # message without its location.
    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        normalized: list[str] = []
        for origin in value:
            if origin.strip() == "*":
                normalized.append("*")
                continue
            clean = normalize_origin(origin)
            if clean is None:
                raise ValueError(
                    f"allowed_origins: {origin[:100]!r} is not an origin like "
                    "https://shop.example.com (scheme and host, no path), nor *"
                )
            normalized.append(clean)
        return normalized


class _Socket:
    """One open WebSocket of a user. Every frame goes out under ``lock``, so a replay from
    the mailbox and a push of a new delivery never interleave or repeat an entry."""

    def __init__(self, ws: web.WebSocketResponse, user: str, since: int) -> None:
        self.ws = ws
        self.user = user
        self.sent = since  # the highest sequence number this socket has (had) on the page
        self.lock = asyncio.Lock()
        self.active_at = time.monotonic()

    async def send(self, frame: Mapping[str, Any]) -> None:
        async with self.lock:
            await self.ws.send_str(encode(frame))

    async def send_new(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Send the entries this socket has not had yet, in order; the caller holds ``lock``."""
        for entry in entries:
            if entry["seq"] > self.sent:
                await self.ws.send_str(encode(message_frame(entry)))
                self.sent = entry["seq"]


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
        self._sockets: dict[str, set[_Socket]] = {}  # by user, after their hello
        self._open: set[web.WebSocketResponse] = set()  # every open socket, hello or not
        own = normalize_origin(services.public_url) if services.public_url else None
        self._own_origins = (own,) if own else ()
        self._page: Page = build_page(
            channel=name,
            title=options.title,
            placeholder=options.placeholder,
            max_text_length=options.max_text_length,
            frame_ancestors=options.allowed_origins,
        )
        self._embed = embed_script()

    def __repr__(self) -> str:
        return f"WebchatAdapter(name={self.name!r})"

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
        ]

    async def start(self, intake: Intake) -> None:
        self._intake = intake
        self._state = intake.state
        log.info("webchat channel %s: serving the chat on %s/", self.name, self.base_path)

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
        await ws.prepare(request)
        self._open.add(ws)
        try:
            hello = await self._hello(ws)
            if hello is not None:
                language = hello.language or accept_language(request.headers.get("Accept-Language"))
                context = connection_context(request.headers.get("User-Agent"), language)
                await self._converse(_Socket(ws, hello.user, hello.since), context)
        finally:
            self._open.discard(ws)
            if not ws.closed:
                await ws.close()
        return ws

    async def _hello(self, ws: web.WebSocketResponse) -> Hello | None:
        """The connection's hello, or None after closing a connection without one."""
        try:
            msg = await ws.receive(timeout=HELLO_TIMEOUT_SECONDS)
        except TimeoutError:
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"no hello")
            return None
        if msg.type != WSMsgType.TEXT:
            if msg.type == WSMsgType.BINARY:
                await ws.send_str(encode(error_frame(INVALID_FRAME)))
                await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"text frames only")
            return None
        try:
            return parse_hello(parse_frame(msg.data))
        except FrameError as exc:
            reason = exc.reason if exc.reason == HELLO_REQUIRED else INVALID_FRAME
            await ws.send_str(encode(error_frame(reason, exc.id)))
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=exc.detail.encode()[:120])
            return None

    async def _converse(self, sock: _Socket, context: Mapping[str, ContextScalar]) -> None:
        """Replay the mailbox, then serve the socket's frames until it closes."""
        # Registered before the replay reads the mailbox: a delivery in between is pushed
        # (after the replay, which holds the lock) instead of being missed.
        self._sockets.setdefault(sock.user, set()).add(sock)
        try:
            try:
                last = await self._sync(sock)
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
                        await self._sync(sock)
                    except Exception as exc:  # the next round tries again
                        log.debug("webchat channel %s: mailbox sync failed: %s", self.name, exc)
                    continue
                if msg.type == WSMsgType.TEXT:
                    sock.active_at = time.monotonic()
                    await self._on_frame(sock, msg.data, context)
                elif msg.type == WSMsgType.BINARY:
                    await sock.send(error_frame(INVALID_FRAME))
                else:  # close, closing, closed, error
                    break
        finally:
            group = self._sockets.get(sock.user)
            if group is not None:
                group.discard(sock)
                if not group:
                    del self._sockets[sock.user]

    async def _sync(self, sock: _Socket) -> int:
        """Send the mailbox entries the socket has not had; returns the last sequence number."""
        state = self._state
        if state is None:
            raise DeliveryRetryable("channel is not running")
        async with sock.lock:
            mailbox = Mailbox.load(await state.get(mailbox_key(sock.user)))
            if sock.sent > mailbox.last_seq:
                sock.sent = 0  # the mailbox expired and started again: send it all
            await sock.send_new(mailbox.after(sock.sent))
            return mailbox.last_seq

    async def _on_frame(
        self, sock: _Socket, raw: str, context: Mapping[str, ContextScalar]
    ) -> None:
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
        inbound = to_inbound(sock.user, event, context)
        if intake is None:
            await sock.send(error_frame(UNAVAILABLE, event.id))
            return
        try:
            result = await intake.accept(inbound)
        except IntakeUnavailable as exc:
            log.warning(
                "webchat channel %s: event %s could not be stored (%s); the page sends it again",
                self.name,
                inbound.event_id,
                exc,
            )
            await sock.send(error_frame(UNAVAILABLE, event.id))
            return
        # Only now, with the event committed, may the page consider it sent.
        log.debug("webchat channel %s: event %s %s", self.name, inbound.event_id, result.value)
        await sock.send({"type": "ack", "id": event.id})

    # --- outbound ---------------------------------------------------------------------------

    async def _push(self, sock: _Socket, entry: Mapping[str, Any]) -> None:
        try:
            async with asyncio.timeout(PUSH_TIMEOUT_SECONDS), sock.lock:
                await sock.send_new([entry])
        except Exception as exc:  # closed meanwhile, or slow: the mailbox sync catches up
            log.debug("webchat channel %s: push failed: %s", self.name, exc)

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
        # Read-modify-write: safe, the core delivers one conversation (= user) at a time.
        try:
            mailbox = Mailbox.load(await state.get(key))
            entry = mailbox.find(delivery.outbox_id)
            if entry is None:
                entry = mailbox.append(delivery.outbox_id, elements, self.options.history_size)
                await state.put(key, mailbox.dump())
        except Exception as exc:
            raise DeliveryRetryable(f"cannot store the message: {type(exc).__name__}") from exc
        sockets = list(self._sockets.get(user, ()))
        await asyncio.gather(*(self._push(s, entry) for s in sockets))
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
