"""The two reference bots the bridge is compared with, each a small program of its own, run as a
subprocess by :mod:`bench.run`:

``python -m bench.references ptb --api-root URL --token T --parloa-url URL --parloa-token T
--release R``
    (a) the bot a user would write instead of running the bridge: a python-telegram-bot
    ``Application`` with default settings (``run_polling()``, updates handled one at a time)
    whose handler calls Parloa with aiohttp and sends each text of the answer back.

``python -m bench.references bare ...`` (same options)
    (b) a bare stateless forwarder: aiohttp ``getUpdates`` long polling, and for each update a
    task that calls Parloa and ``sendMessage``. No database, no ordering per chat, no retries,
    no rate limits: the ceiling for this stack (Python, aiohttp, this machine).

Both keep the Parloa session of a chat in memory (a chat's first message launches it: two
Parloa round trips, the welcome and the answer are sent, as the bridge does) and open a new
session when Parloa answers 404. Neither sends typing indicators or suggestion buttons.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import uuid
from collections.abc import Sequence
from typing import Any

import aiohttp

POLL_TIMEOUT = 10  # python-telegram-bot's default for run_polling()


class Parloa:
    """The few lines of TextchatV2 a bot author writes."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str, release: str) -> None:
        self.http = http
        self.url = f"{url.rstrip('/')}/dialoghook"
        self.params = {"dialog": release, "platform": "textchatV2"}
        self.headers = {"Authorization": f"Bearer {token}"}
        self.sessions: dict[int, str] = {}

    async def _call(self, chat_id: int, session: str, event: dict[str, Any]) -> tuple[int, Any]:
        body = {
            "apiVersion": "chat/v1",
            "event": event,
            "requesterId": f"tg:{chat_id}",
            "sessionId": session,
        }
        async with self.http.post(
            self.url, params=self.params, json=body, headers=self.headers
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    @staticmethod
    def _texts(body: Any) -> list[str]:
        elements = body.get("responseElements") if isinstance(body, dict) else None
        return [
            e["content"]
            for e in elements or []
            if isinstance(e, dict) and e.get("type") == "text" and e.get("content")
        ]

    async def answer(self, chat_id: int, text: str) -> list[str]:
        """The texts to send for one user message (the welcome first on first contact)."""
        out: list[str] = []
        session = self.sessions.get(chat_id)
        if session is None:
            session = self.sessions[chat_id] = str(uuid.uuid4())
            _, body = await self._call(chat_id, session, {"type": "launch"})
            out += self._texts(body)
        status, body = await self._call(chat_id, session, {"type": "message", "text": text})
        if status == 404:  # the session expired: a new one, and say it again
            session = self.sessions[chat_id] = str(uuid.uuid4())
            await self._call(chat_id, session, {"type": "launch"})
            status, body = await self._call(chat_id, session, {"type": "message", "text": text})
        return out + self._texts(body)


# --- (a) python-telegram-bot -----------------------------------------------------------------


def run_ptb(args: argparse.Namespace) -> None:
    from telegram import Update
    from telegram.ext import Application, ContextTypes, MessageHandler, filters

    parloa: Parloa | None = None

    async def post_init(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        nonlocal parloa
        parloa = Parloa(aiohttp.ClientSession(), args.parloa_url, args.parloa_token, args.release)

    async def post_shutdown(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        if parloa is not None:
            await parloa.http.close()

    async def on_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert parloa is not None and update.effective_chat and update.message
        chat_id = update.effective_chat.id
        for text in await parloa.answer(chat_id, update.message.text or ""):
            await context.bot.send_message(chat_id, text)

    app = (
        Application.builder()
        .token(args.token)
        .base_url(f"{args.api_root}/bot")
        .post_init(post_init)
        .post_shutdown(post_shutdown)
        .build()
    )
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, on_text))
    app.run_polling()


# --- (b) the bare forwarder ------------------------------------------------------------------


async def run_bare(args: argparse.Namespace) -> None:
    base = f"{args.api_root}/bot{args.token}"
    telegram = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1000),
        timeout=aiohttp.ClientTimeout(total=None, sock_read=POLL_TIMEOUT + 30),
    )
    parloa = Parloa(
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000)),
        args.parloa_url,
        args.parloa_token,
        args.release,
    )
    tasks: set[asyncio.Task[None]] = set()

    async def forward(chat_id: int, text: str) -> None:
        try:
            for answer in await parloa.answer(chat_id, text):
                async with telegram.post(
                    f"{base}/sendMessage", json={"chat_id": chat_id, "text": answer}
                ) as resp:
                    await resp.read()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            print(f"bare: {chat_id}: {exc!r}", file=sys.stderr)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def poll() -> None:
        offset: int | None = None
        while True:
            params: dict[str, Any] = {"timeout": POLL_TIMEOUT, "allowed_updates": ["message"]}
            if offset is not None:
                params["offset"] = offset
            try:
                async with telegram.post(f"{base}/getUpdates", json=params) as resp:
                    data = await resp.json()
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                print(f"bare: getUpdates: {exc!r}", file=sys.stderr)
                await asyncio.sleep(1)
                continue
            for update in data.get("result") or []:
                offset = int(update["update_id"]) + 1
                message = update.get("message") or {}
                if "text" in message:
                    task = asyncio.create_task(forward(message["chat"]["id"], message["text"]))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)

    poller = asyncio.create_task(poll())
    await stop.wait()
    poller.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await poller
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await telegram.close()
    await parloa.http.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.references")
    parser.add_argument("kind", choices=["ptb", "bare"])
    parser.add_argument("--api-root", required=True, help="the Bot API root (no /bot suffix)")
    parser.add_argument("--token", required=True)
    parser.add_argument("--parloa-url", required=True)
    parser.add_argument("--parloa-token", required=True)
    parser.add_argument("--release", required=True)
    args = parser.parse_args(argv)
    if args.kind == "ptb":
        run_ptb(args)
    else:
        asyncio.run(run_bare(args))


if __name__ == "__main__":
    main()
