"""The fakes process: everything the systems under test talk to, in one process of its own so
that the measured bridge's CPU is its own.

``python -m bench.fakes`` serves, on 127.0.0.1 (ephemeral ports):

* the fake Telegram Bot API (:class:`tests.fakes.telegram.FakeTelegram`, long polling), with a
  hook that records when each send call arrived;
* the TextchatV2 simulator as Parloa (:func:`bridge.devtools.simulator.create_simulator_app`),
  with a middleware that records how long it took to answer each ``message`` event;
* the fake Slack Web API (:class:`tests.fakes.slack.FakeSlack`), one workspace;
* a control API for :mod:`bench.run`: ``GET /info``, ``PUT /parloa`` (latency), ``POST /reset``,
  ``POST /first_contact``, ``POST /closed_loop``, ``POST /open_loop``, ``POST /slack_acks``;
  and for :mod:`bench.media`: ``POST /photo_file``, ``POST /media_burst``, ``POST /photo_loop``.

It prints one JSON line with the URLs on stdout, then runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tests/ is importable from the repository root
    sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402

from bench import media, workloads  # noqa: E402
from bridge.devtools.simulator import (  # noqa: E402
    Faults,
    SimulatorState,
    create_simulator_app,
)
from bridge.service import tune_garbage_collector  # noqa: E402
from tests.fakes.slack import FakeSlack  # noqa: E402
from tests.fakes.telegram import Call, FakeTelegram, SentMessage  # noqa: E402

# One bot token per system under test, so that nothing one left behind reaches another.
TOKENS = {
    "bridge": "700001:BENCH-bridge-token-0123456789abcdef",
    "ptb": "700002:BENCH-ptb-token-0123456789abcdefgh",
    "bare": "700003:BENCH-bare-token-0123456789abcdefg",
}
PARLOA_TOKEN = "bench-parloa-token-0123456789"
RELEASE_ID = "rel-bench"
SLACK_TEAM = "T0BENCH"
SLACK_BOT_TOKEN = "xoxb-7000000000001-7000000000002-benchBotTokenSecret01"
SLACK_SIGNING_SECRET = "bench-signing-secret-0123456789abcdef"


class BenchTelegram(FakeTelegram):
    """The fake Bot API plus a hook on every accepted send (sendMessage / sendPhoto) and the
    times of every file download served."""

    def __init__(self, board: workloads.AnswerBoard, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.board = board
        # requests whose client went away before their body arrived, by method
        self.lost: dict[str, int] = {}
        # file downloads served in full, by file path: (request arrived, last byte written)
        self.downloads: dict[str, tuple[float, float]] = {}

    async def _download(self, request: web.Request) -> web.StreamResponse:
        arrived = self._clock()
        response = await super()._download(request)
        if response.status == 200:
            self.downloads[request.match_info["path"]] = (arrived, self._clock())
        return response

    async def _read_params(self, request: web.Request) -> Any:
        try:
            return await super()._read_params(request)
        except ConnectionResetError:
            method = request.match_info.get("method", "?")
            self.lost[method] = self.lost.get(method, 0) + 1
            raise

    def _record_sent(
        self,
        bot: Any,
        call: Call,
        message: dict[str, Any],
        *,
        raw_text: str | None,
        photo: Any,
        **sent_media: Any,
    ) -> None:
        super()._record_sent(bot, call, message, raw_text=raw_text, photo=photo, **sent_media)
        self.board.on_sent(int(message["chat"]["id"]), raw_text, call.at)

    def reset(self, token: str | None = None) -> dict[str, int]:
        """Forget recordings (memory stays bounded over a long run); drop pending updates of
        ``token`` (or every bot's) and end its long poll in progress."""
        counts = {"calls": len(self.calls), "messages": len(self.messages)}
        by_method: dict[str, int] = {}
        for call in self.calls:
            by_method[call.method] = by_method.get(call.method, 0) + 1
        counts.update({f"calls.{k}": v for k, v in by_method.items()})
        self.calls.clear()
        self.messages.clear()
        self.webhook_deliveries.clear()
        self.downloads.clear()
        self._chat_actions.clear()
        self._messages.clear()
        self._sent_index.clear()
        for bot_token, bot in self._bots.items():
            if token is None or bot_token == token:
                counts["dropped_updates"] = counts.get("dropped_updates", 0) + len(bot.updates)
                bot.updates.clear()
                if bot.poll is not None:
                    # Left by the system's previous process: the server notices a client
                    # gone only when it answers. It would pass for the next process's poll
                    # in wait_polling and take the first update pushed (lost with it: that
                    # process's first message waited for it to come round again).
                    bot.poll.terminated = "reset by the benchmark"
                    bot.poll = None
                    self._changed()
        return counts

    def sent(self) -> list[SentMessage]:
        return self.messages


class Fakes:
    def __init__(self) -> None:
        self.board = workloads.AnswerBoard()
        self.tg = BenchTelegram(self.board, tokens=list(TOKENS.values()))
        self.sim_state = SimulatorState(
            token=PARLOA_TOKEN, max_sessions=1_000_000, max_recorded=10_000
        )
        self.parloa_times: dict[str, float] = {}
        self.slack = FakeSlack()
        self.slack_users: list[str] = []
        self._runners: list[web.AppRunner] = []
        self.sim_url = ""
        self.control_url = ""

    # --- the simulator, timed ---

    def _timing_middleware(self) -> Any:
        times = self.parloa_times

        @web.middleware
        async def timing(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.path != "/dialoghook":
                return await handler(request)  # type: ignore[no-any-return]
            started = time.monotonic()
            raw = await request.read()  # aiohttp keeps it for the handler
            response = await handler(request)
            spent = time.monotonic() - started
            try:
                event = json.loads(raw).get("event") or {}
            except (ValueError, AttributeError):
                event = {}
            if event.get("type") == "message" and isinstance(event.get("text"), str):
                times[event["text"]] = spent
            return response  # type: ignore[no-any-return]

        return timing

    async def _serve(self, app: web.Application, backlog: int = 4096) -> str:
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=backlog)
        await site.start()
        self._runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    async def start(self) -> None:
        await self.tg.start()
        sim_app = create_simulator_app(self.sim_state)
        sim_app.middlewares.append(self._timing_middleware())
        self.sim_url = await self._serve(sim_app)
        await self.slack.__aenter__()
        self.slack.add_workspace(
            SLACK_TEAM, bot_token=SLACK_BOT_TOKEN, bot_user_id="U0BOT", bot_id="B0BOT"
        )
        for i in range(200):
            user = f"U{i:07d}"
            self.slack.add_user(SLACK_TEAM, user, real_name=f"Bench User {i}")
            self.slack_users.append(user)
        control = web.Application()
        control.router.add_get("/info", self._info)
        control.router.add_put("/parloa", self._parloa)
        control.router.add_get("/polling", self._polling)
        control.router.add_post("/reset", self._reset)
        control.router.add_post("/first_contact", self._first_contact)
        control.router.add_post("/closed_loop", self._closed_loop)
        control.router.add_post("/open_loop", self._open_loop)
        control.router.add_post("/slack_acks", self._slack_acks)
        control.router.add_post("/photo_file", self._photo_file)
        control.router.add_post("/media_burst", self._media_burst)
        control.router.add_post("/photo_loop", self._photo_loop)
        self.control_url = await self._serve(control, backlog=128)

    async def close(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        await self.slack.__aexit__(None, None, None)
        await self.tg.close()

    def info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "control": self.control_url,
            "telegram_api_root": self.tg.api_root,
            "telegram_tokens": TOKENS,
            "parloa_url": self.sim_url,
            "parloa_token": PARLOA_TOKEN,
            "release_id": RELEASE_ID,
            "slack_api_url": self.slack.api_url,
            "slack_team": SLACK_TEAM,
            "slack_bot_token": SLACK_BOT_TOKEN,
            "slack_signing_secret": SLACK_SIGNING_SECRET,
        }

    # --- control routes ---

    async def _info(self, request: web.Request) -> web.Response:
        return web.json_response(self.info())

    async def _parloa(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.sim_state.faults = Faults(latency=float(body.get("latency", 0.0)))
        return web.json_response(self.sim_state.faults.to_json())

    async def _polling(self, request: web.Request) -> web.Response:
        return web.json_response({"polling": self.tg.is_polling(request.query["token"])})

    async def _reset(self, request: web.Request) -> web.Response:
        body = await request.json()
        counts: dict[str, Any] = dict(self.tg.reset(body.get("token")))
        counts["requests_lost"] = dict(self.tg.lost)
        counts["slack_calls"] = len(self.slack.calls)
        counts["slack_posted"] = len(self.slack.messages)
        self.slack.calls.clear()
        self.slack.messages.clear()
        parloa = self.sim_state.stats().to_json()
        counts["parloa_requests"] = parloa["requests"]
        counts["parloa_by_status"] = parloa["by_status"]
        self.parloa_times.clear()
        self._fresh_counts()
        return web.json_response(counts)

    def _fresh_counts(self) -> None:
        self.board.welcomes = self.board.other_sends = self.board.duplicate_answers = 0
        self.tg.lost.clear()

    def _board_counts(self) -> dict[str, Any]:
        return {
            "welcomes": self.board.welcomes,
            "other_sends": self.board.other_sends,
            "duplicate_answers": self.board.duplicate_answers,
            "requests_lost": dict(self.tg.lost),
        }

    async def _first_contact(self, request: web.Request) -> web.Response:
        b = await request.json()
        self._fresh_counts()
        result = await workloads.first_contact(
            self.tg, self.board, b["token"], b["chats"], b["tag"], float(b["deadline"])
        )
        return web.json_response({**result, **self._board_counts()})

    async def _closed_loop(self, request: web.Request) -> web.Response:
        b = await request.json()
        self._fresh_counts()
        result = await workloads.closed_loop(
            self.tg,
            self.board,
            b["token"],
            b["chats"],
            b["tag"],
            int(b["messages_per_chat"]),
            float(b["deadline"]),
        )
        self.parloa_times.clear()
        return web.json_response({**result, **self._board_counts()})

    async def _open_loop(self, request: web.Request) -> web.Response:
        b = await request.json()
        self._fresh_counts()
        result = await workloads.open_loop(
            self.tg,
            self.board,
            self.parloa_times,
            b["token"],
            b["chats"],
            b["tag"],
            float(b["rate"]),
            float(b["duration"]),
            float(b["drain"]),
        )
        return web.json_response({**result, **self._board_counts()})

    async def _slack_acks(self, request: web.Request) -> web.Response:
        b = await request.json()
        users = self.slack_users[: int(b.get("users", 50))]
        result = await workloads.slack_acks(
            b["url"],
            SLACK_SIGNING_SECRET,
            SLACK_TEAM,
            users,
            b["tag"],
            float(b["rate"]),
            float(b["duration"]),
            on_posted=lambda: len(self.slack.messages),
        )
        return web.json_response(result)

    # --- media (bench.media) ---

    async def _photo_file(self, request: web.Request) -> web.Response:
        b = await request.json()
        return web.json_response({"file_id": media.photo_file(self.tg, int(b["size"]))})

    async def _media_burst(self, request: web.Request) -> web.Response:
        b = await request.json()
        self._fresh_counts()
        result = await media.media_burst(
            self.tg,
            self.board,
            b["token"],
            b["chats"],
            b["tag"],
            float(b["deadline"]),
            int(b["photo_every"]),
            int(b["photo_size"]),
        )
        self.parloa_times.clear()
        return web.json_response({**result, **self._board_counts()})

    async def _photo_loop(self, request: web.Request) -> web.Response:
        b = await request.json()
        self._fresh_counts()
        result = await media.photo_loop(
            self.tg,
            self.board,
            b["token"],
            b["chats"],
            b["tag"],
            int(b["photos_per_chat"]),
            int(b["photo_size"]),
            float(b["deadline"]),
        )
        self.parloa_times.clear()
        return web.json_response({**result, **self._board_counts()})


async def main() -> None:
    fakes = Fakes()
    await fakes.start()
    # The fakes keep many simulator sessions and their recent requests alive, which CPython's
    # full collections walk again and again, pausing every fake server mid-burst whichever
    # system is under test: the bridge's own setting makes them rarer (docs/benchmarks.md,
    # "Garbage collector").
    tune_garbage_collector()
    print(json.dumps(fakes.info()), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await fakes.close()


if __name__ == "__main__":
    asyncio.run(main())
