"""``parloa-bridge chat``: a conversation with a Parloa release from the terminal.

Texts are printed, suggestion chips numbered (type the number to pick one), cards drawn with
their image URL. ``/quit`` or Ctrl-D sends ``quit``; ``/restart`` starts a new session."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from bridge.textchat.client import TextchatClient, TextchatResult
from bridge.textchat.errors import (
    BadRequest,
    RateLimited,
    SessionNotFound,
    TextchatError,
    Unauthorized,
)
from bridge.textchat.models import (
    CardElement,
    Chip,
    ContextItem,
    Event,
    LaunchEvent,
    MessageEvent,
    PayloadElement,
    QuitEvent,
    ResponseElement,
    TextElement,
    UnknownElement,
)

log = logging.getLogger("bridge.chat")

ReadLine = Callable[[str], Awaitable[str | None]]

HELP = "Type a message, a chip's number to pick it, /restart to start over, /quit to leave."


@dataclass(frozen=True, slots=True)
class Rendered:
    lines: list[str]
    chips: list[Chip]


def render_for_terminal(elements: Sequence[ResponseElement]) -> Rendered:
    """Turn response elements into printable lines and the chips on offer (pure)."""
    lines: list[str] = []
    chips: list[Chip] = []
    for element in elements:
        if isinstance(element, TextElement):
            lines.extend(f"bot> {line}" for line in (element.content.splitlines() or [""]))
        elif isinstance(element, CardElement):
            lines.append("bot> ┌─ " + (element.title or "card"))
            for part in (element.subtitle, element.content):
                if part:
                    lines.extend(f"bot> │  {line}" for line in part.splitlines())
            if element.image and element.image.url:
                alt = element.image.accessibility_text
                lines.append(f"bot> │  image: {element.image.url}" + (f" ({alt})" if alt else ""))
            lines.append("bot> └─")
        elif isinstance(element, PayloadElement):
            chips.extend(element.chips())
        elif isinstance(element, UnknownElement):
            lines.append(f"     (an element this terminal cannot show: {element.problem})")
    if chips:
        lines.append("     " + "   ".join(f"[{i}] {chip.title}" for i, chip in enumerate(chips, 1)))
    return Rendered(lines, chips)


async def read_stdin_line(prompt: str) -> str | None:
    """input() in a daemon thread, so a pending read never blocks interpreter exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str | None] = loop.create_future()

    def settle(result: str | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def work() -> None:
        result: str | None = None
        error: BaseException | None = None
        try:
            result = input(prompt)
        except EOFError:
            result = None
        except BaseException as exc:  # KeyboardInterrupt included: hand it to the loop
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone; nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="stdin-reader", daemon=True).start()
    return await future


class ChatAborted(Exception):
    """The conversation cannot go on (e.g. the token was refused)."""


class TerminalChat:
    def __init__(
        self,
        client: TextchatClient,
        *,
        requester_id: str,
        context: Sequence[ContextItem] = (),
        out: TextIO,
        read_line: ReadLine = read_stdin_line,
        attempts: int = 4,
    ) -> None:
        self._client = client
        self._requester = requester_id
        self._context = list(context)
        self._out = out
        self._read = read_line
        self._attempts = attempts
        self._session = str(uuid.uuid4())
        self._chips: list[Chip] = []

    def _print(self, line: str) -> None:
        print(line, file=self._out, flush=True)

    async def _send(self, event: Event) -> TextchatResult:
        """Send with a few quick retries for transient failures (the daemon does it durably)."""
        for attempt in range(1, self._attempts + 1):
            try:
                return await self._client.send(event, self._requester, self._session, self._context)
            except TextchatError as exc:
                if not exc.retryable or attempt == self._attempts:
                    raise
                delay = min(8.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0)
                if isinstance(exc, RateLimited) and exc.retry_after is not None:
                    delay = exc.retry_after
                self._print(f"     (Parloa did not answer: {exc.message}; retry in {delay:.1f}s)")
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _show(self, result: TextchatResult) -> bool:
        rendered = render_for_terminal(result.response.response_elements)
        for line in rendered.lines:
            self._print(line)
        self._chips = rendered.chips
        if result.response.end_conversation:
            self._print("     (the bot ended the conversation)")
            return True
        return False

    async def _launch(self) -> bool:
        self._session = str(uuid.uuid4())
        try:
            return self._show(await self._send(LaunchEvent()))
        except SessionNotFound as exc:
            raise ChatAborted(
                f"Parloa does not know release {self._client.release_id!r} (404): "
                "check the bot's release_id"
            ) from exc

    async def _quit(self) -> None:
        try:
            await self._client.send(QuitEvent(), self._requester, self._session, self._context)
        except TextchatError as exc:
            log.info("quit was not delivered: %s", exc)

    async def _message(self, text: str) -> bool:
        try:
            return self._show(await self._send(MessageEvent(text=text)))
        except SessionNotFound:
            # The session expired at Parloa: start a new one and say it again.
            self._session = str(uuid.uuid4())
            await self._send(LaunchEvent())
            return self._show(await self._send(MessageEvent(text=text)))

    async def run(self) -> int:
        """The conversation; returns the process exit code."""
        try:
            if await self._launch():
                return 0
            while True:
                line = await self._read("you> ")
                if line is None or line.strip() in ("/quit", "/exit"):
                    await self._quit()
                    self._print("     (you left the conversation)")
                    return 0
                text = line.strip()
                if not text:
                    continue
                if text == "/help":
                    self._print(f"     {HELP}")
                    continue
                if text == "/restart":
                    await self._quit()
                    if await self._launch():
                        return 0
                    continue
                if text.isdigit() and 1 <= int(text) <= len(self._chips):
                    text = self._chips[int(text) - 1].value
                    self._print(f"you> ({text})")
                try:
                    if await self._message(text):
                        return 0
                except BadRequest as exc:
                    self._print(f"     (Parloa rejected that message: {exc.message})")
                except Unauthorized:
                    raise
                except TextchatError as exc:
                    if exc.retryable:
                        self._print(f"     (Parloa is not answering: {exc}; try again)")
                    else:
                        self._print(f"     (that failed: {exc})")
        except Unauthorized as exc:
            raise ChatAborted(
                f"Parloa refused the API token for release {self._client.release_id!r} "
                f"({exc.status}): fix the bot's api_token"
            ) from exc
        except TextchatError as exc:
            raise ChatAborted(f"cannot talk to Parloa: {exc}") from exc
