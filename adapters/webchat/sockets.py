"""One open web chat socket and its handshake: the hello, the identity, refusals, and keeping
the page in step with the user's mailbox (replay, pushes, announced syncs). The adapter in
:mod:`adapters.webchat.channel` serves the routes and the frames; the protocol is described
there."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from adapters.webchat.admission import Admission
from adapters.webchat.protocol import (
    HELLO_REQUIRED,
    IDENTITY_REFUSED,
    INVALID_FRAME,
    TOO_MANY_CONNECTIONS,
    FrameError,
    Hello,
    Mailbox,
    TokenBucket,
    encode,
    error_frame,
    identity_frame,
    mailbox_key,
    message_frame,
    parse_frame,
    parse_hello,
)
from bridge.channel import ChannelState, DeliveryRetryable

log = logging.getLogger("adapters.webchat")

#: How long a new connection may take to say hello.
HELLO_TIMEOUT_SECONDS = 30.0
#: How long a push to one socket may wait (for its lock) before the mailbox sync takes over.
PUSH_TIMEOUT_SECONDS = 5.0
#: Close codes of refused sockets: 4000-4999 are the application's own.
CLOSE_IDENTITY_REFUSED = 4001
CLOSE_TOO_MANY = 4029


class Socket:
    """One open WebSocket of a user. Every frame goes out under ``lock``, so a replay from
    the mailbox and a push of a new delivery never interleave or repeat an entry."""

    def __init__(
        self, ws: web.WebSocketResponse, user: str, since: int, address: str, bucket: TokenBucket
    ) -> None:
        self.ws = ws
        self.user = user
        self.sent = since  # the highest sequence number this socket has (had) on the page
        self.lock = asyncio.Lock()
        self.active_at = time.monotonic()
        self.address = address
        self.bucket = bucket
        self.syncing: asyncio.Task[None] | None = None  # a sync a delivery's notice started

    async def send(self, frame: Mapping[str, Any]) -> None:
        async with self.lock:
            await self.ws.send_str(encode(frame))

    async def send_new(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Send the entries this socket has not had yet, in order; the caller holds ``lock``."""
        for entry in entries:
            if entry["seq"] > self.sent:
                await self.ws.send_str(encode(message_frame(entry)))
                self.sent = entry["seq"]

    async def sync(self, state: ChannelState | None, history_seconds: float) -> int:
        """Send the mailbox entries the socket has not had; returns the last sequence number."""
        if state is None:
            raise DeliveryRetryable("channel is not running")
        async with self.lock:
            mailbox = Mailbox.load(await state.get(mailbox_key(self.user)))
            mailbox.expire(time.time(), history_seconds)  # read only: dropped when written
            if self.sent > mailbox.last_seq:
                self.sent = 0  # the mailbox expired and started again: send it all
            await self.send_new(mailbox.after(self.sent))
            return mailbox.last_seq

    async def push(self, entry: Mapping[str, Any], channel: str) -> None:
        """Send one new entry; a closed or slow socket is left to the mailbox sync."""
        try:
            async with asyncio.timeout(PUSH_TIMEOUT_SECONDS), self.lock:
                await self.send_new([entry])
        except Exception as exc:  # closed meanwhile, or slow: the mailbox sync catches up
            log.debug("webchat channel %s: push failed: %s", channel, exc)

    def watch(
        self, state: ChannelState | None, history_seconds: float, channel: str
    ) -> Callable[[], None]:
        """Sync the socket whenever its user's mailbox is announced (a delivery by any
        replica); returns the unsubscribe. Notices that come while a sync runs are covered
        by it or by the one after: at most one runs and one waits."""
        if state is None:
            return lambda: None
        pending = False

        async def sync_then_again() -> None:
            nonlocal pending
            while pending:
                pending = False
                try:
                    await self.sync(state, history_seconds)
                except Exception as exc:  # the periodic sync tries again
                    log.debug("webchat channel %s: mailbox sync failed: %s", channel, exc)
            self.syncing = None

        def wake() -> None:
            nonlocal pending
            pending = True
            if self.syncing is None and not self.ws.closed:
                self.syncing = asyncio.create_task(
                    sync_then_again(), name=f"webchat-{channel}-sync"
                )

        return state.watch(mailbox_key(self.user), wake)


async def refuse(ws: web.WebSocketResponse, code: int, reason: str, channel: str) -> None:
    """Tell the page why (a browser cannot read a refused upgrade's status), then close."""
    log.info("webchat channel %s: refused a socket: %s", channel, reason)
    error = TOO_MANY_CONNECTIONS if code == CLOSE_TOO_MANY else IDENTITY_REFUSED
    with contextlib.suppress(Exception):
        await ws.send_str(encode(error_frame(error)))
    await ws.close(code=code, message=reason.encode())


async def identify(
    ws: web.WebSocketResponse, hello: Hello, admission: Admission, channel: str
) -> str | None:
    """The hello's user when this bridge issued it; a new identity, sent to the page,
    when the hello has none; None after refusing the socket."""
    if hello.user is None or hello.token is None:
        user, token = admission.issue()
        await ws.send_str(encode(identity_frame(user, token)))
        return user
    if admission.issued(hello.user, hello.token):
        return hello.user
    await refuse(ws, CLOSE_IDENTITY_REFUSED, "identity not issued by this bridge", channel)
    return None


async def read_hello(ws: web.WebSocketResponse, channel: str) -> Hello | None:
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
        log_socket_error(msg, channel)
        return None
    try:
        return parse_hello(parse_frame(msg.data))
    except FrameError as exc:
        log.info("webchat channel %s: refused a hello: %s", channel, exc.detail)
        reason = exc.reason if exc.reason in (HELLO_REQUIRED, IDENTITY_REFUSED) else INVALID_FRAME
        await ws.send_str(encode(error_frame(reason, exc.id)))
        code = CLOSE_IDENTITY_REFUSED if reason == IDENTITY_REFUSED else 1008
        await ws.close(code=code, message=exc.detail.encode()[:120])
        return None


def log_socket_error(msg: Any, channel: str) -> None:
    """One line, no traceback, for a frame aiohttp refused (too big: closed with 1009;
    not UTF-8: 1007; a broken frame: 1002)."""
    if msg.type == WSMsgType.ERROR:
        log.info(
            "webchat channel %s: closed a socket: %s",
            channel,
            str(msg.data)[:200] or type(msg.data).__name__,
        )
